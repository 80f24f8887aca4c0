//! Anomaly likelihood: how unusual the recent raw scores are against their own history.
//!
//! Numenta's post-processing (Ahmad et al. 2017, "Unsupervised real-time anomaly detection for
//! streaming data"), bounded: the mean of the last [`LikelihoodConfig::short_rows`] raw scores
//! is compared with the mean and standard deviation of that short-term average over the last
//! [`LikelihoodConfig::history_rows`] rows, through the Gaussian upper tail. Like Numenta's
//! `_filterLikelihoods`, a tail that stays in the red zone is reported once: the next red
//! values are lifted to the yellow level, so one event is not alerted on every row.
//!
//! Differences from Numenta's code, on principle: only the upper tail counts (raw scores
//! below their usual level are not anomalous here), and the learning period is a fixed row
//! count rather than a share of a file length the stream cannot know.

use super::normal::upper_tail;

/// Parameters of [`Likelihood`]; every field is a row count or a probability.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LikelihoodConfig {
    /// Rows averaged into the short-term score (Numenta's `averagingWindow` = 10).
    pub short_rows: usize,
    /// Short-term averages kept for the long-run distribution (Numenta's `historicWindowSize`
    /// = 8640).
    pub history_rows: usize,
    /// Rows before the first average enters the history (the raw detector is still learning).
    pub learning_rows: usize,
    /// Averages in the history before a likelihood is reported; before that it is 0.5.
    pub estimation_rows: usize,
    /// Rows between refits of the long-run distribution (Numenta's `reestimationPeriod` = 100).
    pub refit_rows: usize,
    /// Lower bound on the fitted standard deviation (Numenta bounds the variance at 0.0003).
    pub std_min: f64,
    /// Tail probability at or below which a row is in the red zone (Numenta: 1e-5).
    pub red_tail: f64,
    /// Tail reported for a red row that follows a red row (Numenta: 1e-3).
    pub yellow_tail: f64,
}

impl Default for LikelihoodConfig {
    /// Numenta's published defaults; learning and estimation take 375 rows each, so that
    /// together they fill NAB's longest probationary period (750 rows).
    ///
    /// ```
    /// let c = agentwire_streaming::detect::likelihood::LikelihoodConfig::default();
    /// assert_eq!((c.short_rows, c.history_rows), (10, 8640));
    /// ```
    fn default() -> Self {
        Self {
            short_rows: 10,
            history_rows: 8640,
            learning_rows: 375,
            estimation_rows: 375,
            refit_rows: 100,
            std_min: 0.0003f64.sqrt(),
            red_tail: 1e-5,
            yellow_tail: 1e-3,
        }
    }
}

/// The likelihood post-processor. Fixed rings; no allocation after construction.
///
/// ```
/// use agentwire_streaming::detect::likelihood::{Likelihood, LikelihoodConfig};
/// let mut l = Likelihood::new(LikelihoodConfig::default());
/// for i in 0..2000 { l.tail(if i % 7 == 0 { 0.2 } else { 0.1 }); }
/// assert!(l.tail(1.0) < 0.5); // a jump in the raw score is in the tail
/// ```
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Likelihood {
    config: LikelihoodConfig,
    short: Box<[f64]>,
    short_sum: f64,
    rows_seen: usize,
    history: Box<[f64]>,
    history_count: usize,
    history_next: usize,
    mean: f64,
    std: f64,
    since_refit_rows: usize,
    previous_red: bool,
}

impl Likelihood {
    /// A post-processor with `config`.
    ///
    /// # Panics
    /// If a window is empty (`short_rows`, `history_rows`, `refit_rows` or `estimation_rows`
    /// is 0) or `estimation_rows > history_rows`: these are programming errors.
    ///
    /// ```
    /// use agentwire_streaming::detect::likelihood::{Likelihood, LikelihoodConfig};
    /// let _ = Likelihood::new(LikelihoodConfig::default());
    /// ```
    pub fn new(config: LikelihoodConfig) -> Self {
        assert!(config.short_rows > 0 && config.history_rows > 0 && config.refit_rows > 0);
        assert!(config.estimation_rows > 0 && config.estimation_rows <= config.history_rows);
        Self {
            short: vec![0.0; config.short_rows].into_boxed_slice(),
            short_sum: 0.0,
            rows_seen: 0,
            history: vec![0.0; config.history_rows].into_boxed_slice(),
            history_count: 0,
            history_next: 0,
            mean: 0.0,
            std: 1.0,
            since_refit_rows: 0,
            previous_red: false,
            config,
        }
    }

