//! Failure prediction on the live history: each watched signal's recent buckets
//! ([`crate::history`]) forecast with Holt's linear trend (a rising signal is assumed to keep rising: an alert comes early rather than late) and turned into the probability of
//! crossing its threshold within the horizon ([`crate::risk`]); a probability at or above
//! the alert level makes an alert, published by the daemon on a router topic as JSON
//! ([`RiskCheck::to_json`]).
//!
//! ```
//! # let dir = tempfile::tempdir().unwrap();
//! use agentwire_twin::alerts::{assess, RiskSettings, WatchSpec};
//! use agentwire_twin::history::{History, HistoryConfig, Tier};
//! let mut h = History::open(dir.path(), HistoryConfig::default().tiers(vec![Tier::new(1000, 86_400_000)])).unwrap();
//! for s in 0..30u64 {
//!     h.append("router.rx_occupancy_max_permille", s * 1000, 20.0 * s as f64).unwrap(); // +20 a second
//! }
//! let watch = WatchSpec::above("router.rx_occupancy_max_permille", 900.0);
//! let settings = RiskSettings { tier: 0, horizon_steps: 60, history_steps: 600, level: 0.5 };
//! let check = assess(&h, &watch, &settings, 30_000).unwrap().expect("enough history");
//! assert!(check.alert, "580 and rising 20 a step reaches 900 within a minute");
//! ```

use crate::forecast::{Forecaster, Method};
use crate::history::History;
use crate::risk::Watch;

/// A signal and the threshold it must not reach.
///
/// ```
/// let w = agentwire_twin::alerts::WatchSpec::above("router.busy_permille", 950.0);
/// assert!(!w.below);
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct WatchSpec {
    /// The history series (a signal name, e.g. `router.rx_occupancy_max_permille`).
    pub signal: String,
    /// The threshold.
    pub threshold: f64,
    /// Failure is reaching it from above (else from below).
    pub below: bool,
}

impl WatchSpec {
    /// Failure is `signal` at or above `threshold`.
    ///
    /// ```
    /// assert_eq!(agentwire_twin::alerts::WatchSpec::above("s", 1.0).threshold, 1.0);
    /// ```
    pub fn above(signal: &str, threshold: f64) -> Self {
        Self {
            signal: signal.to_string(),
            threshold,
            below: false,
        }
    }
}

/// The watches the daemon's twin keeps when the configuration names none: the fullest rx
/// ring at 90 %, the router busy 95 % of its duty cycles, and each partition busy 95 %.
///
/// ```
/// let w = agentwire_twin::alerts::default_watches(&["streaming".to_string()]);
/// assert!(w.iter().any(|w| w.signal == "partition.streaming.busy_permille"));
/// ```
pub fn default_watches(partitions: &[String]) -> Vec<WatchSpec> {
    let mut out = vec![
        WatchSpec::above("router.rx_occupancy_max_permille", 900.0),
        WatchSpec::above("router.busy_permille", 950.0),
    ];
    out.extend(
        partitions
            .iter()
            .map(|p| WatchSpec::above(&format!("partition.{p}.busy_permille"), 950.0)),
    );
    out
}

/// How watches are assessed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RiskSettings {
    /// The history tier the buckets come from (0: the finest).
    pub tier: usize,
    /// Steps (buckets of the tier) to look ahead.
    pub horizon_steps: usize,
    /// Buckets of history to forecast from, at most.
    pub history_steps: usize,
    /// The crossing probability that makes an alert, in (0, 1].
    pub level: f64,
}

/// One watch assessed.
#[derive(Debug, Clone, PartialEq)]
pub struct RiskCheck {
    /// The watch.
    pub watch: WatchSpec,
    /// The last bucket's mean.
    pub last: f64,
    /// Probability of crossing within the horizon.
    pub probability: f64,
    /// The first-crossing step: 5 %, median and 95 % of the sample paths (`None`: past the
    /// horizon).
    pub crossing_steps: [Option<usize>; 3],
    /// The history buckets the forecast used.
    pub history_steps: usize,
    /// `probability >= level`.
    pub alert: bool,
}

impl RiskCheck {
    /// The alert's JSON: signal, threshold, direction, last, probability, the median
    /// first-crossing step and horizon, with the tier's resolution.
    ///
    /// ```
    /// use agentwire_twin::alerts::{RiskCheck, WatchSpec};
    /// let c = RiskCheck { watch: WatchSpec::above("s", 9.0), last: 1.0, probability: 0.75,
    ///     crossing_steps: [Some(2), Some(3), None], history_steps: 10, alert: true };
    /// assert!(c.to_json(60, 60_000).contains("\"probability\":0.75,\"crossing_step\":3,"));
    /// ```
    pub fn to_json(&self, horizon_steps: usize, step_ms: u64) -> String {
        let crossing = self.crossing_steps[1].map_or("null".to_string(), |s| s.to_string());
        format!(
            "{{\"signal\":\"{}\",\"threshold\":{},\"direction\":\"{}\",\"last\":{},\
             \"probability\":{},\"crossing_step\":{},\"horizon_steps\":{},\"step_ms\":{},\
             \"alert\":{}}}",
            self.watch.signal,
            self.watch.threshold,
            if self.watch.below { "below" } else { "above" },
            self.last,
            self.probability,
            crossing,
            horizon_steps,
            step_ms,
            self.alert
        )
    }
}

