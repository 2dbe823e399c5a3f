//! [`Relay`]: the task that keeps one group's history flowing to this
//! process's subscribers (a handle plus a worker, as tower's `buffer`: the
//! registry holds the command sender, the relay owns all the state).
//!
//! Its own channel is a member of the group, so every `group_send` wakes it;
//! it then syncs the layer's [`HistoryStore`](channels_core::HistoryStore)
//! and pushes each new kept message (marked with group, offset and epoch)
//! into every subscriber's mailbox. Subscribes are commands to the same
//! task, so a recovering subscriber gets what it missed and then exactly the
//! messages after it, with no gap and no duplicate.

use std::sync::Arc;
use std::time::Duration;

use channels_core::{
    Backoff, DEFAULT_NEW_CHANNEL_PREFIX, HistoryLimits, HistorySnapshot, LayerError,
    LocalSendError, LocalSender, Message, Receiver,
};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::{Histories, HistoryError, Position, mark};
use crate::control;

/// How often a notice that found a full mailbox is tried again.
const NOTICE_RETRY: Duration = Duration::from_millis(100);
/// The longest the relay takes to leave its group when it ends.
const LEAVE_TIMEOUT: Duration = Duration::from_secs(5);

/// What the registry asks of a relay.
#[derive(Debug)]
pub(crate) enum Command {
    /// Add (or replace) a subscriber, recovering from a position.
    Subscribe {
        sender: LocalSender,
        recover: Option<Position>,
        reply: oneshot::Sender<Result<Joined, HistoryError>>,
    },
    /// Remove a subscriber.
    Unsubscribe { channel: Arc<str> },
}

/// The answer to a subscribe: the position the subscriber is at now, and
/// whether (and with what) it was recovered.
#[derive(Debug)]
pub(crate) struct Joined {
    /// The history's epoch.
    pub(crate) epoch: Arc<str>,
    /// The offset of the newest kept message the subscriber has (through
    /// `publications`) or will not get (it came before the subscribe).
    pub(crate) offset: u64,
    /// Whether every message after the asked-for position is in
    /// `publications`.
    pub(crate) recovered: bool,
    /// Why not, when not recovered.
    pub(crate) reason: Option<&'static str>,
    /// The recovered messages, marked (oldest first).
    pub(crate) publications: Vec<(u64, Message)>,
}

struct Subscriber {
    channel: Arc<str>,
    sender: LocalSender,
}

/// One group's relay in this process.
pub(crate) struct Relay {
    histories: Arc<Histories>,
    group: String,
    limits: HistoryLimits,
    me: mpsc::WeakSender<Command>,
    commands: mpsc::Receiver<Command>,
    /// The relay's own channel in the group; `None` until joined.
    wake: Option<Receiver>,
    subscribers: Vec<Subscriber>,
    /// `(epoch, newest offset handed out)`; `None` before the first sync.
    position: Option<(Arc<str>, u64)>,
    /// `lost` notices that met a full mailbox, for subscribers already
    /// removed (they recover by subscribing again).
    pending_notices: Vec<(LocalSender, Message)>,
    /// When to sync again after a failure (or start, if not started).
    retry_at: Option<Instant>,
    backoff: Backoff,
    /// Set while the last sync failed, so one outage logs one warning.
    failing: bool,
}

enum Event {
    Stop,
    Command(Option<Command>),
    Woke(Result<Message, LayerError>),
    Retry,
    Notices,
    Idle,
}

impl Relay {
    pub(crate) fn new(
        histories: Arc<Histories>,
        group: String,
        limits: HistoryLimits,
        me: mpsc::WeakSender<Command>,
        commands: mpsc::Receiver<Command>,
    ) -> Self {
        Self {
            histories,
            group,
            limits,
            me,
            commands,
            wake: None,
            subscribers: Vec::new(),
            position: None,
            pending_notices: Vec::new(),
            retry_at: None,
            backoff: Backoff::new(Duration::from_millis(100), Duration::from_secs(2)),
            failing: false,
        }
    }

