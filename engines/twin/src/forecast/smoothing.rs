//! Non-seasonal exponential smoothing with additive errors: simple (SES, ETS(A,N,N)),
//! Holt's linear trend (ETS(A,A,N)) and the damped trend (ETS(A,Ad,N)), fitted by least
//! squares on the in-sample one-step errors, as R's `forecast::ses`/`holt` with
//! `opt.crit = "mse"`.
//!
//! The initial level and trend are not searched: for fixed smoothing parameters the
//! one-step errors are an affine function of them (the recursions are linear), so the
//! least-squares initial state is the solution of a 2x2 system, computed from three runs of
//! the filter (one on the data from a zero state, two on zeros from unit states). The search
//! covers the smoothing parameters only: golden section for SES, Nelder-Mead otherwise.

use super::optimise::{golden_section, nelder_mead};
use super::Fit;

/// Bounds of the smoothing parameters, as R's `forecast::ets` uses them.
///
/// ```
/// use agentwire_twin::forecast::smoothing::{ALPHA_MAX, ALPHA_MIN};
/// assert!(0.0 < ALPHA_MIN && ALPHA_MAX < 1.0);
/// ```
pub const ALPHA_MIN: f64 = 1e-4;
/// The upper bound of alpha (and of beta/alpha, and of gamma/(1 - alpha)).
///
/// ```
/// assert_eq!(agentwire_twin::forecast::smoothing::ALPHA_MAX, 0.9999);
/// ```
pub const ALPHA_MAX: f64 = 0.9999;
/// The damping parameter's range (the usual [0.8, 0.98]: below 0.8 the trend dies within a
/// few steps, above 0.98 it is hard to tell from an undamped one).
///
/// ```
/// assert_eq!(agentwire_twin::forecast::smoothing::PHI_MIN, 0.8);
/// ```
pub const PHI_MIN: f64 = 0.8;
/// See [`PHI_MIN`].
///
/// ```
/// assert_eq!(agentwire_twin::forecast::smoothing::PHI_MAX, 0.98);
/// ```
pub const PHI_MAX: f64 = 0.98;

/// Which trend a [`TrendModel`] has.
///
/// ```
/// use agentwire_twin::forecast::smoothing::{Trend, TrendModel};
/// assert_eq!(TrendModel::fit(&[1.0, 2.0, 3.0, 4.0], Trend::Damped).unwrap().trend, Trend::Damped);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trend {
    /// No trend: simple exponential smoothing.
    None,
    /// Holt's linear trend.
    Linear,
    /// A damped linear trend.
    Damped,
}

/// A fitted ETS(A,N,N), ETS(A,A,N) or ETS(A,Ad,N) model.
///
/// ```
/// use agentwire_twin::forecast::smoothing::{Trend, TrendModel};
/// let m = TrendModel::fit(&[5.0, 6.0, 5.0, 6.0, 5.0], Trend::None).unwrap();
/// assert!(m.alpha > 0.0 && m.alpha < 1.0 && m.beta == 0.0);
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct TrendModel {
    /// The trend kind.
    pub trend: Trend,
    /// Level smoothing.
    pub alpha: f64,
    /// Trend smoothing (0 without a trend); `0 < beta <= alpha`.
    pub beta: f64,
    /// Damping (1 for a linear trend or none).
    pub phi: f64,
    /// The level before the first value.
    pub level0: f64,
    /// The trend before the first value.
    pub slope0: f64,
    /// The in-sample sum of squared one-step errors.
    pub sse: f64,
}

