//! Statistical forecasters with prediction intervals.
//!
//! A [`Forecaster`] takes a history (`&[f64]`, oldest first, evenly spaced), a horizon and
//! a seasonal period and returns a [`Forecast`]: point forecasts and a central prediction
//! interval per step. The methods ([`Method`]) are the M4 competition's statistical
//! benchmarks (naive, seasonal naive, Naive2, SES, Holt, damped, their combination, Theta),
//! Holt-Winters with additive or multiplicative seasonality, an autoregression on the
//! seasonal difference, and an ensemble (a median) over several of them.
//!
//! # Prediction intervals
//!
//! Every method produces in-sample one-step forecasts; `sigma` is the root mean square of
//! their errors (the one-step residuals). The interval at step h is
//! `point ± z * sigma * sqrt(v_h)`, with `z` the normal quantile of the level (1.96 for
//! 95%) and `v_h` the method's h-step variance factor: `h` for naive and Naive2 (a random
//! walk), `1 + floor((h - 1) / m)` for seasonal naive, and for the exponential smoothing
//! methods and Theta `1 + sum_{j<h} c_j^2` with `c_j = alpha + beta (phi + ... + phi^j)
//! (+ gamma when j is a multiple of m)` (Hyndman et al., 2008, class 1); for the seasonal
//! autoregression the sum of its squared psi weights. The ensemble takes its own one-step
//! residuals (of the median of the members' one-step forecasts) and the mean of its
//! members' factors. The intervals assume
//! normal errors; they are as good as the model's fit (the M4 evaluation reports their
//! coverage).

pub mod decompose;
pub mod ensemble;
pub mod holt_winters;
pub mod naive;
pub mod optimise;
pub mod seasonal_ar;
pub mod smoothing;
pub mod theta;

use decompose::{Deseasonalised, SeasonKind};
use smoothing::Trend;

/// What a method computes before intervals are added.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Fit {
    /// Point forecasts, one per step.
    pub point: Vec<f64>,
    /// One-step in-sample forecasts, one per history value (NaN where there is none).
    pub fitted: Vec<f64>,
    /// The h-step forecast variance over the one-step variance, one per step.
    pub variance: Vec<f64>,
}

/// Why a forecast could not be made.
///
/// ```
/// use agentwire_twin::forecast::{ForecastError, Forecaster, Method};
/// let e = Forecaster::new(Method::Naive).forecast(&[1.0], 0).unwrap_err();
/// assert_eq!(e, ForecastError::ZeroHorizon);
/// ```
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum ForecastError {
    /// The history is too short for the method.
    #[error("{method} needs a history of at least {needed} values, this one has {got}")]
    TooShort {
        /// The method's name.
        method: &'static str,
        /// The fewest values it needs.
        needed: usize,
        /// The values given.
        got: usize,
    },
    /// A history value is NaN or infinite.
    #[error("history value {index} (0-based) is not a finite number: {value}")]
    NotFinite {
        /// Its position.
        index: usize,
        /// The value.
        value: f64,
    },
    /// A horizon of 0 steps.
    #[error("the horizon must be at least 1 step")]
    ZeroHorizon,
    /// A seasonal period of 0.
    #[error("the season length must be at least 1 (1 means no seasonality)")]
    ZeroSeason,
    /// An interval level outside (0, 1).
    #[error("the interval level must lie strictly between 0 and 1, not {0}")]
    BadLevel(f64),
    /// A name that is no method.
    #[error("no forecasting method is called {name:?}; the methods are: {}", Method::names().join(", "))]
    UnknownMethod {
        /// The name given.
        name: String,
    },
    /// The method's fit failed on this history (a multiplicative model on values that are not
    /// positive, or a fit that diverged).
    #[error("{method} cannot be fitted to this history{hint}")]
    FitFailed {
        /// The method's name.
        method: &'static str,
        /// What may help.
        hint: &'static str,
    },
}

