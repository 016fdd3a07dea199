//! Deferred jobs on the fleet's PostgreSQL ledger (a real server started here): two gateways
//! on one ledger see the same job; one of them is killed with SIGKILL mid-job, and the other
//! finishes it, every row answered and billed exactly once.

mod common;

use common::jobs;
use common::postgres::Postgres;

#[test]
fn a_job_on_the_fleet_ledger_survives_the_replica_that_ran_it() {
    let postgres = Postgres::start();
    let config = format!(
        r#"
[ledger]
url = "{}"

[deferred]
batch_rows = 4

[[models]]
name = "slow"
path = "models/slow/1/model.onnx"
max_batch_size = 0
cache = false
price_per_hour = 3.6
"#,
        postgres.url()
    );
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let total = 500;
    let first = common::spawn(&config);
    let second = common::spawn(&config);
    let id = runtime.block_on(async {
        let id = jobs::submit(&first, "slow", jobs::slow_rows(total, 11)).await;
        // The other replica reads the same job.
        assert_eq!(jobs::status(&second, &id).await["total"], total);
        jobs::wait_for(&first, &id, |job| {
            job["completed"].as_u64().unwrap_or(0) >= 40
        })
        .await;
        id
    });
    // SIGKILL: no shutdown code runs.
    drop(first);
    runtime.block_on(jobs::assert_answered_and_billed_once(&second, &id, total));
}
