//! The fleet's spend per minute, for anomaly detection that watches the fleet rather than one
//! replica: each replica writes its own running totals into one hash per UTC minute (totals,
//! not increments, so a write sent twice changes nothing), every replica reads the others'
//! once the minute is over, and an anomaly is alerted by whichever replica claims it first.

use super::anomaly::Anomaly;
use super::minutes::{Spends, Unpublished};
use crate::fleet::{FleetError, Redis};
use smol_str::SmolStr;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// How long a minute's spend stays in Redis: long past every replica's close of it.
const KEEP_MS: i64 = 2 * 3600 * 1000;
/// How long an alerted anomaly is remembered, so a replica that closes the minute late does
/// not alert it again.
const CLAIM_TTL_S: u64 = 6 * 3600;
/// Calls off the request path may wait a little longer than those on it.
const LIMIT: Duration = Duration::from_millis(1000);

pub struct FleetSpend {
    redis: Arc<Redis>,
    replica: String,
}

impl FleetSpend {
    /// `replica` names this replica's totals apart from every other's.
    pub fn new(redis: Arc<Redis>, replica: String) -> FleetSpend {
        FleetSpend { redis, replica }
    }

    /// Writes this replica's running totals, one hash per minute.
    pub async fn publish(&self, totals: &[Unpublished]) -> Result<(), FleetError> {
        let mut by_minute: BTreeMap<i64, Vec<&Unpublished>> = BTreeMap::new();
        for item in totals {
            by_minute.entry(item.minute).or_default().push(item);
        }
        for (minute, items) in by_minute {
            let key = key(minute);
            let mut hset = redis::cmd("HSET");
            hset.arg(&key);
            for item in items {
                hset.arg(field(&self.replica, &item.tenant, &item.model))
                    .arg(item.spent);
            }
            self.redis
                .query_within::<()>("spend_publish", LIMIT, &hset)
                .await?;
            let mut expire = redis::cmd("PEXPIREAT");
            expire.arg(&key).arg((minute + 1) * 60_000 + KEEP_MS);
            self.redis
                .query_within::<()>("spend_publish", LIMIT, &expire)
                .await?;
        }
        Ok(())
    }

    /// What every other replica spent in `minute`.
    pub async fn others(&self, minute: i64) -> Result<Spends, FleetError> {
        let mut hgetall = redis::cmd("HGETALL");
        hgetall.arg(key(minute));
        let fields: Vec<(String, String)> = self
            .redis
            .query_within("spend_read", LIMIT, &hgetall)
            .await?;
        let mut spends = Spends::new();
        for (name, value) in fields {
            let (Some((replica, tenant, model)), Ok(spent)) = (parse_field(&name), value.parse())
            else {
                continue;
            };
            if replica == self.replica || !f64::is_finite(spent) {
                continue;
            }
            *spends
                .entry(SmolStr::new(tenant))
                .or_default()
                .entry(SmolStr::new(model))
                .or_default() += spent;
        }
        Ok(spends)
    }

    /// True when this replica is the first in the fleet to alert `anomaly`.
    pub async fn claim(&self, anomaly: &Anomaly) -> Result<bool, FleetError> {
        let key = format!(
            "tollgate:fleet:{{{}}}:anomaly:{}:{}:{}",
            anomaly.tenant,
            anomaly.model.len(),
            anomaly.model,
            anomaly.started_minute
        );
        let mut set = redis::cmd("SET");
        set.arg(&key)
            .arg(&self.replica)
            .arg("NX")
            .arg("EX")
            .arg(CLAIM_TTL_S);
        let claimed: Option<String> = self
            .redis
            .query_within("anomaly_claim", LIMIT, &set)
            .await?;
        Ok(claimed.is_some())
    }
}

/// One hash per minute; the braces keep it whole in one slot of a cluster.
fn key(minute: i64) -> String {
    format!("tollgate:fleet:spend:{{{minute}}}")
}

/// `replica tenant-length:tenant model`: names may hold any character, the length tells them apart.
fn field(replica: &str, tenant: &str, model: &str) -> String {
    format!("{replica} {}:{tenant}{model}", tenant.len())
}

fn parse_field(field: &str) -> Option<(&str, &str, &str)> {
    let (replica, rest) = field.split_once(' ')?;
    let (length, names) = rest.split_once(':')?;
    let length: usize = length.parse().ok()?;
    let tenant = names.get(..length)?;
    let model = names.get(length..)?;
    Some((replica, tenant, model))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_carry_any_names_there_and_back() {
        let cases = [
            ("r1", "acme", "digits"),
            ("r1", "a b:c", "m:1 x"),
            ("r2", "", "m"),
            ("r2", "tenant-é", "modèle"),
        ];
        for (replica, tenant, model) in cases {
            let encoded = field(replica, tenant, model);
            assert_eq!(
                parse_field(&encoded),
                Some((replica, tenant, model)),
                "{encoded}"
            );
        }
    }

    #[test]
    fn foreign_fields_are_not_taken_for_spend() {
        for odd in ["", "r1", "r1 x:ab", "r1 9:ab", "r1 1:é"] {
            assert_eq!(parse_field(odd), None, "{odd:?}");
        }
    }
}
