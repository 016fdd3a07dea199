//! The PostgreSQL ledger against a real server started here: it answers every report as the
//! SQLite ledger does for the same records, keeps hits out of its rows under
//! `detail = "misses"`, survives the server stopping and starting under writes (and not being
//! there at all at open) without losing or doubling a record, and refuses sync records while
//! the server is away.

mod common;

use std::time::{Duration, Instant};

use common::postgres::Postgres;
use smol_str::SmolStr;
use tollgate::metering::ledger::{
    CostQuery, Detail, FocusQuery, GroupKey, Ledger, LedgerError, LedgerSettings, TimeseriesQuery,
};
use tollgate::metering::record::{push_id_time, UsageRecord, IDLE_TENANT};

const T0: i64 = 1_780_000_000_000;
const HOUR: i64 = 3_600_000;

fn record(n: u64, time_ms: i64, tenant: &str, cache: &str) -> UsageRecord {
    let mut id = format!("pg-{n}");
    push_id_time(&mut id, time_ms);
    let hit = cache == "hit";
    UsageRecord {
        request_id: id.into(),
        time_ms,
        tenant: SmolStr::new(tenant),
        team: SmolStr::new(format!("team-{}", n % 3)),
        project: "p".into(),
        tags: vec![(
            "env".into(),
            if n.is_multiple_of(2) { "prod" } else { "dev" }.into(),
        )],
        model: if n.is_multiple_of(5) { "big" } else { "digits" }.into(),
        version: "1".into(),
        protocol: "http".into(),
        cache: SmolStr::new(cache),
        rows: 1 + (n % 4) as u32,
        batch_size: 8,
        queue_us: n % 700,
        compute_us: 1_000 + n % 9_000,
        latency_us: 300 + (n * 37) % 80_000,
        cost_usd: if hit { 0.0 } else { 1e-6 * (1 + n % 13) as f64 },
        saved_usd: if hit { 2e-6 } else { 0.0 },
        outcome: "success".into(),
        device: "cpu".into(),
        lane: "realtime".into(),
    }
}

/// Three hours of traffic from two tenants, a tenth of it hits, and idle time.
fn traffic(count: u64) -> Vec<UsageRecord> {
    let mut out: Vec<UsageRecord> = (0..count)
        .map(|n| {
            let time = T0 + (n as i64 * 3 * HOUR) / count as i64 + 17;
            let tenant = if n % 2 == 0 { "acme" } else { "globex" };
            record(n, time, tenant, if n % 10 == 0 { "hit" } else { "miss" })
        })
        .collect();
    let mut idle = record(count, T0 + 90_000, IDLE_TENANT, "none");
    idle.team = "".into();
    idle.outcome = "idle".into();
    out.push(idle);
    out
}

fn pg_settings(url: &str) -> LedgerSettings {
    LedgerSettings {
        url: Some(url.to_string()),
        ..LedgerSettings::new("unused-by-a-postgres-ledger.sqlite")
    }
}

fn costs(ledger: &Ledger, group_by: &str) -> Vec<tollgate::metering::ledger::CostRow> {
    ledger
        .costs(&CostQuery {
            from_ms: T0 - HOUR,
            to_ms: T0 + 5 * HOUR,
            group_by: GroupKey::parse_list(group_by).expect("keys"),
        })
        .expect("costs")
}

fn total_requests(ledger: &Ledger) -> u64 {
    costs(ledger, "").iter().map(|r| r.requests).sum()
}

