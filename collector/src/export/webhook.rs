//! A generic webhook: the bill as JSON, signed so the receiver can check it came from here
//! and was not replayed: `x-tokenmeter-timestamp: <unix seconds>` and
//! `x-tokenmeter-signature: sha256=<hex HMAC-SHA256 of "<timestamp>.<body>">`.

use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::{post, ExportError};
use crate::bill::Bill;

/// The signature of a body sent at `timestamp`.
pub fn signature(secret: &str, timestamp: i64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

pub fn send(url: &str, secret: &str, bill: &Bill) -> Result<String, ExportError> {
    let body = serde_json::to_vec(bill).expect("bills serialise");
    let timestamp = chrono::Utc::now().timestamp();
    post(
        "webhook",
        url,
        &[
            ("x-tokenmeter-timestamp", timestamp.to_string()),
            (
                "x-tokenmeter-signature",
                signature(secret, timestamp, &body),
            ),
        ],
        "application/json",
        &body,
    )?;
    Ok(format!("the {} bill to the webhook", bill.period))
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_signature_is_hmac_sha256_over_timestamp_and_body() {
        // Computed independently: printf '1700000000.{}' | openssl dgst -sha256 -hmac s3cret
        assert_eq!(
            super::signature("s3cret", 1_700_000_000, b"{}"),
            "sha256=97926816e98fbb41ccb1673225ff29a2f35369099990e1b1561651e7bd097ebf"
        );
    }
}
