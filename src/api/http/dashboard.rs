//! `GET /dashboard`: the cost and operations page, compiled into the binary with the chart
//! library it draws with, so it works where the gateway runs with nothing fetched elsewhere.
//!
//! The page holds no data: it reads the admin API (`/v1/costs`, `/v1/costs/timeseries`,
//! `/v1/budgets`, `/v1/alerts`) and `/metrics` with the admin token the operator types in,
//! which is why the assets themselves need none.

use super::{json_response, Body};
use crate::gateway::Gateway;
use hyper::header::{HeaderName, HeaderValue, CACHE_CONTROL, CONTENT_TYPE};
use hyper::{Response, StatusCode};

struct Asset {
    path: &'static [&'static str],
    content_type: &'static str,
    body: &'static [u8],
}

const ASSETS: &[Asset] = &[
    Asset {
        path: &[],
        content_type: "text/html; charset=utf-8",
        body: include_bytes!("dashboard/index.html"),
    },
    Asset {
        path: &["app.js"],
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("dashboard/app.js"),
    },
    Asset {
        path: &["style.css"],
        content_type: "text/css; charset=utf-8",
        body: include_bytes!("dashboard/style.css"),
    },
    Asset {
        path: &["uplot.js"],
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("dashboard/vendor/uPlot.iife.min.js"),
    },
    Asset {
        path: &["uplot.css"],
        content_type: "text/css; charset=utf-8",
        body: include_bytes!("dashboard/vendor/uPlot.min.css"),
    },
    Asset {
        path: &["licenses"],
        content_type: "text/plain; charset=utf-8",
        body: include_bytes!("dashboard/vendor/uPlot.LICENSE"),
    },
];

/// Only this origin may be reached from the page: a script that found its way in could not
/// send the token anywhere else, and nothing is loaded from another host by mistake.
const POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
    connect-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; \
    form-action 'self'";

/// The asset at `rest` (the path below `/dashboard`), or `None` when there is none.
pub fn serve(gateway: &Gateway, rest: &[&str]) -> Option<Response<Body>> {
    let mut response = match rest {
        // Whether to ask for the token before the first call, which would otherwise fail
        // (and log a failed request in the browser's console).
        ["access.json"] => {
            let required = gateway.metering.identities().admin_configured();
            json_response(
                StatusCode::OK,
                &serde_json::json!({"token_required": required}),
            )
        }
        _ => asset(rest)?,
    };
    protect(response.headers_mut());
    Some(response)
}

fn asset(rest: &[&str]) -> Option<Response<Body>> {
    let asset = ASSETS.iter().find(|asset| asset.path == rest)?;
    let mut response = Response::new(Body::from(asset.body));
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(asset.content_type));
    Some(response)
}

fn protect(headers: &mut hyper::HeaderMap) {
    // A new gateway version brings new assets; the browser asks again each time.
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(
        HeaderName::from_static("content-security-policy"),
        HeaderValue::from_static(POLICY),
    );
    headers.insert(
        HeaderName::from_static("x-content-type-options"),
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        HeaderName::from_static("referrer-policy"),
        HeaderValue::from_static("no-referrer"),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_asset_is_served_with_its_type_and_the_policy() {
        let cases: &[(&[&str], Option<&str>)] = &[
            (&[], Some("text/html; charset=utf-8")),
            (&["app.js"], Some("text/javascript; charset=utf-8")),
            (&["uplot.js"], Some("text/javascript; charset=utf-8")),
            (&["uplot.css"], Some("text/css; charset=utf-8")),
            (&["style.css"], Some("text/css; charset=utf-8")),
            (&["licenses"], Some("text/plain; charset=utf-8")),
            (&["nope.js"], None),
            (&["app.js", "x"], None),
        ];
        for (path, want) in cases {
            let got = asset(path).map(|mut response| {
                protect(response.headers_mut());
                response
            });
            let kind = got.as_ref().and_then(|r| r.headers().get(CONTENT_TYPE));
            assert_eq!(kind.and_then(|v| v.to_str().ok()), *want, "{path:?}");
            if let Some(response) = got {
                let policy = &response.headers()["content-security-policy"];
                assert!(policy
                    .to_str()
                    .is_ok_and(|p| p.contains("default-src 'self'")));
            }
        }
    }

    /// The page names only assets served here: nothing from another host.
    #[test]
    fn the_page_refers_to_nothing_outside_the_gateway() {
        for asset in ASSETS.iter().filter(|a| !a.path.starts_with(&["uplot.js"])) {
            let text = String::from_utf8_lossy(asset.body);
            for scheme in ["http://", "https://", "//cdn"] {
                let outside = text.contains(&format!("src=\"{scheme}"))
                    || text.contains(&format!("href=\"{scheme}"))
                    || text.contains(&format!("fetch(\"{scheme}"));
                assert!(!outside, "{:?} refers to {scheme}", asset.path);
            }
        }
    }
}
