//! [`HistoryConfig`]: which groups keep a history and how much of it
//! (`--history-size`, `--history-ttl`, and `[[history.groups]]` rules in the
//! config file).

use std::time::Duration;

use channels_core::HistoryLimits;

/// The default history window when only a size is given.
pub const DEFAULT_HISTORY_TTL: Duration = Duration::from_secs(300);

/// A rule for the groups a pattern matches: an exact name, or `prefix.*`
/// (as in token claims).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryRule {
    /// `news` or `chat.*`.
    pub pattern: String,
    /// What those groups keep; a size of 0 keeps nothing.
    pub size: usize,
    /// How long they keep it.
    pub ttl: Duration,
}

impl HistoryRule {
    fn matches(&self, group: &str) -> bool {
        match self.pattern.strip_suffix('*') {
            Some(prefix) => group.starts_with(prefix),
            None => self.pattern == group,
        }
    }
}

/// Which groups keep a history: the first matching rule, else every group
/// when `size` is above 0.
///
/// # Examples
/// ```
/// use std::time::Duration;
/// use channels_server::history::{HistoryConfig, HistoryRule};
///
/// let config = HistoryConfig::default().rule(HistoryRule {
///     pattern: "chat.*".into(),
///     size: 50,
///     ttl: Duration::from_secs(60),
/// });
/// assert!(config.limits_for("chat.lobby").is_some());
/// assert!(config.limits_for("news").is_none());
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HistoryConfig {
    /// Messages kept per group when no rule matches (0: none).
    pub size: usize,
    /// How long they are kept.
    pub ttl: Option<Duration>,
    /// Per-pattern rules, first match wins.
    pub rules: Vec<HistoryRule>,
}

impl HistoryConfig {
    /// Every group keeps its newest `size` messages for `ttl`.
    #[must_use]
    pub fn every_group(size: usize, ttl: Duration) -> Self {
        Self {
            size,
            ttl: Some(ttl),
            rules: Vec::new(),
        }
    }

    /// Adds a per-pattern rule (checked in the order added).
    #[must_use]
    pub fn rule(mut self, rule: HistoryRule) -> Self {
        self.rules.push(rule);
        self
    }

    /// Whether any group keeps history.
    pub fn is_enabled(&self) -> bool {
        self.size > 0 || self.rules.iter().any(|rule| rule.size > 0)
    }

    /// What `group` keeps, or `None`.
    pub fn limits_for(&self, group: &str) -> Option<HistoryLimits> {
        let (size, ttl) = match self.rules.iter().find(|rule| rule.matches(group)) {
            Some(rule) => (rule.size, rule.ttl),
            None => (self.size, self.ttl.unwrap_or(DEFAULT_HISTORY_TTL)),
        };
        (size > 0 && !ttl.is_zero()).then_some(HistoryLimits { size, ttl })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_matching_rule_wins_then_the_default() {
        let config = HistoryConfig::every_group(10, Duration::from_secs(30))
            .rule(HistoryRule {
                pattern: "chat.private.*".into(),
                size: 0,
                ttl: Duration::from_secs(1),
            })
            .rule(HistoryRule {
                pattern: "chat.*".into(),
                size: 500,
                ttl: Duration::from_secs(600),
            });
        assert_eq!(config.limits_for("chat.private.x"), None);
        assert_eq!(
            config.limits_for("chat.lobby"),
            Some(HistoryLimits {
                size: 500,
                ttl: Duration::from_secs(600)
            })
        );
        assert_eq!(
            config.limits_for("news"),
            Some(HistoryLimits {
                size: 10,
                ttl: Duration::from_secs(30)
            })
        );
        assert!(!HistoryConfig::default().is_enabled());
        assert_eq!(HistoryConfig::default().limits_for("news"), None);
    }
}
