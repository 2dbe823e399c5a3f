//! `soak`: hold thousands of churning clients on one group with history for a long run, while
//! Redis is restarted under the servers, and report loss exactly (docs/protocol.md, "History
//! and recovery") along with the servers' RSS and open fds.
//!
//! Teaches: a long run is measured by what stays flat (RSS, fds) and by what nobody is told
//! (a silent gap); loss the clients were told about is judged against the outage windows.
//!
//! ```text
//! scripts/soak.sh                                  # 30 min, 5,000 clients, 2 servers, Redis restarted twice
//! DURATION=120 CLIENTS=500 scripts/soak.sh         # a short run
//! # by hand, against running servers (development mode, --history-size set):
//! cargo run --release -p loadgen --bin soak -- --url ws://127.0.0.1:8001/ws \
//!     --url ws://127.0.0.1:8002/ws --clients 1000 --duration 60 --pid 1234 --pid 1235
//! ```
//!
//! Prints one JSON line per sample (`"kind": "sample"`) and a final `"kind": "summary"` line;
//! exits 1 when the run was not clean.

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use loadgen::soak::{self, SoakConfig};
use tracing_subscriber::EnvFilter;

/// Soak run over channels-server gateways with group history; prints JSON lines.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Server URL (repeatable); clients are spread round-robin, the publisher uses the first.
    #[arg(long = "url", required = true)]
    urls: Vec<String>,
    /// Local address to connect from (repeatable; round-robin over clients).
    #[arg(long = "source-ip")]
    source_ips: Vec<IpAddr>,
    /// Subscribing clients.
    #[arg(long, default_value_t = 5000)]
    clients: usize,
    /// The group everyone subscribes to (it must keep history).
    #[arg(long, default_value = "soak")]
    group: String,
    /// Publishes per second.
    #[arg(long, default_value_t = 20.0)]
    rate: f64,
    /// Client reconnects per second over all clients; 0 disables churn.
    #[arg(long, default_value_t = 25.0)]
    churn: f64,
    /// Seconds of publishing.
    #[arg(long, default_value_t = 1800.0)]
    duration: f64,
    /// Seconds after the last publish for clients to catch up.
    #[arg(long, default_value_t = 10.0)]
    drain: f64,
    /// WebSocket handshakes in progress at once.
    #[arg(long, default_value_t = 100)]
    connect_concurrency: usize,
    /// Server process to sample (repeatable).
    #[arg(long = "pid")]
    pids: Vec<u32>,
    /// Seconds between samples.
    #[arg(long, default_value_t = 10.0)]
    sample_seconds: f64,
    /// Seconds of warm-up: the summary's `warm` RSS and fds are the first sample after it.
    #[arg(long, default_value_t = 60.0)]
    warmup: f64,
    /// START,END seconds since the start when Redis is away (repeatable).
    #[arg(long = "outage-window", value_name = "START,END")]
    outage_windows: Vec<String>,
    /// File of `START END` lines (seconds since the start), read at the end.
    #[arg(long, value_name = "PATH")]
    outage_file: Option<PathBuf>,
    /// Seconds after a window's end still counted inside it.
    #[arg(long, default_value_t = 5.0)]
    outage_grace: f64,
}

fn seconds(name: &str, value: f64) -> Result<Duration, String> {
    Duration::try_from_secs_f64(value).map_err(|_| format!("--{name} must be a positive number"))
}

fn config(args: Args) -> Result<SoakConfig, String> {
    let outage_windows = args
        .outage_windows
        .iter()
        .map(|w| {
            let (start, end) = w.split_once(',').ok_or("--outage-window takes START,END")?;
            match (start.trim().parse::<f64>(), end.trim().parse::<f64>()) {
                (Ok(s), Ok(e)) if s <= e => Ok((s, e)),
                _ => Err(format!("--outage-window `{w}`: need numbers START <= END")),
            }
        })
        .collect::<Result<_, String>>()?;
    Ok(SoakConfig {
        urls: args.urls,
        source_ips: args.source_ips,
        clients: args.clients,
        group: args.group,
        rate: args.rate,
        churn: args.churn,
        duration: seconds("duration", args.duration)?,
        drain: seconds("drain", args.drain)?,
        connect_concurrency: args.connect_concurrency,
        pids: args.pids,
        sample_every: seconds("sample-seconds", args.sample_seconds)?,
        warmup: seconds("warmup", args.warmup)?,
        outage_windows,
        outage_file: args.outage_file,
        outage_grace: args.outage_grace,
    })
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let config = match config(Args::parse()) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("soak: {e}");
            return ExitCode::from(2);
        }
    };
    if let Err(e) = loadgen::nofile::raise_nofile_limit() {
        eprintln!("soak: cannot raise the open-file limit: {e}");
    }
    match soak::run(config).await {
        Ok((summary, clean)) => {
            println!("{summary}");
            if clean {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            let mut message = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(cause) = source {
                message.push_str(&format!(": {cause}"));
                source = cause.source();
            }
            eprintln!("soak: {message}");
            ExitCode::from(2)
        }
    }
}
