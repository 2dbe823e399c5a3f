//! Sentinel failover to a different address: a master and a replica
//! (`--replicaof`) on two ports and a Sentinel (quorum 1, 500 ms
//! `down-after-milliseconds`). Both layers connect through the Sentinel; the
//! master is killed (or, in the second test, demoted by `SENTINEL FAILOVER`
//! and left running as a replica, which answers writes with `READONLY`);
//! once Sentinel names the promoted replica, the core layer sends, receives
//! and group-sends again and the pub/sub layer has resubscribed its channels
//! and groups there.
#![allow(clippy::unwrap_used)] // test setup: a failed step should panic right there

use std::time::{Duration, Instant};

use channels_core::{ChannelLayer, Message, Receiver};
use channels_redis::testing::{RedisSentinel, RedisServer, unique_prefix};
use channels_redis::{RedisChannelLayer, RedisConfig, RedisPubSubChannelLayer, SentinelHost};
use tokio::time::timeout;

const MASTER_NAME: &str = "failover";

/// Promotion takes down-after (0.5 s) + election + a random delay (< 1 s) +
/// the promotion itself; allow far more on a busy machine.
const PROMOTION_DEADLINE: Duration = Duration::from_secs(60);

/// How long the layers get to follow the new master once Sentinel names it.
const RECOVERY_DEADLINE: Duration = Duration::from_secs(20);

/// Master, replica and Sentinel. Field order: the Sentinel stops first.
struct Cluster {
    sentinel: RedisSentinel,
    replica: RedisServer,
    master: RedisServer,
}

async fn connect(url: &str) -> redis::aio::MultiplexedConnection {
    channels_redis::testing::connect(url).await.unwrap()
}

