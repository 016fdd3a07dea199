//! Metering: who pays for each request and what it cost, the durable ledger of usage records,
//! budgets, anomaly detection and alerts.

pub mod alerts;
pub mod anomaly;
pub mod budget;
pub mod clock;
pub mod cost;
mod fleet_budget;
mod fleet_spend;
pub mod identity;
pub mod idle;
mod labels;
pub mod ledger;
pub mod meter;
pub mod minutes;
pub mod money;
pub mod record;

pub use error::{MeteringError, OpenError};

mod error {
    use super::ledger::LedgerError;
    use crate::error::ErrorClass;

    /// Why metering could not start.
    #[derive(Debug, thiserror::Error)]
    pub enum OpenError {
        #[error("cannot open the usage ledger: {0}")]
        Ledger(#[from] LedgerError),
        #[error("{0}")]
        Fleet(String),
    }

    /// Why metering refused or could not account for a request.
    #[derive(Debug, Clone, thiserror::Error)]
    pub enum MeteringError {
        /// Over a `reject` budget; the message names the budget and when it resets.
        #[error("{message}")]
        BudgetExhausted { message: String, retry_after_s: u64 },
        /// `ledger.durability = "sync"` and the record could not be committed.
        #[error("usage ledger unavailable: {0}")]
        LedgerUnavailable(String),
        /// `fleet.on_redis_down = "fail_closed"` and the fleet's Redis does not answer.
        #[error("{0}")]
        FleetUnavailable(String),
    }

    impl MeteringError {
        pub fn class(&self) -> ErrorClass {
            match self {
                MeteringError::BudgetExhausted { .. } => ErrorClass::PaymentRequired,
                MeteringError::LedgerUnavailable(_) | MeteringError::FleetUnavailable(_) => {
                    ErrorClass::Unavailable
                }
            }
        }
    }
}
