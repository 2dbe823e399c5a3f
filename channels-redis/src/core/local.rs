//! [`LocalChannels`]: the mailboxes of this instance's process-local (`!`)
//! channels, which the receive loop fills, and the one signal saying whether
//! that loop currently has Redis.
//!
//! Receiver handles read their mailbox directly. The loop routes each popped
//! message by the names in its `__asgi_channel__` with one lookup per name in
//! a sharded map. A message for a name nobody holds yet is kept (Django
//! semantics: `receive` may come later) until it expires.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use channels_core::{
    ChannelCapacities, DropCounters, LayerError, Mailbox, Message, Receiver, Release, lock,
};
use foldhash::fast::RandomState;
use tokio::time::Instant;

/// Shards of the map: enough that the loop and connecting clients rarely meet.
const SHARDS: usize = 16;

type Shard = HashMap<Arc<str>, Arc<Mailbox>, RandomState>;

/// The mailboxes of process-local channels, and the receive loop's health.
#[derive(Debug)]
pub(crate) struct LocalChannels {
    shards: Box<[Mutex<Shard>]>,
    hasher: RandomState,
    capacities: ChannelCapacities,
    expiry: Duration,
    drops: Arc<DropCounters>,
    /// Why the receive loop is without Redis, while it is. The one failure
    /// signal: receives of empty mailboxes fail with it, readiness reads it.
    outage: Mutex<Option<Arc<str>>>,
}

/// The receive loop's memory of where the last message it routed went (see
/// [`LocalChannels::route`]); it keeps those mailboxes alive until the next
/// message or [`Routes::clear`].
#[derive(Debug, Default)]
pub(crate) struct Routes {
    mailboxes: Vec<Arc<Mailbox>>,
}

impl Routes {
    /// Lets go of the kept mailboxes (the loop does it on its sweep, so a
    /// forgotten one is not kept alive by this for long).
    pub(crate) fn clear(&mut self) {
        self.mailboxes = Vec::new();
    }
}

impl LocalChannels {
    pub(crate) fn new(
        capacities: ChannelCapacities,
        expiry: Duration,
        drops: Arc<DropCounters>,
    ) -> Self {
        let hasher = RandomState::default();
        Self {
            shards: (0..SHARDS)
                .map(|_| Mutex::new(HashMap::with_hasher(hasher.clone())))
                .collect(),
            hasher,
            capacities,
            expiry,
            drops,
            outage: Mutex::new(None),
        }
    }

