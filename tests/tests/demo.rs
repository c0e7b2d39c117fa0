//! The README's main command, `cargo xtask demo`, run from a clean clone of the committed tree
//! (its own target directory: everything it needs must be in the repository and be set up by
//! the command itself). It must end with a bill whose token totals equal what the demo's LLM
//! server reported, checked here again from the files it leaves.

use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use tokenmeter_tests::{e2e_prelude, fixtures, wait};

#[test]
fn the_demo_from_a_clean_clone_ends_with_a_bill_matching_the_server() {
    let Some(_guard) =
        e2e_prelude("the_demo_from_a_clean_clone_ends_with_a_bill_matching_the_server")
    else {
        return;
    };
    let root = fixtures::workspace_root();
    let clone = tempfile::tempdir().expect("tempdir");
    let clone = clone.path().join("tokenmeter");
    wait::run(
        Command::new("git")
            .args(["clone", "--quiet", "--no-hardlinks"])
            .arg(&root)
            .arg(&clone),
        Duration::from_secs(120),
    )
    .assert_success("git clone");
    let demo = wait::run(
        Command::new("cargo")
            .args(["xtask", "demo"])
            .current_dir(&clone)
            .env_remove("CARGO_TARGET_DIR"),
        Duration::from_secs(2400),
    );
    demo.assert_success("cargo xtask demo (from a clean clone)");
    assert!(demo.stdout.contains("Bill for"), "{}", demo.stdout);

    let work = clone.join("target/demo");
    let bill: Value =
        serde_json::from_slice(&std::fs::read(work.join("bill.json")).expect("bill.json"))
            .expect("JSON");
    let billed: u64 = bill["orgs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["tokens"].as_u64().unwrap())
        .sum();
    let log = std::fs::read_to_string(work.join("server.log")).expect("the server's log");
    let reported: u64 = log
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let entry: Value = serde_json::from_str(l).unwrap();
            entry["prompt_tokens"].as_u64().unwrap() + entry["completion_tokens"].as_u64().unwrap()
        })
        .sum();
    assert!(reported > 0);
    assert_eq!(
        billed, reported,
        "the bill's tokens against the server's usage"
    );
    let orgs: Vec<&str> = bill["orgs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["org"].as_str().unwrap())
        .collect();
    assert_eq!(
        orgs,
        ["acme", "globex", "unassigned"],
        "two tenants and the visible unassigned account"
    );
    // The server's (simulated) GPU time, on acme's platform team.
    let acme = &bill["orgs"][0];
    assert!(acme["gpu_time_us"].as_u64() > Some(0), "{acme:#}");
    let platform = acme["teams"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["account"] == "platform")
        .expect("acme's platform team is billed");
    assert_ne!(platform["amount"], "0", "{platform:#}");
}