impl TrendModel {
    /// Fits the model to `y` (at least 3 values for SES, 4 with a trend; shorter input
    /// gives `None`, as does one whose fit does not converge to finite numbers).
    ///
    /// ```
    /// use agentwire_twin::forecast::smoothing::{Trend, TrendModel};
    /// let y: Vec<f64> = (0..30).map(|t| 5.0 + 2.0 * t as f64).collect();
    /// let m = TrendModel::fit(&y, Trend::Linear).unwrap();
    /// let f = m.forecast(&y, 2);
    /// assert!((f[0] - 65.0).abs() < 1e-3 && (f[1] - 67.0).abs() < 1e-3);
    /// ```
    pub fn fit(y: &[f64], trend: Trend) -> Option<Self> {
        let min_len = if trend == Trend::None { 3 } else { 4 };
        if y.len() < min_len {
            return None;
        }
        let model = match trend {
            Trend::None => {
                let (alpha, _) = golden_section(
                    |a| fit_initial(y, a, 0.0, 1.0, false).map_or(f64::INFINITY, |f| f.2),
                    ALPHA_MIN,
                    ALPHA_MAX,
                );
                let (level0, slope0, sse) = fit_initial(y, alpha, 0.0, 1.0, false)?;
                Self {
                    trend,
                    alpha,
                    beta: 0.0,
                    phi: 1.0,
                    level0,
                    slope0,
                    sse,
                }
            }
            Trend::Linear | Trend::Damped => {
                let damped = trend == Trend::Damped;
                let params = |p: &[f64]| {
                    let phi = if damped { p[2] } else { 1.0 };
                    (p[0], p[0] * p[1], phi)
                };
                let objective = |p: &[f64]| {
                    let (a, b, phi) = params(p);
                    fit_initial(y, a, b, phi, true).map_or(f64::INFINITY, |f| f.2)
                };
                let (start, lower, upper): (&[f64], &[f64], &[f64]) = if damped {
                    (
                        &[0.3, 0.1, 0.95],
                        &[ALPHA_MIN, ALPHA_MIN, PHI_MIN],
                        &[ALPHA_MAX, ALPHA_MAX, PHI_MAX],
                    )
                } else {
                    (
                        &[0.3, 0.1],
                        &[ALPHA_MIN, ALPHA_MIN],
                        &[ALPHA_MAX, ALPHA_MAX],
                    )
                };
                let (best, _) = nelder_mead(objective, start, lower, upper);
                let (alpha, beta, phi) = params(&best);
                let (level0, slope0, sse) = fit_initial(y, alpha, beta, phi, true)?;
                Self {
                    trend,
                    alpha,
                    beta,
                    phi,
                    level0,
                    slope0,
                    sse,
                }
            }
        };
        model.sse.is_finite().then_some(model)
    }

    /// The one-step in-sample forecasts of `y` (the series the model was fitted to).
    ///
    /// ```
    /// use agentwire_twin::forecast::smoothing::{Trend, TrendModel};
    /// let y = [3.0, 3.0, 3.0, 3.0];
    /// let m = TrendModel::fit(&y, Trend::None).unwrap();
    /// assert!(m.fitted(&y).iter().all(|f| (f - 3.0).abs() < 1e-9));
    /// ```
    pub fn fitted(&self, y: &[f64]) -> Vec<f64> {
        let mut out = Vec::with_capacity(y.len());
        run(
            y,
            self.alpha,
            self.beta,
            self.phi,
            self.level0,
            self.slope0,
            |f, _| out.push(f),
        );
        out
    }

    /// Forecasts `horizon` steps past the end of `y`: `level + (phi + ... + phi^h) * slope`.
    ///
    /// ```
    /// use agentwire_twin::forecast::smoothing::{Trend, TrendModel};
    /// let y = [1.0, 2.0, 1.0, 2.0, 1.0, 2.0];
    /// let f = TrendModel::fit(&y, Trend::None).unwrap().forecast(&y, 3);
    /// assert!(f.iter().all(|v| *v > 1.0 && *v < 2.0));
    /// ```
    pub fn forecast(&self, y: &[f64], horizon: usize) -> Vec<f64> {
        let (level, slope) = run(
            y,
            self.alpha,
            self.beta,
            self.phi,
            self.level0,
            self.slope0,
            |_, _| {},
        );
        let mut damp_sum = 0.0;
        let mut phi_power = 1.0;
        (0..horizon)
            .map(|_| {
                phi_power *= self.phi;
                damp_sum += phi_power;
                level + damp_sum * slope
            })
            .collect()
    }

