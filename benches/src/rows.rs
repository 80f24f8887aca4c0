//! One printed row of the network benches (remote, nats): a flow's rate as a ratio to the
//! baseline measured in the same run, and its round-trip percentiles.
//!
//! ```
//! let row = agentwire_benches::rows::RateRow { name: "x", msgs_per_s: 50.0, p50_us: 1.0, p99_us: 2.0 };
//! assert_eq!(row.line(100.0, "bare TCP").contains("0.500 of bare TCP"), true);
//! ```

/// A flow's figures.
///
/// ```
/// let row = agentwire_benches::rows::RateRow { name: "rtt only", msgs_per_s: 0.0, p50_us: 1.0, p99_us: 2.0 };
/// assert!(row.line(1.0, "bare TCP").contains(" - msg/s"));
/// ```
#[derive(Debug, Clone, Copy)]
pub struct RateRow {
    /// What flows (the row's label).
    pub name: &'static str,
    /// Messages per second one way; 0 for a row with round trips only.
    pub msgs_per_s: f64,
    /// Round-trip median, microseconds.
    pub p50_us: f64,
    /// Round-trip 99th percentile, microseconds.
    pub p99_us: f64,
}

impl RateRow {
    /// The row as printed, its rate as a fraction of `baseline_msgs_per_s` (named
    /// `baseline_name`).
    ///
    /// ```
    /// let row = agentwire_benches::rows::RateRow { name: "a", msgs_per_s: 2.0, p50_us: 1.0, p99_us: 2.0 };
    /// assert!(row.line(4.0, "plain NATS").contains("(0.500 of plain NATS)"));
    /// ```
    pub fn line(&self, baseline_msgs_per_s: f64, baseline_name: &str) -> String {
        let rate = if self.msgs_per_s == 0.0 {
            format!("{:>12} msg/s  {:>21}", "-", "")
        } else {
            format!(
                "{:>12.0} msg/s  ({:>5.3} of {baseline_name})",
                self.msgs_per_s,
                self.msgs_per_s / baseline_msgs_per_s
            )
        };
        format!(
            "{:<28} {rate}   round trip p50 {:>7.1} us  p99 {:>7.1} us",
            self.name, self.p50_us, self.p99_us
        )
    }
}
