//! Channel and group name rules, exactly as Django Channels checks them.
//!
//! Channel names match `^[a-zA-Z\d\-_.]+(![\d\w\-_.]*)?$`, group names
//! `^[a-zA-Z\d\-_.]+$`, and both must be shorter than 100 characters. As in
//! Python, `\d` and `\w` are Unicode-aware, so `foo!bär` is a valid channel.
//! Unlike Python's `$`, a trailing newline is rejected.

use std::sync::LazyLock;

use regex::Regex;

use crate::error::{LayerError, NameProblem};

/// Names must be strictly shorter than this many characters.
pub const MAX_NAME_LENGTH: usize = 100;

/// The separator between a process-local channel's shared part and its local part.
pub const LOCAL_SEPARATOR: char = '!';

/// Checks a channel name.
///
/// # Errors
/// [`LayerError::InvalidChannelName`] naming the problem.
///
/// # Examples
/// ```
/// use channels_core::validate_channel_name;
/// assert!(validate_channel_name("chat").is_ok());
/// assert!(validate_channel_name("specific.abc!def").is_ok());
/// assert!(validate_channel_name("a b").is_err());
/// ```
pub fn validate_channel_name(name: &str) -> Result<(), LayerError> {
    check_channel(name).map_err(|problem| LayerError::InvalidChannelName {
        name: name.to_owned(),
        problem,
    })
}

/// Checks a group name.
///
/// # Errors
/// [`LayerError::InvalidGroupName`] naming the problem.
pub fn validate_group_name(name: &str) -> Result<(), LayerError> {
    check_group(name).map_err(|problem| LayerError::InvalidGroupName {
        name: name.to_owned(),
        problem,
    })
}

/// Returns whether `name` is a process-local channel name (contains `!`).
pub fn is_process_local(name: &str) -> bool {
    name.contains(LOCAL_SEPARATOR)
}

/// Returns the part of a channel name that is shared by every process-local
/// channel of one layer instance: everything up to and including the first
/// `!`, or the whole name when it has none.
///
/// ```
/// use channels_core::non_local_name;
/// assert_eq!(non_local_name("specific.abc!def"), "specific.abc!");
/// assert_eq!(non_local_name("chat"), "chat");
/// ```
pub fn non_local_name(name: &str) -> &str {
    match name.find(LOCAL_SEPARATOR) {
        Some(index) => &name[..=index],
        None => name,
    }
}

/// Characters in the random local part of a new process-local channel name.
pub const LOCAL_PART_LENGTH: usize = 12;

/// A fresh random local part for a process-local channel name: 12 ASCII
/// letters, as channels_redis makes them (`specific.<prefix>!<12 letters>`).
/// 52^12 (about 4e20) choices: names of one process never collide in
/// practice, and a short name keeps group messages (which list every
/// member's name) and each connection's memory small.
///
/// ```
/// let part = channels_core::random_local_part();
/// assert_eq!(part.len(), channels_core::LOCAL_PART_LENGTH);
/// assert!(part.chars().all(|c| c.is_ascii_alphabetic()));
/// ```
pub fn random_local_part() -> String {
    const LETTERS: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
    let mut rng = rand::rng();
    (0..LOCAL_PART_LENGTH)
        .map(|_| char::from(LETTERS[rand::Rng::random_range(&mut rng, 0..LETTERS.len())]))
        .collect()
}

fn check_length(name: &str) -> Result<(), NameProblem> {
    if name.is_empty() {
        return Err(NameProblem::Empty);
    }
    // Python counts characters, not bytes.
    let length = if name.is_ascii() {
        name.len()
    } else {
        name.chars().count()
    };
    if length >= MAX_NAME_LENGTH {
        return Err(NameProblem::TooLong { length });
    }
    Ok(())
}

fn is_ascii_name_char(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.')
}

/// The non-ASCII fallback: Python's Unicode `\d` (category Nd) and `\w`.
static CHANNEL_PATTERN: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^[a-zA-Z\d\-_.]+(![\d\w\-_.]*)?$").expect("the channel name pattern is valid")
});
static GROUP_PATTERN: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^[a-zA-Z\d\-_.]+$").expect("the group name pattern is valid"));

