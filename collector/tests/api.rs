//! The REST API: each token reads its own account and what lies under it, nothing else.

mod support;

use serde_json::Value;
use support::{curl, post_usage, Collector, MARCH_10_NS};

const SEARCH: &str = "search-team-token-000000000001";
const ADS: &str = "ads-team-token-000000000000002";
const ACME: &str = "acme-org-token-000000000000003";
const ADMIN: &str = "operator-token-00000000000004";

fn get(collector: &Collector, token: Option<&str>, path: &str) -> (u16, Value) {
    let url = format!("{}{path}", collector.url("api"));
    let auth = token.map(|t| format!("authorization: Bearer {t}"));
    let mut args = vec![url.as_str()];
    if let Some(auth) = &auth {
        args.extend(["-H", auth.as_str()]);
    }
    let (code, body) = curl(&args);
    (code, serde_json::from_str(&body).unwrap_or(Value::Null))
}

#[test]
fn a_team_token_reads_its_own_usage_and_bills_only() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("api-tokens.toml");
    std::fs::write(
        &tokens,
        format!(
            "[[tokens]]\ntoken = \"{SEARCH}\"\nscope = \"team:search\"\n\
             [[tokens]]\ntoken = \"{ADS}\"\nscope = \"team:ads\"\n\
             [[tokens]]\ntoken = \"{ACME}\"\nscope = \"org:acme\"\n\
             [[tokens]]\ntoken = \"{ADMIN}\"\nscope = \"admin\"\n"
        ),
    )
    .unwrap();
    let collector = Collector::start_with(
        None,
        "",
        &format!("tokens_file = {:?}\n", tokens.display().to_string()),
    );
    // 2026-03-10: alice (acme/search) and an ads-agents pod (acme/ads), carol (globex).
    let t = MARCH_10_NS;
    let user = "tokenmeter.request.user";
    post_usage(&collector, "api-1", t, &[(user, "alice")], 1000, None);
    post_usage(
        &collector,
        "api-2",
        t,
        &[("k8s.namespace.name", "ads-agents")],
        2000,
        None,
    );
    post_usage(&collector, "api-3", t, &[(user, "carol")], 4000, None);

    let teams = |body: &Value| -> Vec<String> {
        body["usage"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["team"].as_str().unwrap().to_string())
            .collect()
    };
    let (code, usage) = get(&collector, Some(SEARCH), "/v1/usage?period=2026-03");
    assert_eq!(code, 200);
    assert_eq!(teams(&usage), ["search"]);
    let (_, usage) = get(&collector, Some(ADS), "/v1/usage?period=2026-03");
    assert_eq!(teams(&usage), ["ads"]);
    let (_, usage) = get(&collector, Some(ACME), "/v1/usage?period=2026-03");
    assert_eq!(teams(&usage), ["ads", "search"]);
    let (_, usage) = get(&collector, Some(ADMIN), "/v1/usage?period=2026-03");
    assert_eq!(teams(&usage).len(), 3);

    // Another team's usage or bill: refused.
    let (code, body) = get(
        &collector,
        Some(ADS),
        "/v1/usage?period=2026-03&account=team:search",
    );
    assert_eq!(code, 403, "{body}");
    let (code, _) = get(
        &collector,
        Some(ADS),
        "/v1/bills?period=2026-03&account=team:search",
    );
    assert_eq!(code, 403);
    let (code, _) = get(
        &collector,
        Some(SEARCH),
        "/v1/bills?period=2026-03&account=org:acme",
    );
    assert_eq!(code, 403, "a team cannot read its enterprise's bill");
    // The organisation may narrow to a team of its own.
    let (code, usage) = get(
        &collector,
        Some(ACME),
        "/v1/usage?period=2026-03&account=team:search",
    );
    assert_eq!((code, teams(&usage)), (200, vec!["search".to_string()]));

    // Bills: a team sees its share, the enterprise its bill, nothing of globex.
    let (_, bill) = get(&collector, Some(SEARCH), "/v1/bills?period=2026-03");
    let shares = bill["shares"].as_array().unwrap();
    assert_eq!(shares.len(), 1);
    assert_eq!(shares[0]["account"], "search");
    assert_eq!(shares[0]["tokens"], 1000);
    let (_, bill) = get(&collector, Some(ACME), "/v1/bills?period=2026-03");
    let bills = bill["bills"].as_array().unwrap();
    assert_eq!(bills.len(), 1);
    assert_eq!(bills[0]["org"], "acme");
    assert_eq!(bills[0]["tokens"], 3000);

    let (_, accounts) = get(&collector, Some(SEARCH), "/v1/accounts");
    let users: Vec<&str> = accounts["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["user"].as_str().unwrap())
        .collect();
    assert_eq!(users, ["alice", "bob"]);

    // No token, a wrong token, a malformed account.
    assert_eq!(get(&collector, None, "/v1/usage").0, 401);
    assert_eq!(
        get(&collector, Some("not-a-token-at-all-000"), "/v1/bills").0,
        401
    );
    assert_eq!(
        get(&collector, Some(ADMIN), "/v1/usage?account=everyone").0,
        400
    );
    assert_eq!(
        get(&collector, Some(ADMIN), "/v1/usage?period=March").0,
        400
    );
}
