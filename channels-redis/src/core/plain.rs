//! Plain (non-`!`) channels: named channels that several processes may
//! share (a worker's channel), so messages stay in Redis until a receiver
//! here asks for one.
//!
//! Each plain channel received or opened here gets an on-demand mailbox and
//! one pump task. The pump pops one message whenever a receive waits on the
//! empty mailbox, following channels_redis: restore `$inflight` (first pop of
//! a key on a shard), `BZPOPMIN key timeout`, back it up in `$inflight`,
//! decode, drop the backup. If every receive that wanted it was cancelled
//! meanwhile, the message goes back into Redis with its old score, for
//! whoever asks next (here or in another process). The pump never abandons a
//! pop half-way: it stops only between pops (each at most 1 s), so a popped
//! message always lands somewhere. Hosts are polled round-robin, one per pop.
//! The pump ends, and the mailbox is forgotten, once nothing holds it.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use channels_core::{
    Backoff, ChannelCapacities, DropCounters, LayerError, Mailbox, Message, Receiver, Release, lock,
};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::warn;

use super::settings::{Settings, Shards, now_secs};
use crate::connection::LONGEST_BLOCK;
use crate::keys::inflight_key;
use crate::lua;

/// Longest one pop blocks, so a pump notices it is no longer needed.
const MAX_POLL: Duration = LONGEST_BLOCK;

/// Pauses after a failed pop.
const BACKOFF_MIN: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(1);

/// The plain channels this instance receives.
#[derive(Debug)]
pub(crate) struct PlainChannels {
    settings: Arc<Settings>,
    shards: Arc<Shards>,
    capacities: ChannelCapacities,
    drops: Arc<DropCounters>,
    mailboxes: Mutex<HashMap<Arc<str>, Arc<Mailbox>>>,
    /// Shards whose `$inflight` backup of a key was already restored.
    restored: Mutex<HashSet<(Arc<str>, usize)>>,
    pumps: TaskTracker,
    stop: Mutex<CancellationToken>,
}

impl PlainChannels {
    pub(crate) fn new(
        settings: Arc<Settings>,
        shards: Arc<Shards>,
        drops: Arc<DropCounters>,
    ) -> Self {
        Self {
            capacities: settings.layer.capacities.clone(),
            settings,
            shards,
            drops,
            mailboxes: Mutex::new(HashMap::new()),
            restored: Mutex::new(HashSet::new()),
            pumps: TaskTracker::new(),
            stop: Mutex::new(CancellationToken::new()),
        }
    }

    /// The mailbox of `channel`, held once more (the caller lets go with
    /// `remove_holder` or through a `Receiver`), with its pump running.
    fn hold(self: &Arc<Self>, channel: &str) -> Arc<Mailbox> {
        let mut mailboxes = lock(&self.mailboxes);
        if let Some(mailbox) = mailboxes.get(channel) {
            mailbox.add_holder();
            return mailbox.clone();
        }
        let name: Arc<str> = Arc::from(channel);
        let mailbox = Arc::new(Mailbox::on_demand(
            name.clone(),
            self.capacities.capacity_for(channel),
            self.drops.clone(),
        ));
        mailbox.add_holder();
        mailboxes.insert(name, mailbox.clone());
        let stop = lock(&self.stop).clone();
        self.pumps.spawn(pump(self.clone(), mailbox.clone(), stop));
        mailbox
    }

    /// A receiver handle on `channel`.
    pub(crate) fn open(self: &Arc<Self>, channel: &str) -> Receiver {
        let mailbox = self.hold(channel);
        let receiver = Receiver::new(mailbox.clone(), self.clone());
        // `Receiver::new` held it once more; keep only the handle's hold.
        mailbox.remove_holder();
        receiver
    }

    /// Receives the next message of `channel` by name.
    pub(crate) async fn receive(self: &Arc<Self>, channel: &str) -> Result<Message, LayerError> {
        let mailbox = self.hold(channel);
        let holding = Holding {
            plain: self,
            mailbox,
        };
        holding.mailbox.recv().await
    }

    /// Forgets `mailbox` if nothing needs it any more; its pump then ends.
    fn forget_if_unused(&self, mailbox: &Arc<Mailbox>) -> bool {
        let mut mailboxes = lock(&self.mailboxes);
        let ours = mailboxes
            .get(mailbox.channel())
            .is_some_and(|found| Arc::ptr_eq(found, mailbox));
        if ours && mailbox.is_unused() {
            mailboxes.remove(mailbox.channel());
            return true;
        }
        !ours
    }

    /// Forgets every buffered message (`flush`).
    pub(crate) fn clear(&self) {
        for mailbox in lock(&self.mailboxes).values() {
            mailbox.clear();
        }
        lock(&self.restored).clear();
    }

    /// Stops every pump (after its current pop) and closes the mailboxes.
    pub(crate) async fn close(&self) {
        let stop = std::mem::take(&mut *lock(&self.stop));
        stop.cancel();
        self.pumps.close();
        if tokio::time::timeout(MAX_POLL * 3, self.pumps.wait())
            .await
            .is_err()
        {
            warn!("plain-channel pumps did not stop in time");
        }
        self.pumps.reopen();
        for (_, mailbox) in lock(&self.mailboxes).drain() {
            mailbox.close();
        }
    }

    /// How many plain channels have a mailbox here.
    pub(crate) fn len(&self) -> usize {
        lock(&self.mailboxes).len()
    }
}

