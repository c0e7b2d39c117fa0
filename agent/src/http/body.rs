//! Message bodies: capped while they arrive, timed piece by piece (so a streamed response's
//! first and last token can be dated), and decoded from their content encoding at the end.
//!
//! Two caps apply: one per body (`http.max_body_bytes`), and one over the bodies of every
//! connection at once (`http.max_held_body_bytes`, the [`BodyBudget`]), so that thousands of
//! connections with large bodies in flight cannot take the node's memory.

use std::io::Read;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use tracing::warn;

use super::{Headers, HttpError};

/// How much of a body is kept.
#[derive(Clone, Debug)]
pub struct BodyLimits {
    /// Bytes kept per body, before and after content decoding; the rest is counted, not kept.
    pub max_bytes: usize,
    /// The bytes all bodies may hold together; `None`: no cap beyond the per-body one.
    pub budget: Option<BodyBudget>,
}

impl BodyLimits {
    /// A per-body cap only.
    pub const fn per_body(max_bytes: usize) -> Self {
        Self {
            max_bytes,
            budget: None,
        }
    }
}

/// The bytes the bodies of all connections hold at once, and a cap on them. Each body takes
/// its bytes as they arrive and gives them back when it is dropped (once its exchange was
/// metered, or with its connection); what does not fit is counted, not kept.
#[derive(Clone, Debug)]
pub struct BodyBudget(Arc<BudgetState>);

#[derive(Debug)]
struct BudgetState {
    limit: usize,
    held: AtomicUsize,
    refused_bytes: AtomicU64,
    said: AtomicBool,
}

impl BodyBudget {
    pub fn new(limit: usize) -> Self {
        Self(Arc::new(BudgetState {
            limit,
            held: AtomicUsize::new(0),
            refused_bytes: AtomicU64::new(0),
            said: AtomicBool::new(false),
        }))
    }

    pub fn limit(&self) -> usize {
        self.0.limit
    }

    /// Bytes held by bodies now.
    pub fn held(&self) -> usize {
        self.0.held.load(Ordering::Relaxed)
    }

    /// Body bytes not kept because the budget was spent, since the start.
    pub fn refused_bytes(&self) -> u64 {
        self.0.refused_bytes.load(Ordering::Relaxed)
    }

    /// Takes up to `want` bytes; returns how many it got. The first refusal is said.
    fn take(&self, want: usize) -> usize {
        let state = &self.0;
        let mut held = state.held.load(Ordering::Relaxed);
        let granted = loop {
            let granted = want.min(state.limit.saturating_sub(held));
            match state.held.compare_exchange_weak(
                held,
                held + granted,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => break granted,
                Err(now) => held = now,
            }
        };
        if granted < want {
            state
                .refused_bytes
                .fetch_add((want - granted) as u64, Ordering::Relaxed);
            if !state.said.swap(true, Ordering::Relaxed) {
                warn!(
                    limit = state.limit,
                    "the HTTP bodies held for metering reached http.max_held_body_bytes: bodies are \
                     cut until calls finish (their records say so, and \
                     tokenmeter_http_body_bytes_over_budget_total counts the bytes); raise it, and the \
                     agent's memory limit, if this persists"
                );
            }
        }
        granted
    }

    fn give_back(&self, bytes: usize) {
        self.0.held.fetch_sub(bytes, Ordering::Relaxed);
    }
}

/// A body's share of the budget, given back when the body is dropped. Not part of the body's
/// value: a clone holds nothing and compares equal.
#[derive(Debug, Default)]
struct Held {
    budget: Option<BodyBudget>,
    bytes: usize,
}

impl Held {
    /// Up to `want` more bytes from `limits`' budget (all of them without one).
    fn take(&mut self, want: usize, limits: &BodyLimits) -> usize {
        let Some(budget) = &limits.budget else {
            return want;
        };
        let budget = self.budget.get_or_insert_with(|| budget.clone());
        let granted = budget.take(want);
        self.bytes += granted;
        granted
    }

    /// Gives back what is held beyond `keep` bytes.
    fn shrink_to(&mut self, keep: usize) {
        if let Some(budget) = &self.budget {
            let surplus = self.bytes.saturating_sub(keep);
            budget.give_back(surplus);
            self.bytes -= surplus;
        }
    }
}

impl Clone for Held {
    fn clone(&self) -> Self {
        Self::default()
    }
}

impl PartialEq for Held {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for Held {}

impl Drop for Held {
    fn drop(&mut self) {
        self.shrink_to(0);
    }
}

/// A body as received.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Body {
    /// The bytes kept (de-chunked; content-decoded once [`Body::decode`] ran).
    pub bytes: Vec<u8>,
    /// Bytes of the body on the wire (after de-chunking, before content decoding).
    pub wire_len: u64,
    /// True when bytes were not kept (over a limit) or are missing (a capture gap).
    pub truncated: bool,
    /// Bytes were not kept because the bodies of all connections reached the budget.
    pub over_budget: bool,
    /// (offset in `bytes`, monotonic ns) at which each piece of the body arrived.
    pub arrivals: Vec<(usize, u64)>,
    held: Held,
}