/// A forecasting method.
///
/// ```
/// use agentwire_twin::forecast::Method;
/// assert_eq!(Method::Ensemble.to_string(), "ensemble");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Method {
    /// The last value repeated.
    Naive,
    /// The last period repeated.
    SeasonalNaive,
    /// The M4 benchmark: naive on the seasonally adjusted series, reseasonalised.
    Naive2,
    /// Simple exponential smoothing on the seasonally adjusted series (M4 benchmark).
    Ses,
    /// Holt's linear trend on the seasonally adjusted series (M4 benchmark).
    Holt,
    /// The damped trend on the seasonally adjusted series (M4 benchmark).
    Damped,
    /// The mean of SES, Holt and damped (the M4 benchmark "Comb").
    Comb,
    /// The standard Theta method (M4 benchmark).
    Theta,
    /// Holt-Winters, additive seasonality, damped trend.
    HoltWintersAdditive,
    /// Holt-Winters, multiplicative seasonality, damped trend.
    HoltWintersMultiplicative,
    /// Autoregression on the seasonal difference ([`seasonal_ar::SeasonalAr::standard`]).
    SeasonalAr,
    /// The median of five members (seasonal-difference autoregressions, Holt-Winters; see
    /// [`ensemble`]).
    Ensemble,
}

impl Method {
    /// Every method, in the order reports list them.
    ///
    /// ```
    /// use agentwire_twin::forecast::Method;
    /// assert_eq!(Method::ALL.len(), Method::names().len());
    /// ```
    pub const ALL: [Method; 12] = [
        Method::Naive,
        Method::SeasonalNaive,
        Method::Naive2,
        Method::Ses,
        Method::Holt,
        Method::Damped,
        Method::Comb,
        Method::Theta,
        Method::HoltWintersAdditive,
        Method::HoltWintersMultiplicative,
        Method::SeasonalAr,
        Method::Ensemble,
    ];

    /// The method's name on the command line and in reports.
    ///
    /// ```
    /// use agentwire_twin::forecast::Method;
    /// assert_eq!(Method::SeasonalNaive.name(), "snaive");
    /// ```
    pub fn name(self) -> &'static str {
        match self {
            Method::Naive => "naive",
            Method::SeasonalNaive => "snaive",
            Method::Naive2 => "naive2",
            Method::Ses => "ses",
            Method::Holt => "holt",
            Method::Damped => "damped",
            Method::Comb => "comb",
            Method::Theta => "theta",
            Method::HoltWintersAdditive => "hw-add",
            Method::HoltWintersMultiplicative => "hw-mul",
            Method::SeasonalAr => "sar",
            Method::Ensemble => "ensemble",
        }
    }

    /// Every method's name.
    ///
    /// ```
    /// use agentwire_twin::forecast::Method;
    /// assert!(Method::names().contains(&"theta"));
    /// ```
    pub fn names() -> Vec<&'static str> {
        Self::ALL.iter().map(|m| m.name()).collect()
    }

    /// The method called `name`.
    ///
    /// ```
    /// use agentwire_twin::forecast::Method;
    /// assert_eq!(Method::from_name("naive2").unwrap(), Method::Naive2);
    /// assert!(Method::from_name("arima").is_err());
    /// ```
    pub fn from_name(name: &str) -> Result<Self, ForecastError> {
        Self::ALL
            .iter()
            .copied()
            .find(|m| m.name() == name)
            .ok_or_else(|| ForecastError::UnknownMethod {
                name: name.to_string(),
            })
    }

    /// The fewest history values the method needs for seasonal period `period`.
    ///
    /// ```
    /// use agentwire_twin::forecast::Method;
    /// assert_eq!(Method::SeasonalNaive.min_history(24), 24);
    /// assert_eq!(Method::HoltWintersAdditive.min_history(24), 48);
    /// ```
    pub fn min_history(self, period: usize) -> usize {
        match self {
            Method::Naive | Method::Naive2 => 1,
            Method::SeasonalNaive => period.max(1),
            Method::Ses | Method::Theta => 3,
            Method::Holt | Method::Damped | Method::Comb => 4,
            Method::HoltWintersAdditive | Method::HoltWintersMultiplicative => (2 * period).max(4),
            Method::SeasonalAr => {
                seasonal_ar::SeasonalAr::standard(period, period, &[], false).min_history()
            }
            Method::Ensemble => ensemble::min_history(period),
        }
    }
}

