//! The M4 competition's data layout and its evaluation.
//!
//! - [`metrics`]: sMAPE, MASE, OWA (and MSIS and coverage for the intervals).
//! - [`load_dir`]: a directory holding `<Name>-train.csv` and `<Name>-test.csv`, one series
//!   per line as `id,v1,v2,...` (no header, variable length; a first line whose values are
//!   not numbers, like the original files' `"V1","V2",...`, is skipped as a header).
//! - [`evaluate`]: forecasts every series with each method and scores it against Naive2.

pub mod metrics;

use std::path::{Path, PathBuf};

use crate::forecast::{Forecaster, Method};

/// One series: its in-sample (train) values and the values to forecast (test).
///
/// ```
/// let s = agentwire_twin::m4::Series { id: "H1".into(), train: vec![1.0], test: vec![2.0] };
/// assert_eq!(s.id, "H1");
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    /// The series' id (`H1`, ...).
    pub id: String,
    /// The history.
    pub train: Vec<f64>,
    /// The values that followed it.
    pub test: Vec<f64>,
}

impl Series {
    /// The series with its test values dropped and its last `test.len()` train values
    /// held out as the test: a validation window inside the history, for choosing methods
    /// without looking at the real test values. `None` when the train part would be left
    /// with fewer values than the test.
    ///
    /// ```
    /// use agentwire_twin::m4::Series;
    /// let s = Series { id: "a".into(), train: vec![1.0, 2.0, 3.0, 4.0, 5.0], test: vec![6.0, 7.0] };
    /// let v = s.holdout().unwrap();
    /// assert_eq!((v.train, v.test), (vec![1.0, 2.0, 3.0], vec![4.0, 5.0]));
    /// ```
    pub fn holdout(&self) -> Option<Series> {
        let h = self.test.len();
        let n = self.train.len();
        if n < 2 * h {
            return None;
        }
        Some(Series {
            id: self.id.clone(),
            train: self.train[..n - h].to_vec(),
            test: self.train[n - h..].to_vec(),
        })
    }
}

/// Why a data set could not be read.
///
/// ```
/// let e = agentwire_twin::m4::load_dir(std::path::Path::new("/nonexistent/m4")).unwrap_err();
/// assert!(matches!(e, agentwire_twin::m4::M4Error::Io { .. }));
/// ```
#[derive(Debug, thiserror::Error)]
pub enum M4Error {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// A value is not a number.
    #[error("{path}:{line}: value {field} of series {id:?} is not a number: {text:?}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The line (1-based).
        line: usize,
        /// The field (1-based, the id being field 0).
        field: usize,
        /// The series id.
        id: String,
        /// The text found.
        text: String,
    },
    /// The directory lacks a train or test file.
    #[error("{dir}: no {what} file (expected <Name>-train.csv and <Name>-test.csv, as M4's Hourly-train.csv)")]
    Missing {
        /// The directory.
        dir: PathBuf,
        /// `train` or `test`.
        what: &'static str,
    },
    /// Train and test do not hold the same series.
    #[error("{0}")]
    Mismatch(String),
    /// No series at all.
    #[error("{0}: no series")]
    Empty(PathBuf),
}

/// Reads one M4-layout file: `(id, values)` per non-empty line. Empty fields (the padding of
/// shorter series in some copies) are skipped.
///
/// ```
/// # let dir = std::env::temp_dir().join(format!("aw-twin-doc-read-{}", std::process::id()));
/// # std::fs::create_dir_all(&dir).unwrap();
/// let path = dir.join("Hourly-train.csv");
/// std::fs::write(&path, "H1,1,2,3\nH2,4,5,,\n").unwrap();
/// let rows = agentwire_twin::m4::read_file(&path).unwrap();
/// assert_eq!(rows[1], ("H2".to_string(), vec![4.0, 5.0]));
/// # std::fs::remove_dir_all(&dir).unwrap();
/// ```
pub fn read_file(path: &Path) -> Result<Vec<(String, Vec<f64>)>, M4Error> {
    let text = std::fs::read_to_string(path).map_err(|source| M4Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let mut rows = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let mut fields = line.split(',').map(|f| f.trim().trim_matches('"'));
        let id = fields.next().unwrap_or_default().to_string();
        let mut values = Vec::new();
        let mut header = false;
        for (j, field) in fields.enumerate() {
            if field.is_empty() {
                continue;
            }
            match field.parse::<f64>() {
                Ok(v) if v.is_finite() => values.push(v),
                _ if i == 0 && j == 0 => {
                    header = true;
                    break;
                }
                _ => {
                    return Err(M4Error::Parse {
                        path: path.to_path_buf(),
                        line: i + 1,
                        field: j + 1,
                        id,
                        text: field.to_string(),
                    })
                }
            }
        }
        if !header {
            rows.push((id, values));
        }
    }
    Ok(rows)
}