    /// Runs until shutdown, or until it had no subscriber for the group's
    /// history window (what it kept is then out of the window anyway).
    pub(crate) async fn run(mut self) {
        let stop = self.histories.stop.clone();
        let mut idle_since = Instant::now();
        loop {
            let idle_deadline = idle_since + self.limits.ttl;
            let event = {
                let wake = async {
                    match (&self.wake, self.retry_at) {
                        // Paused after a failed receive (Redis away).
                        (Some(_), Some(_)) | (None, _) => std::future::pending().await,
                        (Some(receiver), None) => receiver.recv().await,
                    }
                };
                let retry_at = self.retry_at;
                let notices = !self.pending_notices.is_empty();
                let idle = self.subscribers.is_empty() && self.pending_notices.is_empty();
                tokio::select! {
                    biased;
                    () = stop.cancelled() => Event::Stop,
                    command = self.commands.recv() => Event::Command(command),
                    woke = wake => Event::Woke(woke),
                    () = sleep_until(retry_at) => Event::Retry,
                    () = tokio::time::sleep(NOTICE_RETRY), if notices => Event::Notices,
                    () = tokio::time::sleep_until(idle_deadline), if idle => Event::Idle,
                }
            };
            match event {
                Event::Stop | Event::Command(None) => break,
                Event::Command(Some(command)) => {
                    self.handle(command).await;
                    if !self.subscribers.is_empty() {
                        idle_since = Instant::now();
                    }
                }
                Event::Woke(Ok(_)) => {
                    // One sync covers every wake queued so far.
                    while let Ok(Some(_)) = self.wake.as_ref().map_or(Ok(None), Receiver::try_recv)
                    {
                    }
                    self.catch_up().await;
                }
                Event::Woke(Err(LayerError::Closed)) => break,
                Event::Woke(Err(error)) => self.failed(&error),
                Event::Retry => {
                    self.retry_at = None;
                    self.catch_up().await;
                }
                Event::Notices => self.retry_notices(),
                Event::Idle => {
                    if self
                        .histories
                        .may_end(&self.group, &self.me, &self.commands)
                    {
                        break;
                    }
                }
            }
            if !self.subscribers.is_empty() {
                idle_since = Instant::now();
            }
        }
        self.leave().await;
    }

    /// Joins the group with the relay's own channel and starts tracking the
    /// group's history.
    async fn start(&mut self) -> Result<(), LayerError> {
        if self.wake.is_some() {
            return Ok(());
        }
        let layer = &self.histories.layer;
        let receiver = layer.new_receiver(DEFAULT_NEW_CHANNEL_PREFIX).await?;
        layer.group_add(&self.group, receiver.channel()).await?;
        self.wake = Some(receiver);
        self.histories.store.track(&self.group).await
    }

    /// Syncs the store and hands new kept messages to the subscribers.
    async fn catch_up(&mut self) -> Option<()> {
        let result = async {
            self.start().await?;
            let after = self.position.as_ref().map_or(0, |(_, top)| *top);
            let snapshot = self
                .histories
                .store
                .sync(&self.group, after, self.limits)
                .await?;
            self.absorb(snapshot).await
        }
        .await;
        match result {
            Ok(()) => {
                if self.failing {
                    tracing::info!(group = %self.group, "history relay syncing again");
                }
                self.failing = false;
                self.backoff.reset();
                Some(())
            }
            Err(error) => {
                self.failed(&error);
                None
            }
        }
    }

    /// Notes a failed sync or receive and schedules a retry.
    fn failed(&mut self, error: &LayerError) {
        self.histories.metrics.sync_error();
        if !self.failing {
            tracing::warn!(group = %self.group, %error, "history relay cannot sync; retrying");
        }
        self.failing = true;
        self.retry_at = Some(Instant::now() + self.backoff.next_delay());
    }

