//! The PostgreSQL schema: the tables of SQLite's schema 4 (with PostgreSQL's types), and the
//! ids of committed groups. Replicas that start together migrate one at a time, under an
//! advisory lock held by the migrating transaction.

use super::super::rollup::{self, Types};
use super::super::LedgerError;

/// Bumped (with a step in `migrate`) whenever this schema changes.
pub(super) const SCHEMA_VERSION: i64 = 1;

/// The advisory lock migrations take: any constant other programs on the server won't use.
const MIGRATION_LOCK: i64 = 0x746f_6c6c_6761_7465; // "tollgate"

/// Text compares bytewise under "C", as in SQLite, so reports sort alike on both.
const TYPES: Types = Types {
    int: "BIGINT",
    real: "DOUBLE PRECISION",
    text: "TEXT COLLATE \"C\"",
    table_options: "",
};

fn ddl() -> String {
    let t = TYPES.text;
    let tiers: String = rollup::TIERS
        .iter()
        .map(|name| rollup::table_of(name, &TYPES) + "\n")
        .collect();
    format!(
        "CREATE TABLE ledger_meta (key TEXT PRIMARY KEY, value BIGINT NOT NULL);
CREATE TABLE usage (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    request_id  {t} NOT NULL,
    time_ms     BIGINT NOT NULL,
    tenant      {t} NOT NULL,
    team        {t} NOT NULL,
    project     {t} NOT NULL,
    tags        {t} NOT NULL,
    model       {t} NOT NULL,
    version     {t} NOT NULL,
    protocol    {t} NOT NULL,
    cache       {t} NOT NULL,
    row_count   BIGINT NOT NULL,
    batch_size  BIGINT NOT NULL,
    queue_us    BIGINT NOT NULL,
    compute_us  BIGINT NOT NULL,
    latency_us  BIGINT NOT NULL,
    cost_usd    DOUBLE PRECISION NOT NULL,
    saved_usd   DOUBLE PRECISION NOT NULL,
    outcome     {t} NOT NULL,
    device      {t} NOT NULL,
    lane        {t} NOT NULL
);
CREATE INDEX usage_time ON usage (time_ms);
CREATE INDEX usage_tenant_time ON usage (tenant, time_ms);
{tiers}CREATE INDEX usage_rollup_tenant ON usage_rollup (tenant, minute_ms);
CREATE INDEX usage_rollup_hour_tenant ON usage_rollup_hour (tenant, minute_ms);
CREATE TABLE ledger_groups (id TEXT PRIMARY KEY, time_ms BIGINT NOT NULL);
CREATE INDEX ledger_groups_time ON ledger_groups (time_ms);
INSERT INTO ledger_meta (key, value) VALUES ('schema_version', {SCHEMA_VERSION});"
    )
}

/// Brings the database to `SCHEMA_VERSION` in one transaction, or refuses a newer one.
pub(super) async fn migrate(client: &deadpool_postgres::Object) -> Result<(), LedgerError> {
    // A transaction on a pooled client needs it mutably; a plain BEGIN does the same here.
    client.batch_execute("BEGIN").await?;
    let result = migrate_in_transaction(client).await;
    let end = if result.is_ok() { "COMMIT" } else { "ROLLBACK" };
    client.batch_execute(end).await?;
    result
}

async fn migrate_in_transaction(client: &deadpool_postgres::Object) -> Result<(), LedgerError> {
    client
        .execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    let exists: bool = client
        .query_one("SELECT to_regclass('ledger_meta') IS NOT NULL", &[])
        .await?
        .get(0);
    if !exists {
        client.batch_execute(&ddl()).await?;
        tracing::info!(
            version = SCHEMA_VERSION,
            "PostgreSQL ledger: schema created"
        );
        return Ok(());
    }
    let found: Option<i64> = client
        .query_opt(
            "SELECT value FROM ledger_meta WHERE key = 'schema_version'",
            &[],
        )
        .await?
        .map(|row| row.get(0));
    match found {
        Some(found) if found > SCHEMA_VERSION => Err(LedgerError::SchemaTooNew {
            found,
            supported: SCHEMA_VERSION,
        }),
        Some(SCHEMA_VERSION) => Ok(()),
        other => Err(LedgerError::Corrupt(format!(
            "PostgreSQL ledger schema version {other:?}"
        ))),
    }
}
