//! KServe V2 over HTTP: JSON bodies or the binary tensor extension, on one keep-alive connection pool.

use super::{Outcome, Reply};
use crate::stats::{CacheStatus, ReplyInfo};
use crate::tensor::{decode_json, decode_raw, to_json, to_raw, DType, Scalar};
use crate::workload::{ModelMeta, Workload};
use anyhow::{bail, Context, Result};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{HeaderMap, CONTENT_TYPE};
use hyper::{Request, Uri};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;

pub type HyperClient = hyper_util::client::legacy::Client<HttpConnector, Full<Bytes>>;

const HEADER_LEN: &str = "inference-header-content-length";

pub fn new_client(connect_timeout: Duration) -> HyperClient {
    let mut connector = HttpConnector::new();
    // Nagle would add tens of ms to small request bodies and distort latency.
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(connect_timeout));
    hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(90))
        .pool_max_idle_per_host(usize::MAX)
        .build(connector)
}

/// Percent-encodes a path segment so odd model names cannot break the URL.
fn encode_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

pub fn model_path(model: &str, version: Option<&str>) -> String {
    match version {
        Some(v) => format!(
            "/v2/models/{}/versions/{}",
            encode_segment(model),
            encode_segment(v)
        ),
        None => format!("/v2/models/{}", encode_segment(model)),
    }
}

/// The `--header` pairs as a map, checked by the argument parser already.
pub fn header_map(headers: &[(String, String)]) -> Result<HeaderMap> {
    let mut map = HeaderMap::new();
    for (name, value) in headers {
        map.append(
            hyper::header::HeaderName::from_bytes(name.as_bytes())?,
            hyper::header::HeaderValue::from_str(value)?,
        );
    }
    Ok(map)
}

/// GET a URL and return the body, failing on non-2xx statuses.
pub async fn get(client: &HyperClient, uri: Uri, timeout: Duration) -> Result<Bytes> {
    get_with(client, uri, &HeaderMap::new(), timeout).await
}

/// GET with extra headers (the caller's credentials, for metadata).
pub async fn get_with(
    client: &HyperClient,
    uri: Uri,
    headers: &HeaderMap,
    timeout: Duration,
) -> Result<Bytes> {
    let shown = uri.to_string();
    let mut req = Request::get(uri).body(Full::new(Bytes::new()))?;
    req.headers_mut().extend(headers.clone());
    let fut = async {
        let resp = client.request(req).await?;
        let status = resp.status();
        let body = resp.into_body().collect().await?.to_bytes();
        anyhow::Ok((status, body))
    };
    let (status, body) = tokio::time::timeout(timeout, fut)
        .await
        .with_context(|| format!("GET {shown} timed out"))?
        .with_context(|| format!("GET {shown}"))?;
    if !status.is_success() {
        bail!(
            "GET {shown}: HTTP {status}: {}",
            String::from_utf8_lossy(&body).trim()
        );
    }
    Ok(body)
}

pub async fn fetch_metadata(
    client: &HyperClient,
    opts: &HttpOptions<'_>,
    timeout: Duration,
) -> Result<ModelMeta> {
    let uri: Uri = format!(
        "http://{}{}",
        opts.target,
        model_path(opts.model, opts.version)
    )
    .parse()?;
    let body = get_with(client, uri, opts.headers, timeout)
        .await
        .context("fetching model metadata")?;
    serde_json::from_slice(&body).context("model metadata is not KServe V2 JSON")
}

struct Prepared {
    body: Bytes,
    header_len: Option<usize>,
}

#[derive(Clone)]
pub struct HttpInfer {
    client: HyperClient,
    uri: Uri,
    bodies: Arc<Vec<Prepared>>,
    binary: bool,
    /// Decode an output for verification; `want_name: None` then means the first output.
    decode: bool,
    want_name: Option<Arc<str>>,
    /// `--header` and `--api-key`, sent with every request.
    headers: Arc<HeaderMap>,
}

