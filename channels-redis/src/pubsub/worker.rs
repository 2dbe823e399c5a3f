//! The worker of one shard, tower's buffer worker in spirit: it owns the
//! subscriber connection and is the only one to SUBSCRIBE or UNSUBSCRIBE on
//! it. It takes [`Command`]s from a bounded queue, wakes on
//! [`DirtyTopics`](super::dirty::DirtyTopics) marks to UNSUBSCRIBE what the
//! registry no longer wants, delivers arriving messages into the registry's
//! mailboxes, PINGs to notice dead links, and reconnects with capped
//! exponential backoff, subscribing every wanted topic before the link
//! counts as up. A [`WorkerGuard`] owns the task.
//!
//! Every decision to (UN)SUBSCRIBE is taken here, in one sequence, against
//! the registry as it is at that moment; a registry change made meanwhile is
//! followed by a command (it made a topic wanted) or a mark (it may have
//! made one unwanted), which this worker handles next. So Redis ends up
//! subscribed to exactly what the registry wants.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt as _;
use futures_util::StreamExt as _;
use redis::RedisError;
use redis::aio::{PubSubSink, PubSubStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::{Instant, interval_at, sleep, timeout};
use tokio_util::sync::CancellationToken;

use crate::error::certificate_hint;

use super::command::{Command, Commands, SubscribeBatch, SubscribeReply};
use super::dirty::DirtyTopics;
use super::shard::{Endpoint, Shared};
use channels_core::Backoff;

/// First pause before reconnecting the subscriber connection.
pub(super) const BACKOFF_MIN: Duration = Duration::from_millis(50);

/// Longest pause between reconnect attempts. Short: while the subscriber is
/// away, this instance hears nothing (a 2 s cap lost 1.45 s of messages
/// after Redis returned).
pub(super) const BACKOFF_MAX: Duration = Duration::from_millis(500);

/// How often an idle subscriber connection is PINGed.
const KEEPALIVE: Duration = Duration::from_secs(15);

/// A connection that lived this long was healthy: the next reconnect starts
/// from the shortest delay again.
const STABLE_AFTER: Duration = Duration::from_secs(1);

/// How long `stop` waits for the worker to finish.
const STOP_WAIT: Duration = Duration::from_secs(5);

/// Commands waiting for the worker. SUBSCRIBE requests share one queued
/// command (see `command.rs`), so this bounds the `flush` and
/// `delete_channel` calls in flight.
const COMMAND_QUEUE: usize = 64;

/// (UN)SUBSCRIBE at most this many topics per Redis command.
const TOPICS_PER_COMMAND: usize = 1_000;

/// Owns a running worker: dropping it (or [`WorkerGuard::stop`]) stops it.
#[derive(Debug)]
pub(super) struct WorkerGuard {
    token: CancellationToken,
    handle: Option<JoinHandle<()>>,
}

impl WorkerGuard {
    /// Whether the worker task is still alive.
    pub(super) fn is_running(&self) -> bool {
        self.handle
            .as_ref()
            .is_some_and(|handle| !handle.is_finished())
    }

    /// Stops the worker and waits (bounded) until it has let go of its
    /// connection.
    pub(super) async fn stop(mut self) {
        self.token.cancel();
        if let Some(handle) = self.handle.take()
            && timeout(STOP_WAIT, handle).await.is_err()
        {
            tracing::warn!("pub/sub subscriber worker did not stop within {STOP_WAIT:?}");
        }
    }
}

impl Drop for WorkerGuard {
    fn drop(&mut self) {
        self.token.cancel();
    }
}

/// Starts the worker of `endpoint`; returns its guard and where to send it
/// commands.
pub(super) fn spawn(endpoint: Arc<Endpoint>, shared: Arc<Shared>) -> (WorkerGuard, Commands) {
    let token = CancellationToken::new();
    let (commands, queue) = Commands::channel(COMMAND_QUEUE);
    let worker = Worker {
        endpoint,
        shared,
        queue,
        token: token.clone(),
        deferred: Vec::new(),
    };
    let handle = tokio::spawn(worker.run());
    let guard = WorkerGuard {
        token,
        handle: Some(handle),
    };
    (guard, commands)
}

struct Worker {
    endpoint: Arc<Endpoint>,
    shared: Arc<Shared>,
    queue: mpsc::Receiver<Command>,
    token: CancellationToken,
    /// Answers owed to SUBSCRIBE requests whose connection died under them:
    /// the next connection subscribes every wanted topic, then they get `Ok`.
    deferred: Vec<SubscribeReply>,
}

/// The subscriber connection and what is SUBSCRIBEd on it.
struct Link {
    sink: PubSubSink,
    stream: PubSubStream,
    subscribed: HashSet<Arc<str>>,
}

/// Why [`Worker::serve`] returned.
enum Ended {
    Cancelled,
    Lost(String),
}

/// Why a (UN)SUBSCRIBE failed.
enum Failure {
    /// The connection is gone or stuck: reconnect.
    Lost(String),
    /// Redis answered with an error; the connection is fine.
    Refused(RedisError),
}

fn is_lost(error: &RedisError) -> bool {
    error.is_io_error()
        || error.is_connection_dropped()
        || error.is_unrecoverable_error()
        || error.is_timeout()
}

impl Worker {
    fn dirty(&self) -> &DirtyTopics {
        self.shared.registry.dirty(self.endpoint.index)
    }

    #[tracing::instrument(skip_all, fields(shard = self.endpoint.index, host = %self.endpoint.host))]
    async fn run(mut self) {
        let mut backoff = Backoff::new(BACKOFF_MIN, BACKOFF_MAX);
        loop {
            let attempt = tokio::select! {
                biased;
                () = self.token.cancelled() => break,
                attempt = self.connect() => attempt,
            };
            match attempt {
                Ok(mut link) => {
                    let connected_at = Instant::now();
                    tracing::debug!(
                        topics = link.subscribed.len(),
                        "pub/sub subscriber connected"
                    );
                    self.endpoint.set_up(true);
                    for reply in self.deferred.drain(..) {
                        // The caller may have given up waiting; nothing to do then.
                        let _ = reply.send(Ok(()));
                    }
                    let ended = self.serve(&mut link).await;
                    self.endpoint.set_up(false);
                    self.dirty().stop();
                    match ended {
                        Ended::Cancelled => break,
                        Ended::Lost(reason) => {
                            tracing::warn!(%reason, "pub/sub subscriber connection lost; reconnecting");
                        }
                    }
                    self.answer_queued_after_loss();
                    if connected_at.elapsed() >= STABLE_AFTER {
                        backoff.reset();
                    }
                }
                Err(reason) => {
                    self.dirty().stop();
                    self.endpoint.set_failure(&reason);
                    tracing::warn!(%reason, "pub/sub subscriber cannot connect; retrying");
                }
            }
            let delay = backoff.next_delay();
            tokio::select! {
                biased;
                () = self.token.cancelled() => break,
                () = sleep(delay) => {}
            }
        }
        self.endpoint.set_up(false);
        self.dirty().stop();
    }

    /// Opens the subscriber connection and SUBSCRIBEs every topic of this
    /// shard the registry wants.
    async fn connect(&self) -> Result<Link, String> {
        let timeouts = self.endpoint.timeouts;
        let client = self.endpoint.client().await?;
        let pubsub = timeout(timeouts.connect, client.get_async_pubsub())
            .await
            .map_err(|_| format!("connecting timed out after {:?}", timeouts.connect))?
            .map_err(|error| format!("connecting failed: {error}{}", certificate_hint(&error)))?;
        let (sink, stream) = pubsub.split();
        let mut link = Link {
            sink,
            stream,
            subscribed: HashSet::new(),
        };
        // Marks count from here on, so a release after the read below is
        // noticed (one before it is in the read).
        self.dirty().start();
        let topics = self.shared.registry.topics_on_shard(self.endpoint.index);
        match link.subscribe(&topics, timeouts.command).await {
            Ok(()) => Ok(link),
            Err(Failure::Lost(reason)) => Err(format!("resubscribing failed: {reason}")),
            Err(Failure::Refused(error)) => Err(format!("Redis refused to resubscribe: {error}")),
        }
    }

    /// Handles commands, marks and messages until the connection ends or
    /// the worker is cancelled.
    async fn serve(&mut self, link: &mut Link) -> Ended {
        let command_timeout = self.endpoint.timeouts.command;
        let mut keepalive = interval_at(Instant::now() + KEEPALIVE, KEEPALIVE);
        let shared = Arc::clone(&self.shared);
        let dirty = shared.registry.dirty(self.endpoint.index);
        loop {
            // Unbiased: no source of work can starve the others.
            let outcome = tokio::select! {
                () = self.token.cancelled() => return Ended::Cancelled,
                command = self.queue.recv() => match command {
                    Some(command) => self.handle(command, link).await,
                    // Every sender is gone: the shard was dropped.
                    None => return Ended::Cancelled,
                },
                () = dirty.marked() => self.reconcile(link).await,
                message = link.stream.next() => match message {
                    Some(message) => {
                        shared.registry.deliver(
                            message.get_channel_name(),
                            message.get_payload_bytes(),
                            &shared.serializer,
                        );
                        Ok(())
                    }
                    None => Err("the server closed the connection".to_owned()),
                },
                _ = keepalive.tick() => link.ping(command_timeout).await,
            };
            if let Err(reason) = outcome {
                return Ended::Lost(reason);
            }
        }
    }

    async fn handle(&mut self, command: Command, link: &mut Link) -> Result<(), String> {
        match command {
            Command::Subscribe(batch) => self.subscribe(&batch, link).await,
            Command::Sync(done) => {
                link.ping(self.endpoint.timeouts.command).await?;
                // Redis sends the PING reply after every message it pushed
                // here before, and the client queues those before it
                // completes the PING: what is queued now is everything
                // published before the request. Unconstrained: the coop
                // budget must not make a queued message look absent.
                while let Some(Some(message)) =
                    tokio::task::unconstrained(link.stream.next()).now_or_never()
                {
                    self.shared.registry.deliver(
                        message.get_channel_name(),
                        message.get_payload_bytes(),
                        &self.shared.serializer,
                    );
                }
                // The requester may have given up waiting; nothing to do then.
                let _ = done.send(());
                Ok(())
            }
            Command::Reconcile(done) => {
                self.reconcile(link).await?;
                let _ = done.send(());
                Ok(())
            }
        }
    }

    /// SUBSCRIBEs the batch's topics that are wanted and not subscribed yet,
    /// then answers every request.
    async fn subscribe(&mut self, batch: &SubscribeBatch, link: &mut Link) -> Result<(), String> {
        let requests = batch.seal();
        let mut topics: Vec<Arc<str>> = requests
            .iter()
            .map(|(topic, _)| topic)
            .filter(|topic| !link.subscribed.contains(*topic))
            .cloned()
            .collect();
        topics.sort_unstable();
        topics.dedup();
        self.shared.registry.retain_wanted(&mut topics);
        let replies = requests.into_iter().map(|(_, reply)| reply);
        match link
            .subscribe(&topics, self.endpoint.timeouts.command)
            .await
        {
            Ok(()) => {
                for reply in replies {
                    let _ = reply.send(Ok(()));
                }
                Ok(())
            }
            Err(Failure::Refused(error)) => {
                tracing::warn!(%error, topics = topics.len(), "Redis refused a SUBSCRIBE");
                for reply in replies {
                    let _ = reply.send(Err(error.clone()));
                }
                Ok(())
            }
            Err(Failure::Lost(reason)) => {
                self.defer(replies);
                Err(reason)
            }
        }
    }

    fn defer(&mut self, replies: impl IntoIterator<Item = SubscribeReply>) {
        self.deferred.retain(|reply| !reply.is_closed());
        self.deferred.extend(replies);
    }

    /// UNSUBSCRIBEs the marked topics that are subscribed here and no
    /// longer wanted.
    async fn reconcile(&mut self, link: &mut Link) -> Result<(), String> {
        let mut topics: Vec<Arc<str>> = self
            .dirty()
            .take()
            .into_iter()
            .filter(|topic| link.subscribed.contains(topic))
            .collect();
        self.shared.registry.retain_unwanted(&mut topics);
        match link
            .unsubscribe(&topics, self.endpoint.timeouts.command)
            .await
        {
            Ok(()) => Ok(()),
            Err(Failure::Refused(error)) => {
                tracing::warn!(%error, topics = topics.len(), "Redis refused an UNSUBSCRIBE");
                Ok(())
            }
            Err(Failure::Lost(reason)) => Err(reason),
        }
    }

    /// After the connection was lost: SUBSCRIBE requests already queued are
    /// answered once the next connection is up (it subscribes every wanted
    /// topic); syncs and reconciles are dropped, which their callers read as
    /// done (what was in flight, and every subscription, went with the
    /// connection).
    fn answer_queued_after_loss(&mut self) {
        while let Ok(command) = self.queue.try_recv() {
            if let Command::Subscribe(batch) = command {
                let replies = batch.seal().into_iter().map(|(_, reply)| reply);
                self.defer(replies);
            }
        }
    }
}

impl Link {
    /// SUBSCRIBEs `topics`, [`TOPICS_PER_COMMAND`] per command, recording
    /// each confirmed chunk.
    async fn subscribe(&mut self, topics: &[Arc<str>], wait: Duration) -> Result<(), Failure> {
        for chunk in topics.chunks(TOPICS_PER_COMMAND) {
            let names: Vec<&str> = chunk.iter().map(|topic| &**topic).collect();
            settle(
                timeout(wait, self.sink.subscribe(&names)).await,
                "SUBSCRIBE",
                wait,
            )?;
            self.subscribed.extend(chunk.iter().cloned());
        }
        Ok(())
    }

    /// UNSUBSCRIBEs `topics`, [`TOPICS_PER_COMMAND`] per command.
    async fn unsubscribe(&mut self, topics: &[Arc<str>], wait: Duration) -> Result<(), Failure> {
        for chunk in topics.chunks(TOPICS_PER_COMMAND) {
            let names: Vec<&str> = chunk.iter().map(|topic| &**topic).collect();
            for topic in chunk {
                // Gone either way: refused, or confirmed below.
                self.subscribed.remove(topic);
            }
            settle(
                timeout(wait, self.sink.unsubscribe(&names)).await,
                "UNSUBSCRIBE",
                wait,
            )?;
        }
        Ok(())
    }

    /// PINGs, bounded by `wait`.
    async fn ping(&mut self, wait: Duration) -> Result<(), String> {
        match timeout(wait, self.sink.ping::<redis::Value>()).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(error)) => Err(format!("PING failed: {error}")),
            Err(_) => Err(format!("PING timed out after {wait:?}")),
        }
    }
}

/// Sorts a (UN)SUBSCRIBE outcome into success, a lost connection or a refusal.
fn settle(
    outcome: Result<Result<(), RedisError>, tokio::time::error::Elapsed>,
    command: &str,
    wait: Duration,
) -> Result<(), Failure> {
    match outcome {
        Ok(Ok(())) => Ok(()),
        Ok(Err(error)) if is_lost(&error) => {
            Err(Failure::Lost(format!("{command} failed: {error}")))
        }
        Ok(Err(error)) => Err(Failure::Refused(error)),
        Err(_) => Err(Failure::Lost(format!("{command} timed out after {wait:?}"))),
    }
}
