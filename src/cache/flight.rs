//! Single flight: identical requests that miss at the same time share one computation. The
//! first caller runs it; if that caller goes away first, the computation moves to a task of its
//! own, so no waiter leaving (the first included) cancels it.

use super::hasher::KeyHasher;
use super::key::CacheKey;
use super::value::CachedValue;
use crate::error::Error;
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use tokio::sync::watch;

pub type Outcome = Result<Arc<CachedValue>, Error>;

pub enum Role {
    /// The first caller: it must start the computation and publish its outcome.
    Leader(watch::Sender<Option<Outcome>>),
    /// A later caller: it waits for the leader's outcome.
    Follower,
}

#[derive(Default)]
pub struct Flights {
    in_flight: Mutex<HashMap<CacheKey, watch::Receiver<Option<Outcome>>, KeyHasher>>,
}

impl Flights {
    /// Joins the computation for `key`, starting one if none is running.
    pub fn join(&self, key: CacheKey) -> (Role, watch::Receiver<Option<Outcome>>) {
        let mut in_flight = match self.in_flight.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        if let Some(receiver) = in_flight.get(&key) {
            return (Role::Follower, receiver.clone());
        }
        let (sender, receiver) = watch::channel(None);
        in_flight.insert(key, receiver.clone());
        (Role::Leader(sender), receiver)
    }

    /// Ends the flight so later misses start afresh (after a failure, or once the value is
    /// in the cache, where later callers find it).
    pub fn land(&self, key: &CacheKey) {
        let mut in_flight = match self.in_flight.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        in_flight.remove(key);
    }
}

/// Waits for the outcome published on `receiver`.
pub async fn outcome(mut receiver: watch::Receiver<Option<Outcome>>) -> Option<Outcome> {
    match receiver.wait_for(Option::is_some).await {
        Ok(value) => value.clone(),
        Err(_) => None,
    }
}

/// A flight's work, run by whoever awaits it. Dropped before it finishes (the leader's client
/// went away, or its timeout fired), it hands the rest of the work to a new task instead of
/// cancelling it: followers may be waiting for its outcome. Boxed, so it can move while pinned.
pub struct Detachable {
    work: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
}

impl Detachable {
    pub fn new(work: impl Future<Output = ()> + Send + 'static) -> Detachable {
        Detachable {
            work: Some(Box::pin(work)),
        }
    }
}

impl Future for Detachable {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let Some(work) = self.work.as_mut() else {
            return Poll::Ready(());
        };
        match work.as_mut().poll(cx) {
            Poll::Ready(()) => {
                self.work = None;
                Poll::Ready(())
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl Drop for Detachable {
    fn drop(&mut self) {
        if let Some(work) = self.work.take() {
            // Outside a runtime (shutting down) there is nowhere to finish it: the followers
            // then see the flight abandoned, which they report as an error.
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(work);
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
