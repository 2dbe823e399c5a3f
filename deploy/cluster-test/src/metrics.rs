//! Reading a server's Prometheus `/metrics`.

use std::net::SocketAddr;

use anyhow::{Context, bail};

use crate::http::http_get;
pub use test_support::metric_value;

/// The `channels_connections_open` gauge of the server at `addr` (its own
/// port, not the load balancer's).
///
/// # Errors
/// When `/metrics` does not answer 200 or lacks the gauge.
pub async fn connections_open(addr: SocketAddr) -> anyhow::Result<u64> {
    let response = http_get(addr, "/metrics").await?;
    if response.status != 200 {
        bail!("GET http://{addr}/metrics answered {}", response.status);
    }
    let value = metric_value(&response.body, "channels_connections_open")
        .with_context(|| format!("no channels_connections_open in http://{addr}/metrics"))?;
    // A gauge of connections is a small whole number; anything else is a bug.
    if value < 0.0 || value.fract() != 0.0 || value > 1e9 {
        bail!("channels_connections_open is {value} at {addr}");
    }
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)] // checked just above
    Ok(value as u64)
}

/// The value of one series (`name` or `name{label="value"}`) in the
/// `/metrics` of the server at `addr` (its own port, not the load
/// balancer's).
///
/// # Errors
/// When `/metrics` does not answer 200 or lacks the series.
pub async fn server_metric(addr: SocketAddr, series: &str) -> anyhow::Result<f64> {
    let response = http_get(addr, "/metrics").await?;
    if response.status != 200 {
        bail!("GET http://{addr}/metrics answered {}", response.status);
    }
    metric_value(&response.body, series)
        .with_context(|| format!("no {series} in http://{addr}/metrics"))
}
