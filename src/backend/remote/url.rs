//! REST paths to upstreams (the URLs themselves are parsed with the config: `config::UpstreamUrl`).

/// Percent-encodes one path segment (a model name or version) for a REST path.
pub fn path_segment(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_segments_are_escaped() {
        assert_eq!(path_segment("digits_v1.2-a"), "digits_v1.2-a");
        assert_eq!(path_segment("a b/c"), "a%20b%2Fc");
    }
}
