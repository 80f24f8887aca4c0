//! The M4 competition's accuracy measures (Makridakis, Spiliotis and Assimakopoulos, 2020,
//! "The M4 Competition: 100,000 time series and 61 forecasting methods", section 3), as
//! its evaluation code computes them.

/// sMAPE in percent: `200 / h * sum |y - f| / (|y| + |f|)`. A step where both are 0 counts
/// as a perfect forecast (0) rather than 0/0. NaN for empty or unequal-length input.
///
/// ```
/// use agentwire_twin::m4::metrics::smape;
/// // 200 / 2 * (|100 - 110| / 210 + |50 - 50| / 100) = 100 * 0.047619... = 4.7619...
/// assert!((smape(&[100.0, 50.0], &[110.0, 50.0]) - 4.761904761904762).abs() < 1e-12);
/// ```
pub fn smape(actual: &[f64], forecast: &[f64]) -> f64 {
    if actual.is_empty() || actual.len() != forecast.len() {
        return f64::NAN;
    }
    let sum: f64 = actual
        .iter()
        .zip(forecast)
        .map(|(y, f)| {
            let denominator = y.abs() + f.abs();
            if denominator == 0.0 {
                0.0
            } else {
                (y - f).abs() / denominator
            }
        })
        .sum();
    200.0 * sum / actual.len() as f64
}

/// The MASE scale: the in-sample mean absolute seasonal difference
/// `mean_{t >= m} |y_t - y_{t-m}|`. `None` when the history has no such difference or they
/// are all 0 (the scaled error would be infinite).
///
/// ```
/// use agentwire_twin::m4::metrics::mase_scale;
/// // m = 2 over 1, 2, 4, 3: |4 - 1| and |3 - 2|, mean 2.
/// assert_eq!(mase_scale(&[1.0, 2.0, 4.0, 3.0], 2), Some(2.0));
/// assert_eq!(mase_scale(&[5.0, 5.0, 5.0], 1), None);
/// ```
pub fn mase_scale(insample: &[f64], period: usize) -> Option<f64> {
    let m = period.max(1);
    if insample.len() <= m {
        return None;
    }
    let sum: f64 = (m..insample.len())
        .map(|t| (insample[t] - insample[t - m]).abs())
        .sum();
    let scale = sum / (insample.len() - m) as f64;
    (scale > 0.0 && scale.is_finite()).then_some(scale)
}

/// MASE: the out-of-sample mean absolute error over [`mase_scale`] (the in-sample seasonal
/// naive's mean absolute error with period `m`, m = 24 for M4's hourly series). `None` when
/// the scale is undefined; NaN for empty or unequal-length forecasts.
///
/// ```
/// use agentwire_twin::m4::metrics::mase;
/// // Scale 2 (see mase_scale); errors |5 - 4| and |1 - 4|, mean 2: MASE 1.
/// assert_eq!(mase(&[1.0, 2.0, 4.0, 3.0], &[5.0, 1.0], &[4.0, 4.0], 2), Some(1.0));
/// ```
pub fn mase(insample: &[f64], actual: &[f64], forecast: &[f64], period: usize) -> Option<f64> {
    let scale = mase_scale(insample, period)?;
    if actual.is_empty() || actual.len() != forecast.len() {
        return Some(f64::NAN);
    }
    let mae = actual
        .iter()
        .zip(forecast)
        .map(|(y, f)| (y - f).abs())
        .sum::<f64>()
        / actual.len() as f64;
    Some(mae / scale)
}

