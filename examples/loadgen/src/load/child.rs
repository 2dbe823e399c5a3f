//! The two sides of a multi-process run's conversation: the parent ([`super::multi`]) orders
//! phases on each child's stdin; each child reports on its stdout, one JSON object per line.
//!
//! The phases keep the accounting exact across processes: every child connects before any
//! sends (`go`); every child has stopped sending before any drains, and each child then drains
//! until it holds the frames every sender issued (`drain` carries their counts), so a broadcast
//! from one child is a delivery for every client of every child, and the keys each sender
//! never issued are moved to `unexpected`.

use std::time::Instant;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, BufReader, Lines, Stdin};

use super::session::Session;
use super::stats::{Senders, Totals};
use super::{LoadConfig, Pace};
use crate::LoadError;

/// What a child tells its parent.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub(crate) enum ChildEvent {
    /// The connect phase is over.
    Connected {
        clients: u64,
        failures: u64,
        connect_s: f64,
    },
    /// Idle probe: `clients` of this child answered their readiness echo.
    Ready { clients: u64 },
    /// Warm-up is over; the measured window starts now.
    Measuring { start_us: u64 },
    /// The measured window is over; `issued` frames went out (warm-up included).
    Sent { issued: u64, send_window_s: f64 },
    /// Every issued frame arrived here (or the drain timed out).
    Drained,
    /// The clients are closed; the final counts and latency samples.
    Done {
        totals: Totals,
        disconnects: u64,
        /// `(microseconds, count)` pairs of the latency histogram.
        latency: Vec<(u64, u64)>,
    },
}

/// What a parent tells a child.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "order", rename_all = "snake_case")]
pub(crate) enum ParentOrder {
    /// Every child is connected: start sending (the idle probe: get ready, then wait for
    /// `Send`).
    Go,
    /// Idle probe: every child's clients are ready; send the one broadcast.
    Send,
    /// Every child stopped sending; `issued[i]` is what sender `i` issued.
    Drain { issued: Vec<u64> },
}

fn emit(event: &ChildEvent) -> Result<(), LoadError> {
    use std::io::Write;
    let line = serde_json::to_string(event).map_err(|e| LoadError::InvalidOption {
        reason: format!("cannot encode a child event: {e}"),
    })?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}")?;
    out.flush()?;
    Ok(())
}

async fn next_order(lines: &mut Lines<BufReader<Stdin>>) -> Result<ParentOrder, LoadError> {
    let line = lines
        .next_line()
        .await?
        .ok_or_else(|| LoadError::InvalidOption {
            reason: "the parent closed stdin before the run ended".to_owned(),
        })?;
    serde_json::from_str(&line).map_err(|e| LoadError::InvalidOption {
        reason: format!("bad order from the parent `{line}`: {e}"),
    })
}

/// Runs this process as child `senders.index` of a multi-process run, talking to the parent
/// on stdin/stdout.
///
/// # Errors
///
/// No client connected, stdin closed early, or a malformed order.
pub async fn run(config: LoadConfig, senders: Senders) -> Result<(), LoadError> {
    let mut orders = BufReader::new(tokio::io::stdin()).lines();
    let mut session = Session::connect(&config, senders).await?;
    emit(&ChildEvent::Connected {
        clients: session.connected,
        failures: session.connect_failures,
        connect_s: session.connect_s,
    })?;
    let ParentOrder::Go = next_order(&mut orders).await? else {
        return Err(LoadError::InvalidOption {
            reason: "expected `go` from the parent".to_owned(),
        });
    };
    if config.pace == Pace::Once {
        // Every process's clients must be registered before sender 0's one broadcast.
        let clients = session.ready(config.connect_timeout).await;
        emit(&ChildEvent::Ready { clients })?;
        let ParentOrder::Send = next_order(&mut orders).await? else {
            return Err(LoadError::InvalidOption {
                reason: "expected `send` from the parent".to_owned(),
            });
        };
    } else if !config.warmup.is_zero() {
        session
            .driver
            .drive(true, Instant::now() + config.warmup)
            .await;
    }
    emit(&ChildEvent::Measuring {
        start_us: session.shared.now_us(),
    })?;
    let start = Instant::now();
    session.driver.drive(false, start + config.duration).await;
    emit(&ChildEvent::Sent {
        issued: session.driver.issued(),
        send_window_s: start.elapsed().as_secs_f64(),
    })?;
    let ParentOrder::Drain { issued } = next_order(&mut orders).await? else {
        return Err(LoadError::InvalidOption {
            reason: "expected `drain` from the parent".to_owned(),
        });
    };
    if issued.len() != senders.count {
        return Err(LoadError::InvalidOption {
            reason: format!(
                "`drain` names {} senders, not {}",
                issued.len(),
                senders.count
            ),
        });
    }
    let all: u64 = issued.iter().sum();
    // Set before the clients stop: each moves keys beyond its sender's count to `unexpected`.
    let _first = session.shared.final_limits.set(issued);
    session.drain(all, config.drain).await;
    emit(&ChildEvent::Drained)?;
    let shared = std::sync::Arc::clone(&session.shared);
    let (totals, disconnects) = session.finish().await;
    let latency = shared.merged_latency();
    emit(&ChildEvent::Done {
        totals,
        disconnects,
        latency: latency
            .iter_recorded()
            .map(|v| (v.value_iterated_to(), v.count_at_value()))
            .collect(),
    })
}
