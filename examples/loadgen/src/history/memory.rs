//! `memory`: what one kept message costs. One subscriber, K messages of S bytes published to a
//! group whose history keeps K; Redis `used_memory` (and the `MEMORY USAGE` of the group's
//! history keys) and server RSS before and after, divided by K.

use std::time::{Duration, Instant};

use futures::StreamExt;
use serde::Serialize;
use tokio_tungstenite::tungstenite::Message;

use super::gateway::{open, scan_push, subscribe};
use super::publisher::publish_range;
use crate::rss::total_rss_bytes;

type Redis = redis::aio::MultiplexedConnection;

/// What a memory run does.
#[derive(Debug, Clone)]
pub struct MemoryConfig {
    /// Server URL: the subscriber and the publisher connect here.
    pub url: String,
    /// The group (start the server with `--history-size` at least `messages`).
    pub group: String,
    /// Messages published (K).
    pub messages: u64,
    /// Size of each message's `data` in bytes (S).
    pub data_bytes: usize,
    /// Publishes without their answer at most.
    pub in_flight: u64,
    /// Server processes whose RSS is read.
    pub pids: Vec<u32>,
    /// The Redis of the core layer, whose `INFO memory` is read (none on the memory layer).
    pub redis_url: Option<String>,
}

/// The result of a memory run, printed as one JSON line.
#[derive(Debug, Clone, Serialize)]
pub struct MemoryReport {
    /// Messages published.
    pub messages: u64,
    /// Size of each message's `data`.
    pub data_bytes: usize,
    /// Pushes the subscriber got (must equal `messages`).
    pub delivered: u64,
    /// Offsets from the first push to the last one (must equal `messages`).
    pub offset_span: u64,
    /// Redis `used_memory` before publishing.
    pub redis_used_before: Option<u64>,
    /// Redis `used_memory` once the subscriber had every message.
    pub redis_used_after: Option<u64>,
    /// `(after - before) / messages`.
    pub redis_bytes_per_message: Option<f64>,
    /// Summed `MEMORY USAGE` of the group's history keys after publishing.
    pub redis_history_key_bytes: Option<u64>,
    /// `redis_history_key_bytes / messages`.
    pub redis_key_bytes_per_message: Option<f64>,
    /// Server RSS before publishing.
    pub rss_before: Option<u64>,
    /// Server RSS once the subscriber had every message.
    pub rss_after: Option<u64>,
    /// `(after - before) / messages`: coarse (allocator pages, buffers that grew meanwhile).
    pub rss_bytes_per_message: Option<f64>,
}

/// Runs one memory measurement.
///
/// # Errors
///
/// Connecting, subscribing, publishing or reading Redis failed, or the subscriber did not get
/// every message within a minute.
pub async fn run(config: MemoryConfig) -> Result<MemoryReport, String> {
    let base = Instant::now();
    let mut ws = open(&config.url).await?;
    subscribe(&mut ws, 1, &config.group, None).await?;
    let want = config.messages;
    let reader = tokio::spawn(async move {
        let (mut delivered, mut first, mut last) = (0u64, None, None);
        while delivered < want {
            match tokio::time::timeout(Duration::from_secs(60), ws.next()).await {
                Ok(Some(Ok(Message::Text(text)))) => {
                    if let Some(push) = scan_push(text.as_str()) {
                        delivered += 1;
                        first = first.or(push.offset);
                        last = push.offset.or(last);
                    }
                }
                Ok(Some(Ok(_))) => {}
                _ => break,
            }
        }
        (delivered, first, last)
    });
    let mut redis = match &config.redis_url {
        Some(url) => {
            let client = redis::Client::open(url.as_str()).map_err(|e| format!("{url}: {e}"))?;
            let connection = client.get_multiplexed_async_connection().await;
            Some(connection.map_err(|e| format!("redis {url}: {e}"))?)
        }
        None => None,
    };
    let redis_used_before = match redis.as_mut() {
        Some(r) => Some(used_memory(r).await?),
        None => None,
    };
    let rss_before = total_rss_bytes(&config.pids).ok();

    let mut publisher = open(&config.url).await?;
    publish_range(
        &mut publisher,
        &config.group,
        0..config.messages,
        config.in_flight,
        config.data_bytes,
        base,
    )
    .await?;
    let (delivered, first, last) = reader.await.map_err(|e| format!("reader: {e}"))?;
    if delivered < config.messages {
        return Err(format!(
            "the subscriber got {delivered} of {} messages",
            config.messages
        ));
    }

    let (redis_used_after, redis_history_key_bytes) = match redis.as_mut() {
        Some(r) => (
            Some(used_memory(r).await?),
            Some(history_key_bytes(r, &config.group).await?),
        ),
        None => (None, None),
    };
    let rss_after = total_rss_bytes(&config.pids).ok();
    let per_message = |before: Option<u64>, after: Option<u64>| {
        Some((after? as f64 - before? as f64) / config.messages as f64)
    };
    Ok(MemoryReport {
        messages: config.messages,
        data_bytes: config.data_bytes,
        delivered,
        offset_span: match (first, last) {
            (Some(first), Some(last)) => last - first + 1,
            _ => 0,
        },
        redis_used_before,
        redis_used_after,
        redis_bytes_per_message: per_message(redis_used_before, redis_used_after),
        redis_history_key_bytes,
        redis_key_bytes_per_message: per_message(Some(0), redis_history_key_bytes),
        rss_before,
        rss_after,
        rss_bytes_per_message: per_message(rss_before, rss_after),
    })
}

/// `used_memory` from `INFO memory`.
async fn used_memory(redis: &mut Redis) -> Result<u64, String> {
    let info: String = redis::cmd("INFO")
        .arg("memory")
        .query_async(redis)
        .await
        .map_err(|e| format!("INFO memory: {e}"))?;
    info.lines()
        .find_map(|line| line.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| "INFO memory has no used_memory line".to_owned())
}

/// Summed `MEMORY USAGE … SAMPLES 0` (exact) of every key of `group`'s history.
async fn history_key_bytes(redis: &mut Redis, group: &str) -> Result<u64, String> {
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("*history.{group}*"))
        .query_async(redis)
        .await
        .map_err(|e| format!("KEYS: {e}"))?;
    let mut total = 0;
    for key in keys {
        let bytes: Option<u64> = redis::cmd("MEMORY")
            .arg("USAGE")
            .arg(&key)
            .arg("SAMPLES")
            .arg(0)
            .query_async(redis)
            .await
            .map_err(|e| format!("MEMORY USAGE {key}: {e}"))?;
        total += bytes.unwrap_or(0);
    }
    Ok(total)
}
