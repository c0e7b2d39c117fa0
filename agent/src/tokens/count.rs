//! A token count and where it comes from.

use serde::{Deserialize, Serialize};

/// Where a token count comes from, from most to least trustworthy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CountSource {
    /// The server reported it (`usage` in the response).
    Reported,
    /// Computed here with the model's tokenizer.
    Computed,
    /// Estimated from the text's length: no tokenizer was available for the model.
    Estimated,
}

impl CountSource {
    /// The lowercase name, as serialized (`reported`, `computed`, `estimated`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Reported => "reported",
            Self::Computed => "computed",
            Self::Estimated => "estimated",
        }
    }
}

/// A number of tokens, its source and the tokenizer that produced it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenCount {
    /// The number of tokens.
    pub tokens: u64,
    /// Where the number comes from.
    pub source: CountSource,
    /// What produced it: `tiktoken:o200k_base`, `hf:llama3`, `estimate:chars/4`, or
    /// [`TokenCount::REPORTED_BY`] for a reported count.
    pub tokenizer: String,
}

impl TokenCount {
    /// The `tokenizer` of a reported count.
    pub const REPORTED_BY: &'static str = "server";

    /// A count the server reported.
    pub fn reported(tokens: u64) -> Self {
        Self {
            tokens,
            source: CountSource::Reported,
            tokenizer: Self::REPORTED_BY.to_owned(),
        }
    }

    pub(crate) fn computed(tokens: u64, tokenizer: &str) -> Self {
        Self {
            tokens,
            source: CountSource::Computed,
            tokenizer: tokenizer.to_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_serializes_lowercase() {
        for source in [
            CountSource::Reported,
            CountSource::Computed,
            CountSource::Estimated,
        ] {
            let json = serde_json::to_string(&source).expect("serializes");
            assert_eq!(json, format!("\"{}\"", source.as_str()));
        }
        let count = TokenCount::reported(7);
        let json = serde_json::to_value(&count).expect("serializes");
        assert_eq!(
            json,
            serde_json::json!({"tokens": 7, "source": "reported", "tokenizer": "server"})
        );
    }
}
