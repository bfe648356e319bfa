//! The gRPC server every service runs: its API services plus `grpc.health.v1` and server reflection
//! (v1 and v1alpha, since common clients still speak only v1alpha), with graceful shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpListener;
use tonic::service::Routes;

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
/// and lets in-flight calls finish for at most `grace`. For servers embedded in tests and tools:
/// no shutdown delay, and `readiness` SERVING with nothing to probe. Binaries use
/// [`crate::lifecycle::Lifecycle`] directly.
pub async fn serve(
    api: ApiServices,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
    grace: Duration,
) -> Result<(), ServeError> {
    let life = crate::lifecycle::Lifecycle::with_timing(Duration::ZERO, grace);
    life.watch_readiness(&[], Vec::new());
    life.serve_grpc(api, listener).await?;
    life.run(shutdown, async {}).await
}

/// The API routes plus `grpc.health.v1` (`health`) and server reflection v1 and v1alpha.
pub fn routes(
    api: &ApiServices,
    health: tonic_health::pb::health_server::HealthServer<tonic_health::server::HealthService>,
) -> Result<Routes, ServeError> {
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
    Ok(api
        .routes
        .clone()
        .add_service(health)
        .add_service(reflection_v1.build_v1()?)
        .add_service(reflection_v1alpha.build_v1alpha()?))
}
