//! Price kinds and their exact application to a period's quantity. Prices are per million
//! tokens; amounts are decimals, rounded once per bill line to the currency's smallest unit
//! (half away from zero), never per token.

use rust_decimal::{Decimal, RoundingStrategy};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tier {
    /// Last token of the tier (inclusive); `None` for the open-ended last tier.
    pub up_to: Option<u64>,
    pub per_million: Decimal,
    /// A flat amount charged once when usage reaches the tier.
    pub flat: Decimal,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Price {
    /// Every token at one rate.
    PerUnit {
        per_million: Decimal,
        free_tokens: u64,
    },
    /// Each tier's tokens at that tier's rate (like income tax brackets).
    Graduated { tiers: Vec<Tier>, free_tokens: u64 },
    /// All tokens at the rate of the tier the total falls in.
    Volume { tiers: Vec<Tier>, free_tokens: u64 },
    /// Whole packages of `package_tokens`, each at `package_price`; a started package counts.
    Package {
        package_tokens: u64,
        package_price: Decimal,
        free_tokens: u64,
    },
}

/// A price that cannot be right, and which field says so.
#[derive(Debug, PartialEq, Eq)]
pub struct PriceError {
    pub field: String,
    pub reason: String,
}

impl PriceError {
    pub fn new(field: &str, reason: impl Into<String>) -> Self {
        Self {
            field: field.to_string(),
            reason: reason.into(),
        }
    }
}

const MILLION: Decimal = Decimal::from_parts(1_000_000, 0, 0, false, 0);

impl Price {
    pub fn validate(&self) -> Result<(), PriceError> {
        let negative = |field: &str, d: &Decimal| {
            if d.is_sign_negative() && !d.is_zero() {
                Err(PriceError::new(field, format!("{d} is negative")))
            } else {
                Ok(())
            }
        };
        match self {
            Self::PerUnit { per_million, .. } => negative("per_million", per_million),
            Self::Package {
                package_tokens,
                package_price,
                ..
            } => {
                if *package_tokens == 0 {
                    return Err(PriceError::new("package_tokens", "must be above 0"));
                }
                negative("package_price", package_price)
            }
            Self::Graduated { tiers, .. } | Self::Volume { tiers, .. } => {
                let mut previous: Option<u64> = None;
                for (i, tier) in tiers.iter().enumerate() {
                    negative(&format!("tiers[{i}].per_million"), &tier.per_million)?;
                    negative(&format!("tiers[{i}].flat"), &tier.flat)?;
                    let last = i + 1 == tiers.len();
                    match (tier.up_to, last) {
                        (None, true) => {}
                        (None, false) => {
                            return Err(PriceError::new(
                                &format!("tiers[{i}].up_to"),
                                "only the last tier may be open-ended",
                            ))
                        }
                        (Some(_), true) => {
                            return Err(PriceError::new(
                                &format!("tiers[{i}].up_to"),
                                "the last tier must be open-ended (no up_to), or usage beyond it has no price",
                            ))
                        }
                        (Some(up_to), false) => {
                            if previous.is_some_and(|p| up_to <= p) || up_to == 0 {
                                return Err(PriceError::new(
                                    &format!("tiers[{i}].up_to"),
                                    format!(
                                        "{up_to} overlaps the tier before (up_to must increase)"
                                    ),
                                ));
                            }
                            previous = Some(up_to);
                        }
                    }
                }
                Ok(())
            }
        }
    }

    /// The amount for `quantity` tokens in one period, unrounded.
    pub fn amount(&self, quantity: u64) -> Decimal {
        let rate =
            |tokens: u64, per_million: Decimal| Decimal::from(tokens) * per_million / MILLION;
        match self {
            Self::PerUnit {
                per_million,
                free_tokens,
            } => rate(quantity.saturating_sub(*free_tokens), *per_million),
            Self::Graduated { tiers, free_tokens } => {
                let billable = quantity.saturating_sub(*free_tokens);
                let mut amount = Decimal::ZERO;
                // The tokens below `floor` were charged by the tiers before.
                let mut floor = 0u64;
                for tier in tiers {
                    if billable <= floor {
                        break;
                    }
                    let top = tier.up_to.map_or(billable, |up_to| up_to.min(billable));
                    amount += tier.flat + rate(top - floor, tier.per_million);
                    match tier.up_to {
                        Some(up_to) => floor = up_to,
                        None => break,
                    }
                }
                amount
            }
            Self::Volume { tiers, free_tokens } => {
                let billable = quantity.saturating_sub(*free_tokens);
                if billable == 0 {
                    return Decimal::ZERO;
                }
                let tier = tiers
                    .iter()
                    .find(|t| t.up_to.is_none_or(|up_to| billable <= up_to))
                    .expect("validated: the last tier is open-ended");
                tier.flat + rate(billable, tier.per_million)
            }
            Self::Package {
                package_tokens,
                package_price,
                free_tokens,
            } => {
                let billable = quantity.saturating_sub(*free_tokens);
                Decimal::from(billable.div_ceil(*package_tokens)) * *package_price
            }
        }
    }
}

/// Rounds to the currency's smallest unit, half away from zero.
pub fn round_money(amount: Decimal, minor_units: u32) -> Decimal {
    amount.round_dp_with_strategy(minor_units, RoundingStrategy::MidpointAwayFromZero)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Decimal {
        s.parse().unwrap()
    }

    fn tiers() -> Vec<Tier> {
        vec![
            Tier {
                up_to: Some(1_000_000),
                per_million: d("10"),
                flat: Decimal::ZERO,
            },
            Tier {
                up_to: Some(5_000_000),
                per_million: d("8"),
                flat: Decimal::ZERO,
            },
            Tier {
                up_to: None,
                per_million: d("5"),
                flat: Decimal::ZERO,
            },
        ]
    }

    #[test]
    fn per_unit_with_a_free_allowance() {
        let price = Price::PerUnit {
            per_million: d("2.50"),
            free_tokens: 1000,
        };
        assert_eq!(price.amount(1000), Decimal::ZERO);
        assert_eq!(price.amount(1_001_000), d("2.5"));
        assert_eq!(price.amount(1001), d("0.0000025"));
    }

    #[test]
    fn graduated_tiers_charge_each_band_at_its_rate() {
        let price = Price::Graduated {
            tiers: tiers(),
            free_tokens: 0,
        };
        assert_eq!(price.amount(0), Decimal::ZERO);
        assert_eq!(price.amount(1_000_000), d("10"));
        // 1M at 10 + 4M at 8 + 1M at 5.
        assert_eq!(price.amount(6_000_000), d("47"));
        assert_eq!(price.amount(1_000_001), d("10.000008"));
    }

    #[test]
    fn volume_tiers_charge_everything_at_the_reached_rate() {
        let price = Price::Volume {
            tiers: tiers(),
            free_tokens: 0,
        };
        assert_eq!(price.amount(1_000_000), d("10"));
        assert_eq!(price.amount(1_000_001), d("8.000008"));
        assert_eq!(price.amount(6_000_000), d("30"));
    }

    #[test]
    fn packages_round_up() {
        let price = Price::Package {
            package_tokens: 1_000_000,
            package_price: d("5"),
            free_tokens: 0,
        };
        assert_eq!(price.amount(1), d("5"));
        assert_eq!(price.amount(2_000_000), d("10"));
        assert_eq!(price.amount(2_000_001), d("15"));
    }

    #[test]
    fn flat_tier_fees_are_charged_once_reached() {
        let mut t = tiers();
        t[1].flat = d("100");
        let graduated = Price::Graduated {
            tiers: t.clone(),
            free_tokens: 0,
        };
        assert_eq!(graduated.amount(1_000_000), d("10"));
        assert_eq!(graduated.amount(2_000_000), d("118"));
        let volume = Price::Volume {
            tiers: t,
            free_tokens: 0,
        };
        assert_eq!(volume.amount(2_000_000), d("116"));
    }

    #[test]
    fn bad_tiers_are_refused() {
        let mut overlapping = tiers();
        overlapping[1].up_to = Some(1_000_000);
        let err = Price::Graduated {
            tiers: overlapping,
            free_tokens: 0,
        }
        .validate()
        .unwrap_err();
        assert_eq!(err.field, "tiers[1].up_to");
        let mut closed = tiers();
        closed[2].up_to = Some(9_000_000);
        assert!(Price::Volume {
            tiers: closed,
            free_tokens: 0
        }
        .validate()
        .is_err());
        let negative = Price::PerUnit {
            per_million: d("-1"),
            free_tokens: 0,
        };
        assert_eq!(negative.validate().unwrap_err().field, "per_million");
    }

    #[test]
    fn rounding_is_half_away_from_zero_to_the_minor_unit() {
        assert_eq!(round_money(d("0.125"), 2), d("0.13"));
        assert_eq!(round_money(d("0.124999"), 2), d("0.12"));
        assert_eq!(round_money(d("7.5"), 0), d("8"));
    }
}
