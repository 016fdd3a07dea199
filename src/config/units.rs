//! Human-friendly units in the config file: sizes such as `"64MiB"` (or a plain number of bytes).

use serde::{de, Deserialize, Deserializer};
use std::fmt;

/// A byte count read from either an integer or a string with a binary or decimal suffix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ByteSize(pub u64);

impl ByteSize {
    pub fn parse(text: &str) -> Result<ByteSize, String> {
        let text = text.trim();
        let split = text
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(text.len());
        let (number, unit) = text.split_at(split);
        let multiplier: u64 = match unit.trim() {
            "" | "B" => 1,
            "KB" => 1_000,
            "MB" => 1_000_000,
            "GB" => 1_000_000_000,
            "KiB" => 1 << 10,
            "MiB" => 1 << 20,
            "GiB" => 1 << 30,
            other => {
                return Err(format!(
                    "unknown size unit `{other}` (use B, KB, MB, GB, KiB, MiB or GiB)"
                ))
            }
        };
        let value: f64 = number
            .parse()
            .map_err(|_| format!("`{text}` is not a size such as \"64MiB\""))?;
        let bytes = value * multiplier as f64;
        if !(0.0..=u64::MAX as f64).contains(&bytes) {
            return Err(format!("`{text}` is out of range"));
        }
        Ok(ByteSize(bytes as u64))
    }

    pub fn as_usize(self) -> usize {
        usize::try_from(self.0).unwrap_or(usize::MAX)
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl de::Visitor<'_> for Visitor {
            type Value = ByteSize;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a number of bytes or a size such as \"64MiB\"")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<ByteSize, E> {
                u64::try_from(v)
                    .map(ByteSize)
                    .map_err(|_| E::custom("a size cannot be negative"))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<ByteSize, E> {
                Ok(ByteSize(v))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ByteSize, E> {
                ByteSize::parse(v).map_err(E::custom)
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_from_the_forms_users_write() {
        let cases = [
            ("64MiB", Ok(64 << 20)),
            ("512 MiB", Ok(512 << 20)),
            ("1GiB", Ok(1 << 30)),
            ("10MB", Ok(10_000_000)),
            ("1024", Ok(1024)),
            ("1.5KiB", Ok(1536)),
        ];
        for (text, expected) in cases {
            assert_eq!(ByteSize::parse(text).map(|s| s.0), expected, "{text}");
        }
        for bad in ["64 parsecs", "MiB", "-1MiB", ""] {
            assert!(ByteSize::parse(bad).is_err(), "{bad} should be rejected");
        }
    }
}
