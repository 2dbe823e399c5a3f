//! Logging (text or JSON lines, filtered by `RUST_LOG`) and, with the `otel`
//! cargo feature, OpenTelemetry traces exported over OTLP/HTTP to
//! `OTEL_EXPORTER_OTLP_ENDPOINT` (the standard variable; unset: no export).

use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer, Registry};

use crate::config::LogFormat;

/// The subscriber the output layers sit on.
type Filtered = tracing_subscriber::layer::Layered<EnvFilter, Registry>;

/// Keeps the trace exporter alive; dropping it flushes and stops it. Hold it
/// until the process exits (drop it outside the async runtime: the OTLP
/// exporter blocks while it flushes).
#[derive(Debug, Default)]
pub struct Telemetry {
    #[cfg(feature = "otel")]
    provider: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        #[cfg(feature = "otel")]
        if let Some(provider) = self.provider.take()
            && let Err(error) = provider.shutdown()
        {
            eprintln!("channels-server: flushing OpenTelemetry traces failed: {error}");
        }
    }
}

/// Installs the global subscriber; does nothing if one is installed already.
pub(crate) fn init(format: LogFormat) -> Telemetry {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // Colour only on a terminal, so piped logs stay plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    #[allow(unused_mut)] // pushed to with the `otel` feature only
    let mut layers: Vec<Box<dyn Layer<Filtered> + Send + Sync>> = vec![match format {
        LogFormat::Text => tracing_subscriber::fmt::layer().with_ansi(ansi).boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer().json().boxed(),
    }];
    #[allow(unused_mut)] // mutated with the `otel` feature only
    let mut telemetry = Telemetry::default();
    #[cfg(feature = "otel")]
    if let Some(provider) = otel::provider() {
        use opentelemetry::trace::TracerProvider as _;
        let tracer = provider.tracer("channels-server");
        layers.push(tracing_opentelemetry::layer().with_tracer(tracer).boxed());
        telemetry.provider = Some(provider);
    }
    // Another subscriber being installed already is fine (tests, embedders).
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(layers)
        .try_init();
    telemetry
}

#[cfg(feature = "otel")]
mod otel {
    use opentelemetry_otlp::SpanExporter;
    use opentelemetry_sdk::Resource;
    use opentelemetry_sdk::trace::SdkTracerProvider;

    /// The variables that turn export on (the SDK reads them itself).
    const ENDPOINT_VARS: [&str; 2] = [
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    ];

    /// A batch-exporting tracer provider, when an endpoint is configured.
    pub(super) fn provider() -> Option<SdkTracerProvider> {
        if ENDPOINT_VARS
            .iter()
            .all(|name| std::env::var_os(name).is_none())
        {
            return None;
        }
        let exporter = match SpanExporter::builder().with_http().build() {
            Ok(exporter) => exporter,
            Err(error) => {
                eprintln!("channels-server: OpenTelemetry export is off: {error}");
                return None;
            }
        };
        let resource = Resource::builder()
            .with_service_name("channels-server")
            .build();
        Some(
            SdkTracerProvider::builder()
                .with_batch_exporter(exporter)
                .with_resource(resource)
                .build(),
        )
    }
}
