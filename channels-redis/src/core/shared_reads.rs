//! [`SharedReads`]: concurrent reads of one key share one round trip, without
//! ever handing a caller a read that began before it was called.
//!
//! `group_send` reads the group each time: at least one round trip (a prune
//! that vouches for the members kept in `group_cache`), or the whole group (a
//! ZRANGE of every member, which redis-rs parses name by name: ~190 ns a
//! name). When many sends to one group are under way at once (a busy room),
//! a send that finds a read of its group in flight waits for it to end, and
//! then shares the *next* read with every send that arrived meanwhile. That
//! read is issued after all of them were called, so each still sees every
//! membership written before it was called (by this process or by any other,
//! Python included): no read begun earlier is reused. A send that finds no
//! read in flight reads at once, as before, so a lone send pays nothing.

use std::collections::HashMap;
use std::future::Future;
use std::pin::pin;
use std::sync::{Arc, Mutex};

use channels_core::lock;
use foldhash::fast::RandomState;
use tokio::sync::Notify;

/// Reads of `T` by key, shared between concurrent callers (see the module).
/// A key's entry lives only while some caller uses it.
#[derive(Debug)]
pub(crate) struct SharedReads<T, E> {
    keys: Mutex<Entries<T, E>>,
}

type Entries<T, E> = HashMap<String, Arc<Entry<T, E>>, RandomState>;

#[derive(Debug)]
struct Entry<T, E> {
    state: Mutex<State<T, E>>,
    finished: Notify,
}

#[derive(Debug)]
struct State<T, E> {
    /// How many reads were issued; the latest has this number.
    issued: u64,
    /// Whether read number `issued` is under way.
    in_flight: bool,
    /// The newest finished read: its number and what it returned.
    latest: Option<(u64, Result<T, E>)>,
    /// Callers using this entry; it is removed at zero.
    users: usize,
}

impl<T: Clone, E: Clone> SharedReads<T, E> {
    pub(crate) fn new() -> Self {
        Self {
            keys: Mutex::new(HashMap::default()),
        }
    }

    /// The result of a read of `key` issued after this call began: `read`
    /// itself when no read of `key` is under way (or when the one this caller
    /// waited for was cancelled), otherwise the next read, shared.
    pub(crate) async fn read<F, Fut>(&self, key: &str, read: F) -> Result<T, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let user = User::enter(self, key);
        let entry = &user.entry;
        // Read `need` (or a later one) is the first issued after this call.
        let need = lock(&entry.state).issued + 1;
        loop {
            let mut finished = pin!(entry.finished.notified());
            // Registered before the state is checked, so no wake-up is missed.
            finished.as_mut().enable();
            let issue = {
                let mut state = lock(&entry.state);
                if let Some((number, result)) = &state.latest
                    && *number >= need
                {
                    return result.clone();
                }
                if state.in_flight {
                    None
                } else {
                    state.issued += 1;
                    state.in_flight = true;
                    Some(state.issued)
                }
            };
            if let Some(number) = issue {
                let flight = Flight {
                    entry,
                    number,
                    landed: false,
                };
                let result = read().await;
                flight.land(result.clone());
                return result;
            }
            finished.await;
        }
    }

    /// How many keys have an entry (callers using them right now).
    #[cfg(test)]
    fn len(&self) -> usize {
        lock(&self.keys).len()
    }
}

/// One caller's use of a key's entry; removes the entry when the last leaves.
struct User<'a, T, E> {
    reads: &'a SharedReads<T, E>,
    key: &'a str,
    entry: Arc<Entry<T, E>>,
}

impl<'a, T, E> User<'a, T, E> {
    fn enter(reads: &'a SharedReads<T, E>, key: &'a str) -> Self {
        let mut keys = lock(&reads.keys);
        let entry = match keys.get(key) {
            Some(entry) => entry.clone(),
            None => {
                let entry = Arc::new(Entry {
                    state: Mutex::new(State {
                        issued: 0,
                        in_flight: false,
                        latest: None,
                        users: 0,
                    }),
                    finished: Notify::new(),
                });
                keys.insert(key.to_owned(), entry.clone());
                entry
            }
        };
        lock(&entry.state).users += 1;
        Self { reads, key, entry }
    }
}

impl<T, E> Drop for User<'_, T, E> {
    fn drop(&mut self) {
        let mut keys = lock(&self.reads.keys);
        let mut state = lock(&self.entry.state);
        state.users -= 1;
        if state.users == 0 {
            keys.remove(self.key);
        }
    }
}

/// A read under way. Landing publishes its result; dropped without landing
/// (the caller was cancelled), it lets a waiting caller issue the read.
struct Flight<'a, T, E> {
    entry: &'a Entry<T, E>,
    number: u64,
    landed: bool,
}

impl<T, E> Flight<'_, T, E> {
    fn land(mut self, result: Result<T, E>) {
        let mut state = lock(&self.entry.state);
        state.latest = Some((self.number, result));
        state.in_flight = false;
        self.landed = true;
        drop(state);
        self.entry.finished.notify_waiters();
    }
}

