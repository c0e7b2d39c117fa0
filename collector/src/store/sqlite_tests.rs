use super::*;
use crate::usage::{Side, Tokens};

fn at(month: u32, day: u32) -> i64 {
    chrono::NaiveDate::from_ymd_opt(2026, month, day)
        .unwrap()
        .and_hms_opt(12, 0, 0)
        .unwrap()
        .and_utc()
        .timestamp_nanos_opt()
        .unwrap()
}

fn event(id: &str, side: Side, time_ns: i64, input: u64, output: u64) -> RatedEvent {
    RatedEvent {
        event: UsageEvent {
            id: id.into(),
            time_ns,
            start_ns: Some(time_ns - 1_000_000_000),
            side,
            provider: "openai".into(),
            operation: "chat".into(),
            model: "m".into(),
            tokens: Tokens {
                input,
                output,
                ..Default::default()
            },
            attributes: Default::default(),
        },
        account: Account {
            org: "acme".into(),
            team: "search".into(),
            user: "alice".into(),
        },
        price_id: Some("global:m@always".into()),
    }
}

#[test]
fn reopening_keeps_the_data_and_the_schema() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("usage.db");
    {
        let mut store = SqliteStore::open(&path).unwrap();
        store
            .ingest(&[event("a", Side::Server, at(3, 1), 1, 1)], at(3, 1))
            .unwrap();
    }
    let mut store = SqliteStore::open(&path).unwrap();
    assert_eq!(store.count().unwrap(), 1);
}

#[test]
fn a_database_that_cannot_be_opened_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let err = SqliteStore::open(&dir.path().join("missing/usage.db"))
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("sqlite:") && err.contains("missing"), "{err}");
}