    /// The h-step forecast variance over the one-step variance, `1 + sum_{j<h} c_j^2` with
    /// `c_j = alpha + beta * (phi + ... + phi^j)` (Hyndman et al., 2008, class 1 models),
    /// for h = 1..=horizon.
    ///
    /// ```
    /// use agentwire_twin::forecast::smoothing::{Trend, TrendModel};
    /// let m = TrendModel { trend: Trend::None, alpha: 0.5, beta: 0.0, phi: 1.0,
    ///                      level0: 0.0, slope0: 0.0, sse: 0.0 };
    /// assert_eq!(m.variance_factors(3), vec![1.0, 1.25, 1.5]);
    /// ```
    pub fn variance_factors(&self, horizon: usize) -> Vec<f64> {
        variance_factors(self.alpha, self.beta, self.phi, 0.0, 0, horizon)
    }

    /// Fits, forecasts and packs the result as a [`Fit`] (in-sample fitted values, point
    /// forecasts, variance factors).
    pub(crate) fn fit_forecast(y: &[f64], trend: Trend, horizon: usize) -> Option<Fit> {
        let model = Self::fit(y, trend)?;
        Some(Fit {
            point: model.forecast(y, horizon),
            fitted: model.fitted(y),
            variance: model.variance_factors(horizon),
        })
    }
}

/// `1 + sum_{j=1}^{h-1} (alpha + beta * phi_j + gamma * [j % period == 0])^2` for
/// h = 1..=horizon, where `phi_j = phi + ... + phi^j` (the ETS class 1 variance factors; a
/// `period` of 0 means no seasonal term).
pub(crate) fn variance_factors(
    alpha: f64,
    beta: f64,
    phi: f64,
    gamma: f64,
    period: usize,
    horizon: usize,
) -> Vec<f64> {
    let mut out = Vec::with_capacity(horizon);
    let mut total = 1.0;
    let mut phi_sum = 0.0;
    let mut phi_power = 1.0;
    for h in 1..=horizon {
        out.push(total);
        phi_power *= phi;
        phi_sum += phi_power;
        let seasonal = if period > 0 && h % period == 0 {
            gamma
        } else {
            0.0
        };
        let c = alpha + beta * phi_sum + seasonal;
        total += c * c;
    }
    out
}

/// Runs the filter from `(level0, slope0)`, calling `each(one_step_forecast, y_t)`; returns
/// the final level and slope.
fn run(
    y: &[f64],
    alpha: f64,
    beta: f64,
    phi: f64,
    level0: f64,
    slope0: f64,
    mut each: impl FnMut(f64, f64),
) -> (f64, f64) {
    let (mut level, mut slope) = (level0, slope0);
    for &v in y {
        let f = level + phi * slope;
        each(f, v);
        let e = v - f;
        level = f + alpha * e;
        slope = phi * slope + beta * e;
    }
    (level, slope)
}

