//! Header lists as they were sent: order kept, names lower-cased (HTTP/2 sends them so, and
//! HTTP/1.1 names are case-insensitive), values as bytes. `Debug` never prints credentials.

use std::fmt;

/// Headers whose values are secrets: never printed.
const SECRET_HEADERS: [&str; 6] = [
    "authorization",
    "proxy-authorization",
    "x-api-key",
    "api-key",
    "cookie",
    "set-cookie",
];

#[derive(Clone, Default, PartialEq, Eq)]
pub struct Headers(Vec<(String, Vec<u8>)>);

impl Headers {
    /// Appends a header; the name is lower-cased.
    pub fn push(&mut self, name: &str, value: &[u8]) {
        self.0.push((name.to_ascii_lowercase(), value.to_vec()));
    }

    /// The first value of `name` (lower-case).
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_slice())
    }

    /// The first value of `name` as text, if it is UTF-8, without surrounding blanks.
    pub fn get_str(&self, name: &str) -> Option<&str> {
        self.get(name)
            .and_then(|v| std::str::from_utf8(v).ok())
            .map(str::trim)
    }

    /// Whether a comma-separated header (every occurrence) lists `token`, case-insensitively:
    /// `Transfer-Encoding: gzip, chunked` has `chunked`.
    pub fn has_token(&self, name: &str, token: &str) -> bool {
        self.0
            .iter()
            .filter(|(n, _)| n == name)
            .filter_map(|(_, v)| std::str::from_utf8(v).ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.0.iter().map(|(n, v)| (n.as_str(), v.as_slice()))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Headers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut list = f.debug_list();
        for (name, value) in &self.0 {
            if SECRET_HEADERS.contains(&name.as_str()) {
                list.entry(&format_args!("{name}: <redacted>"));
            } else {
                list.entry(&format_args!("{name}: {}", String::from_utf8_lossy(value)));
            }
        }
        list.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup_is_by_lower_case_name_and_tokens_are_comma_separated() {
        let mut h = Headers::default();
        h.push("Transfer-Encoding", b"gzip, Chunked");
        h.push("Content-Type", b" text/event-stream ");
        assert_eq!(h.get_str("content-type"), Some("text/event-stream"));
        assert!(h.has_token("transfer-encoding", "chunked"));
        assert!(!h.has_token("transfer-encoding", "deflate"));
        assert_eq!(h.len(), 2);
    }

    #[test]
    fn debug_redacts_credentials() {
        let mut h = Headers::default();
        h.push("Authorization", b"Bearer sk-secret");
        h.push("x-api-key", b"sk-ant-secret");
        h.push("x-user-id", b"alice");
        let text = format!("{h:?}");
        assert!(!text.contains("secret"), "{text}");
        assert!(text.contains("alice"));
    }
}
