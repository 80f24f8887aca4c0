//! CAD OSE, the Contextual Anomaly Detector (open source edition), as NAB runs it.
//!
//! A port of NAB's `context_ose` detector (Mikhail Smirnov, `cad_ose.py`): each value is
//! quantised to one of `2^3` bins over a value range (`numNormValueBits` = 3), the bin's bits
//! become three sensor facts, and a [`memory::ContextMemory`] learns which contexts follow
//! which. A row scores 0 when its sensor facts were all predicted; otherwise
//! `(1 - active/selected + new/proposed) / 2`. A score is reported only if no score of the
//! last `rest_rows` rows reached 0.75 (`baseThreshold`); the first `rest_rows` rows report 0.
//!
//! Published parameters: `baseThreshold` 0.75, `maxLeftSemiContextsLenght` 7,
//! `maxActiveNeuronsNum` 15, `numNormValueBits` 3, `restPeriod` = NAB's probationary period
//! / 5 (150 rows for a file of 5000 rows or more).
//!
//! **The value range.** NAB hands the detector each file's minimum and maximum before the
//! first row (`inputMin`/`inputMax`, computed over the whole file): a look at the future a
//! stream does not have. [`ValueRange::Running`] (the registered `cad-ose`) uses the minimum
//! and maximum of the finite values seen so far, this row included, so every value falls in
//! the range and the range converges to the file's by its end. [`ValueRange::Fixed`] is
//! NAB's behaviour, for calibration only (`CadOse::with_range`).
//!
//! **The rest period.** NAB sets it from the file length; a stream has none, so `cad-ose`
//! uses 150 rows, NAB's value for every file of 5000 rows or more.
//!
//! **Bounded state.** The original's context tables grow without limit; here they hold at
//! most [`CONTEXTS_MAX`] contexts. When a row needs more, the memory is cleared before the
//! next row and the rest period starts again (a relearning, like a fresh detector; no NAB
//! file comes near the bound, see the tests). NaN rows are no observation: they score 0 and
//! change nothing. Infinite values fall in the first or last bin and do not move the range.

pub mod memory;

use super::Detector;
use memory::ContextMemory;

/// Score at or above which later rows are silenced for the rest period (`baseThreshold`).
pub const BASE_THRESHOLD: f64 = 0.75;
/// Bits of the quantised value (`numNormValueBits`).
pub const NORM_VALUE_BITS: u32 = 3;
/// Largest bin (`maxBinValue` = 2^bits - 1).
const MAX_BIN: f64 = ((1u32 << NORM_VALUE_BITS) - 1) as f64;
/// Rest period of the streaming detector: NAB's probationary cap (750 rows) / 5.
pub const REST_ROWS_STREAMING: usize = 150;
/// Contexts the memory holds before it relearns. On the 18 NAB files here the largest count is
/// 63,892 (`art_noisy`, white noise: about 16 new contexts a row); real files stay under
/// 12,500. The cost of a row grows with the stored contexts (about 2 ms a row near 64k).
pub const CONTEXTS_MAX: usize = 1 << 17;

/// Where the quantisation range comes from.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum ValueRange {
    /// Minimum and maximum of the finite values seen so far (streaming).
    Running,
    /// A range known in advance (NAB hands over the file's own minimum and maximum).
    Fixed {
        /// The smallest value expected.
        min: f64,
        /// The largest value expected.
        max: f64,
    },
}

/// The CAD OSE detector. See the module documentation.
///
/// ```
/// use agentwire_streaming::detect::{cad_ose::CadOse, Detector};
/// let mut d = CadOse::new();
/// let mut late_max = 0.0f64;
/// for i in 0..2000 {
///     let s = d.score(i, (i % 10) as f64);
///     if i > 1000 { late_max = late_max.max(s); }
/// }
/// assert_eq!(late_max, 0.0); // a learnt saw-tooth is fully predicted
/// let spike = (0..5).map(|k| d.score(2000 + k, if k == 0 { 30.0 } else { k as f64 })).fold(0.0, f64::max);
/// assert!(spike > 0.5);
/// ```
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct CadOse {
    memory: ContextMemory,
    range: ValueRange,
    running_min: f64,
    running_max: f64,
    rest_rows: u64,
    /// Rows scored so far (NaN rows excluded).
    row: u64,
    /// First row whose score may be reported (the rest period after a score ≥ 0.75).
    first_reported_row: u64,
}

