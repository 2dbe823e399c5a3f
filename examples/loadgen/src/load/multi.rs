//! The parent of a multi-process run (`--procs N`): spawns N `loadgen` children with a share
//! of the clients each, orders their phases (see [`super::child`]), samples the servers' and
//! the children's CPU time around the measured window, and merges the children's counts into
//! one report.

use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::time::timeout;

use super::child::{ChildEvent, ParentOrder};
use super::stats::{Senders, Totals, new_histogram};
use super::{LoadConfig, Measured, Pace, read_cpu, read_rss};
use crate::LoadError;
use crate::report::{LatencyMs, Report};

/// Slack added to every phase's own bound before the parent gives up on a child.
const PHASE_SLACK: Duration = Duration::from_secs(20);

struct ChildProcess {
    process: Child,
    stdin: ChildStdin,
    events: Lines<BufReader<ChildStdout>>,
    index: usize,
}

impl ChildProcess {
    async fn next(&mut self, limit: Duration) -> Result<ChildEvent, LoadError> {
        let index = self.index;
        let failed = |what: String| LoadError::InvalidOption {
            reason: format!("loadgen child {index}: {what}"),
        };
        let line = timeout(limit, self.events.next_line())
            .await
            .map_err(|_| failed(format!("no word within {limit:?}")))??
            .ok_or_else(|| failed("exited early (see its stderr above)".to_owned()))?;
        serde_json::from_str(&line).map_err(|e| failed(format!("bad event `{line}`: {e}")))
    }

    async fn order(&mut self, order: &ParentOrder) -> Result<(), LoadError> {
        let mut line = serde_json::to_string(order).map_err(|e| LoadError::InvalidOption {
            reason: format!("cannot encode an order: {e}"),
        })?;
        line.push('\n');
        self.stdin.write_all(line.as_bytes()).await?;
        self.stdin.flush().await?;
        Ok(())
    }
}

/// The command-line arguments of child `index` out of `procs`.
fn child_args(config: &LoadConfig, senders: Senders, clients: usize, first: usize) -> Vec<String> {
    let procs = senders.count;
    let index = senders.index;
    let mut args: Vec<String> = Vec::new();
    let push = |args: &mut Vec<String>, k: &str, v: String| {
        args.push(k.to_owned());
        args.push(v);
    };
    for url in &config.urls {
        push(&mut args, "--url", url.clone());
    }
    push(&mut args, "--clients", clients.to_string());
    push(&mut args, "--first-client", first.to_string());
    push(
        &mut args,
        "--connect-concurrency",
        (config.connect_concurrency / procs).max(1).to_string(),
    );
    push(
        &mut args,
        "--connect-timeout",
        config.connect_timeout.as_secs_f64().to_string(),
    );
    push(&mut args, "--mode", config.mode.as_str().to_owned());
    match config.pace {
        Pace::Rate(r) => push(&mut args, "--rate", (r / procs as f64).to_string()),
        Pace::Max(m) => {
            // Split the in-flight bound; the first children take the remainder.
            let share = m / procs as u64 + u64::from((index as u64) < m % procs as u64);
            push(&mut args, "--max", share.max(1).to_string());
        }
        Pace::Once => args.push("--idle".to_owned()),
    }
    push(
        &mut args,
        "--duration",
        config.duration.as_secs_f64().to_string(),
    );
    push(
        &mut args,
        "--warmup",
        config.warmup.as_secs_f64().to_string(),
    );
    push(&mut args, "--drain", config.drain.as_secs_f64().to_string());
    push(
        &mut args,
        "--payload-bytes",
        config.payload_bytes.to_string(),
    );
    for ip in &config.source_ips {
        push(&mut args, "--source-ip", ip.to_string());
    }
    push(
        &mut args,
        "--child",
        format!("{},{},{}", senders.base, senders.index, senders.count),
    );
    if config.allow_remote {
        args.push("--allow-remote".to_owned());
    }
    args.push("--json-only".to_owned());
    args
}

async fn each<T>(
    children: &mut [ChildProcess],
    limit: Duration,
    mut pick: impl FnMut(ChildEvent) -> Option<T>,
) -> Result<Vec<T>, LoadError> {
    let mut out = Vec::with_capacity(children.len());
    for child in children.iter_mut() {
        let event = child.next(limit).await?;
        let index = child.index;
        out.push(pick(event).ok_or_else(|| LoadError::InvalidOption {
            reason: format!("loadgen child {index}: event out of order"),
        })?);
    }
    Ok(out)
}

