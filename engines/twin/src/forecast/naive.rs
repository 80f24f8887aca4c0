//! The naive family: naive (last value), seasonal naive (the last period repeated) and the
//! M4 competition's Naive2 (naive on the seasonally adjusted series, reseasonalised).

use super::decompose::Deseasonalised;
use super::Fit;

/// Naive: every step is the last value; one-step fitted values are the previous values;
/// the h-step variance grows as h (a random walk). `None` for an empty history.
///
/// ```
/// use agentwire_twin::forecast::naive::naive;
/// assert_eq!(naive(&[1.0, 4.0], 3).unwrap(), vec![4.0, 4.0, 4.0]);
/// ```
pub fn naive(y: &[f64], horizon: usize) -> Option<Vec<f64>> {
    Some(naive_fit(y, horizon)?.point)
}

pub(crate) fn naive_fit(y: &[f64], horizon: usize) -> Option<Fit> {
    let last = *y.last()?;
    Some(Fit {
        point: vec![last; horizon],
        fitted: lagged(y, 1),
        variance: (1..=horizon).map(|h| h as f64).collect(),
    })
}

/// Seasonal naive: step h is the value one period before it, `y[n - m + (h - 1) % m]`.
/// `None` when the history is shorter than a period.
///
/// ```
/// use agentwire_twin::forecast::naive::seasonal_naive;
/// let y = [1.0, 2.0, 3.0, 10.0, 20.0, 30.0];
/// assert_eq!(seasonal_naive(&y, 3, 5).unwrap(), vec![10.0, 20.0, 30.0, 10.0, 20.0]);
/// ```
pub fn seasonal_naive(y: &[f64], period: usize, horizon: usize) -> Option<Vec<f64>> {
    Some(seasonal_naive_fit(y, period, horizon)?.point)
}

/// Seasonal naive's fit: fitted values lag by a period; the h-step variance is the one-step
/// one times `1 + floor((h - 1) / m)` (one more seasonal random-walk step per period).
pub(crate) fn seasonal_naive_fit(y: &[f64], period: usize, horizon: usize) -> Option<Fit> {
    let n = y.len();
    if period == 0 || n < period {
        return None;
    }
    let last = &y[n - period..];
    Some(Fit {
        point: (0..horizon).map(|h| last[h % period]).collect(),
        fitted: lagged(y, period),
        variance: (0..horizon).map(|h| (1 + h / period) as f64).collect(),
    })
}

/// Naive2, the M4 competition's benchmark: deseasonalise as [`Deseasonalised::m4`] does
/// (multiplicative classical decomposition when the 90% autocorrelation test finds the
/// period), forecast the last adjusted value, multiply by the seasonal indices.
///
/// ```
/// use agentwire_twin::forecast::naive::naive2;
/// // A clean pattern on a constant level: adjusted to a flat 10, then reseasonalised.
/// let y: Vec<f64> = (0..24).map(|t| [8.0, 12.0, 10.0, 10.0][t % 4]).collect();
/// let f = naive2(&y, 4, 4).unwrap();
/// assert!((f[0] - 8.0).abs() < 1e-9 && (f[1] - 12.0).abs() < 1e-9);
/// ```
pub fn naive2(y: &[f64], period: usize, horizon: usize) -> Option<Vec<f64>> {
    Some(naive2_fit(y, period, horizon)?.point)
}

pub(crate) fn naive2_fit(y: &[f64], period: usize, horizon: usize) -> Option<Fit> {
    let d = Deseasonalised::m4(y, period);
    let inner = naive_fit(&d.adjusted, horizon)?;
    Some(reseasonalise(&d, inner))
}

/// Puts `d`'s seasonal component back into a fit made on `d.adjusted`.
pub(crate) fn reseasonalise(d: &Deseasonalised, inner: Fit) -> Fit {
    Fit {
        point: inner
            .point
            .iter()
            .enumerate()
            .map(|(h, v)| d.reseasonalise(*v, d.len + h))
            .collect(),
        fitted: inner
            .fitted
            .iter()
            .enumerate()
            .map(|(t, v)| d.reseasonalise(*v, t))
            .collect(),
        variance: inner.variance,
    }
}

/// `y` shifted by `lag`: NaN for the first `lag` positions.
fn lagged(y: &[f64], lag: usize) -> Vec<f64> {
    (0..y.len())
        .map(|t| if t >= lag { y[t - lag] } else { f64::NAN })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seasonal_naive_repeats_the_last_period() {
        let y = [5.0, 1.0, 2.0, 3.0];
        assert_eq!(seasonal_naive(&y, 3, 4).unwrap(), vec![1.0, 2.0, 3.0, 1.0]);
        assert!(seasonal_naive(&y, 5, 1).is_none());
        let fit = seasonal_naive_fit(&y, 3, 7).unwrap();
        assert_eq!(fit.variance, vec![1.0, 1.0, 1.0, 2.0, 2.0, 2.0, 3.0]);
        assert!(fit.fitted[2].is_nan() && fit.fitted[3] == 5.0);
    }

    #[test]
    fn naive2_is_naive_without_seasonality() {
        // Too short for the test (under three periods): plain naive.
        let y = [1.0, 9.0, 2.0, 8.0, 3.0];
        assert_eq!(naive2(&y, 2, 2).unwrap(), vec![3.0, 3.0]);
    }

    #[test]
    fn naive2_matches_a_hand_computed_toy_series() {
        // Period 2 over 1,3 twelve times: deviations from the mean 2 alternate -1, +1, so
        // acf(1) = -23/24 and acf(2) = 22/24 = 0.917 > 1.645 / sqrt(24) * sqrt(1 + 2 (23/24)^2)
        // = 0.566: seasonal. The 2x2 moving average is 2 inside, the ratios 0.5 (even t) and
        // 1.5 (odd t): indices 0.5, 1.5, the adjusted series all 2. Forecast: 2 * 0.5, 2 * 1.5.
        let y: Vec<f64> = (0..24).map(|t| [1.0, 3.0][t % 2]).collect();
        assert!(crate::forecast::decompose::seasonality_test(&y, 2));
        assert!(!crate::forecast::decompose::seasonality_test(&y[..6], 2));
        let f = naive2(&y, 2, 3).unwrap();
        assert!(
            (f[0] - 1.0).abs() < 1e-12 && (f[1] - 3.0).abs() < 1e-12 && (f[2] - 1.0).abs() < 1e-12
        );
    }
}
