//! Quotas end to end: a hard quota denies through Envoy's ext_authz (a client generated from
//! Envoy's protos) and the HTTP admission check once the budget is spent, other accounts are
//! still admitted, and a soft quota fires its webhook exactly once.

mod support;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use support::{curl, now_ns, post_usage, python, wait_for, Collector};

/// Posts usage of `user` now (OTLP/JSON).
fn usage(collector: &Collector, id: &str, user: &str, input: u64, output: u64) {
    let attributes = [("tokenmeter.request.user", user)];
    post_usage(collector, id, now_ns(), &attributes, input, Some(output));
}

fn ext_authz(python: &Path, collector: &Collector, user: &str) -> Value {
    // Envoy's protos live apart from the virtualenv (see xtask/src/python.rs).
    let protos = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/pyenv-xds");
    let out = Command::new(python)
        .env("PYTHONPATH", protos)
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/ext_authz_check.py"))
        .args([
            "--target",
            collector.url("grpc").trim_start_matches("http://"),
        ])
        .args(["--header", &format!("x-tokenmeter-user={user}")])
        .output()
        .expect("run the ext_authz client");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON")
}

#[test]
fn a_spent_hard_quota_denies_and_a_soft_quota_alerts_once() {
    let Some(python) = python("a_spent_hard_quota_denies_and_a_soft_quota_alerts_once") else {
        return;
    };
    let (port, captured) = support::capture_server();
    let alerts = support::bodies(&captured);
    let dir = tempfile::tempdir().unwrap();
    let quotas = dir.path().join("quotas.toml");
    std::fs::write(
        &quotas,
        format!(
            "[[quotas]]\naccount = \"user:carol\"\nperiod = \"day\"\ntokens = 1000\nmode = \"hard\"\n\n\
             [[quotas]]\naccount = \"team:search\"\nperiod = \"month\"\ntokens = 500\nmode = \"soft\"\n\
             webhook = \"http://127.0.0.1:{port}/hook\"\n"
        ),
    )
    .unwrap();
    let collector = Collector::start_with(
        None,
        &format!(
            "quotas = {:?}\n[admission]\nrefresh_ms = 100\n",
            quotas.display().to_string()
        ),
        "",
    );

    let allowed = ext_authz(&python, &collector, "carol");
    assert_eq!(allowed["code"], 0, "{allowed}");
    assert_eq!(
        allowed["headers"]["x-tokenmeter-account"],
        "globex/research/carol"
    );

    // carol spends her day's budget.
    usage(&collector, "q-1", "carol", 700, 100);
    usage(&collector, "q-2", "carol", 150, 100);
    let denied = wait_for("the hard quota to deny", Duration::from_secs(20), || {
        let answer = ext_authz(&python, &collector, "carol");
        (answer["code"] == 7).then_some(answer)
    });
    assert_eq!(denied["http_status"], 429, "{denied}");
    assert!(
        denied["body"].as_str().unwrap().contains("user:carol"),
        "{denied}"
    );
    // The HTTP admission check agrees; another account is still admitted.
    let admission = format!("{}/v1/admission", collector.url("api"));
    let (code, body) = curl(&[
        "-X",
        "POST",
        &admission,
        "-H",
        "content-type: application/json",
        "--data-binary",
        r#"{"headers": {"x-tokenmeter-user": "carol"}}"#,
    ]);
    assert_eq!(code, 429, "{body}");
    assert_eq!(ext_authz(&python, &collector, "alice")["code"], 0);
    let (code, _) = curl(&[
        "-X",
        "POST",
        &admission,
        "-H",
        "content-type: application/json",
        "--data-binary",
        r#"{"headers": {"x-tokenmeter-user": "alice"}}"#,
    ]);
    assert_eq!(code, 200);

    // alice's team crosses its soft quota: one webhook, however often usage is read back.
    usage(&collector, "q-3", "alice", 400, 200);
    wait_for("the soft quota's webhook", Duration::from_secs(20), || {
        (!alerts().is_empty()).then_some(())
    });
    usage(&collector, "q-4", "alice", 10, 10);
    std::thread::sleep(Duration::from_millis(600));
    let alerts = alerts();
    let soft: Vec<_> = alerts
        .iter()
        .filter(|a| a["account"] == "team:search")
        .collect();
    assert_eq!(soft.len(), 1, "{alerts:?}");
    assert_eq!(soft[0]["mode"], "soft");
    assert_eq!(soft[0]["used_tokens"], 600);
    assert!(collector.metric("tokenmeter_collector_admission_denied_total") >= 2);
}
