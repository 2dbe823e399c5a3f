//! [`ShutdownSignal`]: the "the server is shutting down" signal every
//! connection watches, read without a lock.
//!
//! A `CancellationToken` alone would do, but polling its `cancelled()`
//! future locks a mutex shared by every clone (twice: the token's node and
//! its `Notify`), and a connection polls it on every wake-up. With 1,000
//! connections on two threads, that shared lock cost about 5% of the
//! server's CPU per delivered broadcast. Here the token only wakes the
//! connections; whether shutdown began is a flag.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Waker};

use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};

/// The server-wide shutdown signal: cheap to clone (one reference count),
/// cheap to watch ([`ShutdownSignal::watch`]).
///
/// # Examples
/// ```
/// use channels_core::consumer::ShutdownSignal;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let signal = ShutdownSignal::new();
/// let watcher = signal.clone();
/// let waiting = tokio::spawn(async move { watcher.watch().await });
/// signal.trigger();
/// waiting.await.unwrap();
/// assert!(signal.is_triggered());
/// # }
/// ```
#[derive(Debug, Clone, Default)]
pub struct ShutdownSignal {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// Set before the token is cancelled: a watcher woken by the token
    /// finds it set.
    triggered: AtomicBool,
    token: CancellationToken,
}

impl ShutdownSignal {
    /// A signal that has not fired.
    pub fn new() -> Self {
        Self::default()
    }

    /// Fires the signal: every watcher completes.
    pub fn trigger(&self) {
        self.inner.triggered.store(true, Ordering::Release);
        self.inner.token.cancel();
    }

    /// Whether the signal has fired (one atomic load).
    pub fn is_triggered(&self) -> bool {
        self.inner.triggered.load(Ordering::Acquire)
    }

    /// Completes once the signal fires. After its first poll, polling it
    /// again from the same task costs one atomic load.
    pub fn watch(&self) -> Watch<'_> {
        Watch {
            signal: self,
            wait: self.inner.token.cancelled(),
            registered: None,
        }
    }

    /// A token cancelled when the signal fires, for what is not polled on
    /// every wake-up (accept loops, background workers).
    pub fn token(&self) -> CancellationToken {
        self.inner.token.clone()
    }
}

pin_project_lite::pin_project! {
    /// The future of [`ShutdownSignal::watch`].
    #[must_use = "futures do nothing unless polled"]
    pub struct Watch<'a> {
        signal: &'a ShutdownSignal,
        // Registered with the token's wakers on the first poll, and again
        // only when the task's waker changes.
        #[pin]
        wait: WaitForCancellationFuture<'a>,
        registered: Option<Waker>,
    }
}

impl std::fmt::Debug for Watch<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watch")
            .field("triggered", &self.signal.is_triggered())
            .finish_non_exhaustive()
    }
}

impl Future for Watch<'_> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.project();
        if this.signal.is_triggered() {
            return Poll::Ready(());
        }
        // The token wakes the registered waker when it is cancelled, after
        // the flag is set, so while that waker is this task's, the flag says
        // everything.
        if this
            .registered
            .as_ref()
            .is_some_and(|waker| waker.will_wake(cx.waker()))
        {
            return Poll::Pending;
        }
        match this.wait.poll(cx) {
            Poll::Ready(()) => Poll::Ready(()),
            Poll::Pending => {
                *this.registered = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn a_watch_polled_before_the_trigger_completes_after_it() {
        let signal = ShutdownSignal::new();
        let mut watch = Box::pin(signal.watch());
        // Registered, and polled again while nothing happened.
        for _ in 0..3 {
            assert!(futures_util::poll!(watch.as_mut()).is_pending());
        }
        let trigger = signal.clone();
        tokio::spawn(async move { trigger.trigger() });
        tokio::time::timeout(Duration::from_secs(5), watch)
            .await
            .expect("the watch completes once the signal fires");
        assert!(signal.is_triggered());
        assert!(signal.token().is_cancelled());
    }

    #[tokio::test]
    async fn a_watch_made_after_the_trigger_is_ready_at_once() {
        let signal = ShutdownSignal::new();
        signal.trigger();
        assert!(futures_util::poll!(Box::pin(signal.watch())).is_ready());
    }

    #[tokio::test]
    async fn a_watch_moved_to_another_task_registers_that_task() {
        let signal = ShutdownSignal::new();
        let owned = signal.clone();
        let mut watch = Box::pin(async move { owned.watch().await });
        // First polled here, then finished in another task: that task's
        // waker must be the one woken.
        assert!(futures_util::poll!(watch.as_mut()).is_pending());
        let finishing = tokio::spawn(watch);
        tokio::task::yield_now().await;
        signal.trigger();
        tokio::time::timeout(Duration::from_secs(5), finishing)
            .await
            .expect("the other task is woken")
            .expect("the task completes");
    }
}
