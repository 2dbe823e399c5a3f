//! Redis fan-out for the ceiling: one PUBLISH per broadcast, one subscriber per process.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::Utf8Bytes;
use futures::StreamExt;
use redis::AsyncCommands;
use redis::aio::{MultiplexedConnection, PubSub};
use tokio::sync::watch;

use super::Hub;
use crate::LoadError;

/// First and longest wait between subscriber reconnect attempts.
const BACKOFF_START: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// Where a connection hands a broadcast frame.
#[derive(Clone)]
pub(crate) enum Fanout {
    /// Straight into the hub.
    Local,
    /// PUBLISH on a multiplexed connection (pipelined across all connection tasks).
    Redis {
        publisher: MultiplexedConnection,
        channel: Arc<str>,
    },
}

impl std::fmt::Debug for Fanout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Local => f.write_str("Fanout::Local"),
            Self::Redis { channel, .. } => write!(f, "Fanout::Redis({channel})"),
        }
    }
}

impl Fanout {
    /// Opens the publisher, subscribes once (so no broadcast is missed after this returns) and
    /// spawns the subscriber loop, which ends when `shutdown` flips.
    pub(crate) async fn connect_redis(
        url: &str,
        channel: &str,
        hub: Arc<Hub>,
        shutdown: watch::Receiver<bool>,
    ) -> Result<Self, LoadError> {
        let client = redis::Client::open(url)?;
        let publisher = client.get_multiplexed_async_connection().await?;
        let pubsub = subscribe(&client, channel).await?;
        tokio::spawn(run_subscriber(
            client,
            channel.to_owned(),
            pubsub,
            hub,
            shutdown,
        ));
        Ok(Self::Redis {
            publisher,
            channel: channel.into(),
        })
    }

    /// Delivers a serialized broadcast frame to every connection of every process.
    pub(crate) async fn publish(&self, hub: &Hub, frame: String) -> Result<(), &'static str> {
        match self {
            Self::Local => {
                hub.broadcast(&Utf8Bytes::from(frame));
                Ok(())
            }
            Self::Redis { publisher, channel } => {
                let mut publisher = publisher.clone();
                publisher
                    .publish::<_, _, i64>(&**channel, frame)
                    .await
                    .map(drop)
                    .map_err(|e| {
                        tracing::warn!(error = %e, "publish failed");
                        "redis publish failed"
                    })
            }
        }
    }
}

async fn subscribe(client: &redis::Client, channel: &str) -> redis::RedisResult<PubSub> {
    let mut pubsub = client.get_async_pubsub().await?;
    pubsub.subscribe(channel).await?;
    Ok(pubsub)
}

/// Fans every published frame out to this process's hub; resubscribes with capped exponential
/// backoff when the connection drops (frames published meanwhile are lost, as with any pub/sub).
async fn run_subscriber(
    client: redis::Client,
    channel: String,
    mut pubsub: PubSub,
    hub: Arc<Hub>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let mut messages = pubsub.into_on_message();
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                message = messages.next() => match message {
                    Some(message) => match std::str::from_utf8(message.get_payload_bytes()) {
                        Ok(frame) => {
                            hub.broadcast(&Utf8Bytes::from(frame));
                        }
                        Err(_) => tracing::warn!("ignoring a non-UTF-8 broadcast"),
                    },
                    None => break,
                },
            }
        }
        tracing::warn!("redis subscription lost; resubscribing");
        let mut delay = BACKOFF_START;
        pubsub = loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                () = tokio::time::sleep(delay) => {}
            }
            match subscribe(&client, &channel).await {
                Ok(pubsub) => break pubsub,
                Err(e) => {
                    tracing::warn!(error = %e, retry_in = ?delay, "resubscribe failed");
                    delay = (delay * 2).min(BACKOFF_MAX);
                }
            }
        };
    }
}
