//! Group delivery: `group_send` (WIRE.md §2.6) and writing memberships.

use std::collections::HashMap;

use channels_core::{LayerError, Message, non_local_name};
use futures_util::future::join_all;

use crate::keys::{channel_key, group_key};
use crate::layer::{Inner, expiry_secs, prune_before};
use crate::lua;
use crate::mailbox::now_secs;
use crate::shard::consistent_hash;
use crate::wire::Route;

/// Sends `message` to every member of `group`: prunes and reads the group on
/// its shard, builds one member per channel key (listing that key's channels,
/// serialized once), then runs one Lua call per shard, all shards at once.
/// Full keys are skipped and logged, as channels_redis does.
pub(crate) async fn group_send(
    inner: &Inner,
    group: &str,
    message: &Message,
) -> Result<(), LayerError> {
    let shard = &inner.shards[consistent_hash(group, inner.shards.len())];
    let key = group_key(&inner.prefix, group);
    let mut connection = shard.commands("group_send").await?;
    let now = now_secs();
    let (members,): (Vec<String>,) = redis::pipe()
        .atomic()
        .cmd("ZREMRANGEBYSCORE")
        .arg(&key)
        .arg(0)
        .arg(prune_before(now, inner.layer.group_expiry))
        .ignore()
        .cmd("ZRANGE")
        .arg(&key)
        .arg(0)
        .arg(-1)
        .query_async(&mut connection)
        .await
        .map_err(|e| shard.error("group_send", e))?;
    if members.is_empty() {
        return Ok(());
    }
    // One message per channel key, listing that key's members (WIRE §2.6).
    let mut buckets: Vec<(String, Vec<&str>)> = Vec::new();
    let mut index_of: HashMap<String, usize> = HashMap::new();
    for member in &members {
        let channel_key = channel_key(&inner.prefix, member);
        match index_of.get(&channel_key) {
            Some(&i) => buckets[i].1.push(member),
            None => {
                index_of.insert(channel_key.clone(), buckets.len());
                buckets.push((channel_key, vec![member.as_str()]));
            }
        }
    }
    let mut per_shard: Vec<Vec<usize>> = vec![Vec::new(); inner.shards.len()];
    for (i, (_, channels)) in buckets.iter().enumerate() {
        per_shard[consistent_hash(non_local_name(channels[0]), inner.shards.len())].push(i);
    }
    let expiry = inner.layer.expiry;
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
            let member = inner
                .serializer
                .serialize(message, Route::Channels(&buckets[i].1))?;
            invocation.arg(member);
        }
        for &i in bucket_indices {
            invocation.arg(inner.layer.capacities.capacity_for(buckets[i].1[0]));
        }
        invocation
            .arg(now.to_string())
            .arg(expiry_secs(expiry))
            .arg(prune_before(now, expiry));
        invocations.push((shard_index, invocation));
    }
    let results = join_all(
        invocations
            .into_iter()
            .map(|(shard_index, invocation)| async move {
                let shard = &inner.shards[shard_index];
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
    Ok(())
}

/// `ZADD {prefix}:group:{g} now ch` + `EXPIRE group_expiry` on the group's shard.
pub(crate) async fn add_membership(
    inner: &Inner,
    group: &str,
    channel: &str,
) -> Result<(), LayerError> {
    let shard = &inner.shards[consistent_hash(group, inner.shards.len())];
    let key = group_key(&inner.prefix, group);
    let mut connection = shard.commands("group_add").await?;
    redis::pipe()
        .cmd("ZADD")
        .arg(&key)
        .arg(now_secs().to_string())
        .arg(channel)
        .ignore()
        .cmd("EXPIRE")
        .arg(&key)
        .arg(expiry_secs(inner.layer.group_expiry))
        .ignore()
        .exec_async(&mut connection)
        .await
        .map_err(|e| shard.error("group_add", e))
}
