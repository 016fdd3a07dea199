//! Wake-ups at sub-millisecond precision for the batch delay. tokio's timer wheel counts whole
//! milliseconds and rounds every deadline up to the next one, so a batch told to wait 1,000 µs
//! waited between 1 and 2 ms (and one told 500 µs, up to 2 ms as well). One thread per process
//! waits on a condition variable, which sleeps with the operating system's own precision, and
//! wakes each actor whose deadline has come.
//!
//! The actor races this against tokio's own sleep and decides on tokio's clock, so a test on
//! paused tokio time still runs on tokio's schedule alone: a wake-up from here that comes
//! "early" by the paused clock only makes the actor look at its queue once more.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::task::{Context, Poll, Waker};
use std::time::Instant;

/// A deadline registered with the timer thread. Dropping it before it fires takes its waker
/// back, so an actor woken by an arrival is not woken again for a deadline it dropped.
pub struct PreciseSleep {
    at: Instant,
    slot: Option<Arc<Slot>>,
}

#[derive(Default)]
struct Slot {
    waker: Mutex<Option<Waker>>,
}

struct Entry {
    at: Instant,
    slot: Arc<Slot>,
}

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        self.at == other.at
    }
}
impl Eq for Entry {}
impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Entry {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.at.cmp(&other.at)
    }
}

#[derive(Default)]
struct Timer {
    due: Mutex<BinaryHeap<Reverse<Entry>>>,
    changed: Condvar,
}

/// The process's timer thread, started on first use. `None` only if no thread could be
/// spawned; the actor then relies on tokio's sleep alone.
fn timer() -> Option<&'static Timer> {
    static TIMER: OnceLock<Option<&'static Timer>> = OnceLock::new();
    *TIMER.get_or_init(|| {
        let timer: &'static Timer = Box::leak(Box::default());
        std::thread::Builder::new()
            .name("tollgate-timer".into())
            .spawn(move || timer.run())
            .ok()
            .map(|_| timer)
    })
}

impl Timer {
    fn run(&self) {
        let Ok(mut due) = self.due.lock() else { return };
        loop {
            let now = Instant::now();
            while due.peek().is_some_and(|Reverse(entry)| entry.at <= now) {
                if let Some(Reverse(entry)) = due.pop() {
                    let waker = entry.slot.waker.lock().ok().and_then(|mut w| w.take());
                    if let Some(waker) = waker {
                        waker.wake();
                    }
                }
            }
            let next = due.peek().map(|Reverse(entry)| entry.at);
            due = match next {
                None => match self.changed.wait(due) {
                    Ok(due) => due,
                    Err(_) => return,
                },
                Some(at) => match self.changed.wait_timeout(due, at - now) {
                    Ok((due, _)) => due,
                    Err(_) => return,
                },
            };
        }
    }

    fn register(&self, at: Instant, slot: Arc<Slot>) {
        let Ok(mut due) = self.due.lock() else { return };
        let earliest = due.peek().is_none_or(|Reverse(entry)| at < entry.at);
        due.push(Reverse(Entry { at, slot }));
        // The thread only needs to know when its next wake-up moved earlier.
        if earliest {
            self.changed.notify_one();
        }
    }
}

impl PreciseSleep {
    pub fn until(at: Instant) -> PreciseSleep {
        PreciseSleep { at, slot: None }
    }
}

impl Future for PreciseSleep {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if Instant::now() >= self.at {
            return Poll::Ready(());
        }
        match &self.slot {
            Some(slot) => {
                if let Ok(mut waker) = slot.waker.lock() {
                    if !waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                        *waker = Some(cx.waker().clone());
                    }
                }
            }
            None => {
                let Some(timer) = timer() else {
                    // No timer thread: never ready from here; tokio's sleep still fires.
                    return Poll::Pending;
                };
                let slot = Arc::new(Slot::default());
                if let Ok(mut waker) = slot.waker.lock() {
                    *waker = Some(cx.waker().clone());
                }
                timer.register(self.at, slot.clone());
                self.slot = Some(slot);
            }
        }
        Poll::Pending
    }
}

impl Drop for PreciseSleep {
    fn drop(&mut self) {
        if let Some(slot) = &self.slot {
            if let Ok(mut waker) = slot.waker.lock() {
                waker.take();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn wakes_at_its_deadline_and_never_before() {
        for micros in [0, 50, 300, 1_000, 2_500] {
            let at = Instant::now() + Duration::from_micros(micros);
            PreciseSleep::until(at).await;
            assert!(
                Instant::now() >= at,
                "woke before its deadline ({micros} µs)"
            );
        }
    }

    #[tokio::test]
    async fn deadlines_in_any_order_all_fire() {
        let now = Instant::now();
        let sleeps = [900, 100, 500, 100, 300]
            .map(|us| tokio::spawn(PreciseSleep::until(now + Duration::from_micros(us))));
        for sleep in sleeps {
            tokio::time::timeout(Duration::from_secs(5), sleep)
                .await
                .expect("fires")
                .expect("no panic");
        }
    }

    #[tokio::test]
    async fn a_dropped_sleep_leaves_no_waker_behind() {
        let far = PreciseSleep::until(Instant::now() + Duration::from_secs(3600));
        let mut far = Box::pin(far);
        assert!(futures_poll_once(far.as_mut()).await.is_pending());
        let slot = far.slot.clone().expect("registered on first poll");
        drop(far);
        assert!(slot.waker.lock().unwrap().is_none());
    }

    async fn futures_poll_once(mut sleep: Pin<&mut PreciseSleep>) -> Poll<()> {
        std::future::poll_fn(|cx| Poll::Ready(sleep.as_mut().poll(cx))).await
    }
}
