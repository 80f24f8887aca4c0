//! Loading a NAB corpus: the data files named by the labels file, with windows as row indices.

use std::collections::BTreeMap;
use std::path::Path;

use super::NabError;
use crate::detect::parse_timestamp_ns;

/// Share of a file's rows that is probationary (NAB's `probationPercent`).
pub const PROBATION_FRACTION: f64 = 0.15;
/// Row count whose probationary share caps the probationary period (NAB: 5000, so 750 rows).
pub const PROBATION_BASIS_ROWS_MAX: f64 = 5000.0;

/// One anomaly window as inclusive row indices.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct WindowRows {
    /// Index of the window's first row.
    pub first_index: usize,
    /// Index of the window's last row.
    pub last_index: usize,
}

impl WindowRows {
    /// Rows in the window.
    ///
    /// ```
    /// let w = agentwire_streaming::nab::WindowRows { first_index: 3, last_index: 5 };
    /// assert_eq!(w.rows(), 3);
    /// ```
    pub fn rows(&self) -> usize {
        self.last_index - self.first_index + 1
    }
}

/// One data file of the corpus.
#[derive(Debug, Clone, PartialEq)]
pub struct DataFile {
    /// Path relative to the data directory, as in the labels file (`realKnownCause/x.csv`).
    pub relative_path: String,
    /// Each row's timestamp, nanoseconds since the Unix epoch.
    pub timestamps_ns: Vec<i64>,
    /// Each row's value.
    pub values: Vec<f64>,
    /// The anomaly windows, in time order, not overlapping.
    pub windows: Vec<WindowRows>,
}

impl DataFile {
    /// Rows at the start of the file whose detections do not count:
    /// `min(floor(0.15 * rows), 0.15 * 5000)`, computed in `f64` as NAB does.
    ///
    /// ```
    /// use agentwire_streaming::nab::DataFile;
    /// let f = |n| DataFile { relative_path: String::new(), timestamps_ns: vec![0; n], values: vec![0.0; n], windows: vec![] };
    /// assert_eq!(f(4032).probationary_rows(), 604);
    /// assert_eq!(f(22695).probationary_rows(), 750);
    /// ```
    pub fn probationary_rows(&self) -> usize {
        let by_share = (PROBATION_FRACTION * self.timestamps_ns.len() as f64).floor();
        let cap = PROBATION_FRACTION * PROBATION_BASIS_ROWS_MAX;
        // Row i counts iff i >= this bound; the bound is a whole number or 750.0.
        by_share.min(cap).ceil() as usize
    }
}

/// The files named by a labels file, loaded.
#[derive(Debug, Clone, PartialEq)]
pub struct Corpus {
    /// The files, in the labels file's key order (sorted).
    pub files: Vec<DataFile>,
}

impl Corpus {
    /// Loads every file named in `labels_file` from `data_dir`, resolving each window's bounds
    /// to the rows that carry exactly those timestamps.
    ///
    /// ```
    /// use agentwire_streaming::nab::Corpus;
    /// let dir = tempfile::tempdir().unwrap();
    /// std::fs::create_dir(dir.path().join("c")).unwrap();
    /// std::fs::write(dir.path().join("c/f.csv"),
    ///     "timestamp,value\n2014-01-01 00:00:00,1\n2014-01-01 00:05:00,2\n").unwrap();
    /// let labels = dir.path().join("labels.json");
    /// std::fs::write(&labels,
    ///     r#"{"c/f.csv": [["2014-01-01 00:05:00.000000", "2014-01-01 00:05:00.000000"]]}"#).unwrap();
    /// let corpus = Corpus::load(dir.path(), &labels).unwrap();
    /// assert_eq!(corpus.files[0].windows[0].first_index, 1);
    /// ```
    pub fn load(data_dir: &Path, labels_file: &Path) -> Result<Self, NabError> {
        let text = std::fs::read_to_string(labels_file).map_err(|source| NabError::Io {
            path: labels_file.to_path_buf(),
            source,
        })?;
        let labels: BTreeMap<String, Vec<(String, String)>> =
            serde_json::from_str(&text).map_err(|source| NabError::Labels {
                path: labels_file.to_path_buf(),
                source,
            })?;
        let mut files = Vec::with_capacity(labels.len());
        for (relative_path, windows) in labels {
            let (timestamps_ns, values) = read_data(&data_dir.join(&relative_path))?;
            let windows = resolve_windows(&relative_path, &timestamps_ns, &windows)?;
            files.push(DataFile {
                relative_path,
                timestamps_ns,
                values,
                windows,
            });
        }
        Ok(Self { files })
    }

    /// Rows in the whole corpus.
    ///
    /// ```
    /// assert_eq!(agentwire_streaming::nab::Corpus { files: vec![] }.rows(), 0);
    /// ```
    pub fn rows(&self) -> usize {
        self.files.iter().map(|f| f.timestamps_ns.len()).sum()
    }
}

fn read_data(path: &Path) -> Result<(Vec<i64>, Vec<f64>), NabError> {
    let io = |e: csv::Error| NabError::BadRow {
        path: path.to_path_buf(),
        line: 0,
        reason: e.to_string(),
    };
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(true)
        .from_path(path)
        .map_err(io)?;
    let (mut timestamps, mut values) = (Vec::new(), Vec::new());
    let mut record = csv::StringRecord::new();
    while reader.read_record(&mut record).map_err(io)? {
        let line = record.position().map_or(0, |p| p.line());
        let bad = |reason: String| NabError::BadRow {
            path: path.to_path_buf(),
            line,
            reason,
        };
        if record.len() < 2 {
            return Err(bad(format!(
                "expected timestamp,value, found {} field(s)",
                record.len()
            )));
        }
        let ts = parse_timestamp_ns(&record[0])
            .ok_or_else(|| bad(format!("bad timestamp {:?}", &record[0])))?;
        let value: f64 = record[1]
            .trim()
            .parse()
            .map_err(|_| bad(format!("bad value {:?}", &record[1])))?;
        if !value.is_finite() {
            return Err(bad(format!("value {:?} is not finite", &record[1])));
        }
        timestamps.push(ts);
        values.push(value);
    }
    Ok((timestamps, values))
}

fn resolve_windows(
    file: &str,
    timestamps_ns: &[i64],
    windows: &[(String, String)],
) -> Result<Vec<WindowRows>, NabError> {
    let mut resolved: Vec<WindowRows> = Vec::with_capacity(windows.len());
    for (start, end) in windows {
        let bad = |reason: &str| NabError::BadWindow {
            file: file.to_owned(),
            start: start.clone(),
            end: end.clone(),
            reason: reason.to_owned(),
        };
        // NAB enters a window on the row whose timestamp equals its start and leaves it on the
        // row equal to its end, so both must be rows (the first such row, as list.index finds).
        let find = |text: &str| {
            parse_timestamp_ns(text).and_then(|t| timestamps_ns.iter().position(|&x| x == t))
        };
        let first_index =
            find(start).ok_or_else(|| bad("start is not the timestamp of any row"))?;
        let last_index = find(end).ok_or_else(|| bad("end is not the timestamp of any row"))?;
        if last_index < first_index {
            return Err(bad("end comes before start"));
        }
        if resolved
            .last()
            .is_some_and(|prev| prev.last_index >= first_index)
        {
            return Err(bad("overlaps or precedes the previous window"));
        }
        resolved.push(WindowRows {
            first_index,
            last_index,
        });
    }
    Ok(resolved)
}