/// Loads a directory holding `<Name>-train.csv` and `<Name>-test.csv` (the first such pair
/// in name order), matching series by id.
///
/// ```
/// # let dir = std::env::temp_dir().join(format!("aw-twin-doc-load-{}", std::process::id()));
/// # std::fs::create_dir_all(&dir).unwrap();
/// std::fs::write(dir.join("Hourly-train.csv"), "H1,1,2,3\n").unwrap();
/// std::fs::write(dir.join("Hourly-test.csv"), "H1,4,5\n").unwrap();
/// let set = agentwire_twin::m4::load_dir(&dir).unwrap();
/// assert_eq!(set[0].test, vec![4.0, 5.0]);
/// # std::fs::remove_dir_all(&dir).unwrap();
/// ```
pub fn load_dir(dir: &Path) -> Result<Vec<Series>, M4Error> {
    let io = |source| M4Error::Io {
        path: dir.to_path_buf(),
        source,
    };
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map_err(io)?
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    names.sort();
    let train_name = names
        .iter()
        .find(|n| n.ends_with("-train.csv"))
        .ok_or_else(|| M4Error::Missing {
            dir: dir.to_path_buf(),
            what: "train",
        })?;
    let test_name = train_name.replace("-train.csv", "-test.csv");
    if !names.contains(&test_name) {
        return Err(M4Error::Missing {
            dir: dir.to_path_buf(),
            what: "test",
        });
    }
    let train = read_file(&dir.join(train_name))?;
    let test = read_file(&dir.join(&test_name))?;
    if train.len() != test.len() {
        return Err(M4Error::Mismatch(format!(
            "{}: {} series in {train_name}, {} in {test_name}",
            dir.display(),
            train.len(),
            test.len()
        )));
    }
    let mut test_by_id: std::collections::HashMap<String, Vec<f64>> = test.into_iter().collect();
    let mut out = Vec::with_capacity(train.len());
    for (id, values) in train {
        let test = test_by_id.remove(&id).ok_or_else(|| {
            M4Error::Mismatch(format!(
                "{}: series {id:?} has no test values",
                dir.display()
            ))
        })?;
        if values.is_empty() || test.is_empty() {
            return Err(M4Error::Mismatch(format!(
                "{}: series {id:?} has no values in train or test",
                dir.display()
            )));
        }
        out.push(Series {
            id,
            train: values,
            test,
        });
    }
    if out.is_empty() {
        return Err(M4Error::Empty(dir.to_path_buf()));
    }
    Ok(out)
}

/// One method's accuracy over a data set (see [`evaluate`] for one in use).
///
/// ```
/// use agentwire_twin::forecast::Method;
/// use agentwire_twin::m4::{evaluate, Series};
/// let s = Series { id: "a".into(), train: vec![1.0, 2.0, 4.0, 3.0], test: vec![5.0] };
/// let r = evaluate(&[s], 1, &[], 1, |_, _| {}).unwrap();
/// assert_eq!(r.scores[0].method, Method::Naive2);
/// assert_eq!(r.scores[0].fallbacks, 0);
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct MethodScore {
    /// The method.
    pub method: Method,
    /// Mean sMAPE over the series (percent).
    pub smape: f64,
    /// Mean MASE over the series.
    pub mase: f64,
    /// OWA against Naive2 on the same series.
    pub owa: f64,
    /// Mean MSIS of the 95% intervals.
    pub msis: f64,
    /// The share of test values inside the 95% intervals.
    pub coverage: f64,
    /// Series the method could not forecast, given Naive2's forecast instead (counted in
    /// the scores).
    pub fallbacks: usize,
}

/// The result of [`evaluate`].
///
/// ```
/// use agentwire_twin::m4::{evaluate, Series};
/// let s = Series { id: "a".into(), train: vec![1.0, 2.0, 4.0, 3.0], test: vec![5.0, 6.0] };
/// let r = evaluate(&[s], 1, &[], 1, |_, _| {}).unwrap();
/// assert_eq!((r.series, r.horizon, r.season), (1, 2, 1));
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct Report {
    /// Series scored.
    pub series: usize,
    /// Forecast horizon.
    pub horizon: usize,
    /// Seasonal period (also MASE's m).
    pub season: usize,
    /// Scores in the order asked, Naive2's first.
    pub scores: Vec<MethodScore>,
}

/// Per-series errors of one method.
struct SeriesScore {
    smape: f64,
    mase: f64,
    msis: f64,
    inside: usize,
    fallback: bool,
}