impl<T, E> Drop for Flight<'_, T, E> {
    fn drop(&mut self) {
        if !self.landed {
            lock(&self.entry.state).in_flight = false;
            self.entry.finished.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::time::Duration;

    use tokio::sync::oneshot;
    use tokio::task::JoinHandle;

    use super::*;

    type Reads = SharedReads<u64, String>;

    /// Waits (bounded) until `condition` holds, yielding to other tasks.
    async fn until(mut condition: impl FnMut() -> bool) {
        tokio::time::timeout(Duration::from_secs(5), async {
            while !condition() {
                tokio::task::yield_now().await;
            }
        })
        .await
        .expect("condition reached in time");
    }

    /// Waits until `users` callers use `key`'s entry.
    async fn until_users(reads: &Reads, key: &str, users: usize) {
        until(|| {
            lock(&reads.keys)
                .get(key)
                .is_some_and(|entry| lock(&entry.state).users == users)
        })
        .await;
    }

    /// Spawns a read of `key` returning 1 once `release` fires (never without
    /// one), and waits until that read is under way.
    async fn held_read(
        reads: &Arc<Reads>,
        key: &'static str,
        release: Option<oneshot::Receiver<()>>,
    ) -> JoinHandle<Result<u64, String>> {
        let started = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn({
            let reads = reads.clone();
            let started = started.clone();
            async move {
                reads
                    .read(key, || async move {
                        started.store(true, Ordering::SeqCst);
                        match release {
                            Some(release) => release.await.expect("released"),
                            None => std::future::pending().await,
                        }
                        Ok(1)
                    })
                    .await
            }
        });
        until(|| started.load(Ordering::SeqCst)).await;
        task
    }

    /// Spawns a read of `key` that returns `result` at once, if it is the one
    /// issued.
    fn quick_read(
        reads: &Arc<Reads>,
        key: &'static str,
        result: Result<u64, String>,
    ) -> JoinHandle<Result<u64, String>> {
        let reads = reads.clone();
        tokio::spawn(async move { reads.read(key, || async { result }).await })
    }

    #[tokio::test]
    async fn a_lone_read_runs_at_once_and_its_entry_goes() {
        let reads = Reads::new();
        let value = reads.read("g", || async { Ok(7) }).await;
        assert_eq!(value, Ok(7));
        assert_eq!(reads.len(), 0);
    }

    #[tokio::test]
    async fn callers_during_a_read_share_the_next_one_not_the_one_under_way() {
        let reads = Arc::new(Reads::new());
        let (release, held) = oneshot::channel();
        let first = held_read(&reads, "g", Some(held)).await;
        // Five callers arrive while the first read is under way; each would
        // return a new number if its own read were the one issued.
        let issued = Arc::new(AtomicU64::new(1));
        let later: Vec<_> = (0..5)
            .map(|_| {
                let reads = reads.clone();
                let issued = issued.clone();
                tokio::spawn(async move {
                    reads
                        .read("g", || async move {
                            Ok(issued.fetch_add(1, Ordering::SeqCst) + 1)
                        })
                        .await
                })
            })
            .collect();
        until_users(&reads, "g", 6).await;
        release.send(()).expect("first read waiting");
        assert_eq!(first.await.expect("joined"), Ok(1));
        for caller in later {
            // Every later caller got read 2: issued after they were called,
            // and only one for all five.
            assert_eq!(caller.await.expect("joined"), Ok(2));
        }
        assert_eq!(issued.load(Ordering::SeqCst), 2);
        assert_eq!(reads.len(), 0);
    }

    #[tokio::test]
    async fn a_failed_read_fails_everyone_who_shared_it() {
        let reads = Arc::new(Reads::new());
        let (release, held) = oneshot::channel();
        let first = held_read(&reads, "g", Some(held)).await;
        let second = quick_read(&reads, "g", Err("down".to_owned()));
        let third = quick_read(&reads, "g", Err("down too".to_owned()));
        until_users(&reads, "g", 3).await;
        release.send(()).expect("first read waiting");
        assert_eq!(first.await.expect("joined"), Ok(1));
        let second = second.await.expect("joined");
        let third = third.await.expect("joined");
        // One of the two issued the shared read; both got its error.
        assert!(second.is_err() && second == third, "{second:?} {third:?}");
    }

    #[tokio::test]
    async fn a_cancelled_read_hands_over_to_a_waiting_caller() {
        let reads = Arc::new(Reads::new());
        let first = held_read(&reads, "g", None).await;
        let second = quick_read(&reads, "g", Ok(2));
        until_users(&reads, "g", 2).await;
        first.abort();
        let second = tokio::time::timeout(Duration::from_secs(5), second)
            .await
            .expect("the waiting caller was not stranded")
            .expect("joined");
        assert_eq!(second, Ok(2));
        assert_eq!(reads.len(), 0);
    }

    #[tokio::test]
    async fn different_keys_do_not_wait_for_each_other() {
        let reads = Arc::new(Reads::new());
        let stuck = held_read(&reads, "a", None).await;
        let other =
            tokio::time::timeout(Duration::from_secs(5), reads.read("b", || async { Ok(2) }))
                .await
                .expect("another key's read is not held up");
        assert_eq!(other, Ok(2));
        stuck.abort();
    }
}
