//! Failure prediction: the probability that a watched signal crosses a threshold within each
//! of the next steps, from a history and a [`Forecaster`].
//!
//! # Method
//!
//! The forecaster gives, per step h, a point `p_h` and a central interval `[lo_h, hi_h]` at
//! level `L` (normal errors assumed). The error's standard deviation at step h is
//! `s_h = (hi_h - lo_h) / (2 z)`, `z` the normal quantile of `0.5 + L / 2`.
//!
//! The marginals `P(y_h past T) = Phi((p_h - T) / s_h)` do not give the probability of a
//! *first* crossing by step h: that depends on how the errors at different steps are
//! correlated. Forecast errors accumulate (each step's error contains the earlier steps'
//! innovations), so the paths are sampled as a random walk scaled to the forecast's
//! marginals: with `u_h` the running maximum of `s_h^2` (a non-decreasing variance),
//! `B_h = B_{h-1} + sqrt(u_h - u_{h-1}) N_h` and `e_h = B_h s_h / sqrt(u_h)`, so `e_h` has
//! exactly the standard deviation `s_h` and the correlation of a random walk,
//! `corr(e_j, e_h) = sqrt(u_j / u_h)` for `j <= h`. A path is `p_h + e_h`; the cumulative
//! probability at step h is the share of paths that were past the threshold at some step
//! `<= h`, which is non-decreasing by construction. The normal draws come from a seeded
//! generator (SplitMix64 and Box-Muller), so a report is deterministic for a given seed.
//!
//! Why not the marginals alone: their running maximum is a lower bound on the first-crossing
//! probability (being past T at step k implies having crossed by k), exact when the errors
//! are perfectly correlated, and too low when they are not. It is reported beside the
//! sampled figure ([`RiskReport::marginal_max`]) as a check; with independent errors the
//! first-crossing probability would be higher than the random walk's, so the random walk sits
//! between the two extremes and matches how the forecasters' intervals grow.
//!
//! A signal whose last observed value is already past the threshold has probability 1 at
//! every step ([`RiskReport::already_past`]).

use crate::forecast::{normal_quantile, ForecastError, Forecaster};

/// The most steps an assessment may look ahead.
pub const HORIZON_MAX: usize = 100_000;
/// The most sample paths an assessment may draw.
pub const PATHS_MAX: usize = 1_000_000;

/// Which way the signal fails.
///
/// ```
/// use agentwire_twin::risk::Direction;
/// assert!(Direction::Above.is_past(5.0, 4.0));
/// assert!(Direction::Below.is_past(3.0, 4.0));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// Failure when the value reaches the threshold or goes above it.
    Above,
    /// Failure when the value reaches the threshold or goes below it.
    Below,
}

impl Direction {
    /// Whether `value` is past `threshold` (reaching it counts).
    ///
    /// ```
    /// use agentwire_twin::risk::Direction;
    /// assert!(Direction::Above.is_past(4.0, 4.0));
    /// assert!(!Direction::Above.is_past(3.9, 4.0));
    /// ```
    pub fn is_past(self, value: f64, threshold: f64) -> bool {
        match self {
            Direction::Above => value >= threshold,
            Direction::Below => value <= threshold,
        }
    }

    /// `"above"` or `"below"`.
    ///
    /// ```
    /// use agentwire_twin::risk::Direction;
    /// assert_eq!(Direction::Below.name(), "below");
    /// ```
    pub fn name(self) -> &'static str {
        match self {
            Direction::Above => "above",
            Direction::Below => "below",
        }
    }
}

