//! Metering: what each request cost. For now the cost model alone; the ledger, budgets and
//! exports build on it.

pub mod cost;
pub mod record;
