//! Logs to stderr (text or JSON) filtered by `RUST_LOG`, and traces to an OTLP collector when
//! `OTEL_EXPORTER_OTLP_ENDPOINT` is set.

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::config::{ConfigError, check_url};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, clap::Args)]
pub struct TelemetryArgs {
    /// OTLP/gRPC collector for traces, e.g. http://otel-collector:4317. Unset: no traces exported.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
    pub otel_exporter_otlp_endpoint: Option<String>,

    /// Log filter, in tracing's EnvFilter syntax.
    #[arg(long, env = "RUST_LOG", default_value = "info")]
    pub rust_log: String,

    /// Log line format on stderr.
    #[arg(long, env = "EMAIL2SMS_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

impl TelemetryArgs {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if let Some(endpoint) = &self.otel_exporter_otlp_endpoint {
            check_url("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint, &["http", "https"])?;
        }
        EnvFilter::try_new(&self.rust_log).map_err(|e| ConfigError::Invalid {
            name: "RUST_LOG",
            reason: e.to_string(),
        })?;
        Ok(())
    }
}

/// Flushes buffered spans when dropped at the end of `main`.
#[derive(Debug)]
pub struct TelemetryGuard {
    provider: Option<SdkTracerProvider>,
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take()
            && let Err(error) = provider.shutdown()
        {
            eprintln!("could not flush traces: {error}");
        }
    }
}

/// Targets that would log message bodies, capped whatever `RUST_LOG` says:
/// * lapin logs every message the broker returns as unroutable at WARN with its whole body (3 KB
///   of bytes for a status event, phone numbers included); its callers report an unroutable
///   message themselves, by routing key.
/// * rusmpp logs every SMPP PDU it encodes or decodes at DEBUG, destination number and text
///   included.
const SILENCED: [&str; 2] = ["lapin::returned_messages=off", "rusmpp::codec=info"];

/// The log filter of every binary: `RUST_LOG` (`rust_log`), with the targets that would log
/// message bodies turned off.
pub fn log_filter(rust_log: &str) -> Result<EnvFilter, ConfigError> {
    let filter = EnvFilter::try_new(rust_log).map_err(|e| ConfigError::Invalid {
        name: "RUST_LOG",
        reason: e.to_string(),
    })?;
    Ok(SILENCED.iter().fold(filter, |filter, directive| {
        filter.add_directive(directive.parse().expect("a valid directive"))
    }))
}

/// Installs the global subscriber. Must run inside the Tokio runtime (the OTLP exporter uses it).
pub fn init(service: &'static str, args: &TelemetryArgs) -> Result<TelemetryGuard, ConfigError> {
    let filter = log_filter(&args.rust_log)?;
    let fmt = match args.log_format {
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            // Colour codes are noise in files, pipes and log collectors.
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .with_writer(std::io::stderr)
            .boxed(),
    };
    let (otel, provider) = match &args.otel_exporter_otlp_endpoint {
        None => (None, None),
        Some(endpoint) => {
            let exporter = opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_endpoint(endpoint)
                .build()
                .map_err(|e| ConfigError::Telemetry(e.to_string()))?;
            let provider = SdkTracerProvider::builder()
                .with_batch_exporter(exporter)
                .with_resource(
                    opentelemetry_sdk::Resource::builder()
                        .with_service_name(service)
                        .build(),
                )
                .build();
            let layer = tracing_opentelemetry::layer().with_tracer(provider.tracer(service));
            (Some(layer), Some(provider))
        }
    };
    tracing_subscriber::registry()
        .with(filter)
        .with(fmt)
        .with(otel)
        .try_init()
        .map_err(|e| ConfigError::Telemetry(e.to_string()))?;
    Ok(TelemetryGuard { provider })
}
