//! Django Channels' defaults, and [`LayerConfig`]: the settings every layer
//! shares (capacity, expiry, group expiry).

use std::time::Duration;

use crate::capacity::{CapacityPattern, ChannelCapacities};

/// Messages a channel holds before `send` fails with `ChannelFull` (Django: 100).
pub const DEFAULT_CAPACITY: usize = 100;

/// How long an unread message lives (Django: 60 s).
pub const DEFAULT_EXPIRY: Duration = Duration::from_secs(60);

/// How long a group membership lives without being renewed by `group_add`
/// (Django: 86400 s, one day).
pub const DEFAULT_GROUP_EXPIRY: Duration = Duration::from_secs(86_400);

/// The prefix `new_channel` uses when given none (Django: `"specific"`).
pub const DEFAULT_NEW_CHANNEL_PREFIX: &str = "specific";

/// The optional features a layer supports, as Django's `extensions` list.
pub const DEFAULT_EXTENSIONS: &[&str] = &["groups", "flush"];

/// Settings shared by every channel layer.
///
/// # Examples
/// ```
/// use std::time::Duration;
/// use channels_core::{CapacityPattern, LayerConfig};
///
/// let config = LayerConfig::default()
///     .capacity(50)
///     .channel_capacity(CapacityPattern::glob("bulk.*")?, 1_000)
///     .expiry(Duration::from_secs(10));
/// assert_eq!(config.capacities.capacity_for("bulk.jobs"), 1_000);
/// assert_eq!(config.capacities.capacity_for("chat"), 50);
/// # Ok::<(), channels_core::LayerError>(())
/// ```
#[derive(Debug, Clone)]
pub struct LayerConfig {
    /// Per-channel capacities (default [`DEFAULT_CAPACITY`]).
    pub capacities: ChannelCapacities,
    /// Unread message lifetime (default [`DEFAULT_EXPIRY`]).
    pub expiry: Duration,
    /// Group membership lifetime (default [`DEFAULT_GROUP_EXPIRY`]).
    pub group_expiry: Duration,
}

impl Default for LayerConfig {
    fn default() -> Self {
        Self {
            capacities: ChannelCapacities::new(DEFAULT_CAPACITY),
            expiry: DEFAULT_EXPIRY,
            group_expiry: DEFAULT_GROUP_EXPIRY,
        }
    }
}

impl LayerConfig {
    /// Sets the default capacity, keeping pattern overrides.
    #[must_use]
    pub fn capacity(mut self, capacity: usize) -> Self {
        self.capacities = self.capacities.with_default(capacity);
        self
    }

    /// Adds a capacity override for channels matching `pattern`.
    #[must_use]
    pub fn channel_capacity(mut self, pattern: CapacityPattern, capacity: usize) -> Self {
        self.capacities = self.capacities.with_rule(pattern, capacity);
        self
    }

    /// Sets the unread message lifetime.
    #[must_use]
    pub fn expiry(mut self, expiry: Duration) -> Self {
        self.expiry = expiry;
        self
    }

    /// Sets the group membership lifetime.
    #[must_use]
    pub fn group_expiry(mut self, group_expiry: Duration) -> Self {
        self.group_expiry = group_expiry;
        self
    }
}
