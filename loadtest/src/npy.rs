//! Minimal reader for NumPy `.npy` files (format v1–v3, little-endian f4/f8/i4/i8, C order), used to replay real rows.

use crate::tensor::Values;
use anyhow::{bail, Context, Result};
use std::path::Path;

#[derive(Debug, Clone, PartialEq)]
pub struct NpyArray {
    pub shape: Vec<usize>,
    pub values: Values,
}

impl NpyArray {
    /// Rows along the first axis; a 0-d array counts as one row.
    pub fn rows(&self) -> usize {
        self.shape.first().copied().unwrap_or(1)
    }

    /// Elements in one row (product of the remaining axes).
    pub fn row_len(&self) -> usize {
        self.shape.iter().skip(1).product()
    }
}

pub fn read(path: &Path) -> Result<NpyArray> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    parse(&bytes).with_context(|| format!("parsing {}", path.display()))
}

pub fn parse(bytes: &[u8]) -> Result<NpyArray> {
    const MAGIC: &[u8] = b"\x93NUMPY";
    if bytes.len() < 10 || &bytes[..6] != MAGIC {
        bail!("not a .npy file (bad magic)");
    }
    let major = bytes[6];
    let (header_len, header_start) = match major {
        1 => (usize::from(u16::from_le_bytes([bytes[8], bytes[9]])), 10),
        2 | 3 => {
            if bytes.len() < 12 {
                bail!("truncated .npy header");
            }
            let n = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
            (n as usize, 12)
        }
        v => bail!("unsupported .npy format version {v}"),
    };
    let data_start = header_start + header_len;
    if bytes.len() < data_start {
        bail!("truncated .npy header");
    }
    let header =
        std::str::from_utf8(&bytes[header_start..data_start]).context(".npy header is not text")?;
    let descr = dict_value(header, "descr")
        .and_then(quoted)
        .context("header has no quoted 'descr'")?;
    let fortran = dict_value(header, "fortran_order").context("header has no 'fortran_order'")?;
    if fortran.starts_with("True") {
        bail!("Fortran-order arrays are not supported; save with np.ascontiguousarray");
    }
    let shape = parse_shape(dict_value(header, "shape").context("header has no 'shape'")?)?;
    let count: usize = shape.iter().product();
    let data = &bytes[data_start..];
    let (kind, size) = match descr {
        "<f4" => ('f', 4),
        "<f8" => ('f', 8),
        "<i4" => ('i', 4),
        "<i8" => ('i', 8),
        other => bail!("unsupported dtype {other:?} (need little-endian f4, f8, i4 or i8)"),
    };
    let needed = count.checked_mul(size).context("array size overflows")?;
    if data.len() < needed {
        bail!("data holds {} bytes but shape needs {needed}", data.len());
    }
    let chunks = data[..needed].chunks_exact(size);
    let values = match (kind, size) {
        ('f', 4) => Values::Float(
            chunks
                .map(|c| f64::from(f32::from_le_bytes([c[0], c[1], c[2], c[3]])))
                .collect(),
        ),
        ('f', _) => Values::Float(chunks.map(|c| f64::from_le_bytes(word8(c))).collect()),
        (_, 4) => Values::Int(
            chunks
                .map(|c| i64::from(i32::from_le_bytes([c[0], c[1], c[2], c[3]])))
                .collect(),
        ),
        _ => Values::Int(chunks.map(|c| i64::from_le_bytes(word8(c))).collect()),
    };
    Ok(NpyArray { shape, values })
}

fn word8(c: &[u8]) -> [u8; 8] {
    let mut b = [0u8; 8];
    b.copy_from_slice(c);
    b
}

/// Returns the raw text after `'key':` in the header's Python dict literal, up to the end of the header.
fn dict_value<'a>(header: &'a str, key: &str) -> Option<&'a str> {
    for quote in ['\'', '"'] {
        let needle = format!("{quote}{key}{quote}");
        if let Some(pos) = header.find(&needle) {
            let rest = header[pos + needle.len()..].trim_start();
            return rest.strip_prefix(':').map(str::trim_start);
        }
    }
    None
}

/// The contents of a leading '...' or "..." literal.
fn quoted(s: &str) -> Option<&str> {
    let q = s.chars().next().filter(|c| *c == '\'' || *c == '"')?;
    let body = &s[1..];
    body.find(q).map(|end| &body[..end])
}

fn parse_shape(text: &str) -> Result<Vec<usize>> {
    let inner = text
        .strip_prefix('(')
        .and_then(|t| t.split(')').next())
        .context("shape is not a tuple")?;
    inner
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            // NumPy on some platforms writes dims with an `L` suffix.
            s.trim_end_matches('L')
                .parse::<usize>()
                .with_context(|| format!("bad dimension {s:?}"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build(version: u8, descr: &str, shape: &str, data: &[u8]) -> Vec<u8> {
        let dict = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
        with_header(version, dict, data)
    }

    fn with_header(version: u8, mut header: String, data: &[u8]) -> Vec<u8> {
        let prefix = if version == 1 { 10 } else { 12 };
        while !(prefix + header.len() + 1).is_multiple_of(64) {
            header.push(' ');
        }
        header.push('\n');
        let mut out = b"\x93NUMPY".to_vec();
        out.push(version);
        out.push(0);
        if version == 1 {
            out.extend((header.len() as u16).to_le_bytes());
        } else {
            out.extend((header.len() as u32).to_le_bytes());
        }
        out.extend(header.as_bytes());
        out.extend(data);
        out
    }

    #[test]
    fn parses_v1_f4_matrix() {
        let data: Vec<u8> = [1.0f32, 2.0, 3.0, 4.5, 5.0, 6.0]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let arr = parse(&build(1, "<f4", "(3, 2)", &data)).unwrap();
        assert_eq!(arr.shape, vec![3, 2]);
        assert_eq!((arr.rows(), arr.row_len()), (3, 2));
        assert_eq!(
            arr.values,
            Values::Float(vec![1.0, 2.0, 3.0, 4.5, 5.0, 6.0])
        );
    }

    #[test]
    fn parses_v2_ints_and_vectors() {
        let data: Vec<u8> = [7i64, -8].iter().flat_map(|v| v.to_le_bytes()).collect();
        let arr = parse(&build(2, "<i8", "(2,)", &data)).unwrap();
        assert_eq!(arr.shape, vec![2]);
        assert_eq!(arr.row_len(), 1);
        assert_eq!(arr.values, Values::Int(vec![7, -8]));
        let data: Vec<u8> = [9i32].iter().flat_map(|v| v.to_le_bytes()).collect();
        let arr = parse(&build(1, "<i4", "(1, 1)", &data)).unwrap();
        assert_eq!(arr.values, Values::Int(vec![9]));
        let arr = parse(&build(1, "<f8", "(1,)", &2.5f64.to_le_bytes())).unwrap();
        assert_eq!(arr.values, Values::Float(vec![2.5]));
    }

    #[test]
    fn rejects_bad_files() {
        assert!(parse(b"not numpy at all").is_err());
        assert!(parse(&build(1, ">f4", "(1,)", &[0; 4])).is_err());
        assert!(parse(&build(1, "<u2", "(1,)", &[0; 2])).is_err());
        assert!(parse(&build(1, "<f4", "(4,)", &[0; 8])).is_err());
        assert!(parse(&build(9, "<f4", "(1,)", &[0; 4])).is_err());
        let fortran = "{'descr': '<f4', 'fortran_order': True, 'shape': (1,), }".to_string();
        assert!(parse(&with_header(1, fortran, &[0; 4])).is_err());
    }
}
