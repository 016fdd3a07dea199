//! The fleet's ledger in PostgreSQL (`ledger.url`): every replica writes its groups into the
//! same tables and reads the same rollups, so each one reports the whole fleet.
//!
//! The driver is asynchronous and the ledger's callers are not (the writer is a thread of its
//! own, reads run on `spawn_blocking`), so the ledger owns a small runtime: its one worker
//! drives the pooled connections, and a blocking caller hands it a future and waits for the
//! answer on a channel. That never nests one runtime's `block_on` inside another's.
//!
//! Nothing is connected at open: the schema is made on the first connection that succeeds, so
//! a gateway starts while PostgreSQL is down, holds its records (`writer`), and writes them
//! when it is back.

mod jobs;
mod schema;
mod sink;

use std::future::Future;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod};
use tokio_postgres::types::{ToSql, Type};

use super::sql::{numbered_as_dollars, Cell, Dialect, Param, Read};
use super::LedgerError;

pub(super) use jobs::PgJobs;
pub(super) use sink::PgSink;

/// Connections kept by the pool: the writer's and a few concurrent reports.
const POOL_SIZE: usize = 8;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Longest wait for one statement or group; a server that stopped answering fails the try.
pub(super) const STATEMENT_TIMEOUT: Duration = Duration::from_secs(10);

/// The pool, the runtime that drives it, and whether the schema is known to be in place.
pub(super) struct Postgres {
    runtime: Option<tokio::runtime::Runtime>,
    pool: Pool,
    schema: Arc<tokio::sync::OnceCell<()>>,
}

