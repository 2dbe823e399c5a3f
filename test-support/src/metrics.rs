//! Reading a Prometheus text exposition.

/// The value of the first sample of metric `name` (with or without labels;
/// include the labels in `name` to pick one series) in a Prometheus text
/// exposition, if there is one.
pub fn metric_value(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| {
            let rest = line.strip_prefix(name)?;
            let rest = if let Some(labelled) = rest.strip_prefix('{') {
                labelled.split_once('}')?.1
            } else {
                rest
            };
            rest.strip_prefix(' ')?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_plain_and_labelled_samples() {
        let text = "# HELP channels_connections_open x\n# TYPE channels_connections_open gauge\n\
                    channels_connections_open 4\nchannels_connections_open_total 9\n\
                    channels_layer_ops_total{op=\"send\"} 12\n\
                    channels_layer_ops_total{op=\"group_send\"} 3\n";
        assert_eq!(metric_value(text, "channels_connections_open"), Some(4.0));
        assert_eq!(metric_value(text, "channels_layer_ops_total"), Some(12.0));
        assert_eq!(
            metric_value(text, "channels_layer_ops_total{op=\"group_send\"}"),
            Some(3.0)
        );
        assert_eq!(metric_value(text, "channels_missing"), None);
    }
}
