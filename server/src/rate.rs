//! `--connection-rate`: new WebSocket connections per second per client
//! address, a token bucket per address (burst = one second's worth). An
//! upgrade over the rate gets 429 and counts as
//! `channels_connections_refused_total{reason="rate"}`.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use axum::extract::connect_info::ConnectInfo;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::Response;

use crate::metrics::{Metrics, Refusal};
use crate::middleware::json_error;

/// Buckets are swept (full ones forgotten) once the table holds this many.
const SWEEP_AT: usize = 4096;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

/// Token buckets by client address.
#[derive(Debug, Clone)]
pub(crate) struct ConnectionRate {
    per_second: f64,
    buckets: Arc<Mutex<HashMap<IpAddr, Bucket>>>,
    metrics: Arc<Metrics>,
}

impl ConnectionRate {
    pub(crate) fn new(per_second: u32, metrics: Arc<Metrics>) -> Self {
        Self {
            per_second: f64::from(per_second.max(1)),
            buckets: Arc::default(),
            metrics,
        }
    }

    /// Takes a token for `ip` at `now`; `false` when its bucket is empty.
    fn try_take(&self, ip: IpAddr, now: Instant) -> bool {
        let burst = self.per_second;
        let mut buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        if buckets.len() >= SWEEP_AT {
            let rate = self.per_second;
            buckets.retain(|_, bucket| {
                bucket.tokens + now.duration_since(bucket.updated).as_secs_f64() * rate < burst
            });
        }
        let bucket = buckets.entry(ip).or_insert(Bucket {
            tokens: burst,
            updated: now,
        });
        let refill = now.duration_since(bucket.updated).as_secs_f64() * self.per_second;
        bucket.tokens = (bucket.tokens + refill).min(burst);
        bucket.updated = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Middleware: 429 when the client address is over its rate.
pub(crate) async fn limit_rate(
    State(rate): State<ConnectionRate>,
    request: Request,
    next: Next,
) -> Response {
    let client = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|info| info.0.ip());
    if let Some(ip) = client
        && !rate.try_take(ip, Instant::now())
    {
        rate.metrics.refuse(Refusal::Rate);
        tracing::info!(%ip, "websocket refused: connection rate exceeded");
        return json_error(
            StatusCode::TOO_MANY_REQUESTS,
            "too many new connections from this address; slow down",
        );
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_bucket_allows_a_burst_then_refills_at_the_rate() {
        let rate = ConnectionRate::new(2, Arc::default());
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let start = Instant::now();
        assert!(rate.try_take(a, start));
        assert!(rate.try_take(a, start));
        assert!(!rate.try_take(a, start));
        // Another address has its own bucket.
        assert!(rate.try_take(b, start));
        // Half a second refills one token at 2/s.
        assert!(rate.try_take(a, start + Duration::from_millis(500)));
        assert!(!rate.try_take(a, start + Duration::from_millis(500)));
        // Never more than the burst.
        let later = start + Duration::from_secs(60);
        assert!(rate.try_take(a, later));
        assert!(rate.try_take(a, later));
        assert!(!rate.try_take(a, later));
    }

    #[test]
    fn full_buckets_are_forgotten() {
        let rate = ConnectionRate::new(1, Arc::default());
        let start = Instant::now();
        for i in 0..SWEEP_AT {
            let ip = IpAddr::from([10, 0, (i / 256) as u8, (i % 256) as u8]);
            assert!(rate.try_take(ip, start));
        }
        let later = start + Duration::from_secs(5);
        assert!(rate.try_take("192.0.2.9".parse().unwrap(), later));
        assert_eq!(rate.buckets.lock().unwrap().len(), 1);
    }
}
