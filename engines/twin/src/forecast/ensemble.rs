//! The ensemble: the step-wise median of a fixed set of members, the same set for every
//! series (no per-series choice, no tuning on the series forecast).
//!
//! For a seasonal period `m >= 2`, and with `w = 7m` the week when `m = 24` (hourly data):
//!
//! 1. [`SeasonalAr`] on the `m`-difference ([`SeasonalAr::standard`] lags);
//! 2. the same on `ln y` (multiplicative; skipped for non-positive data);
//! 3. [`SeasonalAr`] on the `w`-difference, lags as 1 plus `2w` (hourly only);
//! 4. Holt-Winters, multiplicative season `m`, no trend;
//! 5. the series divided by classical multiplicative weekly indices (period `w`), Holt-Winters
//!    with additive season `m` and a damped trend on that, multiplied back (hourly only);
//!    for other periods, the M4 Theta method instead.
//!
//! A member that cannot be fitted (history too short for its lags, values that are not
//! positive for a multiplicative one) is left out and the median taken over the others.
//! With `m = 1` the members are SES, the damped trend and Theta.
//!
//! Why these: screened on the M4 hourly development series with the last 48 values of each
//! training series held out (never the test values), as documented in docs/twin.md; the
//! median of these five had the lowest hold-out OWA of the combinations tried, and the
//! median is robust to one member going astray (a frozen Holt-Winters season, a weekly
//! model on a series without a week).

use super::decompose::{Deseasonalised, SeasonKind};
use super::holt_winters::HoltWinters;
use super::seasonal_ar::SeasonalAr;
use super::smoothing::Trend;
use super::{fit as fit_method, naive, Fit, Method};

/// The period of hourly data's daily cycle, for which a weekly period (7 days) is added.
///
/// ```
/// assert_eq!(agentwire_twin::forecast::ensemble::HOURLY_PERIOD * 7, 168);
/// ```
pub const HOURLY_PERIOD: usize = 24;

pub(crate) fn min_history(period: usize) -> usize {
    (2 * period).max(4)
}

pub(crate) fn fit(y: &[f64], period: usize, horizon: usize) -> Option<Fit> {
    let members: Vec<Fit> = if period < 2 {
        [Method::Ses, Method::Damped, Method::Theta]
            .iter()
            .filter_map(|m| fit_method(*m, y, period, horizon))
            .collect()
    } else {
        seasonal_members(y, period, horizon)
    };
    if members.is_empty() {
        return None;
    }
    Some(combine_median(&members))
}

fn seasonal_members(y: &[f64], m: usize, horizon: usize) -> Vec<Fit> {
    let week = (m == HOURLY_PERIOD).then_some(7 * m);
    let mut out = Vec::with_capacity(5);
    out.extend(SeasonalAr::standard(m, m, &[], false).fit(y, horizon));
    out.extend(SeasonalAr::standard(m, m, &[], true).fit(y, horizon));
    if let Some(w) = week {
        out.extend(SeasonalAr::standard(w, m, &[2 * w], false).fit(y, horizon));
    }
    out.extend(HoltWinters::fit_forecast(
        y,
        m,
        Trend::None,
        SeasonKind::Multiplicative,
        horizon,
    ));
    let fifth = match week {
        Some(w) => Deseasonalised::with_indices(y, w, SeasonKind::Multiplicative).and_then(|d| {
            let inner = HoltWinters::fit_forecast(
                &d.adjusted,
                m,
                Trend::Damped,
                SeasonKind::Additive,
                horizon,
            )?;
            Some(naive::reseasonalise(&d, inner))
        }),
        None => fit_method(Method::Theta, y, m, horizon),
    };
    out.extend(fifth);
    out.retain(|f| f.point.iter().all(|v| v.is_finite()));
    out
}

/// The step-wise median of the members' points and fitted values (NaN members skipped);
/// the mean of their variance factors.
fn combine_median(members: &[Fit]) -> Fit {
    let median_at = |get: &dyn Fn(&Fit) -> &Vec<f64>, i: usize| -> f64 {
        let mut v: Vec<f64> = members
            .iter()
            .filter_map(|m| get(m).get(i).copied())
            .filter(|v| v.is_finite())
            .collect();
        median(&mut v)
    };
    let horizon = members[0].point.len();
    let len = members[0].fitted.len();
    Fit {
        point: (0..horizon).map(|i| median_at(&|m| &m.point, i)).collect(),
        fitted: (0..len).map(|i| median_at(&|m| &m.fitted, i)).collect(),
        variance: (0..horizon)
            .map(|i| members.iter().map(|m| m.variance[i]).sum::<f64>() / members.len() as f64)
            .collect(),
    }
}

/// The median (the mean of the middle two for an even count); NaN when empty.
fn median(v: &mut [f64]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let l = v.len();
    if l % 2 == 1 {
        v[l / 2]
    } else {
        0.5 * (v[l / 2 - 1] + v[l / 2])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(&mut []).is_nan());
    }

    #[test]
    fn hourly_series_get_five_members() {
        let y: Vec<f64> = (0..24 * 30)
            .map(|t| {
                let day = (t % 24) as f64 / 24.0 * std::f64::consts::TAU;
                let week = if (t / 24) % 7 >= 5 { 0.8 } else { 1.0 };
                week * (50.0 + 10.0 * day.sin()) + ((t as f64) * 12.9898).sin()
            })
            .collect();
        assert_eq!(seasonal_members(&y, 24, 48).len(), 5);
        // Negative values: the log and multiplicative members drop out.
        let shifted: Vec<f64> = y.iter().map(|v| v - 60.0).collect();
        let n = seasonal_members(&shifted, 24, 48).len();
        assert!((2..5).contains(&n), "{n}");
    }

    #[test]
    fn median_ignores_one_member_gone_astray() {
        let f = |p: f64| Fit {
            point: vec![p],
            fitted: vec![p],
            variance: vec![1.0],
        };
        let c = combine_median(&[f(1.0), f(2.0), f(1000.0)]);
        assert_eq!(c.point, vec![2.0]);
    }
}