    /// Takes in a snapshot: a new epoch or a gap becomes a `lost` notice to
    /// every subscriber, then every entry past the position is handed out.
    async fn absorb(&mut self, snapshot: HistorySnapshot) -> Result<(), LayerError> {
        let Some((epoch, top)) = self.position.clone() else {
            // The first look: nothing to hand out yet.
            self.position = Some((snapshot.epoch.clone(), snapshot.top));
            return Ok(());
        };
        if snapshot.epoch != epoch {
            // The history was lost (Redis restarted empty, flushed): its
            // membership in the group may be gone too.
            self.histories.store.track(&self.group).await?;
            let fresh = self
                .histories
                .store
                .sync(&self.group, 0, self.limits)
                .await?;
            let before = fresh.first.saturating_sub(1);
            self.notify_lost("epoch_changed", &fresh.epoch, before);
            self.position = Some((fresh.epoch.clone(), before));
            self.deliver(&fresh);
            return Ok(());
        }
        if snapshot.first > top + 1 {
            // Entries left the window before this process saw them.
            self.notify_lost("too_old", &epoch, snapshot.first - 1);
        }
        self.deliver(&snapshot);
        Ok(())
    }

    /// Hands every entry past the position to every subscriber.
    fn deliver(&mut self, snapshot: &HistorySnapshot) {
        let Some((_, top)) = &self.position else {
            return;
        };
        let top = *top;
        let mut handed = 0;
        for (offset, message) in snapshot.entries.iter().filter(|(o, _)| *o > top) {
            let marked = mark(message, &self.group, *offset, &snapshot.epoch);
            let mut overflowed = Vec::new();
            self.subscribers.retain(|subscriber| {
                match subscriber.sender.try_send(marked.clone()) {
                    Ok(()) => {
                        handed += 1;
                        true
                    }
                    Err(LocalSendError::Gone) => false,
                    Err(LocalSendError::Full) => {
                        overflowed.push(subscriber.sender.clone());
                        false
                    }
                }
            });
            for sender in overflowed {
                // It misses this message: it leaves the relay and, once its
                // mailbox has room, hears where its stream stopped.
                let notice = self.lost_notice("overflow", &snapshot.epoch, offset - 1);
                self.histories.metrics.lost("overflow");
                self.pending_notices.push((sender, notice));
            }
        }
        self.histories.metrics.delivered(handed);
        self.position = Some((snapshot.epoch.clone(), snapshot.top.max(top)));
    }

    /// Tells every subscriber it may have missed messages; its position is
    /// now `offset` in `epoch`.
    fn notify_lost(&mut self, reason: &'static str, epoch: &Arc<str>, offset: u64) {
        let notice = self.lost_notice(reason, epoch, offset);
        let mut unreached = Vec::new();
        self.subscribers.retain(
            |subscriber| match subscriber.sender.try_send(notice.clone()) {
                Ok(()) => true,
                Err(LocalSendError::Gone) => false,
                Err(LocalSendError::Full) => {
                    unreached.push(subscriber.sender.clone());
                    false
                }
            },
        );
        let told = self.subscribers.len() + unreached.len();
        for _ in 0..told {
            self.histories.metrics.lost(reason);
        }
        self.pending_notices
            .extend(unreached.into_iter().map(|sender| (sender, notice.clone())));
    }

    fn lost_notice(&self, reason: &'static str, epoch: &Arc<str>, offset: u64) -> Message {
        Message::new(control::HISTORY_LOST)
            .with("group", self.group.as_str())
            .with("reason", reason)
            .with("offset", offset)
            .with("epoch", &**epoch)
    }

    /// Tries the notices that met a full mailbox again.
    fn retry_notices(&mut self) {
        self.pending_notices.retain(|(sender, notice)| {
            matches!(sender.try_send(notice.clone()), Err(LocalSendError::Full))
        });
    }

