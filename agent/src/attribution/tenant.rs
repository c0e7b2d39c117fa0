//! Tenants: the user, team and enterprise (org) a call is billed to, as the operator's rules
//! name them. A record seen in a calling pod (an AI agent labelled `team=search`) takes them
//! from the pod; a record seen in an inference server's pod is for whoever called, so it
//! takes them from the request (a known API key, a gateway's header, the body's `user`).
//! Each of user, team and org is a list of sources, tried in order; the first with a value
//! wins. The values go out as `tokenmeter.user`, `tokenmeter.team` and `tokenmeter.org`.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::{kubernetes::Pod, Identity};
use crate::http::Role;

/// Where a tenant name can come from.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub enum Source {
    /// `pod.label:<key>`
    PodLabel(String),
    /// `pod.annotation:<key>`
    PodAnnotation(String),
    /// `pod.namespace`
    PodNamespace,
    /// `pod.service_account`
    PodServiceAccount,
    /// `pod.workload`: the owning Deployment, StatefulSet, ... name.
    PodWorkload,
    /// `request.header:<name>`: a header the caller or a gateway set.
    RequestHeader(String),
    /// `request.user`: the body's `user` (OpenAI) or `metadata.user_id` (Anthropic).
    RequestUser,
    /// `api_key`: the owner of the request's API key, from `[[tenants.api_keys]]`.
    ApiKey,
    /// `static:<value>`: a fixed name (a single-enterprise installation).
    Static(String),
}

impl TryFrom<String> for Source {
    type Error = String;

    fn try_from(text: String) -> Result<Self, String> {
        let (kind, arg) = match text.split_once(':') {
            Some((kind, arg)) => (kind, Some(arg.to_string()).filter(|a| !a.is_empty())),
            None => (text.as_str(), None),
        };
        Ok(match (kind, arg) {
            ("pod.label", Some(key)) => Source::PodLabel(key),
            ("pod.annotation", Some(key)) => Source::PodAnnotation(key),
            ("pod.namespace", None) => Source::PodNamespace,
            ("pod.service_account", None) => Source::PodServiceAccount,
            ("pod.workload", None) => Source::PodWorkload,
            ("request.header", Some(name)) => Source::RequestHeader(name.to_ascii_lowercase()),
            ("request.user", None) => Source::RequestUser,
            ("api_key", None) => Source::ApiKey,
            ("static", Some(value)) => Source::Static(value),
            _ => {
                return Err(format!(
                    "unknown tenant source {text:?}: expected pod.label:<key>, \
                     pod.annotation:<key>, pod.namespace, pod.service_account, pod.workload, \
                     request.header:<name>, request.user, api_key or static:<value>"
                ))
            }
        })
    }
}

/// The sources of each tenant level, for one side of a call.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TenantRules {
    pub user: Vec<Source>,
    pub team: Vec<Source>,
    pub org: Vec<Source>,
}

/// The owner of an API key, by the key's fingerprint as records carry it
/// (`tokenmeter-agent fingerprint` prints it).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyOwner {
    pub fingerprint: String,
    pub user: Option<String>,
    pub team: Option<String>,
    pub org: Option<String>,
}

/// `[tenants]` in the agent's configuration.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TenantConfig {
    /// Records seen in the calling process (the client side).
    pub client: TenantRules,
    /// Records seen in the serving process (the server side).
    pub server: TenantRules,
    pub api_keys: Vec<ApiKeyOwner>,
}

impl Default for TenantConfig {
    fn default() -> Self {
        let parse = |sources: &[&str]| -> Vec<Source> {
            sources
                .iter()
                .map(|s| Source::try_from(s.to_string()).expect("valid default source"))
                .collect()
        };
        Self {
            client: TenantRules {
                user: parse(&["pod.label:tokenmeter.io/user", "api_key", "request.user"]),
                team: parse(&["pod.label:tokenmeter.io/team", "api_key"]),
                org: parse(&[
                    "pod.label:tokenmeter.io/org",
                    "pod.annotation:tokenmeter.io/org",
                    "api_key",
                ]),
            },
            server: TenantRules {
                user: parse(&["api_key", "request.header:x-user-id", "request.user"]),
                team: parse(&["api_key", "request.header:x-team-id"]),
                org: parse(&["api_key"]),
            },
            api_keys: Vec::new(),
        }
    }
}

/// Who a call is billed to; each level absent when no source had a value.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Tenant {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub team: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub org: Option<String>,
}

impl Tenant {
    pub fn is_empty(&self) -> bool {
        self.user.is_none() && self.team.is_none() && self.org.is_none()
    }
}

/// The rules, ready to apply.
#[derive(Clone)]
pub struct TenantResolver {
    config: TenantConfig,
    owners: HashMap<String, usize>,
}

impl TenantResolver {
    pub fn new(config: TenantConfig) -> Result<Self, String> {
        let mut owners = HashMap::new();
        for (i, owner) in config.api_keys.iter().enumerate() {
            if !owner.fingerprint.starts_with("hmac-sha256:") {
                return Err(format!(
                    "tenants.api_keys[{i}].fingerprint {:?} is not a fingerprint as records \
                     carry it (hmac-sha256:<hex>; `tokenmeter-agent fingerprint` prints one)",
                    owner.fingerprint
                ));
            }
            if owners.insert(owner.fingerprint.clone(), i).is_some() {
                return Err(format!(
                    "tenants.api_keys[{i}].fingerprint {:?} is listed twice",
                    owner.fingerprint
                ));
            }
        }
        Ok(Self { config, owners })
    }

