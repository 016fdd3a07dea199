//! Optional correctness check: compares one output per distinct request index against expected values from a file.

use crate::tensor::{decode_json, Scalar};
use anyhow::{bail, Context, Result};
use serde::Deserialize;
use std::path::Path;

#[derive(Deserialize)]
struct VerifyFile {
    #[serde(default)]
    output: Option<String>,
    expected: Vec<serde_json::Value>,
}

#[derive(Debug)]
pub struct Verifier {
    /// Output tensor to compare; `None` means the response's first output.
    pub output: Option<String>,
    expected: Vec<Vec<Scalar>>,
}

impl Verifier {
    pub fn load(path: &Path) -> Result<Verifier> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        Self::from_json(&text).with_context(|| format!("parsing {}", path.display()))
    }

    pub fn from_json(text: &str) -> Result<Verifier> {
        let file: VerifyFile = serde_json::from_str(text)?;
        if file.expected.is_empty() {
            bail!("\"expected\" is empty");
        }
        let mut expected = Vec::with_capacity(file.expected.len());
        for (i, v) in file.expected.iter().enumerate() {
            let mut flat = Vec::new();
            decode_json(v, &mut flat).map_err(|e| anyhow::anyhow!("expected[{i}]: {e}"))?;
            expected.push(flat);
        }
        Ok(Verifier {
            output: file.output.filter(|s| !s.is_empty()),
            expected,
        })
    }

    pub fn len(&self) -> usize {
        self.expected.len()
    }

    /// `None` when the file has no entry for this index (nothing to check), else whether it matched.
    pub fn check(&self, index: usize, got: &[Scalar]) -> Option<bool> {
        let want = self.expected.get(index)?;
        Some(want.len() == got.len() && want.iter().zip(got).all(|(w, g)| close(w, g)))
    }
}

/// Tolerance loose enough for FP16 outputs and differing float summation orders, tight enough for labels.
fn close(want: &Scalar, got: &Scalar) -> bool {
    match (want, got) {
        (Scalar::Num(w), Scalar::Num(g)) => {
            (w - g).abs() <= 1e-4 + 1e-3 * w.abs() || (w.is_nan() && g.is_nan())
        }
        (Scalar::Str(w), Scalar::Str(g)) => w == g,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checks_per_index_with_tolerance() {
        let v =
            Verifier::from_json(r#"{"output":"label","expected":[1, [2.0, 3.5], "cat", true]}"#)
                .unwrap();
        assert_eq!(v.output.as_deref(), Some("label"));
        assert_eq!(v.len(), 4);
        assert_eq!(v.check(0, &[Scalar::Num(1.0)]), Some(true));
        assert_eq!(v.check(0, &[Scalar::Num(2.0)]), Some(false));
        assert_eq!(
            v.check(1, &[Scalar::Num(2.0), Scalar::Num(3.5001)]),
            Some(true)
        );
        assert_eq!(v.check(1, &[Scalar::Num(2.0)]), Some(false));
        assert_eq!(v.check(2, &[Scalar::Str("cat".into())]), Some(true));
        assert_eq!(v.check(3, &[Scalar::Num(1.0)]), Some(true));
        assert_eq!(v.check(9, &[]), None);
    }

    #[test]
    fn rejects_bad_files() {
        assert!(Verifier::from_json(r#"{"expected":[]}"#).is_err());
        assert!(Verifier::from_json(r#"{"output":"y"}"#).is_err());
        assert!(Verifier::from_json(r#"{"expected":[{"a":1}]}"#).is_err());
        assert!(Verifier::from_json(r#"{"expected":[1]}"#)
            .unwrap()
            .output
            .is_none());
    }
}