impl CadOse {
    /// The streaming detector registered as `cad-ose`: running range, 150-row rest period.
    ///
    /// ```
    /// let d = agentwire_streaming::detect::cad_ose::CadOse::new();
    /// assert_eq!(agentwire_streaming::detect::Detector::name(&d), "cad-ose");
    /// ```
    pub fn new() -> Self {
        Self::build(ValueRange::Running, REST_ROWS_STREAMING, CONTEXTS_MAX)
    }

    /// NAB's setting: the range `[min, max]` known before the first row and the rest period
    /// `rest_rows` (NAB: `floor(probationary_rows / 5)`). For calibration against NAB.
    ///
    /// # Panics
    /// If `rest_rows` is 0 or `min > max` or either is not finite.
    ///
    /// ```
    /// use agentwire_streaming::detect::{cad_ose::CadOse, Detector};
    /// let mut d = CadOse::with_range(0.0, 10.0, 120);
    /// assert_eq!(d.score(0, 5.0), 0.0); // inside the first rest period
    /// ```
    pub fn with_range(min: f64, max: f64, rest_rows: usize) -> Self {
        assert!(
            min.is_finite() && max.is_finite() && min <= max,
            "bad range"
        );
        Self::build(ValueRange::Fixed { min, max }, rest_rows, CONTEXTS_MAX)
    }

    /// A streaming detector whose memory holds `contexts_max` contexts.
    ///
    /// # Panics
    /// If `contexts_max` is 0.
    ///
    /// ```
    /// let d = agentwire_streaming::detect::cad_ose::CadOse::with_contexts_max(1024);
    /// assert_eq!(d.contexts(), 0);
    /// ```
    pub fn with_contexts_max(contexts_max: usize) -> Self {
        Self::build(ValueRange::Running, REST_ROWS_STREAMING, contexts_max)
    }

    fn build(range: ValueRange, rest_rows: usize, contexts_max: usize) -> Self {
        assert!(rest_rows > 0, "the rest period needs at least one row");
        Self {
            memory: ContextMemory::new(contexts_max),
            range,
            running_min: f64::INFINITY,
            running_max: f64::NEG_INFINITY,
            rest_rows: rest_rows as u64,
            row: 0,
            first_reported_row: rest_rows as u64,
        }
    }

    /// Contexts in memory now.
    ///
    /// ```
    /// let d = agentwire_streaming::detect::cad_ose::CadOse::new();
    /// assert_eq!(d.contexts(), 0);
    /// ```
    pub fn contexts(&self) -> usize {
        self.memory.contexts()
    }

    /// The bin of `value`: `trunc((value - min) / (range / 7))` as the original computes it,
    /// kept within `[0, 7]`.
    fn bin(&mut self, value: f64) -> u8 {
        let (min, max) = match self.range {
            ValueRange::Fixed { min, max } => (min, max),
            ValueRange::Running => {
                if value.is_finite() {
                    self.running_min = self.running_min.min(value);
                    self.running_max = self.running_max.max(value);
                }
                (self.running_min, self.running_max)
            }
        };
        if min > max {
            return 0; // no finite value seen yet
        }
        let mut full_range = max - min;
        if full_range == 0.0 {
            full_range = MAX_BIN;
        }
        let step = full_range / MAX_BIN;
        // `as` truncates toward zero like Python's int(), saturates, and maps NaN to 0.
        ((value - min) / step).clamp(0.0, MAX_BIN) as u8
    }
}

impl CadOse {
    /// Whether state read back from a checkpoint can score (the memory checks its own
    /// tables as it is read).
    pub(crate) fn shape_ok(&self) -> bool {
        self.rest_rows > 0
    }
}

