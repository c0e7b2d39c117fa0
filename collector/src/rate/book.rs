//! The price book file (TOML): one currency, prices per model pattern and token type, with
//! effective dates, and overrides per enterprise or team (negotiated contracts). Money is
//! written as strings (`"2.50"`) and held as decimals: a TOML float is refused, it would not
//! be exact. Every error names the line and the field.

use rust_decimal::Decimal;
use serde::Deserialize;
use toml::Spanned;

use super::price::{Price, PriceError, Tier};
use crate::usage::{GPU_TIME, TOKEN_TYPES};

/// A validated price book.
#[derive(Clone, Debug)]
pub struct PriceBook {
    pub currency: String,
    /// Decimal places of the currency's smallest unit (2 for USD and EUR, 0 for JPY).
    pub minor_units: u32,
    /// Least an enterprise pays per period when it used anything.
    pub minimum_charge: Option<Decimal>,
    pub entries: Vec<PriceEntry>,
}

/// Who an entry applies to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scope {
    Global,
    Org(String),
    Team(String),
}

#[derive(Clone, Debug)]
pub struct PriceEntry {
    /// Stable name of the entry, stored with each rated record:
    /// `<scope>:<model pattern>@<effective date>`.
    pub id: String,
    pub scope: Scope,
    /// Glob over the model name (`*` any run, `?` one character).
    pub model: String,
    pub matcher: regex::Regex,
    /// Midnight UTC of the first day it applies, in ns since the epoch.
    pub effective_from_ns: i64,
    /// Prices per token type (`input`, `cached_input`, `cache_creation_input`, `output`,
    /// `reasoning`); a missing cached or cache-creation price falls back to `input`, a
    /// missing reasoning price to `output`.
    pub prices: Vec<(&'static str, Price)>,
    /// Per request.
    pub request_fee: Option<Decimal>,
}

impl PriceEntry {
    /// The price of a token type, with the fallbacks.
    pub fn price(&self, token_type: &str) -> Option<&Price> {
        let own = |t: &str| self.prices.iter().find(|(k, _)| *k == t).map(|(_, p)| p);
        own(token_type).or_else(|| match token_type {
            "cached_input" | "cache_creation_input" => own("input"),
            "reasoning" => own("output"),
            _ => None,
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BookError {
    /// Syntax, unknown fields, wrong types: toml's message names line, column and field.
    #[error("price book: {0}")]
    Parse(String),
    #[error("price book, line {line}: {field}: {reason}")]
    Invalid {
        line: usize,
        field: String,
        reason: String,
    },
}

// ---- the file's shape ----

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BookFile {
    currency: String,
    #[serde(default = "default_minor_units")]
    minor_units: u32,
    #[serde(default, deserialize_with = "money::option")]
    minimum_charge: Option<Decimal>,
    #[serde(default)]
    prices: Vec<Spanned<EntryFile>>,
    #[serde(default)]
    overrides: Vec<Spanned<OverrideFile>>,
}

fn default_minor_units() -> u32 {
    2
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OverrideFile {
    org: Option<String>,
    team: Option<String>,
    prices: Vec<Spanned<EntryFile>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EntryFile {
    model: String,
    /// `YYYY-MM-DD`; absent: always.
    effective_from: Option<String>,
    input: Option<PriceFile>,
    cached_input: Option<PriceFile>,
    cache_creation_input: Option<PriceFile>,
    output: Option<PriceFile>,
    reasoning: Option<PriceFile>,
    /// GPU time a pod held, counted in µs: `per_second` (or `per_million`, the same) is the
    /// price of one GPU-second; tiers' `up_to` are in µs. Matched on the GPU's product name.
    gpu_time: Option<PriceFile>,
    #[serde(default, deserialize_with = "money::option")]
    request_fee: Option<Decimal>,
}

#[derive(Deserialize, Default, PartialEq, Eq, Clone, Copy)]
#[serde(rename_all = "snake_case")]
enum Kind {
    #[default]
    PerUnit,
    Graduated,
    Volume,
    Package,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PriceFile {
    #[serde(default)]
    kind: Kind,
    #[serde(default, deserialize_with = "money::option")]
    per_million: Option<Decimal>,
    /// `gpu_time` only: the price of a GPU-second (a million of its µs).
    #[serde(default, deserialize_with = "money::option")]
    per_second: Option<Decimal>,
    #[serde(default)]
    tiers: Vec<TierFile>,
    package_tokens: Option<u64>,
    #[serde(default, deserialize_with = "money::option")]
    package_price: Option<Decimal>,
    #[serde(default)]
    free_tokens: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TierFile {
    up_to: Option<u64>,
    #[serde(deserialize_with = "money::required")]
    per_million: Decimal,
    #[serde(default, deserialize_with = "money::option")]
    flat: Option<Decimal>,
}

/// Money: a string (`"2.50"`) or an integer; never a float.
mod money {
    use rust_decimal::Decimal;
    use serde::{de::Error, Deserialize, Deserializer};

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Text(String),
        Int(i64),
        Float(f64),
    }

    fn parse<E: Error>(raw: Raw) -> Result<Decimal, E> {
        match raw {
            Raw::Text(t) => t
                .trim()
                .parse::<Decimal>()
                .map_err(|e| E::custom(format!("{t:?} is not a decimal amount: {e}"))),
            Raw::Int(i) => Ok(Decimal::from(i)),
            Raw::Float(f) => Err(E::custom(format!(
                "{f} is a floating-point number: write amounts as strings, e.g. \"{f}\", so they stay exact"
            ))),
        }
    }

    pub fn required<'de, D: Deserializer<'de>>(d: D) -> Result<Decimal, D::Error> {
        parse(Raw::deserialize(d)?)
    }

    pub fn option<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Decimal>, D::Error> {
        Option::<Raw>::deserialize(d)?.map(parse).transpose()
    }
}

impl PriceBook {
    pub fn parse(text: &str) -> Result<PriceBook, BookError> {
        let file: BookFile = toml::from_str(text).map_err(|e| BookError::Parse(e.to_string()))?;
        let line = |offset: usize| text[..offset.min(text.len())].matches('\n').count() + 1;
        if file.currency.len() != 3 || !file.currency.chars().all(|c| c.is_ascii_uppercase()) {
            return Err(BookError::Invalid {
                line: 1,
                field: "currency".into(),
                reason: format!("{:?} is not an ISO 4217 code like \"USD\"", file.currency),
            });
        }
        if file.minimum_charge.is_some_and(|m| m.is_sign_negative()) {
            return Err(BookError::Invalid {
                line: 1,
                field: "minimum_charge".into(),
                reason: "must not be negative".into(),
            });
        }
        let mut entries = Vec::new();
        let mut add = |spanned: Spanned<EntryFile>, scope: Scope, field: String| {
            let at = line(spanned.span().start);
            let entry =
                entry(spanned.into_inner(), scope).map_err(|(f, reason)| BookError::Invalid {
                    line: at,
                    field: format!("{field}.{f}"),
                    reason,
                })?;
            if entries.iter().any(|e: &PriceEntry| e.id == entry.id) {
                return Err(BookError::Invalid {
                    line: at,
                    field,
                    reason: format!("{} is defined twice", entry.id),
                });
            }
            entries.push(entry);
            Ok(())
        };
        for (i, spanned) in file.prices.into_iter().enumerate() {
            add(spanned, Scope::Global, format!("prices[{i}]"))?;
        }
        for (i, spanned) in file.overrides.into_iter().enumerate() {
            let at = line(spanned.span().start);
            let o = spanned.into_inner();
            let scope = match (o.org, o.team) {
                (Some(org), None) => Scope::Org(org),
                (None, Some(team)) => Scope::Team(team),
                _ => {
                    return Err(BookError::Invalid {
                        line: at,
                        field: format!("overrides[{i}]"),
                        reason: "name exactly one of org or team".into(),
                    })
                }
            };
            for (j, spanned) in o.prices.into_iter().enumerate() {
                add(
                    spanned,
                    scope.clone(),
                    format!("overrides[{i}].prices[{j}]"),
                )?;
            }
        }
        Ok(PriceBook {
            currency: file.currency,
            minor_units: file.minor_units,
            minimum_charge: file.minimum_charge,
            entries,
        })
    }

    pub fn load(path: &std::path::Path) -> Result<PriceBook, BookError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| BookError::Parse(format!("{}: {e}", path.display())))?;
        Self::parse(&text).map_err(|e| match e {
            BookError::Parse(m) => BookError::Parse(format!("{}: {m}", path.display())),
            other => other,
        })
    }

    pub fn entry(&self, id: &str) -> Option<&PriceEntry> {
        self.entries.iter().find(|e| e.id == id)
    }
}

fn entry(file: EntryFile, scope: Scope) -> Result<PriceEntry, (String, String)> {
    let effective_from_ns = match &file.effective_from {
        None => i64::MIN,
        Some(date) => chrono::NaiveDate::parse_from_str(date, "%Y-%m-%d")
            .map_err(|e| {
                (
                    "effective_from".to_string(),
                    format!("{date:?}: {e} (use YYYY-MM-DD)"),
                )
            })?
            .and_hms_opt(0, 0, 0)
            .expect("midnight exists")
            .and_utc()
            .timestamp_nanos_opt()
            .ok_or(("effective_from".to_string(), "out of range".to_string()))?,
    };
    let matcher = glob(&file.model).map_err(|e| ("model".to_string(), e))?;
    let scope_name = match &scope {
        Scope::Global => "global".to_string(),
        Scope::Org(o) => format!("org={o}"),
        Scope::Team(t) => format!("team={t}"),
    };
    let id = format!(
        "{scope_name}:{}@{}",
        file.model,
        file.effective_from.as_deref().unwrap_or("always")
    );
    let mut prices = Vec::new();
    for (token_type, price) in TOKEN_TYPES.into_iter().zip([
        file.input,
        file.cached_input,
        file.cache_creation_input,
        file.output,
        file.reasoning,
    ]) {
        if let Some(price) = price {
            if price.per_second.is_some() {
                return Err((
                    format!("{token_type}.per_second"),
                    "per_second prices gpu_time (GPU-seconds); token prices are per_million".into(),
                ));
            }
            let price =
                build(price).map_err(|e| (format!("{token_type}.{}", e.field), e.reason))?;
            prices.push((token_type, price));
        }
    }
    if let Some(mut price) = file.gpu_time {
        if let Some(per_second) = price.per_second.take() {
            if price.per_million.is_some() {
                return Err((
                    "gpu_time.per_second".into(),
                    "give per_second or per_million, not both".into(),
                ));
            }
            price.per_million = Some(per_second);
        }
        let price = build(price).map_err(|e| (format!("gpu_time.{}", e.field), e.reason))?;
        prices.push((GPU_TIME, price));
    }
    if let Some(fee) = file.request_fee {
        if fee.is_sign_negative() {
            return Err(("request_fee".into(), "must not be negative".into()));
        }
    }
    if prices.is_empty() && file.request_fee.is_none() {
        return Err((
            "model".into(),
            format!(
                "{:?} has no price for any token type, no gpu_time and no request_fee",
                file.model
            ),
        ));
    }
    Ok(PriceEntry {
        id,
        scope,
        model: file.model,
        matcher,
        effective_from_ns,
        prices,
        request_fee: file.request_fee,
    })
}

fn build(file: PriceFile) -> Result<Price, PriceError> {
    let needs = |what: &str, present: bool| {
        if present {
            Ok(())
        } else {
            Err(PriceError::new("kind", format!("this kind needs {what}")))
        }
    };
    let price = match file.kind {
        Kind::PerUnit => {
            needs("per_million", file.per_million.is_some())?;
            Price::PerUnit {
                per_million: file.per_million.expect("checked"),
                free_tokens: file.free_tokens,
            }
        }
        Kind::Graduated | Kind::Volume => {
            needs("tiers", !file.tiers.is_empty())?;
            let tiers = file
                .tiers
                .into_iter()
                .map(|t| Tier {
                    up_to: t.up_to,
                    per_million: t.per_million,
                    flat: t.flat.unwrap_or_default(),
                })
                .collect();
            if file.kind == Kind::Graduated {
                Price::Graduated {
                    tiers,
                    free_tokens: file.free_tokens,
                }
            } else {
                Price::Volume {
                    tiers,
                    free_tokens: file.free_tokens,
                }
            }
        }
        Kind::Package => {
            needs(
                "package_tokens and package_price",
                file.package_tokens.is_some() && file.package_price.is_some(),
            )?;
            Price::Package {
                package_tokens: file.package_tokens.expect("checked"),
                package_price: file.package_price.expect("checked"),
                free_tokens: file.free_tokens,
            }
        }
    };
    price.validate()?;
    Ok(price)
}

/// A model glob as an anchored regex.
fn glob(pattern: &str) -> Result<regex::Regex, String> {
    if pattern.is_empty() {
        return Err("must not be empty (use \"*\" for every model)".into());
    }
    let mut re = String::from("^");
    for c in pattern.chars() {
        match c {
            '*' => re.push_str(".*"),
            '?' => re.push('.'),
            c => re.push_str(&regex::escape(&c.to_string())),
        }
    }
    re.push('$');
    regex::Regex::new(&re).map_err(|e| e.to_string())
}

#[cfg(test)]
#[path = "book_tests.rs"]
mod tests;
