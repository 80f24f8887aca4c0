//! NAB's windowed Gaussian detector, the baseline.
//!
//! As in NAB's `windowedGaussian_detector.py` (current version): the window holds up to
//! [`WINDOW_ROWS`] earlier values; while it fills, mean and population standard deviation are
//! updated after every point; once full, incoming values are buffered and the window slides by
//! [`STEP_ROWS`] at a time, refitting after each slide. A zero standard deviation is replaced by
//! 1e-6. The score of a point is `1 - Q(|x - mean| / std)` with the fit from earlier points, and
//! 0 for the very first point.

use super::normal::upper_tail;
use super::Detector;

/// Values in the fitted window (NAB's `windowSize`).
pub const WINDOW_ROWS: usize = 6400;
/// Values buffered before the window slides (NAB's `stepSize`).
pub const STEP_ROWS: usize = 100;
/// Standard deviation used when the window is constant (NAB's value).
const STD_FLOOR: f64 = 0.000_001;

/// The windowed Gaussian baseline. State is two fixed arrays; nothing grows with the stream.
///
/// ```
/// use agentwire_streaming::detect::{Detector, WindowedGaussian};
/// let mut d = WindowedGaussian::new();
/// assert_eq!(d.score(0, 1.0), 0.0); // nothing seen yet
/// for i in 1..100 { d.score(i, (i % 2) as f64); }
/// assert!(d.score(100, 50.0) > 0.999); // far outside the fitted Gaussian
/// ```
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct WindowedGaussian {
    /// Ring of the fitted window; `oldest_index` is its oldest value once full.
    window: Box<[f64]>,
    window_count: usize,
    oldest_index: usize,
    /// Values received since the last slide (written over the oldest ring slots).
    pending_count: usize,
    mean: f64,
    std: f64,
    /// Welford's sum of squared deviations while the window fills.
    m2: f64,
}

impl WindowedGaussian {
    /// A detector with NAB's window (6400 rows) and step (100 rows).
    ///
    /// ```
    /// let d = agentwire_streaming::detect::WindowedGaussian::new();
    /// assert_eq!(agentwire_streaming::detect::Detector::name(&d), "windowed-gaussian");
    /// ```
    pub fn new() -> Self {
        Self {
            window: vec![0.0; WINDOW_ROWS].into_boxed_slice(),
            window_count: 0,
            oldest_index: 0,
            pending_count: 0,
            mean: 0.0,
            std: 1.0,
            m2: 0.0,
        }
    }

    /// Whether state read back from a checkpoint has this detector's shape (every index
    /// within its ring), so scoring cannot index out of bounds.
    pub(crate) fn shape_ok(&self) -> bool {
        self.window.len() == WINDOW_ROWS
            && self.window_count <= WINDOW_ROWS
            && self.oldest_index < WINDOW_ROWS
            && self.pending_count < STEP_ROWS
    }

    fn refit_full_window(&mut self) {
        // Two passes over the ring: exact enough that a long stream does not drift.
        let n = self.window.len() as f64;
        let mean = self.window.iter().sum::<f64>() / n;
        let var = self
            .window
            .iter()
            .map(|v| (v - mean) * (v - mean))
            .sum::<f64>()
            / n;
        self.mean = mean;
        self.std = floor_std(var.sqrt());
    }
}

impl Default for WindowedGaussian {
    fn default() -> Self {
        Self::new()
    }
}

fn floor_std(std: f64) -> f64 {
    if std == 0.0 {
        STD_FLOOR
    } else {
        std
    }
}

impl Detector for WindowedGaussian {
    fn name(&self) -> &'static str {
        "windowed-gaussian"
    }

    fn save(&self) -> Vec<u8> {
        super::save_plain(self)
    }

    fn score(&mut self, _timestamp_ns: i64, value: f64) -> f64 {
        let score = if self.window_count == 0 {
            0.0
        } else {
            1.0 - upper_tail((value - self.mean).abs() / self.std)
        };
        if self.window_count < WINDOW_ROWS {
            // Welford: the mean of a constant series stays exactly that constant, so its std is
            // exactly 0 and gets NAB's floor, as numpy.std would give.
            self.window[self.window_count] = value;
            self.window_count += 1;
            let delta = value - self.mean;
            if self.window_count == 1 {
                self.mean = value;
                self.m2 = 0.0;
            } else {
                self.mean += delta / self.window_count as f64;
                self.m2 += delta * (value - self.mean);
            }
            self.std = floor_std((self.m2 / self.window_count as f64).max(0.0).sqrt());
        } else {
            // The fit is cached, so a pending value may overwrite the slot it will replace.
            let slot = (self.oldest_index + self.pending_count) % WINDOW_ROWS;
            self.window[slot] = value;
            self.pending_count += 1;
            if self.pending_count == STEP_ROWS {
                self.oldest_index = (self.oldest_index + STEP_ROWS) % WINDOW_ROWS;
                self.pending_count = 0;
                self.refit_full_window();
            }
        }
        score.clamp(0.0, 1.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_a_direct_refit_after_sliding() {
        let mut d = WindowedGaussian::new();
        let values: Vec<f64> = (0..(WINDOW_ROWS + 3 * STEP_ROWS + 7))
            .map(|i| ((i * 37) % 101) as f64)
            .collect();
        for (i, v) in values.iter().enumerate() {
            d.score(i as i64, *v);
        }
        // After 3 slides the window is values[3*STEP .. 3*STEP + WINDOW] (7 pending ignored).
        let w = &values[3 * STEP_ROWS..3 * STEP_ROWS + WINDOW_ROWS];
        let mean = w.iter().sum::<f64>() / w.len() as f64;
        let std = (w.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / w.len() as f64).sqrt();
        assert!((d.mean - mean).abs() < 1e-9);
        assert!((d.std - std).abs() < 1e-9);
    }

    #[test]
    fn constant_series_uses_the_std_floor() {
        let mut d = WindowedGaussian::new();
        for i in 0..10 {
            d.score(i, 3.0);
        }
        assert_eq!(d.std, STD_FLOOR);
        assert!((d.score(10, 3.0) - 0.5).abs() < 1e-7); // 1 - Q(0)
    }
}
