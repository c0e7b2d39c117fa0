//! Bearer-token authentication of agents: `authorization: Bearer <token>` must carry one of
//! the configured tokens (compared in constant time). No tokens configured: open (a local
//! demo), which the collector says loudly at start.

use subtle::ConstantTimeEq;

#[derive(Clone, Default)]
pub struct Auth {
    tokens: Vec<String>,
}

/// Tokens are secrets: only their count is printed.
impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Auth({} tokens)", self.tokens.len())
    }
}

impl Auth {
    pub fn new(tokens: Vec<String>) -> Self {
        Self {
            tokens: tokens.into_iter().filter(|t| !t.is_empty()).collect(),
        }
    }

    pub fn is_open(&self) -> bool {
        self.tokens.is_empty()
    }

    /// Checks an `authorization` header value.
    pub fn allows(&self, header: Option<&str>) -> bool {
        if self.is_open() {
            return true;
        }
        let Some(token) = header.and_then(|h| h.strip_prefix("Bearer ")) else {
            return false;
        };
        let token = token.trim().as_bytes();
        // Every token is compared, so the time taken does not say which one came close.
        self.tokens
            .iter()
            .fold(false, |ok, t| ok | bool::from(t.as_bytes().ct_eq(token)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_configured_bearer_token_passes() {
        let auth = Auth::new(vec!["s3cret".into(), "other".into()]);
        assert!(auth.allows(Some("Bearer s3cret")));
        assert!(auth.allows(Some("Bearer other")));
        assert!(!auth.allows(Some("Bearer s3cre")));
        assert!(!auth.allows(Some("s3cret")));
        assert!(!auth.allows(None));
        assert!(!format!("{auth:?}").contains("s3cret"));
        assert!(Auth::new(vec![]).allows(None));
    }
}