impl Body {
    /// Appends a piece that arrived at `timestamp_ns`.
    pub fn append(&mut self, piece: &[u8], timestamp_ns: u64, limits: &BodyLimits) {
        if piece.is_empty() {
            return;
        }
        self.wire_len += piece.len() as u64;
        let room = limits.max_bytes.saturating_sub(self.bytes.len());
        let wanted = room.min(piece.len());
        let granted = self.held.take(wanted, limits);
        self.over_budget |= granted < wanted;
        if granted < piece.len() {
            self.truncated = true;
        }
        let kept = &piece[..granted];
        if !kept.is_empty() {
            if self.arrivals.last().map(|&(_, t)| t) != Some(timestamp_ns) {
                self.arrivals.push((self.bytes.len(), timestamp_ns));
            }
            self.bytes.extend_from_slice(kept);
        }
    }

    /// When the byte at `offset` arrived.
    pub fn arrival_of(&self, offset: usize) -> Option<u64> {
        let i = self.arrivals.partition_point(|&(o, _)| o <= offset);
        i.checked_sub(1).map(|i| self.arrivals[i].1)
    }

    /// Decodes a `Content-Encoding` (gzip, x-gzip, deflate, br, zstd; identity and none are
    /// left alone). Arrival offsets are scaled to the decoded length: exact for the first and
    /// last piece, proportional in between.
    pub fn decode(&mut self, encoding: Option<&str>, limits: &BodyLimits) -> Result<(), HttpError> {
        let Some(encoding) = encoding.map(|e| e.trim().to_ascii_lowercase()) else {
            return Ok(());
        };
        if encoding.is_empty() || encoding == "identity" || self.bytes.is_empty() {
            return Ok(());
        }
        let input: &[u8] = &self.bytes;
        let reader: Box<dyn Read + '_> = match encoding.as_str() {
            "gzip" | "x-gzip" => Box::new(flate2::read::MultiGzDecoder::new(input)),
            // "deflate" is zlib-wrapped per the RFC; some servers send raw deflate.
            "deflate" if input.first().is_some_and(|b| b & 0x0f == 8) => {
                Box::new(flate2::read::ZlibDecoder::new(input))
            }
            "deflate" => Box::new(flate2::read::DeflateDecoder::new(input)),
            "br" => Box::new(brotli::Decompressor::new(input, 4096)),
            "zstd" => Box::new(zstd::stream::read::Decoder::new(input).map_err(|e| {
                HttpError::Encoding {
                    encoding: encoding.clone(),
                    detail: e.to_string(),
                }
            })?),
            other => {
                return Err(HttpError::Encoding {
                    encoding: other.to_string(),
                    detail: "unsupported content encoding".into(),
                })
            }
        };
        let mut decoded = Vec::new();
        // One byte more than the limit tells a body that was cut from one that fits.
        let read = reader
            .take(limits.max_bytes as u64 + 1)
            .read_to_end(&mut decoded);
        if let Err(error) = read {
            // A body cut by the capture limit ends mid-stream: keep what decoded.
            if !self.truncated || decoded.is_empty() {
                return Err(HttpError::Encoding {
                    encoding,
                    detail: error.to_string(),
                });
            }
        }
        if decoded.len() > limits.max_bytes {
            decoded.truncate(limits.max_bytes);
            self.truncated = true;
        }
        // The decoded bytes replace the encoded ones in the budget.
        if let Some(more) = decoded.len().checked_sub(self.bytes.len()) {
            let granted = self.held.take(more, limits);
            if granted < more {
                decoded.truncate(self.bytes.len() + granted);
                self.truncated = true;
                self.over_budget = true;
            }
        } else {
            self.held.shrink_to(decoded.len());
        }
        let (from, to) = (self.bytes.len().max(1), decoded.len());
        for (offset, _) in &mut self.arrivals {
            *offset = (*offset as u128 * to as u128 / from as u128) as usize;
        }
        self.bytes = decoded;
        Ok(())
    }
}

