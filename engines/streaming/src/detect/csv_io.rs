//! Running a detector over a NAB-style CSV file (`timestamp,value` with a header row).

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use chrono::NaiveDateTime;

use super::{by_name, UnknownDetector};

/// What [`detect_csv`] did.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct DetectSummary {
    /// The detector that scored the rows.
    pub detector: String,
    /// Data rows read and written (the header not counted).
    pub rows: u64,
    /// The largest score written (0 when there were no rows).
    pub score_max: f64,
}

/// Why [`detect_csv`] failed; every variant names the file, and bad rows their line.
#[derive(Debug, thiserror::Error)]
pub enum DetectCsvError {
    /// The detector name is not registered.
    #[error(transparent)]
    UnknownDetector(#[from] UnknownDetector),
    /// The input could not be opened or read.
    #[error("{path}: {source}")]
    Read {
        /// The input file.
        path: PathBuf,
        /// The underlying error.
        source: csv::Error,
    },
    /// A row is not `timestamp,value` with a parseable timestamp and a finite number.
    #[error("{path}:{line}: {reason}")]
    BadRow {
        /// The input file.
        path: PathBuf,
        /// 1-based line number in the file.
        line: u64,
        /// What is wrong with the row.
        reason: String,
    },
    /// The output could not be written.
    #[error("{path}: {source}")]
    Write {
        /// The output file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
}

/// Parses a NAB timestamp (`2014-04-01 00:00:00`, optionally with a fraction such as
/// `.000000`) as nanoseconds since the Unix epoch (the timestamps carry no zone; read as UTC).
///
/// ```
/// use agentwire_streaming::detect::parse_timestamp_ns;
/// assert_eq!(parse_timestamp_ns("1970-01-01 00:00:01"), Some(1_000_000_000));
/// assert_eq!(parse_timestamp_ns("1970-01-01 00:00:01.000000"), Some(1_000_000_000));
/// assert_eq!(parse_timestamp_ns("yesterday"), None);
/// ```
pub fn parse_timestamp_ns(text: &str) -> Option<i64> {
    let t = NaiveDateTime::parse_from_str(text.trim(), "%Y-%m-%d %H:%M:%S%.f").ok()?;
    t.and_utc().timestamp_nanos_opt()
}

/// Reads `timestamp,value` rows from `input`, scores each with the detector named `detector`,
/// and writes `timestamp,value,anomaly_score` to `output`, one row per input row.
///
/// ```
/// use agentwire_streaming::detect::detect_csv;
/// let dir = tempfile::tempdir().unwrap();
/// let (input, output) = (dir.path().join("in.csv"), dir.path().join("out.csv"));
/// std::fs::write(&input, "timestamp,value\n2014-04-01 00:00:00,1\n2014-04-01 00:05:00,2\n").unwrap();
/// let summary = detect_csv(&input, &output, "windowed-gaussian").unwrap();
/// assert_eq!(summary.rows, 2);
/// let text = std::fs::read_to_string(&output).unwrap();
/// assert!(text.starts_with("timestamp,value,anomaly_score\n2014-04-01 00:00:00,1,0\n"));
/// ```
pub fn detect_csv(
    input: &Path,
    output: &Path,
    detector: &str,
) -> Result<DetectSummary, DetectCsvError> {
    let mut det = by_name(detector)?;
    let read_err = |source| DetectCsvError::Read {
        path: input.to_path_buf(),
        source,
    };
    let write_err = |source| DetectCsvError::Write {
        path: output.to_path_buf(),
        source,
    };
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(true)
        .from_path(input)
        .map_err(read_err)?;
    let file = File::create(output).map_err(write_err)?;
    let mut out = BufWriter::new(file);
    writeln!(out, "timestamp,value,anomaly_score").map_err(write_err)?;
    let mut summary = DetectSummary {
        detector: det.name().to_owned(),
        rows: 0,
        score_max: 0.0,
    };
    let mut record = csv::StringRecord::new();
    while reader.read_record(&mut record).map_err(read_err)? {
        let line = record.position().map_or(0, |p| p.line());
        let bad = |reason: String| DetectCsvError::BadRow {
            path: input.to_path_buf(),
            line,
            reason,
        };
        if record.len() != 2 {
            return Err(bad(format!(
                "expected 2 fields (timestamp,value), found {}",
                record.len()
            )));
        }
        let (ts_text, value_text) = (&record[0], &record[1]);
        let timestamp_ns = parse_timestamp_ns(ts_text).ok_or_else(|| {
            bad(format!(
                "bad timestamp {ts_text:?} (want YYYY-MM-DD HH:MM:SS)"
            ))
        })?;
        let value: f64 = value_text
            .trim()
            .parse()
            .map_err(|_| bad(format!("bad value {value_text:?}")))?;
        if !value.is_finite() {
            return Err(bad(format!("value {value_text:?} is not finite")));
        }
        let score = det.score(timestamp_ns, value);
        summary.rows += 1;
        summary.score_max = summary.score_max.max(score);
        writeln!(out, "{ts_text},{value_text},{score}").map_err(write_err)?;
    }
    out.flush().map_err(write_err)?;
    Ok(summary)
}