impl Drop for Postgres {
    fn drop(&mut self) {
        // Dropped wherever the last ledger handle goes, an async context included, where a
        // runtime may not block on its own shutdown.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// The driver's settings from `ledger.url`. The password may stay out of the URL: libpq's
/// `PGPASSWORD` supplies it then (a Kubernetes secret), and it is never logged.
pub(super) fn parse_url(url: &str) -> Result<tokio_postgres::Config, LedgerError> {
    let mut config =
        tokio_postgres::Config::from_str(url).map_err(|e| LedgerError::BadUrl(e.to_string()))?;
    if config.get_password().is_none() {
        if let Ok(password) = std::env::var("PGPASSWORD") {
            config.password(password);
        }
    }
    if config.get_user().is_none() {
        return Err(LedgerError::BadUrl(
            "it names no user (postgres://USER@HOST:PORT/DATABASE)".into(),
        ));
    }
    config.connect_timeout(CONNECT_TIMEOUT);
    config.application_name("tollgate");
    Ok(config)
}

impl Postgres {
    /// Builds the pool without connecting.
    pub(super) fn new(url: &str) -> Result<Arc<Postgres>, LedgerError> {
        let config = parse_url(url)?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("tollgate-ledger-pg")
            .enable_all()
            .build()
            .map_err(|e| LedgerError::Spawn(Arc::new(e)))?;
        let manager = Manager::from_config(
            config,
            tokio_postgres::NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(POOL_SIZE)
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .create_timeout(Some(CONNECT_TIMEOUT))
            .wait_timeout(Some(STATEMENT_TIMEOUT))
            .build()
            .map_err(|e| LedgerError::Pool(e.to_string()))?;
        Ok(Arc::new(Postgres {
            runtime: Some(runtime),
            pool,
            schema: Arc::new(tokio::sync::OnceCell::new()),
        }))
    }

    /// Runs `work` on the ledger's runtime and waits for it, from any thread; a try that
    /// takes longer than `STATEMENT_TIMEOUT` fails.
    pub(super) fn run<T, F>(&self, work: F) -> Result<T, LedgerError>
    where
        T: Send + 'static,
        F: Future<Output = Result<T, LedgerError>> + Send + 'static,
    {
        let runtime = self.runtime.as_ref().ok_or(LedgerError::Closed)?;
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        runtime.spawn(async move {
            let out = match tokio::time::timeout(STATEMENT_TIMEOUT, work).await {
                Ok(out) => out,
                Err(_) => Err(LedgerError::Pool(format!(
                    "PostgreSQL did not answer within {} s",
                    STATEMENT_TIMEOUT.as_secs()
                ))),
            };
            let _ = tx.send(out);
        });
        rx.recv().map_err(|_| LedgerError::Closed)?
    }

    /// A pooled connection to a database whose schema is in place (made on first use).
    fn client(&self) -> impl Future<Output = Result<Object, LedgerError>> + Send + 'static {
        let (pool, schema) = (self.pool.clone(), self.schema.clone());
        async move {
            let client = pool.get().await.map_err(pool_error)?;
            schema.get_or_try_init(|| schema::migrate(&client)).await?;
            Ok(client)
        }
    }

    /// Connects and makes the schema now, so a first start reports a wrong URL or a newer
    /// schema at once. An unreachable server is only logged: records wait for it.
    pub(super) fn check(&self) -> Result<(), LedgerError> {
        let client = self.client();
        match self.run(async move { client.await.map(drop) }) {
            Ok(()) => Ok(()),
            Err(e @ LedgerError::SchemaTooNew { .. }) => Err(e),
            Err(e) => {
                tracing::warn!(error = %e, "the PostgreSQL ledger is unreachable; usage records wait in memory until it answers");
                Ok(())
            }
        }
    }
}

pub(super) fn pool_error(e: deadpool_postgres::PoolError) -> LedgerError {
    match e {
        deadpool_postgres::PoolError::Backend(e) => LedgerError::from(e),
        other => LedgerError::Pool(other.to_string()),
    }
}

/// Reports, over the pool.
pub(super) struct PgReaders(pub(super) Arc<Postgres>);

impl Read for PgReaders {
    fn dialect(&self) -> Dialect {
        Dialect::Postgres
    }

    fn rows(&self, sql: &str, params: &[Param]) -> Result<Vec<Vec<Cell>>, LedgerError> {
        let sql = numbered_as_dollars(sql);
        let params = params.to_vec();
        let client = self.0.client();
        self.0.run(async move {
            let client = client.await?;
            let types: Vec<Type> = params
                .iter()
                .map(|p| match p {
                    Param::Int(_) => Type::INT8,
                    Param::Text(_) => Type::TEXT,
                })
                .collect();
            let stmt = client.prepare_typed_cached(&sql, &types).await?;
            let bound: Vec<&(dyn ToSql + Sync)> = params
                .iter()
                .map(|p| match p {
                    Param::Int(v) => v as &(dyn ToSql + Sync),
                    Param::Text(v) => v as &(dyn ToSql + Sync),
                })
                .collect();
            let rows = client.query(&stmt, &bound).await?;
            rows.iter().map(cells).collect()
        })
    }
}

/// A result row as cells, by each column's type.
fn cells(row: &tokio_postgres::Row) -> Result<Vec<Cell>, LedgerError> {
    let mut out = Vec::with_capacity(row.len());
    for (i, column) in row.columns().iter().enumerate() {
        let ty = column.type_();
        let cell = if *ty == Type::INT8 {
            row.try_get::<_, Option<i64>>(i)?.map(Cell::Int)
        } else if *ty == Type::INT4 {
            row.try_get::<_, Option<i32>>(i)?
                .map(|v| Cell::Int(v.into()))
        } else if *ty == Type::FLOAT8 {
            row.try_get::<_, Option<f64>>(i)?.map(Cell::Real)
        } else if *ty == Type::BOOL {
            row.try_get::<_, Option<bool>>(i)?
                .map(|v| Cell::Int(v.into()))
        } else if *ty == Type::TEXT || *ty == Type::VARCHAR {
            row.try_get::<_, Option<String>>(i)?.map(Cell::Text)
        } else {
            return Err(LedgerError::Corrupt(format!(
                "column {} of type {ty} in a ledger report",
                column.name()
            )));
        };
        out.push(cell.unwrap_or(Cell::Null));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_need_a_user_and_parse_as_libpq_does() {
        let cases = [
            ("postgres://tollgate@db:5432/tollgate", true),
            (
                "postgresql://u:secret@127.0.0.1/ledger?connect_timeout=5",
                true,
            ),
            ("host=db user=tollgate dbname=tollgate", true),
            ("postgres://db:5432/tollgate", false),
            ("postgres://u@db:notaport/x", false),
        ];
        for (url, ok) in cases {
            assert_eq!(parse_url(url).is_ok(), ok, "{url}");
        }
    }
}