pub(crate) async fn run(config: LoadConfig) -> Result<Report, LoadError> {
    let procs = config.procs;
    let base = Senders::single().base;
    let exe = std::env::current_exe()?;
    let rss_before = read_rss(&config.pids)?;
    let mut children = Vec::with_capacity(procs);
    let mut first = config.first_client;
    for index in 0..procs {
        let clients = config.clients / procs + usize::from(index < config.clients % procs);
        let senders = Senders {
            base,
            index,
            count: procs,
        };
        let mut process = Command::new(&exe)
            .args(child_args(&config, senders, clients, first))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()?;
        first += clients;
        let stdin = process.stdin.take().expect("stdin is piped");
        let stdout = process.stdout.take().expect("stdout is piped");
        children.push(ChildProcess {
            process,
            stdin,
            events: BufReader::new(stdout).lines(),
            index,
        });
    }
    let child_pids: Vec<u32> = children.iter().filter_map(|c| c.process.id()).collect();

    let rounds = (config.clients / config.connect_concurrency.max(1) + 1) as u32;
    let connected = each(
        &mut children,
        config.connect_timeout * rounds + PHASE_SLACK,
        |e| match e {
            ChildEvent::Connected {
                clients,
                failures,
                connect_s,
            } => Some((clients, failures, connect_s)),
            _ => None,
        },
    )
    .await?;
    let rss_after = read_rss(&config.pids)?;
    for child in &mut children {
        child.order(&ParentOrder::Go).await?;
    }
    if config.pace == Pace::Once {
        each(
            &mut children,
            config.connect_timeout + PHASE_SLACK,
            |e| match e {
                ChildEvent::Ready { .. } => Some(()),
                _ => None,
            },
        )
        .await?;
        for child in &mut children {
            child.order(&ParentOrder::Send).await?;
        }
    }
    let starts = each(&mut children, config.warmup + PHASE_SLACK, |e| match e {
        ChildEvent::Measuring { start_us } => Some(start_us),
        _ => None,
    })
    .await?;
    let server_cpu_start = read_cpu(&config.pids)?;
    let client_cpu_start = read_cpu(&child_pids)?.unwrap_or(0.0);
    let measure_start = Instant::now();
    let sent = each(&mut children, config.duration + PHASE_SLACK, |e| match e {
        ChildEvent::Sent {
            issued,
            send_window_s,
        } => Some((issued, send_window_s)),
        _ => None,
    })
    .await?;
    let issued: Vec<u64> = sent.iter().map(|(issued, _)| *issued).collect();
    for child in &mut children {
        child
            .order(&ParentOrder::Drain {
                issued: issued.clone(),
            })
            .await?;
    }
    each(&mut children, config.drain + PHASE_SLACK, |e| match e {
        ChildEvent::Drained => Some(()),
        _ => None,
    })
    .await?;
    let server_cpu_end = read_cpu(&config.pids)?;
    let client_cpu_end = read_cpu(&child_pids)?.unwrap_or(0.0);
    let rss_after_traffic = read_rss(&config.pids)?;
    tracing::info!(
        window_s = measure_start.elapsed().as_secs_f64(),
        "children drained"
    );
    let done = each(&mut children, PHASE_SLACK, |e| match e {
        ChildEvent::Done {
            totals,
            disconnects,
            latency,
        } => Some((totals, disconnects, latency)),
        _ => None,
    })
    .await?;
    for child in &mut children {
        let _status = timeout(PHASE_SLACK, child.process.wait()).await;
    }

    let mut totals = Totals::default();
    let mut disconnects = 0;
    let mut hist = new_histogram();
    for (t, d, latency) in &done {
        totals.add(t);
        disconnects += d;
        for (value, count) in latency {
            hist.saturating_record_n(*value, *count);
        }
    }
    Ok(Measured {
        procs,
        connected: connected.iter().map(|c| c.0).sum(),
        connect_failures: connected.iter().map(|c| c.1).sum(),
        disconnects,
        connect_s: connected.iter().map(|c| c.2).fold(0.0, f64::max),
        totals,
        latency: LatencyMs::from_micros(&hist),
        send_window_s: sent.iter().map(|s| s.1).fold(0.0, f64::max),
        measure_start_us: starts.iter().copied().min().unwrap_or(0),
        rss_before,
        rss_after,
        rss_after_traffic,
        server_cpu_s: server_cpu_start.zip(server_cpu_end).map(|(a, b)| b - a),
        client_cpu_s: client_cpu_end - client_cpu_start,
        ladder: None,
    }
    .report(&config))
}