/// Forecasts every series' test span from its train values with each of `methods` (Naive2
/// is always evaluated, first, as the OWA reference) and scores them as the M4 competition
/// does: sMAPE and MASE averaged over the series, OWA from those means. Uses `threads`
/// threads (results do not depend on it); `progress(done, total)` is called after each
/// series.
///
/// A series whose MASE scale is undefined (a constant history) is an error: M4 has none.
///
/// ```
/// use agentwire_twin::forecast::Method;
/// use agentwire_twin::m4::{evaluate, Series};
/// // A daily shape that rises by 1 a day.
/// let y = |t: usize| 10.0 + (t % 24) as f64 + (t / 24) as f64;
/// let set = vec![Series { id: "T1".into(), train: (0..96).map(y).collect(),
///                         test: (96..144).map(y).collect() }];
/// let r = evaluate(&set, 24, &[Method::SeasonalNaive], 1, |_, _| {}).unwrap();
/// assert_eq!(r.scores[0].method, Method::Naive2);
/// assert_eq!(r.scores[0].owa, 1.0);
/// // Seasonal naive is 1 short on day 5 and 2 on day 6; the seasonal differences are all 1.
/// assert!((r.scores[1].mase - 1.5).abs() < 1e-12);
/// ```
pub fn evaluate(
    set: &[Series],
    season: usize,
    methods: &[Method],
    threads: usize,
    progress: impl FnMut(usize, usize) + Send,
) -> Result<Report, String> {
    if set.is_empty() {
        return Err("no series to evaluate".to_string());
    }
    let mut order = vec![Method::Naive2];
    order.extend(methods.iter().copied().filter(|m| *m != Method::Naive2));
    let horizon = set.first().map_or(0, |s| s.test.len());
    if let Some(s) = set.iter().find(|s| s.test.len() != horizon) {
        return Err(format!(
            "series {} has {} test values, the first series {horizon}: one horizon per data set",
            s.id,
            s.test.len()
        ));
    }
    if let Some(s) = set
        .iter()
        .find(|s| metrics::mase_scale(&s.train, season).is_none())
    {
        return Err(format!(
            "series {}: MASE is undefined (no non-zero seasonal difference in its history)",
            s.id
        ));
    }
    // per_series[i][k]: series i, method k.
    let per_series = score_all(set, season, &order, threads.max(1), progress);
    let n = set.len() as f64;
    let mean = |k: usize, get: &dyn Fn(&SeriesScore) -> f64| {
        per_series.iter().map(|s| get(&s[k])).sum::<f64>() / n
    };
    let (smape_naive2, mase_naive2) = (mean(0, &|s| s.smape), mean(0, &|s| s.mase));
    let values = (set.len() * horizon) as f64;
    let scores = order
        .iter()
        .enumerate()
        .map(|(k, method)| {
            let (smape, mase) = (mean(k, &|s| s.smape), mean(k, &|s| s.mase));
            MethodScore {
                method: *method,
                smape,
                mase,
                owa: metrics::owa(smape, mase, smape_naive2, mase_naive2),
                msis: mean(k, &|s| s.msis),
                coverage: per_series.iter().map(|s| s[k].inside).sum::<usize>() as f64 / values,
                fallbacks: per_series.iter().filter(|s| s[k].fallback).count(),
            }
        })
        .collect();
    Ok(Report {
        series: set.len(),
        horizon,
        season,
        scores,
    })
}

