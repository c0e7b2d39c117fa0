use super::*;

const EXAMPLE: &str = include_str!("../../examples/prices.toml");

fn invalid(text: &str) -> String {
    PriceBook::parse(text).unwrap_err().to_string()
}

#[test]
fn the_example_book_parses_completely() {
    let book = PriceBook::parse(EXAMPLE).unwrap();
    assert_eq!(book.currency, "USD");
    assert_eq!(book.minimum_charge, Some("1.00".parse().unwrap()));
    assert_eq!(book.entries.len(), 6);
    let acme = book.entries.last().unwrap();
    assert_eq!(acme.scope, Scope::Org("acme".into()));
    assert_eq!(acme.id, "org=acme:meta-llama/*@always");
    let gpt = &book.entries[0];
    assert!(gpt.matcher.is_match("gpt-4o-mini"));
    assert!(!gpt.matcher.is_match("xgpt-4o"));
    // Reasoning falls back to output, cache creation to input.
    assert_eq!(gpt.price("reasoning"), gpt.price("output"));
    assert_eq!(gpt.price("cache_creation_input"), gpt.price("input"));
    assert_ne!(gpt.price("cached_input"), gpt.price("input"));
}

#[test]
fn an_unknown_field_is_named_with_its_line() {
    let err =
        invalid("currency = \"USD\"\n[[prices]]\nmodel = \"x\"\ninput = { per_milion = \"1\" }\n");
    assert!(
        err.contains("line 4") && err.contains("per_milion"),
        "{err}"
    );
}

#[test]
fn a_float_amount_is_refused() {
    let err =
        invalid("currency = \"USD\"\n[[prices]]\nmodel = \"x\"\ninput = { per_million = 2.5 }\n");
    assert!(
        err.contains("floating-point") && err.contains("\"2.5\""),
        "{err}"
    );
}

#[test]
fn a_negative_price_names_line_and_field() {
    let err = invalid(
        "currency = \"USD\"\n\n[[prices]]\nmodel = \"x\"\noutput = { per_million = \"-1\" }\n",
    );
    assert!(err.contains("line 3"), "{err}");
    assert!(err.contains("prices[0].output.per_million"), "{err}");
}

#[test]
fn overlapping_tiers_name_the_tier() {
    let err = invalid(
        "currency = \"USD\"\n[[prices]]\nmodel = \"x\"\noutput = { kind = \"graduated\", tiers = [\n  { up_to = 100, per_million = \"1\" },\n  { up_to = 50, per_million = \"1\" },\n  { per_million = \"1\" } ] }\n",
    );
    assert!(
        err.contains("prices[0].output.tiers[1].up_to") && err.contains("overlaps"),
        "{err}"
    );
}

#[test]
fn other_mistakes_are_named() {
    assert!(invalid("currency = \"dollars\"").contains("ISO 4217"));
    assert!(invalid("currency = \"USD\"\n[[prices]]\nmodel = \"x\"\n").contains("no price"));
    assert!(invalid("currency = \"USD\"\n[[prices]]\nmodel = \"x\"\neffective_from = \"2026-13-01\"\ninput = { per_million = \"1\" }\n")
        .contains("effective_from"));
    assert!(invalid("currency = \"USD\"\n[[prices]]\nmodel = \"x\"\ninput = { kind = \"package\", package_tokens = 0, package_price = \"1\" }\n")
        .contains("package_tokens"));
    assert!(invalid("currency = \"USD\"\n[[prices]]\nmodel = \"x\"\ninput = { per_million = \"1\" }\n[[prices]]\nmodel = \"x\"\ninput = { per_million = \"2\" }\n")
        .contains("defined twice"));
    assert!(
        invalid("currency = \"USD\"\n[[overrides]]\norg = \"a\"\nteam = \"b\"\nprices = []\n")
            .contains("exactly one")
    );
}

#[test]
fn gpu_time_is_priced_per_second_and_tokens_are_not() {
    let book = PriceBook::parse(
        "currency = \"USD\"\n[[prices]]\nmodel = \"NVIDIA H100*\"\ngpu_time = { per_second = \"0.0011\" }\n",
    )
    .unwrap();
    let price = book.entries[0].price("gpu_time").expect("a gpu_time price");
    // 3600 GPU-seconds, counted in µs.
    assert_eq!(price.amount(3_600_000_000).to_string(), "3.9600");
    let err =
        invalid("currency = \"USD\"\n[[prices]]\nmodel = \"x\"\ninput = { per_second = \"1\" }\n");
    assert!(err.contains("prices[0].input.per_second"), "{err}");
    let err = invalid("currency = \"USD\"\n[[prices]]\nmodel = \"x\"\ngpu_time = { per_second = \"1\", per_million = \"1\" }\n");
    assert!(err.contains("not both"), "{err}");
    let err =
        invalid("currency = \"USD\"\n[[prices]]\nmodel = \"x\"\ngpu_time = { per_second = 0.5 }\n");
    assert!(err.contains("floating-point"), "{err}");
}
