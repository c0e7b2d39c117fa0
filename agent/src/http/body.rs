//! Message bodies: capped while they arrive, timed piece by piece (so a streamed response's
//! first and last token can be dated), and decoded from their content encoding at the end.

use std::io::Read;

use super::{Headers, HttpError};

/// How much of a body is kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BodyLimits {
    /// Bytes kept per body, before and after content decoding; the rest is counted, not kept.
    pub max_bytes: usize,
}

/// A body as received.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Body {
    /// The bytes kept (de-chunked; content-decoded once [`Body::decode`] ran).
    pub bytes: Vec<u8>,
    /// Bytes of the body on the wire (after de-chunking, before content decoding).
    pub wire_len: u64,
    /// True when bytes were not kept (over the limit) or are missing (a capture gap).
    pub truncated: bool,
    /// (offset in `bytes`, monotonic ns) at which each piece of the body arrived.
    pub arrivals: Vec<(usize, u64)>,
}

impl Body {
    /// Appends a piece that arrived at `timestamp_ns`.
    pub fn append(&mut self, piece: &[u8], timestamp_ns: u64, limits: &BodyLimits) {
        if piece.is_empty() {
            return;
        }
        self.wire_len += piece.len() as u64;
        let room = limits.max_bytes.saturating_sub(self.bytes.len());
        if room < piece.len() {
            self.truncated = true;
        }
        let kept = &piece[..room.min(piece.len())];
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
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    const LIMITS: BodyLimits = BodyLimits { max_bytes: 1 << 20 };

    fn body_of(bytes: &[u8]) -> Body {
        let mut body = Body::default();
        body.append(bytes, 1, &LIMITS);
        body
    }

    #[test]
    fn append_caps_flags_and_times_the_pieces() {
        let limits = BodyLimits { max_bytes: 5 };
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
        body.decode(Some("gzip"), &BodyLimits { max_bytes: 1000 })
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
}
