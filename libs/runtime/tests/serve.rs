//! The shared gRPC server's shutdown: health turns NOT_SERVING at once, and a call that never ends
//! cannot hold the process past the grace period.

use std::time::Duration;

use email2sms_runtime::grpc::{ApiServices, serve};
use tonic::service::Routes;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

#[tokio::test]
async fn shutdown_reports_not_serving_then_stops_within_the_grace_period() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let api = ApiServices {
        routes: Routes::default(),
        names: vec![],
        file_descriptor_set: tonic_health::pb::FILE_DESCRIPTOR_SET,
    };
    let server = tokio::spawn(serve(
        api,
        listener,
        async {
            let _ = stopped.await;
        },
        Duration::from_secs(1),
    ));

    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = HealthClient::new(channel);
    // A Watch stream is a call that stays in flight until the server ends it.
    let mut watch = health
        .watch(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let first = watch.message().await.unwrap().unwrap();
    assert_eq!(first.status, ServingStatus::Serving as i32);

    stop.send(()).unwrap();
    let update = watch.message().await.unwrap().unwrap();
    assert_eq!(
        update.status,
        ServingStatus::NotServing as i32,
        "load balancers learn first that this replica is going away"
    );

    let result = tokio::time::timeout(Duration::from_secs(20), server)
        .await
        .expect("the grace period bounds the drain even with a call still open")
        .unwrap();
    assert!(result.is_ok(), "{result:?}");
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "no new connections after shutdown"
    );
}
