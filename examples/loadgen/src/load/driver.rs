//! The driver: decides when the next frame goes out and which client writes it.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio::sync::mpsc::{self, error::TrySendError};
use tokio::time::{sleep, sleep_until};

use super::client::Command;
use super::stats::Shared;
use super::{Mode, Pace};

/// Granularity of the rate schedule: frames due are sent together every tick.
const TICK: Duration = Duration::from_millis(1);
/// Longest a `--max` driver sleeps without a progress wake-up (covers lost deliveries).
const RECHECK: Duration = Duration::from_millis(5);

/// Hands commands to clients round-robin, at a rate or under an in-flight bound.
#[derive(Debug)]
pub(crate) struct Driver {
    shared: Arc<Shared>,
    clients: Vec<mpsc::Sender<Command>>,
    pace: Pace,
    next_client: usize,
    next_id: u64,
    /// Commands handed to clients, warm-up included.
    issued: u64,
}

impl Driver {
    pub(crate) fn new(
        shared: Arc<Shared>,
        clients: Vec<mpsc::Sender<Command>>,
        pace: Pace,
    ) -> Self {
        Self {
            shared,
            clients,
            pace,
            next_client: 0,
            next_id: 0,
            issued: 0,
        }
    }

    /// Changes the pace for the next `drive` (ladder steps).
    pub(crate) fn set_pace(&mut self, pace: Pace) {
        self.pace = pace;
    }

    /// Frames issued but not yet fully delivered.
    fn in_flight(&self) -> u64 {
        let arrivals = self.shared.own_arrivals();
        let completed = match self.shared.mode {
            Mode::Echo => arrivals,
            Mode::Broadcast => arrivals / self.shared.clients.load(Ordering::Acquire).max(1),
        };
        self.issued.saturating_sub(completed)
    }

    /// Sends until `until`, marking frames as warm-up or measured.
    pub(crate) async fn drive(&mut self, warm: bool, until: Instant) {
        match self.pace {
            Pace::Rate(per_sec) => self.drive_rate(per_sec, warm, until).await,
            Pace::Max(bound) => self.drive_max(bound, warm, until).await,
            Pace::Once => {
                if self.shared.senders.index == 0 && self.issued == 0 {
                    self.issue(warm);
                }
            }
        }
    }

    /// Commands handed to clients so far, warm-up included (the ids this process issued).
    pub(crate) fn issued(&self) -> u64 {
        self.issued
    }

    /// Has every client send one warm-up echo (see [`super::session::Session::ready`]);
    /// returns how many were asked.
    pub(crate) async fn ask_ready(&self, deadline: tokio::time::Instant) -> u64 {
        self.tell_each(Command::Echo { warm: true }, deadline).await
    }

    /// Asks every client to flush its latency samples and waits (at most `limit`) until those
    /// that got the request have done so.
    pub(crate) async fn flush_clients(&self, limit: Duration) {
        let deadline = tokio::time::Instant::now() + limit;
        let before = self.shared.flushed.load(Ordering::Acquire);
        let asked = self.tell_each(Command::Flush, deadline).await;
        while self.shared.flushed.load(Ordering::Acquire) - before < asked
            && tokio::time::Instant::now() < deadline
        {
            sleep(TICK).await;
        }
    }

    /// Hands `command` to every client (each queue given until `deadline`); returns how many
    /// took it.
    async fn tell_each(&self, command: Command, deadline: tokio::time::Instant) -> u64 {
        let mut told = 0u64;
        for client in &self.clients {
            if matches!(
                tokio::time::timeout_at(deadline, client.send(command)).await,
                Ok(Ok(()))
            ) {
                told += 1;
            }
        }
        told
    }

    async fn drive_rate(&mut self, per_sec: f64, warm: bool, until: Instant) {
        let start = Instant::now();
        let mut issued = 0u64;
        loop {
            let now = Instant::now();
            if now >= until {
                return;
            }
            let due = ((now - start).as_secs_f64() * per_sec) as u64;
            while issued < due && self.issue(warm) {
                issued += 1;
            }
            sleep_until((now + TICK).min(until).into()).await;
        }
    }

    async fn drive_max(&mut self, bound: u64, warm: bool, until: Instant) {
        while Instant::now() < until {
            let free = bound.saturating_sub(self.in_flight());
            let mut issued_any = false;
            for _ in 0..free {
                if !self.issue(warm) {
                    break;
                }
                issued_any = true;
            }
            if free > 0 && !issued_any {
                // Every client's queue is full: let them write.
                sleep(TICK).await;
                continue;
            }
            tokio::select! {
                () = self.shared.progress.notified() => {}
                () = sleep(RECHECK) => {}
                () = sleep_until(until.into()) => return,
            }
        }
    }

    /// Hands one command to the next client with room in its queue; false when none has room.
    fn issue(&mut self, warm: bool) -> bool {
        let mut command = match self.shared.mode {
            Mode::Echo => Command::Echo { warm },
            Mode::Broadcast => Command::Broadcast {
                id: self.next_id,
                warm,
            },
        };
        if let Command::Broadcast { id, .. } = command {
            // Receivers accept keys below `issued_ids`; publish before any client can send it.
            self.shared.issued_ids.store(id + 1, Ordering::Release);
        }
        for _ in 0..self.clients.len() {
            let client = &self.clients[self.next_client];
            self.next_client = (self.next_client + 1) % self.clients.len();
            match client.try_send(command) {
                Ok(()) => {
                    self.issued += 1;
                    if matches!(command, Command::Broadcast { .. }) {
                        self.next_id += 1;
                    }
                    return true;
                }
                Err(TrySendError::Full(back) | TrySendError::Closed(back)) => command = back,
            }
        }
        false
    }
}
