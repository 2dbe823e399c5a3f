//! The ladder: one set of clients, broadcast rates rising step by step; each step passes when
//! its p99 is under the limit and it lost and duplicated nothing. The highest passing rate is
//! the sustained rate the server holds.
//!
//! A step's deliveries are drained (bounded by `--drain`) before the next step starts, so every
//! delivery of a passing step is counted in that step; a delivery that misses its drain makes
//! its step fail, which ends the ladder.

use std::time::Instant;

use super::session::Session;
use super::stats::Senders;
use super::{LadderSpec, LoadConfig, Measured, Pace, read_cpu, read_rss};
use crate::LoadError;
use crate::cpu::read_cpu_seconds;
use crate::report::{LadderReport, LadderStep, LatencyMs, Report, per_sec};

pub(crate) async fn run(config: LoadConfig, spec: LadderSpec) -> Result<Report, LoadError> {
    let rss_before = read_rss(&config.pids)?;
    let mut session = Session::connect(&config, Senders::single()).await?;
    let rss_after = read_rss(&config.pids)?;
    if !config.warmup.is_zero() {
        session.driver.set_pace(Pace::Rate(spec.start));
        session
            .driver
            .drive(true, Instant::now() + config.warmup)
            .await;
        session.drain(session.driver.issued(), config.drain).await;
        session.flush_latency().await;
    }
    let me = std::process::id();
    let server_cpu_start = read_cpu(&config.pids)?;
    let client_cpu_start = read_cpu_seconds(me)?;
    let measure_start = Instant::now();
    let measure_start_us = session.shared.now_us();
    let mut all_latency = super::stats::new_histogram();
    let mut steps = Vec::new();
    let mut highest_passing_rate = None;
    let mut rate = spec.start;
    while rate <= spec.max * (1.0 + 1e-9) {
        session.shared.reset_latency();
        let before = session.totals();
        session.driver.set_pace(Pace::Rate(rate));
        let step_start = Instant::now();
        session
            .driver
            .drive(false, step_start + spec.step_time)
            .await;
        let send_window = step_start.elapsed().as_secs_f64();
        session.drain(session.driver.issued(), config.drain).await;
        session.flush_latency().await;
        let delta = session.totals().since(&before);
        let hist = session.shared.merged_latency();
        all_latency
            .add(&hist)
            .expect("every histogram shares the same bounds");
        let latency = LatencyMs::from_micros(&hist);
        let expected = delta.sent * session.connected;
        let lost = expected.saturating_sub(delta.received);
        let passed = lost == 0
            && delta.duplicated == 0
            && delta.sent > 0
            && latency.p99 < spec.p99_limit.as_secs_f64() * 1000.0;
        tracing::info!(rate, lost, p99 = latency.p99, passed, "ladder step");
        steps.push(LadderStep {
            rate,
            sent: delta.sent,
            broadcasts_per_sec: per_sec(delta.sent, send_window),
            expected,
            received: delta.received,
            lost,
            duplicated: delta.duplicated,
            latency_ms: latency,
            deliveries_per_sec: per_sec(delta.received, send_window),
            passed,
        });
        if !passed {
            break;
        }
        highest_passing_rate = Some(rate);
        rate += spec.step;
    }
    let send_window_s = measure_start.elapsed().as_secs_f64();
    let server_cpu_end = read_cpu(&config.pids)?;
    let client_cpu_end = read_cpu_seconds(me)?;
    let rss_after_traffic = read_rss(&config.pids)?;
    let (connected, connect_failures, connect_s) = (
        session.connected,
        session.connect_failures,
        session.connect_s,
    );
    let (totals, disconnects) = session.finish().await;
    Ok(Measured {
        procs: 1,
        connected,
        connect_failures,
        disconnects,
        connect_s,
        totals,
        latency: LatencyMs::from_micros(&all_latency),
        send_window_s,
        measure_start_us,
        rss_before,
        rss_after,
        rss_after_traffic,
        server_cpu_s: server_cpu_start.zip(server_cpu_end).map(|(a, b)| b - a),
        client_cpu_s: client_cpu_end - client_cpu_start,
        ladder: Some(LadderReport {
            p99_limit_ms: spec.p99_limit.as_secs_f64() * 1000.0,
            step_s: spec.step_time.as_secs_f64(),
            highest_passing_rate,
            steps,
        }),
    }
    .report(&config))
}
