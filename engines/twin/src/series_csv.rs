//! One series in a CSV file, and forecasts written back as CSV.
//!
//! Input: a header line naming the columns; a `value` column (required, numbers) and an
//! optional `timestamp` column (kept as text, checked only for being present on every row;
//! rows are taken in file order, oldest first). Other columns are ignored. Output:
//! `step,forecast,lo,hi`, one row per step, step 1 first.

use std::io::{Read, Write};
use std::path::Path;

use crate::forecast::Forecast;

/// Why a series could not be read.
///
/// ```
/// use agentwire_twin::series_csv::{read_values_from, SeriesCsvError};
/// let e = read_values_from("when\n1\n".as_bytes(), "x.csv").unwrap_err();
/// assert!(matches!(e, SeriesCsvError::NoValueColumn { .. }));
/// ```
#[derive(Debug, thiserror::Error)]
pub enum SeriesCsvError {
    /// The file could not be opened or read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The error.
        source: std::io::Error,
    },
    /// The header has no `value` column.
    #[error("{path}: no `value` column in the header (columns: {columns})")]
    NoValueColumn {
        /// The file.
        path: String,
        /// The columns found.
        columns: String,
    },
    /// A row's value is missing or not a finite number.
    #[error("{path}:{line}: `value` is not a number: {text:?}")]
    BadValue {
        /// The file.
        path: String,
        /// The line (1-based, the header being line 1).
        line: u64,
        /// The text found.
        text: String,
    },
    /// The CSV itself is malformed (unbalanced quotes, a row with too few fields).
    #[error("{path}:{line}: malformed CSV: {message}")]
    Malformed {
        /// The file.
        path: String,
        /// The line (1-based).
        line: u64,
        /// What the parser said.
        message: String,
    },
}

/// Reads the `value` column of the CSV file at `path`.
///
/// ```
/// # let dir = std::env::temp_dir().join(format!("aw-twin-doc-csv-{}", std::process::id()));
/// # std::fs::create_dir_all(&dir).unwrap();
/// let path = dir.join("in.csv");
/// std::fs::write(&path, "timestamp,value\n2024-01-01 00:00,1.5\n2024-01-01 01:00,2\n").unwrap();
/// assert_eq!(agentwire_twin::series_csv::read_values(&path).unwrap(), vec![1.5, 2.0]);
/// # std::fs::remove_dir_all(&dir).unwrap();
/// ```
pub fn read_values(path: &Path) -> Result<Vec<f64>, SeriesCsvError> {
    let name = path.display().to_string();
    let file = std::fs::File::open(path).map_err(|source| SeriesCsvError::Io {
        path: name.clone(),
        source,
    })?;
    read_values_from(std::io::BufReader::new(file), &name)
}

/// [`read_values`] from any reader; `name` labels errors.
///
/// ```
/// use agentwire_twin::series_csv::read_values_from;
/// let err = read_values_from("value\n1\nx\n".as_bytes(), "in.csv").unwrap_err();
/// assert_eq!(err.to_string(), "in.csv:3: `value` is not a number: \"x\"");
/// ```
pub fn read_values_from(reader: impl Read, name: &str) -> Result<Vec<f64>, SeriesCsvError> {
    let mut csv = csv::ReaderBuilder::new()
        .has_headers(true)
        .trim(csv::Trim::All)
        .from_reader(reader);
    let malformed = |e: csv::Error| SeriesCsvError::Malformed {
        path: name.to_string(),
        line: e.position().map_or(0, |p| p.line()),
        message: e.to_string(),
    };
    let headers = csv.headers().map_err(malformed)?.clone();
    let column =
        headers
            .iter()
            .position(|h| h == "value")
            .ok_or_else(|| SeriesCsvError::NoValueColumn {
                path: name.to_string(),
                columns: headers.iter().collect::<Vec<_>>().join(","),
            })?;
    let mut values = Vec::new();
    let mut record = csv::StringRecord::new();
    loop {
        match csv.read_record(&mut record) {
            Ok(false) => break,
            Ok(true) => {}
            Err(e) => return Err(malformed(e)),
        }
        let line = record.position().map_or(0, |p| p.line());
        let text = record.get(column).unwrap_or("");
        match text.parse::<f64>() {
            Ok(v) if v.is_finite() => values.push(v),
            _ => {
                return Err(SeriesCsvError::BadValue {
                    path: name.to_string(),
                    line,
                    text: text.to_string(),
                })
            }
        }
    }
    Ok(values)
}

/// Writes `forecast` as `step,forecast,lo,hi` rows.
///
/// ```
/// use agentwire_twin::forecast::{Forecaster, Method};
/// use agentwire_twin::series_csv::write_forecast;
/// let f = Forecaster::new(Method::Naive).forecast(&[1.0, 2.0, 3.0], 2).unwrap();
/// let mut out = Vec::new();
/// write_forecast(&mut out, &f).unwrap();
/// let text = String::from_utf8(out).unwrap();
/// assert!(text.starts_with("step,forecast,lo,hi\n1,3,"));
/// assert_eq!(text.lines().count(), 3);
/// ```
pub fn write_forecast(out: &mut impl Write, forecast: &Forecast) -> std::io::Result<()> {
    writeln!(out, "step,forecast,lo,hi")?;
    for (i, ((p, lo), hi)) in forecast
        .point
        .iter()
        .zip(&forecast.lo)
        .zip(&forecast.hi)
        .enumerate()
    {
        writeln!(out, "{},{p},{lo},{hi}", i + 1)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_value_column_is_named() {
        let err = read_values_from("time,v\n1,2\n".as_bytes(), "x.csv").unwrap_err();
        assert!(matches!(err, SeriesCsvError::NoValueColumn { .. }), "{err}");
        assert!(err.to_string().contains("time,v"));
    }

    #[test]
    fn empty_value_is_an_error_with_its_line() {
        let err = read_values_from("timestamp,value\na,1\nb,\n".as_bytes(), "x.csv").unwrap_err();
        assert!(err.to_string().starts_with("x.csv:3:"), "{err}");
    }

    #[test]
    fn a_short_row_is_malformed() {
        let err = read_values_from("timestamp,value\na\n".as_bytes(), "x.csv").unwrap_err();
        assert!(
            matches!(err, SeriesCsvError::Malformed { line: 2, .. }),
            "{err}"
        );
    }

    #[test]
    fn infinite_values_are_refused() {
        assert!(read_values_from("value\ninf\n".as_bytes(), "x.csv").is_err());
    }
}
