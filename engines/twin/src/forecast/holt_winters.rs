//! Holt-Winters: exponential smoothing with a seasonal component, additive (ETS(A,*,A)) or
//! multiplicative (ETS(A,*,M)), with no trend, a linear or a damped one.
//!
//! The initial state comes from the first seasons (at most four): classical decomposition
//! indices for the seasonal states, and a straight line through the adjusted values for the
//! level and slope (Hyndman et al., 2008, section 2.6.1's heuristic). The smoothing
//! parameters are then fitted by Nelder-Mead on the in-sample sum of squared one-step
//! errors, with `0 < beta <= alpha` and `0 < gamma <= 1 - alpha` (the usual constraints).

use super::decompose::{seasonal_indices, SeasonKind};
use super::optimise::nelder_mead;
use super::smoothing::{variance_factors, Trend, ALPHA_MAX, ALPHA_MIN, PHI_MAX, PHI_MIN};
use super::Fit;

/// Starting points of the parameter search: `[alpha, gamma / (1 - alpha), beta / alpha, phi]`.
const STARTS: [[f64; 4]; 3] = [
    [0.3, 0.1, 0.05, 0.95],
    [0.05, 0.5, 0.05, 0.95],
    [0.5, 0.5, 0.05, 0.95],
];

/// Seasons used for the initial state, at most.
const INIT_SEASONS_MAX: usize = 4;

/// A fitted Holt-Winters model.
///
/// ```
/// use agentwire_twin::forecast::decompose::SeasonKind;
/// use agentwire_twin::forecast::holt_winters::HoltWinters;
/// use agentwire_twin::forecast::smoothing::Trend;
/// let y: Vec<f64> = (0..40).map(|t| [4.0, 6.0][t % 2] + 0.1 * t as f64).collect();
/// let m = HoltWinters::fit(&y, 2, Trend::Damped, SeasonKind::Additive).unwrap();
/// assert!(m.gamma <= 1.0 - m.alpha && m.beta <= m.alpha);
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct HoltWinters {
    /// The trend kind.
    pub trend: Trend,
    /// Additive or multiplicative seasonality.
    pub season: SeasonKind,
    /// The seasonal period.
    pub period: usize,
    /// Level smoothing.
    pub alpha: f64,
    /// Trend smoothing (0 without a trend).
    pub beta: f64,
    /// Seasonal smoothing.
    pub gamma: f64,
    /// Damping (1 without damping).
    pub phi: f64,
    level0: f64,
    slope0: f64,
    seasons0: Vec<f64>,
    /// The in-sample sum of squared one-step errors.
    pub sse: f64,
}

/// The state after the filter: level, slope and the seasonal ring (indexed by `t % period`).
struct State {
    level: f64,
    slope: f64,
    seasons: Vec<f64>,
}

impl HoltWinters {
    /// Fits the model to `y`: needs two full periods (`None` otherwise, and when a
    /// multiplicative model meets values whose decomposition has no positive trend).
    ///
    /// ```
    /// use agentwire_twin::forecast::decompose::SeasonKind;
    /// use agentwire_twin::forecast::holt_winters::HoltWinters;
    /// use agentwire_twin::forecast::smoothing::Trend;
    /// let y: Vec<f64> = (0..48).map(|t| 20.0 + [3.0, -1.0, -2.0, 0.0][t % 4]).collect();
    /// let m = HoltWinters::fit(&y, 4, Trend::None, SeasonKind::Additive).unwrap();
    /// let f = m.forecast(&y, 4);
    /// assert!((f[0] - 23.0).abs() < 1e-6 && (f[2] - 18.0).abs() < 1e-6);
    /// ```
    pub fn fit(y: &[f64], period: usize, trend: Trend, season: SeasonKind) -> Option<Self> {
        if period < 2 || y.len() < 2 * period {
            return None;
        }
        let (level0, slope0, seasons0) = initial_state(y, period, trend, season)?;
        let damped = trend == Trend::Damped;
        let with_trend = trend != Trend::None;
        // p = [alpha, gamma / (1 - alpha), beta / alpha, phi]: the box keeps the constraints.
        let params = |p: &[f64]| {
            let alpha = p[0];
            let gamma = (1.0 - alpha) * p[1];
            let beta = if with_trend { alpha * p[2] } else { 0.0 };
            let phi = if damped { p[3] } else { 1.0 };
            (alpha, beta, gamma, phi)
        };
        let mut model = Self {
            trend,
            season,
            period,
            alpha: 0.0,
            beta: 0.0,
            gamma: 0.0,
            phi: 1.0,
            level0,
            slope0,
            seasons0,
            sse: f64::INFINITY,
        };
        let objective = |p: &[f64]| {
            let (alpha, beta, gamma, phi) = params(p);
            let mut sse = 0.0;
            let ok = model
                .run(y, alpha, beta, gamma, phi, |f, v| sse += (v - f) * (v - f))
                .is_some();
            if ok {
                sse
            } else {
                f64::INFINITY
            }
        };
        let lower = [ALPHA_MIN, ALPHA_MIN, ALPHA_MIN, PHI_MIN];
        let upper = [ALPHA_MAX, ALPHA_MAX, ALPHA_MAX, PHI_MAX];
        let dims = if damped {
            4
        } else if with_trend {
            3
        } else {
            2
        };
        // The SSE surface has several valleys (a level that absorbs everything with a frozen
        // season, or a season that follows the data): start from each corner that matters
        // and keep the best.
        let mut best = Vec::new();
        let mut sse = f64::INFINITY;
        for start in STARTS {
            let (p, v) = nelder_mead(&objective, &start[..dims], &lower[..dims], &upper[..dims]);
            if v < sse {
                (best, sse) = (p, v);
            }
        }
        if !sse.is_finite() {
            return None;
        }
        let (alpha, beta, gamma, phi) = params(&best);
        model.alpha = alpha;
        model.beta = beta;
        model.gamma = gamma;
        model.phi = phi;
        model.sse = sse;
        Some(model)
    }