/// Why an assessment could not be made.
///
/// ```
/// use agentwire_twin::forecast::{Forecaster, Method};
/// use agentwire_twin::risk::{RiskError, Watch};
/// let e = Watch::above(f64::NAN).assess(&Forecaster::new(Method::Naive), &[1.0]).unwrap_err();
/// assert!(matches!(e, RiskError::BadThreshold(_)));
/// ```
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum RiskError {
    /// The threshold is NaN or infinite.
    #[error("the threshold must be a finite number, not {0}")]
    BadThreshold(f64),
    /// A horizon of 0 or above [`HORIZON_MAX`].
    #[error("the horizon must be between 1 and {HORIZON_MAX} steps, not {0}")]
    BadHorizon(usize),
    /// A path count of 0 or above [`PATHS_MAX`].
    #[error("the number of sample paths must be between 1 and {PATHS_MAX}, not {0}")]
    BadPaths(usize),
    /// The history is empty.
    #[error("the history is empty")]
    EmptyHistory,
    /// The forecast failed.
    #[error(transparent)]
    Forecast(#[from] ForecastError),
}

/// A watched signal: a threshold, a direction, how far ahead to look and how many sample
/// paths to draw.
///
/// ```
/// use agentwire_twin::forecast::{Forecaster, Method};
/// use agentwire_twin::risk::Watch;
/// let history: Vec<f64> = (0..100).map(|t| t as f64).collect();
/// let r = Watch::above(120.0).horizon(48).assess(&Forecaster::new(Method::Holt), &history).unwrap();
/// assert!(r.probability(48) > 0.9);
/// assert!(r.probability(5) < 0.1);
/// ```
#[derive(Clone, Debug)]
pub struct Watch {
    threshold: f64,
    direction: Direction,
    horizon: usize,
    paths: usize,
    seed: u64,
}

impl Watch {
    /// Watch for the value reaching `threshold` or going above it (48 steps, 4000 paths).
    ///
    /// ```
    /// use agentwire_twin::risk::{Direction, Watch};
    /// assert_eq!(Watch::above(0.9).direction(), Direction::Above);
    /// ```
    pub fn above(threshold: f64) -> Self {
        Self::new(threshold, Direction::Above)
    }

    /// Watch for the value reaching `threshold` or going below it (48 steps, 4000 paths).
    ///
    /// ```
    /// use agentwire_twin::risk::{Direction, Watch};
    /// assert_eq!(Watch::below(0.1).direction(), Direction::Below);
    /// ```
    pub fn below(threshold: f64) -> Self {
        Self::new(threshold, Direction::Below)
    }

    /// Watch for `threshold` in `direction`.
    ///
    /// ```
    /// use agentwire_twin::risk::{Direction, Watch};
    /// assert_eq!(Watch::new(3.0, Direction::Below).threshold(), 3.0);
    /// ```
    pub fn new(threshold: f64, direction: Direction) -> Self {
        Self {
            threshold,
            direction,
            horizon: 48,
            paths: 4000,
            seed: 0x5eed_0f7a_1c00,
        }
    }

    /// The threshold.
    ///
    /// ```
    /// use agentwire_twin::risk::Watch;
    /// assert_eq!(Watch::above(2.5).threshold(), 2.5);
    /// ```
    pub fn threshold(&self) -> f64 {
        self.threshold
    }

    /// The direction.
    ///
    /// ```
    /// use agentwire_twin::risk::{Direction, Watch};
    /// assert_eq!(Watch::above(2.5).direction(), Direction::Above);
    /// ```
    pub fn direction(&self) -> Direction {
        self.direction
    }

    /// Steps to look ahead, 1 to [`HORIZON_MAX`]; 48 by default.
    ///
    /// ```
    /// use agentwire_twin::forecast::{Forecaster, Method};
    /// use agentwire_twin::risk::Watch;
    /// let r = Watch::above(9.0).horizon(6).assess(&Forecaster::new(Method::Naive), &[1.0, 2.0]).unwrap();
    /// assert_eq!(r.cumulative.len(), 6);
    /// ```
    pub fn horizon(mut self, steps: usize) -> Self {
        self.horizon = steps;
        self
    }

    /// Sample paths to draw, 1 to [`PATHS_MAX`]; 4000 by default (the standard error of a
    /// probability is at most `0.5 / sqrt(paths)`, 0.008 for 4000).
    ///
    /// ```
    /// use agentwire_twin::forecast::{Forecaster, Method};
    /// use agentwire_twin::risk::Watch;
    /// let r = Watch::above(9.0).paths(100).assess(&Forecaster::new(Method::Naive), &[1.0, 2.0]).unwrap();
    /// assert_eq!(r.paths, 100);
    /// ```
    pub fn paths(mut self, paths: usize) -> Self {
        self.paths = paths;
        self
    }

    /// The random generator's seed (the same seed gives the same report).
    ///
    /// ```
    /// use agentwire_twin::forecast::{Forecaster, Method};
    /// use agentwire_twin::risk::Watch;
    /// let f = Forecaster::new(Method::Naive);
    /// let h = [1.0, 3.0, 2.0, 4.0];
    /// let a = Watch::above(6.0).seed(7).assess(&f, &h).unwrap();
    /// let b = Watch::above(6.0).seed(7).assess(&f, &h).unwrap();
    /// assert_eq!(a.cumulative, b.cumulative);
    /// ```
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Forecasts `history` with `forecaster` and assesses the crossing risk (see the module
    /// doc for the method).
    ///
    /// ```
    /// use agentwire_twin::forecast::{Forecaster, Method};
    /// use agentwire_twin::risk::Watch;
    /// let r = Watch::below(0.0).assess(&Forecaster::new(Method::Naive), &[-1.0]).unwrap();
    /// assert!(r.already_past);
    /// assert_eq!(r.probability(1), 1.0);
    /// ```
    pub fn assess(
        &self,
        forecaster: &Forecaster,
        history: &[f64],
    ) -> Result<RiskReport, RiskError> {
        if !self.threshold.is_finite() {
            return Err(RiskError::BadThreshold(self.threshold));
        }
        if self.horizon == 0 || self.horizon > HORIZON_MAX {
            return Err(RiskError::BadHorizon(self.horizon));
        }
        if self.paths == 0 || self.paths > PATHS_MAX {
            return Err(RiskError::BadPaths(self.paths));
        }
        let last = *history.last().ok_or(RiskError::EmptyHistory)?;
        let forecast = forecaster.forecast(history, self.horizon)?;
        let z = normal_quantile(0.5 + forecast.level / 2.0);
        let sigma: Vec<f64> = forecast
            .lo
            .iter()
            .zip(&forecast.hi)
            .map(|(lo, hi)| ((hi - lo) / (2.0 * z)).max(0.0))
            .collect();
        let already_past = self.direction.is_past(last, self.threshold);
        let (cumulative, marginal_max) = if already_past {
            (vec![1.0; self.horizon], vec![1.0; self.horizon])
        } else {
            (
                self.sample(&forecast.point, &sigma),
                self.marginal_max(&forecast.point, &sigma),
            )
        };
        Ok(RiskReport {
            threshold: self.threshold,
            direction: self.direction,
            last,
            already_past,
            point: forecast.point,
            sigma,
            cumulative,
            marginal_max,
            paths: self.paths,
        })
    }

    /// The share of random-walk paths past the threshold by each step.
    fn sample(&self, point: &[f64], sigma: &[f64]) -> Vec<f64> {
        // Per step: the random walk's increment scale and the factor mapping B_h to e_h.
        let mut increment = Vec::with_capacity(point.len());
        let mut scale = Vec::with_capacity(point.len());
        let mut u_prev = 0.0f64;
        for s in sigma {
            let u = u_prev.max(s * s);
            increment.push((u - u_prev).sqrt());
            scale.push(if u > 0.0 { s / u.sqrt() } else { 0.0 });
            u_prev = u;
        }
        // first[h]: paths whose first crossing is at step h + 1.
        let mut first = vec![0u64; point.len()];
        let mut rng = Normal::new(self.seed);
        for _ in 0..self.paths {
            let mut walk = 0.0;
            for h in 0..point.len() {
                walk += increment[h] * rng.next();
                if self
                    .direction
                    .is_past(point[h] + walk * scale[h], self.threshold)
                {
                    first[h] += 1;
                    break;
                }
            }
        }
        let mut crossed = 0u64;
        first
            .iter()
            .map(|n| {
                crossed += n;
                crossed as f64 / self.paths as f64
            })
            .collect()
    }

    /// The running maximum of the marginal probabilities of being past the threshold.
    fn marginal_max(&self, point: &[f64], sigma: &[f64]) -> Vec<f64> {
        let mut best = 0.0f64;
        point
            .iter()
            .zip(sigma)
            .map(|(p, s)| {
                let past = if *s > 0.0 {
                    let d = (p - self.threshold) / s;
                    normal_cdf(match self.direction {
                        Direction::Above => d,
                        Direction::Below => -d,
                    })
                } else if self.direction.is_past(*p, self.threshold) {
                    1.0
                } else {
                    0.0
                };
                best = best.max(past);
                best
            })
            .collect()
    }
}

/// The crossing risk over the horizon.
///
/// ```
/// use agentwire_twin::forecast::{Forecaster, Method};
/// use agentwire_twin::risk::Watch;
/// let flat = [10.0, 10.5, 9.5, 10.0, 10.2, 9.8];
/// let r = Watch::above(1000.0).assess(&Forecaster::new(Method::Ses), &flat).unwrap();
/// assert_eq!(r.probability(48), 0.0);
/// assert_eq!(r.first_crossing(), [None, None, None]);
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct RiskReport {
    /// The threshold.
    pub threshold: f64,
    /// Which way is failure.
    pub direction: Direction,
    /// The history's last value.
    pub last: f64,
    /// Whether the last value is already past the threshold (every probability is then 1).
    pub already_past: bool,
    /// The forecast's point per step, step 1 first.
    pub point: Vec<f64>,
    /// The forecast error's standard deviation per step (from the interval width).
    pub sigma: Vec<f64>,
    /// `cumulative[h - 1]`: the probability of having crossed by step h (non-decreasing).
    pub cumulative: Vec<f64>,
    /// The running maximum of the per-step marginal probabilities: a lower bound on
    /// `cumulative`, up to sampling error.
    pub marginal_max: Vec<f64>,
    /// The sample paths drawn.
    pub paths: usize,
}

impl RiskReport {
    /// The probability of having crossed by step `step` (1-based; 0 for step 0, clamped to the
    /// horizon).
    ///
    /// ```
    /// use agentwire_twin::forecast::{Forecaster, Method};
    /// use agentwire_twin::risk::Watch;
    /// let r = Watch::above(5.0).assess(&Forecaster::new(Method::Naive), &[6.0]).unwrap();
    /// assert_eq!((r.probability(0), r.probability(1), r.probability(1000)), (1.0, 1.0, 1.0));
    /// ```
    pub fn probability(&self, step: usize) -> f64 {
        if self.already_past {
            return 1.0;
        }
        match step {
            0 => 0.0,
            s => self.cumulative[s.min(self.cumulative.len()) - 1],
        }
    }

    /// The first step at which the cumulative probability reaches `p` (`Some(0)` when already
    /// past; `None` when it is not reached within the horizon).
    ///
    /// ```
    /// use agentwire_twin::forecast::{Forecaster, Method};
    /// use agentwire_twin::risk::Watch;
    /// let rising: Vec<f64> = (0..50).map(|t| t as f64).collect();
    /// let r = Watch::above(59.5).horizon(20).assess(&Forecaster::new(Method::Holt), &rising).unwrap();
    /// assert_eq!(r.step_at(0.5), Some(11));
    /// ```
    pub fn step_at(&self, p: f64) -> Option<usize> {
        if self.already_past {
            return Some(0);
        }
        self.cumulative.iter().position(|c| *c >= p).map(|i| i + 1)
    }

    /// The first-crossing step's 5%, 50% (the median, the expected step) and 95% points:
    /// a 90% interval around the median. `None` for a point beyond the horizon.
    ///
    /// ```
    /// use agentwire_twin::forecast::{Forecaster, Method};
    /// use agentwire_twin::risk::Watch;
    /// let rising: Vec<f64> = (0..50).map(|t| t as f64).collect();
    /// let r = Watch::above(59.5).horizon(20).assess(&Forecaster::new(Method::Holt), &rising).unwrap();
    /// let [lo, mid, hi] = r.first_crossing();
    /// assert!(lo <= mid && mid <= hi && mid == Some(11));
    /// ```
    pub fn first_crossing(&self) -> [Option<usize>; 3] {
        [self.step_at(0.05), self.step_at(0.5), self.step_at(0.95)]
    }
}

/// The standard normal distribution function (Abramowitz and Stegun 7.1.26 on erf, absolute
/// error under 1.5e-7).
///
/// ```
/// use agentwire_twin::risk::normal_cdf;
/// assert!((normal_cdf(1.959964) - 0.975).abs() < 1e-6);
/// assert!((normal_cdf(0.0) - 0.5).abs() < 1e-9);
/// ```
pub fn normal_cdf(x: f64) -> f64 {
    let t = x.abs() / std::f64::consts::SQRT_2;
    let k = 1.0 / (1.0 + 0.327_591_1 * t);
    let poly = k
        * (0.254_829_592
            + k * (-0.284_496_736
                + k * (1.421_413_741 + k * (-1.453_152_027 + k * 1.061_405_429))));
    let erf = 1.0 - poly * (-t * t).exp();
    if x >= 0.0 {
        0.5 * (1.0 + erf)
    } else {
        0.5 * (1.0 - erf)
    }
}

/// Standard normal draws: SplitMix64 for uniforms, Box-Muller for the normals (both of each
/// pair used).
struct Normal {
    state: u64,
    spare: Option<f64>,
}

impl Normal {
    fn new(seed: u64) -> Self {
        Self {
            state: seed,
            spare: None,
        }
    }

    fn uniform(&mut self) -> f64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        // 53 random bits in (0, 1]: never 0, so ln is finite.
        ((z >> 11) + 1) as f64 / (1u64 << 53) as f64
    }

    fn next(&mut self) -> f64 {
        if let Some(v) = self.spare.take() {
            return v;
        }
        let r = (-2.0 * self.uniform().ln()).sqrt();
        let theta = std::f64::consts::TAU * self.uniform();
        self.spare = Some(r * theta.sin());
        r * theta.cos()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::forecast::Method;

    /// `n + extra` values of `start + slope * t` plus seeded normal noise of sd `noise`.
    fn trend(n: usize, extra: usize, start: f64, slope: f64, noise: f64, seed: u64) -> Vec<f64> {
        let mut rng = Normal::new(seed);
        (0..n + extra)
            .map(|t| start + slope * t as f64 + noise * rng.next())
            .collect()
    }

    #[test]
    fn true_crossing_of_a_noisy_trend_lies_in_the_predicted_interval() {
        let mut inside = 0;
        let trials = 20;
        for seed in 0..trials {
            // 10 + 0.5 t + N(0, 1): crosses 130 near t = 240, about 40 steps after the end.
            let all = trend(200, 100, 10.0, 0.5, 1.0, seed);
            let (history, future) = all.split_at(200);
            let truth = future.iter().position(|v| *v >= 130.0).unwrap() + 1;
            let r = Watch::above(130.0)
                .horizon(80)
                .seed(seed)
                .assess(&Forecaster::new(Method::Holt), history)
                .unwrap();
            let [lo, mid, hi] = r.first_crossing();
            let (lo, hi) = (lo.unwrap(), hi.unwrap());
            assert!((35..=47).contains(&mid.unwrap()), "seed {seed}: {mid:?}");
            if (lo..=hi).contains(&truth) {
                inside += 1;
            }
        }
        // A 90% interval: most trials, allowing for the forecaster's own slope error.
        assert!(inside >= trials * 3 / 4, "{inside} of {trials}");
    }

    #[test]
    fn falling_trend_crosses_a_lower_threshold() {
        let all = trend(100, 60, 100.0, -0.8, 0.5, 3);
        let (history, future) = all.split_at(100);
        let truth = future.iter().position(|v| *v <= 0.0).unwrap() + 1;
        let r = Watch::below(0.0)
            .horizon(60)
            .assess(&Forecaster::new(Method::Holt), history)
            .unwrap();
        let [lo, _, hi] = r.first_crossing();
        assert!((lo.unwrap()..=hi.unwrap()).contains(&truth), "{truth}");
    }

    #[test]
    fn flat_series_far_from_the_threshold_is_near_zero() {
        let history = trend(300, 0, 50.0, 0.0, 1.0, 11);
        for method in [Method::Ses, Method::Naive, Method::Theta] {
            let r = Watch::above(80.0)
                .horizon(48)
                .assess(&Forecaster::new(method), &history)
                .unwrap();
            assert!(r.probability(48) < 0.01, "{method}: {}", r.probability(48));
            assert_eq!(r.step_at(0.5), None);
        }
    }

    #[test]
    fn series_already_past_is_one() {
        let mut history = trend(100, 0, 50.0, 0.0, 1.0, 5);
        history.push(95.0);
        let r = Watch::above(90.0)
            .assess(&Forecaster::new(Method::Ses), &history)
            .unwrap();
        assert!(r.already_past);
        assert!(r.cumulative.iter().all(|p| *p == 1.0));
        assert_eq!(r.first_crossing(), [Some(0); 3]);
    }

    #[test]
    fn cumulative_is_non_decreasing_and_above_the_marginal_bound() {
        let history = trend(120, 0, 0.0, 0.1, 2.0, 9);
        let r = Watch::above(25.0)
            .horizon(100)
            .paths(20_000)
            .assess(&Forecaster::new(Method::Naive), &history)
            .unwrap();
        assert!(r.cumulative.windows(2).all(|w| w[0] <= w[1]));
        assert!(r.marginal_max.windows(2).all(|w| w[0] <= w[1]));
        for (c, m) in r.cumulative.iter().zip(&r.marginal_max) {
            // Sampling error at 20,000 paths is under 0.004 (one standard error).
            assert!(*c >= m - 0.02, "{c} < {m}");
        }
        assert!(r.probability(100) > 0.0 && r.probability(100) < 1.0);
    }

    #[test]
    fn random_walk_of_naive_matches_the_reflection_principle() {
        // Naive on a random walk: e_h is a Gaussian random walk; for a continuous walk
        // P(max_{t<=h} W_t >= a) = 2 (1 - Phi(a / sqrt(h))). The discrete walk crosses a
        // little less often; check the figure lies between the marginal and the continuous
        // bound.
        let history = [0.0, 1.0, 0.0, 1.0, 0.0];
        let r = Watch::above(5.0)
            .horizon(50)
            .paths(40_000)
            .assess(&Forecaster::new(Method::Naive), &history)
            .unwrap();
        let s = r.sigma[49];
        let continuous = 2.0 * (1.0 - normal_cdf(5.0 / s));
        let marginal = 1.0 - normal_cdf(5.0 / s);
        let p = r.probability(50);
        assert!(
            p > marginal && p < continuous + 0.01,
            "{marginal} {p} {continuous}"
        );
    }

    #[test]
    fn bad_arguments_are_errors() {
        let f = Forecaster::new(Method::Naive);
        assert_eq!(
            Watch::above(1.0).horizon(0).assess(&f, &[1.0]),
            Err(RiskError::BadHorizon(0))
        );
        assert_eq!(
            Watch::above(1.0).paths(0).assess(&f, &[1.0]),
            Err(RiskError::BadPaths(0))
        );
        assert_eq!(
            Watch::above(1.0).assess(&f, &[]),
            Err(RiskError::EmptyHistory)
        );
        assert!(matches!(
            Watch::above(1.0).assess(&f, &[f64::NAN]),
            Err(RiskError::Forecast(_))
        ));
    }
}
