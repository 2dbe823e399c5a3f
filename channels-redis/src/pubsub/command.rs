//! What a shard's callers ask its worker: [`Command`]s over a bounded
//! `mpsc`, sent through [`Commands`] (the caller side, cloned by whoever
//! needs the worker). SUBSCRIBE requests are coalesced: a caller adds its
//! topic to the [`SubscribeBatch`] already waiting in the queue when there
//! is one, so 1,000 connections opening at once cost a few commands and a
//! few round trips to Redis, not 1,000.

use std::sync::{Arc, Mutex};

use channels_core::lock;
use redis::RedisError;
use tokio::sync::{mpsc, oneshot};
use tokio::time::{Instant, timeout_at};

/// How a SUBSCRIBE request is answered: `Ok` once the topic is subscribed
/// (or no longer wanted), the error when Redis refused it.
pub(super) type SubscribeReply = oneshot::Sender<Result<(), RedisError>>;

/// One request to the worker.
#[derive(Debug)]
pub(super) enum Command {
    /// SUBSCRIBE every topic of the batch not subscribed yet (one command to
    /// Redis per 1,000 topics), then answer each request.
    Subscribe(Arc<SubscribeBatch>),
    /// PING, deliver everything Redis pushed before the reply, then answer:
    /// the sync point of `flush`.
    Sync(oneshot::Sender<()>),
    /// UNSUBSCRIBE the marked topics nobody wants any more, then answer
    /// (`delete_channel` and `flush` return after it).
    Reconcile(oneshot::Sender<()>),
}

/// SUBSCRIBE requests gathered into one [`Command::Subscribe`]; open to more
/// until the worker takes it out of the queue.
#[derive(Debug)]
pub(super) struct SubscribeBatch {
    state: Mutex<BatchState>,
}

#[derive(Debug)]
struct BatchState {
    sealed: bool,
    requests: Vec<(Arc<str>, SubscribeReply)>,
    /// Requests whose caller gave up are dropped when the batch grows this
    /// long (a batch can wait through a whole outage), so it stays within
    /// twice the callers still waiting.
    prune_at: usize,
}

/// The fewest requests a batch holds before it looks for abandoned ones.
const PRUNE_FROM: usize = 64;

impl SubscribeBatch {
    fn new(topic: Arc<str>, reply: SubscribeReply) -> Self {
        Self {
            state: Mutex::new(BatchState {
                sealed: false,
                requests: vec![(topic, reply)],
                prune_at: PRUNE_FROM,
            }),
        }
    }

    /// Adds a request, unless the worker sealed the batch: then it is handed
    /// back.
    fn add(
        &self,
        topic: Arc<str>,
        reply: SubscribeReply,
    ) -> Result<(), (Arc<str>, SubscribeReply)> {
        let mut state = lock(&self.state);
        if state.sealed {
            return Err((topic, reply));
        }
        if state.requests.len() >= state.prune_at {
            state.requests.retain(|(_, reply)| !reply.is_closed());
            state.prune_at = PRUNE_FROM.max(state.requests.len() * 2);
        }
        state.requests.push((topic, reply));
        Ok(())
    }

    /// Closes the batch to new requests and takes those it holds.
    pub(super) fn seal(&self) -> Vec<(Arc<str>, SubscribeReply)> {
        let mut state = lock(&self.state);
        state.sealed = true;
        std::mem::take(&mut state.requests)
    }
}

/// Why a command did not reach the worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum NotSent {
    /// The queue stayed full until the deadline (the worker is stuck on a
    /// dead connection).
    Busy,
    /// The worker has stopped (the layer was closed).
    Stopped,
}

/// The caller side of a worker: its command queue and the SUBSCRIBE batch
/// still open to more requests.
#[derive(Debug, Clone)]
pub(super) struct Commands {
    sender: mpsc::Sender<Command>,
    open_batch: Arc<Mutex<Option<Arc<SubscribeBatch>>>>,
}

impl Commands {
    /// A queue of `bound` commands: the caller side and the worker's end.
    pub(super) fn channel(bound: usize) -> (Self, mpsc::Receiver<Command>) {
        let (sender, receiver) = mpsc::channel(bound);
        let commands = Self {
            sender,
            open_batch: Arc::new(Mutex::new(None)),
        };
        (commands, receiver)
    }

