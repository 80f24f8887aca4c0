//! Seasonality: the M4 benchmarks' autocorrelation test and classical decomposition
//! (R's `stats::decompose`), used to deseasonalise a series before a non-seasonal method and
//! to reseasonalise its forecasts.

/// The sample autocorrelation at `lag`, as R's `acf`: the lagged sum of products of
/// deviations from the mean over the whole-series sum of squares. 0 for a constant series
/// or a lag not shorter than the series.
///
/// ```
/// use agentwire_twin::forecast::decompose::acf;
/// // Deviations -1.5, -0.5, 0.5, 1.5: lag 1 gives (0.75 - 0.25 + 0.75) / 5 = 0.25.
/// assert!((acf(&[1.0, 2.0, 3.0, 4.0], 1) - 0.25).abs() < 1e-12);
/// ```
pub fn acf(series: &[f64], lag: usize) -> f64 {
    let n = series.len();
    if lag >= n {
        return 0.0;
    }
    let mean = series.iter().sum::<f64>() / n as f64;
    let denominator: f64 = series.iter().map(|x| (x - mean) * (x - mean)).sum();
    if denominator <= 0.0 {
        return 0.0;
    }
    let numerator: f64 = (lag..n)
        .map(|t| (series[t] - mean) * (series[t - lag] - mean))
        .sum();
    numerator / denominator
}

/// The M4 benchmarks' seasonality test (`SeasonalityTest` in the competition's
/// "Benchmarks and Evaluation.R"): seasonal when `|acf(m)|` exceeds the 90% one-sided limit
/// `1.645 / sqrt(n) * sqrt(1 + 2 * sum_{k=1}^{m-1} acf(k)^2)`. A series shorter than three
/// seasons, or a period below 2, is not seasonal.
///
/// (The competition's Python port, `seasonality_test` in `ML_benchmarks.py`, adds `acf(1)`
/// unsquared; the R code is the one the published Naive2 figures came from, so it is the
/// one followed here.)
///
/// ```
/// use agentwire_twin::forecast::decompose::seasonality_test;
/// let daily: Vec<f64> = (0..24 * 10).map(|t| 10.0 + ((t % 24) as f64 / 24.0 * std::f64::consts::TAU).sin()).collect();
/// assert!(seasonality_test(&daily, 24));
/// assert!(!seasonality_test(&daily[..70], 24)); // under three seasons
/// ```
pub fn seasonality_test(series: &[f64], period: usize) -> bool {
    let n = series.len();
    if period < 2 || n < 3 * period {
        return false;
    }
    let sum_squares: f64 = (1..period).map(|k| acf(series, k).powi(2)).sum();
    let limit = 1.645 / (n as f64).sqrt() * (1.0 + 2.0 * sum_squares).sqrt();
    acf(series, period).abs() > limit
}

/// How a seasonal component combines with the rest of the series.
///
/// ```
/// use agentwire_twin::forecast::decompose::{seasonal_indices, SeasonKind};
/// let y = [1.0, 3.0, 1.0, 3.0, 1.0, 3.0];
/// let s = seasonal_indices(&y, 2, SeasonKind::Additive).unwrap();
/// assert!((s[0] + 1.0).abs() < 1e-12 && (s[1] - 1.0).abs() < 1e-12);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SeasonKind {
    /// `y = trend + season + remainder`; indices sum to 0 over a period.
    Additive,
    /// `y = trend * season * remainder`; indices average 1 over a period.
    Multiplicative,
}

/// Seasonal indices by classical decomposition, as R's `decompose`: a centred moving
/// average of length `period` (a 2x`period` one for an even period) as the trend, the
/// ratios (or differences) of the series to it averaged per position in the period, then
/// normalised to average 1 (or 0). Index `i` belongs to the positions `t` with
/// `t % period == i`, counted from the series' first value.
///
/// `None` when the series is shorter than two periods, the period is below 2, or (for a
/// multiplicative decomposition) a trend value is not positive.
///
/// ```
/// use agentwire_twin::forecast::decompose::{seasonal_indices, SeasonKind};
/// // A period-4 pattern on a constant level: the indices are the pattern over its mean.
/// let y: Vec<f64> = (0..16).map(|t| [8.0, 12.0, 10.0, 10.0][t % 4]).collect();
/// let s = seasonal_indices(&y, 4, SeasonKind::Multiplicative).unwrap();
/// assert!((s[0] - 0.8).abs() < 1e-12 && (s[1] - 1.2).abs() < 1e-12);
/// ```
pub fn seasonal_indices(series: &[f64], period: usize, kind: SeasonKind) -> Option<Vec<f64>> {
    let n = series.len();
    if period < 2 || n < 2 * period {
        return None;
    }
    let trend = centred_moving_average(series, period);
    let mut sums = vec![0.0; period];
    let mut counts = vec![0usize; period];
    for (t, tr) in trend.iter().enumerate() {
        let Some(tr) = tr else { continue };
        let detrended = match kind {
            SeasonKind::Additive => series[t] - tr,
            SeasonKind::Multiplicative => {
                if *tr <= 0.0 {
                    return None;
                }
                series[t] / tr
            }
        };
        sums[t % period] += detrended;
        counts[t % period] += 1;
    }
    if counts.contains(&0) {
        return None;
    }
    let mut figure: Vec<f64> = sums
        .iter()
        .zip(&counts)
        .map(|(s, c)| s / *c as f64)
        .collect();
    let mean = figure.iter().sum::<f64>() / period as f64;
    match kind {
        SeasonKind::Additive => figure.iter_mut().for_each(|f| *f -= mean),
        SeasonKind::Multiplicative => {
            if mean <= 0.0 {
                return None;
            }
            figure.iter_mut().for_each(|f| *f /= mean);
        }
    }
    figure.iter().all(|f| f.is_finite()).then_some(figure)
}

