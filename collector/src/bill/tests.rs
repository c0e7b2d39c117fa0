use super::*;
use crate::rate::PriceBook;

const BOOK: &str = r#"
currency = "USD"
minimum_charge = "5.00"
[[prices]]
model = "m"
input = { kind = "graduated", tiers = [ { up_to = 1000, per_million = "1000" }, { per_million = "500" } ] }
output = { per_million = "3000" }
request_fee = "0.01"
"#;

fn row(org: &str, team: &str, user: &str, input: u64, output: u64, requests: u64) -> UsageRow {
    UsageRow {
        account: Account {
            org: org.into(),
            team: team.into(),
            user: user.into(),
        },
        price_id: Some("global:m@always".into()),
        model: "m".into(),
        requests,
        quantities: [input, 0, 0, output, 0],
        gpu_time_us: 0,
        adjustments: 0,
    }
}

fn d(s: &str) -> Decimal {
    s.parse().unwrap()
}

#[test]
fn tiers_apply_to_the_enterprise_total_and_shares_add_up() {
    let book = PriceBook::parse(BOOK).unwrap();
    let rows = vec![
        row("acme", "search", "alice", 600, 100, 3),
        row("acme", "search", "bob", 600, 0, 1),
        row("acme", "ads", "unassigned", 300, 233, 2),
    ];
    let bill = compute("2026-03", false, &rows, &book, &Accounts::default());
    let acme = &bill.orgs[0];
    let line = |item: &str| acme.lines.iter().find(|l| l.item == item).unwrap();
    // 1500 input tokens: 1000 at 1000/M + 500 at 500/M.
    assert_eq!(line("input").amount, d("1.25"));
    // 333 output tokens at 3000/M = 0.999 -> 1.00.
    assert_eq!(line("output").amount, d("1.00"));
    assert_eq!(line("requests").amount, d("0.06"));
    assert_eq!(acme.subtotal, d("2.31"));
    assert_eq!(acme.minimum_charge_adjustment, d("2.69"));
    assert_eq!(acme.total, d("5.00"));
    let teams: Decimal = acme.teams.iter().map(|t| t.amount).sum();
    let users: Decimal = acme.users.iter().map(|u| u.amount).sum();
    assert_eq!(teams, acme.subtotal);
    assert_eq!(users, acme.subtotal);
    assert_eq!(acme.requests, 6);
}

#[test]
fn unpriced_usage_is_listed_not_dropped() {
    let book = PriceBook::parse(BOOK).unwrap();
    let mut unpriced = row("globex", "t", "u", 10, 10, 1);
    unpriced.price_id = None;
    unpriced.model = "mystery".into();
    let bill = compute("2026-03", true, &[unpriced], &book, &Accounts::default());
    assert_eq!(bill.status, "finalized");
    let lines = &bill.orgs[0].lines;
    assert_eq!(lines.len(), 2);
    assert!(lines
        .iter()
        .all(|l| l.price_id.is_none() && l.amount.is_zero()));
    assert!(render::table(&bill).contains("(unpriced)"));
    assert!(render::csv(&bill).contains("globex,mystery,unpriced,input,10,0,USD"));
}
