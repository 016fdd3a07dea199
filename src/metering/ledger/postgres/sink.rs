//! The PostgreSQL ledger's write side. A group is one transaction of four statements, whatever
//! its size: its id, its records as arrays (`UNNEST`), and one upsert per rollup tier. The id
//! goes in first; finding it already there means an earlier try committed and only its answer
//! was lost, so the group is not written again.

use std::sync::Arc;

use tokio_postgres::types::ToSql;

use super::super::rollup::{self, Key, Sums, BUCKETS, KEY};
use super::super::sql::numbered_as_dollars;
use super::super::store::{finite, to_sql_int, write_tags_json};
use super::super::writer::{GroupId, PurgeTarget, Sink};
use super::super::{store, LedgerError};
use super::Postgres;
use crate::metering::clock;
use crate::metering::record::UsageRecord;

pub(super) type Value = Box<dyn ToSql + Send + Sync>;

pub(in super::super) struct PgSink {
    pg: Arc<Postgres>,
    /// Async durability lets a commit return before the server's WAL reaches its disk, as
    /// SQLite's `synchronous=NORMAL` does; a crash of the server (not of a gateway) may then
    /// lose its last commits.
    sync: bool,
    scratch: Vec<u8>,
}

impl PgSink {
    pub(in super::super) fn new(pg: Arc<Postgres>, sync: bool) -> PgSink {
        PgSink {
            pg,
            sync,
            scratch: Vec::new(),
        }
    }
}

/// Records as one array per column, in `store::RECORD_COLUMNS` order.
pub(super) fn record_arrays(records: &[&UsageRecord], scratch: &mut Vec<u8>) -> Vec<Value> {
    let texts = |f: fn(&UsageRecord) -> &str| -> Value {
        Box::new(records.iter().map(|r| f(r).to_string()).collect::<Vec<_>>())
    };
    let ints = |f: fn(&UsageRecord) -> i64| -> Value {
        Box::new(records.iter().map(|r| f(r)).collect::<Vec<i64>>())
    };
    let reals = |f: fn(&UsageRecord) -> f64| -> Value {
        Box::new(records.iter().map(|r| finite(f(r))).collect::<Vec<f64>>())
    };
    let tags: Vec<String> = records
        .iter()
        .map(|r| {
            write_tags_json(scratch, &r.tags);
            String::from_utf8_lossy(scratch).into_owned()
        })
        .collect();
    vec![
        texts(|r| &r.request_id),
        ints(|r| r.time_ms),
        texts(|r| &r.tenant),
        texts(|r| &r.team),
        texts(|r| &r.project),
        Box::new(tags),
        texts(|r| &r.model),
        texts(|r| &r.version),
        texts(|r| &r.protocol),
        texts(|r| &r.cache),
        ints(|r| i64::from(r.rows)),
        ints(|r| i64::from(r.batch_size)),
        ints(|r| to_sql_int(r.queue_us)),
        ints(|r| to_sql_int(r.compute_us)),
        ints(|r| to_sql_int(r.latency_us)),
        reals(|r| r.cost_usd),
        reals(|r| r.saved_usd),
        texts(|r| &r.outcome),
        texts(|r| &r.device),
        texts(|r| &r.lane),
    ]
}

/// The array types of `record_arrays`, for the `UNNEST` casts.
const RECORD_TYPES: [&str; store::RECORD_WIDTH] = [
    "text", "bigint", "text", "text", "text", "text", "text", "text", "text", "text", "bigint",
    "bigint", "bigint", "bigint", "bigint", "float8", "float8", "text", "text", "text",
];

pub(super) fn insert_records_sql() -> String {
    format!(
        "INSERT INTO usage ({}) SELECT * FROM UNNEST({})",
        store::RECORD_COLUMNS,
        unnest_args(&RECORD_TYPES)
    )
}

