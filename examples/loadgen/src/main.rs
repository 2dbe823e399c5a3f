//! `loadgen`: drive a websocket-shootout server and print one JSON line of results.
//!
//! Teaches: measuring a WebSocket fan-out honestly (latency, loss and duplicates per delivery,
//! server RSS per connection), with every phase bounded in time.
//!
//! ```text
//! # terminal 1: the hand-written ceiling server
//! cargo run --release -p loadgen --bin ceiling-server -- --bind 127.0.0.1:8000 --mode local
//! # terminal 2: 1,000 clients, as many broadcasts as 64 in flight allow, for 10 s
//! cargo run --release -p loadgen --bin loadgen -- --url ws://127.0.0.1:8000/ws \
//!     --clients 1000 --mode broadcast --max 64 --duration 10 --pid $(pgrep -n ceiling-server)
//! # fixed rate: 40 broadcasts/s, read p99 latency
//! cargo run --release -p loadgen --bin loadgen -- --url ws://127.0.0.1:8000/ws \
//!     --clients 1000 --mode broadcast --rate 40 --duration 10
//! ```

use std::net::IpAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use loadgen::load::{self, LadderSpec, LoadConfig, Mode, Pace, Senders};
use tracing_subscriber::EnvFilter;

/// Load generator for the websocket-shootout protocol; prints one JSON line.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Server URL (repeatable); clients are spread round-robin over the URLs.
    #[arg(long = "url", required = true)]
    urls: Vec<String>,
    /// Number of clients to connect.
    #[arg(long, default_value_t = 1000)]
    clients: usize,
    /// WebSocket handshakes in progress at once.
    #[arg(long, default_value_t = 200)]
    connect_concurrency: usize,
    /// Seconds allowed for one handshake.
    #[arg(long, default_value_t = 10.0)]
    connect_timeout: f64,
    /// Echo (each frame comes back to its sender) or broadcast (each frame goes to everyone).
    #[arg(long, value_enum, default_value_t = Mode::Broadcast)]
    mode: Mode,
    /// Frames per second over all clients.
    #[arg(long, conflicts_with_all = ["max", "idle", "ladder"])]
    rate: Option<f64>,
    /// Idle probe: connect, read server RSS, send one broadcast, wait until everyone has it,
    /// read RSS again (`latency_ms.max` is the time it took to reach everyone).
    #[arg(long, conflicts_with_all = ["max", "ladder"])]
    idle: bool,
    /// Ladder of broadcast rates START,STEP,MAX: each step runs --step-seconds and passes with
    /// p99 under --ladder-p99-ms and nothing lost; reports the highest passing rate.
    #[arg(long, value_name = "START,STEP,MAX", conflicts_with = "max")]
    ladder: Option<String>,
    /// Seconds per ladder step.
    #[arg(long, default_value_t = 6.0)]
    step_seconds: f64,
    /// A ladder step passes with a p99 latency below this many milliseconds.
    #[arg(long, default_value_t = 250.0)]
    ladder_p99_ms: f64,
    /// Load generator processes: this one spawns N children with a share of the clients
    /// each, and merges their results (broadcasts from any child count for every client).
    #[arg(long, default_value_t = 1)]
    procs: usize,
    /// Local address to connect from (repeatable; round-robin over clients), e.g. several
    /// 127.0.0.x so that 100,000 connections do not run out of ports.
    #[arg(long = "source-ip")]
    source_ips: Vec<IpAddr>,
    /// Index of the first client (set by a multi-process parent for its children).
    #[arg(long, default_value_t = 0, hide = true)]
    first_client: usize,
    /// BASE,INDEX,COUNT: run as child INDEX of a multi-process run (set by the parent).
    #[arg(long, hide = true)]
    child: Option<String>,
    /// As fast as possible with at most this many frames in flight [default: 16].
    #[arg(long)]
    max: Option<u64>,
    /// Seconds of measured sending.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Seconds of unmeasured sending first.
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Longest wait in seconds for in-flight deliveries before counting losses.
    #[arg(long, default_value_t = 2.0)]
    drain: f64,
    /// Minimum payload size in bytes.
    #[arg(long, default_value_t = 64)]
    payload_bytes: usize,
    /// Server pid whose RSS growth per connection is reported (repeatable).
    #[arg(long = "pid")]
    pids: Vec<u32>,
    /// Allow non-loopback servers.
    #[arg(long)]
    allow_remote: bool,
    /// Print nothing but the JSON line.
    #[arg(long)]
    json_only: bool,
}