pub struct HttpOptions<'a> {
    pub target: &'a str,
    pub model: &'a str,
    pub version: Option<&'a str>,
    pub binary: bool,
    /// Decode an output for verification: the named one, or the first when no name is given.
    pub decode_output: bool,
    pub output_name: Option<&'a str>,
    pub headers: &'a HeaderMap,
}

/// Encodes every distinct request once, so sending costs a refcount bump rather than serialisation.
pub fn prepare(
    client: HyperClient,
    opts: HttpOptions<'_>,
    meta: &ModelMeta,
    work: &Workload,
) -> Result<HttpInfer> {
    let uri: Uri = format!(
        "http://{}{}/infer",
        opts.target,
        model_path(opts.model, opts.version)
    )
    .parse()
    .context("building the infer URL")?;
    let mut bodies = Vec::with_capacity(work.requests.len());
    for set in &work.requests {
        let prepared = if opts.binary {
            let mut inputs = Vec::with_capacity(set.len());
            let mut raw = Vec::new();
            for t in set {
                let bytes = to_raw(t.dtype, &t.values)?;
                inputs.push(
                    json!({"name": t.name, "shape": t.shape, "datatype": t.dtype.name(),
                                   "parameters": {"binary_data_size": bytes.len()}}),
                );
                raw.extend(bytes);
            }
            let mut header = json!({ "inputs": inputs });
            if meta.outputs.is_empty() {
                header["parameters"] = json!({"binary_data_output": true});
            } else {
                let outs: Vec<Value> = meta
                    .outputs
                    .iter()
                    .map(|o| json!({"name": o.name, "parameters": {"binary_data": true}}))
                    .collect();
                header["outputs"] = Value::Array(outs);
            }
            let mut body = serde_json::to_vec(&header)?;
            let header_len = body.len();
            body.extend(raw);
            Prepared {
                body: body.into(),
                header_len: Some(header_len),
            }
        } else {
            let mut inputs = Vec::with_capacity(set.len());
            for t in set {
                inputs.push(
                    json!({"name": t.name, "shape": t.shape, "datatype": t.dtype.name(),
                                   "data": to_json(t.dtype, &t.values)?}),
                );
            }
            let body = serde_json::to_vec(&json!({ "inputs": inputs }))?;
            Prepared {
                body: body.into(),
                header_len: None,
            }
        };
        bodies.push(prepared);
    }
    Ok(HttpInfer {
        client,
        uri,
        bodies: Arc::new(bodies),
        binary: opts.binary,
        decode: opts.decode_output,
        want_name: opts.output_name.map(Arc::from),
        headers: Arc::new(opts.headers.clone()),
    })
}

fn header_f64(headers: &HeaderMap, name: &str) -> Option<f64> {
    headers.get(name)?.to_str().ok()?.trim().parse().ok()
}

pub fn reply_info(headers: &HeaderMap) -> ReplyInfo {
    ReplyInfo {
        cache: headers
            .get("x-tollgate-cache")
            .and_then(|v| v.to_str().ok())
            .map(CacheStatus::parse),
        cost_usd: header_f64(headers, "x-tollgate-cost-usd"),
        saved_usd: header_f64(headers, "x-tollgate-saved-usd"),
    }
}

impl HttpInfer {
    pub async fn send(&self, index: usize) -> Outcome {
        let p = self.bodies.get(index).ok_or("bad_index")?;
        let ctype = if self.binary {
            "application/octet-stream"
        } else {
            "application/json"
        };
        let mut b = Request::post(self.uri.clone()).header(CONTENT_TYPE, ctype);
        if let Some(len) = p.header_len {
            b = b.header(HEADER_LEN, len);
        }
        let mut req = b
            .body(Full::new(p.body.clone()))
            .map_err(|_| "request_build")?;
        if !self.headers.is_empty() {
            req.headers_mut().extend(self.headers.as_ref().clone());
        }
        let resp = self
            .client
            .request(req)
            .await
            .map_err(|e| if e.is_connect() { "connect" } else { "io" }.to_string())?;
        let status = resp.status();
        let info = reply_info(resp.headers());
        let header_len = resp
            .headers()
            .get(HEADER_LEN)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<usize>().ok());
        // The body is always drained so the connection goes back to the pool.
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|_| "io")?
            .to_bytes();
        if !status.is_success() {
            return Err(format!("http_{}", status.as_u16()));
        }
        let output = self
            .decode
            .then(|| decode_output(&body, header_len, self.want_name.as_deref()));
        Ok(Reply { info, output })
    }
}

