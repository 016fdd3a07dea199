//! `Gateway::reload`: the config file read again (SIGHUP, `POST /v1/admin/reload`), its models
//! served in place of the running ones, its tenants, keys and budgets applied. Keys that only
//! take effect at start are named in the answer, not silently ignored; a file that does not
//! read changes nothing.

use super::{Error, Gateway};
use crate::config::Config;
use crate::model::{self, Reloaded};
use serde_json::{json, Value};
use std::sync::PoisonError;

/// What a reload did, and which changed sections wait for a restart.
#[derive(Debug, Clone)]
pub struct ReloadReport {
    pub models: Reloaded,
    pub restart_needed: Vec<&'static str>,
}

impl ReloadReport {
    pub fn to_json(&self) -> Value {
        json!({
            "added": self.models.added,
            "changed": self.models.changed,
            "removed": self.models.removed,
            "unchanged": self.models.unchanged,
            "restart_needed": self.restart_needed,
        })
    }
}

/// Sections that differ between `old` and `new` and are read at start only.
fn restart_needed(old: &Config, new: &Config) -> Vec<&'static str> {
    // Debug output stands for equality: every section derives it, secrets redacted alike.
    let differs =
        |a: &dyn std::fmt::Debug, b: &dyn std::fmt::Debug| format!("{a:?}") != format!("{b:?}");
    let sections: [(&'static str, bool); 11] = [
        ("server", differs(&old.server, &new.server)),
        ("runtime", differs(&old.runtime, &new.runtime)),
        ("ledger", differs(&old.ledger, &new.ledger)),
        ("fleet", differs(&old.fleet, &new.fleet)),
        ("auth", differs(&old.auth, &new.auth)),
        ("tenants", differs(&old.tenants, &new.tenants)),
        ("alerts", differs(&old.alerts, &new.alerts)),
        ("metering", differs(&old.metering, &new.metering)),
        ("cache", differs(&old.cache, &new.cache)),
        ("telemetry", differs(&old.telemetry, &new.telemetry)),
        ("deferred", differs(&old.deferred, &new.deferred)),
    ];
    sections
        .into_iter()
        .filter_map(|(name, changed)| changed.then_some(name))
        .collect()
}

impl Gateway {
    /// Reads the config file again and serves its models. One reload at a time.
    pub async fn reload(self: &Gateway) -> Result<ReloadReport, Error> {
        let _one = self.reloading.lock().await;
        let Some(source) = self.config.source.clone() else {
            return Err(Error::Reload(
                "the gateway was not started from a config file".into(),
            ));
        };
        let old = self
            .applied
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        // One blocking step: the file read, local models loaded, the ledger read for budgets.
        let (models, metering) = (self.models.clone(), self.metering.clone());
        let previous = old.clone();
        let handle = tokio::runtime::Handle::current();
        let (new, report, tenants_applied) = tokio::task::spawn_blocking(move || {
            let _inside = handle.enter();
            let new = Config::load(&source).map_err(|e| Error::Reload(e.to_string()))?;
            let report = model::reload(&models, &previous, &new)?;
            metering.meter_instances(super::metered_instances(&models.snapshot()));
            // Tenants, keys and (local) budgets: applied unless budgets live in Redis.
            let tenants_applied = metering.reload_tenants(&new)?;
            Ok::<_, Error>((new, report, tenants_applied))
        })
        .await
        .map_err(|e| Error::Reload(e.to_string()))??;
        let mut restart = restart_needed(&old, &new);
        if tenants_applied {
            restart.retain(|section| !matches!(*section, "tenants" | "auth"));
        }
        let report = ReloadReport {
            restart_needed: restart,
            models: report,
        };
        *self.applied.lock().unwrap_or_else(PoisonError::into_inner) = new;
        tracing::info!(added = ?report.models.added, changed = ?report.models.changed,
            removed = ?report.models.removed, restart_needed = ?report.restart_needed,
            "config reloaded");
        Ok(report)
    }
}