    /// Runs the filter with the given parameters, calling `each(one_step_forecast, y_t)`;
    /// `None` when a multiplicative model's level or seasonal state stops being positive or a
    /// number stops being finite.
    fn run(
        &self,
        y: &[f64],
        alpha: f64,
        beta: f64,
        gamma: f64,
        phi: f64,
        mut each: impl FnMut(f64, f64),
    ) -> Option<State> {
        let m = self.period;
        let mut level = self.level0;
        let mut slope = self.slope0;
        let mut seasons = self.seasons0.clone();
        for (t, &v) in y.iter().enumerate() {
            let s = seasons[t % m];
            let base = level + phi * slope;
            match self.season {
                SeasonKind::Additive => {
                    let f = base + s;
                    each(f, v);
                    let e = v - f;
                    level = base + alpha * e;
                    slope = phi * slope + beta * e;
                    seasons[t % m] = s + gamma * e;
                }
                SeasonKind::Multiplicative => {
                    if base <= 0.0 || s <= 0.0 {
                        return None;
                    }
                    let f = base * s;
                    each(f, v);
                    let e = v - f;
                    level = base + alpha * e / s;
                    slope = phi * slope + beta * e / s;
                    seasons[t % m] = s + gamma * e / base;
                }
            }
        }
        (level.is_finite() && slope.is_finite()).then_some(State {
            level,
            slope,
            seasons,
        })
    }

    /// The one-step in-sample forecasts of `y` (the series the model was fitted to).
    ///
    /// ```
    /// use agentwire_twin::forecast::decompose::SeasonKind;
    /// use agentwire_twin::forecast::holt_winters::HoltWinters;
    /// use agentwire_twin::forecast::smoothing::Trend;
    /// let y: Vec<f64> = (0..24).map(|t| [5.0, 7.0, 6.0][t % 3]).collect();
    /// let m = HoltWinters::fit(&y, 3, Trend::None, SeasonKind::Multiplicative).unwrap();
    /// assert_eq!(m.fitted(&y).len(), 24);
    /// ```
    pub fn fitted(&self, y: &[f64]) -> Vec<f64> {
        let mut out = Vec::with_capacity(y.len());
        let _ = self.run(y, self.alpha, self.beta, self.gamma, self.phi, |f, _| {
            out.push(f)
        });
        out.resize(y.len(), f64::NAN);
        out
    }

    /// Forecasts `horizon` steps past the end of `y`.
    ///
    /// ```
    /// use agentwire_twin::forecast::decompose::SeasonKind;
    /// use agentwire_twin::forecast::holt_winters::HoltWinters;
    /// use agentwire_twin::forecast::smoothing::Trend;
    /// let y: Vec<f64> = (0..40).map(|t| t as f64 + [2.0, -2.0][t % 2]).collect();
    /// let m = HoltWinters::fit(&y, 2, Trend::Linear, SeasonKind::Additive).unwrap();
    /// let f = m.forecast(&y, 2);
    /// assert!((f[0] - 42.0).abs() < 0.5 && (f[1] - 39.0).abs() < 0.5);
    /// ```
    pub fn forecast(&self, y: &[f64], horizon: usize) -> Vec<f64> {
        let Some(state) = self.run(y, self.alpha, self.beta, self.gamma, self.phi, |_, _| {})
        else {
            return vec![f64::NAN; horizon];
        };
        let m = self.period;
        let mut phi_sum = 0.0;
        let mut phi_power = 1.0;
        (0..horizon)
            .map(|h| {
                phi_power *= self.phi;
                phi_sum += phi_power;
                let base = state.level + phi_sum * state.slope;
                let s = state.seasons[(y.len() + h) % m];
                match self.season {
                    SeasonKind::Additive => base + s,
                    SeasonKind::Multiplicative => base * s,
                }
            })
            .collect()
    }

