//! What the collector's integration tests share: the databases a story runs on.

#![allow(dead_code)]

/// A fresh, empty PostgreSQL database on the test server (`TOKENMETER_TEST_POSTGRES_URL`, set
/// by `cargo xtask test`), or `None` with a message when there is none (an error under
/// CI=true: there must be one).
pub fn postgres_database(test: &str) -> Option<String> {
    let Ok(admin) = std::env::var("TOKENMETER_TEST_POSTGRES_URL") else {
        let why = "no TOKENMETER_TEST_POSTGRES_URL (`cargo xtask test` starts a PostgreSQL)";
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "{test}: {why}"
        );
        eprintln!("SKIPPED the PostgreSQL part of {test}: {why}");
        return None;
    };
    let name = format!(
        "tm_{}_{}",
        test.chars()
            .filter(char::is_ascii_alphanumeric)
            .take(20)
            .collect::<String>(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    )
    .to_lowercase();
    let mut client =
        postgres::Client::connect(&admin, postgres::NoTls).expect("connect to the test PostgreSQL");
    client
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .expect("create a test database");
    let base = admin.rsplit_once('/').expect("URL with a database").0;
    Some(format!("{base}/{name}"))
}
