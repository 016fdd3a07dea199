//! Alerts: logged, counted, kept (the most recent ones) for `GET /v1/alerts`, and POSTed as JSON
//! to `alerts.webhook_url` when one is set. Delivery never blocks the request path.

use super::clock;
use bytes::Bytes;
use http_body_util::Full;
use serde::Serialize;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// Alerts kept for the API; older ones remain in the logs and the webhook's receiver.
const KEPT: usize = 1000;
const WEBHOOK_TIMEOUT: Duration = Duration::from_secs(5);
const WEBHOOK_ATTEMPTS: u32 = 3;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Budget,
    Anomaly,
    Ledger,
    /// The fleet's Redis went away or came back.
    Fleet,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Budget => "budget",
            Kind::Anomaly => "anomaly",
            Kind::Ledger => "ledger",
            Kind::Fleet => "fleet",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Alert {
    pub id: u64,
    pub time: String,
    pub kind: Kind,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub threshold_percent: Option<u8>,
    pub message: String,
}

type Client = hyper_util::client::legacy::Client<
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    Full<Bytes>,
>;

/// A client for http:// and https:// receivers (the system's roots).
fn client() -> Result<Client, String> {
    let tls = crate::backend::remote::tls::client_config(None)?;
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .build();
    Ok(
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build(connector),
    )
}

pub struct Alerts {
    recent: Mutex<VecDeque<Alert>>,
    next_id: AtomicU64,
    webhook: Option<(hyper::Uri, Client)>,
}

impl Alerts {
    pub fn new(webhook_url: Option<&str>) -> Alerts {
        let webhook = webhook_url.and_then(|url| match (url.parse::<hyper::Uri>(), client()) {
            (Ok(uri), Ok(client)) => Some((uri, client)),
            (Err(error), _) => {
                tracing::error!(%error, "alerts.webhook_url is not a URL; alerts will not be posted");
                None
            }
            (_, Err(error)) => {
                tracing::error!(%error, "no TLS client for alerts.webhook_url; alerts will not be posted");
                None
            }
        });
        Alerts {
            recent: Mutex::new(VecDeque::with_capacity(64)),
            next_id: AtomicU64::new(1),
            webhook,
        }
    }

    pub fn raise(
        &self,
        kind: Kind,
        tenant: Option<&str>,
        model: Option<&str>,
        threshold_percent: Option<u8>,
        message: String,
    ) {
        let alert = Alert {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            time: clock::iso8601(clock::now_ms()),
            kind,
            tenant: tenant.map(str::to_string),
            model: model.map(str::to_string),
            threshold_percent,
            message,
        };
        // Fields that do not apply are left out rather than logged as `None`.
        tracing::warn!(
            kind = kind.as_str(),
            tenant = alert.tenant.as_deref(),
            model = alert.model.as_deref(),
            "alert: {}",
            alert.message
        );
        metrics::counter!(crate::telemetry::ALERTS, "kind" => kind.as_str()).increment(1);
        if let Ok(mut recent) = self.recent.lock() {
            if recent.len() == KEPT {
                recent.pop_front();
            }
            recent.push_back(alert.clone());
        }
        if let Some((uri, client)) = &self.webhook {
            let (uri, client) = (uri.clone(), client.clone());
            if let Ok(handle) = tokio::runtime::Handle::try_current() {
                handle.spawn(deliver(uri, client, alert));
            }
        }
    }

    /// Most recent first.
    pub fn list(&self) -> Vec<Alert> {
        self.recent
            .lock()
            .map(|recent| recent.iter().rev().cloned().collect())
            .unwrap_or_default()
    }
}

async fn deliver(uri: hyper::Uri, client: Client, alert: Alert) {
    let body = match serde_json::to_vec(&alert) {
        Ok(body) => Bytes::from(body),
        Err(_) => return,
    };
    for attempt in 1..=WEBHOOK_ATTEMPTS {
        let request = hyper::Request::post(uri.clone())
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .body(Full::new(body.clone()));
        let Ok(request) = request else { return };
        match tokio::time::timeout(WEBHOOK_TIMEOUT, client.request(request)).await {
            Ok(Ok(response)) if response.status().is_success() => return,
            Ok(Ok(response)) => {
                tracing::warn!(status = %response.status(), attempt, "alert webhook refused the alert")
            }
            Ok(Err(error)) => tracing::warn!(%error, attempt, "alert webhook unreachable"),
            Err(_) => tracing::warn!(attempt, "alert webhook timed out"),
        }
        tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt))).await;
    }
    metrics::counter!(crate::telemetry::ALERT_DELIVERY_FAILURES).increment(1);
}
