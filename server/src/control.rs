//! Names the gateway and the HTTP API share (docs/protocol.md): the group of
//! a user's connections, the control messages a backend sends to
//! connections, and the reserved keys a publish through this server adds.

use sha2::{Digest, Sha256};

/// Longest `sub` used as is in a user's group name.
const MAX_PLAIN_SUB: usize = 90;

/// Layer message type: the receiving connection joins `group`.
pub const SUBSCRIBE: &str = "gateway.subscribe";
/// Layer message type: the receiving connection leaves `group`.
pub const UNSUBSCRIBE: &str = "gateway.unsubscribe";
/// Layer message type: the receiving connection is closed with `code`
/// (default [`DISCONNECT_CODE`]) and `reason`.
pub const DISCONNECT: &str = "gateway.disconnect";
/// Layer message type (from this server's history relay): the receiving
/// connection may have missed messages of `group` (`reason`); its position
/// is now `offset`/`epoch`. Sent on to the client as a `lost` frame.
pub const HISTORY_LOST: &str = "gateway.history_lost";
/// The close code of a backend's disconnect.
pub const DISCONNECT_CODE: u16 = 4004;

/// Message key naming the group a publish through this server went to.
pub const GROUP_KEY: &str = "_group";
/// Message key holding a kept message's offset in its group's history.
pub const OFFSET_KEY: &str = "_offset";
/// Message key holding the epoch of the history a message was kept in.
pub const EPOCH_KEY: &str = "_epoch";

/// The group every connection of user `sub` joins: `user.<sub>` when `sub` is
/// a valid group-name part of at most 90 characters, otherwise `user.x`
/// followed by the first 32 hex digits of SHA-256(`sub`).
///
/// # Examples
/// ```
/// use channels_server::control::user_group;
/// assert_eq!(user_group("42"), "user.42");
/// assert_eq!(user_group("ann@example.com").len(), "user.x".len() + 32);
/// ```
pub fn user_group(sub: &str) -> String {
    let plain = !sub.is_empty()
        && sub.len() <= MAX_PLAIN_SUB
        && sub
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if plain {
        return format!("user.{sub}");
    }
    let digest = Sha256::digest(sub.as_bytes());
    let mut name = String::with_capacity(6 + 32);
    name.push_str("user.x");
    for byte in &digest[..16] {
        use std::fmt::Write as _;
        let _ = write!(name, "{byte:02x}");
    }
    name
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_groups_are_valid_group_names() {
        for sub in [
            "42",
            "a.b-c_d",
            "ann@example.com",
            "é",
            "",
            &"x".repeat(200),
        ] {
            let group = user_group(sub);
            channels_core::validate_group_name(&group)
                .unwrap_or_else(|error| panic!("{sub:?} -> {group:?}: {error}"));
        }
        assert_eq!(user_group("42"), "user.42");
        // SHA-256("ann@example.com"), first 16 bytes.
        assert_eq!(
            user_group("ann@example.com"),
            "user.x71d4f55f72fa128dfb468a1a3901507c"
        );
        assert_ne!(user_group("a"), user_group("b@"));
    }
}
