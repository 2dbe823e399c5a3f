//! Group delivery (`group_send`, WIRE.md §2.6) and writing memberships.

use std::collections::HashMap;

use channels_core::{LayerError, Message, non_local_name};
use futures_util::future::join_all;

use super::settings::{Settings, Shards, now_secs, prune_before};
use crate::lua;
use crate::wire::Route;

/// Sends `message` to every member of `group`: prunes and reads the group on
/// its shard, builds one member per channel key (listing that key's channels,
/// serialized once), then runs one Lua call per shard, all shards at once.
/// Full keys are skipped, logged and returned as a count, as channels_redis
/// does (its group_send never raises ChannelFull).
pub(crate) async fn group_send(
    settings: &Settings,
    shards: &Shards,
    group: &str,
    message: &Message,
) -> Result<usize, LayerError> {
    let shard = shards.get(shards.index_for_group(group));
    let key = settings.group_key(group);
    let mut connection = shard.commands("group_send").await?;
    let now = now_secs();
    let (members,): (Vec<String>,) = redis::pipe()
        .atomic()
        .cmd("ZREMRANGEBYSCORE")
        .arg(&key)
        .arg(0)
        .arg(prune_before(now, settings.layer.group_expiry))
        .ignore()
        .cmd("ZRANGE")
        .arg(&key)
        .arg(0)
        .arg(-1)
        .query_async(&mut connection)
        .await
        .map_err(|e| shard.error("group_send", e))?;
    if members.is_empty() {
        return Ok(0);
    }
    // One message per channel key, listing that key's members (WIRE §2.6).
    let mut buckets: Vec<(String, Vec<&str>)> = Vec::new();
    let mut index_of: HashMap<String, usize> = HashMap::new();
    for member in &members {
        let channel_key = settings.channel_key(member);
        match index_of.get(&channel_key) {
            Some(&i) => buckets[i].1.push(member),
            None => {
                index_of.insert(channel_key.clone(), buckets.len());
                buckets.push((channel_key, vec![member.as_str()]));
            }
        }
    }
    let mut per_shard: Vec<Vec<usize>> = vec![Vec::new(); shards.len()];
    for (i, (_, channels)) in buckets.iter().enumerate() {
        per_shard[shards.index_for_local(channels[0])].push(i);
    }
    let expiry = settings.layer.expiry;
    let mut invocations = Vec::new();
    for (shard_index, bucket_indices) in per_shard.iter().enumerate() {
        if bucket_indices.is_empty() {
            continue;
        }
        let mut invocation = lua::GROUP_SEND.prepare_invoke();
        for &i in bucket_indices {
            invocation.key(&buckets[i].0);
        }
        for &i in bucket_indices {
            let member = settings
                .serializer
                .serialize(message, Route::Channels(&buckets[i].1))?;
            invocation.arg(member);
        }
        for &i in bucket_indices {
            invocation.arg(settings.layer.capacities.capacity_for(buckets[i].1[0]));
        }
        invocation
            .arg(now.to_string())
            .arg(settings.expiry_secs())
            .arg(prune_before(now, expiry));
        invocations.push((shard_index, invocation));
    }
    let results = join_all(
        invocations
            .into_iter()
            .map(|(shard_index, invocation)| async move {
                let shard = shards.get(shard_index);
                let mut connection = shard.commands("group_send").await?;
                let full: Vec<usize> = invocation
                    .invoke_async(&mut connection)
                    .await
                    .map_err(|e| shard.error("group_send", e))?;
                Ok::<usize, LayerError>(full.len())
            }),
    )
    .await;
    let mut over_capacity = 0;
    for result in results {
        over_capacity += result?;
    }
    if over_capacity > 0 {
        tracing::info!(
            "{over_capacity} of {} channels over capacity in group {group}",
            members.len()
        );
    }
    Ok(over_capacity)
}

/// `ZADD {prefix}:group:{g} now ch` + `EXPIRE group_expiry` on the group's shard.
pub(crate) async fn add_membership(
    settings: &Settings,
    shards: &Shards,
    group: &str,
    channel: &str,
) -> Result<(), LayerError> {
    let shard = shards.get(shards.index_for_group(group));
    let key = settings.group_key(group);
    let mut connection = shard.commands("group_add").await?;
    redis::pipe()
        .cmd("ZADD")
        .arg(&key)
        .arg(now_secs().to_string())
        .arg(channel)
        .ignore()
        .cmd("EXPIRE")
        .arg(&key)
        .arg(settings.group_expiry_secs())
        .ignore()
        .exec_async(&mut connection)
        .await
        .map_err(|e| shard.error("group_add", e))
}

/// Writes many memberships again in one pipeline per shard (after a Redis
/// outage): one round trip instead of one per membership.
pub(crate) async fn restore_memberships(
    settings: &Settings,
    shards: &Shards,
    pairs: &[(String, String)],
) -> Result<(), LayerError> {
    let mut per_shard: Vec<redis::Pipeline> = (0..shards.len()).map(|_| redis::pipe()).collect();
    let mut used = vec![false; shards.len()];
    let now = now_secs().to_string();
    for (group, channel) in pairs {
        let index = shards.index_for_group(group);
        let key = settings.group_key(group);
        per_shard[index]
            .cmd("ZADD")
            .arg(&key)
            .arg(&now)
            .arg(channel)
            .ignore()
            .cmd("EXPIRE")
            .arg(&key)
            .arg(settings.group_expiry_secs())
            .ignore();
        used[index] = true;
    }
    for (index, pipeline) in per_shard.iter().enumerate() {
        if !used[index] {
            continue;
        }
        let shard = shards.get(index);
        let mut connection = shard.commands("group_add").await?;
        pipeline
            .exec_async(&mut connection)
            .await
            .map_err(|e| shard.error("group_add", e))?;
    }
    Ok(())
}

/// The process-local channels of `channels` that live under `key`
/// (`{prefix}specific.<cp>!`): those a receive loop of that key must restore.
pub(crate) fn under_key(settings: &Settings, key: &str, channel: &str) -> bool {
    key.strip_prefix(settings.prefix.as_str()) == Some(non_local_name(channel))
}
