//! The standard Theta method as the M4 competition ran it (`Theta.classic` in its
//! benchmarks code): on the deseasonalised series, the theta-0 line (a least-squares line in
//! time) and the theta-2 line (`2 y - line`) forecast by SES, averaged with equal weights,
//! negative forecasts raised to 0, then reseasonalised.

use super::decompose::Deseasonalised;
use super::holt_winters::linear_fit;
use super::naive::reseasonalise;
use super::smoothing::{Trend, TrendModel};
use super::Fit;

/// Theta forecasts of `y` with seasonal period `period` (1 for none). `None` when the
/// history has fewer than 3 values.
///
/// ```
/// use agentwire_twin::forecast::theta::theta;
/// // On a straight line SES follows the last value (39) and the line goes on (40, 41):
/// // Theta, their mean, keeps half the slope.
/// let y: Vec<f64> = (0..30).map(|t| 10.0 + t as f64).collect();
/// let f = theta(&y, 1, 2).unwrap();
/// assert!((f[0] - 39.5).abs() < 0.01 && (f[1] - 40.0).abs() < 0.01);
/// ```
pub fn theta(y: &[f64], period: usize, horizon: usize) -> Option<Vec<f64>> {
    Some(theta_fit(y, period, horizon)?.point)
}

pub(crate) fn theta_fit(y: &[f64], period: usize, horizon: usize) -> Option<Fit> {
    let d = Deseasonalised::m4(y, period);
    let inner = theta_on(&d.adjusted, horizon)?;
    Some(reseasonalise(&d, inner))
}

/// Theta on an already adjusted series.
pub(crate) fn theta_on(x: &[f64], horizon: usize) -> Option<Fit> {
    let n = x.len();
    if n < 3 {
        return None;
    }
    let (a, b) = linear_fit(x);
    let line = |t: usize| a + b * t as f64;
    let theta2: Vec<f64> = x
        .iter()
        .enumerate()
        .map(|(t, v)| 2.0 * v - line(t))
        .collect();
    let ses = TrendModel::fit(&theta2, Trend::None)?;
    let ses_fitted = ses.fitted(&theta2);
    let ses_point = ses.forecast(&theta2, horizon);
    Some(Fit {
        point: ses_point
            .iter()
            .enumerate()
            .map(|(h, s)| (0.5 * s + 0.5 * line(n + h)).max(0.0))
            .collect(),
        fitted: ses_fitted
            .iter()
            .enumerate()
            .map(|(t, s)| 0.5 * s + 0.5 * line(t))
            .collect(),
        // Theta is SES with drift (Hyndman and Billah, 2003): SES's variance factors.
        variance: ses.variance_factors(horizon),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn theta_halves_the_trend_of_a_flat_ses_forecast() {
        // A noisy flat series: the line is nearly flat, so theta stays near the mean level.
        let y: Vec<f64> = (0..50)
            .map(|t| 100.0 + if t % 2 == 0 { 1.0 } else { -1.0 })
            .collect();
        let f = theta(&y, 1, 5).unwrap();
        assert!(f.iter().all(|v| (v - 100.0).abs() < 1.5), "{f:?}");
    }

    #[test]
    fn theta_never_forecasts_below_zero() {
        let y: Vec<f64> = (0..20)
            .map(|t| 20.0 - 2.0 * t as f64)
            .map(|v: f64| v.max(0.1))
            .collect();
        let f = theta(&y, 1, 10).unwrap();
        assert!(f.iter().all(|v| *v >= 0.0));
    }
}
