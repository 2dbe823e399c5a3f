//! How a stdin line becomes a text frame.

/// The shape of the frames sent for each line.
#[derive(Debug, Clone)]
pub(crate) enum FrameTemplate {
    /// The line itself.
    Raw,
    /// `{<field>: <line>}`, with `"type": <type>` first when a type is given.
    JsonField {
        message_type: Option<String>,
        field: String,
    },
    /// A template in which `{line}` is replaced by the JSON-escaped line (without quotes).
    Template(String),
}

impl FrameTemplate {
    pub(crate) fn json_field(message_type: Option<&str>, field: &str) -> Self {
        Self::JsonField {
            message_type: message_type.map(str::to_owned),
            field: field.to_owned(),
        }
    }

    pub(crate) fn template(template: &str) -> Self {
        Self::Template(template.to_owned())
    }

    /// The frame text for `line`.
    pub(crate) fn render(&self, line: &str) -> String {
        match self {
            Self::Raw => line.to_owned(),
            Self::JsonField {
                message_type,
                field,
            } => {
                let mut map = serde_json::Map::new();
                if let Some(message_type) = message_type {
                    map.insert("type".to_owned(), message_type.as_str().into());
                }
                map.insert(field.clone(), line.into());
                serde_json::Value::Object(map).to_string()
            }
            Self::Template(template) => {
                let quoted = serde_json::Value::from(line).to_string();
                template.replace("{line}", &quoted[1..quoted.len() - 1])
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_each_shape() {
        let line = r#"say "hi" \ bye"#;
        assert_eq!(FrameTemplate::Raw.render(line), line);
        let typed = FrameTemplate::json_field(Some("chat.message"), "text").render(line);
        let json: serde_json::Value = serde_json::from_str(&typed).expect("valid json");
        assert_eq!(
            json,
            serde_json::json!({"type": "chat.message", "text": line})
        );
        let chat = FrameTemplate::json_field(None, "message").render(line);
        assert_eq!(chat, serde_json::json!({ "message": line }).to_string());
        let templated = FrameTemplate::template(r#"{"message": "{line}"}"#).render(line);
        let json: serde_json::Value = serde_json::from_str(&templated).expect("valid json");
        assert_eq!(json["message"], line);
    }
}
