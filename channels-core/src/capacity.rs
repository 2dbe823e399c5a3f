//! Per-channel capacities: a default plus overrides by glob or regex pattern,
//! as Django's `channel_capacity` setting.
//!
//! A glob matches the **whole** name (Python `fnmatch`), a regex matches from the
//! start of the name (Python `re.match`). The first matching rule wins; a name
//! no rule matches gets the default.

use regex::Regex;

use crate::error::LayerError;

/// A pattern selecting channels for a capacity override.
#[derive(Debug, Clone)]
pub struct CapacityPattern {
    source: String,
    kind: PatternKind,
    compiled: Regex,
}

/// How a [`CapacityPattern`] was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatternKind {
    /// A shell-style glob (`*`, `?`, `[seq]`, `[!seq]`) matched against the whole name.
    Glob,
    /// A regular expression matched from the start of the name.
    Regex,
}

impl CapacityPattern {
    /// A glob such as `"http.response!*"`, matched against the whole channel name.
    ///
    /// # Errors
    /// [`LayerError::InvalidConfig`] if the glob cannot be compiled.
    pub fn glob(glob: &str) -> Result<Self, LayerError> {
        let translated = translate_glob(glob);
        let compiled = Regex::new(&translated)
            .map_err(|e| LayerError::invalid_config(format!("capacity glob `{glob}`: {e}")))?;
        Ok(Self {
            source: glob.to_owned(),
            kind: PatternKind::Glob,
            compiled,
        })
    }

    /// A regular expression such as `"^websocket.send!"`, matched from the
    /// start of the channel name (it need not match all of it).
    ///
    /// # Errors
    /// [`LayerError::InvalidConfig`] if the regex does not compile.
    pub fn regex(regex: &str) -> Result<Self, LayerError> {
        let compiled = Regex::new(&format!(r"\A(?:{regex})"))
            .map_err(|e| LayerError::invalid_config(format!("capacity regex `{regex}`: {e}")))?;
        Ok(Self {
            source: regex.to_owned(),
            kind: PatternKind::Regex,
            compiled,
        })
    }

    /// Returns whether the pattern selects `channel`.
    pub fn matches(&self, channel: &str) -> bool {
        self.compiled.is_match(channel)
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// Whether it is a glob or a regex.
    pub fn kind(&self) -> PatternKind {
        self.kind
    }
}

/// The capacity of every channel: a default and ordered pattern overrides.
///
/// # Examples
/// ```
/// use channels_core::{CapacityPattern, ChannelCapacities};
///
/// let capacities = ChannelCapacities::new(100)
///     .with_rule(CapacityPattern::glob("http.response!*")?, 10)
///     .with_rule(CapacityPattern::regex("^websocket.send!")?, 20);
/// assert_eq!(capacities.capacity_for("http.response!abc"), 10);
/// assert_eq!(capacities.capacity_for("websocket.send!x"), 20);
/// assert_eq!(capacities.capacity_for("chat"), 100);
/// # Ok::<(), channels_core::LayerError>(())
/// ```
#[derive(Debug, Clone)]
pub struct ChannelCapacities {
    default: usize,
    rules: Vec<(CapacityPattern, usize)>,
}

impl ChannelCapacities {
    /// Every channel gets `default` unless a rule says otherwise.
    pub fn new(default: usize) -> Self {
        Self {
            default,
            rules: Vec::new(),
        }
    }

    /// Replaces the default capacity, keeping the rules.
    #[must_use]
    pub fn with_default(mut self, default: usize) -> Self {
        self.default = default;
        self
    }

    /// Adds an override; rules are tried in the order they were added.
    #[must_use]
    pub fn with_rule(mut self, pattern: CapacityPattern, capacity: usize) -> Self {
        self.rules.push((pattern, capacity));
        self
    }