/// The least-squares initial state for fixed parameters and its SSE: `(level0, slope0, sse)`
/// (`slope0` is 0 when `with_slope` is false). `None` when the numbers are not finite.
fn fit_initial(
    y: &[f64],
    alpha: f64,
    beta: f64,
    phi: f64,
    with_slope: bool,
) -> Option<(f64, f64, f64)> {
    // e_t = e0_t + level0 * e1_t + slope0 * e2_t: e0 from the data and a zero state, e1 and
    // e2 from zero data and unit states.
    let (mut l0, mut b0) = (0.0, 0.0);
    let (mut l1, mut b1) = (1.0, 0.0);
    let (mut l2, mut b2) = (0.0, 1.0);
    let (mut s11, mut s12, mut s22, mut s01, mut s02) = (0.0, 0.0, 0.0, 0.0, 0.0);
    for &v in y {
        let e0 = v - (l0 + phi * b0);
        let e1 = -(l1 + phi * b1);
        let e2 = -(l2 + phi * b2);
        s11 += e1 * e1;
        s12 += e1 * e2;
        s22 += e2 * e2;
        s01 += e0 * e1;
        s02 += e0 * e2;
        l0 += phi * b0 + alpha * e0;
        b0 = phi * b0 + beta * e0;
        l1 += phi * b1 + alpha * e1;
        b1 = phi * b1 + beta * e1;
        l2 += phi * b2 + alpha * e2;
        b2 = phi * b2 + beta * e2;
    }
    let (level0, slope0) = if with_slope {
        // Minimise |e0 + A x|^2: A^T A x = -A^T e0, with a whisker of ridge for the nearly
        // singular cases (alpha near 1 forgets the initial state within a step or two).
        let ridge = 1e-12 * (s11 + s22);
        let (a, b, d) = (s11 + ridge, s12, s22 + ridge);
        let det = a * d - b * b;
        if det.abs() <= f64::MIN_POSITIVE {
            (y[0], 0.0)
        } else {
            ((-s01 * d + s02 * b) / det, (s01 * b - s02 * a) / det)
        }
    } else if s11 > 0.0 {
        (-s01 / s11, 0.0)
    } else {
        (y[0], 0.0)
    };
    let mut sse = 0.0;
    run(y, alpha, beta, phi, level0, slope0, |f, v| {
        sse += (v - f) * (v - f)
    });
    (level0.is_finite() && slope0.is_finite() && sse.is_finite()).then_some((level0, slope0, sse))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ses_initial_level_solves_the_least_squares_problem() {
        // alpha fixed at 0.5 over y = [4, 8]: e1 = 4 - l, e2 = 8 - (l + 0.5 (4 - l)) = 6 - 0.5 l.
        // d/dl [(4 - l)^2 + (6 - 0.5 l)^2] = 0 gives l = (4 + 3) / 1.25 = 5.6.
        let (l, _, sse) = fit_initial(&[4.0, 8.0], 0.5, 0.0, 1.0, false).unwrap();
        assert!((l - 5.6).abs() < 1e-12, "{l}");
        assert!((sse - ((4.0f64 - 5.6).powi(2) + (6.0f64 - 2.8).powi(2))).abs() < 1e-9);
    }

    #[test]
    fn holt_recovers_an_exact_line() {
        let y: Vec<f64> = (0..20).map(|t| 100.0 - 3.0 * t as f64).collect();
        let m = TrendModel::fit(&y, Trend::Linear).unwrap();
        assert!(m.sse < 1e-9, "{m:?}");
        assert!((m.level0 - 103.0).abs() < 1e-6 && (m.slope0 + 3.0).abs() < 1e-6);
    }

    #[test]
    fn damped_trend_flattens_the_forecast() {
        let y: Vec<f64> = (0..40)
            .map(|t| t as f64 + if t % 2 == 0 { 0.5 } else { -0.5 })
            .collect();
        let m = TrendModel::fit(&y, Trend::Damped).unwrap();
        let f = m.forecast(&y, 200);
        assert!(f[199] - f[198] < f[1] - f[0]);
        assert!(m.phi >= PHI_MIN && m.phi <= PHI_MAX);
    }

    #[test]
    fn variance_factors_match_the_holt_closed_form() {
        // ETS(A,A,N): v_h = 1 + (h-1)[a^2 + a b h + b^2 h (2h - 1) / 6].
        let (a, b) = (0.4, 0.1);
        let v = variance_factors(a, b, 1.0, 0.0, 0, 6);
        for (i, got) in v.iter().enumerate() {
            let h = (i + 1) as f64;
            let want = 1.0 + (h - 1.0) * (a * a + a * b * h + b * b * h * (2.0 * h - 1.0) / 6.0);
            assert!((got - want).abs() < 1e-12, "h={h}: {got} vs {want}");
        }
    }

    #[test]
    fn too_short_input_gives_none() {
        assert!(TrendModel::fit(&[1.0, 2.0], Trend::None).is_none());
        assert!(TrendModel::fit(&[1.0, 2.0, 3.0], Trend::Damped).is_none());
    }
}