/// R's `filter(x, c(0.5, rep(1, p - 1), 0.5) / p, sides = 2)` for an even period `p`,
/// `filter(x, rep(1, p) / p, sides = 2)` for an odd one: `None` where the window does not
/// fit.
fn centred_moving_average(series: &[f64], period: usize) -> Vec<Option<f64>> {
    let n = series.len();
    let half = period / 2;
    let mut out = vec![None; n];
    if n <= 2 * half {
        return out;
    }
    for (t, slot) in out.iter_mut().enumerate().take(n - half).skip(half) {
        let window = &series[t - half..=t + half];
        let value = if period % 2 == 0 {
            let inner: f64 = window[1..window.len() - 1].iter().sum();
            (inner + 0.5 * (window[0] + window[window.len() - 1])) / period as f64
        } else {
            window.iter().sum::<f64>() / period as f64
        };
        *slot = Some(value);
    }
    out
}

/// A series with its seasonal component taken out, and the means to put it back.
///
/// ```
/// use agentwire_twin::forecast::decompose::{Deseasonalised, SeasonKind};
/// let y = [1.0, 3.0, 1.0, 3.0, 1.0, 3.0];
/// let d = Deseasonalised::with_indices(&y, 2, SeasonKind::Multiplicative).unwrap();
/// assert!((d.reseasonalise(d.adjusted[1], 1) - 3.0).abs() < 1e-12);
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct Deseasonalised {
    /// The adjusted series (the input itself when no seasonality was found).
    pub adjusted: Vec<f64>,
    /// The seasonal indices by position in the period (empty when none was found).
    pub indices: Vec<f64>,
    /// How the indices combine.
    pub kind: SeasonKind,
    /// The length of the input series (sets the phase of future indices).
    pub len: usize,
}

impl Deseasonalised {
    /// The M4 benchmarks' deseasonalisation: when [`seasonality_test`] finds the period,
    /// divide by the classical multiplicative indices; otherwise leave the series as it is.
    /// A multiplicative decomposition needs a positive trend: where it has none, the series is
    /// left as it is too.
    ///
    /// ```
    /// use agentwire_twin::forecast::decompose::Deseasonalised;
    /// let y: Vec<f64> = (0..96).map(|t| [8.0, 12.0, 10.0, 10.0][t % 4]).collect();
    /// let d = Deseasonalised::m4(&y, 4);
    /// assert!(d.adjusted.iter().all(|v| (v - 10.0).abs() < 1e-9));
    /// assert!((d.index_after(0) - 0.8).abs() < 1e-12); // step 1 is position 96 % 4 = 0
    /// ```
    pub fn m4(series: &[f64], period: usize) -> Self {
        if seasonality_test(series, period) {
            if let Some(d) = Self::with_indices(series, period, SeasonKind::Multiplicative) {
                return d;
            }
        }
        Self::none(series)
    }

    /// Deseasonalises by `kind` indices without testing; `None` where [`seasonal_indices`]
    /// gives none.
    ///
    /// ```
    /// use agentwire_twin::forecast::decompose::{Deseasonalised, SeasonKind};
    /// let y: Vec<f64> = (0..16).map(|t| [8.0, 12.0, 10.0, 10.0][t % 4] + t as f64).collect();
    /// let d = Deseasonalised::with_indices(&y, 4, SeasonKind::Additive).unwrap();
    /// assert_eq!(d.indices.len(), 4);
    /// ```
    pub fn with_indices(series: &[f64], period: usize, kind: SeasonKind) -> Option<Self> {
        let indices = seasonal_indices(series, period, kind)?;
        let adjusted = series
            .iter()
            .enumerate()
            .map(|(t, y)| match kind {
                SeasonKind::Additive => y - indices[t % period],
                SeasonKind::Multiplicative => y / indices[t % period],
            })
            .collect();
        Some(Self {
            adjusted,
            indices,
            kind,
            len: series.len(),
        })
    }

