//! Autoregression on the seasonal difference: `z_t = y_t - y_{t-d}` is regressed by least
//! squares on its own values at a fixed set of lags (the last few steps, the neighbours of
//! one period back, and whole periods back), and forecasts are undone from the difference:
//! `y_{n+h} = y_{n+h-d} + z_{n+h}`. A seasonal ARIMA(p,0,0)(P,1,0) with gaps, in effect,
//! estimated in closed form (no search), so it is fast and deterministic.
//!
//! Why it suits hourly load- or weather-like series: the seasonal difference removes the
//! daily (or weekly) shape, and today's departure from yesterday persists for a while (a
//! warm day follows a warm day), which the short lags carry forward; the lags at whole
//! periods correct the difference's own weekly rhythm.

use super::Fit;

/// Regressors at most (the normal equations are solved by Gaussian elimination).
///
/// ```
/// use agentwire_twin::forecast::seasonal_ar::{SeasonalAr, LAGS_MAX};
/// assert!(SeasonalAr::standard(24, 24, &[], false).lags.len() <= LAGS_MAX);
/// ```
pub const LAGS_MAX: usize = 32;

/// A seasonal-difference autoregression's specification.
///
/// ```
/// use agentwire_twin::forecast::seasonal_ar::SeasonalAr;
/// let ar = SeasonalAr { difference: 168, lags: vec![1, 24, 168], log: false };
/// assert!(ar.forecast(&[1.0; 100], 4).is_none()); // shorter than min_history()
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct SeasonalAr {
    /// The differencing lag `d` (24 for a daily cycle in hourly data, 168 for a weekly one).
    pub difference: usize,
    /// The lags of `z` used as regressors (each at least 1), at most [`LAGS_MAX`].
    pub lags: Vec<usize>,
    /// Model `ln y` instead of `y` (multiplicative seasonality); needs positive values.
    pub log: bool,
}

impl SeasonalAr {
    /// The lag set used for a period `m`: steps 1 to 6, `m - 1`, `m`, `m + 1` and the whole
    /// periods `2m` to `7m` (a week of days for hourly data), plus `extra` (e.g. `14m`).
    /// Lags below 1 and repeats are dropped.
    ///
    /// ```
    /// use agentwire_twin::forecast::seasonal_ar::SeasonalAr;
    /// let ar = SeasonalAr::standard(24, 24, &[], false);
    /// assert_eq!(ar.lags, vec![1, 2, 3, 4, 5, 6, 23, 24, 25, 48, 72, 96, 120, 144, 168]);
    /// ```
    pub fn standard(difference: usize, period: usize, extra: &[usize], log: bool) -> Self {
        let mut lags: Vec<usize> = (1..=6).collect();
        lags.extend([period.saturating_sub(1), period, period + 1]);
        lags.extend((2..=7).map(|k| k * period));
        lags.extend_from_slice(extra);
        lags.retain(|l| *l >= 1);
        lags.sort_unstable();
        lags.dedup();
        lags.truncate(LAGS_MAX);
        Self {
            difference,
            lags,
            log,
        }
    }

    /// The fewest values the model needs: the difference, the longest lag, and twice as
    /// many rows as coefficients for the regression.
    ///
    /// ```
    /// use agentwire_twin::forecast::seasonal_ar::SeasonalAr;
    /// let ar = SeasonalAr { difference: 2, lags: vec![1, 2], log: false };
    /// assert_eq!(ar.min_history(), 2 + 2 + 2 * 2 + 1);
    /// ```
    pub fn min_history(&self) -> usize {
        let max_lag = self.lags.iter().copied().max().unwrap_or(0);
        self.difference + max_lag + 2 * self.lags.len() + 1
    }

