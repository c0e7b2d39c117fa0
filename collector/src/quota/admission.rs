//! The admission check gateways call before serving a request: its headers name the account
//! (the same rules as usage: a user header, the API key's fingerprint, any header), and a
//! spent hard quota of the user, its team or its enterprise denies it. Served over HTTP
//! (`POST /v1/admission`) and as Envoy's `ext_authz` ([`super::ext_authz`]).

use std::{
    collections::BTreeMap,
    sync::{
        atomic::{AtomicU64, Ordering},
        RwLock,
    },
};

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use super::{Mode, Quota, QuotaState};
use crate::accounts::{Account, Accounts};

/// Settings of the admission check (`[admission]` in the collector's config).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdmissionConfig {
    /// The header that names the user (read as `tokenmeter.request.user`).
    pub user_header: String,
    /// The agents' fingerprint key file: API keys in `authorization: Bearer` or `x-api-key`
    /// become the same `tokenmeter.api_key.fingerprint` the agents report.
    pub fingerprint_key_file: Option<std::path::PathBuf>,
    /// How often quota usage is read back from the store, in ms.
    pub refresh_ms: u64,
}

impl Default for AdmissionConfig {
    fn default() -> Self {
        Self {
            user_header: "x-tokenmeter-user".into(),
            fingerprint_key_file: None,
            refresh_ms: 1000,
        }
    }
}

/// What the check says.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Decision {
    pub allowed: bool,
    pub account: Account,
    /// Why not, when denied.
    pub reason: Option<String>,
}

pub struct Admission {
    accounts: Accounts,
    quotas: Vec<Quota>,
    states: RwLock<Vec<QuotaState>>,
    fingerprint_key: Option<Vec<u8>>,
    user_header: String,
    pub allowed: AtomicU64,
    pub denied: AtomicU64,
}

impl Admission {
    pub fn new(
        config: &AdmissionConfig,
        accounts: Accounts,
        quotas: Vec<Quota>,
    ) -> anyhow::Result<Admission> {
        let fingerprint_key = match &config.fingerprint_key_file {
            Some(path) => {
                let key = std::fs::read(path).map_err(|e| {
                    anyhow::anyhow!("admission.fingerprint_key_file {}: {e}", path.display())
                })?;
                Some(key.trim_ascii().to_vec())
            }
            None => None,
        };
        Ok(Admission {
            accounts,
            quotas,
            states: RwLock::new(Vec::new()),
            fingerprint_key,
            user_header: config.user_header.to_ascii_lowercase(),
            allowed: AtomicU64::new(0),
            denied: AtomicU64::new(0),
        })
    }

    pub fn quotas(&self) -> &[Quota] {
        &self.quotas
    }

    /// Replaces the quotas' states (the refresher's latest reading).
    pub fn update(&self, states: Vec<QuotaState>) {
        *self.states.write().unwrap_or_else(|p| p.into_inner()) = states;
    }

    pub fn states(&self) -> Vec<QuotaState> {
        self.states
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The attributes a request's headers give, named as in usage records.
    pub fn attributes<'a>(
        &self,
        headers: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> BTreeMap<String, String> {
        let mut attributes = BTreeMap::new();
        for (name, value) in headers {
            let name = name.to_ascii_lowercase();
            let key = match name.as_str() {
                "authorization" => value.strip_prefix("Bearer ").map(str::trim),
                "x-api-key" => Some(value.trim()),
                _ => None,
            };
            if let (Some(key), Some(secret)) = (key, &self.fingerprint_key) {
                let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("any key length");
                mac.update(key.as_bytes());
                let digest = mac.finalize().into_bytes();
                attributes.insert(
                    "tokenmeter.api_key.fingerprint".into(),
                    format!("hmac-sha256:{}", hex::encode(&digest[..16])),
                );
                continue;
            }
            if name == "authorization" || name == "x-api-key" {
                continue;
            }
            if name == self.user_header {
                attributes.insert("tokenmeter.request.user".into(), value.to_string());
            }
            attributes.insert(format!("tokenmeter.header.{name}"), value.to_string());
        }
        attributes
    }

    /// Admits or denies a request with these attributes.
    pub fn decide(&self, attributes: &BTreeMap<String, String>) -> Decision {
        let account = self.accounts.resolve(attributes);
        let states = self.states.read().unwrap_or_else(|p| p.into_inner());
        let spent = states.iter().find(|s| {
            let quota = &self.quotas[s.index];
            s.exceeded && quota.mode == Mode::Hard && quota.applies_to(&account)
        });
        let reason = spent.map(|s| {
            let quota = &self.quotas[s.index];
            let limit = quota
                .tokens
                .map(|t| format!("{t} tokens"))
                .or_else(|| quota.amount.map(|a| format!("{a}")))
                .unwrap_or_default();
            format!(
                "the {:?} quota of {} ({limit}) is spent for {}",
                quota.period, quota.account, s.window
            )
        });
        let allowed = reason.is_none();
        let counter = if allowed { &self.allowed } else { &self.denied };
        counter.fetch_add(1, Ordering::Relaxed);
        Decision {
            allowed,
            account,
            reason,
        }
    }
}
