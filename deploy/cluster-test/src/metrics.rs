//! Reading a server's Prometheus `/metrics`.

use std::net::SocketAddr;

use anyhow::{Context, bail};

use crate::http::http_get;

/// The value of the first sample of metric `name` (with or without labels)
/// in a Prometheus text exposition, if there is one.
pub fn metric_value(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| {
            let rest = line.strip_prefix(name)?;
            let rest = if let Some(labelled) = rest.strip_prefix('{') {
                labelled.split_once('}')?.1
            } else {
                rest
            };
            rest.strip_prefix(' ')?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_plain_and_labelled_samples() {
        let text = "# HELP channels_connections_open x\n# TYPE channels_connections_open gauge\n\
                    channels_connections_open 4\nchannels_connections_open_total 9\n\
                    channels_layer_ops_total{op=\"send\"} 12\n";
        assert_eq!(metric_value(text, "channels_connections_open"), Some(4.0));
        assert_eq!(metric_value(text, "channels_layer_ops_total"), Some(12.0));
        assert_eq!(metric_value(text, "channels_missing"), None);
    }
}
