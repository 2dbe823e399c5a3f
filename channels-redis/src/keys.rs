//! Redis key names (WIRE.md §2.2).

use channels_core::non_local_name;

/// The ZSET holding a channel's messages: `{prefix}{non_local_name}`.
pub(crate) fn channel_key(prefix: &str, channel: &str) -> String {
    format!("{prefix}{}", non_local_name(channel))
}

/// The backup of messages a receiver popped but has not finished with.
pub(crate) fn inflight_key(channel_key: &str) -> String {
    format!("{channel_key}$inflight")
}

/// The ZSET of a group's members: `{prefix}:group:{group}`.
pub(crate) fn group_key(prefix: &str, group: &str) -> String {
    format!("{prefix}:group:{group}")
}

/// The hash of a group's presence entries: `{prefix}:presence:{group}`
/// (field: channel; value: a JSON object with `node`, `user`, `joined_at`).
pub(crate) fn presence_key(prefix: &str, group: &str) -> String {
    format!("{prefix}:presence:{group}")
}

/// The start of every node's liveness key; the node id follows. A group
/// name cannot hold `:`, so no group's presence key looks like one.
pub(crate) fn node_key_prefix(prefix: &str) -> String {
    format!("{prefix}:presence:node:")
}

/// The KEYS pattern `flush` deletes.
pub(crate) fn flush_pattern(prefix: &str) -> String {
    format!("{prefix}*")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn r1_key_formats() {
        assert_eq!(channel_key("asgi", "test-channel-1"), "asgitest-channel-1");
        assert_eq!(channel_key("asgi", "specific.ab!cd"), "asgispecific.ab!");
        assert_eq!(
            inflight_key("asgispecific.ab!"),
            "asgispecific.ab!$inflight"
        );
        assert_eq!(group_key("asgi", "test_group"), "asgi:group:test_group");
        assert_eq!(group_key("test_prefix", "g"), "test_prefix:group:g");
        assert_eq!(flush_pattern("asgi"), "asgi*");
        assert_eq!(presence_key("asgi", "room"), "asgi:presence:room");
        assert_eq!(node_key_prefix("asgi"), "asgi:presence:node:");
    }
}