impl Release for PlainChannels {
    /// Messages already popped stay for a later receive here (they left
    /// Redis); the mailbox is forgotten once empty.
    fn release(&self, mailbox: &Arc<Mailbox>) {
        self.forget_if_unused(mailbox);
    }
}

/// Holds a mailbox while a `receive` by name waits on it.
struct Holding<'a> {
    plain: &'a PlainChannels,
    mailbox: Arc<Mailbox>,
}

impl Drop for Holding<'_> {
    fn drop(&mut self) {
        if self.mailbox.remove_holder() {
            self.plain.forget_if_unused(&self.mailbox);
        }
    }
}

/// Pops messages of one plain channel into its mailbox while anything holds
/// it and a receive waits.
async fn pump(plain: Arc<PlainChannels>, mailbox: Arc<Mailbox>, stop: CancellationToken) {
    let mut backoff = Backoff::new(BACKOFF_MIN, BACKOFF_MAX);
    // While failed, receives return the error at once and never wait, so
    // the pump retries on its own until Redis answers again.
    let mut failed = false;
    loop {
        if failed {
            if plain.forget_if_unused(&mailbox) {
                return;
            }
        } else {
            tokio::select! {
                () = stop.cancelled() => return,
                () = mailbox.demanded() => {}
                () = tokio::time::sleep(MAX_POLL) => {
                    mailbox.purge();
                    if plain.forget_if_unused(&mailbox) {
                        return;
                    }
                    continue;
                }
            }
        }
        match pop_once(&plain, &mailbox).await {
            Ok(()) => {
                if failed {
                    mailbox.recover();
                    failed = false;
                }
                backoff.reset();
            }
            Err(error) => {
                if !failed {
                    warn!(channel = %mailbox.channel(), %error, "receiving a plain channel failed; retrying");
                }
                mailbox.fail(&Arc::from(error.to_string()));
                failed = true;
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(backoff.next_delay()) => {}
                }
            }
        }
    }
}

async fn pop_once(plain: &PlainChannels, mailbox: &Mailbox) -> Result<(), LayerError> {
    let channel = mailbox.channel();
    let index = plain.shards.next_receive();
    let shard = plain.shards.get(index);
    let key = plain.settings.channel_key(channel);
    let inflight = inflight_key(&key);
    let poll = plain.settings.brpop_timeout.min(MAX_POLL);
    let Some(mut connection) = shard.dedicated("receive").await? else {
        // Every dedicated connection is in use: try again (the pump loops
        // while a receive still waits).
        return Ok(());
    };
    let restore_key = (mailbox.channel_arc().clone(), index);
    if !lock(&plain.restored).contains(&restore_key) {
        lua::RESTORE
            .key(&key)
            .key(&inflight)
            .invoke_async::<i64>(&mut connection)
            .await
            .map_err(|e| shard.error("receive", e))?;
        lock(&plain.restored).insert(restore_key);
    }
    let popped: Option<(Vec<u8>, Vec<u8>, Vec<u8>)> = redis::cmd("BZPOPMIN")
        .arg(&key)
        .arg(poll.as_secs_f64())
        .query_async(&mut connection)
        .await
        .map_err(|e| shard.error("receive", e))?;
    if let Some((_, member, score)) = popped {
        redis::cmd("ZADD")
            .arg(&inflight)
            .arg(&score)
            .arg(&member)
            .exec_async(&mut connection)
            .await
            .map_err(|e| shard.error("receive", e))?;
        if mailbox.waiting() == 0 {
            // Every receive that wanted this was cancelled: put it back in
            // Redis (old score, so it stays first) for whoever asks next.
            redis::pipe()
                .atomic()
                .cmd("ZADD")
                .arg(&key)
                .arg(&score)
                .arg(&member)
                .ignore()
                .cmd("ZREM")
                .arg(&inflight)
                .arg(&member)
                .ignore()
                .exec_async(&mut connection)
                .await
                .map_err(|e| shard.error("receive", e))?;
            connection.release();
            return Ok(());
        }
        if !deliver(plain, mailbox, &member, &score) {
            // Closed under this pop: the next receive's RESTORE brings it back.
            return Ok(());
        }
        redis::cmd("ZREM")
            .arg(&inflight)
            .arg(&member)
            .exec_async(&mut connection)
            .await
            .map_err(|e| shard.error("receive", e))?;
    }
    connection.release();
    Ok(())
}

/// Decodes a popped member into the mailbox (expiring at its send time plus
/// the layer's expiry). False when the mailbox was closed meanwhile (the
/// layer closed while this pop ran): the member must stay in `$inflight`.
fn deliver(plain: &PlainChannels, mailbox: &Mailbox, member: &[u8], score: &[u8]) -> bool {
    let score = std::str::from_utf8(score)
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .unwrap_or_else(now_secs);
    match plain.settings.serializer.deserialize(member) {
        Ok(unpacked) => {
            let left = score + plain.settings.layer.expiry.as_secs_f64() - now_secs().floor();
            if left <= 0.0 {
                plain.drops.count_expired(1);
                return true;
            }
            let expires_at = Instant::now() + Duration::from_secs_f64(left);
            mailbox.push_evicting(unpacked.message, expires_at).is_ok()
        }
        Err(e) => {
            plain.drops.count_undecodable();
            warn!(
                "dropping an undecodable message on {}: {e}",
                mailbox.channel()
            );
            true
        }
    }
}
