//! OTLP/HTTP: `POST /v1/logs` and `/v1/metrics` with `application/x-protobuf` or
//! `application/json` bodies, optionally gzip-compressed. Answers in the request's encoding.
//! Status codes follow the OTLP spec so senders know what to retry: 400 for a body that does
//! not decode (permanent), 401 without a valid token, 413 over the size limit, 415 for another
//! content type, 503 when the database refused the batch (retryable).

use std::{io::Read, sync::atomic::Ordering, sync::Arc};

use axum::{
    body::Bytes,
    extract::{DefaultBodyLimit, State},
    http::{header, HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::post,
    Router,
};
use opentelemetry_proto::tonic::collector::{
    logs::v1::{ExportLogsServiceRequest, ExportLogsServiceResponse},
    metrics::v1::{ExportMetricsServiceRequest, ExportMetricsServiceResponse},
};
use prost::Message;

use super::{auth::Auth, Ingestor};

#[derive(Clone)]
struct Shared {
    ingestor: Arc<Ingestor>,
    auth: Auth,
    max_bytes: usize,
}

pub fn router(ingestor: Arc<Ingestor>, auth: Auth, max_bytes: usize) -> Router {
    Router::new()
        .route("/v1/logs", post(logs))
        .route("/v1/metrics", post(metrics))
        .layer(DefaultBodyLimit::max(max_bytes))
        .with_state(Shared {
            ingestor,
            auth,
            max_bytes,
        })
}

#[derive(Clone, Copy, PartialEq)]
enum Encoding {
    Protobuf,
    Json,
}

/// A refused request: its status and why.
struct Refusal(StatusCode, String);

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        (self.0, self.1).into_response()
    }
}

fn error(status: StatusCode, message: impl Into<String>) -> Refusal {
    Refusal(status, message.into())
}

/// Checks the token and decodes the body; the error is the response to send.
fn decode<T: Message + Default + serde::de::DeserializeOwned>(
    shared: &Shared,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<(T, Encoding), Refusal> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    if !shared.auth.allows(token) {
        shared
            .ingestor
            .metrics
            .auth_failures
            .fetch_add(1, Ordering::Relaxed);
        return Err(error(
            StatusCode::UNAUTHORIZED,
            "a valid `authorization: Bearer <token>` is required",
        ));
    }
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let encoding = match content_type.split(';').next().unwrap_or("").trim() {
        "application/x-protobuf" => Encoding::Protobuf,
        "application/json" => Encoding::Json,
        other => {
            return Err(error(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!("content type {other:?}: send application/x-protobuf or application/json"),
            ))
        }
    };
    let gzip = headers
        .get(header::CONTENT_ENCODING)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"gzip"));
    let inflated;
    let bytes: &[u8] = if gzip {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(body.as_ref())
            .take(shared.max_bytes as u64 + 1)
            .read_to_end(&mut out)
            .map_err(|e| error(StatusCode::BAD_REQUEST, format!("gzip body: {e}")))?;
        if out.len() > shared.max_bytes {
            return Err(error(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("the decompressed body exceeds {} bytes", shared.max_bytes),
            ));
        }
        inflated = out;
        &inflated
    } else {
        body
    };
    let message = match encoding {
        Encoding::Protobuf => T::decode(bytes).map_err(|e| {
            error(
                StatusCode::BAD_REQUEST,
                format!("not an OTLP protobuf message: {e}"),
            )
        })?,
        Encoding::Json => serde_json::from_slice(bytes).map_err(|e| {
            error(
                StatusCode::BAD_REQUEST,
                format!("not an OTLP JSON message: {e}"),
            )
        })?,
    };
    Ok((message, encoding))
}

fn reply<T: Message + serde::Serialize>(encoding: Encoding, message: &T) -> Response {
    match encoding {
        Encoding::Protobuf => (
            [(header::CONTENT_TYPE, "application/x-protobuf")],
            message.encode_to_vec(),
        )
            .into_response(),
        Encoding::Json => (
            [(header::CONTENT_TYPE, "application/json")],
            serde_json::to_vec(message).expect("responses serialise"),
        )
            .into_response(),
    }
}

async fn logs(State(shared): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    let (request, encoding) = match decode::<ExportLogsServiceRequest>(&shared, &headers, &body) {
        Ok(decoded) => decoded,
        Err(refusal) => return refusal.into_response(),
    };
    let ingestor = shared.ingestor.clone();
    let result = tokio::task::spawn_blocking(move || ingestor.ingest_logs(&request)).await;
    match result {
        Ok(Ok(outcome)) => reply(
            encoding,
            &ExportLogsServiceResponse {
                partial_success: outcome.partial_success(),
            },
        ),
        Ok(Err(e)) => error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()).into_response(),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

async fn metrics(State(shared): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    match decode::<ExportMetricsServiceRequest>(&shared, &headers, &body) {
        Ok((request, encoding)) => {
            shared.ingestor.ingest_metrics(&request);
            reply(
                encoding,
                &ExportMetricsServiceResponse {
                    partial_success: None,
                },
            )
        }
        Err(refusal) => refusal.into_response(),
    }
}
