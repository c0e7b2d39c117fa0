//! Identity from the request. API keys are never kept: only a keyed fingerprint
//! (HMAC-SHA256 with a per-node secret) leaves this module, so two requests with the same key
//! can be told apart from others without the key being recoverable from what is exported.

use std::{collections::BTreeMap, path::PathBuf};

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::http::Headers;

/// `[identity]` in the agent's configuration.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IdentityConfig {
    /// Request headers copied into the record (lower-case names), e.g. a gateway's user id.
    pub headers: Vec<String>,
    /// File with the secret key of API-key fingerprints (any bytes, at least 16). Give every
    /// node the same file (a Kubernetes Secret) so a key has one fingerprint cluster-wide.
    /// Without it a random key is made at start and fingerprints change when the agent restarts.
    pub fingerprint_key_file: Option<PathBuf>,
}

impl Default for IdentityConfig {
    fn default() -> Self {
        Self {
            headers: [
                "x-user-id",
                "x-team-id",
                "openai-organization",
                "openai-project",
            ]
            .map(String::from)
            .to_vec(),
            fingerprint_key_file: None,
        }
    }
}

/// Who a request says it is for.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Identity {
    /// `hmac-sha256:<first 16 bytes, hex>` of the API key, if the request carried one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_key_fingerprint: Option<String>,
    /// The body's `user` (OpenAI) or `metadata.user_id` (Anthropic).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// The configured headers that were present.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
}

/// Why the identity stage could not start.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// The key file could not be read.
    #[error("cannot read identity.fingerprint_key_file {path}: {source}")]
    KeyFile {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// The key is too short to be a secret.
    #[error("identity.fingerprint_key_file {path} holds {len} bytes; at least 16 are needed")]
    KeyTooShort { path: String, len: usize },
}

pub struct IdentityExtractor {
    key: Vec<u8>,
    headers: Vec<String>,
    /// True when the key was generated at start (fingerprints not stable across restarts).
    pub ephemeral_key: bool,
}

impl IdentityExtractor {
    pub fn new(config: &IdentityConfig) -> Result<Self, IdentityError> {
        let (key, ephemeral_key) = match &config.fingerprint_key_file {
            Some(path) => {
                let key = std::fs::read(path).map_err(|source| IdentityError::KeyFile {
                    path: path.display().to_string(),
                    source,
                })?;
                let key = key.trim_ascii().to_vec();
                if key.len() < 16 {
                    return Err(IdentityError::KeyTooShort {
                        path: path.display().to_string(),
                        len: key.len(),
                    });
                }
                (key, false)
            }
            None => (random_key(), true),
        };
        Ok(Self {
            key,
            headers: config
                .headers
                .iter()
                .map(|h| h.to_ascii_lowercase())
                .collect(),
            ephemeral_key,
        })
    }

    /// The identity of a request with these headers and body `user`.
    pub fn extract(&self, headers: &Headers, user: Option<&str>) -> Identity {
        let api_key = headers
            .get_str("authorization")
            .map(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
                    .unwrap_or(v)
            })
            .or_else(|| headers.get_str("x-api-key"))
            .or_else(|| headers.get_str("api-key"))
            .filter(|k| !k.is_empty());
        Identity {
            api_key_fingerprint: api_key.map(|key| self.fingerprint(key)),
            user: user.map(str::to_string),
            headers: self
                .headers
                .iter()
                .filter_map(|name| Some((name.clone(), headers.get_str(name)?.to_string())))
                .collect(),
        }
    }

    /// The fingerprint records carry for this API key.
    pub fn fingerprint(&self, api_key: &str) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes any key length");
        mac.update(api_key.as_bytes());
        let digest = mac.finalize().into_bytes();
        format!("hmac-sha256:{}", hex::encode(&digest[..16]))
    }
}

/// 32 random bytes from the kernel.
fn random_key() -> Vec<u8> {
    let mut key = vec![0u8; 32];
    // SAFETY: getrandom writes at most key.len() bytes into the buffer.
    let n = unsafe { libc::getrandom(key.as_mut_ptr().cast(), key.len(), 0) };
    assert_eq!(n, 32, "getrandom failed");
    key
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> Headers {
        let mut h = Headers::default();
        for (n, v) in pairs {
            h.push(n, v.as_bytes());
        }
        h
    }

    fn extractor_with_key(key: &str) -> IdentityExtractor {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        std::fs::write(&path, key).unwrap();
        IdentityExtractor::new(&IdentityConfig {
            fingerprint_key_file: Some(path),
            ..Default::default()
        })
        .unwrap()
    }

    #[test]
    fn the_key_is_fingerprinted_never_kept() {
        let ids = extractor_with_key("0123456789abcdef-node-secret");
        let a = ids.extract(
            &headers(&[("Authorization", "Bearer sk-live-123")]),
            Some("alice"),
        );
        let b = ids.extract(&headers(&[("x-api-key", "sk-live-123")]), None);
        let c = ids.extract(&headers(&[("Authorization", "Bearer sk-live-456")]), None);
        let fp = a.api_key_fingerprint.clone().unwrap();
        assert!(
            fp.starts_with("hmac-sha256:") && fp.len() == 12 + 32,
            "{fp}"
        );
        assert_eq!(a.api_key_fingerprint, b.api_key_fingerprint);
        assert_ne!(a.api_key_fingerprint, c.api_key_fingerprint);
        let json = serde_json::to_string(&a).unwrap();
        assert!(!json.contains("sk-live"), "{json}");
        assert_eq!(a.user.as_deref(), Some("alice"));
        // Another node secret gives another fingerprint.
        let other = extractor_with_key("another-secret-of-16+bytes");
        let d = other.extract(&headers(&[("Authorization", "Bearer sk-live-123")]), None);
        assert_ne!(a.api_key_fingerprint, d.api_key_fingerprint);
    }

    #[test]
    fn configured_headers_are_copied() {
        let ids = extractor_with_key("0123456789abcdef");
        let id = ids.extract(&headers(&[("X-User-Id", "u1"), ("X-Other", "no")]), None);
        assert_eq!(id.headers.get("x-user-id").map(String::as_str), Some("u1"));
        assert_eq!(id.headers.len(), 1);
    }

    #[test]
    fn a_short_or_missing_key_file_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let short = dir.path().join("short");
        std::fs::write(&short, "abc").unwrap();
        let config = |path| IdentityConfig {
            fingerprint_key_file: Some(path),
            ..Default::default()
        };
        let error = IdentityExtractor::new(&config(short))
            .err()
            .unwrap()
            .to_string();
        assert!(error.contains("at least 16"), "{error}");
        let error = IdentityExtractor::new(&config(dir.path().join("none")))
            .err()
            .unwrap()
            .to_string();
        assert!(error.contains("fingerprint_key_file"), "{error}");
    }
}