    /// Fits, forecasts and packs the result as a [`Fit`]; the variance factors are the
    /// additive model's (ETS class 1), an approximation for multiplicative seasonality.
    pub(crate) fn fit_forecast(
        y: &[f64],
        period: usize,
        trend: Trend,
        season: SeasonKind,
        horizon: usize,
    ) -> Option<Fit> {
        let model = Self::fit(y, period, trend, season)?;
        let point = model.forecast(y, horizon);
        if point.iter().any(|v| !v.is_finite()) {
            return None;
        }
        Some(Fit {
            fitted: model.fitted(y),
            variance: variance_factors(
                model.alpha,
                model.beta,
                model.phi,
                model.gamma,
                period,
                horizon,
            ),
            point,
        })
    }
}

/// The heuristic initial state: `(level0, slope0, seasonal indices by t % period)`.
fn initial_state(
    y: &[f64],
    period: usize,
    trend: Trend,
    season: SeasonKind,
) -> Option<(f64, f64, Vec<f64>)> {
    let seasons = (y.len() / period).min(INIT_SEASONS_MAX);
    let head = &y[..seasons * period];
    let indices = seasonal_indices(head, period, season)?;
    let adjusted: Vec<f64> = head
        .iter()
        .enumerate()
        .map(|(t, v)| match season {
            SeasonKind::Additive => v - indices[t % period],
            SeasonKind::Multiplicative => v / indices[t % period],
        })
        .collect();
    let (level0, slope0) = if trend == Trend::None {
        let first = &adjusted[..period];
        (first.iter().sum::<f64>() / period as f64, 0.0)
    } else {
        let (intercept, slope) = linear_fit(&adjusted);
        // The state before t = 0 whose one-step forecast is the line's value at t = 0.
        (intercept - slope, slope)
    };
    Some((level0, slope0, indices))
}

/// Least-squares line `a + b t` through `y` at t = 0, 1, ...: `(a, b)`.
pub(crate) fn linear_fit(y: &[f64]) -> (f64, f64) {
    let n = y.len() as f64;
    if y.len() < 2 {
        return (y.first().copied().unwrap_or(0.0), 0.0);
    }
    let t_mean = (n - 1.0) / 2.0;
    let y_mean = y.iter().sum::<f64>() / n;
    let (mut sty, mut stt) = (0.0, 0.0);
    for (t, v) in y.iter().enumerate() {
        let dt = t as f64 - t_mean;
        sty += dt * (v - y_mean);
        stt += dt * dt;
    }
    let slope = sty / stt;
    (y_mean - slope * t_mean, slope)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linear_fit_matches_a_hand_computed_line() {
        // Points (0,1), (1,3), (2,2): slope = ((-1)(-1) + 0 + (1)(0)) / 2 = 0.5, a = 2 - 0.5.
        let (a, b) = linear_fit(&[1.0, 3.0, 2.0]);
        assert!((a - 1.5).abs() < 1e-12 && (b - 0.5).abs() < 1e-12);
    }

    #[test]
    fn multiplicative_model_follows_a_growing_pattern() {
        let y: Vec<f64> = (0..96)
            .map(|t| (100.0 + t as f64) * [1.2, 0.8, 1.0, 1.0][t % 4])
            .collect();
        let m = HoltWinters::fit(&y, 4, Trend::Linear, SeasonKind::Multiplicative).unwrap();
        let f = m.forecast(&y, 4);
        for (h, v) in f.iter().enumerate() {
            let want = (196.0 + h as f64) * [1.2, 0.8, 1.0, 1.0][h % 4];
            assert!((v - want).abs() / want < 0.02, "step {h}: {v} vs {want}");
        }
    }

    #[test]
    fn short_input_gives_none() {
        assert!(HoltWinters::fit(&[1.0; 7], 4, Trend::None, SeasonKind::Additive).is_none());
    }
}
