//! Spend per UTC minute, tenant and model, as this replica saw it: what the anomaly detector
//! closes minute by minute, and what a replica publishes for the fleet's view.

use smol_str::SmolStr;
use std::collections::{BTreeMap, HashMap};

/// Spend per tenant, then model (nested so a lookup borrows the names).
pub type Spends = HashMap<SmolStr, HashMap<SmolStr, f64>>;

/// The minutes since the epoch containing `ms`.
pub fn minute_of(ms: i64) -> i64 {
    ms.div_euclid(60_000)
}

/// Minutes closed in one go, at most: after a long stall only the recent ones matter.
const MAX_CATCH_UP: i64 = 120;
/// Minutes kept after they close, for publishing what the fleet has not seen yet.
const KEEP_CLOSED: i64 = 10;

#[derive(Debug, Default, Clone, Copy)]
struct Entry {
    spent: f64,
    /// What the fleet was last told (this replica's total for the minute, not a difference,
    /// so telling it twice changes nothing).
    published: f64,
}

/// One spend this replica has and the fleet may not: its minute and running total.
#[derive(Debug, Clone, PartialEq)]
pub struct Unpublished {
    pub minute: i64,
    pub tenant: SmolStr,
    pub model: SmolStr,
    pub spent: f64,
}

pub struct MinuteBook {
    minutes: BTreeMap<i64, HashMap<SmolStr, HashMap<SmolStr, Entry>>>,
    /// The last minute handed out to close.
    closed: i64,
}

impl MinuteBook {
    /// Minutes before `now_ms`'s are not this replica's to judge.
    pub fn new(now_ms: i64) -> MinuteBook {
        MinuteBook {
            minutes: BTreeMap::new(),
            closed: minute_of(now_ms) - 1,
        }
    }

    /// Adds spend made at `time_ms`. Spend in a minute already closed still counts for the
    /// fleet (it is published) but no longer for this replica's judgement of it.
    pub fn add(&mut self, tenant: &SmolStr, model: &SmolStr, cost: f64, time_ms: i64) {
        let minute = minute_of(time_ms);
        let tenants = self.minutes.entry(minute).or_default();
        let models = match tenants.get_mut(tenant) {
            Some(models) => models,
            None => tenants.entry(tenant.clone()).or_default(),
        };
        match models.get_mut(model) {
            Some(entry) => entry.spent += cost,
            None => {
                models.insert(
                    model.clone(),
                    Entry {
                        spent: cost,
                        published: 0.0,
                    },
                );
            }
        }
    }

    /// Every running total the fleet has not been told.
    pub fn unpublished(&self) -> Vec<Unpublished> {
        let mut out = Vec::new();
        for (minute, tenants) in &self.minutes {
            for (tenant, models) in tenants {
                for (model, entry) in models {
                    if entry.spent != entry.published {
                        out.push(Unpublished {
                            minute: *minute,
                            tenant: tenant.clone(),
                            model: model.clone(),
                            spent: entry.spent,
                        });
                    }
                }
            }
        }
        out
    }

    /// Marks totals as told; one that grew since it was read stays unpublished.
    pub fn published(&mut self, told: &[Unpublished]) {
        for item in told {
            if let Some(entry) = self
                .minutes
                .get_mut(&item.minute)
                .and_then(|t| t.get_mut(&item.tenant))
                .and_then(|m| m.get_mut(&item.model))
            {
                entry.published = entry.published.max(item.spent);
            }
        }
    }

    /// The minutes to close now, in order: those that ended at least `grace_ms` before
    /// `now_ms` and were not handed out before. Old minutes are forgotten here.
    pub fn due(&mut self, now_ms: i64, grace_ms: i64) -> Vec<i64> {
        let last = minute_of(now_ms - grace_ms) - 1;
        if last <= self.closed {
            return Vec::new();
        }
        let first = (self.closed + 1).max(last - MAX_CATCH_UP + 1);
        self.closed = last;
        self.minutes = self.minutes.split_off(&(last - KEEP_CLOSED));
        (first..=last).collect()
    }

    /// This replica's spend in `minute`.
    pub fn spends(&self, minute: i64) -> Spends {
        self.minutes
            .get(&minute)
            .map(|tenants| {
                tenants
                    .iter()
                    .map(|(tenant, models)| {
                        let models = models.iter().map(|(m, e)| (m.clone(), e.spent)).collect();
                        (tenant.clone(), models)
                    })
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// Adds `more` into `into`.
pub fn merge(into: &mut Spends, more: Spends) {
    for (tenant, models) in more {
        let target = into.entry(tenant).or_default();
        for (model, spent) in models {
            *target.entry(model).or_default() += spent;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINUTE: i64 = 60_000;

    fn name(s: &str) -> SmolStr {
        SmolStr::new(s)
    }

    #[test]
    fn minutes_are_handed_out_once_in_order_after_their_grace() {
        let start = 1000 * MINUTE + 5_000;
        let mut book = MinuteBook::new(start);
        let cases = [
            // (now, expected minutes)
            (start, vec![]),
            (1001 * MINUTE + 2_000, vec![]), // minute 1000 ended, grace not over
            (1001 * MINUTE + 3_000, vec![1000]),
            (1001 * MINUTE + 9_000, vec![]),
            (1004 * MINUTE + 3_000, vec![1001, 1002, 1003]),
            (5000 * MINUTE, (4998 - MAX_CATCH_UP + 1..=4998).collect()),
        ];
        for (now, expected) in cases {
            assert_eq!(book.due(now, 3_000), expected, "at {now}");
        }
    }

    #[test]
    fn spend_is_kept_per_minute_and_published_once() {
        let mut book = MinuteBook::new(0);
        book.add(&name("t"), &name("m"), 1.0, 10);
        book.add(&name("t"), &name("m"), 2.0, 20);
        book.add(&name("t"), &name("n"), 4.0, MINUTE + 1);
        assert_eq!(book.spends(0)["t"]["m"], 3.0);
        assert_eq!(book.spends(1)["t"]["n"], 4.0);
        let told = book.unpublished();
        assert_eq!(told.len(), 2);
        // Spend that arrives while a report is on its way is told next time.
        book.add(&name("t"), &name("m"), 0.5, 30);
        book.published(&told);
        let again = book.unpublished();
        assert_eq!(again.len(), 1);
        assert_eq!((again[0].minute, again[0].spent), (0, 3.5));
        book.published(&again);
        assert!(book.unpublished().is_empty());
    }

    #[test]
    fn closed_minutes_are_forgotten_after_a_while() {
        let mut book = MinuteBook::new(0);
        book.add(&name("t"), &name("m"), 1.0, 10);
        book.due(5 * MINUTE, 0);
        assert_eq!(book.spends(0)["t"]["m"], 1.0);
        book.due((KEEP_CLOSED + 2) * MINUTE, 0);
        assert!(book.spends(0).is_empty());
    }
}
