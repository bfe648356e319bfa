//! The gRPC server every service runs: its API services plus `grpc.health.v1` and server reflection
//! (v1 and v1alpha, since common clients still speak only v1alpha), with graceful shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::service::Routes;
use tonic_health::ServingStatus;

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("the reflection service cannot read the API descriptors: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error("the gRPC server failed: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error("the gRPC server task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// The API services one binary serves: their routes, their fully-qualified names (for health and
/// reflection) and the descriptor set that describes them.
#[derive(Debug)]
pub struct ApiServices {
    pub routes: Routes,
    pub names: Vec<&'static str>,
    pub file_descriptor_set: &'static [u8],
}

/// Binds the listen address, naming the setting when it cannot.
pub async fn bind(setting: &'static str, addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await.map_err(|e| {
        std::io::Error::new(
            e.kind(),
            format!("cannot listen on {addr} ({setting}): {e}"),
        )
    })
}

/// Serves `api` on `listener` until `shutdown` resolves, then reports NOT_SERVING, stops accepting
/// and lets in-flight calls finish for at most `grace`.
pub async fn serve(
    api: ApiServices,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
    grace: Duration,
) -> Result<(), ServeError> {
    let (health, health_service) = tonic_health::server::health_reporter();
    // The error details (`google.rpc.BadRequest`, `ErrorInfo`, …) every error may carry are
    // described too: without them grpcurl prints "google.rpc.BadRequest is not recognized" and the
    // raw bytes instead of the field violations.
    let descriptor_sets = [
        api.file_descriptor_set,
        tonic_health::pb::FILE_DESCRIPTOR_SET,
        tonic_types::pb::FILE_DESCRIPTOR_SET,
    ];
    let mut reflection_v1 = tonic_reflection::server::Builder::configure();
    let mut reflection_v1alpha = tonic_reflection::server::Builder::configure();
    for set in descriptor_sets {
        reflection_v1 = reflection_v1.register_encoded_file_descriptor_set(set);
        reflection_v1alpha = reflection_v1alpha.register_encoded_file_descriptor_set(set);
    }
    // The descriptor set describes every Email2SMS service; list only the ones this binary serves.
    for name in api.names.iter().chain(["grpc.health.v1.Health"].iter()) {
        reflection_v1 = reflection_v1.with_service_name(*name);
        reflection_v1alpha = reflection_v1alpha.with_service_name(*name);
    }
    let routes = api
        .routes
        .add_service(health_service)
        .add_service(reflection_v1.build_v1()?)
        .add_service(reflection_v1alpha.build_v1alpha()?);

    for name in api.names.iter().chain([&""]) {
        health
            .set_service_status(*name, ServingStatus::Serving)
            .await;
    }

    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let mut server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_routes(routes)
            .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async {
                let _ = stop_rx.await;
            }),
    );

    tokio::select! {
        result = &mut server => return Ok(result??),
        () = shutdown => {}
    }
    tracing::info!(grace = ?grace, "shutting down: no new connections, draining in-flight calls");
    for name in api.names.iter().chain([&""]) {
        health
            .set_service_status(*name, ServingStatus::NotServing)
            .await;
    }
    let _ = stop_tx.send(());
    match tokio::time::timeout(grace, &mut server).await {
        Ok(result) => Ok(result??),
        Err(_) => {
            tracing::warn!("grace period over with calls still in flight; stopping anyway");
            server.abort();
            Ok(())
        }
    }
}
