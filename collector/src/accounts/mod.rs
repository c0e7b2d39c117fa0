//! Accounts: enterprises (orgs) -> teams -> users, and the rules that map a call's attributes
//! to them. A call names its account through `tokenmeter.user`, `tokenmeter.team` and
//! `tokenmeter.org` (the agent's tenant mapping) or through the first rule whose attributes
//! all match (a namespace, a label, an API-key fingerprint, the request's `user`). The
//! directory completes the rest (a user's team, a team's enterprise). What nothing names is
//! billed to the visible account `unassigned`, never dropped.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use toml::Spanned;

/// The name of every level nothing assigned.
pub const UNASSIGNED: &str = "unassigned";

/// Where a call is billed.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Account {
    pub org: String,
    pub team: String,
    pub user: String,
}

#[derive(Debug, thiserror::Error)]
pub enum AccountsError {
    #[error("accounts: {0}")]
    Parse(String),
    #[error("accounts, line {line}: {field}: {reason}")]
    Invalid {
        line: usize,
        field: String,
        reason: String,
    },
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    orgs: Vec<Spanned<OrgFile>>,
    #[serde(default)]
    rules: Vec<Spanned<Rule>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OrgFile {
    id: String,
    name: Option<String>,
    #[serde(default)]
    teams: Vec<TeamFile>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TeamFile {
    id: String,
    #[serde(default)]
    users: Vec<String>,
}

/// A mapping rule: when every attribute matches, the call belongs to these.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    pub when: BTreeMap<String, String>,
    pub user: Option<String>,
    pub team: Option<String>,
    pub org: Option<String>,
}

/// The validated directory and rules.
#[derive(Clone, Debug, Default)]
pub struct Accounts {
    /// org id -> display name.
    pub orgs: BTreeMap<String, String>,
    /// team id -> org id.
    pub teams: BTreeMap<String, String>,
    /// user id -> team id.
    pub users: BTreeMap<String, String>,
    pub rules: Vec<Rule>,
}

impl Accounts {
    pub fn parse(text: &str) -> Result<Accounts, AccountsError> {
        let file: File = toml::from_str(text).map_err(|e| AccountsError::Parse(e.to_string()))?;
        let line = |offset: usize| text[..offset.min(text.len())].matches('\n').count() + 1;
        let mut accounts = Accounts::default();
        for (i, spanned) in file.orgs.into_iter().enumerate() {
            let at = line(spanned.span().start);
            let org = spanned.into_inner();
            let invalid = |field: String, reason: String| AccountsError::Invalid {
                line: at,
                field,
                reason,
            };
            if org.id == UNASSIGNED || accounts.orgs.contains_key(&org.id) {
                return Err(invalid(
                    format!("orgs[{i}].id"),
                    format!("{:?} is reserved or defined twice", org.id),
                ));
            }
            for (j, team) in org.teams.iter().enumerate() {
                if team.id == UNASSIGNED || accounts.teams.contains_key(&team.id) {
                    return Err(invalid(
                        format!("orgs[{i}].teams[{j}].id"),
                        format!(
                            "team {:?} is reserved or defined twice (team ids are global)",
                            team.id
                        ),
                    ));
                }
                accounts.teams.insert(team.id.clone(), org.id.clone());
                for user in &team.users {
                    if let Some(other) = accounts.users.insert(user.clone(), team.id.clone()) {
                        return Err(invalid(
                            format!("orgs[{i}].teams[{j}].users"),
                            format!("user {user:?} is already in team {other:?}"),
                        ));
                    }
                }
            }
            accounts
                .orgs
                .insert(org.id.clone(), org.name.unwrap_or(org.id));
        }
        for (i, spanned) in file.rules.into_iter().enumerate() {
            let at = line(spanned.span().start);
            let rule = spanned.into_inner();
            let invalid = |field: &str, reason: String| AccountsError::Invalid {
                line: at,
                field: format!("rules[{i}].{field}"),
                reason,
            };
            if rule.when.is_empty() {
                return Err(invalid(
                    "when",
                    "needs at least one attribute to match".into(),
                ));
            }
            if rule.user.is_none() && rule.team.is_none() && rule.org.is_none() {
                return Err(invalid("user", "name a user, team or org to assign".into()));
            }
            if let Some(team) = &rule.team {
                if !accounts.teams.contains_key(team) {
                    return Err(invalid(
                        "team",
                        format!("{team:?} is not a team of any org"),
                    ));
                }
            }
            if let Some(org) = &rule.org {
                if !accounts.orgs.contains_key(org) {
                    return Err(invalid("org", format!("{org:?} is not an org")));
                }
            }
            accounts.rules.push(rule);
        }
        Ok(accounts)
    }