    /// Asks the worker to SUBSCRIBE `topic`; the answer comes on the returned
    /// receiver. Joins the batch waiting in the queue if there is one, else
    /// sends a new one. Cancel-safe: a batch is created and sent in one
    /// synchronous step, after a queue slot was reserved.
    ///
    /// # Errors
    /// [`NotSent`] when no queue slot frees up before `deadline`, or the
    /// worker has stopped.
    pub(super) async fn subscribe(
        &self,
        topic: Arc<str>,
        deadline: Instant,
    ) -> Result<oneshot::Receiver<Result<(), RedisError>>, NotSent> {
        let (reply, answer) = oneshot::channel();
        let Err((topic, reply)) = self.join_open_batch(topic, reply) else {
            return Ok(answer);
        };
        let permit = match timeout_at(deadline, self.sender.reserve()).await {
            Ok(Ok(permit)) => permit,
            Ok(Err(_closed)) => return Err(NotSent::Stopped),
            Err(_elapsed) => return Err(NotSent::Busy),
        };
        let mut open = lock(&self.open_batch);
        let (topic, reply) = match open.as_ref() {
            Some(batch) => match batch.add(topic, reply) {
                Ok(()) => return Ok(answer),
                Err(request) => request,
            },
            None => (topic, reply),
        };
        let batch = Arc::new(SubscribeBatch::new(topic, reply));
        *open = Some(Arc::clone(&batch));
        permit.send(Command::Subscribe(batch));
        Ok(answer)
    }

    fn join_open_batch(
        &self,
        topic: Arc<str>,
        reply: SubscribeReply,
    ) -> Result<(), (Arc<str>, SubscribeReply)> {
        match lock(&self.open_batch).as_ref() {
            Some(batch) => batch.add(topic, reply),
            None => Err((topic, reply)),
        }
    }

    /// Sends `command`, waiting for a queue slot until `deadline`.
    ///
    /// # Errors
    /// As [`Commands::subscribe`].
    pub(super) async fn send(&self, command: Command, deadline: Instant) -> Result<(), NotSent> {
        match timeout_at(deadline, self.sender.send(command)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_closed)) => Err(NotSent::Stopped),
            Err(_elapsed) => Err(NotSent::Busy),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn later() -> Instant {
        Instant::now() + Duration::from_secs(1)
    }

    #[tokio::test]
    async fn requests_join_the_batch_waiting_in_the_queue() {
        let (commands, mut queue) = Commands::channel(4);
        let mut answers = Vec::new();
        for n in 0..100 {
            let topic: Arc<str> = Arc::from(format!("t{n}"));
            answers.push(commands.subscribe(topic, later()).await.unwrap());
        }
        let Some(Command::Subscribe(batch)) = queue.try_recv().ok() else {
            panic!("one SUBSCRIBE command expected");
        };
        assert!(
            queue.try_recv().is_err(),
            "the 100 requests share one command"
        );
        let requests = batch.seal();
        assert_eq!(requests.len(), 100);
        // Sealed: the next request starts a new batch.
        let late = commands
            .subscribe(Arc::from("late"), later())
            .await
            .unwrap();
        assert!(matches!(queue.try_recv(), Ok(Command::Subscribe(_))));
        for (_, reply) in requests {
            reply.send(Ok(())).unwrap();
        }
        for answer in answers {
            assert!(answer.await.unwrap().is_ok());
        }
        // The worker stopped and the shard let go of its commands: the
        // batch, never answered, drops its replies.
        drop(queue);
        drop(commands);
        let late = tokio::time::timeout(Duration::from_secs(1), late).await;
        assert!(matches!(late, Ok(Err(_))), "{late:?}");
    }

    #[tokio::test]
    async fn abandoned_requests_are_pruned_from_a_waiting_batch() {
        let (commands, mut queue) = Commands::channel(4);
        for n in 0..10_000 {
            // Each caller gives up at once (its answer is dropped).
            drop(
                commands
                    .subscribe(Arc::from(format!("t{n}")), later())
                    .await,
            );
        }
        let Ok(Command::Subscribe(batch)) = queue.try_recv() else {
            panic!("one SUBSCRIBE command expected");
        };
        assert!(batch.seal().len() <= PRUNE_FROM);
    }

    #[tokio::test]
    async fn a_stopped_worker_or_a_full_queue_is_reported() {
        let (commands, queue) = Commands::channel(1);
        let (done, _) = oneshot::channel();
        commands.send(Command::Sync(done), later()).await.unwrap();
        let (done, _) = oneshot::channel();
        let soon = Instant::now() + Duration::from_millis(20);
        assert_eq!(
            commands.send(Command::Sync(done), soon).await,
            Err(NotSent::Busy)
        );
        drop(queue);
        let stopped = commands.subscribe(Arc::from("t"), later()).await;
        assert_eq!(stopped.err(), Some(NotSent::Stopped));
    }
}