    /// The capacity of `channel` (full name, `!` part included).
    pub fn capacity_for(&self, channel: &str) -> usize {
        self.rules
            .iter()
            .find(|(pattern, _)| pattern.matches(channel))
            .map_or(self.default, |&(_, capacity)| capacity)
    }

    /// The default capacity.
    pub fn default_capacity(&self) -> usize {
        self.default
    }

    /// The overrides, in order.
    pub fn rules(&self) -> &[(CapacityPattern, usize)] {
        &self.rules
    }
}

/// Translates a shell glob to an anchored regex, as Python's `fnmatch.translate`.
fn translate_glob(glob: &str) -> String {
    let chars: Vec<char> = glob.chars().collect();
    let mut out = String::from(r"\A(?s:");
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        i += 1;
        match c {
            '*' => {
                while i < chars.len() && chars[i] == '*' {
                    i += 1;
                }
                out.push_str(".*");
            }
            '?' => out.push('.'),
            '[' => match class_end(&chars, i) {
                None => out.push_str(r"\["),
                Some(end) => {
                    let mut class: String = chars[i..end].iter().collect();
                    i = end + 1;
                    if class.is_empty() {
                        // Python: "[]" never matches... only reachable via "[!]" below.
                        out.push_str("(?!)");
                        continue;
                    }
                    let negated = class.starts_with('!');
                    if negated {
                        class.remove(0);
                        if class.is_empty() {
                            // "[!]" matches any character.
                            out.push('.');
                            continue;
                        }
                    }
                    out.push('[');
                    if negated {
                        out.push('^');
                    }
                    for ch in class.chars() {
                        if matches!(ch, '\\' | '[' | ']' | '^' | '&' | '~') {
                            out.push('\\');
                        }
                        out.push(ch);
                    }
                    out.push(']');
                }
            },
            other => out.push_str(&regex::escape(other.encode_utf8(&mut [0; 4]))),
        }
    }
    out.push_str(r")\z");
    out
}

/// Finds the `]` that closes a class opened just before `start` (fnmatch rules:
/// a leading `!` and then a leading `]` are literal members).
fn class_end(chars: &[char], start: usize) -> Option<usize> {
    let mut j = start;
    if j < chars.len() && chars[j] == '!' {
        j += 1;
    }
    if j < chars.len() && chars[j] == ']' {
        j += 1;
    }
    while j < chars.len() && chars[j] != ']' {
        j += 1;
    }
    (j < chars.len()).then_some(j)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_matches_whole_name() {
        let pattern = CapacityPattern::glob("http.response!*").unwrap();
        assert!(pattern.matches("http.response!abc"));
        assert!(pattern.matches("http.response!"));
        assert!(!pattern.matches("xhttp.response!abc"));
        assert!(!pattern.matches("http.responseXabc"), "the dot is literal");
        let exact = CapacityPattern::glob("one").unwrap();
        assert!(exact.matches("one"));
        assert!(!exact.matches("one2"));
    }

    #[test]
    fn glob_classes_and_wildcards() {
        let pattern = CapacityPattern::glob("ch[0-9]?x[!a]").unwrap();
        assert!(pattern.matches("ch1zxb"));
        assert!(!pattern.matches("ch1zxa"));
        assert!(!pattern.matches("chazxb"));
        assert!(CapacityPattern::glob("a[").unwrap().matches("a["));
    }

    #[test]
    fn regex_matches_from_start_only() {
        let pattern = CapacityPattern::regex("web").unwrap();
        assert!(pattern.matches("websocket"));
        assert!(!pattern.matches("aweb"));
        assert!(CapacityPattern::regex("(").is_err());
    }

    #[test]
    fn first_rule_wins() {
        let capacities = ChannelCapacities::new(100)
            .with_rule(CapacityPattern::glob("a*").unwrap(), 1)
            .with_rule(CapacityPattern::glob("ab*").unwrap(), 2);
        assert_eq!(capacities.capacity_for("abc"), 1);
        assert_eq!(capacities.capacity_for("b"), 100);
    }
}