fn unnest_args(types: &[&str]) -> String {
    types
        .iter()
        .enumerate()
        .map(|(i, t)| format!("${}::{t}[]", i + 1))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Rollup rows as one array per column: the key, the five sums, the buckets.
pub(super) fn rollup_arrays(rows: &[(Key, Sums)]) -> Vec<Value> {
    let mut out: Vec<Value> = vec![Box::new(
        rows.iter().map(|(k, _)| k.minute_ms).collect::<Vec<i64>>(),
    )];
    for i in 0..10 {
        out.push(Box::new(
            rows.iter()
                .map(|(k, _)| k.texts()[i].to_string())
                .collect::<Vec<String>>(),
        ));
    }
    let ints = |f: &dyn Fn(&Sums) -> u64| -> Value {
        Box::new(
            rows.iter()
                .map(|(_, s)| to_sql_int(f(s)))
                .collect::<Vec<i64>>(),
        )
    };
    out.push(ints(&|s| s.requests));
    out.push(ints(&|s| s.rows));
    for f in [
        |s: &Sums| s.cost_usd,
        |s: &Sums| s.saved_usd,
        |s: &Sums| s.device_us,
    ] {
        out.push(Box::new(
            rows.iter().map(|(_, s)| f(s)).collect::<Vec<f64>>(),
        ));
    }
    for b in 0..BUCKETS {
        out.push(ints(&|s| s.histogram[b]));
    }
    out
}

pub(super) fn upsert_sql(table: &str) -> String {
    let mut types = vec!["bigint"];
    types.extend(["text"; 10]);
    types.extend(["bigint", "bigint", "float8", "float8", "float8"]);
    types.extend(["bigint"; BUCKETS]);
    let sums = [
        "requests",
        "row_count",
        "cost_usd",
        "saved_usd",
        "device_us",
    ];
    let buckets: Vec<String> = (0..BUCKETS).map(|i| format!("h{i}")).collect();
    let adds: Vec<String> = sums
        .iter()
        .map(|c| c.to_string())
        .chain(buckets.iter().cloned())
        .map(|c| format!("{c} = r.{c} + excluded.{c}"))
        .collect();
    format!(
        "INSERT INTO {table} AS r ({KEY}, {}, {}) SELECT * FROM UNNEST({}) \
         ON CONFLICT ({KEY}) DO UPDATE SET {}",
        sums.join(", "),
        buckets.join(", "),
        unnest_args(&types),
        adds.join(", ")
    )
}

pub(super) fn refs(values: &[Value]) -> Vec<&(dyn ToSql + Sync)> {
    values.iter().map(|v| &**v as &(dyn ToSql + Sync)).collect()
}

impl Sink for PgSink {
    fn write_group(
        &mut self,
        id: &GroupId,
        kept: &[&UsageRecord],
        fold: rollup::Fold,
    ) -> Result<(), LedgerError> {
        let records = (!kept.is_empty()).then(|| record_arrays(kept, &mut self.scratch));
        let tiers = fold.tiers().map(|rows| rollup_arrays(&rows));
        let (id, sync) = (id.clone(), self.sync);
        let client = self.pg.client();
        self.pg.run(async move {
            let mut client = client.await?;
            let tx = client.transaction().await?;
            if !sync {
                tx.batch_execute("SET LOCAL synchronous_commit = off")
                    .await?;
            }
            let new = tx
                .execute(
                    "INSERT INTO ledger_groups (id, time_ms) VALUES ($1, $2) \
                     ON CONFLICT DO NOTHING",
                    &[&id, &clock::now_ms()],
                )
                .await?;
            if new == 0 {
                tracing::info!(group = %id, "ledger group already committed; not written again");
                tx.rollback().await?;
                return Ok(());
            }
            if let Some(records) = &records {
                let stmt = tx.prepare_cached(&insert_records_sql()).await?;
                tx.execute(&stmt, &refs(records)).await?;
            }
            for (table, values) in rollup::TIERS.iter().zip(&tiers) {
                let stmt = tx.prepare_cached(&upsert_sql(table)).await?;
                tx.execute(&stmt, &refs(values)).await?;
            }
            tx.commit().await?;
            Ok(())
        })
    }

    fn purge_chunk(
        &mut self,
        target: PurgeTarget,
        cutoff_ms: i64,
        limit: usize,
    ) -> Result<usize, LedgerError> {
        let sql = match target {
            PurgeTarget::Records => numbered_as_dollars(store::PURGE_RECORDS),
            PurgeTarget::MinuteRollups => numbered_as_dollars(&rollup::PURGE[0]),
            PurgeTarget::HourRollups => numbered_as_dollars(&rollup::PURGE[1]),
            PurgeTarget::Groups => "DELETE FROM ledger_groups WHERE id IN \
                 (SELECT id FROM ledger_groups WHERE time_ms < $1 LIMIT $2)"
                .to_string(),
        };
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let client = self.pg.client();
        self.pg.run(async move {
            let client = client.await?;
            let n = client.execute(&sql, &[&cutoff_ms, &limit]).await?;
            Ok(usize::try_from(n).unwrap_or(usize::MAX))
        })
    }

    #[cfg(test)]
    fn sqlite(&self) -> Option<&rusqlite::Connection> {
        None
    }
}