/// Reports equal up to the last bits of floating-point sums added in another order.
fn assert_rows_match(
    pg: &[tollgate::metering::ledger::CostRow],
    lite: &[tollgate::metering::ledger::CostRow],
    what: &str,
) {
    assert_eq!(pg.len(), lite.len(), "{what}: {pg:?} against {lite:?}");
    for (a, b) in pg.iter().zip(lite) {
        assert_eq!(
            (&a.group, a.requests, a.rows, a.cache_hits),
            (&b.group, b.requests, b.rows, b.cache_hits),
            "{what}"
        );
        assert_eq!(
            (a.p50_latency_ms, a.p99_latency_ms),
            (b.p50_latency_ms, b.p99_latency_ms)
        );
        assert!((a.cost_usd - b.cost_usd).abs() <= 1e-12 * b.cost_usd.abs().max(1.0));
        assert!((a.saved_usd - b.saved_usd).abs() <= 1e-12 * b.saved_usd.abs().max(1.0));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn reports_equal_the_sqlite_ledgers_for_the_same_records() {
    let pg = Postgres::start();
    let dir = common::scratch_dir();
    let lite = Ledger::open(LedgerSettings::new(dir.join("ledger.sqlite"))).expect("sqlite");
    let remote = Ledger::open(pg_settings(&pg.url())).expect("postgres");
    for r in traffic(3_000) {
        let _ = lite.record(r.clone());
        let _ = remote.record(r);
    }
    lite.flush().await.expect("sqlite flush");
    remote.flush().await.expect("postgres flush");
    for group_by in [
        "",
        "team",
        "tenant,model",
        "tag:env,cache",
        "lane,device,outcome",
    ] {
        let (a, b) = (costs(&remote, group_by), costs(&lite, group_by));
        assert_rows_match(&a, &b, group_by);
    }
    assert_eq!(total_requests(&remote), 3_000);

    let series = |ledger: &Ledger, step_ms: i64| {
        ledger
            .timeseries(&TimeseriesQuery {
                from_ms: T0,
                to_ms: T0 + 3 * HOUR,
                step_ms,
                group_by: vec![GroupKey::Tenant],
            })
            .expect("timeseries")
    };
    for step in [60_000, 15 * 60_000, HOUR] {
        let (a, b) = (series(&remote, step), series(&lite, step));
        assert_eq!(a.len(), b.len());
        for (sa, sb) in a.iter().zip(&b) {
            assert_eq!(sa.group, sb.group);
            let counts = |s: &tollgate::metering::ledger::Series| -> Vec<(i64, u64, u64)> {
                s.points
                    .iter()
                    .map(|p| (p.t_ms, p.requests, p.cache_hits))
                    .collect()
            };
            assert_eq!(counts(sa), counts(sb), "step {step}");
        }
    }

    let focus = FocusQuery {
        from_ms: T0,
        to_ms: T0 + 3 * HOUR,
        currency: "USD".into(),
        billing_account: "acct".into(),
        provider: "Tollgate".into(),
    };
    let (a, b) = (
        remote.focus_csv(&focus).expect("focus"),
        lite.focus_csv(&focus).expect("focus"),
    );
    let lines = |csv: &str| -> Vec<String> {
        // Cost columns may differ in the last digit; the rest must be equal.
        csv.lines()
            .map(|l| l.split(',').skip(4).take(7).collect::<Vec<_>>().join(","))
            .collect()
    };
    assert_eq!(a.lines().count(), b.lines().count());
    assert_eq!(lines(&a), lines(&b));

    let some = record(7, T0 + (7 * 3 * HOUR) / 3_000 + 17, "globex", "miss");
    let found = remote.usage(&some.request_id).expect("usage");
    assert_eq!(found, lite.usage(&some.request_id).expect("usage"));
    assert_eq!(found.map(|r| r.request_id), Some(some.request_id));

    for tenant in ["acme", "globex", IDLE_TENANT] {
        let (a, b) = (
            remote.spend(tenant, T0).expect("spend"),
            lite.spend(tenant, T0).expect("spend"),
        );
        assert!((a - b).abs() <= 1e-12, "{tenant}: {a} against {b}");
        assert!(a > 0.0, "{tenant}");
    }
    let team = remote.spend_by_team("team-1", T0).expect("team spend");
    assert!((team - lite.spend_by_team("team-1", T0).expect("team")).abs() <= 1e-12);

    // Retention deletes per-request rows in chunks and keeps the rollups the reports read.
    let purged = remote.purge_older_than(T0 + 4 * HOUR).expect("purge");
    assert_eq!(purged, 3_001);
    assert_eq!(remote.usage(&id_of(7)).expect("usage"), None);
    assert_eq!(total_requests(&remote), 3_000);
}

fn id_of(n: u64) -> String {
    record(n, T0 + (n as i64 * 3 * HOUR) / 3_000 + 17, "", "")
        .request_id
        .to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn misses_detail_keeps_hits_out_of_the_rows_but_in_the_costs() {
    let pg = Postgres::start();
    let ledger = Ledger::open(LedgerSettings {
        detail: Detail::Misses,
        ..pg_settings(&pg.url())
    })
    .expect("postgres");
    for r in traffic(1_000) {
        let _ = ledger.record(r);
    }
    ledger.flush().await.expect("flush");
    let rows: u64 = pg
        .psql("tollgate", "SELECT COUNT(*) FROM usage WHERE cache = 'hit'")
        .parse()
        .expect("count");
    assert_eq!(rows, 0);
    let kept: u64 = pg
        .psql("tollgate", "SELECT COUNT(*) FROM usage")
        .parse()
        .expect("count");
    assert_eq!(kept, 901, "900 misses and the idle record");
    let hits: u64 = costs(&ledger, "cache")
        .iter()
        .filter(|r| r.group.contains(&("cache".into(), "hit".into())))
        .map(|r| r.requests)
        .sum();
    assert_eq!(hits, 100);
}

/// Writes a record every millisecond or so from another thread until told to stop; returns
/// how many it handed over.
fn writer_thread(
    ledger: Ledger,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<u64> {
    std::thread::spawn(move || {
        let mut n = 0;
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            let r = record(n, T0 + n as i64, "acme", "miss");
            assert!(matches!(
                ledger.record(r),
                tollgate::metering::ledger::Submitted::Queued
            ));
            n += 1;
            std::thread::sleep(Duration::from_micros(500));
        }
        n
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn a_server_that_stops_and_returns_loses_and_doubles_nothing() {
    let mut pg = Postgres::start();
    let ledger = Ledger::open(pg_settings(&pg.url())).expect("postgres");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = writer_thread(ledger.clone(), stop.clone());
    tokio::time::sleep(Duration::from_millis(500)).await;
    pg.stop();
    // A sync record while the server is away is refused, and soon: the caller answers 503.
    let started = Instant::now();
    let refused = ledger
        .record_committed(record(1_000_000, T0, "acme", "miss"))
        .await;
    assert!(
        matches!(refused, Err(LedgerError::CommitFailed { .. })),
        "{refused:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(ledger.stats().failing);
    tokio::time::sleep(Duration::from_secs(3)).await;
    pg.restart();
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let sent = writer.join().expect("writer thread");
    let deadline = Instant::now() + Duration::from_secs(30);
    while ledger.flush().await.is_err() {
        assert!(Instant::now() < deadline, "the ledger never recovered");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let stats = ledger.stats();
    assert_eq!((stats.dropped, stats.pending, stats.failing), (0, 0, false));
    assert!(stats.write_failures > 0);
    assert_eq!(total_requests(&ledger), sent);
    let rows: u64 = pg
        .psql("tollgate", "SELECT COUNT(DISTINCT request_id) FROM usage")
        .parse()
        .expect("count");
    let all: u64 = pg
        .psql("tollgate", "SELECT COUNT(*) FROM usage")
        .parse()
        .expect("count");
    assert_eq!((rows, all), (sent, sent));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_gateway_opens_while_the_server_is_down_and_writes_once_it_is_up() {
    let mut pg = Postgres::start();
    pg.stop();
    let ledger = Ledger::open(pg_settings(&pg.url())).expect("opens without its server");
    for n in 0..500 {
        let _ = ledger.record(record(n, T0 + n as i64, "globex", "miss"));
    }
    assert!(ledger.flush().await.is_err());
    assert!(ledger
        .costs(&CostQuery {
            from_ms: T0,
            to_ms: T0 + HOUR,
            group_by: Vec::new(),
        })
        .is_err());
    pg.restart();
    let deadline = Instant::now() + Duration::from_secs(30);
    while ledger.flush().await.is_err() {
        assert!(Instant::now() < deadline, "the ledger never connected");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(total_requests(&ledger), 500);
    assert_eq!(ledger.stats().dropped, 0);
}

#[test]
fn a_url_without_a_user_is_refused_at_open() {
    let err = Ledger::open(pg_settings("postgres://127.0.0.1:1/tollgate")).err();
    assert!(matches!(err, Some(LedgerError::BadUrl(_))), "{err:?}");
}
