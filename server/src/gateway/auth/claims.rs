//! [`Claims`]: what a verified token says about a connection (`sub`,
//! `exp`, `groups`, `allow`, `publish`), the same for JWTs and Django-signed
//! tokens, and the group [`Patterns`] of `allow` and `publish`.

use serde_json::Value;

use super::{Reason, TokenRejection};

/// The claims of a verified token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Claims {
    /// The user (`sub`; a number is taken as its decimal text).
    pub(crate) sub: String,
    /// When the token expires (Unix seconds), if it does.
    pub(crate) exp: Option<u64>,
    /// Groups the server joins at connect.
    pub(crate) groups: Vec<String>,
    /// Groups the client may subscribe to itself.
    pub(crate) allow: Patterns,
    /// Groups the client may publish to.
    pub(crate) publish: Patterns,
}

impl Claims {
    /// Reads the claims of a token's payload, checking `exp` against `now`
    /// (Unix seconds).
    pub(crate) fn from_payload(payload: &Value, now: u64) -> Result<Self, TokenRejection> {
        let Value::Object(fields) = payload else {
            return Err(TokenRejection::new(
                Reason::Claims,
                "the token's payload is not a JSON object",
            ));
        };
        let sub = match fields.get("sub") {
            Some(Value::String(sub)) if !sub.is_empty() => sub.clone(),
            Some(Value::Number(sub)) => sub.to_string(),
            _ => {
                return Err(TokenRejection::new(
                    Reason::Claims,
                    "the token has no `sub` (a non-empty string)",
                ));
            }
        };
        let exp = match fields.get("exp") {
            None | Some(Value::Null) => None,
            Some(Value::Number(exp)) => match exp.as_f64() {
                // Whole seconds: a fraction of one does not extend it.
                #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
                Some(exp) if exp >= 0.0 => Some(exp.floor() as u64),
                _ => return Err(TokenRejection::new(Reason::Claims, "`exp` is negative")),
            },
            Some(_) => {
                return Err(TokenRejection::new(
                    Reason::Claims,
                    "`exp` must be a number (Unix seconds)",
                ));
            }
        };
        if let Some(exp) = exp
            && exp <= now
        {
            return Err(TokenRejection::new(
                Reason::Expired,
                format!("the token expired at {exp} (now {now})"),
            ));
        }
        let groups = strings(fields.get("groups"), "groups")?;
        if let Some((group, error)) = groups.iter().find_map(|group| {
            channels_core::validate_group_name(group)
                .err()
                .map(|error| (group, error))
        }) {
            return Err(TokenRejection::new(
                Reason::Claims,
                format!("`groups` holds `{group}`: {error}"),
            ));
        }
        Ok(Self {
            sub,
            exp,
            groups,
            allow: Patterns(strings(fields.get("allow"), "allow")?),
            publish: Patterns(strings(fields.get("publish"), "publish")?),
        })
    }
}

/// A claim that is a list of strings (absent: empty).
fn strings(value: Option<&Value>, name: &str) -> Result<Vec<String>, TokenRejection> {
    let invalid = || {
        TokenRejection::new(
            Reason::Claims,
            format!("`{name}` must be a list of strings"),
        )
    };
    match value {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| item.as_str().map(str::to_owned).ok_or_else(invalid))
            .collect(),
        Some(_) => Err(invalid()),
    }
}

/// Group names and `prefix.*` patterns: `chat.*` matches `chat.lobby` and
/// `chat.a.b`, not `chat` or `chatter`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Patterns(pub(crate) Vec<String>);

impl Patterns {
    /// Returns whether `group` is one of the names or matches a pattern.
    pub(crate) fn allows(&self, group: &str) -> bool {
        self.0
            .iter()
            .any(|pattern| match pattern.strip_suffix('*') {
                Some(prefix) if prefix.ends_with('.') => {
                    group.len() > prefix.len() && group.starts_with(prefix)
                }
                _ => pattern == group,
            })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn claims_are_read_and_checked() {
        let claims = Claims::from_payload(
            &json!({"sub": "42", "exp": 2000.9, "groups": ["news"], "allow": ["chat.*"], "publish": ["chat.lobby"], "extra": 1}),
            1000,
        )
        .unwrap();
        assert_eq!(claims.sub, "42");
        assert_eq!(claims.exp, Some(2000));
        assert_eq!(claims.groups, ["news"]);
        assert!(claims.allow.allows("chat.lobby"));
        assert!(claims.publish.allows("chat.lobby"));
        assert!(!claims.publish.allows("chat.other"));

        let numeric = Claims::from_payload(&json!({"sub": 7}), 1000).unwrap();
        assert_eq!((numeric.sub.as_str(), numeric.exp), ("7", None));
        assert!(numeric.allow.0.is_empty());

        let reason = |payload| Claims::from_payload(&payload, 1000).unwrap_err().reason;
        assert_eq!(reason(json!({"sub": "1", "exp": 1000})), Reason::Expired);
        assert_eq!(reason(json!({"sub": "1", "exp": 999})), Reason::Expired);
        assert_eq!(reason(json!({"exp": 2000})), Reason::Claims);
        assert_eq!(reason(json!({"sub": ""})), Reason::Claims);
        assert_eq!(reason(json!({"sub": "1", "exp": "soon"})), Reason::Claims);
        assert_eq!(
            reason(json!({"sub": "1", "groups": "news"})),
            Reason::Claims
        );
        assert_eq!(reason(json!({"sub": "1", "allow": [1]})), Reason::Claims);
        assert_eq!(
            reason(json!({"sub": "1", "groups": ["bad!name"]})),
            Reason::Claims
        );
        assert_eq!(reason(json!(["sub"])), Reason::Claims);
    }

    #[test]
    fn patterns_match_names_and_prefixes() {
        let patterns = Patterns(vec!["news".into(), "chat.*".into(), "odd*".into()]);
        assert!(patterns.allows("news"));
        assert!(!patterns.allows("news.x"));
        assert!(patterns.allows("chat.lobby"));
        assert!(patterns.allows("chat.a.b"));
        assert!(!patterns.allows("chat."));
        assert!(!patterns.allows("chat"));
        assert!(!patterns.allows("chatter"));
        // Only `prefix.*` is a pattern; anything else is a plain name.
        assert!(!patterns.allows("oddity"));
        assert!(patterns.allows("odd*"));
    }
}
