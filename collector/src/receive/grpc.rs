//! OTLP/gRPC: the official `LogsService` and `MetricsService` (tonic, the OTLP protos).

use std::sync::{atomic::Ordering, Arc};

use opentelemetry_proto::tonic::collector::{
    logs::v1::{
        logs_service_server::{LogsService, LogsServiceServer},
        ExportLogsServiceRequest, ExportLogsServiceResponse,
    },
    metrics::v1::{
        metrics_service_server::{MetricsService, MetricsServiceServer},
        ExportMetricsServiceRequest, ExportMetricsServiceResponse,
    },
};
use tonic::{codec::CompressionEncoding, Request, Response, Status};

use super::{auth::Auth, Ingestor};

#[derive(Clone)]
pub struct Otlp {
    ingestor: Arc<Ingestor>,
    auth: Auth,
}

impl Otlp {
    fn check<T>(&self, request: &Request<T>) -> Result<(), Status> {
        let header = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok());
        if self.auth.allows(header) {
            Ok(())
        } else {
            self.ingestor
                .metrics
                .auth_failures
                .fetch_add(1, Ordering::Relaxed);
            Err(Status::unauthenticated(
                "a valid `authorization: Bearer <token>` is required",
            ))
        }
    }
}

/// The gRPC services, with requests up to `max_bytes`, gzip-compressed or not (collectors
/// such as rotel compress by default).
pub fn router(ingestor: Arc<Ingestor>, auth: Auth, max_bytes: usize) -> tonic::service::Routes {
    let otlp = Otlp { ingestor, auth };
    tonic::service::Routes::new(
        LogsServiceServer::new(otlp.clone())
            .accept_compressed(CompressionEncoding::Gzip)
            .max_decoding_message_size(max_bytes),
    )
    .add_service(
        MetricsServiceServer::new(otlp)
            .accept_compressed(CompressionEncoding::Gzip)
            .max_decoding_message_size(max_bytes),
    )
}

#[tonic::async_trait]
impl LogsService for Otlp {
    async fn export(
        &self,
        request: Request<ExportLogsServiceRequest>,
    ) -> Result<Response<ExportLogsServiceResponse>, Status> {
        self.check(&request)?;
        let ingestor = self.ingestor.clone();
        let body = request.into_inner();
        let reply = tokio::task::spawn_blocking(move || ingestor.ingest_logs(&body))
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            // Retryable: the sender keeps the batch and tries again.
            .map_err(|e| Status::unavailable(e.to_string()))?;
        Ok(Response::new(ExportLogsServiceResponse {
            partial_success: reply.partial_success(),
        }))
    }
}

#[tonic::async_trait]
impl MetricsService for Otlp {
    async fn export(
        &self,
        request: Request<ExportMetricsServiceRequest>,
    ) -> Result<Response<ExportMetricsServiceResponse>, Status> {
        self.check(&request)?;
        self.ingestor.ingest_metrics(request.get_ref());
        Ok(Response::new(ExportMetricsServiceResponse {
            partial_success: None,
        }))
    }
}
