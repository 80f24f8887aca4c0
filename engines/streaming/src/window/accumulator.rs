//! The per-window state: count, sum, min, max, and a quantile sketch when quantiles are asked.

use sketches_ddsketch::{Config, DDSketch};

/// The relative accuracy of the quantile sketch: a reported quantile is within 1 % of a
/// value of the window whose rank is the asked one (DDSketch's guarantee).
pub const QUANTILE_RELATIVE_ACCURACY: f64 = 0.01;

/// The most buckets one window's sketch grows to (DDSketch's bound; with 1 % accuracy,
/// 2,048 buckets span values over about 18 orders of magnitude).
const SKETCH_BUCKETS_MAX: u32 = 2_048;

/// Values nearer zero than this count as zero in the sketch.
const SKETCH_VALUE_MIN: f64 = 1e-9;

/// What one window has seen so far.
#[derive(Clone, serde::Serialize, serde::Deserialize)]
pub(crate) struct Accumulator {
    pub(crate) count: u64,
    pub(crate) sum: f64,
    pub(crate) min: f64,
    pub(crate) max: f64,
    sketch: Option<DDSketch>,
}

impl Accumulator {
    /// An empty window; `with_quantiles` keeps a sketch.
    pub(crate) fn new(with_quantiles: bool) -> Self {
        Self {
            count: 0,
            sum: 0.0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
            sketch: with_quantiles.then(|| {
                DDSketch::new(Config::new(
                    QUANTILE_RELATIVE_ACCURACY,
                    SKETCH_BUCKETS_MAX,
                    SKETCH_VALUE_MIN,
                ))
            }),
        }
    }

    pub(crate) fn add(&mut self, value: f64) {
        self.count += 1;
        self.sum += value;
        self.min = self.min.min(value);
        self.max = self.max.max(value);
        if let Some(sketch) = &mut self.sketch {
            sketch.add(value);
        }
    }

    /// Takes `other` in (session windows merging).
    pub(crate) fn merge(&mut self, other: &Accumulator) {
        self.count += other.count;
        self.sum += other.sum;
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
        if let (Some(mine), Some(theirs)) = (&mut self.sketch, &other.sketch) {
            // Both sketches come from the same config, the only case merge refuses.
            let _ = mine.merge(theirs);
        }
    }

    pub(crate) fn mean(&self) -> f64 {
        if self.count == 0 {
            f64::NAN
        } else {
            self.sum / self.count as f64
        }
    }

    /// The value at rank `floor(q * (count - 1))`, within [`QUANTILE_RELATIVE_ACCURACY`];
    /// NaN without a sketch or values.
    pub(crate) fn quantile(&self, q: f64) -> f64 {
        self.sketch
            .as_ref()
            .and_then(|s| s.quantile(q).ok().flatten())
            .unwrap_or(f64::NAN)
    }
}
