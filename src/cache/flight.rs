//! Single flight: identical requests that miss at the same time share one computation. The
//! first caller runs it; if that caller goes away first, the computation moves to a task of its
//! own, so no waiter leaving (the first included) cancels it.
//!
//! A flight is one small shared slot, written once, and one `Notify`: most misses have no
//! follower, so the leader pays for a map entry and an allocation, never for a channel.

use super::hasher::KeyHasher;
use super::key::CacheKey;
use super::value::CachedValue;
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};
use tokio::sync::Notify;

/// A computation's outcome; `E` is the computing layer's error, which the cache only carries.
pub type Outcome<E> = Result<Arc<CachedValue>, E>;

pub enum Role<E> {
    /// The first caller: it must start the computation and publish its outcome.
    Leader(Publisher<E>),
    /// A later caller: it waits for the leader's outcome.
    Follower(Arc<Flight<E>>),
}

/// One computation's outcome as its followers see it.
pub struct Flight<E> {
    /// `Some(None)` once the leader's work was lost without an outcome.
    outcome: OnceLock<Option<Outcome<E>>>,
    landed: Notify,
}

impl<E> Default for Flight<E> {
    fn default() -> Self {
        Flight {
            outcome: OnceLock::new(),
            landed: Notify::new(),
        }
    }
}

impl<E: Clone> Flight<E> {
    /// Waits for the leader's outcome; `None` if its work was lost.
    pub async fn outcome(&self) -> Option<Outcome<E>> {
        let landed = self.landed.notified();
        tokio::pin!(landed);
        // Registered before the check: a publication between the two still wakes this waiter.
        landed.as_mut().enable();
        if let Some(outcome) = self.outcome.get() {
            return outcome.clone();
        }
        landed.await;
        self.outcome.get().cloned().flatten()
    }
}

pub struct Flights<E> {
    in_flight: Mutex<HashMap<CacheKey, Arc<Flight<E>>, KeyHasher>>,
}

impl<E> Default for Flights<E> {
    fn default() -> Self {
        Flights {
            in_flight: Mutex::default(),
        }
    }
}

impl<E> Flights<E> {
    /// Joins the computation for `key`, starting one if none is running.
    pub fn join(self: &Arc<Self>, key: CacheKey) -> Role<E> {
        let mut in_flight = lock(&self.in_flight);
        if let Some(flight) = in_flight.get(&key) {
            return Role::Follower(flight.clone());
        }
        let flight = Arc::new(Flight::default());
        in_flight.insert(key, flight.clone());
        Role::Leader(Publisher {
            flights: self.clone(),
            key,
            flight,
            published: false,
        })
    }

    fn land(&self, key: &CacheKey) {
        lock(&self.in_flight).remove(key);
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match mutex.lock() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    }
}

/// The leader's duty to publish exactly once. Dropped unpublished (its work was lost, say at
/// shutdown), it publishes the loss, so no follower waits for ever.
pub struct Publisher<E> {
    flights: Arc<Flights<E>>,
    key: CacheKey,
    flight: Arc<Flight<E>>,
    published: bool,
}

impl<E: Clone> Publisher<E> {
    /// Hands `outcome` to every follower and ends the flight, so later misses start afresh
    /// (after a failure, or once the value is in the cache, where later callers find it).
    pub fn publish(mut self, outcome: &Outcome<E>) {
        self.land(Some(outcome.clone()));
    }

    fn land(&mut self, outcome: Option<Outcome<E>>) {
        self.published = true;
        // Set before the flight leaves the map: a caller joining in between finds it done.
        let _ = self.flight.outcome.set(outcome);
        self.flights.land(&self.key);
        self.flight.landed.notify_waiters();
    }
}

impl<E> Drop for Publisher<E> {
    fn drop(&mut self) {
        if !self.published {
            // The loss carries no value, so this needs no `E: Clone` and can live in `Drop`.
            self.published = true;
            let _ = self.flight.outcome.set(None);
            self.flights.land(&self.key);
            self.flight.landed.notify_waiters();
        }
    }
}

