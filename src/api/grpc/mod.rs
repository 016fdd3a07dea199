//! The KServe V2 gRPC front end (`inference.GRPCInferenceService`) on tonic, with Triton's
//! statistics. Its other extensions (model control, shared memory, ...) are not in our proto,
//! so tonic answers them UNIMPLEMENTED.

pub mod convert;

use crate::api::limits::{self, Limits};
use crate::api::tls::{Link, Tls};
use crate::api::{metadata, statistics, status};
use crate::gateway::{Credentials, Gateway, Protocol};
use crate::shutdown::Shutdown;
use std::pin::Pin;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

pub use crate::kserve::proto;

use proto::grpc_inference_service_server::{GrpcInferenceService, GrpcInferenceServiceServer};

/// Requests of one stream that may run at once; the stream is read no faster than this.
const STREAM_CONCURRENCY: usize = 64;

pub struct InferenceService {
    gateway: Arc<Gateway>,
}

pub async fn serve(
    listener: TcpListener,
    gateway: Arc<Gateway>,
    shutdown: Shutdown,
    tls: Option<Arc<Tls>>,
) {
    let limit = gateway.config.server.max_body_bytes.as_usize();
    let limits = Limits::of(&gateway.config.server);
    // A message either way is bounded as an HTTP body is.
    let service = GrpcInferenceServiceServer::new(InferenceService { gateway })
        .max_decoding_message_size(limit)
        .max_encoding_message_size(limit);
    // Connections are accepted by a task of ours, which holds one permit per open connection
    // (`limits::accept` also sets TCP_NODELAY, which tonic's own setting would not reach on a
    // listener handed in; without it Nagle's algorithm holds every small reply).
    let (connections, incoming) = tokio::sync::mpsc::channel::<std::io::Result<Link>>(1);
    let open = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    let acceptor = tokio::spawn(async move {
        loop {
            let accepted = limits::accept(&listener, &open).await;
            if let Err(error) = &accepted {
                tracing::warn!(%error, "gRPC accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
            let Ok(stream) = accepted else { continue };
            let Some(tls) = &tls else {
                if connections.send(Ok(Link::Plain(stream))).await.is_err() {
                    break;
                }
                continue;
            };
            // Handshakes run apart, bounded, so a stalled one holds up no other connection.
            let acceptor = tls.acceptor();
            let connections = connections.clone();
            tokio::spawn(async move {
                let limit = limits.header_read_timeout;
                match tokio::time::timeout(limit, acceptor.accept(stream)).await {
                    Ok(Ok(stream)) => {
                        let _ = connections.send(Ok(Link::Tls(Box::new(stream)))).await;
                    }
                    Ok(Err(error)) => tracing::debug!(%error, "gRPC TLS handshake failed"),
                    Err(_) => {}
                }
            });
        }
    });
    let result = tonic::transport::Server::builder()
        .max_concurrent_streams(limits.http2_max_concurrent_streams)
        .http2_max_header_list_size(limits::MAX_HEADER_LIST_BYTES)
        .http2_keepalive_interval(limits.keepalive_interval)
        .http2_keepalive_timeout(Some(limits::KEEPALIVE_TIMEOUT))
        .add_service(service)
        .serve_with_incoming_shutdown(
            tokio_stream::wrappers::ReceiverStream::new(incoming),
            shutdown.wait(),
        )
        .await;
    acceptor.abort();
    if let Err(error) = result {
        tracing::error!(%error, "gRPC server stopped");
    }
}

type ResponseStream =
    Pin<Box<dyn Stream<Item = Result<proto::ModelStreamInferResponse, Status>> + Send>>;

#[tonic::async_trait]
impl GrpcInferenceService for InferenceService {
    async fn server_live(
        &self,
        _: Request<proto::ServerLiveRequest>,
    ) -> Result<Response<proto::ServerLiveResponse>, Status> {
        Ok(Response::new(proto::ServerLiveResponse { live: true }))
    }

    async fn server_ready(
        &self,
        _: Request<proto::ServerReadyRequest>,
    ) -> Result<Response<proto::ServerReadyResponse>, Status> {
        Ok(Response::new(proto::ServerReadyResponse { ready: true }))
    }

    async fn model_ready(
        &self,
        request: Request<proto::ModelReadyRequest>,
    ) -> Result<Response<proto::ModelReadyResponse>, Status> {
        let request = request.into_inner();
        let version = (!request.version.is_empty()).then_some(request.version.as_str());
        let ready = self
            .gateway
            .model(&request.name, version)
            .is_ok_and(|model| model.is_ready());
        Ok(Response::new(proto::ModelReadyResponse { ready }))
    }

    async fn model_statistics(
        &self,
        request: Request<proto::ModelStatisticsRequest>,
    ) -> Result<Response<proto::ModelStatisticsResponse>, Status> {
        let request = request.into_inner();
        let version = (!request.version.is_empty()).then_some(request.version.as_str());
        statistics::collect(&self.gateway, &request.name, version)
            .map(Response::new)
            .map_err(|e| status::grpc_status(&e))
    }

    async fn server_metadata(
        &self,
        _: Request<proto::ServerMetadataRequest>,
    ) -> Result<Response<proto::ServerMetadataResponse>, Status> {
        Ok(Response::new(proto::ServerMetadataResponse {
            name: metadata::SERVER_NAME.into(),
            version: metadata::SERVER_VERSION.into(),
            extensions: metadata::EXTENSIONS.iter().map(|e| e.to_string()).collect(),
        }))
    }

    async fn model_metadata(
        &self,
        request: Request<proto::ModelMetadataRequest>,
    ) -> Result<Response<proto::ModelMetadataResponse>, Status> {
        let request = request.into_inner();
        let version = (!request.version.is_empty()).then_some(request.version.as_str());
        let model = self
            .gateway
            .model(&request.name, version)
            .map_err(|e| status::grpc_status(&e))?;
        let describe = |tensors: Vec<metadata::TensorMetadata>| {
            tensors
                .into_iter()
                .map(|t| proto::model_metadata_response::TensorMetadata {
                    name: t.name.to_string(),
                    datatype: t.datatype.to_string(),
                    shape: t.shape.to_vec(),
                })
                .collect()
        };
        Ok(Response::new(proto::ModelMetadataResponse {
            name: model.name.clone(),
            versions: self.gateway.models.snapshot().versions(&model.name),
            platform: metadata::PLATFORM.into(),
            inputs: describe(metadata::inputs(&model)),
            outputs: describe(metadata::outputs(&model)),
        }))
    }

    async fn model_infer(
        &self,
        request: Request<proto::ModelInferRequest>,
    ) -> Result<Response<proto::ModelInferResponse>, Status> {
        let credentials = credentials(request.metadata());
        infer(&self.gateway, request.into_inner(), &credentials)
            .await
            .map(Response::new)
            .map_err(|e| status::grpc_status(&e))
    }

    type ModelStreamInferStream = ResponseStream;

    async fn model_stream_infer(
        &self,
        request: Request<Streaming<proto::ModelInferRequest>>,
    ) -> Result<Response<Self::ModelStreamInferStream>, Status> {
        let credentials = credentials(request.metadata());
        let mut inbound = request.into_inner();
        let gateway = self.gateway.clone();
        let (sender, receiver) = tokio::sync::mpsc::channel(STREAM_CONCURRENCY);
        let slots = Arc::new(tokio::sync::Semaphore::new(STREAM_CONCURRENCY));
        tokio::spawn(async move {
            while let Some(message) = inbound.next().await {
                let Ok(slot) = slots.clone().acquire_owned().await else {
                    break;
                };
                let sender = sender.clone();
                match message {
                    Ok(message) => {
                        let gateway = gateway.clone();
                        let credentials = credentials.clone();
                        // Requests of one stream run concurrently so they can share batches;
                        // clients match answers to requests by id.
                        tokio::spawn(async move {
                            let id = message.id.clone();
                            let reply = match infer(&gateway, message, &credentials).await {
                                Ok(response) => proto::ModelStreamInferResponse {
                                    error_message: String::new(),
                                    infer_response: Some(response),
                                },
                                Err(error) => proto::ModelStreamInferResponse {
                                    error_message: error.to_string(),
                                    infer_response: Some(proto::ModelInferResponse {
                                        id,
                                        ..Default::default()
                                    }),
                                },
                            };
                            let _ = sender.send(Ok(reply)).await;
                            drop(slot);
                        });
                    }
                    Err(status) => {
                        let _ = sender.send(Err(status)).await;
                        break;
                    }
                }
            }
        });
        let stream = tokio_stream::wrappers::ReceiverStream::new(receiver);
        Ok(Response::new(Box::pin(stream)))
    }
}

fn credentials(metadata: &tonic::metadata::MetadataMap) -> Credentials {
    let text = |name: &str| metadata.get(name).and_then(|v| v.to_str().ok());
    let mut credentials =
        crate::api::params::credentials(text("authorization"), text("x-tollgate-tags"));
    credentials.trace = crate::api::params::trace(text("traceparent"), text("tracestate"));
    credentials
}

async fn infer(
    gateway: &Gateway,
    message: proto::ModelInferRequest,
    credentials: &Credentials,
) -> Result<proto::ModelInferResponse, crate::gateway::Error> {
    let request = match convert::request(message) {
        Ok(request) => request,
        Err(unreadable) => {
            // As over HTTP: an unknown model is named before what is wrong with the tensors.
            let version = Some(unreadable.version.as_str()).filter(|v| !v.is_empty());
            gateway.model(&unreadable.model, version)?;
            return Err(unreadable.error);
        }
    };
    let response = gateway
        .infer(request, Protocol::Grpc, credentials)
        .await?
        .response;
    Ok(convert::response(response))
}
