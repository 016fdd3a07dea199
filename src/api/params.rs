//! Request-level parameters shared by both protocols (`priority`, `timeout`, `cache`), read from
//! a protocol-neutral view so HTTP and gRPC accept exactly the same things.

use crate::gateway::Credentials;
use crate::gateway::Error;
use crate::request::{CacheControl, RequestOptions};
use crate::telemetry::trace::TraceContext;

/// The caller's credentials from the `authorization` header or metadata (`Bearer <key>`) and
/// `x-tollgate-tags`, read alike from both protocols; the gateway checks them.
pub fn credentials(authorization: Option<&str>, tags: Option<&str>) -> Credentials {
    let bearer = authorization.and_then(|value| {
        let (scheme, key) = value.trim().split_once(' ')?;
        scheme
            .eq_ignore_ascii_case("bearer")
            .then(|| key.trim().to_string())
    });
    Credentials {
        bearer,
        tags: tags.map(str::to_string),
        trace: None,
    }
}

/// The caller's trace from `traceparent` and `tracestate`; an unreadable one is ignored (the
/// request then starts a trace of its own), as the W3C recommendation asks.
pub fn trace(traceparent: Option<&str>, tracestate: Option<&str>) -> Option<TraceContext> {
    TraceContext::parse(traceparent?, tracestate)
}

/// A parameter value as either protocol carries it.
#[derive(Debug, Clone, PartialEq)]
pub enum ParamValue<'a> {
    Bool(bool),
    Int(i64),
    Uint(u64),
    Double(f64),
    Str(&'a str),
}

impl ParamValue<'_> {
    fn as_u64(&self) -> Option<u64> {
        match *self {
            ParamValue::Int(v) => u64::try_from(v).ok(),
            ParamValue::Uint(v) => Some(v),
            ParamValue::Double(v) if v >= 0.0 && v.fract() == 0.0 && v < u64::MAX as f64 => {
                Some(v as u64)
            }
            ParamValue::Str(s) => s.parse().ok(),
            _ => None,
        }
    }
}

/// Applies the parameters we understand; others (e.g. `binary_data_output`) are left to the
/// front end, and unknown ones are ignored as the protocol allows.
pub fn apply<'a>(
    options: &mut RequestOptions,
    params: impl IntoIterator<Item = (&'a str, ParamValue<'a>)>,
) -> Result<(), Error> {
    for (name, value) in params {
        match name {
            "priority" => {
                let priority =
                    value
                        .as_u64()
                        .filter(|p| *p <= u8::MAX as u64)
                        .ok_or_else(|| {
                            bad("priority", "must be a small unsigned integer (1 = highest)")
                        })?;
                options.priority = Some(priority as u8);
            }
            "timeout" => {
                let timeout = value
                    .as_u64()
                    .ok_or_else(|| bad("timeout", "must be an unsigned number of microseconds"))?;
                options.timeout_us = Some(timeout);
            }
            "cache" => {
                let ParamValue::Str(text) = value else {
                    return Err(bad(
                        "cache",
                        "must be \"default\", \"bypass\" or \"refresh\"",
                    ));
                };
                let control = CacheControl::from_parameter(text).ok_or_else(|| {
                    bad("cache", "must be \"default\", \"bypass\" or \"refresh\"")
                })?;
                options.cache = control;
            }
            "tags" => {
                let ParamValue::Str(text) = value else {
                    return Err(bad(
                        "tags",
                        "must be a string of key=value pairs separated by commas",
                    ));
                };
                options.tags = Some(text.to_string());
            }
            "variant" => {
                let ParamValue::Str(text) = value else {
                    return Err(bad(
                        "variant",
                        "must be the name of one of the model's variants",
                    ));
                };
                options.variant = Some(text.to_string());
            }
            _ => {}
        }
    }
    Ok(())
}

fn bad(name: &str, expectation: &str) -> Error {
    Error::Decode(format!("parameters.{name}: {expectation}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_are_read_alike_from_either_protocol() {
        // (parameters, the options they make or a fragment of the error)
        type Case<'a> = (
            Vec<(&'a str, ParamValue<'a>)>,
            Result<RequestOptions, &'a str>,
        );
        let cases: Vec<Case> = vec![
            (vec![], Ok(RequestOptions::default())),
            (
                vec![
                    ("priority", ParamValue::Uint(1)),
                    ("timeout", ParamValue::Int(500)),
                ],
                Ok(RequestOptions {
                    priority: Some(1),
                    timeout_us: Some(500),
                    ..Default::default()
                }),
            ),
            (
                vec![("cache", ParamValue::Str("bypass"))],
                Ok(RequestOptions {
                    cache: CacheControl {
                        lookup: false,
                        store: false,
                    },
                    ..Default::default()
                }),
            ),
            (
                vec![("priority", ParamValue::Int(-1))],
                Err("parameters.priority"),
            ),
            (
                vec![("timeout", ParamValue::Bool(true))],
                Err("parameters.timeout"),
            ),
            (
                vec![("cache", ParamValue::Str("sometimes"))],
                Err("parameters.cache"),
            ),
            (
                vec![("whatever", ParamValue::Bool(true))],
                Ok(RequestOptions::default()),
            ),
        ];
        for (params, want) in cases {
            let mut options = RequestOptions::default();
            let got = apply(&mut options, params.clone()).map(|_| options);
            match want {
                Ok(expected) => assert_eq!(got.unwrap(), expected, "{params:?}"),
                Err(fragment) => assert!(got.unwrap_err().to_string().contains(fragment)),
            }
        }
    }
}