    async fn handle(&mut self, command: Command) {
        match command {
            Command::Unsubscribe { channel } => {
                self.subscribers.retain(|s| s.channel != channel);
            }
            Command::Subscribe {
                sender,
                recover,
                reply,
            } => {
                let joined = self.subscribe(sender, recover).await;
                let result = match &joined {
                    Ok(joined) => joined.reason.unwrap_or("recovered"),
                    Err(_) => "failed",
                };
                self.histories.metrics.recovery(result);
                // The subscriber may have gone meanwhile; nothing to do then.
                let _ = reply.send(joined);
            }
        }
    }

    async fn subscribe(
        &mut self,
        sender: LocalSender,
        recover: Option<Position>,
    ) -> Result<Joined, HistoryError> {
        let Some(channel) = sender.channel() else {
            return Err(HistoryError::Stopped);
        };
        self.subscribers.retain(|s| s.channel != channel);
        if self.catch_up().await.is_none() {
            return Err(HistoryError::Layer(LayerError::backend(
                "the history could not be read; retry",
            )));
        }
        let Some((epoch, top)) = self.position.clone() else {
            return Err(HistoryError::Stopped);
        };
        let mut joined = Joined {
            epoch: epoch.clone(),
            offset: top,
            recovered: false,
            reason: None,
            publications: Vec::new(),
        };
        match recover {
            None => joined.reason = Some("no_position"),
            Some(position) if *position.epoch != *epoch => {
                // What was kept before the loss is gone, but everything
                // since is here: the client gets the current epoch's
                // messages, told that what came before them is missing.
                let snapshot = self
                    .histories
                    .store
                    .sync(&self.group, 0, self.limits)
                    .await?;
                let publications = marked(&snapshot, &self.group);
                let kept_in = snapshot.epoch.clone();
                self.absorb(snapshot).await?;
                if let Some((epoch, top)) = &self.position {
                    joined.epoch = epoch.clone();
                    joined.offset = *top;
                }
                joined.reason = Some("epoch_changed");
                if joined.epoch == kept_in {
                    joined.publications = publications;
                }
            }
            Some(position) if position.offset > top => joined.reason = Some("epoch_changed"),
            Some(position) if position.offset == top => joined.recovered = true,
            Some(position) => {
                let snapshot = self
                    .histories
                    .store
                    .sync(&self.group, position.offset, self.limits)
                    .await?;
                let same_epoch = snapshot.epoch == epoch;
                let covered = snapshot.covers(position.offset);
                let publications = marked(&snapshot, &self.group);
                // Anything newer than `top` goes to the others as well.
                self.absorb(snapshot).await?;
                if let Some((epoch, top)) = &self.position {
                    joined.epoch = epoch.clone();
                    joined.offset = *top;
                }
                match (same_epoch, covered) {
                    (false, _) => joined.reason = Some("epoch_changed"),
                    (true, false) => joined.reason = Some("too_old"),
                    (true, true) => {
                        joined.recovered = true;
                        joined.publications = publications;
                    }
                }
            }
        }
        self.subscribers.push(Subscriber { channel, sender });
        Ok(joined)
    }

    /// Leaves the group (best effort, bounded) when the relay ends.
    async fn leave(&mut self) {
        let Some(receiver) = self.wake.take() else {
            return;
        };
        let layer = &self.histories.layer;
        let leave = layer.group_discard(&self.group, receiver.channel());
        if let Ok(Err(error)) = tokio::time::timeout(LEAVE_TIMEOUT, leave).await {
            tracing::debug!(group = %self.group, %error, "history relay could not leave its group");
        }
    }
}

/// The snapshot's entries marked as kept messages of `group`.
fn marked(snapshot: &HistorySnapshot, group: &str) -> Vec<(u64, Message)> {
    snapshot
        .entries
        .iter()
        .map(|(offset, message)| (*offset, mark(message, group, *offset, &snapshot.epoch)))
        .collect()
}

/// Completes at `at`, or never.
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
