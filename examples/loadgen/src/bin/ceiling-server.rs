//! `ceiling-server`: the fastest reasonable hand-written websocket-shootout server, with no
//! channel layer, that the rust-channels server is measured against.
//!
//! Teaches: fan-out by iterating per-connection bounded queues, serializing each broadcast once
//! (`--mode local`), and the plain multi-process version: PUBLISH once to Redis, one subscriber
//! per process fans out locally (`--mode redis`).
//!
//! ```text
//! cargo run --release -p loadgen --bin ceiling-server -- --bind 127.0.0.1:8000 --mode local
//! # two processes over Redis:
//! redis-server --port 6379 --save "" --appendonly no &
//! cargo run --release -p loadgen --bin ceiling-server -- --bind 127.0.0.1:8001 --mode redis &
//! cargo run --release -p loadgen --bin ceiling-server -- --bind 127.0.0.1:8002 --mode redis &
//! cargo run --release -p loadgen --bin loadgen -- --url ws://127.0.0.1:8001/ws \
//!     --url ws://127.0.0.1:8002/ws --clients 1000 --mode broadcast --max 64 --duration 10
//! ```
//!
//! Prints `listening on ADDR` on stdout once it accepts connections.

use std::io::Write;
use std::net::SocketAddr;
use std::process::ExitCode;

use clap::Parser;
use loadgen::LoadError;
use loadgen::ceiling::{Ceiling, CeilingConfig, FanoutMode};
use tokio::net::{TcpListener, TcpSocket};
use tracing_subscriber::EnvFilter;

/// Hand-written websocket-shootout server at /ws, fanning out locally or over Redis.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Address to listen on (port 0 picks a free port; see the `listening on` line).
    #[arg(long, default_value = "127.0.0.1:8000")]
    bind: SocketAddr,
    /// Fan out to this process's connections, or through Redis pub/sub to every process's.
    #[arg(long, value_enum, default_value_t = FanoutMode::Local)]
    mode: FanoutMode,
    /// Redis server for `--mode redis`.
    #[arg(long, default_value = "redis://127.0.0.1:6379")]
    redis_url: String,
    /// Redis pub/sub channel shared by all processes.
    #[arg(long, default_value = "ceiling.broadcast")]
    redis_channel: String,
    /// Frames queued per connection before it is closed with 1013.
    #[arg(long, default_value_t = 1024)]
    outbound_queue: usize,
    /// Initial bytes of each connection's read buffer (grows for larger frames); axum's
    /// 128 KiB default costs about 140 KB of RSS per idle connection.
    #[arg(long, default_value_t = 1024)]
    read_buffer_bytes: usize,
    /// Milliseconds a new connection waits before joining the fan-out (tests: a server that
    /// registers its clients late).
    #[arg(long, default_value_t = 0)]
    join_delay_ms: u64,
}

async fn run(args: Args) -> Result<(), LoadError> {
    let config = CeilingConfig {
        mode: args.mode,
        redis_url: args.redis_url,
        redis_channel: args.redis_channel,
        outbound_queue: args.outbound_queue,
        read_buffer_bytes: args.read_buffer_bytes,
        join_delay: std::time::Duration::from_millis(args.join_delay_ms),
    };
    let ceiling = Ceiling::start(&config).await?;
    let listener = bind(args.bind)?;
    let addr = listener.local_addr()?;
    let mut stdout = std::io::stdout();
    writeln!(stdout, "listening on {addr}")?;
    stdout.flush()?;
    tracing::info!(%addr, mode = ?config.mode, "ceiling server ready");
    ceiling.serve(listener, shutdown_signal()).await
}

/// Pending connections the kernel holds for `accept`. `TcpListener::bind` uses 128, which
/// overflows when hundreds of clients connect at once (each overflow costs a 1 s SYN retry).
const LISTEN_BACKLOG: u32 = 4096;

fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Resolves on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut sigterm) => {
                sigterm.recv().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        result = tokio::signal::ctrl_c() => {
            if let Err(e) = result {
                tracing::warn!(error = %e, "cannot listen for Ctrl-C");
                std::future::pending::<()>().await;
            }
        }
        () = terminate => {}
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();
    if let Err(e) = loadgen::nofile::raise_nofile_limit() {
        tracing::warn!(error = %e, "could not raise the open-file limit");
    }
    match run(Args::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ceiling-server: {e}");
            let mut source = std::error::Error::source(&e);
            while let Some(cause) = source {
                eprintln!("  caused by: {cause}");
                source = cause.source();
            }
            ExitCode::FAILURE
        }
    }
}
