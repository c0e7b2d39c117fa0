//! The store's story, on SQLite always and on PostgreSQL when the tests have one: resent
//! batches change nothing, a call seen on both ends is billed once, a late call becomes an
//! adjustment, rerating follows a corrected price book.

mod support;

use tokenmeter_collector::{
    accounts::Account,
    store::{self, RatedEvent, SidePolicy, Store},
    usage::{Side, Tokens, UsageEvent},
};

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
            gpu_time_us: 0,
            attributes: [("tokenmeter.request.user".to_string(), "alice".to_string())].into(),
        },
        account: Account {
            org: "acme".into(),
            team: "search".into(),
            user: "alice".into(),
        },
        price_id: Some("global:m@always".into()),
    }
}

/// (requests, input, output) billed in a period.
fn billed(store: &mut dyn Store, period: &str, policy: SidePolicy) -> (u64, u64, u64) {
    let rows = store.usage(period, policy).unwrap();
    rows.iter().fold((0, 0, 0), |(r, i, o), row| {
        (
            r + row.requests,
            i + row.quantities[0],
            o + row.quantities[3],
        )
    })
}

fn story(store: &mut dyn Store) {
    // Resent batches change nothing.
    let batch = vec![
        event("a", Side::Server, at(3, 1), 10, 5),
        event("b", Side::Server, at(3, 2), 20, 7),
    ];
    let first = store.ingest(&batch, at(3, 3)).unwrap();
    assert_eq!((first.inserted, first.duplicates), (2, 0));
    let again = store.ingest(&batch, at(3, 3)).unwrap();
    assert_eq!((again.inserted, again.duplicates), (0, 2));
    assert_eq!(billed(store, "2026-03", SidePolicy::Server), (2, 30, 12));

    // One call seen on both ends, and one to a server that is not metered.
    let t = at(3, 5);
    store
        .ingest(
            &[
                event("c1", Side::Client, t - 3_000_000, 11, 6),
                event("s1", Side::Server, t, 11, 6),
                event("c2", Side::Client, t, 99, 9),
            ],
            t,
        )
        .unwrap();
    assert_eq!(
        billed(store, "2026-03", SidePolicy::PreferServer),
        (4, 140, 27)
    );
    assert_eq!(billed(store, "2026-03", SidePolicy::Client), (2, 110, 15));

    // A late call for a finalised period lands in the next one as an adjustment.
    store.finalize("2026-03", at(4, 2)).unwrap();
    assert!(store.is_finalized("2026-03").unwrap());
    let late = store
        .ingest(&[event("late", Side::Server, at(3, 30), 1, 1)], at(4, 3))
        .unwrap();
    assert_eq!(late.adjustments, 1);
    assert_eq!(billed(store, "2026-03", SidePolicy::Server), (3, 41, 18));
    let april = store.usage("2026-04", SidePolicy::Server).unwrap();
    assert_eq!((april[0].requests, april[0].adjustments), (1, 1));

    // Rerating a draft period assigns what the corrected rules say.
    let changed = store
        .rerate("2026-04", &|e| {
            assert_eq!(e.attributes["tokenmeter.request.user"], "alice");
            (
                Account {
                    org: "globex".into(),
                    team: "research".into(),
                    user: "alice".into(),
                },
                None,
            )
        })
        .unwrap();
    assert_eq!(changed, 1);
    let april = store.usage("2026-04", SidePolicy::Server).unwrap();
    assert_eq!(
        (april[0].account.org.as_str(), april[0].price_id.as_deref()),
        ("globex", None)
    );
    assert_eq!(store.count().unwrap(), 6);
}

#[test]
fn the_store_story_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let mut store =
        store::open(&format!("sqlite:{}", dir.path().join("usage.db").display())).unwrap();
    story(store.as_mut());
}

#[test]
fn reopening_sqlite_keeps_the_data_and_the_schema() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite:{}", dir.path().join("usage.db").display());
    {
        let mut store = store::open(&url).unwrap();
        store
            .ingest(&[event("a", Side::Server, at(3, 1), 1, 1)], at(3, 1))
            .unwrap();
    }
    let mut store = store::open(&url).unwrap();
    assert_eq!(store.count().unwrap(), 1);
}

#[test]
fn a_sqlite_file_that_cannot_be_opened_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite:{}", dir.path().join("missing/usage.db").display());
    let err = store::open(&url).err().unwrap().to_string();
    assert!(err.contains("sqlite:") && err.contains("missing"), "{err}");
}

#[test]
fn the_store_story_on_postgres() {
    let Some(url) = support::postgres_database("store_story") else {
        return;
    };
    let mut store = store::open(&url).unwrap();
    story(store.as_mut());
    // A second replica starting on the same database finds the schema in place.
    let mut other = store::open(&url).unwrap();
    assert_eq!(other.count().unwrap(), 6);
}

#[test]
fn an_unreachable_postgres_is_a_clear_error_without_the_password() {
    let err = store::open("postgres://meter:s3cret@127.0.0.1:1/usage")
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("postgres://meter:***@127.0.0.1:1/usage"),
        "{err}"
    );
    assert!(!err.contains("s3cret"), "{err}");
}

#[test]
fn a_dropped_database_connection_stores_each_batch_once() {
    let Some(url) = support::postgres_database("dropped") else {
        return;
    };
    let mut store = store::open(&url).unwrap();
    store
        .ingest(&[event("d1", Side::Server, at(3, 1), 1, 1)], at(3, 1))
        .unwrap();
    // The server drops every connection to the database (a restart, a failover).
    let admin = std::env::var("TOKENMETER_TEST_POSTGRES_URL").unwrap();
    let database = url.rsplit('/').next().unwrap().to_string();
    let mut client = postgres::Client::connect(&admin, postgres::NoTls).unwrap();
    let dropped = client
        .execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1",
            &[&database],
        )
        .unwrap();
    assert!(dropped >= 1);
    // A batch sent then fails as a whole with a clear error, or goes through a new
    // connection; its sender's retry stores it exactly once either way.
    let batch = [
        event("d2", Side::Server, at(3, 2), 2, 2),
        event("d3", Side::Server, at(3, 3), 3, 3),
    ];
    let mut attempts = 0;
    loop {
        attempts += 1;
        match store.ingest(&batch, at(3, 4)) {
            Ok(outcome) => {
                assert_eq!(outcome.inserted + outcome.duplicates, 2);
                break;
            }
            Err(e) => {
                assert!(e.to_string().contains("database"), "{e}");
                assert!(attempts < 3, "no reconnection: {e}");
            }
        }
    }
    assert_eq!(store.count().unwrap(), 3);
    assert_eq!(
        billed(store.as_mut(), "2026-03", SidePolicy::Server),
        (3, 6, 6)
    );
}
