//! Single flight: identical requests that miss at the same time share one computation. The
//! computation runs in its own task, so no waiter leaving (the first included) cancels it.

use super::key::CacheKey;
use super::value::CachedValue;
use crate::error::Error;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
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
    in_flight: Mutex<HashMap<CacheKey, watch::Receiver<Option<Outcome>>>>,
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
