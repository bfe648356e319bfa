//! Metrics every binary serves for Prometheus to scrape: `GET /metrics` on `EMAIL2SMS_METRICS_ADDR`
//! (unset: no metrics listener), OpenMetrics text.
//!
//! Why scraping rather than OTLP metrics: the SRE side of this product runs Prometheus on
//! Kubernetes, which discovers pods and scrapes them without any collector in between, and a
//! scrape keeps working when the OTLP collector (traces) is down. Counters live in the process
//! and cost a relaxed atomic add; nothing is sent until someone asks.
//!
//! Label values are Rust enums or `&'static str` constants chosen by our code (an SMTP enhanced
//! code we wrote, a step name, a cache layer), never an address, a number or a company id, so
//! every family has a bounded number of series whatever a stranger sends.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;

pub use prometheus_client;

/// The media type of the OpenMetrics text format.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Where a binary serves its metrics.
#[derive(Debug, Clone, clap::Args)]
pub struct MetricsArgs {
    /// Address for Prometheus to scrape `GET /metrics` (OpenMetrics text), e.g. 0.0.0.0:9090.
    /// Unset: no metrics listener.
    #[arg(long, env = "EMAIL2SMS_METRICS_ADDR")]
    pub metrics_addr: Option<SocketAddr>,
}

/// The registry as OpenMetrics text.
pub fn encode(registry: &Registry) -> String {
    let mut text = String::new();
    // Writing into a String cannot fail; a family's own encoder failing would be a bug in it.
    if let Err(error) = prometheus_client::encoding::text::encode(&mut text, registry) {
        tracing::error!(%error, "could not encode the metrics");
    }
    text
}

/// Latency buckets in seconds from 0.5 ms to about 16 s, doubling: an SMTP reply or a decision
/// takes around a millisecond with a warm cache and seconds when DNS is slow, so both ends need
/// resolution.
pub fn latency_buckets() -> impl Iterator<Item = f64> {
    prometheus_client::metrics::histogram::exponential_buckets(0.0005, 2.0, 16)
}

/// Binds `args.metrics_addr` when it is set, announces it (`<binary>: metrics listening on …`) and
/// serves `registry` there as a task of `life`: scraped through the shutdown delay too, it stops
/// with the other listeners. Returns whether a listener was started, for work only a scrape
/// reads (dispatch's queue sampler).
pub async fn start(
    binary: &str,
    args: &MetricsArgs,
    registry: Arc<Registry>,
    life: &email2sms_runtime::lifecycle::Lifecycle,
) -> Result<bool, email2sms_runtime::service::StartError> {
    let Some(addr) = args.metrics_addr else {
        return Ok(false);
    };
    let listener = email2sms_runtime::service::bind_and_announce(
        binary,
        "EMAIL2SMS_METRICS_ADDR",
        "metrics",
        addr,
    )
    .await?;
    life.spawn("metrics server", serve(listener, registry, life.stopped()));
    Ok(true)
}

/// Serves `GET /metrics` on `listener` until `shutdown` resolves. One scrape is one HTTP/1.1
/// request; a connection that says nothing for 10 s is closed, so a stranger who can reach the
/// port holds nothing open for long.
pub async fn serve(
    listener: TcpListener,
    registry: Arc<Registry>,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    let connections = connections::Connections::default();
    loop {
        let accepted = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, _) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::warn!(%error, "metrics listener could not accept");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let registry = registry.clone();
        connections.spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let registry = registry.clone();
                async move { Ok::<_, Infallible>(respond(&request, &registry)) }
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .header_read_timeout(Duration::from_secs(10))
                .timer(hyper_util::rt::TokioTimer::new())
                .serve_connection(TokioIo::new(stream), service);
            let _ = tokio::time::timeout(Duration::from_secs(30), connection).await;
        });
    }
    connections.abort_all();
}

fn respond(request: &Request<Incoming>, registry: &Registry) -> Response<Full<Bytes>> {
    let (status, content_type, body) = match (request.method(), request.uri().path()) {
        (&Method::GET, "/metrics") => (StatusCode::OK, CONTENT_TYPE, encode(registry)),
        (_, "/metrics") => (
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain; charset=utf-8",
            "use GET\n".to_owned(),
        ),
        _ => (
            StatusCode::NOT_FOUND,
            "text/plain; charset=utf-8",
            "metrics are at /metrics\n".to_owned(),
        ),
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    if let Ok(value) = hyper::header::HeaderValue::from_str(content_type) {
        response
            .headers_mut()
            .insert(hyper::header::CONTENT_TYPE, value);
    }
    response
}

/// The scrape connections of one listener, aborted when it stops (a scrape is a read of atomics:
/// nothing is lost by cutting one short).
mod connections {
    use std::sync::Mutex;

    use tokio::task::JoinSet;

    #[derive(Debug, Default)]
    pub struct Connections(Mutex<JoinSet<()>>);

    impl Connections {
        pub fn spawn(&self, work: impl Future<Output = ()> + Send + 'static) {
            let mut set = self.0.lock().unwrap_or_else(|e| e.into_inner());
            // Reap the finished ones so the set does not grow with every scrape.
            while set.try_join_next().is_some() {}
            set.spawn(work);
        }

        pub fn abort_all(&self) {
            self.0.lock().unwrap_or_else(|e| e.into_inner()).abort_all();
        }
    }
}

#[cfg(test)]
mod tests {
    use prometheus_client::metrics::counter::Counter;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    async fn get(addr: SocketAddr, request: &str) -> String {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).await.unwrap();
        response
    }

    #[tokio::test]
    async fn a_scrape_returns_the_registry_as_openmetrics_text() {
        let mut registry = Registry::default();
        let counter = Counter::<u64>::default();
        registry.register("email2sms_test_things", "Things counted", counter.clone());
        counter.inc_by(3);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(listener, Arc::new(registry), async {
            let _ = stopped.await;
        }));
        let response = get(
            addr,
            "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert!(response.starts_with("HTTP/1.1 200 OK\r\n"), "{response}");
        assert!(response.contains(CONTENT_TYPE), "{response}");
        assert!(
            response.contains("email2sms_test_things_total 3\n"),
            "{response}"
        );
        assert!(response.ends_with("# EOF\n"), "{response}");

        let other = get(
            addr,
            "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert!(other.starts_with("HTTP/1.1 404"), "{other}");
        let post = get(
            addr,
            "POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert!(post.starts_with("HTTP/1.1 405"), "{post}");

        stop.send(()).unwrap();
        server.await.unwrap();
        assert!(tokio::net::TcpStream::connect(addr).await.is_err());
    }
}
