//! `upstream_headers`: headers sent with every request to a model's upstreams (a bearer token,
//! an API key). A value `"env:NAME"` is read from the environment when the config is read; the
//! values never appear in logs or `Debug`, only the names.

use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt;

#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct UpstreamHeaders {
    /// Lower-case header name → value (after validation: resolved, never `env:`).
    entries: BTreeMap<String, String>,
}

impl fmt::Debug for UpstreamHeaders {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.entries.keys().map(|name| (name, "<redacted>")))
            .finish()
    }
}

impl UpstreamHeaders {
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// (name, value) pairs, names lower-case.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.entries.iter().map(|(n, v)| (n.as_str(), v.as_str()))
    }

    /// Checks names and values as HTTP and gRPC carry them and reads `env:` values, with
    /// `lookup` standing for the environment. The error names the header, never its value.
    pub fn resolve(
        &mut self,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<(), (String, String)> {
        let mut resolved = BTreeMap::new();
        for (name, value) in &self.entries {
            let lower = name.to_ascii_lowercase();
            let valid_name = !lower.is_empty()
                && lower
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
            if !valid_name {
                return Err((
                    name.clone(),
                    "is not a header name (letters, digits, - _ .)".into(),
                ));
            }
            if lower.starts_with(':')
                || ["host", "content-length", "content-type", "te"].contains(&lower.as_str())
                || lower.starts_with("grpc-")
            {
                return Err((name.clone(), "is set by the gateway itself".into()));
            }
            let value = match value.strip_prefix("env:") {
                Some(variable) => lookup(variable).ok_or_else(|| {
                    (
                        name.clone(),
                        format!("reads the environment variable {variable}, which is not set"),
                    )
                })?,
                None => value.clone(),
            };
            if value.is_empty()
                || !value
                    .bytes()
                    .all(|b| b == b'\t' || (0x20..0x7f).contains(&b))
            {
                return Err((
                    name.clone(),
                    "must be a non-empty value of visible ASCII".into(),
                ));
            }
            resolved.insert(lower, value);
        }
        self.entries = resolved;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> UpstreamHeaders {
        UpstreamHeaders {
            entries: pairs
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
        }
    }

    /// Headers as given, and the resolved pairs or a fragment of the error.
    type Case = (
        &'static [(&'static str, &'static str)],
        Result<&'static [(&'static str, &'static str)], &'static str>,
    );

    #[test]
    fn values_resolve_from_the_environment_and_stay_out_of_debug() {
        let env = |name: &str| (name == "TOKEN").then(|| "Bearer s3cret".to_string());
        let cases: &[Case] = &[
            (
                &[("Authorization", "env:TOKEN")],
                Ok(&[("authorization", "Bearer s3cret")]),
            ),
            (&[("x-api-key", "plain")], Ok(&[("x-api-key", "plain")])),
            (
                &[("authorization", "env:MISSING")],
                Err("MISSING, which is not set"),
            ),
            (&[("bad header", "x")], Err("not a header name")),
            (&[("content-type", "x")], Err("set by the gateway")),
            (&[("grpc-timeout", "1S")], Err("set by the gateway")),
            (&[("x-a", "line\nbreak")], Err("visible ASCII")),
        ];
        for (given, want) in cases {
            let mut h = headers(given);
            match (h.resolve(env), want) {
                (Ok(()), Ok(pairs)) => assert_eq!(h.iter().collect::<Vec<_>>(), pairs.to_vec()),
                (Err((_, why)), Err(fragment)) => assert!(why.contains(fragment), "{why}"),
                (got, _) => panic!("{given:?}: {got:?}"),
            }
        }
        let mut secret = headers(&[("authorization", "env:TOKEN")]);
        secret.resolve(env).unwrap();
        let shown = format!("{secret:?}");
        assert!(
            shown.contains("authorization") && !shown.contains("s3cret"),
            "{shown}"
        );
    }
}
