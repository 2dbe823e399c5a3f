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

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use loadgen::load::{self, LoadConfig, Mode, Pace};
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
    #[arg(long, conflicts_with = "max")]
    rate: Option<f64>,
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

fn config(args: Args) -> Result<LoadConfig, String> {
    let pace = match (args.rate, args.max) {
        (Some(rate), _) => Pace::Rate(rate),
        (None, max) => Pace::Max(max.unwrap_or(16)),
    };
    Ok(LoadConfig {
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
        allow_remote: args.allow_remote,
    })
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
    let config = match config(args) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("loadgen: {e}");
            return ExitCode::from(2);
        }
    };
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
        Err(e) => {
            eprintln!("loadgen: {e}");
            let mut source = std::error::Error::source(&e);
            while let Some(cause) = source {
                eprintln!("  caused by: {cause}");
                source = cause.source();
            }
            ExitCode::FAILURE
        }
    }
}