    fn shard(&self, channel: &str) -> MutexGuard<'_, Shard> {
        let index = usize::try_from(self.hasher.hash_one(channel)).unwrap_or_default() % SHARDS;
        lock(&self.shards[index])
    }

    /// The mailbox of `channel` in a locked shard, created if needed.
    fn entry<'a>(&self, shard: &'a mut Shard, channel: &str) -> &'a Arc<Mailbox> {
        if !shard.contains_key(channel) {
            let name: Arc<str> = Arc::from(channel);
            let mailbox = Mailbox::new(
                name.clone(),
                self.capacities.capacity_for(channel),
                self.drops.clone(),
            );
            if let Some(reason) = &*lock(&self.outage) {
                mailbox.fail(reason);
            }
            shard.insert(name, Arc::new(mailbox));
        }
        shard
            .get(channel)
            .expect("the mailbox was inserted just above")
    }

    /// A receiver handle on `channel` (the caller checked it is ours).
    pub(crate) fn open(self: &Arc<Self>, channel: &str) -> Receiver {
        let mut shard = self.shard(channel);
        let mailbox = self.entry(&mut shard, channel).clone();
        // Under the shard lock, so no release can forget it meanwhile.
        Receiver::new(mailbox, self.clone())
    }

    /// Receives the next message of `channel` by name.
    pub(crate) async fn receive(&self, channel: &str) -> Result<Message, LayerError> {
        let mailbox = {
            let mut shard = self.shard(channel);
            let mailbox = self.entry(&mut shard, channel).clone();
            mailbox.add_holder();
            mailbox
        };
        let receiving = Receiving {
            local: self,
            mailbox,
        };
        receiving.mailbox.recv().await
    }

    /// Queues a message popped from Redis (sent at `score`, Unix seconds) for
    /// each channel it names, sharing one copy; a full buffer drops its
    /// oldest message (channels_redis keeps the newest), counted.
    ///
    /// `routes` holds the mailboxes the previous message went to: a group's
    /// messages name the same channels in the same order, so a name found
    /// at its place there is pushed to without a lookup. A mailbox forgotten
    /// since was closed when it was ([`Mailbox::close_if_unused`]) and
    /// refuses the push; the name is then looked up again.
    pub(crate) fn route<'a>(
        &self,
        routes: &mut Routes,
        message: &Message,
        channels: impl IntoIterator<Item = &'a str, IntoIter: ExactSizeIterator>,
        score: f64,
        now_secs: f64,
    ) {
        let channels = channels.into_iter();
        let left = score + self.expiry.as_secs_f64() - now_secs.floor();
        if left <= 0.0 {
            self.drops.count_expired(channels.len() as u64);
            return;
        }
        let expires_at = Instant::now() + Duration::from_secs_f64(left);
        let kept = &mut routes.mailboxes;
        // Room for exactly this list: a group of 20,000 keeps 160 KB, not
        // up to twice that.
        kept.reserve_exact(channels.len().saturating_sub(kept.len()));
        let mut count = 0;
        for channel in channels {
            let missed = match kept.get(count) {
                Some(mailbox) if mailbox.channel() == channel => {
                    push_routed(mailbox, message.clone(), expires_at).err()
                }
                _ => Some(message.clone()),
            };
            if let Some(message) = missed {
                let mut shard = self.shard(channel);
                let mailbox = self.entry(&mut shard, channel).clone();
                let pushed = push_routed(&mailbox, message, expires_at);
                // A mailbox in the map is never closed: it is closed only
                // as it leaves the map, under this same lock.
                debug_assert!(pushed.is_ok(), "a mailbox in the map was closed");
                drop(shard);
                match kept.get_mut(count) {
                    Some(slot) => *slot = mailbox,
                    None => kept.push(mailbox),
                }
            }
            count += 1;
        }
        kept.truncate(count);
    }

    /// The receive loop lost Redis: receives of empty mailboxes fail with
    /// `reason` until [`LocalChannels::recover`].
    pub(crate) fn fail(&self, reason: &str) {
        let reason: Arc<str> = Arc::from(reason);
        *lock(&self.outage) = Some(reason.clone());
        self.each(|mailbox| mailbox.fail(&reason));
    }

    /// The receive loop has Redis again.
    pub(crate) fn recover(&self) {
        *lock(&self.outage) = None;
        self.each(|mailbox| mailbox.recover());
    }

    /// Why receiving fails now, if it does.
    pub(crate) fn outage(&self) -> Option<Arc<str>> {
        lock(&self.outage).clone()
    }

    /// Closes every mailbox (`close()`): pending receives get `Closed`, and
    /// the mailboxes are forgotten, so a later use starts afresh.
    pub(crate) fn close(&self) {
        for shard in self.shards.iter() {
            for (_, mailbox) in lock(shard).drain() {
                mailbox.close();
            }
        }
    }

    /// Drops expired messages and forgets mailboxes nothing needs.
    pub(crate) fn sweep(&self) {
        for shard in self.shards.iter() {
            lock(shard).retain(|_, mailbox| {
                mailbox.purge();
                !mailbox.close_if_unused()
            });
        }
    }

    /// Forgets every buffered message (`flush`).
    pub(crate) fn clear(&self) {
        for shard in self.shards.iter() {
            lock(shard).retain(|_, mailbox| {
                mailbox.clear();
                !mailbox.close_if_unused()
            });
        }
    }

    /// The layer's drop counters.
    pub(crate) fn drops(&self) -> &DropCounters {
        &self.drops
    }

    /// How many channels have a mailbox.
    pub(crate) fn len(&self) -> usize {
        self.shards.iter().map(|shard| lock(shard).len()).sum()
    }

    fn each(&self, mut f: impl FnMut(&Mailbox)) {
        for shard in self.shards.iter() {
            for mailbox in lock(shard).values() {
                f(mailbox);
            }
        }
    }

    fn forget_if_unused(shard: &mut Shard, mailbox: &Arc<Mailbox>) {
        let channel = mailbox.channel();
        // Closed as it leaves the map, so a push through `Routes` can tell.
        if shard
            .get(channel)
            .is_some_and(|found| Arc::ptr_eq(found, mailbox) && mailbox.close_if_unused())
        {
            shard.remove(channel);
        }
    }
}

