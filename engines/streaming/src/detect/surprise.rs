//! Multi-scale prediction surprise: a raw score in [0, 1] from robust z-scores of the errors of
//! three predictors that look back over different spans.
//!
//! Each predictor is an exponentially weighted mean of earlier values (spans of 1, 10 and 100
//! rows); its error on this row is divided by the exponentially weighted mean absolute error of
//! the same predictor over the last ~[`SCALE_SPAN_ROWS`] rows (a robust, local spread that adapts
//! to each series without knowing its range). The largest of the three z-scores is mapped to
//! [0, 1] by `1 - exp(-(z / Z_HALF_SCALE)^2 * ln 2)`, which is 0.5 at `z = Z_HALF_SCALE`.
//! Short spans catch spikes, long spans catch level shifts and drifts.

/// Spans (rows) of the three predictors: last value, ~10 rows, ~100 rows.
pub const PREDICTOR_SPANS_ROWS: [f64; 3] = [1.0, 10.0, 100.0];
/// Span (rows) of the mean absolute error that scales each predictor's error.
pub const SCALE_SPAN_ROWS: f64 = 500.0;
/// Robust z at which the raw score is one half.
pub const Z_HALF_SCALE: f64 = 4.0;

/// The raw multi-scale surprise. Constant size state.
///
/// ```
/// use agentwire_streaming::detect::surprise::Surprise;
/// let mut s = Surprise::new();
/// for i in 0..1000 { s.raw(10.0 + (i % 3) as f64); }
/// assert!(s.raw(10.0) < 0.2);
/// assert!(s.raw(100.0) > 0.9);
/// ```
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct Surprise {
    means: [f64; 3],
    abs_errors: [f64; 3],
    rows_seen: u64,
}

impl Surprise {
    /// A fresh scorer.
    ///
    /// ```
    /// let _ = agentwire_streaming::detect::surprise::Surprise::new();
    /// ```
    pub fn new() -> Self {
        Self::default()
    }

    /// Scores `value` against the earlier values, then learns it.
    ///
    /// ```
    /// let mut s = agentwire_streaming::detect::surprise::Surprise::new();
    /// assert_eq!(s.raw(5.0), 0.0); // nothing to compare with yet
    /// ```
    pub fn raw(&mut self, value: f64) -> f64 {
        if self.rows_seen == 0 {
            self.means = [value; 3];
            self.rows_seen = 1;
            return 0.0;
        }
        self.rows_seen += 1;
        let scale_alpha = (1.0 / SCALE_SPAN_ROWS).max(1.0 / self.rows_seen as f64);
        let mut z_max: f64 = 0.0;
        for ((mean, abs_error), span_rows) in self
            .means
            .iter_mut()
            .zip(&mut self.abs_errors)
            .zip(PREDICTOR_SPANS_ROWS)
        {
            let error = (value - *mean).abs();
            let z = if error == 0.0 {
                0.0
            } else if *abs_error > 0.0 {
                error / *abs_error
            } else {
                f64::INFINITY // first change after a perfectly flat stretch
            };
            z_max = z_max.max(z);
            *abs_error += scale_alpha * (error - *abs_error);
            *mean += (value - *mean) / span_rows;
        }
        let ratio = z_max / Z_HALF_SCALE;
        let raw = 1.0 - (-(ratio * ratio) * std::f64::consts::LN_2).exp();
        if raw.is_nan() {
            1.0
        } else {
            raw.clamp(0.0, 1.0)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flat_series_scores_zero_and_a_step_scores_one() {
        let mut s = Surprise::new();
        for _ in 0..50 {
            assert_eq!(s.raw(3.0), 0.0);
        }
        assert_eq!(s.raw(4.0), 1.0);
    }

    #[test]
    fn half_score_at_the_half_scale() {
        let mut s = Surprise::new();
        s.raw(0.0);
        // Force a known state: every predictor at 0 with mean absolute error 1.
        s.means = [0.0; 3];
        s.abs_errors = [1.0; 3];
        assert!((s.raw(Z_HALF_SCALE) - 0.5).abs() < 1e-12);
    }
}