/// A flight's work, run by whoever awaits it. Dropped before it finishes (the leader's client
/// went away, or its timeout fired), it hands the rest of the work to a new task instead of
/// cancelling it: followers may be waiting for its outcome. Boxed, so it can move while pinned.
pub struct Detachable<T: Send + 'static> {
    work: Option<Pin<Box<dyn Future<Output = T> + Send>>>,
}

impl<T: Send + 'static> Detachable<T> {
    pub fn new(work: impl Future<Output = T> + Send + 'static) -> Detachable<T> {
        Detachable {
            work: Some(Box::pin(work)),
        }
    }
}

impl<T: Send + 'static> Future for Detachable<T> {
    type Output = T;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
        let Some(work) = self.work.as_mut() else {
            // Polled again after it finished: a caller bug, not a reachable state.
            return Poll::Pending;
        };
        match work.as_mut().poll(cx) {
            Poll::Ready(output) => {
                self.work = None;
                Poll::Ready(output)
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<T: Send + 'static> Drop for Detachable<T> {
    fn drop(&mut self) {
        if let Some(work) = self.work.take() {
            // Outside a runtime (shutting down) there is nowhere to finish it: dropping the
            // work drops its `Publisher`, and the followers see the flight abandoned.
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(async move {
                    let _ = work.await;
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn work_dropped_unfinished_finishes_in_a_task_of_its_own() {
        let (go, wait) = tokio::sync::oneshot::channel::<()>();
        let (done, finished) = tokio::sync::oneshot::channel::<u32>();
        let work = Detachable::new(async move {
            let _ = wait.await;
            let _ = done.send(7);
        });
        drop(work);
        let _ = go.send(());
        assert_eq!(finished.await, Ok(7));
    }

    fn key(n: u8) -> CacheKey {
        CacheKey([n; 32])
    }

    #[derive(Debug, Clone, PartialEq)]
    struct Boom;

    fn failure() -> Outcome<Boom> {
        Err(Boom)
    }

    /// A flight for `key` with its leader and one follower already waiting on it.
    async fn leader_and_waiting_follower(
        flights: &Arc<Flights<Boom>>,
        key: CacheKey,
    ) -> (
        Publisher<Boom>,
        tokio::task::JoinHandle<Option<Outcome<Boom>>>,
    ) {
        let Role::Leader(publisher) = flights.join(key) else {
            panic!("the first caller leads");
        };
        let Role::Follower(follower) = flights.join(key) else {
            panic!("the second caller follows");
        };
        let waiting = tokio::spawn(async move { follower.outcome().await });
        tokio::task::yield_now().await;
        (publisher, waiting)
    }

    #[tokio::test]
    async fn followers_get_the_published_outcome_whenever_they_ask() {
        let flights = Arc::new(Flights::<Boom>::default());
        let (publisher, waiting) = leader_and_waiting_follower(&flights, key(1)).await;
        let Role::Follower(late) = flights.join(key(1)) else {
            panic!("the flight is still open");
        };
        publisher.publish(&failure());
        assert!(matches!(waiting.await.unwrap(), Some(Err(Boom))));
        // Joined before the flight landed, asked after: the outcome is still there.
        assert!(matches!(late.outcome().await, Some(Err(Boom))));
        assert!(matches!(flights.join(key(1)), Role::Leader(_)), "landed");
    }

    #[tokio::test]
    async fn a_leader_lost_unpublished_releases_its_followers() {
        let flights = Arc::new(Flights::<Boom>::default());
        let (publisher, waiting) = leader_and_waiting_follower(&flights, key(2)).await;
        drop(publisher);
        assert!(waiting.await.unwrap().is_none());
        assert!(matches!(flights.join(key(2)), Role::Leader(_)), "landed");
    }

    #[tokio::test]
    async fn work_awaited_runs_where_it_is_awaited() {
        let ran_on = Arc::new(Mutex::new(None));
        let record = ran_on.clone();
        Detachable::new(async move {
            if let Ok(mut slot) = record.lock() {
                *slot = Some(std::thread::current().id());
            }
        })
        .await;
        let slot = ran_on.lock().map(|s| *s).ok().flatten();
        assert_eq!(slot, Some(std::thread::current().id()));
    }
}