    /// Whether state read back from a checkpoint has the shape `config` gives (its rings'
    /// lengths and indices), so scoring cannot index out of bounds.
    pub(crate) fn shape_ok(&self, config: &LikelihoodConfig) -> bool {
        self.config == *config
            && self.short.len() == config.short_rows
            && self.history.len() == config.history_rows
            && self.history_count <= config.history_rows
            && self.history_next < config.history_rows
    }

    /// Takes the raw score of this row (in [0, 1]) and returns the tail probability of the
    /// recent average: small means unusual. 0.5 while learning.
    ///
    /// ```
    /// use agentwire_streaming::detect::likelihood::{Likelihood, LikelihoodConfig};
    /// let mut l = Likelihood::new(LikelihoodConfig::default());
    /// assert_eq!(l.tail(0.3), 0.5);
    /// ```
    pub fn tail(&mut self, raw: f64) -> f64 {
        let c = self.config;
        let slot = self.rows_seen % c.short_rows;
        self.short_sum += raw - self.short[slot];
        self.short[slot] = raw;
        self.rows_seen += 1;
        if self.rows_seen % c.short_rows == 0 {
            // Re-sum now and then so the running sum cannot drift over a long stream.
            self.short_sum = self.short.iter().sum();
        }
        let average = self.short_sum / self.rows_seen.min(c.short_rows) as f64;
        if self.rows_seen <= c.learning_rows {
            return 0.5;
        }
        // The tail is judged against the history before this row joins it.
        let tail = if self.history_count >= c.estimation_rows {
            let z = (average - self.mean) / self.std;
            upper_tail(z)
        } else {
            0.5
        };
        self.push_history(average);
        self.filter(tail)
    }

    fn push_history(&mut self, average: f64) {
        let c = self.config;
        self.history[self.history_next] = average;
        self.history_next = (self.history_next + 1) % c.history_rows;
        self.history_count = (self.history_count + 1).min(c.history_rows);
        self.since_refit_rows += 1;
        // Fit as soon as the estimation set is complete, then every `refit_rows`.
        if self.history_count == c.estimation_rows || self.since_refit_rows >= c.refit_rows {
            self.since_refit_rows = 0;
            let kept = &self.history[..self.history_count];
            let n = kept.len() as f64;
            let mean = kept.iter().sum::<f64>() / n;
            let var = kept.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / n;
            self.mean = mean;
            self.std = var.sqrt().max(c.std_min);
        }
    }

    fn filter(&mut self, tail: f64) -> f64 {
        let red = tail <= self.config.red_tail;
        let reported = if red && self.previous_red {
            self.config.yellow_tail.max(tail)
        } else {
            tail
        };
        self.previous_red = red;
        reported
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small() -> LikelihoodConfig {
        LikelihoodConfig {
            short_rows: 2,
            history_rows: 8,
            learning_rows: 2,
            estimation_rows: 4,
            refit_rows: 100,
            ..LikelihoodConfig::default()
        }
    }

    #[test]
    fn reports_half_while_learning_and_estimating() {
        let mut l = Likelihood::new(small());
        // 2 learning rows, then 4 rows fill the estimation set.
        for _ in 0..6 {
            assert_eq!(l.tail(0.1), 0.5);
        }
    }

    #[test]
    fn a_red_zone_run_is_reported_once() {
        let mut l = Likelihood::new(small());
        for i in 0..8 {
            l.tail(if i % 2 == 0 { 0.1 } else { 0.12 });
        }
        let first = l.tail(1.0);
        assert!(first <= 1e-5, "{first}");
        let second = l.tail(1.0);
        assert_eq!(second, 1e-3);
    }
}
