//! Rollups: usage summed per UTC minute and per everything a cost report groups by (tenant,
//! team, project, tag set, model, version, device, outcome, cache status, lane), with the
//! device time the requests were charged for and a latency histogram of fixed buckets, so that a percentile can be read over any range by adding
//! histograms. The writer folds each group of records into one upsert per rollup row, in the
//! transaction that writes the group, so a group is counted in both places or in neither.
//!
//! Two tiers of the same shape: `usage_rollup` per minute and `usage_rollup_hour` per hour
//! (its `minute_ms` is the hour's first minute). A long range reads whole hours from the
//! second and only its ragged ends from the first (`Span`), so a month of reports reads about
//! sixty times fewer rows than minutes alone would need.

use std::collections::HashMap;
use std::sync::LazyLock;

use rusqlite::Connection;
use smol_str::SmolStr;

use super::store::{finite, to_sql_int, write_tags_json};
use crate::metering::record::UsageRecord;

/// Buckets of the latency histogram. Bucket `i` holds latencies up to `BUCKET_BASE_US ×
/// BUCKET_GROWTH^i`; the last one holds everything above too.
pub(super) const BUCKETS: usize = 48;
const BUCKET_BASE_US: f64 = 20.0;
const BUCKET_GROWTH: f64 = 1.35;

const MINUTE_MS: i64 = 60_000;
/// Parameter number of `h0` in `UPSERT`.
const FIRST_BUCKET: usize = 17;

/// The device time a record was charged for: its share of the batch (compute time × its rows
/// / the batch's rows), nothing for an answer from the cache, the whole stretch for idle time.
pub(super) fn charged_device_us(r: &UsageRecord) -> f64 {
    if r.tenant == crate::metering::record::IDLE_TENANT {
        r.compute_us as f64
    } else if matches!(r.cache.as_str(), "hit" | "coalesced") || r.batch_size == 0 {
        0.0
    } else {
        r.compute_us as f64 * f64::from(r.rows) / f64::from(r.batch_size)
    }
}

/// The upper bound of bucket `i`, in microseconds (the last bucket has none).
pub(super) fn bucket_upper_us(i: usize) -> f64 {
    BUCKET_BASE_US * BUCKET_GROWTH.powi(i as i32)
}

/// The bucket a latency falls in.
pub(super) fn bucket_of(latency_us: u64) -> usize {
    let latency = latency_us as f64;
    if latency <= BUCKET_BASE_US {
        return 0;
    }
    let i = (latency / BUCKET_BASE_US).ln() / BUCKET_GROWTH.ln();
    // Rounding may put a latency a hair past its bound; the bound check settles it.
    let mut bucket = (i.ceil() as usize).min(BUCKETS - 1);
    while bucket > 0 && latency <= bucket_upper_us(bucket - 1) {
        bucket -= 1;
    }
    bucket
}

/// Both tiers' tables.
pub(super) static TABLE: LazyLock<String> = LazyLock::new(|| {
    format!(
        "{}\n{}\nCREATE INDEX usage_rollup_tenant ON usage_rollup (tenant, minute_ms);\n\
         CREATE INDEX usage_rollup_hour_tenant ON usage_rollup_hour (tenant, minute_ms);",
        table("usage_rollup"),
        table("usage_rollup_hour")
    )
});

pub(super) const TIERS: [&str; 2] = ["usage_rollup", "usage_rollup_hour"];

/// A rollup row's key columns, in table order.
pub(super) const KEY: &str =
    "minute_ms, tenant, team, project, tags, model, version, device, outcome, cache, lane";

/// Column types of one database: SQLite's, or (`postgres` true) PostgreSQL's, whose REAL is
/// single precision and whose text compares bytewise only under the "C" collation.
pub(super) struct Types {
    pub(super) int: &'static str,
    pub(super) real: &'static str,
    pub(super) text: &'static str,
    /// After the closing parenthesis.
    pub(super) table_options: &'static str,
}

pub(super) const SQLITE_TYPES: Types = Types {
    int: "INTEGER",
    real: "REAL",
    text: "TEXT",
    table_options: " WITHOUT ROWID",
};

fn table(name: &str) -> String {
    table_of(name, &SQLITE_TYPES)
}

