//! How a router core's time per frame follows its load. A core's cost per frame falls as its
//! load rises: at light load each frame gets a duty cycle of its own (a poll of every lane,
//! cache misses, and a wake-up of its consumer, which parked since the last one), under load
//! the cycles carry batches and consumers stay awake. Measured on a 2-vCPU guest (timed duty
//! cycles, one consumer): about 9 µs a frame at 20,000 frames/s, 2.2 µs at 200,000, 0.62 µs
//! at 1,000,000, against tens of ns when the core is saturated.
//!
//! A [`ServiceCurve`] holds one measured point (per-core rate λ₀, time per frame s₀, so the
//! core is busy B₀ = λ₀·s₀ of its time) and the cost when saturated (s_sat, from the
//! router's drain benchmark). The core's busy share follows a power law between the two:
//! B(λ) = B₀·(λ/λ₀)^β, with β chosen so that B reaches 1 at λ_max = 1/s_sat; the time per
//! frame is B(λ)/λ. Below λ₀ the measured time is kept (it is already a frame's own cycle).
//!
//! ```
//! use agentwire_twin::whatif::ServiceCurve;
//! let c = ServiceCurve { measured_per_s: 20_000.0, measured_ns: 9_000.0, saturated_ns: 25.0 };
//! assert_eq!(c.service_ns_at(20_000.0), 9_000.0);
//! assert_eq!(c.service_ns_at(5_000.0), 9_000.0);
//! // Saturated at 1 / 25 ns = 40M frames/s.
//! assert!((c.service_ns_at(40e6) - 25.0).abs() < 1e-6);
//! let at_200k = c.service_ns_at(200_000.0);
//! assert!(at_200k > 25.0 && at_200k < 9_000.0);
//! ```

use serde::{Deserialize, Serialize};

/// A router core's time per frame as a function of its load (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ServiceCurve {
    /// The per-core rate the time was measured at, frames a second.
    pub measured_per_s: f64,
    /// The time per frame measured there, ns.
    pub measured_ns: f64,
    /// The time per frame of a saturated core, ns.
    pub saturated_ns: f64,
}

impl ServiceCurve {
    /// Whether the curve is usable: finite positive times, a measured point where the core
    /// was busy less than all of its time, and a saturated cost below the measured one.
    ///
    /// ```
    /// use agentwire_twin::whatif::ServiceCurve;
    /// let c = ServiceCurve { measured_per_s: 20_000.0, measured_ns: 9_000.0, saturated_ns: 25.0 };
    /// assert!(c.is_valid());
    /// assert!(!ServiceCurve { measured_ns: 60_000.0, ..c }.is_valid(), "busy 120%");
    /// ```
    pub fn is_valid(&self) -> bool {
        let positive = |v: f64| v.is_finite() && v > 0.0;
        positive(self.measured_per_s)
            && positive(self.measured_ns)
            && positive(self.saturated_ns)
            && self.saturated_ns < self.measured_ns
            && self.busy_measured() < 1.0
    }

    /// The measured point's busy share, B₀ = λ₀·s₀.
    fn busy_measured(&self) -> f64 {
        self.measured_per_s * self.measured_ns / 1e9
    }

    /// The exponent β of the busy share's power law.
    fn exponent(&self) -> f64 {
        let rate_max = 1e9 / self.saturated_ns;
        (1.0 / self.busy_measured()).ln() / (rate_max / self.measured_per_s).ln()
    }

    /// The time per frame, ns, of a core that routes `per_s` frames a second: the measured
    /// time at or below the measured rate, the saturated time at or above 1 / that, the
    /// power law between (an invalid curve gives the measured time).
    ///
    /// ```
    /// use agentwire_twin::whatif::ServiceCurve;
    /// let c = ServiceCurve { measured_per_s: 1e5, measured_ns: 1_000.0, saturated_ns: 10.0 };
    /// // B0 = 0.1, rate_max = 1e8: beta = ln 10 / ln 1000 = 1/3; at 1e6, B = 0.1 * 10^(1/3).
    /// let expected = 0.1 * 10f64.powf(1.0 / 3.0) / 1e6 * 1e9;
    /// assert!((c.service_ns_at(1e6) - expected).abs() < 1e-6);
    /// ```
    pub fn service_ns_at(&self, per_s: f64) -> f64 {
        if !self.is_valid() || per_s <= self.measured_per_s {
            return self.measured_ns;
        }
        if per_s >= 1e9 / self.saturated_ns {
            return self.saturated_ns;
        }
        let busy = self.busy_measured() * (per_s / self.measured_per_s).powf(self.exponent());
        (busy * 1e9 / per_s).clamp(self.saturated_ns, self.measured_ns)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busy_share_rises_and_time_per_frame_falls_with_the_rate() {
        let c = ServiceCurve {
            measured_per_s: 20_000.0,
            measured_ns: 9_000.0,
            saturated_ns: 25.0,
        };
        let mut last = (0.0, f64::MAX);
        for per_s in [20_000.0, 40_000.0, 200_000.0, 1e6, 1e7, 3.9e7] {
            let ns = c.service_ns_at(per_s);
            let busy = per_s * ns / 1e9;
            assert!(
                busy > last.0 - 1e-12 && ns <= last.1,
                "{per_s}: {busy} {ns}"
            );
            assert!(busy <= 1.0);
            last = (busy, ns);
        }
        // Continuous at both ends.
        assert!((c.service_ns_at(20_000.000_1) - 9_000.0).abs() < 1e-3);
        assert!((c.service_ns_at(3.999_999e7) - 25.0).abs() < 1e-3);
    }

    #[test]
    fn an_unusable_curve_keeps_the_measured_time() {
        for bad in [
            ServiceCurve {
                measured_per_s: 0.0,
                measured_ns: 9_000.0,
                saturated_ns: 25.0,
            },
            ServiceCurve {
                measured_per_s: 20_000.0,
                measured_ns: 20.0,
                saturated_ns: 25.0,
            },
            ServiceCurve {
                measured_per_s: 20_000.0,
                measured_ns: 9_000.0,
                saturated_ns: f64::NAN,
            },
        ] {
            assert!(!bad.is_valid());
            assert_eq!(bad.service_ns_at(1e6), bad.measured_ns);
        }
    }
}
