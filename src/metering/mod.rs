//! Metering: who pays for each request and what it cost, the durable ledger of usage records,
//! budgets, anomaly detection and alerts.

pub mod alerts;
pub mod anomaly;
pub mod budget;
pub mod clock;
pub mod cost;
pub mod identity;
pub mod idle;
pub mod ledger;
pub mod meter;
pub mod money;
pub mod record;
pub mod text;