/// MSIS, the M4 measure of prediction intervals at level `1 - a` (a = 0.05 for 95%):
/// `mean(hi - lo + 2/a (lo - y) [y < lo] + 2/a (y - hi) [y > hi]) / scale`, with the MASE
/// scale. `None` when the scale is undefined.
///
/// ```
/// use agentwire_twin::m4::metrics::msis;
/// // Scale 2; widths 2 and 2; the second value lies 1 above hi: (2 + 2 + 40 * 1) / 2 / 2.
/// let v = msis(&[1.0, 2.0, 4.0, 3.0], &[5.0, 7.0], &[4.0, 4.0], &[6.0, 6.0], 2, 0.05);
/// assert_eq!(v, Some(11.0));
/// ```
pub fn msis(
    insample: &[f64],
    actual: &[f64],
    lo: &[f64],
    hi: &[f64],
    period: usize,
    a: f64,
) -> Option<f64> {
    let scale = mase_scale(insample, period)?;
    if actual.is_empty() || actual.len() != lo.len() || actual.len() != hi.len() {
        return Some(f64::NAN);
    }
    let penalty = 2.0 / a;
    let sum: f64 = actual
        .iter()
        .zip(lo.iter().zip(hi))
        .map(|(y, (l, h))| {
            let mut s = h - l;
            if y < l {
                s += penalty * (l - y);
            }
            if y > h {
                s += penalty * (y - h);
            }
            s
        })
        .sum();
    Some(sum / actual.len() as f64 / scale)
}

/// The share of actual values inside `[lo, hi]`.
///
/// ```
/// use agentwire_twin::m4::metrics::coverage;
/// assert_eq!(coverage(&[1.0, 5.0], &[0.0, 0.0], &[2.0, 2.0]), 0.5);
/// ```
pub fn coverage(actual: &[f64], lo: &[f64], hi: &[f64]) -> f64 {
    if actual.is_empty() {
        return f64::NAN;
    }
    let inside = actual
        .iter()
        .zip(lo.iter().zip(hi))
        .filter(|(y, (l, h))| *l <= *y && *y <= *h)
        .count();
    inside as f64 / actual.len() as f64
}

/// OWA: the mean of a method's sMAPE and MASE relative to Naive2's, each averaged over the
/// same series first: `(smape / smape_naive2 + mase / mase_naive2) / 2`.
///
/// ```
/// use agentwire_twin::m4::metrics::owa;
/// // The published hourly seasonal naive: sMAPE 13.912, MASE 1.193 against Naive2's
/// // 18.383 and 2.395 gives 0.627.
/// assert!((owa(13.912, 1.193, 18.383, 2.395) - 0.627).abs() < 5e-4);
/// ```
pub fn owa(smape: f64, mase: f64, smape_naive2: f64, mase_naive2: f64) -> f64 {
    0.5 * (smape / smape_naive2 + mase / mase_naive2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smape_matches_hand_computed_values() {
        // |10 - 8| / 18 = 1/9, |20 - 25| / 45 = 1/9, |5 - 5| = 0: 200 / 3 * 2/9 = 14.8148...
        let s = smape(&[10.0, 20.0, 5.0], &[8.0, 25.0, 5.0]);
        assert!((s - 400.0 / 27.0).abs() < 1e-12, "{s}");
        assert_eq!(smape(&[0.0], &[0.0]), 0.0);
        assert_eq!(smape(&[1.0], &[-1.0]), 200.0);
        assert!(smape(&[], &[]).is_nan());
    }

    #[test]
    fn mase_matches_a_hand_computed_value() {
        // m = 3 over 2, 4, 6, 3, 5, 9: |3 - 2| + |5 - 4| + |9 - 6| = 5, scale 5/3.
        // Errors |10 - 7| and |1 - 2|: MAE 2; MASE 2 / (5/3) = 1.2.
        let insample = [2.0, 4.0, 6.0, 3.0, 5.0, 9.0];
        let v = mase(&insample, &[10.0, 1.0], &[7.0, 2.0], 3).unwrap();
        assert!((v - 1.2).abs() < 1e-12, "{v}");
        assert_eq!(mase(&[1.0, 2.0], &[1.0], &[1.0], 2), None);
    }

    #[test]
    fn msis_adds_the_penalty_below_the_interval() {
        // Scale 1 (m = 1 over 0, 1, 2); width 1, y = 0 lies 1 under lo = 1: 1 + 40 = 41.
        let v = msis(&[0.0, 1.0, 2.0], &[0.0], &[1.0], &[2.0], 1, 0.05).unwrap();
        assert!((v - 41.0).abs() < 1e-12);
    }

    #[test]
    fn owa_of_naive2_is_one() {
        assert_eq!(owa(18.0, 2.0, 18.0, 2.0), 1.0);
    }
}
