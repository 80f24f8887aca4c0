//! Alert suppression that needs no threshold: a score passes only if it beats every score of
//! the last `rows` rows; otherwise it is reported as 0.
//!
//! Why this is exact for every threshold `θ` at once: a suppressed row has `s ≤ m`, where `m`
//! is the recent maximum, so if it would have crossed `θ`, the row holding `m` crossed it first,
//! within the last `rows` rows, and NAB counts only the earliest detection of a window while it
//! charges every false positive. Only a strictly rising run can still cross `θ` more than once.

/// Sliding-maximum suppression over a fixed number of rows (a monotone queue in a fixed ring).
///
/// ```
/// use agentwire_streaming::detect::refractory::Refractory;
/// let mut r = Refractory::new(3);
/// assert_eq!(r.pass(0.9), 0.9);
/// assert_eq!(r.pass(0.8), 0.0); // below the recent peak
/// assert_eq!(r.pass(0.95), 0.95); // a new peak
/// ```
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Refractory {
    rows: usize,
    /// Ring of (position, score), scores strictly decreasing from head to tail.
    queue: Box<[(u64, f64)]>,
    head: usize,
    len: usize,
    position: u64,
}

impl Refractory {
    /// Suppression over the last `rows` rows.
    ///
    /// # Panics
    /// If `rows` is 0.
    ///
    /// ```
    /// let _ = agentwire_streaming::detect::refractory::Refractory::new(200);
    /// ```
    pub fn new(rows: usize) -> Self {
        assert!(rows > 0, "a refractory period needs at least one row");
        Self {
            rows,
            queue: vec![(0, 0.0); rows].into_boxed_slice(),
            head: 0,
            len: 0,
            position: 0,
        }
    }

    /// Whether state read back from a checkpoint has the shape of `Refractory::new(rows)`.
    pub(crate) fn shape_ok(&self, rows: usize) -> bool {
        self.rows == rows && self.queue.len() == rows && self.head < rows && self.len <= rows
    }

    /// The score to report for `score`: itself if it exceeds the maximum of the previous
    /// `rows` scores, else 0.
    ///
    /// ```
    /// let mut r = agentwire_streaming::detect::refractory::Refractory::new(1);
    /// r.pass(0.5);
    /// assert_eq!(r.pass(0.4), 0.0);
    /// assert_eq!(r.pass(0.3), 0.0); // 0.4 is the previous row's score
    /// ```
    pub fn pass(&mut self, score: f64) -> f64 {
        let cap = self.queue.len();
        // Drop entries older than the previous `rows` rows.
        while self.len > 0 && self.queue[self.head].0 + (self.rows as u64) < self.position {
            self.head = (self.head + 1) % cap;
            self.len -= 1;
        }
        let recent_max = if self.len > 0 {
            self.queue[self.head].1
        } else {
            f64::NEG_INFINITY
        };
        // Keep the queue strictly decreasing: a later, larger-or-equal score dominates.
        while self.len > 0 && self.queue[(self.head + self.len - 1) % cap].1 <= score {
            self.len -= 1;
        }
        // At most `rows + 1` entries: the previous `rows` rows and this one.
        self.queue[(self.head + self.len) % cap] = (self.position, score);
        self.len += 1;
        self.position += 1;
        if score > recent_max {
            score
        } else {
            0.0
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_a_brute_force_sliding_max() {
        let rows = 7;
        let mut r = Refractory::new(rows);
        let scores: Vec<f64> = (0..500u64)
            .map(|i| ((i * 7919) % 97) as f64 / 97.0)
            .collect();
        for (i, &s) in scores.iter().enumerate() {
            let m = scores[i.saturating_sub(rows)..i]
                .iter()
                .cloned()
                .fold(f64::NEG_INFINITY, f64::max);
            let want = if s > m { s } else { 0.0 };
            assert_eq!(r.pass(s), want, "row {i}");
        }
    }
}
