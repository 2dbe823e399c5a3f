//! Graceful shutdown: the OS signal future, and [`Shutdown`], the signal every
//! connection watches plus the tracker that waits for them to drain.

use std::time::Duration;

use channels_core::consumer::ShutdownSignal;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Completes on SIGINT (ctrl-c) or, on Unix, SIGTERM. If a handler cannot be
/// installed, that signal is logged and ignored.
pub async fn signal() {
    let ctrl_c = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::error!(%error, "cannot listen for ctrl-c");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut stream) => {
                stream.recv().await;
            }
            Err(error) => {
                tracing::error!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!("SIGINT received, shutting down"),
        () = terminate => tracing::info!("SIGTERM received, shutting down"),
    }
}

/// One server's shutdown state: `soft` asks every connection to close with
/// 1001; `hard` makes their writers drop sockets that do not drain in time;
/// `tracker` counts the connection tasks still running.
#[derive(Debug, Clone, Default)]
pub struct Shutdown {
    soft: ShutdownSignal,
    hard: CancellationToken,
    tracker: TaskTracker,
}

impl Shutdown {
    /// Fresh, not shut down.
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts shutting down: stop accepting, close every socket with 1001.
    pub fn trigger(&self) {
        self.soft.trigger();
    }

    /// Returns whether shutdown has started.
    pub fn is_triggered(&self) -> bool {
        self.soft.is_triggered()
    }

    /// Completes once shutdown has started.
    pub async fn triggered(&self) {
        self.soft.watch().await;
    }

    /// The signal a connection watches (fired on shutdown). A clone of the
    /// server's, shared: nothing stops one connection alone, and a clone
    /// costs no allocation per connection.
    pub fn connection_signal(&self) -> ShutdownSignal {
        self.soft.clone()
    }

    /// A token cancelled when shutdown starts (the accept loops and
    /// background workers stop on it).
    pub fn stop_token(&self) -> CancellationToken {
        self.soft.token()
    }

    /// The token that tells writers to give up on sockets that do not drain.
    pub fn hard_token(&self) -> CancellationToken {
        self.hard.clone()
    }

    /// The tracker connection tasks are spawned on.
    pub fn tracker(&self) -> &TaskTracker {
        &self.tracker
    }

    /// Waits up to `timeout` for every connection task to finish, then tells
    /// the rest to drop their sockets and waits one more second. Returns the
    /// number of tasks still running after that.
    pub async fn drain(&self, timeout: Duration) -> usize {
        self.trigger();
        self.tracker.close();
        if tokio::time::timeout(timeout, self.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                remaining = self.tracker.len(),
                ?timeout,
                "connections did not drain in time; dropping their sockets"
            );
            self.hard.cancel();
            // Writers check the hard token at every await; one second is plenty.
            let _ = tokio::time::timeout(Duration::from_secs(1), self.tracker.wait()).await;
        }
        self.tracker.len()
    }
}