/// Content decoding; a failure is the exchange's error unless it already has one.
pub(super) fn decode_message_body(
    body: &mut Body,
    headers: &Headers,
    limits: &BodyLimits,
    error: &mut Option<HttpError>,
) {
    if let Err(e) = body.decode(headers.get_str("content-encoding"), limits) {
        error.get_or_insert(e);
    }
    if body.truncated && body.wire_len as usize > limits.max_bytes {
        error.get_or_insert(HttpError::BodyTooLarge {
            what: "message",
            limit: limits.max_bytes,
        });
    }
    if let (true, Some(budget)) = (body.over_budget, &limits.budget) {
        error.get_or_insert(HttpError::BodyBudget {
            what: "message",
            limit: budget.limit(),
        });
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    const LIMITS: BodyLimits = BodyLimits::per_body(1 << 20);

    fn body_of(bytes: &[u8]) -> Body {
        let mut body = Body::default();
        body.append(bytes, 1, &LIMITS);
        body
    }

    #[test]
    fn append_caps_flags_and_times_the_pieces() {
        let limits = BodyLimits::per_body(5);
        let mut body = Body::default();
        body.append(b"abc", 10, &limits);
        body.append(b"def", 20, &limits);
        assert_eq!(body.bytes, b"abcde");
        assert_eq!(body.wire_len, 6);
        assert!(body.truncated);
        assert_eq!(body.arrivals, vec![(0, 10), (3, 20)]);
        assert_eq!(body.arrival_of(4), Some(20));
        assert_eq!(body.arrival_of(0), Some(10));
    }

    #[test]
    fn decodes_every_supported_encoding() {
        let text = b"{\"usage\":{\"prompt_tokens\":12}}".repeat(20);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(&text).unwrap();
        let mut zlib = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        zlib.write_all(&text).unwrap();
        let mut raw =
            flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
        raw.write_all(&text).unwrap();
        let mut br = Vec::new();
        brotli::CompressorWriter::new(&mut br, 4096, 5, 22)
            .write_all(&text)
            .unwrap();
        let zstd = zstd::encode_all(&text[..], 3).unwrap();
        for (encoding, encoded) in [
            ("gzip", gz.finish().unwrap()),
            ("deflate", zlib.finish().unwrap()),
            ("deflate", raw.finish().unwrap()),
            ("br", br),
            ("zstd", zstd),
        ] {
            let mut body = body_of(&encoded);
            body.decode(Some(encoding), &LIMITS).unwrap();
            assert_eq!(body.bytes, text, "{encoding}");
        }
    }

    #[test]
    fn a_decompression_bomb_is_cut_at_the_limit() {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        gz.write_all(&vec![0u8; 4 << 20]).unwrap();
        let mut body = body_of(&gz.finish().unwrap());
        body.decode(Some("gzip"), &BodyLimits::per_body(1000))
            .unwrap();
        assert_eq!(body.bytes.len(), 1000);
        assert!(body.truncated);
    }

    #[test]
    fn garbage_and_unknown_encodings_are_errors() {
        let mut body = body_of(b"not gzip at all");
        assert!(matches!(
            body.decode(Some("gzip"), &LIMITS),
            Err(HttpError::Encoding { .. })
        ));
        let mut body = body_of(b"x");
        assert!(body.decode(Some("compress"), &LIMITS).is_err());
        let mut body = body_of(b"plain");
        body.decode(Some("identity"), &LIMITS).unwrap();
        assert_eq!(body.bytes, b"plain");
    }

    fn budgeted(max_bytes: usize, budget: &BodyBudget) -> BodyLimits {
        BodyLimits {
            max_bytes,
            budget: Some(budget.clone()),
        }
    }

    #[test]
    fn bodies_share_the_budget_and_give_it_back_when_dropped() {
        let budget = BodyBudget::new(10);
        let limits = budgeted(8, &budget);
        let mut first = Body::default();
        first.append(b"abcdef", 1, &limits);
        let mut second = Body::default();
        second.append(b"ghijkl", 2, &limits);
        assert_eq!(first.bytes, b"abcdef");
        assert!(!first.over_budget && !first.truncated);
        // Only 4 of the 10 were left.
        assert_eq!(second.bytes, b"ghij");
        assert!(second.over_budget && second.truncated);
        assert_eq!(second.wire_len, 6);
        assert_eq!((budget.held(), budget.refused_bytes()), (10, 2));

        drop(first);
        assert_eq!(budget.held(), 4);
        let mut third = Body::default();
        third.append(b"mnopqrstuv", 3, &limits);
        // The per-body cap (8) comes first; that is not the budget's doing.
        assert_eq!(third.bytes, b"mnopqr");
        assert!(third.over_budget);
        drop((second, third));
        assert_eq!(budget.held(), 0);
    }

    #[test]
    fn decoding_takes_the_growth_from_the_budget_and_flags_the_cut() {
        let text = b"{\"usage\":{\"prompt_tokens\":12}}".repeat(40);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(&text).unwrap();
        let encoded = gz.finish().unwrap();

        let roomy = BodyBudget::new(1 << 20);
        let mut body = Body::default();
        body.append(&encoded, 1, &budgeted(1 << 20, &roomy));
        body.decode(Some("gzip"), &budgeted(1 << 20, &roomy))
            .unwrap();
        assert_eq!(body.bytes, text);
        assert_eq!(roomy.held(), text.len());
        drop(body);
        assert_eq!(roomy.held(), 0);

        let tight = BodyBudget::new(encoded.len() + 100);
        let limits = budgeted(1 << 20, &tight);
        let mut body = Body::default();
        body.append(&encoded, 1, &limits);
        body.decode(Some("gzip"), &limits).unwrap();
        assert_eq!(body.bytes, &text[..encoded.len() + 100]);
        assert!(body.over_budget && body.truncated);
        let mut error = None;
        decode_message_body(&mut body, &Headers::default(), &limits, &mut error);
        assert!(
            matches!(error, Some(HttpError::BodyBudget { .. })),
            "{error:?}"
        );
    }
}
