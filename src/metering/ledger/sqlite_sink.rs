//! The SQLite ledger's write side: one connection, each group one IMMEDIATE transaction. A
//! local commit either happens or reports its failure, so group ids need no table here.

use rusqlite::{Connection, TransactionBehavior};

use super::writer::{GroupId, PurgeTarget, Sink};
use super::{rollup, store, LedgerError};
use crate::metering::record::UsageRecord;

pub(super) struct SqliteSink {
    conn: Connection,
    /// Reused for each record's tags JSON.
    scratch: Vec<u8>,
}

impl SqliteSink {
    pub(super) fn new(conn: Connection) -> SqliteSink {
        SqliteSink {
            conn,
            scratch: Vec::new(),
        }
    }
}

impl Sink for SqliteSink {
    fn write_group(
        &mut self,
        _id: &GroupId,
        kept: &[&UsageRecord],
        fold: rollup::Fold,
    ) -> Result<(), LedgerError> {
        // IMMEDIATE takes the write lock up front, so a busy database fails here, not half-way.
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        store::insert_all(&tx, kept, &mut self.scratch)?;
        fold.write(&tx)?;
        tx.commit()?;
        Ok(())
    }

    fn purge_chunk(
        &mut self,
        target: PurgeTarget,
        cutoff_ms: i64,
        limit: usize,
    ) -> Result<usize, LedgerError> {
        let sql = match target {
            PurgeTarget::Records => store::PURGE_RECORDS,
            PurgeTarget::MinuteRollups => rollup::PURGE[0].as_str(),
            PurgeTarget::HourRollups => rollup::PURGE[1].as_str(),
            PurgeTarget::Groups => return Ok(0),
        };
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        Ok(self
            .conn
            .prepare_cached(sql)?
            .execute(rusqlite::params![cutoff_ms, limit])?)
    }

    #[cfg(test)]
    fn sqlite(&self) -> Option<&Connection> {
        Some(&self.conn)
    }
}