    /// Fits the model to `y` and forecasts `horizon` steps. `None` when the history is
    /// shorter than [`SeasonalAr::min_history`], a log model meets a value that is not
    /// positive, or the regression is singular.
    ///
    /// ```
    /// use agentwire_twin::forecast::seasonal_ar::SeasonalAr;
    /// // A period-4 pattern plus a step: the difference is 0 except at the step.
    /// let y: Vec<f64> = (0..60)
    ///     .map(|t| [1.0, 5.0, 3.0, 2.0][t % 4] + if t > 30 { 10.0 } else { 0.0 })
    ///     .collect();
    /// let ar = SeasonalAr { difference: 4, lags: vec![1, 4], log: false };
    /// let f = ar.forecast(&y, 4).unwrap();
    /// assert!((f[0] - 11.0).abs() < 0.5 && (f[1] - 15.0).abs() < 0.5);
    /// ```
    pub fn forecast(&self, y: &[f64], horizon: usize) -> Option<Vec<f64>> {
        Some(self.fit(y, horizon)?.point)
    }

    pub(crate) fn fit(&self, y: &[f64], horizon: usize) -> Option<Fit> {
        let d = self.difference;
        if d == 0
            || self.lags.is_empty()
            || self.lags.len() > LAGS_MAX
            || y.len() < self.min_history()
        {
            return None;
        }
        let x: Vec<f64> = if self.log {
            if y.iter().any(|v| *v <= 0.0) {
                return None;
            }
            y.iter().map(|v| v.ln()).collect()
        } else {
            y.to_vec()
        };
        let n = x.len();
        let z: Vec<f64> = (d..n).map(|t| x[t] - x[t - d]).collect();
        let max_lag = self.lags.iter().copied().max()?;
        let k = self.lags.len();
        let mut a = vec![0.0; k * k];
        let mut b = vec![0.0; k];
        for t in max_lag..z.len() {
            for (i, li) in self.lags.iter().enumerate() {
                let ri = z[t - li];
                b[i] += ri * z[t];
                for (j, lj) in self.lags.iter().enumerate().skip(i) {
                    a[i * k + j] += ri * z[t - lj];
                }
            }
        }
        for i in 0..k {
            for j in 0..i {
                a[i * k + j] = a[j * k + i];
            }
        }
        let coef = solve(a, b)?;
        // One-step in-sample forecasts where every regressor exists.
        let mut fitted = vec![f64::NAN; n];
        for t in max_lag..z.len() {
            let zhat: f64 = self.lags.iter().zip(&coef).map(|(l, c)| c * z[t - l]).sum();
            // z[t] is x[t + d] - x[t]: the one-step forecast of x[t + d] is x[t] + zhat.
            let v = x[t] + zhat;
            fitted[t + d] = if self.log { v.exp() } else { v };
        }
        let mut zz = z;
        let mut xx = x;
        for _ in 0..horizon {
            let t = zz.len();
            let zhat: f64 = self
                .lags
                .iter()
                .zip(&coef)
                .map(|(l, c)| c * zz[t - l])
                .sum();
            zz.push(zhat);
            let next = xx[xx.len() - d] + zhat;
            xx.push(next);
        }
        let point: Vec<f64> = xx[n..]
            .iter()
            .map(|v| if self.log { v.exp() } else { *v })
            .collect();
        if point.iter().any(|v| !v.is_finite()) {
            return None;
        }
        let scale = if self.log {
            // The log model's errors are relative: scale its factors to the level forecast.
            let last = y[y.len() - 1].abs().max(f64::MIN_POSITIVE);
            point.iter().map(|p| (p / last).powi(2)).collect()
        } else {
            vec![1.0; horizon]
        };
        Some(Fit {
            point,
            fitted,
            variance: psi_variance(d, &self.lags, &coef, horizon)
                .iter()
                .zip(scale)
                .map(|(v, s)| v * s)
                .collect(),
        })
    }
}

/// `1 + psi_1^2 + ... + psi_{h-1}^2` for h = 1..=horizon, the psi weights of
/// `y_t = y_{t-d} + sum_l c_l (y_{t-l} - y_{t-l-d}) + e_t`.
fn psi_variance(d: usize, lags: &[usize], coef: &[f64], horizon: usize) -> Vec<f64> {
    // The AR polynomial on y: +1 at lag d, +c_l at lag l, -c_l at lag l + d.
    let mut phi: Vec<(usize, f64)> = vec![(d, 1.0)];
    for (l, c) in lags.iter().zip(coef) {
        phi.push((*l, *c));
        phi.push((l + d, -c));
    }
    let mut psi = vec![0.0; horizon];
    if horizon > 0 {
        psi[0] = 1.0;
    }
    for j in 1..horizon {
        psi[j] = phi
            .iter()
            .filter(|(lag, _)| *lag <= j)
            .map(|(lag, c)| c * psi[j - lag])
            .sum();
    }
    let mut total = 0.0;
    psi.iter()
        .map(|p| {
            total += p * p;
            total
        })
        .collect()
}