impl std::fmt::Display for Method {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Point forecasts and a central prediction interval per step.
///
/// ```
/// use agentwire_twin::forecast::{Forecaster, Method};
/// let f = Forecaster::new(Method::Naive).forecast(&[2.0, 4.0, 3.0], 2).unwrap();
/// assert_eq!((f.point.len(), f.lo.len(), f.hi.len(), f.level), (2, 2, 2, 0.95));
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct Forecast {
    /// The method that made it.
    pub method: Method,
    /// Point forecasts, step 1 first.
    pub point: Vec<f64>,
    /// The interval's lower bounds.
    pub lo: Vec<f64>,
    /// The interval's upper bounds.
    pub hi: Vec<f64>,
    /// The interval's nominal coverage (0.95 for 95%).
    pub level: f64,
    /// The root mean square of the in-sample one-step errors.
    pub sigma: f64,
}

/// Makes forecasts: a method, a seasonal period and an interval level.
///
/// ```
/// use agentwire_twin::forecast::{Forecaster, Method};
/// let history: Vec<f64> = (0..96).map(|t| 10.0 + (t % 24) as f64).collect();
/// let f = Forecaster::new(Method::SeasonalNaive).season(24).forecast(&history, 48).unwrap();
/// assert_eq!(f.point.len(), 48);
/// assert_eq!(f.point[0], 10.0);
/// assert!(f.lo[0] <= f.point[0] && f.point[0] <= f.hi[0]);
/// ```
#[derive(Clone, Debug)]
pub struct Forecaster {
    method: Method,
    season: usize,
    level: f64,
}

impl Forecaster {
    /// A forecaster for `method`, with no seasonality (period 1) and 95% intervals.
    ///
    /// ```
    /// use agentwire_twin::forecast::{Forecaster, Method};
    /// let f = Forecaster::new(Method::Naive).forecast(&[1.0, 2.0], 1).unwrap();
    /// assert_eq!(f.point, vec![2.0]);
    /// ```
    pub fn new(method: Method) -> Self {
        Self {
            method,
            season: 1,
            level: 0.95,
        }
    }

    /// The seasonal period in steps (24 for hourly data with a daily cycle; 1 for none).
    ///
    /// ```
    /// use agentwire_twin::forecast::{Forecaster, Method};
    /// let f = Forecaster::new(Method::SeasonalNaive).season(2).forecast(&[1.0, 2.0], 3).unwrap();
    /// assert_eq!(f.point, vec![1.0, 2.0, 1.0]);
    /// ```
    pub fn season(mut self, period: usize) -> Self {
        self.season = period;
        self
    }

    /// The prediction intervals' nominal coverage, in (0, 1); 0.95 by default.
    ///
    /// ```
    /// use agentwire_twin::forecast::{Forecaster, Method};
    /// let h = [1.0, 3.0, 2.0, 4.0];
    /// let wide = Forecaster::new(Method::Naive).level(0.99).forecast(&h, 1).unwrap();
    /// let narrow = Forecaster::new(Method::Naive).level(0.5).forecast(&h, 1).unwrap();
    /// assert!(wide.hi[0] - wide.lo[0] > narrow.hi[0] - narrow.lo[0]);
    /// ```
    pub fn level(mut self, level: f64) -> Self {
        self.level = level;
        self
    }

    /// Forecasts `horizon` steps after `history`.
    ///
    /// ```
    /// use agentwire_twin::forecast::{ForecastError, Forecaster, Method};
    /// let err = Forecaster::new(Method::Theta).forecast(&[1.0], 4).unwrap_err();
    /// assert!(matches!(err, ForecastError::TooShort { needed: 3, got: 1, .. }));
    /// ```
    pub fn forecast(&self, history: &[f64], horizon: usize) -> Result<Forecast, ForecastError> {
        if horizon == 0 {
            return Err(ForecastError::ZeroHorizon);
        }
        if self.season == 0 {
            return Err(ForecastError::ZeroSeason);
        }
        if !(self.level > 0.0 && self.level < 1.0) {
            return Err(ForecastError::BadLevel(self.level));
        }
        if let Some((index, value)) = history.iter().enumerate().find(|(_, v)| !v.is_finite()) {
            return Err(ForecastError::NotFinite {
                index,
                value: *value,
            });
        }
        let needed = self.method.min_history(self.season);
        if history.len() < needed {
            return Err(ForecastError::TooShort {
                method: self.method.name(),
                needed,
                got: history.len(),
            });
        }
        let fit =
            fit(self.method, history, self.season, horizon).ok_or(ForecastError::FitFailed {
                method: self.method.name(),
                hint: hint(self.method),
            })?;
        Ok(with_intervals(self.method, history, fit, self.level))
    }
}

fn hint(method: Method) -> &'static str {
    match method {
        Method::HoltWintersMultiplicative => {
            " (multiplicative seasonality needs positive values; try hw-add or ensemble)"
        }
        _ => "",
    }
}

