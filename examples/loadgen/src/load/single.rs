//! One measured run in one process: warm up, measure, drain, report. With [`Pace::Once`] it is
//! the idle probe: RSS with every client connected and silent, then one broadcast to all.

use std::time::Instant;

use super::session::Session;
use super::stats::Senders;
use super::{LoadConfig, Measured, Pace, read_cpu, read_rss};
use crate::LoadError;
use crate::cpu::read_cpu_seconds;
use crate::report::{LatencyMs, Report};

pub(crate) async fn run(config: LoadConfig) -> Result<Report, LoadError> {
    let rss_before = read_rss(&config.pids)?;
    let mut session = Session::connect(&config, Senders::single()).await?;
    let rss_after = read_rss(&config.pids)?;
    if config.pace == Pace::Once {
        // After the idle RSS: the readiness echo is each connection's first message.
        session.ready(config.connect_timeout).await;
    } else if !config.warmup.is_zero() {
        tracing::info!(secs = config.warmup.as_secs_f64(), "warm-up");
        session
            .driver
            .drive(true, Instant::now() + config.warmup)
            .await;
    }
    tracing::info!(secs = config.duration.as_secs_f64(), "measuring");
    let me = std::process::id();
    let server_cpu_start = read_cpu(&config.pids)?;
    let client_cpu_start = read_cpu_seconds(me)?;
    let measure_start = Instant::now();
    let measure_start_us = session.shared.now_us();
    session
        .driver
        .drive(false, measure_start + config.duration)
        .await;
    let send_window_s = measure_start.elapsed().as_secs_f64();
    session.drain(session.driver.issued(), config.drain).await;
    let server_cpu_end = read_cpu(&config.pids)?;
    let client_cpu_end = read_cpu_seconds(me)?;
    let rss_after_traffic = read_rss(&config.pids)?;
    let (connected, connect_failures, connect_s) = (
        session.connected,
        session.connect_failures,
        session.connect_s,
    );
    let shared = std::sync::Arc::clone(&session.shared);
    let (totals, disconnects) = session.finish().await;
    Ok(Measured {
        procs: 1,
        connected,
        connect_failures,
        disconnects,
        connect_s,
        totals,
        latency: LatencyMs::from_micros(&shared.merged_latency()),
        send_window_s,
        measure_start_us,
        rss_before,
        rss_after,
        rss_after_traffic,
        server_cpu_s: server_cpu_start.zip(server_cpu_end).map(|(a, b)| b - a),
        client_cpu_s: client_cpu_end - client_cpu_start,
        ladder: None,
    }
    .report(&config))
}
