//! Envoy's external authorization service, `envoy.service.auth.v3.Authorization/Check`:
//! Envoy (or any gateway speaking it) asks before forwarding a request; a spent hard quota
//! answers `PERMISSION_DENIED` with an HTTP 429 for the client. The messages are the subset
//! of Envoy's `external_auth.proto` and `attribute_context.proto` the check reads and
//! writes, with their field numbers; unknown fields are skipped, as protobuf does.

use std::{
    collections::HashMap,
    convert::Infallible,
    sync::Arc,
    task::{Context, Poll},
};

use tonic::{
    body::Body,
    codegen::{http, BoxFuture, Service},
    server::{Grpc, NamedService, UnaryService},
    Request, Response, Status,
};

use super::admission::Admission;

#[derive(Clone, PartialEq, prost::Message)]
pub struct CheckRequest {
    #[prost(message, optional, tag = "1")]
    pub attributes: Option<AttributeContext>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct AttributeContext {
    #[prost(message, optional, tag = "4")]
    pub request: Option<AttributeRequest>,
    #[prost(map = "string, string", tag = "10")]
    pub context_extensions: HashMap<String, String>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct AttributeRequest {
    #[prost(message, optional, tag = "2")]
    pub http: Option<HttpRequest>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct HttpRequest {
    #[prost(string, tag = "2")]
    pub method: String,
    #[prost(map = "string, string", tag = "3")]
    pub headers: HashMap<String, String>,
    #[prost(string, tag = "4")]
    pub path: String,
    #[prost(string, tag = "5")]
    pub host: String,
    /// Envoy sends headers here instead when configured to (`encode_raw_headers`).
    #[prost(message, optional, tag = "13")]
    pub header_map: Option<HeaderMap>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct HeaderMap {
    #[prost(message, repeated, tag = "1")]
    pub headers: Vec<HeaderValue>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct HeaderValue {
    #[prost(string, tag = "1")]
    pub key: String,
    #[prost(string, tag = "2")]
    pub value: String,
    #[prost(bytes = "vec", tag = "3")]
    pub raw_value: Vec<u8>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct HeaderValueOption {
    #[prost(message, optional, tag = "1")]
    pub header: Option<HeaderValue>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct CheckResponse {
    #[prost(message, optional, tag = "1")]
    pub status: Option<RpcStatus>,
    #[prost(oneof = "HttpResponse", tags = "2, 3")]
    pub http_response: Option<HttpResponse>,
}

#[derive(Clone, PartialEq, prost::Oneof)]
pub enum HttpResponse {
    #[prost(message, tag = "2")]
    Denied(DeniedHttpResponse),
    #[prost(message, tag = "3")]
    Ok(OkHttpResponse),
}

/// `google.rpc.Status`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RpcStatus {
    #[prost(int32, tag = "1")]
    pub code: i32,
    #[prost(string, tag = "2")]
    pub message: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct DeniedHttpResponse {
    #[prost(message, optional, tag = "1")]
    pub status: Option<HttpStatus>,
    #[prost(message, repeated, tag = "2")]
    pub headers: Vec<HeaderValueOption>,
    #[prost(string, tag = "3")]
    pub body: String,
}

/// `envoy.type.v3.HttpStatus`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct HttpStatus {
    #[prost(int32, tag = "1")]
    pub code: i32,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct OkHttpResponse {
    #[prost(message, repeated, tag = "2")]
    pub headers: Vec<HeaderValueOption>,
}

/// `google.rpc.Code`.
const OK: i32 = 0;
const PERMISSION_DENIED: i32 = 7;

/// The gRPC service.
#[derive(Clone)]
pub struct Authorization {
    admission: Arc<Admission>,
}

impl Authorization {
    pub fn new(admission: Arc<Admission>) -> Self {
        Self { admission }
    }

    fn check(&self, request: &CheckRequest) -> CheckResponse {
        let http = request
            .attributes
            .as_ref()
            .and_then(|a| a.request.as_ref())
            .and_then(|r| r.http.as_ref());
        let mut headers: Vec<(&str, &str)> = Vec::new();
        if let Some(http) = http {
            headers.extend(http.headers.iter().map(|(k, v)| (k.as_str(), v.as_str())));
            if let Some(map) = &http.header_map {
                headers.extend(
                    map.headers
                        .iter()
                        .map(|h| (h.key.as_str(), h.value.as_str())),
                );
            }
        }
        let decision = self.admission.decide(&self.admission.attributes(headers));
        let header = |key: &str, value: String| HeaderValueOption {
            header: Some(HeaderValue {
                key: key.into(),
                value,
                raw_value: Vec::new(),
            }),
        };
        let account = format!(
            "{}/{}/{}",
            decision.account.org, decision.account.team, decision.account.user
        );
        match decision.reason {
            None => CheckResponse {
                status: Some(RpcStatus {
                    code: OK,
                    message: String::new(),
                }),
                http_response: Some(HttpResponse::Ok(OkHttpResponse {
                    headers: vec![header("x-tokenmeter-account", account)],
                })),
            },
            Some(reason) => CheckResponse {
                status: Some(RpcStatus {
                    code: PERMISSION_DENIED,
                    message: reason.clone(),
                }),
                http_response: Some(HttpResponse::Denied(DeniedHttpResponse {
                    status: Some(HttpStatus { code: 429 }),
                    headers: vec![header("x-tokenmeter-account", account)],
                    body:
                        serde_json::json!({"error": {"type": "quota_exceeded", "message": reason}})
                            .to_string(),
                })),
            },
        }
    }
}

impl NamedService for Authorization {
    const NAME: &'static str = "envoy.service.auth.v3.Authorization";
}

struct CheckMethod(Authorization);

impl UnaryService<CheckRequest> for CheckMethod {
    type Response = CheckResponse;
    type Future = BoxFuture<Response<CheckResponse>, Status>;

    fn call(&mut self, request: Request<CheckRequest>) -> Self::Future {
        let response = self.0.check(request.get_ref());
        Box::pin(async move { Ok(Response::new(response)) })
    }
}

impl Service<http::Request<Body>> for Authorization {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let service = self.clone();
        Box::pin(async move {
            if request.uri().path() != "/envoy.service.auth.v3.Authorization/Check" {
                return Ok(Status::unimplemented("only Authorization/Check is served").into_http());
            }
            let mut grpc = Grpc::new(tonic_prost::ProstCodec::default());
            Ok(grpc.unary(CheckMethod(service), request).await)
        })
    }
}