/// Polls `check` every 100 ms until it returns `Some`, panicking with `what`
/// after `deadline`.
async fn wait_for<T, F, Fut>(what: &str, deadline: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let until = Instant::now() + deadline;
    loop {
        if let Some(found) = check().await {
            return found;
        }
        assert!(Instant::now() < until, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

impl Cluster {
    /// Starts the three processes and waits until the replica has synced
    /// and the Sentinel knows it.
    async fn start() -> Self {
        let master = RedisServer::start().unwrap();
        let replica = RedisServer::start_replica(&master).unwrap();
        let replica_link = connect(&replica.url()).await;
        wait_for("the replica to sync", Duration::from_secs(20), || {
            let mut link = replica_link.clone();
            async move {
                let info: String = redis::cmd("INFO")
                    .arg("replication")
                    .query_async(&mut link)
                    .await
                    .ok()?;
                info.contains("master_link_status:up").then_some(())
            }
        })
        .await;
        let down_after = format!("sentinel down-after-milliseconds {MASTER_NAME} 500");
        let failover_timeout = format!("sentinel failover-timeout {MASTER_NAME} 5000");
        let sentinel = RedisSentinel::start_with_config(
            &master,
            MASTER_NAME,
            None,
            &[&down_after, &failover_timeout],
        )
        .unwrap();
        let cluster = Self {
            sentinel,
            replica,
            master,
        };
        let sentinel_link = connect(&cluster.sentinel_url()).await;
        let replica_port = cluster.replica.port();
        wait_for(
            "the Sentinel to find the replica",
            Duration::from_secs(30),
            || {
                let mut link = sentinel_link.clone();
                async move {
                    let replicas: Vec<Vec<String>> = redis::cmd("SENTINEL")
                        .arg("replicas")
                        .arg(MASTER_NAME)
                        .query_async(&mut link)
                        .await
                        .ok()?;
                    replicas
                        .iter()
                        .any(|fields| fields.iter().any(|f| f == &replica_port.to_string()))
                        .then_some(())
                }
            },
        )
        .await;
        cluster
    }

    fn sentinel_url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.sentinel.port())
    }

    /// A layer config reaching the master through the Sentinel.
    fn config(&self) -> RedisConfig {
        let host = SentinelHost::new(
            vec![("127.0.0.1".to_owned(), self.sentinel.port())],
            MASTER_NAME,
        );
        RedisConfig::new()
            .host(host)
            .prefix(unique_prefix())
            .connect_timeout(Duration::from_millis(500))
    }

    /// The port Sentinel names for the master now.
    async fn master_port(&self) -> Option<u16> {
        master_port(self.sentinel_url()).await
    }

    /// Waits until writes on the master reached the replica, then kills the
    /// master (or asks Sentinel to fail over, leaving it running) and waits
    /// until Sentinel names the replica instead (and, when it still runs,
    /// until the old master has become a replica).
    async fn fail_over(&mut self, kill: bool) {
        let mut master = connect(&self.master.url()).await;
        let acked: i64 = redis::cmd("WAIT")
            .arg(1)
            .arg(5000)
            .query_async(&mut master)
            .await
            .unwrap();
        assert_eq!(acked, 1, "the replica acknowledged the writes so far");
        drop(master);
        if kill {
            self.master.kill();
        } else {
            // Refused (NOGOODSLAVE) until the Sentinel has a fresh INFO of
            // the replica it found.
            let sentinel = connect(&self.sentinel_url()).await;
            wait_for("Sentinel to start the failover", PROMOTION_DEADLINE, || {
                let mut sentinel = sentinel.clone();
                async move {
                    redis::cmd("SENTINEL")
                        .arg("FAILOVER")
                        .arg(MASTER_NAME)
                        .exec_async(&mut sentinel)
                        .await
                        .ok()
                }
            })
            .await;
        }
        let replica_port = self.replica.port();
        let sentinel = self.sentinel_url();
        wait_for(
            "Sentinel to promote the replica",
            PROMOTION_DEADLINE,
            || {
                let sentinel = sentinel.clone();
                async move { (master_port(sentinel).await == Some(replica_port)).then_some(()) }
            },
        )
        .await;
        if !kill {
            // A new connection each time: the demotion kills client connections.
            let old_master = self.master.url();
            wait_for("the old master to be demoted", PROMOTION_DEADLINE, || {
                let old_master = old_master.clone();
                async move {
                    let mut link = connect(&old_master).await;
                    let info: String = redis::cmd("INFO")
                        .arg("replication")
                        .query_async(&mut link)
                        .await
                        .ok()?;
                    info.contains("role:slave").then_some(())
                }
            })
            .await;
        }
    }
}

/// The port the Sentinel at `sentinel` names for the master now.
async fn master_port(sentinel: String) -> Option<u16> {
    let mut link = connect(&sentinel).await;
    let address: Option<(String, u16)> = redis::cmd("SENTINEL")
        .arg("get-master-addr-by-name")
        .arg(MASTER_NAME)
        .query_async(&mut link)
        .await
        .ok()?;
    address.map(|(_, port)| port)
}

/// Sends with `send` until `receiver` gets a message of type `kind`
/// (earlier attempts may fail or be lost while the layer reconnects).
async fn until_delivered<F, Fut>(receiver: &Receiver, kind: &str, mut send: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), channels_core::LayerError>>,
{
    let deadline = Instant::now() + RECOVERY_DEADLINE;
    loop {
        let sent = send().await;
        if sent.is_ok()
            && let Ok(Ok(got)) = timeout(Duration::from_millis(500), receiver.recv()).await
            && got.message_type() == Some(kind)
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no `{kind}` delivered after the failover; last send: {sent:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_layers_follow_a_failover_to_the_promoted_replica() {
    layers_follow_a_failover(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_layers_leave_a_demoted_master_that_still_runs() {
    layers_follow_a_failover(false).await;
}

async fn layers_follow_a_failover(kill: bool) {
    let mut cluster = Cluster::start().await;
    let master_port = cluster.master.port();
    assert_eq!(cluster.master_port().await, Some(master_port));

    let core = RedisChannelLayer::new(cluster.config()).unwrap();
    let core_inbox = core.new_receiver("specific").await.unwrap();
    core.group_add("room", core_inbox.channel()).await.unwrap();
    core.group_send("room", Message::new("before"))
        .await
        .unwrap();
    let got = timeout(Duration::from_secs(2), core_inbox.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.message_type(), Some("before"));
    core.send("jobs", Message::new("job.before")).await.unwrap();
    let got = timeout(Duration::from_secs(2), core.receive("jobs"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.message_type(), Some("job.before"));

    let pubsub = RedisPubSubChannelLayer::new(cluster.config()).unwrap();
    let pubsub_inbox = pubsub.new_receiver("specific").await.unwrap();
    pubsub
        .group_add("room", pubsub_inbox.channel())
        .await
        .unwrap();
    pubsub
        .group_send("room", Message::new("before"))
        .await
        .unwrap();
    let got = timeout(Duration::from_secs(2), pubsub_inbox.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.message_type(), Some("before"));

    cluster.fail_over(kill).await;
    let new_port = cluster.replica.port();
    assert_ne!(new_port, master_port);

    // Core layer: group_send and the process-local receive loop, then a plain
    // channel (pooled dedicated connections) and a direct send.
    until_delivered(&core_inbox, "group.after", || {
        core.group_send("room", Message::new("group.after"))
    })
    .await;
    until_delivered(&core_inbox, "direct.after", || {
        core.send(core_inbox.channel(), Message::new("direct.after"))
    })
    .await;
    core.send("jobs", Message::new("job.after")).await.unwrap();
    let got = timeout(Duration::from_secs(5), core.receive("jobs"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.message_type(), Some("job.after"));

    // Pub/sub layer: the existing subscriptions come back on the new master,
    // and a channel made now subscribes there.
    until_delivered(&pubsub_inbox, "group.after", || {
        pubsub.group_send("room", Message::new("group.after"))
    })
    .await;
    let fresh = timeout(Duration::from_secs(5), pubsub.new_receiver("specific"))
        .await
        .unwrap()
        .unwrap();
    pubsub
        .send(fresh.channel(), Message::new("fresh"))
        .await
        .unwrap();
    let got = timeout(Duration::from_secs(2), fresh.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.message_type(), Some("fresh"));

    // Everything now lives on the promoted replica.
    let mut promoted = connect(&cluster.replica.url()).await;
    let role: Vec<redis::Value> = redis::cmd("ROLE").query_async(&mut promoted).await.unwrap();
    assert_eq!(
        role.first(),
        Some(&redis::Value::BulkString(b"master".to_vec()))
    );
}
