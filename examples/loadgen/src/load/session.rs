//! The connected clients of one process: connect them, drive them, drain, and collect.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio::sync::{Semaphore, mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::timeout_at;

use super::client::{ClientTask, Command};
use super::driver::Driver;
use super::stats::{ClientCounters, Senders, Shared, Totals};
use super::{LoadConfig, Mode};
use crate::LoadError;

/// Commands queued per client; the driver skips a client whose queue is full.
const COMMAND_QUEUE: usize = 64;
/// How often the connect and drain phases look at the counters.
const POLL: Duration = Duration::from_millis(10);
/// How long the run waits for every client task to close its connection at the end.
const JOIN_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the clients get to flush their latency samples on request.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(2);

/// One process's clients, connected, with the driver that sends through them.
#[derive(Debug)]
pub(crate) struct Session {
    pub(crate) shared: Arc<Shared>,
    pub(crate) driver: Driver,
    counters: Vec<Arc<ClientCounters>>,
    handles: Vec<JoinHandle<()>>,
    stop: watch::Sender<bool>,
    /// Clients that connected.
    pub(crate) connected: u64,
    /// Clients that did not.
    pub(crate) connect_failures: u64,
    /// Seconds the connect phase took.
    pub(crate) connect_s: f64,
}

impl Session {
    /// Connects this process's share of the clients (`config.clients` of them, numbered from
    /// `config.first_client`).
    ///
    /// # Errors
    ///
    /// [`LoadError::NoClients`] when none connects.
    pub(crate) async fn connect(config: &LoadConfig, senders: Senders) -> Result<Self, LoadError> {
        let shared = Arc::new(Shared::new(config.mode, config.payload_bytes, senders));
        let permits = Arc::new(Semaphore::new(config.connect_concurrency));
        let (stop, stop_rx) = watch::channel(false);
        let start = Instant::now();
        let mut senders = Vec::with_capacity(config.clients);
        let mut handles = Vec::with_capacity(config.clients);
        let mut counters = Vec::with_capacity(config.clients);
        for local in 0..config.clients {
            let index = config.first_client + local;
            let (tx, rx) = mpsc::channel(COMMAND_QUEUE);
            let client_counters = Arc::new(ClientCounters::default());
            let source_ip = (!config.source_ips.is_empty())
                .then(|| config.source_ips[index % config.source_ips.len()]);
            let task = ClientTask {
                index,
                url: config.urls[index % config.urls.len()].clone(),
                source_ip,
                shared: Arc::clone(&shared),
                counters: Arc::clone(&client_counters),
                commands: rx,
                stop: stop_rx.clone(),
                connect_permits: Arc::clone(&permits),
                connect_timeout: config.connect_timeout,
            };
            senders.push(tx);
            counters.push(client_counters);
            handles.push(tokio::spawn(task.run()));
        }
        // Every attempt ends within connect_timeout of getting its permit, so this loop ends.
        while shared.connect_finished.load(Ordering::Acquire) < config.clients as u64 {
            tokio::time::sleep(POLL).await;
        }
        let connect_s = start.elapsed().as_secs_f64();
        let connected = shared.connected.load(Ordering::Acquire);
        let connect_failures = config.clients as u64 - connected;
        tracing::info!(connected, connect_failures, connect_s, "connect phase done");
        if connected == 0 {
            return Err(LoadError::NoClients {
                failures: connect_failures,
            });
        }
        shared.clients.store(connected, Ordering::Release);
        let live: Vec<mpsc::Sender<Command>> =
            senders.into_iter().filter(|tx| !tx.is_closed()).collect();
        let driver = Driver::new(Arc::clone(&shared), live, config.pace);
        Ok(Self {
            shared,
            driver,
            counters,
            handles,
            stop,
            connected,
            connect_failures,
            connect_s,
        })
    }

    /// The idle probe's barrier before its one broadcast: every client sends one echo and this
    /// waits (up to `limit`) until the replies are back, so each server has registered every
    /// connection (a handshake can complete before the server's connection task joins its
    /// group, and a broadcast sent then misses that client). Returns how many answered.
    pub(crate) async fn ready(&self, limit: Duration) -> u64 {
        let deadline = tokio::time::Instant::now() + limit;
        let asked = self.driver.ask_ready(deadline).await;
        while self.shared.ready.load(Ordering::Acquire) < asked
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(POLL).await;
        }
        let ready = self.shared.ready.load(Ordering::Acquire);
        if ready < self.connected {
            tracing::warn!(
                ready,
                connected = self.connected,
                "not every client answered before the broadcast"
            );
        }
        ready
    }

    /// Waits until `issued` frames (summed over every sending process, warm-up included) have
    /// all arrived here, or `limit` has passed.
    pub(crate) async fn drain(&self, issued: u64, limit: Duration) {
        let expected = match self.shared.mode {
            Mode::Echo => issued,
            Mode::Broadcast => issued * self.connected,
        };
        let deadline = Instant::now() + limit;
        while self.shared.all_arrivals() < expected && Instant::now() < deadline {
            tokio::time::sleep(POLL).await;
        }
    }

    /// Makes every client hand over its latency samples (before reading the histogram).
    pub(crate) async fn flush_latency(&self) {
        self.driver.flush_clients(FLUSH_TIMEOUT).await;
    }

    /// The clients' counters summed now.
    pub(crate) fn totals(&self) -> Totals {
        Totals::read(self.counters.iter().map(Arc::as_ref))
    }

    /// Stops every client (each closes within a second), and returns the final totals and how
    /// many clients lost their connection before the end.
    pub(crate) async fn finish(self) -> (Totals, u64) {
        // Every client selects on `stop` first, then closes within CLOSE_TIMEOUT.
        self.stop.send_replace(true);
        let mut panicked = 0u64;
        let mut still_closing = 0u64;
        let join_deadline = tokio::time::Instant::now() + JOIN_TIMEOUT;
        for mut handle in self.handles {
            match timeout_at(join_deadline, &mut handle).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => panicked += 1,
                Err(_) => {
                    handle.abort();
                    still_closing += 1;
                }
            }
        }
        if still_closing > 0 {
            // Tens of thousands of close handshakes can outlast the deadline on a busy
            // machine; those clients were connected to the end, so they are not disconnects.
            tracing::warn!(
                still_closing,
                "clients still closing at the end were aborted"
            );
        }
        let disconnects = panicked
            + self
                .counters
                .iter()
                .map(|c| c.disconnected.get())
                .sum::<u64>();
        (
            Totals::read(self.counters.iter().map(Arc::as_ref)),
            disconnects,
        )
    }
}