/// Finds the wanted output in a JSON or binary-extension response and flattens its values.
pub fn decode_output(
    body: &[u8],
    header_len: Option<usize>,
    want: Option<&str>,
) -> Result<Vec<Scalar>, String> {
    let split = header_len.unwrap_or(body.len());
    if split > body.len() {
        return Err("header length exceeds body".into());
    }
    let (head, raw) = body.split_at(split);
    let doc: Value = serde_json::from_slice(head).map_err(|e| format!("bad JSON: {e}"))?;
    let outputs = doc["outputs"].as_array().ok_or("response has no outputs")?;
    let mut offset = 0usize;
    for out in outputs {
        let size = out["parameters"]["binary_data_size"]
            .as_u64()
            .map(|s| s as usize);
        let is_wanted = match want {
            Some(name) => out["name"].as_str() == Some(name),
            None => true,
        };
        if is_wanted {
            if let Some(size) = size {
                let dtype = DType::parse(out["datatype"].as_str().unwrap_or(""))
                    .map_err(|e| e.to_string())?;
                let end = offset
                    .checked_add(size)
                    .filter(|&e| e <= raw.len())
                    .ok_or("binary output truncated")?;
                return decode_raw(dtype, &raw[offset..end]);
            }
            let mut vals = Vec::new();
            decode_json(&out["data"], &mut vals)?;
            return Ok(vals);
        }
        offset += size.unwrap_or(0);
    }
    Err(format!("output {want:?} not in response"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_headers() {
        assert_eq!(model_path("m", None), "/v2/models/m");
        assert_eq!(
            model_path("a b/c", Some("2")),
            "/v2/models/a%20b%2Fc/versions/2"
        );
        let mut h = HeaderMap::new();
        h.insert("x-tollgate-cache", "hit".parse().unwrap());
        h.insert("x-tollgate-cost-usd", "0.00125".parse().unwrap());
        let info = reply_info(&h);
        assert_eq!(info.cache, Some(CacheStatus::Hit));
        assert_eq!(info.cost_usd, Some(0.00125));
        assert_eq!(info.saved_usd, None);
    }

    #[test]
    fn decodes_json_and_binary_outputs() {
        let json = br#"{"outputs":[{"name":"p","datatype":"FP32","shape":[1,2],"data":[0.5,0.25]},
                                  {"name":"label","datatype":"INT64","shape":[1],"data":[3]}]}"#;
        assert_eq!(
            decode_output(json, None, Some("label")),
            Ok(vec![Scalar::Num(3.0)])
        );
        assert_eq!(decode_output(json, None, None).map(|v| v.len()), Ok(2));
        assert!(decode_output(json, None, Some("nope")).is_err());

        let head = br#"{"outputs":[{"name":"p","datatype":"FP32","shape":[1],"parameters":{"binary_data_size":4}},
                                  {"name":"label","datatype":"INT64","shape":[1],"parameters":{"binary_data_size":8}}]}"#;
        let mut body = head.to_vec();
        body.extend(1.5f32.to_le_bytes());
        body.extend(7i64.to_le_bytes());
        assert_eq!(
            decode_output(&body, Some(head.len()), Some("label")),
            Ok(vec![Scalar::Num(7.0)])
        );
        assert_eq!(
            decode_output(&body, Some(head.len()), Some("p")),
            Ok(vec![Scalar::Num(1.5)])
        );
        assert!(decode_output(&body[..body.len() - 1], Some(head.len()), Some("label")).is_err());
        assert!(decode_output(&body, Some(body.len() + 1), None).is_err());
    }
}
