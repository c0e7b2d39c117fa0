//! API tokens and what each may read: a token is scoped to an enterprise, a team, a user, or
//! the operator (`admin`). Everything a scoped token reads is filtered to its account and
//! what lies under it; asking for another account is refused.

use serde::Deserialize;

use crate::accounts::{Account, Accounts};

/// One token's reach.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scope {
    Admin,
    Org(String),
    Team(String),
    User(String),
}

impl Scope {
    pub fn parse(text: &str) -> Option<Scope> {
        match text.split_once(':') {
            _ if text == "admin" => Some(Scope::Admin),
            Some(("org", id)) if !id.is_empty() => Some(Scope::Org(id.into())),
            Some(("team", id)) if !id.is_empty() => Some(Scope::Team(id.into())),
            Some(("user", id)) if !id.is_empty() => Some(Scope::User(id.into())),
            _ => None,
        }
    }

    /// Whether calls of `account` are visible.
    pub fn covers(&self, account: &Account) -> bool {
        match self {
            Scope::Admin => true,
            Scope::Org(id) => account.org == *id,
            Scope::Team(id) => account.team == *id,
            Scope::User(id) => account.user == *id,
        }
    }

    /// Whether a narrower scope lies within this one (`team:search` within `org:acme`).
    pub fn contains(&self, other: &Scope, accounts: &Accounts) -> bool {
        let org_of_team = |team: &str| accounts.teams.get(team).cloned();
        let team_of_user = |user: &str| accounts.users.get(user).cloned();
        match (self, other) {
            (Scope::Admin, _) => true,
            (a, b) if a == b => true,
            (Scope::Org(org), Scope::Team(team)) => org_of_team(team).as_ref() == Some(org),
            (Scope::Org(org), Scope::User(user)) => {
                team_of_user(user).and_then(|t| org_of_team(&t)).as_ref() == Some(org)
            }
            (Scope::Team(team), Scope::User(user)) => team_of_user(user).as_ref() == Some(team),
            _ => false,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokensFile {
    tokens: Vec<TokenEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenEntry {
    token: String,
    scope: String,
}

/// The API's tokens (a mounted Secret: `[[tokens]] token = "...", scope = "team:search"`).
#[derive(Clone, Default)]
pub struct ApiTokens(Vec<(String, Scope)>);

/// Tokens are secrets: only their scopes are printed.
impl std::fmt::Debug for ApiTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.0.iter().map(|(_, s)| s))
            .finish()
    }
}

impl ApiTokens {
    pub fn parse(text: &str) -> Result<ApiTokens, String> {
        let file: TokensFile = toml::from_str(text).map_err(|e| format!("API tokens: {e}"))?;
        let mut tokens = Vec::new();
        for (i, entry) in file.tokens.into_iter().enumerate() {
            let scope = Scope::parse(&entry.scope).ok_or_else(|| {
                format!(
                    "API tokens[{i}].scope {:?}: write admin, org:<id>, team:<id> or user:<id>",
                    entry.scope
                )
            })?;
            if entry.token.len() < 16 {
                return Err(format!(
                    "API tokens[{i}].token is shorter than 16 characters"
                ));
            }
            tokens.push((entry.token, scope));
        }
        Ok(ApiTokens(tokens))
    }

    /// The scope of an `authorization: Bearer` header.
    pub fn scope(&self, header: Option<&str>) -> Option<Scope> {
        use subtle::ConstantTimeEq;
        let token = header?.strip_prefix("Bearer ")?.trim().as_bytes();
        self.0
            .iter()
            .find(|(t, _)| bool::from(t.as_bytes().ct_eq(token)))
            .map(|(_, s)| s.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_nest_along_the_directory() {
        let accounts = Accounts::parse(include_str!("../../examples/accounts.toml")).unwrap();
        let acme = Scope::parse("org:acme").unwrap();
        let search = Scope::parse("team:search").unwrap();
        let alice = Scope::parse("user:alice").unwrap();
        let carol = Scope::parse("user:carol").unwrap();
        assert!(acme.contains(&search, &accounts));
        assert!(acme.contains(&alice, &accounts));
        assert!(search.contains(&alice, &accounts));
        assert!(!search.contains(&carol, &accounts));
        assert!(!search.contains(&acme, &accounts));
        assert!(Scope::Admin.contains(&acme, &accounts));
        assert_eq!(Scope::parse("team:"), None);
    }

    #[test]
    fn tokens_name_their_scope_and_stay_secret() {
        let tokens = ApiTokens::parse(
            "[[tokens]]\ntoken = \"search-team-token-0001\"\nscope = \"team:search\"\n",
        )
        .unwrap();
        assert_eq!(
            tokens.scope(Some("Bearer search-team-token-0001")),
            Some(Scope::Team("search".into()))
        );
        assert_eq!(tokens.scope(Some("Bearer other")), None);
        assert!(!format!("{tokens:?}").contains("0001"));
        assert!(ApiTokens::parse("[[tokens]]\ntoken = \"x\"\nscope = \"team:a\"\n").is_err());
        assert!(ApiTokens::parse(
            "[[tokens]]\ntoken = \"0123456789abcdef\"\nscope = \"everyone\"\n"
        )
        .unwrap_err()
        .contains("scope"));
    }
}