/// Runs `method` (the history is valid and long enough).
pub(crate) fn fit(method: Method, y: &[f64], period: usize, horizon: usize) -> Option<Fit> {
    let m4_style = |trend: Trend| {
        let d = Deseasonalised::m4(y, period);
        let inner = smoothing::TrendModel::fit_forecast(&d.adjusted, trend, horizon)?;
        Some(naive::reseasonalise(&d, inner))
    };
    let fit = match method {
        Method::Naive => naive::naive_fit(y, horizon),
        Method::SeasonalNaive => naive::seasonal_naive_fit(y, period, horizon),
        Method::Naive2 => naive::naive2_fit(y, period, horizon),
        Method::Ses => m4_style(Trend::None),
        Method::Holt => m4_style(Trend::Linear),
        Method::Damped => m4_style(Trend::Damped),
        Method::Comb => {
            let d = Deseasonalised::m4(y, period);
            let members = [Trend::None, Trend::Linear, Trend::Damped]
                .iter()
                .map(|t| smoothing::TrendModel::fit_forecast(&d.adjusted, *t, horizon))
                .collect::<Option<Vec<_>>>()?;
            Some(naive::reseasonalise(&d, combine_mean(&members)))
        }
        Method::Theta => theta::theta_fit(y, period, horizon),
        Method::HoltWintersAdditive => holt_winters::HoltWinters::fit_forecast(
            y,
            period,
            Trend::Damped,
            SeasonKind::Additive,
            horizon,
        ),
        Method::HoltWintersMultiplicative => holt_winters::HoltWinters::fit_forecast(
            y,
            period,
            Trend::Damped,
            SeasonKind::Multiplicative,
            horizon,
        ),
        Method::SeasonalAr => {
            seasonal_ar::SeasonalAr::standard(period, period, &[], false).fit(y, horizon)
        }
        Method::Ensemble => ensemble::fit(y, period, horizon),
    }?;
    fit.point.iter().all(|v| v.is_finite()).then_some(fit)
}

/// The element-wise mean of fits (points, fitted values, variance factors).
pub(crate) fn combine_mean(members: &[Fit]) -> Fit {
    let mean = |get: &dyn Fn(&Fit) -> &Vec<f64>| -> Vec<f64> {
        let len = members.first().map_or(0, |m| get(m).len());
        (0..len)
            .map(|i| members.iter().map(|m| get(m)[i]).sum::<f64>() / members.len() as f64)
            .collect()
    };
    Fit {
        point: mean(&|m| &m.point),
        fitted: mean(&|m| &m.fitted),
        variance: mean(&|m| &m.variance),
    }
}

/// Adds intervals from the one-step residuals (see the module doc).
fn with_intervals(method: Method, y: &[f64], fit: Fit, level: f64) -> Forecast {
    let (mut sum, mut count) = (0.0, 0usize);
    for (v, f) in y.iter().zip(&fit.fitted) {
        if f.is_finite() {
            sum += (v - f) * (v - f);
            count += 1;
        }
    }
    let sigma = if count > 0 {
        (sum / count as f64).sqrt()
    } else {
        0.0
    };
    let z = normal_quantile(0.5 + level / 2.0);
    let half: Vec<f64> = fit
        .variance
        .iter()
        .map(|v| z * sigma * v.max(0.0).sqrt())
        .collect();
    Forecast {
        method,
        lo: fit.point.iter().zip(&half).map(|(p, w)| p - w).collect(),
        hi: fit.point.iter().zip(&half).map(|(p, w)| p + w).collect(),
        point: fit.point,
        level,
        sigma,
    }
}