    pub fn load(path: &std::path::Path) -> Result<Accounts, AccountsError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| AccountsError::Parse(format!("{}: {e}", path.display())))?;
        Self::parse(&text)
    }

    /// The account of a call with these attributes.
    pub fn resolve(&self, attributes: &BTreeMap<String, String>) -> Account {
        let named = |key: &str| attributes.get(key).filter(|v| !v.is_empty()).cloned();
        let (mut user, mut team, mut org) = (
            named("tokenmeter.user"),
            named("tokenmeter.team"),
            named("tokenmeter.org"),
        );
        if let Some(rule) = self.rules.iter().find(|rule| {
            rule.when
                .iter()
                .all(|(k, v)| attributes.get(k).is_some_and(|a| a == v))
        }) {
            user = user.or(rule.user.clone());
            team = team.or(rule.team.clone());
            org = org.or(rule.org.clone());
        }
        let team = team.or_else(|| user.as_ref().and_then(|u| self.users.get(u).cloned()));
        let org = org.or_else(|| team.as_ref().and_then(|t| self.teams.get(t).cloned()));
        Account {
            org: org.unwrap_or_else(|| UNASSIGNED.into()),
            team: team.unwrap_or_else(|| UNASSIGNED.into()),
            user: user.unwrap_or_else(|| UNASSIGNED.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = include_str!("../../examples/accounts.toml");

    fn attributes(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn rules_and_the_directory_name_the_account() {
        let accounts = Accounts::parse(EXAMPLE).unwrap();
        let by_user = accounts.resolve(&attributes(&[("tokenmeter.request.user", "alice")]));
        assert_eq!(
            by_user,
            Account {
                org: "acme".into(),
                team: "search".into(),
                user: "alice".into()
            }
        );
        let by_namespace = accounts.resolve(&attributes(&[("k8s.namespace.name", "ads-agents")]));
        assert_eq!(
            (by_namespace.org.as_str(), by_namespace.team.as_str()),
            ("acme", "ads")
        );
        assert_eq!(by_namespace.user, UNASSIGNED);
        // The agent's tenant attributes come first.
        let tagged = accounts.resolve(&attributes(&[
            ("tokenmeter.user", "carol"),
            ("tokenmeter.request.user", "alice"),
        ]));
        assert_eq!(tagged.team, "research");
        assert_eq!(tagged.org, "globex");
        let nobody = accounts.resolve(&attributes(&[("k8s.namespace.name", "default")]));
        assert_eq!(nobody.org, UNASSIGNED);
    }

    #[test]
    fn mistakes_are_named_with_their_line() {
        let err = Accounts::parse("[[orgs]]\nid = \"a\"\n[[orgs.teams]]\nid = \"t\"\nusers = [\"u\"]\n[[orgs.teams]]\nid = \"t2\"\nusers = [\"u\"]\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("line 1") && err.contains("already in team"),
            "{err}"
        );
        let err = Accounts::parse("[[rules]]\nwhen = { a = \"b\" }\nteam = \"nope\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("rules[0].team") && err.contains("nope"),
            "{err}"
        );
        let err = Accounts::parse("[[rules]]\nwhen = {}\nuser = \"x\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("rules[0].when"), "{err}");
        assert!(Accounts::parse("[[orgs]]\nidd = \"a\"\n")
            .unwrap_err()
            .to_string()
            .contains("idd"));
    }
}