fn seconds(name: &str, secs: f64) -> Result<Duration, String> {
    Duration::try_from_secs_f64(secs)
        .map_err(|_| format!("--{name} must be a non-negative number of seconds"))
}

fn numbers<const N: usize>(flag: &str, text: &str) -> Result<[f64; N], String> {
    let parts: Vec<&str> = text.split(',').collect();
    let bad = || format!("--{flag} takes {N} comma-separated numbers, got `{text}`");
    if parts.len() != N {
        return Err(bad());
    }
    let mut out = [0.0; N];
    for (slot, part) in out.iter_mut().zip(parts) {
        *slot = part.trim().parse().map_err(|_| bad())?;
    }
    Ok(out)
}

fn ladder(args: &Args) -> Result<Option<LadderSpec>, String> {
    let Some(text) = &args.ladder else {
        return Ok(None);
    };
    let [start, step, max] = numbers::<3>("ladder", text)?;
    Ok(Some(LadderSpec {
        start,
        step,
        max,
        step_time: seconds("step-seconds", args.step_seconds)?,
        p99_limit: seconds("ladder-p99-ms", args.ladder_p99_ms / 1000.0)?,
    }))
}

fn child(args: &Args) -> Result<Option<Senders>, String> {
    let Some(text) = &args.child else {
        return Ok(None);
    };
    let bad = || format!("--child takes BASE,INDEX,COUNT, got `{text}`");
    let parts: Vec<u64> = text
        .split(',')
        .map(|p| p.parse().map_err(|_| bad()))
        .collect::<Result<_, _>>()?;
    let [base, index, count] = parts[..] else {
        return Err(bad());
    };
    let (index, count) = (
        usize::try_from(index).map_err(|_| bad())?,
        usize::try_from(count).map_err(|_| bad())?,
    );
    if index >= count {
        return Err(bad());
    }
    Ok(Some(Senders { base, index, count }))
}

fn config(args: Args) -> Result<(LoadConfig, Option<Senders>), String> {
    let pace = match (args.rate, args.max) {
        _ if args.idle => Pace::Once,
        (Some(rate), _) => Pace::Rate(rate),
        (None, max) => Pace::Max(max.unwrap_or(16)),
    };
    let ladder = ladder(&args)?;
    let child = child(&args)?;
    let config = LoadConfig {
        command: shell_words(std::env::args()),
        urls: args.urls,
        clients: args.clients,
        connect_concurrency: args.connect_concurrency,
        connect_timeout: seconds("connect-timeout", args.connect_timeout)?,
        mode: args.mode,
        pace,
        warmup: seconds("warmup", args.warmup)?,
        duration: seconds("duration", args.duration)?,
        drain: seconds("drain", args.drain)?,
        payload_bytes: args.payload_bytes,
        pids: args.pids,
        source_ips: args.source_ips,
        procs: args.procs,
        first_client: args.first_client,
        ladder,
        allow_remote: args.allow_remote,
    };
    Ok((config, child))
}

/// Joins argv, quoting the words a shell would split.
fn shell_words(args: impl Iterator<Item = String>) -> String {
    args.map(|a| {
        if !a.is_empty()
            && a.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_./:=,@".contains(c))
        {
            a
        } else {
            format!("'{}'", a.replace('\'', r"'\''"))
        }
    })
    .collect::<Vec<_>>()
    .join(" ")
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let default_level = if args.json_only { "warn" } else { "info" };
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level)),
        )
        .init();
    match loadgen::nofile::raise_nofile_limit() {
        Ok(limit) => tracing::info!(limit, "open-file limit"),
        Err(e) => tracing::warn!(error = %e, "could not raise the open-file limit"),
    }
    let (config, child) = match config(args) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("loadgen: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(senders) = child {
        return match load::run_child(config, senders).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => fail(&e),
        };
    }
    match load::run(config).await {
        Ok(report) => match serde_json::to_string(&report) {
            Ok(line) => {
                println!("{line}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("loadgen: cannot render the report: {e}");
                ExitCode::FAILURE
            }
        },
        Err(e) => fail(&e),
    }
}

fn fail(e: &loadgen::LoadError) -> ExitCode {
    eprintln!("loadgen: {e}");
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        eprintln!("  caused by: {cause}");
        source = cause.source();
    }
    ExitCode::FAILURE
}