    /// Request headers the rules read: the identity stage must keep them.
    pub fn headers(config: &TenantConfig) -> Vec<String> {
        let rules = [&config.client, &config.server];
        let sources = rules
            .into_iter()
            .flat_map(|r| r.user.iter().chain(&r.team).chain(&r.org));
        let mut names: Vec<String> = sources
            .filter_map(|s| match s {
                Source::RequestHeader(name) => Some(name.clone()),
                _ => None,
            })
            .collect();
        names.sort();
        names.dedup();
        names
    }

    /// The tenant of a call seen on `side`, in this pod (if known), with this identity.
    pub fn resolve(&self, side: Role, pod: Option<&Pod>, identity: &Identity) -> Tenant {
        let rules = match side {
            Role::Client => &self.config.client,
            Role::Server => &self.config.server,
        };
        let owner = identity
            .api_key_fingerprint
            .as_ref()
            .and_then(|f| self.owners.get(f))
            .map(|&i| &self.config.api_keys[i]);
        let first = |sources: &[Source], level: fn(&ApiKeyOwner) -> &Option<String>| {
            sources.iter().find_map(|source| {
                let value = match source {
                    Source::PodLabel(key) => pod?.labels.get(key).cloned(),
                    Source::PodAnnotation(key) => pod?.annotations.get(key).cloned(),
                    Source::PodNamespace => Some(pod?.namespace.clone()),
                    Source::PodServiceAccount => pod?.service_account.clone(),
                    Source::PodWorkload => pod?.workload.as_ref().map(|(_, name)| name.clone()),
                    Source::RequestHeader(name) => identity.headers.get(name).cloned(),
                    Source::RequestUser => identity.user.clone(),
                    Source::ApiKey => level(owner?).clone(),
                    Source::Static(value) => Some(value.clone()),
                };
                value.filter(|v| !v.is_empty())
            })
        };
        Tenant {
            user: first(&rules.user, |o| &o.user),
            team: first(&rules.team, |o| &o.team),
            org: first(&rules.org, |o| &o.org),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn pod() -> Pod {
        Pod {
            uid: "u".into(),
            name: "search-agent-1".into(),
            namespace: "search".into(),
            labels: BTreeMap::from([("tokenmeter.io/team".into(), "search".into())]),
            annotations: BTreeMap::from([("tokenmeter.io/org".into(), "acme".into())]),
            workload: Some(("deployment".into(), "search-agent".into())),
            ..Default::default()
        }
    }

    fn resolver(extra: &str) -> TenantResolver {
        let config: TenantConfig = toml::from_str(extra).expect("tenant config");
        TenantResolver::new(config).expect("valid")
    }

    #[test]
    fn a_client_pod_names_its_team_and_org_by_label_and_annotation() {
        let identity = Identity {
            user: Some("alice".into()),
            ..Default::default()
        };
        let tenant = resolver("").resolve(Role::Client, Some(&pod()), &identity);
        assert_eq!(
            tenant,
            Tenant {
                user: Some("alice".into()),
                team: Some("search".into()),
                org: Some("acme".into()),
            }
        );
    }

    #[test]
    fn a_server_side_record_is_for_the_api_keys_owner_not_the_servers_pod() {
        let resolver = resolver(
            r#"
            [[api_keys]]
            fingerprint = "hmac-sha256:00aa"
            user = "bob"
            team = "ads"
            org = "globex"
            "#,
        );
        let identity = Identity {
            api_key_fingerprint: Some("hmac-sha256:00aa".into()),
            ..Default::default()
        };
        let tenant = resolver.resolve(Role::Server, Some(&pod()), &identity);
        assert_eq!(
            tenant.team.as_deref(),
            Some("ads"),
            "not the server pod's label"
        );
        assert_eq!(tenant.org.as_deref(), Some("globex"));
        // An unknown key and no header: nothing, not the server pod's tenant.
        let stranger = Identity {
            api_key_fingerprint: Some("hmac-sha256:ffff".into()),
            ..Default::default()
        };
        assert!(resolver
            .resolve(Role::Server, Some(&pod()), &stranger)
            .is_empty());
    }

    #[test]
    fn headers_namespace_workload_and_static_sources() {
        let resolver = resolver(
            r#"
            [server]
            user = ["request.header:X-Gateway-User"]
            [client]
            team = ["pod.label:missing", "pod.workload"]
            org = ["pod.namespace"]
            user = ["static:svc"]
            "#,
        );
        let identity = Identity {
            headers: BTreeMap::from([("x-gateway-user".into(), "carol".into())]),
            ..Default::default()
        };
        let server = resolver.resolve(Role::Server, None, &identity);
        assert_eq!(server.user.as_deref(), Some("carol"));
        let client = resolver.resolve(Role::Client, Some(&pod()), &identity);
        assert_eq!(client.team.as_deref(), Some("search-agent"));
        assert_eq!(client.org.as_deref(), Some("search"));
        assert_eq!(client.user.as_deref(), Some("svc"));
        // A client without pod metadata gets only what the request says.
        assert!(resolver
            .resolve(Role::Client, None, &identity)
            .team
            .is_none());
        assert_eq!(
            TenantResolver::headers(&resolver.config),
            vec!["x-gateway-user".to_string()]
        );
    }

    #[test]
    fn bad_sources_and_fingerprints_are_named() {
        let error = toml::from_str::<TenantConfig>("[client]\nteam = [\"pod.labels:x\"]")
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("pod.labels:x") && error.contains("pod.label:<key>"),
            "{error}"
        );
        let config: TenantConfig =
            toml::from_str("[[api_keys]]\nfingerprint = \"sk-live-123\"\nuser = \"x\"").unwrap();
        let error = TenantResolver::new(config).err().unwrap();
        assert!(error.contains("api_keys[0].fingerprint"), "{error}");
    }
}