/// The DDL of one tier.
pub(super) fn table_of(name: &str, t: &Types) -> String {
    let (int, real, text) = (t.int, t.real, t.text);
    let buckets: String = (0..BUCKETS)
        .map(|i| format!("    h{i} {int} NOT NULL DEFAULT 0,\n"))
        .collect();
    let texts: String = [
        "tenant", "team", "project", "tags", "model", "version", "device", "outcome", "cache",
        "lane",
    ]
    .iter()
    .map(|c| format!("    {c:<11} {text} NOT NULL,\n"))
    .collect();
    format!(
        "CREATE TABLE {name} (
    minute_ms   {int} NOT NULL,
{texts}    requests    {int} NOT NULL,
    row_count   {int} NOT NULL,
    cost_usd    {real} NOT NULL,
    saved_usd   {real} NOT NULL,
    device_us   {real} NOT NULL,
{buckets}    PRIMARY KEY ({KEY})
){};",
        t.table_options
    )
}

/// Adds a row's sums to the stored row with the same key, or stores it.
static UPSERT: LazyLock<[String; 2]> = LazyLock::new(|| TIERS.map(upsert));

fn upsert(table: &str) -> String {
    let names: String = (0..BUCKETS).map(|i| format!(", h{i}")).collect();
    let values: String = (0..BUCKETS)
        .map(|i| format!(", ?{}", FIRST_BUCKET + i))
        .collect();
    let adds: String = (0..BUCKETS)
        .map(|i| format!(", h{i} = h{i} + excluded.h{i}"))
        .collect();
    format!(
        "INSERT INTO {table} (minute_ms, tenant, team, project, tags, model, version, \
             device, outcome, cache, lane, requests, row_count, cost_usd, saved_usd, \
             device_us{names}) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16{values}) \
         ON CONFLICT DO UPDATE SET requests = requests + excluded.requests, \
             row_count = row_count + excluded.row_count, cost_usd = cost_usd + excluded.cost_usd, \
             saved_usd = saved_usd + excluded.saved_usd, \
             device_us = device_us + excluded.device_us{adds}"
    )
}

/// One chunk of a purge of rollup rows: ?1 the cutoff, ?2 the chunk's size. Rows of minutes
/// before the cutoff, picked by their key (the table has no row id).
pub(super) static PURGE: LazyLock<[String; 2]> = LazyLock::new(|| {
    TIERS.map(|table| {
        format!(
            "DELETE FROM {table} WHERE ({KEY}) IN \
                 (SELECT {KEY} FROM {table} WHERE minute_ms < ?1 LIMIT ?2)"
        )
    })
});

const HOUR_MS: i64 = 3_600_000;

/// Which rows of the two tiers cover a range of whole minutes: the hours wholly inside it
/// from the hour tier, the minutes before the first and after the last of those from the
/// minute tier. `SOURCE` is an SQL table expression over both, with `?1` the range's start,
/// `?2` its end, `?4` and `?5` the hours' bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Span {
    pub(super) hours_from_ms: i64,
    pub(super) hours_to_ms: i64,
}

impl Span {
    pub(super) const SOURCE: &'static str =
        "(SELECT * FROM usage_rollup WHERE (minute_ms >= ?1 AND minute_ms < ?4) \
             OR (minute_ms >= ?5 AND minute_ms < ?2) \
         UNION ALL SELECT * FROM usage_rollup_hour WHERE minute_ms >= ?4 AND minute_ms < ?5) \
         AS source";

    /// `use_hours` false reads minutes only (a time series whose step is not whole hours).
    pub(super) fn new(from_ms: i64, to_ms: i64, use_hours: bool) -> Span {
        let floor = from_ms.div_euclid(HOUR_MS) * HOUR_MS;
        let first = if floor < from_ms {
            floor.saturating_add(HOUR_MS)
        } else {
            floor
        };
        let last = to_ms.div_euclid(HOUR_MS) * HOUR_MS;
        if use_hours && first < last {
            Span {
                hours_from_ms: first,
                hours_to_ms: last,
            }
        } else {
            // No whole hour: the minutes cover [from, to) through the first clause alone.
            Span {
                hours_from_ms: to_ms,
                hours_to_ms: to_ms,
            }
        }
    }
}

/// What a rollup row is keyed by: its minute and the rest in `KEY` order (which is also the
/// order rows are written in, so writers sharing a database lock rows in one order).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(super) struct Key {
    pub(super) minute_ms: i64,
    // SmolStr: the record's own strings are shared, not copied, for every record folded.
    pub(super) tenant: SmolStr,
    pub(super) team: SmolStr,
    pub(super) project: SmolStr,
    pub(super) tags: SmolStr,
    pub(super) model: SmolStr,
    pub(super) version: SmolStr,
    pub(super) device: SmolStr,
    pub(super) outcome: SmolStr,
    pub(super) cache: SmolStr,
    pub(super) lane: SmolStr,
}

