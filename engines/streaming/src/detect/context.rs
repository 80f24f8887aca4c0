//! Context novelty: 1 when the recent shape of the series has never been seen before.
//!
//! Values are quantised into [`LEVELS`] levels over the running minimum and maximum (causal:
//! no file-wide range is known in advance), and the last [`CONTEXT_ROWS`] levels form a
//! context. Contexts are remembered in a fixed bitmap of [`MEMORY_BITS`] bits addressed by a
//! hash (collisions can only hide a novelty, never invent one). Like CAD OSE, a stream whose
//! shape changes (a flat stretch, a new level, a new rhythm) produces new contexts.

/// Quantisation levels over the running range.
pub const LEVELS: u64 = 16;
/// Rows in one context.
pub const CONTEXT_ROWS: usize = 6;
/// Bits in the memory of seen contexts (128 KiB).
pub const MEMORY_BITS: usize = 1 << 20;

/// The context novelty scorer. Constant size state.
///
/// ```
/// use agentwire_streaming::detect::context::ContextNovelty;
/// let mut c = ContextNovelty::new();
/// for i in 0..200 { c.novelty((i % 10) as f64); }
/// assert_eq!(c.novelty(0.0), 0.0); // the saw-tooth repeats itself
/// ```
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct ContextNovelty {
    seen: Box<[u64]>,
    recent_levels: [u8; CONTEXT_ROWS],
    rows_seen: u64,
    min: f64,
    max: f64,
}

impl ContextNovelty {
    /// An empty memory.
    ///
    /// ```
    /// let _ = agentwire_streaming::detect::context::ContextNovelty::new();
    /// ```
    pub fn new() -> Self {
        Self {
            seen: vec![0u64; MEMORY_BITS / 64].into_boxed_slice(),
            recent_levels: [0; CONTEXT_ROWS],
            rows_seen: 0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
        }
    }

    /// Whether state read back from a checkpoint has this memory's shape.
    pub(crate) fn shape_ok(&self) -> bool {
        self.seen.len() == MEMORY_BITS / 64
    }

    /// 1.0 if the context ending at `value` is new, else 0.0 (0.0 until a context is full).
    ///
    /// ```
    /// let mut c = agentwire_streaming::detect::context::ContextNovelty::new();
    /// assert_eq!(c.novelty(1.0), 0.0);
    /// ```
    pub fn novelty(&mut self, value: f64) -> f64 {
        self.min = self.min.min(value);
        self.max = self.max.max(value);
        let span = self.max - self.min;
        let level = if span > 0.0 && span.is_finite() {
            (((value - self.min) / span) * LEVELS as f64)
                .floor()
                .clamp(0.0, (LEVELS - 1) as f64) as u8
        } else {
            0
        };
        self.recent_levels.rotate_left(1);
        self.recent_levels[CONTEXT_ROWS - 1] = level;
        self.rows_seen += 1;
        if self.rows_seen < CONTEXT_ROWS as u64 {
            return 0.0;
        }
        let bit = self.hash() as usize % MEMORY_BITS;
        let (word, mask) = (bit / 64, 1u64 << (bit % 64));
        let novel = self.seen[word] & mask == 0;
        self.seen[word] |= mask;
        if novel {
            1.0
        } else {
            0.0
        }
    }

    fn hash(&self) -> u64 {
        // FNV-1a over the levels, then a final avalanche (splitmix64) for the bit index.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for &l in &self.recent_levels {
            h ^= u64::from(l);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        h ^= h >> 30;
        h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
        h ^= h >> 27;
        h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
        h ^ (h >> 31)
    }
}

impl Default for ContextNovelty {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_shape_is_novel_once() {
        let mut c = ContextNovelty::new();
        for i in 0..500 {
            c.novelty(((i % 20) as f64 - 10.0).abs());
        }
        // A flat stretch at the middle level is a context never seen.
        assert!((0..CONTEXT_ROWS).map(|_| c.novelty(5.0)).sum::<f64>() >= 1.0);
        // ... and once seen, it is known.
        assert_eq!(c.novelty(5.0), 0.0);
    }
}