/// Solves the `k x k` system `a x = b` (row-major) by Gaussian elimination with partial
/// pivoting and a whisker of ridge on the diagonal; `None` when it is singular.
fn solve(mut a: Vec<f64>, mut b: Vec<f64>) -> Option<Vec<f64>> {
    let k = b.len();
    for i in 0..k {
        a[i * k + i] += 1e-9 * a[i * k + i].abs();
    }
    for c in 0..k {
        let p = (c..k).max_by(|&x, &y| a[x * k + c].abs().total_cmp(&a[y * k + c].abs()))?;
        if p != c {
            for j in 0..k {
                a.swap(c * k + j, p * k + j);
            }
            b.swap(c, p);
        }
        let pivot = a[c * k + c];
        if pivot.abs() <= f64::MIN_POSITIVE || !pivot.is_finite() {
            return None;
        }
        for r in c + 1..k {
            let f = a[r * k + c] / pivot;
            for j in c..k {
                a[r * k + j] -= f * a[c * k + j];
            }
            b[r] -= f * b[c];
        }
    }
    let mut x = vec![0.0; k];
    for c in (0..k).rev() {
        let tail: f64 = (c + 1..k).map(|j| a[c * k + j] * x[j]).sum();
        x[c] = (b[c] - tail) / a[c * k + c];
    }
    x.iter().all(|v| v.is_finite()).then_some(x)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn solve_matches_a_hand_computed_system() {
        // 2x + y = 5, x + 3y = 10: x = 1, y = 3.
        let x = solve(vec![2.0, 1.0, 1.0, 3.0], vec![5.0, 10.0]).unwrap();
        assert!(
            (x[0] - 1.0).abs() < 1e-6 && (x[1] - 3.0).abs() < 1e-6,
            "{x:?}"
        );
        assert!(solve(vec![0.0; 4], vec![1.0, 1.0]).is_none());
    }

    #[test]
    fn recovers_a_known_ar1_on_the_difference() {
        // z_t = 0.5 z_{t-1} + e_t with a deterministic pseudo-noise e, y_t = y_{t-3} + z_t.
        let mut y = vec![10.0, 20.0, 30.0];
        let mut z_prev = 0.0;
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        for t in 3..400 {
            // xorshift64: white enough for the estimate to land near 0.5.
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let e = ((state >> 11) as f64 / (1u64 << 53) as f64 - 0.5) * 0.2;
            let z = 0.5 * z_prev + e;
            z_prev = z;
            y.push(y[t - 3] + z);
        }
        let ar = SeasonalAr {
            difference: 3,
            lags: vec![1],
            log: false,
        };
        let fit = ar.fit(&y, 2).unwrap();
        // Step 1: y_{n-3+1} + 0.5 z_{n-1} (approximately: the coefficient is estimated).
        let n = y.len();
        let want = y[n - 3] + 0.5 * (y[n - 1] - y[n - 4]);
        assert!(
            (fit.point[0] - want).abs() < 0.02,
            "{} vs {want}",
            fit.point[0]
        );
        // psi for d = 3, c = 0.5: psi_1 = 0.5, psi_2 = 0.25: v = 1, 1.25.
        assert!((fit.variance[1] - 1.25).abs() < 0.05, "{:?}", fit.variance);
    }

    #[test]
    fn log_model_refuses_non_positive_values() {
        let ar = SeasonalAr::standard(2, 2, &[], true);
        assert!(ar.fit(&[1.0, -1.0].repeat(40), 3).is_none());
    }

    #[test]
    fn psi_weights_of_a_pure_seasonal_walk_step_per_period() {
        // No regressors' effect (c = 0): y_t = y_{t-2} + e_t, v_h = 1 + floor((h-1)/2).
        let v = psi_variance(2, &[1], &[0.0], 5);
        assert_eq!(v, vec![1.0, 1.0, 2.0, 2.0, 3.0]);
    }
}
