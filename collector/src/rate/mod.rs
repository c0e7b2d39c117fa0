//! Rating: which price applies to a call. At ingest each call is given the price-book entry
//! in effect at its time for its account and model (the team's override first, then the
//! enterprise's, then the global prices; among those, the matching entry with the latest
//! `effective_from` not after the call). The amount itself is computed per bill line, since
//! tiers depend on the period's total. `rerate` reassigns entries after a price correction.

pub mod book;
pub mod price;

pub use book::{BookError, PriceBook, PriceEntry, Scope};
pub use price::{round_money, Price};

/// The entry that prices a call, if any.
pub fn resolve<'a>(
    book: &'a PriceBook,
    org: &str,
    team: &str,
    model: &str,
    time_ns: i64,
) -> Option<&'a PriceEntry> {
    let scopes = [
        Scope::Team(team.to_string()),
        Scope::Org(org.to_string()),
        Scope::Global,
    ];
    scopes.iter().find_map(|scope| {
        book.entries
            .iter()
            .filter(|e| &e.scope == scope)
            .filter(|e| e.effective_from_ns <= time_ns && e.matcher.is_match(model))
            // The latest effective date wins; among equals, the first in the file.
            .fold(None, |best: Option<&PriceEntry>, e| match best {
                Some(b) if b.effective_from_ns >= e.effective_from_ns => Some(b),
                _ => Some(e),
            })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOOK: &str = r#"
currency = "EUR"
[[prices]]
model = "m*"
input = { per_million = "1" }
[[prices]]
model = "m*"
effective_from = "2026-06-01"
input = { per_million = "2" }
[[overrides]]
org = "acme"
[[overrides.prices]]
model = "m1"
input = { per_million = "0.5" }
[[overrides]]
team = "search"
[[overrides.prices]]
model = "m*"
input = { per_million = "0.1" }
"#;

    fn at(date: &str) -> i64 {
        chrono::NaiveDate::parse_from_str(date, "%Y-%m-%d")
            .unwrap()
            .and_hms_opt(12, 0, 0)
            .unwrap()
            .and_utc()
            .timestamp_nanos_opt()
            .unwrap()
    }

    #[test]
    fn the_price_in_effect_at_the_calls_time_and_scope_applies() {
        let book = PriceBook::parse(BOOK).unwrap();
        let id = |org, team, model, date| {
            resolve(&book, org, team, model, at(date)).map(|e| e.id.as_str())
        };
        assert_eq!(id("x", "t", "m2", "2026-05-31"), Some("global:m*@always"));
        assert_eq!(
            id("x", "t", "m2", "2026-06-01"),
            Some("global:m*@2026-06-01")
        );
        assert_eq!(
            id("acme", "t", "m1", "2026-07-01"),
            Some("org=acme:m1@always")
        );
        assert_eq!(
            id("acme", "t", "m2", "2026-07-01"),
            Some("global:m*@2026-06-01")
        );
        assert_eq!(
            id("acme", "search", "m1", "2026-07-01"),
            Some("team=search:m*@always")
        );
        assert_eq!(id("x", "t", "other", "2026-07-01"), None);
    }
}
