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

fn store() -> (tempfile::TempDir, SqliteStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("usage.db")).unwrap();
    (dir, store)
}

#[test]
fn a_resent_batch_changes_nothing() {
    let (_dir, mut store) = store();
    let batch = vec![
        event("a", Side::Server, at(3, 1), 10, 5),
        event("b", Side::Server, at(3, 2), 20, 7),
    ];
    let first = store.ingest(&batch, at(3, 3)).unwrap();
    assert_eq!((first.inserted, first.duplicates), (2, 0));
    let again = store.ingest(&batch, at(3, 3)).unwrap();
    assert_eq!((again.inserted, again.duplicates), (0, 2));
    let rows = store.usage("2026-03", SidePolicy::Server).unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].requests, 2);
    assert_eq!(rows[0].quantities, [30, 0, 0, 12, 0]);
}

#[test]
fn the_client_side_of_a_metered_server_is_not_billed_twice() {
    let (_dir, mut store) = store();
    let t = at(3, 5);
    store
        .ingest(
            &[
                // One call seen on both ends (the client starts 3 ms earlier)...
                event("c1", Side::Client, t - 3_000_000, 10, 5),
                event("s1", Side::Server, t, 10, 5),
                // ... and one to a server that is not metered.
                event("c2", Side::Client, t, 99, 9),
            ],
            t,
        )
        .unwrap();
    let billed = |policy| -> (u64, [u64; 5]) {
        let rows = store.usage("2026-03", policy).unwrap();
        let mut q = [0; 5];
        for r in &rows {
            for (a, b) in q.iter_mut().zip(r.quantities) {
                *a += b;
            }
        }
        (rows.iter().map(|r| r.requests).sum(), q)
    };
    assert_eq!(billed(SidePolicy::PreferServer), (2, [109, 0, 0, 14, 0]));
    assert_eq!(billed(SidePolicy::Server), (1, [10, 0, 0, 5, 0]));
    assert_eq!(billed(SidePolicy::Client), (2, [109, 0, 0, 14, 0]));
}

#[test]
fn a_late_call_for_a_finalised_period_becomes_an_adjustment_of_the_next() {
    let (_dir, mut store) = store();
    store
        .ingest(&[event("a", Side::Server, at(3, 1), 10, 5)], at(3, 2))
        .unwrap();
    store.finalize("2026-03", at(4, 2)).unwrap();
    let outcome = store
        .ingest(&[event("late", Side::Server, at(3, 30), 1, 1)], at(4, 3))
        .unwrap();
    assert_eq!(outcome.adjustments, 1);
    let march = store.usage("2026-03", SidePolicy::Server).unwrap();
    assert_eq!(march[0].requests, 1, "a finalised bill does not change");
    let april = store.usage("2026-04", SidePolicy::Server).unwrap();
    assert_eq!((april[0].requests, april[0].adjustments), (1, 1));
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
    let store = SqliteStore::open(&path).unwrap();
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