/// The standard normal quantile function (Acklam's rational approximation, relative error
/// under 1.2e-9), for `p` in (0, 1).
///
/// ```
/// use agentwire_twin::forecast::normal_quantile;
/// assert!((normal_quantile(0.975) - 1.959964).abs() < 1e-6);
/// assert!((normal_quantile(0.5)).abs() < 1e-12);
/// ```
pub fn normal_quantile(p: f64) -> f64 {
    const A: [f64; 6] = [
        -3.969683028665376e+01,
        2.209460984245205e+02,
        -2.759285104469687e+02,
        1.383_577_518_672_69e2,
        -3.066479806614716e+01,
        2.506628277459239e+00,
    ];
    const B: [f64; 5] = [
        -5.447609879822406e+01,
        1.615858368580409e+02,
        -1.556989798598866e+02,
        6.680131188771972e+01,
        -1.328068155288572e+01,
    ];
    const C: [f64; 6] = [
        -7.784894002430293e-03,
        -3.223964580411365e-01,
        -2.400758277161838e+00,
        -2.549732539343734e+00,
        4.374664141464968e+00,
        2.938163982698783e+00,
    ];
    const D: [f64; 4] = [
        7.784695709041462e-03,
        3.224671290700398e-01,
        2.445134137142996e+00,
        3.754408661907416e+00,
    ];
    const P_LOW: f64 = 0.02425;
    if p <= 0.0 {
        return f64::NEG_INFINITY;
    }
    if p >= 1.0 {
        return f64::INFINITY;
    }
    let tail = |q: f64| {
        (((((C[0] * q + C[1]) * q + C[2]) * q + C[3]) * q + C[4]) * q + C[5])
            / ((((D[0] * q + D[1]) * q + D[2]) * q + D[3]) * q + 1.0)
    };
    if p < P_LOW {
        tail((-2.0 * p.ln()).sqrt())
    } else if p > 1.0 - P_LOW {
        -tail((-2.0 * (1.0 - p).ln()).sqrt())
    } else {
        let q = p - 0.5;
        let r = q * q;
        (((((A[0] * r + A[1]) * r + A[2]) * r + A[3]) * r + A[4]) * r + A[5]) * q
            / (((((B[0] * r + B[1]) * r + B[2]) * r + B[3]) * r + B[4]) * r + 1.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for m in Method::ALL {
            assert_eq!(Method::from_name(m.name()).unwrap(), m);
        }
    }

    #[test]
    fn bad_input_is_an_error_not_a_panic() {
        let f = Forecaster::new(Method::Ensemble).season(24);
        assert_eq!(f.forecast(&[1.0; 100], 0), Err(ForecastError::ZeroHorizon));
        assert!(matches!(
            f.forecast(&[1.0, f64::NAN], 3),
            Err(ForecastError::NotFinite { index: 1, .. })
        ));
        assert!(matches!(
            f.forecast(&[], 3),
            Err(ForecastError::TooShort { got: 0, .. })
        ));
        assert_eq!(
            Forecaster::new(Method::Naive).season(0).forecast(&[1.0], 1),
            Err(ForecastError::ZeroSeason)
        );
        assert_eq!(
            Forecaster::new(Method::Naive)
                .level(1.0)
                .forecast(&[1.0], 1),
            Err(ForecastError::BadLevel(1.0))
        );
        for m in Method::ALL {
            let f = Forecaster::new(m).season(4);
            for history in [vec![], vec![0.0; 9], vec![-3.0; 40], vec![1e300; 40]] {
                let _ = f.forecast(&history, 8);
            }
        }
    }

    #[test]
    fn naive_interval_matches_a_hand_computed_case() {
        // Residuals of naive on 1, 3, 2, 4: 2, -1, 2; sigma = sqrt(9 / 3) = sqrt(3).
        // Step 2: 4 +- 1.959964 * sqrt(3) * sqrt(2).
        let f = Forecaster::new(Method::Naive)
            .forecast(&[1.0, 3.0, 2.0, 4.0], 2)
            .unwrap();
        assert!((f.sigma - 3f64.sqrt()).abs() < 1e-12);
        let half = 1.959_963_985 * 6f64.sqrt();
        assert!((f.hi[1] - (4.0 + half)).abs() < 1e-6 && (f.lo[1] - (4.0 - half)).abs() < 1e-6);
    }

    #[test]
    fn every_method_forecasts_a_seasonal_series() {
        let y: Vec<f64> = (0..24 * 30)
            .map(|t| {
                100.0
                    + 0.05 * t as f64
                    + 20.0 * ((t % 24) as f64 / 24.0 * std::f64::consts::TAU).sin()
            })
            .collect();
        for m in Method::ALL {
            let f = Forecaster::new(m).season(24).forecast(&y, 48).unwrap();
            assert_eq!(f.point.len(), 48, "{m}");
            assert!(f.point.iter().all(|v| v.is_finite()), "{m}");
            assert!(f.lo.iter().zip(&f.hi).all(|(l, h)| l <= h), "{m}");
        }
    }

    #[test]
    fn normal_quantile_is_symmetric() {
        for p in [0.001, 0.01, 0.1, 0.3] {
            assert!((normal_quantile(p) + normal_quantile(1.0 - p)).abs() < 1e-9);
        }
        assert!((normal_quantile(0.95) - 1.644_853_6).abs() < 1e-6);
    }
}