impl Default for CadOse {
    fn default() -> Self {
        Self::new()
    }
}

/// Sensor facts of a bin: for bit position `p`, fact `2p + bit` (the original's
/// `65536 + p * 2 + bit`), as a mask.
fn sensor_mask(bin: u8) -> u8 {
    (0..NORM_VALUE_BITS).fold(0, |mask, p| mask | 1 << (2 * p + u32::from((bin >> p) & 1)))
}

impl Detector for CadOse {
    fn name(&self) -> &'static str {
        "cad-ose"
    }

    fn save(&self) -> Vec<u8> {
        super::save_plain(self)
    }

    fn score(&mut self, _timestamp_ns: i64, value: f64) -> f64 {
        if value.is_nan() {
            return 0.0;
        }
        if self.memory.is_saturated() {
            self.memory.clear();
            self.first_reported_row = self.row + self.rest_rows;
        }
        let facts = sensor_mask(self.bin(value));
        let unpredicted = facts & !self.memory.predicted_mask() != 0;
        let shares = self.memory.step(facts);
        let current = if unpredicted {
            (1.0 - shares.selected_active + shares.proposed_new) / 2.0
        } else {
            0.0
        };
        let reported = if self.row >= self.first_reported_row {
            current
        } else {
            0.0
        };
        if current >= BASE_THRESHOLD {
            self.first_reported_row = self.row + self.rest_rows + 1;
        }
        self.row += 1;
        reported.clamp(0.0, 1.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sensor_facts_are_one_per_bit_position() {
        assert_eq!(sensor_mask(0), 0b01_0101);
        assert_eq!(sensor_mask(7), 0b10_1010);
        assert_eq!(sensor_mask(5), 0b10_0110);
    }

    #[test]
    fn bins_follow_the_original_arithmetic() {
        let mut d = CadOse::with_range(0.0, 7.0, 1);
        assert_eq!(d.bin(0.0), 0);
        assert_eq!(d.bin(6.99), 6);
        assert_eq!(d.bin(7.0), 7);
        let mut flat = CadOse::with_range(3.0, 3.0, 1);
        assert_eq!(flat.bin(3.0), 0);
        let mut running = CadOse::new();
        assert_eq!(running.bin(5.0), 0);
        assert_eq!(running.bin(12.0), 7);
        assert_eq!(running.bin(f64::INFINITY), 7);
        assert_eq!(running.bin(f64::NEG_INFINITY), 0);
    }

    #[test]
    fn matches_the_original_on_a_hand_made_sequence() {
        // A repeated 8-value cycle, a flat stretch at 4, a double 7. Expected: NAB's
        // `cad_ose.py` under CPython 2.7.18 with minValue 0, maxValue 7, restPeriod 5. It
        // shows the rest period: rows 25..30 and 44..49 follow scores above 0.75.
        let values = [
            0, 7, 0, 3, 5, 1, 6, 2, 0, 7, 0, 3, 5, 1, 6, 2, 0, 7, 0, 3, 5, 1, 6, 2, 4, 4, 4, 0, 7,
            0, 3, 5, 1, 6, 2, 0, 7, 0, 3, 5, 1, 6, 2, 7, 7, 0, 7, 0, 3, 5,
        ];
        let mut expected = [0.0; 50];
        for (row, score) in [
            (14, 0.449_494_949_494_949_5),
            (15, 0.293_650_793_650_793_66),
            (17, 0.442_307_692_307_692_3),
            (19, 0.166_666_666_666_666_66),
            (24, 0.866_666_666_666_666_7),
            (35, 0.421_875),
            (43, 0.923_076_923_076_923_1),
        ] {
            expected[row] = score;
        }
        let mut d = CadOse::with_range(0.0, 7.0, 5);
        let got: Vec<f64> = values
            .iter()
            .enumerate()
            .map(|(i, &v)| d.score(i as i64, f64::from(v)))
            .collect();
        assert_eq!(got, expected);
    }
}