impl Key {
    /// The text columns, in `KEY` order.
    pub(super) fn texts(&self) -> [&str; 10] {
        [
            &self.tenant,
            &self.team,
            &self.project,
            &self.tags,
            &self.model,
            &self.version,
            &self.device,
            &self.outcome,
            &self.cache,
            &self.lane,
        ]
        .map(|s| s.as_str())
    }
}

#[derive(Debug, Clone)]
pub(super) struct Sums {
    pub(super) requests: u64,
    pub(super) rows: u64,
    pub(super) cost_usd: f64,
    pub(super) saved_usd: f64,
    pub(super) device_us: f64,
    pub(super) histogram: [u64; BUCKETS],
}

impl Default for Sums {
    fn default() -> Sums {
        Sums {
            requests: 0,
            rows: 0,
            cost_usd: 0.0,
            saved_usd: 0.0,
            device_us: 0.0,
            histogram: [0; BUCKETS],
        }
    }
}

/// Rollup rows being summed before they are written.
#[derive(Default)]
pub(super) struct Fold {
    rows: HashMap<Key, Sums>,
}

impl Fold {
    /// Counts one record. Idle records (no request) add cost and rows, not requests.
    pub(super) fn add(&mut self, r: &UsageRecord, scratch: &mut Vec<u8>) {
        write_tags_json(scratch, &r.tags);
        let key = Key {
            minute_ms: r.time_ms.div_euclid(MINUTE_MS) * MINUTE_MS,
            tenant: r.tenant.clone(),
            team: r.team.clone(),
            project: r.project.clone(),
            tags: SmolStr::new(String::from_utf8_lossy(scratch)),
            model: r.model.clone(),
            version: r.version.clone(),
            device: r.device.clone(),
            outcome: r.outcome.clone(),
            cache: r.cache.clone(),
            lane: r.lane.clone(),
        };
        let sums = self.rows.entry(key).or_default();
        let is_request = r.tenant != crate::metering::record::IDLE_TENANT;
        if is_request {
            sums.requests += 1;
            sums.histogram[bucket_of(r.latency_us)] += 1;
        }
        sums.rows += u64::from(r.rows);
        sums.cost_usd += finite(r.cost_usd);
        sums.saved_usd += finite(r.saved_usd);
        sums.device_us += charged_device_us(r);
    }

    /// The rows of the minute tier and their sums per hour for the hour tier, each in key order.
    pub(super) fn tiers(self) -> [Vec<(Key, Sums)>; 2] {
        let mut hours: HashMap<Key, Sums> = HashMap::with_capacity(self.rows.len());
        for (key, sums) in &self.rows {
            let hour = Key {
                minute_ms: key.minute_ms.div_euclid(HOUR_MS) * HOUR_MS,
                ..key.clone()
            };
            hours.entry(hour).or_default().merge(sums);
        }
        [self.rows, hours].map(|tier| {
            let mut rows: Vec<(Key, Sums)> = tier.into_iter().collect();
            rows.sort_unstable_by(|a, b| a.0.cmp(&b.0));
            rows
        })
    }

    /// Writes both tiers: one upsert per row.
    pub(super) fn write(self, conn: &Connection) -> rusqlite::Result<()> {
        let [minutes, hours] = self.tiers();
        write_tier(conn, &UPSERT[0], minutes)?;
        write_tier(conn, &UPSERT[1], hours)
    }
}

impl Sums {
    fn merge(&mut self, other: &Sums) {
        self.requests += other.requests;
        self.rows += other.rows;
        self.cost_usd += other.cost_usd;
        self.saved_usd += other.saved_usd;
        self.device_us += other.device_us;
        for (mine, theirs) in self.histogram.iter_mut().zip(other.histogram.iter()) {
            *mine += theirs;
        }
    }
}

fn write_tier(conn: &Connection, upsert: &str, rows: Vec<(Key, Sums)>) -> rusqlite::Result<()> {
    let mut stmt = conn.prepare_cached(upsert)?;
    for (key, sums) in rows {
        stmt.raw_bind_parameter(1, key.minute_ms)?;
        for (i, value) in key.texts().iter().enumerate() {
            stmt.raw_bind_parameter(2 + i, *value)?;
        }
        stmt.raw_bind_parameter(12, to_sql_int(sums.requests))?;
        stmt.raw_bind_parameter(13, to_sql_int(sums.rows))?;
        stmt.raw_bind_parameter(14, sums.cost_usd)?;
        stmt.raw_bind_parameter(15, sums.saved_usd)?;
        stmt.raw_bind_parameter(16, sums.device_us)?;
        for (i, count) in sums.histogram.iter().enumerate() {
            stmt.raw_bind_parameter(FIRST_BUCKET + i, to_sql_int(*count))?;
        }
        stmt.raw_execute()?;
    }
    Ok(())
}

