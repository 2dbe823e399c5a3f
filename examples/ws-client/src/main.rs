//! `ws-client`: a command-line WebSocket client on tokio-tungstenite.
//!
//! Teaches: one task owning a socket and `select!`ing over stdin lines, incoming frames and
//! Ctrl-C; reconnecting with capped exponential backoff; closing cleanly with code 1000.
//!
//! ```text
//! # the chat example (`cargo run -p chat`, Django tutorial protocol): each line as {"message":LINE}
//! cargo run -p ws-client -- ws://127.0.0.1:8000/ws/chat/lobby --json-field message
//! # raw lines as text frames
//! cargo run -p ws-client -- ws://127.0.0.1:8000/ws/chat/lobby
//! # each line as {"type":"chat.message","text":LINE}
//! cargo run -p ws-client -- ws://127.0.0.1:8000/ws --json-field text --type chat.message
//! # each line through a template; {line} is replaced by the JSON-escaped line
//! cargo run -p ws-client -- ws://127.0.0.1:8000/ws --template '{"type":"echo","payload":"{line}"}'
//! ```
//!
//! Frames that arrive go to stdout, one per line; status goes to stderr. Stdin EOF or Ctrl-C
//! sends a close frame (1000) and exits with status 0.

mod backoff;
mod frame;
mod session;
mod target;

use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Parser;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::{mpsc, watch};

use backoff::Backoff;
use frame::FrameTemplate;
use session::{End, Session};

/// Lines read ahead of the socket; stdin waits while the client is disconnected.
const LINE_QUEUE: usize = 64;
/// Time allowed for one connection attempt.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// A connection that lived this long resets the backoff.
const STABLE_AFTER: Duration = Duration::from_secs(5);

/// Send stdin lines to a WebSocket, print what arrives, reconnect on failure.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Server URL, e.g. ws://127.0.0.1:8000/ws/chat/lobby.
    url: String,
    /// Send each line as {FIELD: line} instead of raw text (`message` for the chat example).
    #[arg(long, conflicts_with = "template")]
    json_field: Option<String>,
    /// Add "type": TYPE to the --json-field object (e.g. chat.message).
    #[arg(long = "type", requires = "json_field")]
    message_type: Option<String>,
    /// Send each line through this template; `{line}` becomes the JSON-escaped line.
    #[arg(long)]
    template: Option<String>,
    /// Consecutive failed connection attempts before giving up.
    #[arg(long, default_value_t = 10)]
    max_retries: u32,
    /// Allow non-loopback servers.
    #[arg(long)]
    allow_remote: bool,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    if let Err(problem) = target::check(&args.url, args.allow_remote) {
        eprintln!("ws-client: {problem}");
        return ExitCode::from(2);
    }
    let template = match (&args.json_field, &args.template) {
        (Some(field), _) => FrameTemplate::json_field(args.message_type.as_deref(), field),
        (None, Some(template)) => FrameTemplate::template(template),
        (None, None) => FrameTemplate::Raw,
    };
    let (lines_tx, mut lines) = mpsc::channel(LINE_QUEUE);
    tokio::spawn(read_stdin(lines_tx));
    let (quit_tx, mut quit) = watch::channel(false);
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            quit_tx.send_replace(true);
        }
    });

    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
    let mut failures = 0u32;
    let mut pending = None;
    loop {
        let connected = tokio::time::timeout(
            CONNECT_TIMEOUT,
            tokio_tungstenite::connect_async(args.url.as_str()),
        )
        .await;
        match connected {
            Ok(Ok((ws, _response))) => {
                eprintln!("ws-client: connected to {}", args.url);
                failures = 0;
                let started = Instant::now();
                let mut session =
                    Session::new(ws, &template, &mut lines, &mut quit, pending.take());
                match session.run().await {
                    End::Quit => return ExitCode::SUCCESS,
                    End::Dropped { reason, unsent } => {
                        eprintln!("ws-client: connection lost: {reason}");
                        pending = unsent;
                    }
                }
                if started.elapsed() >= STABLE_AFTER {
                    backoff.reset();
                }
            }
            Ok(Err(e)) => {
                failures += 1;
                eprintln!(
                    "ws-client: connect failed ({failures}/{}): {e}",
                    args.max_retries
                );
            }
            Err(_) => {
                failures += 1;
                eprintln!(
                    "ws-client: connect timed out ({failures}/{})",
                    args.max_retries
                );
            }
        }
        if failures >= args.max_retries {
            eprintln!("ws-client: giving up after {failures} failed attempts");
            return ExitCode::FAILURE;
        }
        let delay = backoff.next_delay();
        eprintln!("ws-client: reconnecting in {delay:?}");
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            _ = quit.changed() => return ExitCode::SUCCESS,
        }
    }
}

/// Forwards stdin lines; dropping the sender at EOF tells the session to close.
async fn read_stdin(lines: mpsc::Sender<String>) {
    let mut stdin = BufReader::new(tokio::io::stdin()).lines();
    loop {
        match stdin.next_line().await {
            Ok(Some(line)) => {
                if lines.send(line).await.is_err() {
                    return;
                }
            }
            Ok(None) => return,
            Err(e) => {
                eprintln!("ws-client: cannot read stdin: {e}");
                return;
            }
        }
    }
}
