//! Unit tests of the registry: fan-out, drops, holders and releases.

use std::sync::Arc;

use channels_core::{ChannelCapacities, DropCounters, Message};

use super::Registry;
use crate::serializer::{Serializer, SerializerFormat};
use crate::wire::{Route, pack};

fn registry(shards: usize) -> Arc<Registry> {
    Arc::new(Registry::new(
        shards,
        ChannelCapacities::new(10),
        Arc::new(DropCounters::default()),
    ))
}

fn serializer() -> Serializer {
    Serializer::new(SerializerFormat::Msgpack, 0)
}

fn payload(message_type: &str) -> Vec<u8> {
    pack(&Message::new(message_type), Route::None).unwrap()
}

fn topic(name: &str) -> Arc<str> {
    Arc::from(name)
}

#[test]
fn group_payload_fans_out_one_shared_message_to_local_members_only() {
    let registry = registry(1);
    let (a, _) = registry.open("asgispecific.a");
    let (b, _) = registry.open("asgispecific.b");
    let (c, _) = registry.open("asgispecific.c");
    let group = topic("asgi__group__g");
    assert!(registry.join(&group, "asgispecific.a").is_some());
    assert!(registry.join(&group, "asgispecific.b").is_some());
    assert!(
        registry.join(&group, "asgispecific.zz").is_none(),
        "not ours"
    );
    registry.deliver("asgi__group__g", &payload("m.1"), &serializer());
    let first = a.try_recv().unwrap().expect("a is a member");
    let second = b.try_recv().unwrap().expect("b is a member");
    assert!(first.shares_storage_with(&second), "decoded once, shared");
    assert!(c.try_recv().unwrap().is_none());
    registry.leave("asgi__group__g", "asgispecific.a");
    registry.leave("asgi__group__g", "asgispecific.b");
    let mut wanted = vec![Arc::clone(&group)];
    registry.retain_wanted(&mut wanted);
    assert!(wanted.is_empty(), "an emptied group is no longer wanted");
    registry.deliver("asgi__group__g", &payload("m.2"), &serializer());
    assert!(a.try_recv().unwrap().is_none());
}

#[test]
fn full_buffers_evict_and_count_and_bad_payloads_are_counted() {
    let registry = Arc::new(Registry::new(
        1,
        ChannelCapacities::new(2),
        Arc::new(DropCounters::default()),
    ));
    let (handle, _) = registry.open("ch");
    for n in 0..5u64 {
        let bytes = pack(&Message::new("m").with("n", n), Route::None).unwrap();
        registry.deliver("ch", &bytes, &serializer());
    }
    assert_eq!(registry.drops().full(), 3);
    let oldest = handle.try_recv().unwrap().unwrap();
    assert_eq!(oldest.get("n").and_then(|n| n.as_u64()), Some(3));
    registry.deliver("ch", b"\xc1 not msgpack", &serializer());
    assert_eq!(registry.drops().undecodable(), 1);
    registry.deliver("nobody", b"\xc1 not msgpack", &serializer());
    assert_eq!(
        registry.drops().undecodable(),
        1,
        "unwanted topics are not decoded"
    );
}

#[test]
fn dropping_the_last_handle_forgets_the_channel_and_its_groups_and_marks_them() {
    let registry = registry(1);
    registry.dirty(0).start();
    let (first, _) = registry.open("asgispecific.x");
    let (second, _) = registry.open("asgispecific.x");
    let group = topic("asgi__group__g");
    registry.join(&group, "asgispecific.x").unwrap();
    drop(first);
    assert_eq!(registry.channel_count(), 1, "another handle holds it");
    drop(second);
    assert_eq!(registry.channel_count(), 0);
    let mut marked: Vec<String> = registry
        .dirty(0)
        .take()
        .iter()
        .map(|topic| topic.to_string())
        .collect();
    marked.sort();
    assert_eq!(marked, ["asgi__group__g", "asgispecific.x"]);
    let mut topics = vec![topic("asgi__group__g"), topic("asgispecific.x")];
    registry.retain_unwanted(&mut topics);
    assert_eq!(topics.len(), 2, "both are to be unsubscribed");
}

#[test]
fn pinned_and_received_names_outlive_their_handles() {
    let registry = registry(1);
    let pinned = registry.pin("asgispecific.p");
    assert!(pinned.created);
    let (handle, _) = registry.open("asgispecific.p");
    drop(handle);
    assert_eq!(registry.channel_count(), 1, "new_channel names stay");
    assert!(registry.remove_channel("asgispecific.p"));
    assert!(pinned.mailbox.is_closed(), "delete_channel closes it");
    assert_eq!(registry.channel_count(), 0);

    // A receive on a handle's channel holds it only while it waits.
    let (handle, _) = registry.open("asgispecific.h");
    let held = registry.hold("asgispecific.h");
    assert!(!held.created);
    drop(handle);
    assert_eq!(registry.channel_count(), 1, "the receive still holds it");
    assert!(held.mailbox.remove_holder());
    channels_core::Release::release(&*registry, &held.mailbox);
    assert_eq!(registry.channel_count(), 0);
}

#[test]
fn a_failed_subscribe_unpins_what_it_created() {
    let registry = registry(1);
    let held = registry.hold("plain");
    assert!(held.created);
    registry.unpin(&held.mailbox);
    assert_eq!(registry.channel_count(), 1, "still held by the receive");
    assert!(held.mailbox.remove_holder());
    channels_core::Release::release(&*registry, &held.mailbox);
    assert_eq!(registry.channel_count(), 0);
}

#[test]
fn a_stale_handle_never_releases_a_newer_entry() {
    let registry = registry(1);
    let (old, _) = registry.open("c");
    let old_mailbox = registry.pin("c").mailbox;
    assert!(registry.remove_channel("c"));
    let (_new, _) = registry.open("c");
    drop(old);
    assert_eq!(registry.channel_count(), 1);
    assert!(old_mailbox.is_closed());
}

#[test]
fn flush_empties_mailboxes_and_dissolves_groups() {
    let registry = registry(1);
    registry.dirty(0).start();
    let (handle, _) = registry.open("c");
    let group = topic("asgi__group__g");
    let joined = registry.join(&group, "c").unwrap();
    registry.deliver("c", &payload("m"), &serializer());
    registry.flush();
    assert!(handle.try_recv().unwrap().is_none());
    assert_eq!(joined.len(), 0);
    assert_eq!(registry.channel_count(), 1, "handles stay");
    assert!(registry.dirty(0).take().contains("asgi__group__g"));
    // Joining again makes a new group.
    let again = registry.join(&group, "c").unwrap();
    assert!(!Arc::ptr_eq(&joined, &again));
}

#[test]
fn topics_are_split_by_the_consistent_hash() {
    let registry = registry(2);
    registry.pin("asgi__group__chat");
    registry.pin("chat");
    // WIRE §5: `asgi__group__chat` → shard 1 of 2, `chat` → shard 0.
    assert_eq!(
        registry.topics_on_shard(1),
        vec![topic("asgi__group__chat")]
    );
    assert_eq!(registry.topics_on_shard(0), vec![topic("chat")]);
}
