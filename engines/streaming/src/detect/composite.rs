//! The default detector: raw surprise and context novelty, turned into a likelihood, reported
//! once per event.
//!
//! Per row: `raw = (surprise + novelty) / 2` (equal weights: neither is known to be better),
//! then [`Likelihood`] gives the tail probability `p` of the recent raw average, then the score
//! is `t / (1 + t)` with `t = -log10(p) / 5` (monotone, 0.5 at Numenta's red line `p = 1e-5`,
//! and without the float saturation of `1 - p` that would merge every strong alert into one
//! threshold level), then [`Refractory`] reports only new peaks within [`REFRACTORY_ROWS`].

use super::context::ContextNovelty;
use super::likelihood::{Likelihood, LikelihoodConfig};
use super::refractory::Refractory;
use super::surprise::Surprise;
use super::Detector;

/// Rows after a peak during which lower scores are reported as 0 (about a day of 5-minute
/// samples; NAB windows are 10% of a file shared among its anomalies, a few hundred rows).
pub const REFRACTORY_ROWS: usize = 288;

/// Surprise + context novelty → likelihood → suppression. See the module documentation.
///
/// ```
/// use agentwire_streaming::detect::{Detector, SurpriseLikelihood};
/// let mut d = SurpriseLikelihood::new();
/// let mut last = 0.0;
/// for i in 0..3000 { last = d.score(i, (i % 24) as f64); }
/// assert!(last < 0.5);
/// let jump = (0..5).map(|k| d.score(3000 + k, 500.0)).fold(0.0, f64::max);
/// assert!(jump > 0.5);
/// ```
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct SurpriseLikelihood {
    surprise: Surprise,
    context: ContextNovelty,
    likelihood: Likelihood,
    refractory: Refractory,
}

impl SurpriseLikelihood {
    /// The detector with its fixed parameters (the same for every stream).
    ///
    /// ```
    /// let d = agentwire_streaming::detect::SurpriseLikelihood::new();
    /// assert_eq!(agentwire_streaming::detect::Detector::name(&d), "surprise-likelihood");
    /// ```
    pub fn new() -> Self {
        Self {
            surprise: Surprise::new(),
            context: ContextNovelty::new(),
            likelihood: Likelihood::new(LikelihoodConfig::default()),
            refractory: Refractory::new(REFRACTORY_ROWS),
        }
    }
}

impl SurpriseLikelihood {
    /// Whether state read back from a checkpoint has the shape of [`SurpriseLikelihood::new`].
    pub(crate) fn shape_ok(&self) -> bool {
        self.context.shape_ok()
            && self.likelihood.shape_ok(&LikelihoodConfig::default())
            && self.refractory.shape_ok(REFRACTORY_ROWS)
    }
}

impl Default for SurpriseLikelihood {
    fn default() -> Self {
        Self::new()
    }
}

/// Maps a tail probability to [0, 1], larger for smaller tails (0.5 at 1e-5).
///
/// ```
/// use agentwire_streaming::detect::composite::tail_to_score;
/// assert_eq!(tail_to_score(1.0), 0.0);
/// assert!((tail_to_score(1e-5) - 0.5).abs() < 1e-12);
/// ```
pub fn tail_to_score(tail: f64) -> f64 {
    let t = -tail.clamp(f64::MIN_POSITIVE, 1.0).log10() / 5.0;
    t / (1.0 + t)
}

impl Detector for SurpriseLikelihood {
    fn name(&self) -> &'static str {
        "surprise-likelihood"
    }

    fn save(&self) -> Vec<u8> {
        super::save_plain(self)
    }

    fn score(&mut self, _timestamp_ns: i64, value: f64) -> f64 {
        let raw = 0.5 * (self.surprise.raw(value) + self.context.novelty(value));
        let tail = self.likelihood.tail(raw);
        self.refractory.pass(tail_to_score(tail))
    }
}