/// Why a watch could not be assessed.
#[derive(Debug, thiserror::Error)]
pub enum AlertError {
    /// The history refused the query.
    #[error("{0}")]
    Query(#[from] crate::history::QueryError),
    /// The risk could not be computed.
    #[error("{0}")]
    Risk(#[from] crate::risk::RiskError),
}

/// Holt's method needs this many buckets; fewer is "not yet" (`Ok(None)`).
///
/// ```
/// assert_eq!(agentwire_twin::alerts::HISTORY_STEPS_MIN, 4);
/// ```
pub const HISTORY_STEPS_MIN: usize = 4;

/// Assesses `watch` on the last `settings.history_steps` buckets of its series before
/// `now_ms` (their means). `Ok(None)` while the series has fewer than
/// [`HISTORY_STEPS_MIN`] buckets.
pub fn assess(
    history: &History,
    watch: &WatchSpec,
    settings: &RiskSettings,
    now_ms: u64,
) -> Result<Option<RiskCheck>, AlertError> {
    let resolution = history
        .config()
        .tiers_value()
        .get(settings.tier)
        .map_or(1000, |t| t.resolution_ms);
    let span = resolution.saturating_mul(settings.history_steps as u64);
    let from = now_ms.saturating_sub(span);
    let buckets = history.query(&watch.signal, settings.tier, from, now_ms.saturating_add(1))?;
    let values: Vec<f64> = buckets.iter().map(|b| b.mean()).collect();
    if values.len() < HISTORY_STEPS_MIN {
        return Ok(None);
    }
    let risk = if watch.below {
        Watch::below(watch.threshold)
    } else {
        Watch::above(watch.threshold)
    }
    .horizon(settings.horizon_steps);
    let report = risk.assess(&Forecaster::new(Method::Holt), &values)?;
    let probability = report.probability(settings.horizon_steps);
    Ok(Some(RiskCheck {
        watch: watch.clone(),
        last: report.last,
        probability,
        crossing_steps: report.first_crossing(),
        history_steps: values.len(),
        alert: probability >= settings.level,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::{HistoryConfig, Tier};

    fn history(values: impl Iterator<Item = f64>) -> (tempfile::TempDir, History, u64) {
        let dir = tempfile::tempdir().unwrap();
        let config = HistoryConfig::default().tiers(vec![Tier::new(1000, 86_400_000)]);
        let mut h = History::open(dir.path(), config).unwrap();
        let mut t = 0;
        for (i, v) in values.enumerate() {
            t = i as u64 * 1000;
            h.append("s", t, v).unwrap();
        }
        (dir, h, t)
    }

    const SETTINGS: RiskSettings = RiskSettings {
        tier: 0,
        horizon_steps: 60,
        history_steps: 600,
        level: 0.5,
    };

    #[test]
    fn a_flat_signal_far_from_its_threshold_raises_nothing() {
        let (_d, h, now) = history((0..120).map(|i| 100.0 + (i % 3) as f64));
        let c = assess(&h, &WatchSpec::above("s", 900.0), &SETTINGS, now)
            .unwrap()
            .unwrap();
        assert!(!c.alert && c.probability < 0.01, "{c:?}");
        assert_eq!(c.crossing_steps[1], None);
    }

    #[test]
    fn a_rising_signal_crosses_about_when_its_trend_says() {
        // 10 a step from 0: reaches 900 at step 90, 30 steps past the last (600 at 60).
        let (_d, h, now) = history((0..61).map(|i| 10.0 * i as f64));
        let c = assess(&h, &WatchSpec::above("s", 900.0), &SETTINGS, now)
            .unwrap()
            .unwrap();
        assert!(c.alert, "{c:?}");
        let [lo, mid, hi] = c.crossing_steps;
        let (lo, hi) = (lo.unwrap(), hi.unwrap_or(usize::MAX));
        assert!(
            lo <= 30 && 30 <= hi,
            "the true crossing (30) outside {lo}..{hi}"
        );
        let mid = mid.expect("crosses within the horizon");
        assert!(
            (26..=34).contains(&mid),
            "median crossing at step {mid}, the trend says 30"
        );
    }

    #[test]
    fn too_little_history_is_not_yet() {
        let (_d, h, now) = history((0..3).map(f64::from));
        assert!(assess(&h, &WatchSpec::above("s", 1.0), &SETTINGS, now)
            .unwrap()
            .is_none());
        let unknown = WatchSpec::above("nothing", 1.0);
        assert!(assess(&h, &unknown, &SETTINGS, now).unwrap().is_none());
    }
}