/// Scores every (series, method) pair on `threads` threads, series split in contiguous
/// chunks.
fn score_all(
    set: &[Series],
    season: usize,
    order: &[Method],
    threads: usize,
    progress: impl FnMut(usize, usize) + Send,
) -> Vec<Vec<SeriesScore>> {
    let progress = std::sync::Mutex::new((0usize, progress));
    let chunk = set.len().div_ceil(threads).max(1);
    std::thread::scope(|scope| {
        let handles: Vec<_> = set
            .chunks(chunk)
            .map(|part| {
                let progress = &progress;
                scope.spawn(move || {
                    part.iter()
                        .map(|s| {
                            let scores = order.iter().map(|m| score_one(s, season, *m)).collect();
                            if let Ok(mut p) = progress.lock() {
                                p.0 += 1;
                                let done = p.0;
                                (p.1)(done, set.len());
                            }
                            scores
                        })
                        .collect::<Vec<Vec<SeriesScore>>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
            .collect()
    })
}

fn score_one(s: &Series, season: usize, method: Method) -> SeriesScore {
    let horizon = s.test.len();
    let (f, fallback) = match Forecaster::new(method)
        .season(season)
        .forecast(&s.train, horizon)
    {
        Ok(f) => (f, false),
        Err(_) => (
            Forecaster::new(Method::Naive2)
                .season(season)
                .forecast(&s.train, horizon)
                .unwrap_or_else(|_| crate::forecast::Forecast {
                    method,
                    point: vec![s.train[s.train.len() - 1]; horizon],
                    lo: vec![f64::NEG_INFINITY; horizon],
                    hi: vec![f64::INFINITY; horizon],
                    level: 0.95,
                    sigma: f64::NAN,
                }),
            true,
        ),
    };
    // The scale was checked by `evaluate`.
    let nan = f64::NAN;
    SeriesScore {
        smape: metrics::smape(&s.test, &f.point),
        mase: metrics::mase(&s.train, &s.test, &f.point, season).unwrap_or(nan),
        msis: metrics::msis(&s.train, &s.test, &f.lo, &f.hi, season, 1.0 - f.level).unwrap_or(nan),
        inside: s
            .test
            .iter()
            .zip(f.lo.iter().zip(&f.hi))
            .filter(|(y, (l, h))| *l <= *y && *y <= *h)
            .count(),
        fallback,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("aw-twin-m4-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn read_file_names_the_line_of_a_bad_value() {
        let dir = scratch("bad");
        let path = dir.join("X-train.csv");
        std::fs::write(&path, "H1,1,2\nH2,3,oops\n").unwrap();
        let err = read_file(&path).unwrap_err().to_string();
        assert!(err.contains(":2:") && err.contains("oops"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn read_file_skips_a_quoted_header() {
        let dir = scratch("header");
        let path = dir.join("X-train.csv");
        std::fs::write(&path, "\"V1\",\"V2\",\"V3\"\n\"H1\",\"1\",\"2\"\n").unwrap();
        assert_eq!(
            read_file(&path).unwrap(),
            vec![("H1".into(), vec![1.0, 2.0])]
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn load_dir_reports_a_missing_test_file() {
        let dir = scratch("missing");
        std::fs::write(dir.join("Hourly-train.csv"), "H1,1,2\n").unwrap();
        assert!(matches!(
            load_dir(&dir),
            Err(M4Error::Missing { what: "test", .. })
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn evaluation_matches_hand_computed_scores() {
        // m = 2, train 1,3,2,4,3,5: too little for the seasonality test (acf(2) = 0.4 under
        // 1.645 / sqrt(6) * sqrt(1 + 2 * 0.01) = 0.678), so Naive2 is naive: 5, 5. Test 4, 6.
        // MASE scale: the seasonal differences are all 1. Naive2: sMAPE = 100 (1/9 + 1/11),
        // MASE = (1 + 1) / 2 = 1. Seasonal naive forecasts 3, 5: sMAPE = 100 (1/7 + 1/11),
        // MASE 1.
        let set = vec![Series {
            id: "A".into(),
            train: vec![1.0, 3.0, 2.0, 4.0, 3.0, 5.0],
            test: vec![4.0, 6.0],
        }];
        let r = evaluate(&set, 2, &[Method::SeasonalNaive], 2, |_, _| {}).unwrap();
        let (n2, sn) = (&r.scores[0], &r.scores[1]);
        assert!((n2.smape - 100.0 * (1.0 / 9.0 + 1.0 / 11.0)).abs() < 1e-9);
        assert!((n2.mase - 1.0).abs() < 1e-12 && (n2.owa - 1.0).abs() < 1e-12);
        let s = 100.0 * (1.0 / 7.0 + 1.0 / 11.0);
        assert!((sn.smape - s).abs() < 1e-9 && (sn.mase - 1.0).abs() < 1e-12);
        let want = 0.5 * (s / n2.smape + 1.0);
        assert!((sn.owa - want).abs() < 1e-12);
    }

    #[test]
    fn owa_averages_over_series_before_dividing() {
        // Two series where the ratio of means differs from the mean of ratios.
        let a = Series {
            id: "a".into(),
            train: vec![1.0, 2.0, 3.0, 4.0],
            test: vec![8.0],
        };
        let b = Series {
            id: "b".into(),
            train: vec![10.0, 0.0, 10.0, 0.0],
            test: vec![5.0],
        };
        let r = evaluate(&[a.clone(), b.clone()], 1, &[Method::Naive], 1, |_, _| {}).unwrap();
        let n2 = &r.scores[0];
        let s_a = metrics::smape(&a.test, &[4.0]);
        let s_b = metrics::smape(&b.test, &[0.0]);
        assert!((n2.smape - (s_a + s_b) / 2.0).abs() < 1e-12);
    }
}
