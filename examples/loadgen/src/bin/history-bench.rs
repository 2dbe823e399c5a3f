//! `history-bench`: what group histories cost on the channels-server gateway; one JSON line per
//! run. `scripts/bench-history.sh` starts redis-server and the servers and runs all three parts.
//!
//! Teaches: measuring a feature's cost as a ratio in one sitting (the same broadcast with and
//! without history), the memory one kept message takes, and a thundering-herd recovery, each
//! checked for loss, duplicates and exactness, not only timed.
//!
//! ```text
//! redis-server --port 6390 --save '' --appendonly no &
//! cargo run --release -p channels-server -- --bind 127.0.0.1:8000 --layer redis \
//!     --redis-url redis://127.0.0.1:6390 --client-rate-limit 0 --history-size 1000 &
//! cargo run --release -p loadgen --bin history-bench -- throughput \
//!     --url ws://127.0.0.1:8000/ws --clients 1000 --messages 2000 --pid $(pgrep -n channels-server)
//! cargo run --release -p loadgen --bin history-bench -- recovery --url ws://127.0.0.1:8000/ws
//! # --history-size 10000 for:
//! cargo run --release -p loadgen --bin history-bench -- memory --url ws://127.0.0.1:8000/ws \
//!     --messages 10000 --data-bytes 100 --redis-url redis://127.0.0.1:6390
//! ```

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use loadgen::history::memory::{self, MemoryConfig};
use loadgen::history::recovery::{self, RecoveryConfig};
use loadgen::history::throughput::{self, ThroughputConfig};
use loadgen::nofile::raise_nofile_limit;
use loadgen::target::check_target;
use serde::Serialize;
use tracing_subscriber::EnvFilter;

/// Benchmarks of group histories over the gateway protocol; prints one JSON line.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    #[command(subcommand)]
    part: Part,
    /// Server URL, `ws://HOST/ws` (repeatable: clients are spread round-robin).
    #[arg(long = "url", global = true)]
    urls: Vec<String>,
    /// Server process whose CPU (and RSS) is read from /proc (repeatable).
    #[arg(long = "pid", global = true)]
    pids: Vec<u32>,
    /// The redis-server process, whose CPU is reported apart.
    #[arg(long, global = true)]
    redis_pid: Option<u32>,
    /// The group every client subscribes to.
    #[arg(long, default_value = "bench.history", global = true)]
    group: String,
    /// Size of each message's `data` in bytes.
    #[arg(long, default_value_t = 100, global = true)]
    data_bytes: usize,
    /// Publishes without their `published` answer at most.
    #[arg(long, default_value_t = 16, global = true)]
    in_flight: u64,
    /// Free text copied into the report (e.g. `redis history=1000`).
    #[arg(long, default_value = "", global = true)]
    label: String,
}

#[derive(Debug, Subcommand)]
enum Part {
    /// C subscribers, one publisher: deliveries/s, latency, loss, CPU per million deliveries.
    Throughput {
        /// Subscribers.
        #[arg(long, default_value_t = 1000)]
        clients: usize,
        /// Measured messages.
        #[arg(long, default_value_t = 2000)]
        messages: u64,
        /// Warm-up messages before them.
        #[arg(long, default_value_t = 100)]
        warmup: u64,
        /// Seconds to wait for the last deliveries.
        #[arg(long, default_value_t = 30)]
        drain: u64,
    },
    /// One subscriber, K messages: bytes per kept message (Redis `used_memory`, server RSS).
    Memory {
        /// Messages published (start the server with `--history-size` at least this).
        #[arg(long, default_value_t = 10_000)]
        messages: u64,
        /// The core layer's Redis, for `INFO memory` (omit on the memory layer).
        #[arg(long)]
        redis_url: Option<String>,
    },
    /// C clients leave, P messages are published, all reconnect at once with `recover`.
    Recovery {
        /// Clients.
        #[arg(long, default_value_t = 1000)]
        clients: usize,
        /// Messages published while they are away.
        #[arg(long, default_value_t = 100)]
        publications: u64,
    },
}

/// A report with what produced it.
#[derive(Debug, Serialize)]
struct Line<R> {
    part: &'static str,
    label: String,
    #[serde(flatten)]
    report: R,
    command: String,
}

async fn run(args: Args) -> Result<String, String> {
    if args.urls.is_empty() {
        return Err("give the server with --url ws://HOST/ws".to_owned());
    }
    for url in &args.urls {
        check_target(url, false).map_err(|e| e.to_string())?;
    }
    raise_nofile_limit().map_err(|e| format!("raising the open-file limit: {e}"))?;
    let command = std::env::args().collect::<Vec<_>>().join(" ");
    let line = |part, report: serde_json::Value| {
        serde_json::to_string(&Line {
            part,
            label: args.label.clone(),
            report,
            command: command.clone(),
        })
        .map_err(|e| e.to_string())
    };
    match args.part {
        Part::Throughput {
            clients,
            messages,
            warmup,
            drain,
        } => {
            let report = throughput::run(ThroughputConfig {
                urls: args.urls.clone(),
                clients,
                messages,
                warmup,
                in_flight: args.in_flight,
                data_bytes: args.data_bytes,
                group: args.group.clone(),
                connect_concurrency: 200,
                pids: args.pids.clone(),
                redis_pid: args.redis_pid,
                drain: Duration::from_secs(drain),
            })
            .await?;
            line("throughput", to_value(report)?)
        }
        Part::Memory {
            messages,
            ref redis_url,
        } => {
            let report = memory::run(MemoryConfig {
                url: args.urls[0].clone(),
                group: args.group.clone(),
                messages,
                data_bytes: args.data_bytes,
                in_flight: args.in_flight,
                pids: args.pids.clone(),
                redis_url: redis_url.clone(),
            })
            .await?;
            line("memory", to_value(report)?)
        }
        Part::Recovery {
            clients,
            publications,
        } => {
            let report = recovery::run(RecoveryConfig {
                urls: args.urls.clone(),
                clients,
                before: 5,
                publications,
                data_bytes: args.data_bytes,
                in_flight: args.in_flight,
                group: args.group.clone(),
                connect_concurrency: 200,
                pids: args.pids.clone(),
                redis_pid: args.redis_pid,
            })
            .await?;
            line("recovery", to_value(report)?)
        }
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    match run(Args::parse()).await {
        Ok(line) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("history-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

fn to_value(report: impl Serialize) -> Result<serde_json::Value, String> {
    serde_json::to_value(report).map_err(|e| e.to_string())
}