    /// No seasonal component: the series as it is.
    ///
    /// ```
    /// use agentwire_twin::forecast::decompose::Deseasonalised;
    /// let d = Deseasonalised::none(&[1.0, 2.0]);
    /// assert_eq!(d.index_after(5), 1.0);
    /// ```
    pub fn none(series: &[f64]) -> Self {
        Self {
            adjusted: series.to_vec(),
            indices: Vec::new(),
            kind: SeasonKind::Multiplicative,
            len: series.len(),
        }
    }

    /// Whether a seasonal component was taken out.
    ///
    /// ```
    /// use agentwire_twin::forecast::decompose::Deseasonalised;
    /// assert!(!Deseasonalised::none(&[1.0]).is_seasonal());
    /// ```
    pub fn is_seasonal(&self) -> bool {
        !self.indices.is_empty()
    }

    /// The index of in-sample position `t` (0-based), the neutral value when not seasonal.
    ///
    /// ```
    /// use agentwire_twin::forecast::decompose::Deseasonalised;
    /// assert_eq!(Deseasonalised::none(&[1.0]).index_at(0), 1.0);
    /// ```
    pub fn index_at(&self, t: usize) -> f64 {
        if self.indices.is_empty() {
            return self.neutral();
        }
        self.indices[t % self.indices.len()]
    }

    /// The index of forecast step `step` (0-based: step 0 follows the last value).
    ///
    /// ```
    /// use agentwire_twin::forecast::decompose::Deseasonalised;
    /// assert_eq!(Deseasonalised::none(&[1.0]).index_after(3), 1.0);
    /// ```
    pub fn index_after(&self, step: usize) -> f64 {
        self.index_at(self.len + step)
    }

    /// Puts the seasonal component back into an adjusted value at position `t` (in-sample
    /// positions first, then `len + step` for forecasts).
    ///
    /// ```
    /// use agentwire_twin::forecast::decompose::Deseasonalised;
    /// assert_eq!(Deseasonalised::none(&[1.0]).reseasonalise(4.0, 0), 4.0);
    /// ```
    pub fn reseasonalise(&self, value: f64, t: usize) -> f64 {
        match self.kind {
            SeasonKind::Additive => value + self.index_at(t),
            SeasonKind::Multiplicative => value * self.index_at(t),
        }
    }

    fn neutral(&self) -> f64 {
        match self.kind {
            SeasonKind::Additive => 0.0,
            SeasonKind::Multiplicative => 1.0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acf_matches_a_hand_computed_lag_two() {
        // Mean 3; deviations -2,-1,0,1,2; sum of squares 10; lag 2: (-2*0)+(-1*1)+(0*2) = -1.
        let x = [1.0, 2.0, 3.0, 4.0, 5.0];
        assert!((acf(&x, 2) + 0.1).abs() < 1e-12);
        assert_eq!(acf(&[2.0, 2.0, 2.0], 1), 0.0);
        assert_eq!(acf(&x, 9), 0.0);
    }

    #[test]
    fn seasonality_test_needs_three_seasons() {
        let y: Vec<f64> = (0..11).map(|t| [1.0, 5.0, 3.0, 2.0][t % 4]).collect();
        assert!(!seasonality_test(&y, 4));
        let y: Vec<f64> = (0..40).map(|t| [1.0, 5.0, 3.0, 2.0][t % 4]).collect();
        assert!(seasonality_test(&y, 4));
    }

    #[test]
    fn odd_periods_use_a_plain_moving_average() {
        let y: Vec<f64> = (0..9).map(|t| [1.0, 2.0, 3.0][t % 3]).collect();
        let ma = centred_moving_average(&y, 3);
        assert_eq!(ma[0], None);
        assert_eq!(ma[1], Some(2.0));
        assert_eq!(ma[8], None);
        let s = seasonal_indices(&y, 3, SeasonKind::Additive).unwrap();
        assert!((s[0] + 1.0).abs() < 1e-12 && s[1].abs() < 1e-12 && (s[2] - 1.0).abs() < 1e-12);
    }

    #[test]
    fn even_period_indices_match_a_hand_computed_case() {
        // Period 2 over 1,3,1,3,1,3: the 2x2 moving average is 2 at t = 1..=4, so the
        // ratios are 1.5 (t odd) and 0.5 (t even); their mean is 1.
        let y = [1.0, 3.0, 1.0, 3.0, 1.0, 3.0];
        let s = seasonal_indices(&y, 2, SeasonKind::Multiplicative).unwrap();
        assert!(
            (s[0] - 0.5).abs() < 1e-12 && (s[1] - 1.5).abs() < 1e-12,
            "{s:?}"
        );
    }

    #[test]
    fn multiplicative_indices_refuse_a_non_positive_trend() {
        let y: Vec<f64> = (0..12).map(|t| [-1.0, -3.0][t % 2]).collect();
        assert!(seasonal_indices(&y, 2, SeasonKind::Multiplicative).is_none());
        assert!(!Deseasonalised::m4(&y, 2).is_seasonal());
    }
}
