//! The gateway protocol frames a soak client reads (docs/protocol.md), parsed into one typed
//! struct that borrows from the text, and the few frames it writes.

use std::borrow::Cow;

use serde::Deserialize;

/// Any server frame, with the fields the soak run looks at (all others are skipped).
#[derive(Debug, Deserialize)]
pub(crate) struct Frame<'a> {
    /// `connected`, `subscribed`, `message`, `lost`, `published`, `error`, ...
    #[serde(rename = "type", borrow)]
    pub(crate) kind: Cow<'a, str>,
    /// The request id an answer or error repeats.
    pub(crate) id: Option<u64>,
    /// Position of a push, a `subscribed` answer or a `lost` notice.
    pub(crate) offset: Option<u64>,
    #[serde(borrow)]
    pub(crate) epoch: Option<Cow<'a, str>>,
    /// `subscribed`: whether the missed messages are in `publications`.
    pub(crate) recovered: Option<bool>,
    /// `subscribed` without recovery, or `lost`: why.
    #[serde(borrow)]
    pub(crate) reason: Option<Cow<'a, str>>,
    /// `error`: its code.
    #[serde(borrow)]
    pub(crate) code: Option<Cow<'a, str>>,
    /// A push's message.
    pub(crate) data: Option<Data>,
    /// `subscribed` with `recovered: true`: the missed messages, in order.
    pub(crate) publications: Option<Vec<Publication>>,
}

/// The soak message inside a push: `{"type": "soak.msg", "seq": S, "t": MS}`.
#[derive(Debug, Deserialize)]
pub(crate) struct Data {
    pub(crate) seq: Option<u64>,
}

/// One recovered message.
#[derive(Debug, Deserialize)]
pub(crate) struct Publication {
    pub(crate) offset: u64,
    pub(crate) data: Data,
}

impl<'a> Frame<'a> {
    /// Parses a text frame; `None` when it is not a JSON object with a string `type`.
    pub(crate) fn parse(text: &'a str) -> Option<Self> {
        serde_json::from_str(text).ok()
    }
}

/// The first frame of a development-mode connection.
pub(crate) const CONNECT: &str = r#"{"type":"connect"}"#;

/// `subscribe` to `group`, recovering from `position` when there is one.
pub(crate) fn subscribe(id: u64, group: &str, position: Option<(u64, &str)>) -> String {
    let mut frame = serde_json::json!({"type": "subscribe", "id": id, "group": group});
    if let Some((offset, epoch)) = position {
        frame["recover"] = serde_json::json!({"offset": offset, "epoch": epoch});
    }
    frame.to_string()
}

/// `publish` of soak message `seq`, sent `ms` milliseconds after the run's start.
pub(crate) fn publish(group: &str, seq: u64, ms: u64) -> String {
    serde_json::json!({
        "type": "publish",
        "id": seq,
        "group": group,
        "data": {"type": "soak.msg", "seq": seq, "t": ms},
    })
    .to_string()
}

/// A small deterministic generator (splitmix64) for lifetimes and jitter; the crate has no
/// `rand` and a soak run needs no more.
#[derive(Debug, Clone)]
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Self {
        Self(seed ^ 0x9E37_79B9_7F4A_7C15)
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    pub(crate) fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Exponentially distributed with mean `mean`.
    pub(crate) fn exponential(&mut self, mean: f64) -> f64 {
        -mean * (1.0 - self.unit()).ln()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_pushes_answers_and_notices() {
        let push = r#"{"type":"message","group":"soak","offset":18,"epoch":"k3j9","data":{"type":"soak.msg","seq":7,"t":1}}"#;
        let f = Frame::parse(push).expect("a push parses");
        assert_eq!(
            (f.kind.as_ref(), f.offset, f.epoch.as_deref()),
            ("message", Some(18), Some("k3j9"))
        );
        assert_eq!(f.data.and_then(|d| d.seq), Some(7));
        let answer = r#"{"type":"subscribed","id":3,"group":"soak","recovered":true,"offset":20,"epoch":"e","publications":[{"offset":19,"data":{"type":"soak.msg","seq":1}},{"offset":20,"data":{"type":"soak.msg","seq":2}}]}"#;
        let f = Frame::parse(answer).expect("an answer parses");
        assert_eq!(f.recovered, Some(true));
        assert_eq!(f.publications.map(|p| p.len()), Some(2));
        assert!(Frame::parse("[1]").is_none());
    }

    #[test]
    fn subscribe_carries_the_position() {
        let frame: serde_json::Value =
            serde_json::from_str(&subscribe(1, "soak", Some((17, "e")))).expect("json");
        assert_eq!(
            frame["recover"],
            serde_json::json!({"offset": 17, "epoch": "e"})
        );
        let mut rng = Rng::new(1);
        let mean = (0..10_000).map(|_| rng.exponential(2.0)).sum::<f64>() / 10_000.0;
        assert!((mean - 2.0).abs() < 0.1, "{mean}");
    }
}
