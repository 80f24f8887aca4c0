//! The checks of the `[rebalance]` and `[streaming]` sections that run after they parse,
//! every problem reported: the sections' own checks ([`RebalanceConfig::validate`],
//! [`StreamingSection::engine_config_in`]) stop at their first, so each group of keys they
//! check together is checked here on its own, the other keys at their defaults.

use crate::stream_engine::StreamingSection;
use agentwire_scheduler::rebalance::RebalanceConfig;
use std::path::Path;

/// Every problem of `[rebalance]`: (key, what is wrong).
pub(super) fn rebalance_problems(rebalance: &RebalanceConfig) -> Vec<(&'static str, String)> {
    let defaults = RebalanceConfig::default();
    let water = RebalanceConfig {
        sample_ms: defaults.sample_ms,
        ..rebalance.clone()
    };
    let sample = RebalanceConfig {
        low_water: defaults.low_water,
        high_water: defaults.high_water,
        ..rebalance.clone()
    };
    [
        ("rebalance.low_water", water),
        ("rebalance.sample_ms", sample),
    ]
    .into_iter()
    .filter_map(|(key, part)| {
        let why = part.validate().err()?;
        Some((key, why.trim_start_matches("[rebalance] ").to_string()))
    })
    .collect()
}

/// Every problem of `[streaming]`: (dotted key, what is wrong). The log's settings are
/// checked as the daemon checks them, with a state directory: when the file names none the
/// daemon puts one beside its dead-letter queue, so a placeholder stands for it here.
pub(super) fn streaming_problems(section: &StreamingSection) -> Vec<(String, String)> {
    // Destructured whole: a key added to the section does not compile until it is checked.
    let StreamingSection {
        enabled: _,
        feature_id,
        detector,
        alert_threshold,
        alerts_topic,
        results_topic: _, // any text is a topic, "" none
        detector_keys_max,
        future_tolerance_ms,
        state_dir,
        checkpoint_interval_ms,
        log_fsync_interval_ms,
        log_retention_bytes,
        window,
    } = section;
    let none = StreamingSection::default;
    let groups = [
        StreamingSection {
            feature_id: *feature_id,
            ..none()
        },
        StreamingSection {
            detector: detector.clone(),
            ..none()
        },
        StreamingSection {
            alert_threshold: *alert_threshold,
            ..none()
        },
        StreamingSection {
            alerts_topic: alerts_topic.clone(),
            ..none()
        },
        StreamingSection {
            detector_keys_max: *detector_keys_max,
            ..none()
        },
        StreamingSection {
            future_tolerance_ms: *future_tolerance_ms,
            ..none()
        },
        StreamingSection {
            state_dir: state_dir.clone(),
            checkpoint_interval_ms: *checkpoint_interval_ms,
            log_fsync_interval_ms: *log_fsync_interval_ms,
            log_retention_bytes: *log_retention_bytes,
            ..none()
        },
        StreamingSection {
            window: window.clone(),
            ..none()
        },
    ];
    let placeholder = Path::new("stream");
    groups
        .iter()
        .filter_map(|group| {
            let (key, why) = group.engine_config_in(Some(placeholder)).err()?;
            // The window's checks name their key in the message: `window.size_ms is missing`.
            let key = match why.strip_prefix("window.") {
                Some(rest) if key == "streaming.window" => {
                    let name: String = rest
                        .chars()
                        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                        .collect();
                    format!("streaming.window.{name}")
                }
                _ => key.to_string(),
            };
            Some((key, why))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::super::{Config, ConfigError};

    #[test]
    fn every_problem_of_the_sections_is_reported() {
        let text = "[rebalance]\n\
                    low_water = 0.9\n\
                    sample_ms = 1\n\
                    \n\
                    [streaming]\n\
                    enabled = true\n\
                    alert_threshold = 2.0\n\
                    detector = \"psychic\"\n\
                    detector_keys_max = 0\n\
                    [streaming.window]\n\
                    kind = \"tumbling\"\n";
        let err = Config::parse(text, "s.toml").unwrap_err();
        let ConfigError::Invalid { problems, .. } = &err else {
            panic!("{err}");
        };
        let found: Vec<(Option<usize>, &str)> =
            problems.iter().map(|p| (p.line, p.key.as_str())).collect();
        assert_eq!(
            found,
            [
                (Some(2), "rebalance.low_water"),
                (Some(3), "rebalance.sample_ms"),
                (Some(7), "streaming.alert_threshold"),
                (Some(8), "streaming.detector"),
                (Some(9), "streaming.detector_keys_max"),
                (Some(10), "streaming.window.size_ms"),
            ],
            "{err}"
        );
    }
}