fn check_channel(name: &str) -> Result<(), NameProblem> {
    check_length(name)?;
    if name.is_ascii() {
        let bytes = name.as_bytes();
        let bang = bytes.iter().position(|&b| b == b'!');
        let (head, tail) = match bang {
            Some(0) => return Err(NameProblem::MisplacedBang),
            Some(index) => (&bytes[..index], &bytes[index + 1..]),
            None => (bytes, &[][..]),
        };
        if let Some(position) = head.iter().position(|&b| !is_ascii_name_char(b)) {
            return Err(invalid_char(name, position));
        }
        if let Some(offset) = tail.iter().position(|&b| !is_ascii_name_char(b)) {
            let position = head.len() + 1 + offset;
            return Err(if bytes[position] == b'!' {
                NameProblem::MisplacedBang
            } else {
                invalid_char(name, position)
            });
        }
        return Ok(());
    }
    if CHANNEL_PATTERN.is_match(name) {
        Ok(())
    } else {
        Err(first_problem(name, true))
    }
}

fn check_group(name: &str) -> Result<(), NameProblem> {
    check_length(name)?;
    if name.is_ascii() {
        return match name.bytes().position(|b| !is_ascii_name_char(b)) {
            None => Ok(()),
            Some(position) if name.as_bytes()[position] == b'!' => Err(NameProblem::MisplacedBang),
            Some(position) => Err(invalid_char(name, position)),
        };
    }
    if GROUP_PATTERN.is_match(name) {
        Ok(())
    } else {
        Err(first_problem(name, false))
    }
}

fn invalid_char(name: &str, position: usize) -> NameProblem {
    NameProblem::InvalidCharacter {
        character: name.chars().nth(position).unwrap_or('?'),
        position,
    }
}

/// Finds the first offending character of a name the pattern rejected, for the
/// error message.
fn first_problem(name: &str, allow_local_part: bool) -> NameProblem {
    let mut in_local_part = false;
    for (position, character) in name.chars().enumerate() {
        let ok = if character == LOCAL_SEPARATOR {
            if !allow_local_part || in_local_part || position == 0 {
                return NameProblem::MisplacedBang;
            }
            in_local_part = true;
            true
        } else if in_local_part {
            character.is_alphanumeric() || matches!(character, '-' | '_' | '.')
        } else {
            character.is_ascii_alphanumeric()
                || matches!(character, '-' | '_' | '.')
                || (character.is_numeric() && !character.is_ascii())
        };
        if !ok {
            return NameProblem::InvalidCharacter {
                character,
                position,
            };
        }
    }
    // The pattern and this scan disagree only on exotic numerics; report the first one.
    NameProblem::InvalidCharacter {
        character: name.chars().next().unwrap_or('?'),
        position: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ascii_and_unicode_paths_agree() {
        for name in [
            "chat", "a.b-c_d", "foo!", "foo!bar", "foo!bär", "foo!a!b", "!abc", "é", "a b", "a:b",
            "x\n", "chat٣",
        ] {
            let regex = CHANNEL_PATTERN.is_match(name) && check_length(name).is_ok();
            assert_eq!(check_channel(name).is_ok(), regex, "channel {name:?}");
            let regex = GROUP_PATTERN.is_match(name) && check_length(name).is_ok();
            assert_eq!(check_group(name).is_ok(), regex, "group {name:?}");
        }
    }

    #[test]
    fn length_counts_characters() {
        let name = format!("x!{}", "ä".repeat(97));
        assert_eq!(name.chars().count(), 99);
        assert!(validate_channel_name(&name).is_ok());
        let name = format!("x!{}", "ä".repeat(98));
        assert!(validate_channel_name(&name).is_err());
    }

    #[test]
    fn trailing_newline_is_rejected() {
        assert!(validate_channel_name("foo\n").is_err());
        assert!(validate_group_name("foo\n").is_err());
    }

    #[test]
    fn errors_quote_the_name_and_the_rule() {
        let error = validate_group_name("foo!bar").unwrap_err().to_string();
        assert!(error.contains("`foo!bar`"), "{error}");
        assert!(error.contains("length < 100"), "{error}");
        let error = validate_channel_name("a b").unwrap_err().to_string();
        assert!(error.contains("' ' at position 1"), "{error}");
    }

    #[test]
    fn non_local_part() {
        assert_eq!(non_local_name("a!b!c"), "a!");
        assert_eq!(non_local_name("a!"), "a!");
    }
}
