//! Upstream addresses as written in the config, parsed once when it is read: a scheme that picks the wire protocol, a host
//! with an explicit port and, for HTTP, an optional path prefix (a server behind an ingress).

use hyper::Uri;

/// How requests reach an upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wire {
    /// `http://`: REST over pooled HTTP/1.1 keep-alive connections.
    Http1,
    /// `h2c://`: REST over cleartext HTTP/2 with prior knowledge, multiplexed on one connection.
    H2c,
    /// `grpc://`: the KServe V2 gRPC service on one shared HTTP/2 channel.
    Grpc,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamUrl {
    pub wire: Wire,
    /// `https://` (REST, h2 when the server offers it by ALPN) or `grpcs://`.
    pub tls: bool,
    /// `http://host:port[/prefix]` without a trailing slash; requests are built on it.
    pub base: String,
    /// As configured (without a trailing slash), for logs, errors and metric labels.
    pub label: String,
}

/// (scheme, wire, TLS)
const SCHEMES: [(&str, Wire, bool); 5] = [
    ("http://", Wire::Http1, false),
    ("h2c://", Wire::H2c, false),
    ("grpc://", Wire::Grpc, false),
    ("https://", Wire::Http1, true),
    ("grpcs://", Wire::Grpc, true),
];

impl UpstreamUrl {
    /// Parses one configured URL; the error says what is wrong in words fit for a config error.
    pub fn parse(text: &str) -> Result<UpstreamUrl, String> {
        let text = text.trim().trim_end_matches('/');
        let Some((wire, tls, rest)) = SCHEMES.iter().find_map(|(scheme, wire, tls)| {
            text.strip_prefix(scheme).map(|rest| (*wire, *tls, rest))
        }) else {
            return Err(format!(
                "`{text}` must start with http://, https://, h2c://, grpc:// or grpcs://"
            ));
        };
        let (authority, path) = rest.find('/').map_or((rest, ""), |at| rest.split_at(at));
        if authority.contains('@') {
            return Err(format!(
                "`{text}`: credentials in the URL are not supported"
            ));
        }
        if path.contains(['?', '#']) {
            return Err(format!("`{text}`: a query or fragment makes no sense here"));
        }
        if wire == Wire::Grpc && !path.is_empty() {
            return Err(format!("`{text}`: a gRPC upstream takes no path"));
        }
        let base = format!("{}://{authority}{path}", if tls { "https" } else { "http" });
        let uri: Uri = base
            .parse()
            .map_err(|e| format!("`{text}` is not a valid URL: {e}"))?;
        if uri.host().is_none_or(str::is_empty) {
            return Err(format!("`{text}` has no host"));
        }
        if uri.port_u16().is_none() {
            return Err(format!(
                "`{text}` needs an explicit port, e.g. http://host:8000 or grpc://host:8001"
            ));
        }
        Ok(UpstreamUrl {
            wire,
            tls,
            base,
            label: text.to_string(),
        })
    }
}

impl<'de> serde::Deserialize<'de> for UpstreamUrl {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        UpstreamUrl::parse(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The wire and base a URL parses to, or a fragment of the error.
    type Expected = Result<(Wire, &'static str), &'static str>;

    #[test]
    fn urls_parse_or_say_what_is_wrong() {
        let cases: &[(&str, Expected)] = &[
            (
                "http://127.0.0.1:8000",
                Ok((Wire::Http1, "http://127.0.0.1:8000")),
            ),
            (
                "http://triton:8000/",
                Ok((Wire::Http1, "http://triton:8000")),
            ),
            (
                "http://gw:80/serving/x",
                Ok((Wire::Http1, "http://gw:80/serving/x")),
            ),
            ("h2c://[::1]:9000", Ok((Wire::H2c, "http://[::1]:9000"))),
            (
                "grpc://localhost:8001",
                Ok((Wire::Grpc, "http://localhost:8001")),
            ),
            ("grpc://localhost:8001/x", Err("takes no path")),
            ("https://x:443", Ok((Wire::Http1, "https://x:443"))),
            (
                "grpcs://models.internal:8443",
                Ok((Wire::Grpc, "https://models.internal:8443")),
            ),
            ("grpcs://x:1/path", Err("takes no path")),
            ("https://x", Err("explicit port")),
            ("ftp://x:1", Err("must start with")),
            ("http://x", Err("explicit port")),
            ("http://:80", Err("")),
            ("http://u:p@x:80", Err("credentials")),
            ("http://x:80/a?b", Err("query")),
        ];
        for (text, want) in cases {
            match (UpstreamUrl::parse(text), want) {
                (Ok(url), Ok((wire, base))) => {
                    assert_eq!((url.wire, url.base.as_str()), (*wire, *base), "{text}")
                }
                (Err(message), Err(fragment)) => {
                    assert!(
                        message.contains(fragment),
                        "{text}: `{message}` lacks `{fragment}`"
                    )
                }
                (got, _) => panic!("{text}: unexpected {got:?}"),
            }
        }
    }
}