/// Builds the rollups of every record already in `usage` (a ledger from before rollups), in
/// chunks of rows so a large file never sits in memory at once.
pub(super) fn backfill(conn: &Connection) -> Result<u64, super::LedgerError> {
    const CHUNK: i64 = 50_000;
    let mut last_id = 0i64;
    let mut total = 0u64;
    let mut scratch = Vec::new();
    let sql = format!(
        "SELECT {}, id FROM usage WHERE id > ?1 ORDER BY id LIMIT ?2",
        super::store::RECORD_COLUMNS
    );
    loop {
        let params = [
            super::sql::Param::Int(last_id),
            super::sql::Param::Int(CHUNK),
        ];
        let rows = super::sql::sqlite_rows(conn, &sql, &params)?;
        let n = rows.len() as u64;
        let mut fold = Fold::default();
        for mut row in rows {
            if let Some(id) = row.pop() {
                last_id = id.int()?;
            }
            fold.add(&super::store::record_from_cells(row)?, &mut scratch);
        }
        fold.write(conn)?;
        total += n;
        if n < CHUNK as u64 {
            return Ok(total);
        }
    }
}

/// Nearest-rank percentile `p` (0 to 100) of a histogram, as the upper bound of the bucket
/// holding that rank, in milliseconds; the open last bucket reads as its lower bound.
pub(super) fn percentile_ms(histogram: &[u64], p: u64) -> Option<f64> {
    let count: u64 = histogram.iter().sum();
    if count == 0 {
        return None;
    }
    let rank = (count * p).div_ceil(100).max(1);
    let mut seen = 0;
    for (i, n) in histogram.iter().enumerate() {
        seen += n;
        if seen >= rank {
            let bound = if i + 1 == histogram.len() && i > 0 {
                bucket_upper_us(i - 1)
            } else {
                bucket_upper_us(i)
            };
            return Some(bound / 1000.0);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latencies_fall_in_the_bucket_whose_bound_holds_them() {
        for latency in [
            0u64,
            1,
            20,
            21,
            27,
            28,
            100,
            999,
            1_000,
            12_345,
            1_000_000,
            u64::MAX / 2,
        ] {
            let bucket = bucket_of(latency);
            let l = latency as f64;
            if bucket + 1 < BUCKETS {
                assert!(l <= bucket_upper_us(bucket), "{latency} in {bucket}");
            }
            if bucket > 0 {
                assert!(l > bucket_upper_us(bucket - 1), "{latency} in {bucket}");
            }
        }
    }

    #[test]
    fn spans_take_whole_hours_from_the_hour_tier() {
        let h = HOUR_MS;
        // (from, to, use hours) -> the hours read from the hour tier, if any.
        let cases = [
            (0, 3 * h, true, Some((0, 3 * h))),
            (60_000, 3 * h, true, Some((h, 3 * h))),
            (60_000, 2 * h - 60_000, true, None),
            (0, h, true, Some((0, h))),
            (0, 3 * h, false, None),
            (-h - 60_000, h, true, Some((-h, h))),
            (5 * h, 5 * h, true, None),
        ];
        for (from, to, use_hours, hours) in cases {
            let span = Span::new(from, to, use_hours);
            let want = match hours {
                Some((a, b)) => Span {
                    hours_from_ms: a,
                    hours_to_ms: b,
                },
                None => Span {
                    hours_from_ms: to,
                    hours_to_ms: to,
                },
            };
            assert_eq!(span, want, "[{from}, {to}) hours: {use_hours}");
        }
    }

    #[test]
    fn percentiles_read_the_bucket_of_their_rank() {
        let mut histogram = [0u64; BUCKETS];
        // 98 fast requests (bucket 5) and 2 slow ones (bucket 20).
        histogram[5] = 98;
        histogram[20] = 2;
        let cases = [(50, 5), (98, 5), (99, 20), (100, 20)];
        for (p, bucket) in cases {
            let expected = Some(bucket_upper_us(bucket) / 1000.0);
            assert_eq!(percentile_ms(&histogram, p), expected, "p{p}");
        }
        assert_eq!(percentile_ms(&[0; BUCKETS], 50), None);
    }

    #[test]
    fn a_percentile_is_at_most_one_bucket_above_the_latency() {
        for latency in [25u64, 700, 15_000, 2_000_000] {
            let mut histogram = [0u64; BUCKETS];
            histogram[bucket_of(latency)] = 1;
            let read = percentile_ms(&histogram, 50).unwrap_or(0.0) * 1000.0;
            let bounds = latency as f64..=latency as f64 * BUCKET_GROWTH;
            assert!(bounds.contains(&read), "{latency}: {read}");
        }
    }
}