impl Release for LocalChannels {
    /// The connection is gone: drop what was buffered for it and forget the
    /// mailbox, unless a holder came back.
    fn release(&self, mailbox: &Arc<Mailbox>) {
        let mut shard = self.shard(mailbox.channel());
        if mailbox.holders() > 0 {
            return;
        }
        mailbox.clear();
        Self::forget_if_unused(&mut shard, mailbox);
    }
}

/// Pins a mailbox while a `receive` by name waits on it, and forgets it
/// afterwards if nothing else needs it (also when the receive is cancelled).
struct Receiving<'a> {
    local: &'a LocalChannels,
    mailbox: Arc<Mailbox>,
}

impl Drop for Receiving<'_> {
    fn drop(&mut self) {
        let mut shard = self.local.shard(self.mailbox.channel());
        self.mailbox.remove_holder();
        LocalChannels::forget_if_unused(&mut shard, &self.mailbox);
    }
}

/// Queues a routed message, evicting the oldest one when the mailbox is full
/// (counted by the mailbox). Hands the message back if the mailbox is closed.
fn push_routed(mailbox: &Mailbox, message: Message, expires_at: Instant) -> Result<(), Message> {
    if mailbox.push_evicting(message, expires_at)? {
        tracing::debug!(
            channel = mailbox.channel(),
            capacity = mailbox.capacity(),
            "channel buffer full; dropped its oldest message"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn local(capacity: usize) -> Arc<LocalChannels> {
        Arc::new(LocalChannels::new(
            ChannelCapacities::new(capacity),
            Duration::from_secs(60),
            Arc::default(),
        ))
    }

    fn now() -> f64 {
        super::super::settings::now_secs()
    }

    #[tokio::test]
    async fn k4_buffer_keeps_the_newest_capacity_messages() {
        let local = local(100);
        let receiver = local.open("c!x");
        for i in 0..10_000 {
            local.route(
                &mut Routes::default(),
                &Message::new("m").with("i", i),
                ["c!x"],
                now(),
                now(),
            );
        }
        assert_eq!(local.drops.full(), 9_900);
        let first = receiver.try_recv().unwrap().unwrap();
        assert_eq!(first.get("i").and_then(|v| v.as_i64()), Some(9_900));
    }

    #[tokio::test]
    async fn expired_messages_are_counted_not_queued() {
        let local = local(10);
        let receiver = local.open("c!x");
        local.route(
            &mut Routes::default(),
            &Message::new("old"),
            ["c!x"],
            now() - 120.0,
            now(),
        );
        assert!(receiver.try_recv().unwrap().is_none());
        assert_eq!(local.drops.expired(), 1);
    }

    #[tokio::test]
    async fn an_outage_reaches_new_and_old_mailboxes_until_recovery() {
        let local = local(10);
        let before = local.open("c!a");
        local.fail("redis down");
        let after = local.open("c!b");
        assert!(matches!(before.try_recv(), Err(LayerError::Backend(_))));
        assert!(matches!(after.try_recv(), Err(LayerError::Backend(_))));
        local.recover();
        assert!(after.try_recv().unwrap().is_none());
        assert!(local.outage().is_none());
    }

    #[tokio::test]
    async fn release_forgets_and_messages_for_unheld_names_wait() {
        let local = local(10);
        let handle = local.open("c!a");
        local.route(
            &mut Routes::default(),
            &Message::new("x"),
            ["c!a", "c!b"],
            now(),
            now(),
        );
        assert_eq!(local.len(), 2);
        drop(handle);
        assert_eq!(local.len(), 1, "the released channel is forgotten");
        let message = local.receive("c!b").await.unwrap();
        assert_eq!(message.message_type(), Some("x"));
        assert_eq!(local.len(), 0);
    }

    fn kind(n: u64) -> Message {
        Message::new("m").with("n", n)
    }

    fn number(message: &Message) -> Option<u64> {
        message.get("n").and_then(|v| v.as_u64())
    }

    #[tokio::test]
    async fn kept_routes_follow_a_changed_list_and_never_push_to_a_forgotten_mailbox() {
        let local = local(10);
        let mut routes = Routes::default();
        let a = local.open("c!a");
        let b = local.open("c!b");
        local.route(&mut routes, &kind(1), ["c!a", "c!b"], now(), now());
        assert_eq!(number(&b.try_recv().unwrap().unwrap()), Some(1));
        // b's handle goes: its mailbox leaves the map while `routes` holds it.
        drop(b);
        local.route(&mut routes, &kind(2), ["c!a", "c!b"], now(), now());
        let b = local.open("c!b");
        assert_eq!(
            b.try_recv().unwrap().as_ref().and_then(number),
            Some(2),
            "the message for the released name waits in its new mailbox"
        );
        // Reopened: the kept (old) mailbox is not the one in the map.
        local.route(&mut routes, &kind(3), ["c!a", "c!b"], now(), now());
        assert_eq!(b.try_recv().unwrap().as_ref().and_then(number), Some(3));
        // Another list at the same places: c gets it, b does not.
        let c = local.open("c!c");
        local.route(&mut routes, &kind(4), ["c!a", "c!c"], now(), now());
        assert_eq!(c.try_recv().unwrap().as_ref().and_then(number), Some(4));
        assert!(b.try_recv().unwrap().is_none());
        let got: Vec<_> = std::iter::from_fn(|| a.try_recv().unwrap())
            .map(|m| number(&m))
            .collect();
        assert_eq!(got, [Some(1), Some(2), Some(3), Some(4)]);
    }

    #[tokio::test(start_paused = true)]
    async fn kept_routes_survive_a_sweep_a_flush_and_a_close() {
        let local = local(10);
        let mut routes = Routes::default();
        // Nobody holds c!x: its message waits, then a receive by name takes
        // it and the mailbox is forgotten.
        route_and_receive(&local, &mut routes, 1).await;
        assert_eq!(local.len(), 0);
        route_and_receive(&local, &mut routes, 2).await;
        // A flush forgets the waiting message and its mailbox.
        local.route(&mut routes, &kind(3), ["c!x"], now(), now());
        local.clear();
        route_and_receive(&local, &mut routes, 4).await;
        // A sweep drops a message that expired unread and forgets its mailbox.
        local.route(&mut routes, &kind(5), ["c!x"], now() - 59.0, now());
        tokio::time::advance(Duration::from_secs(3)).await;
        local.sweep();
        assert_eq!((local.len(), local.drops.expired()), (0, 1));
        route_and_receive(&local, &mut routes, 6).await;
        // close() closes every mailbox; later messages start afresh.
        local.route(&mut routes, &kind(7), ["c!x"], now(), now());
        local.close();
        route_and_receive(&local, &mut routes, 8).await;
    }

    /// Routes message `n` to c!x through `routes` and receives it by name.
    async fn route_and_receive(local: &LocalChannels, routes: &mut Routes, n: u64) {
        local.route(routes, &kind(n), ["c!x"], now(), now());
        let received = tokio::time::timeout(Duration::from_secs(5), local.receive("c!x"))
            .await
            .expect("the routed message reached the channel's mailbox")
            .unwrap();
        assert_eq!(number(&received), Some(n));
    }
}
