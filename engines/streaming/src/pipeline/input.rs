//! Events from CSV, for tools that cannot link the library and for `agentwire stream run`.
//!
//! The first line names the columns. `value` is required; the time is `event_time_ns`
//! (integer nanoseconds since the Unix epoch) or `timestamp` (`YYYY-MM-DD HH:MM:SS[.fff]`
//! in UTC, as the NAB files write it, or RFC 3339); `key` is optional (a number is a
//! numeric key, anything else a name of at most 23 bytes; without the column every event
//! has key 0). Any other column becomes an attribute. A row that cannot be read is skipped,
//! counted and, for the first [`MALFORMED_REPORTED_MAX`] of them, described with its line.

use std::io::Read;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use chrono::DateTime;

use crate::event::{Attribute, Event, Key};

/// How many malformed rows are described; the rest are only counted.
pub const MALFORMED_REPORTED_MAX: usize = 20;

/// What a CSV input skipped, readable while the events are consumed elsewhere.
///
/// ```
/// use agentwire_streaming::pipeline::input::CsvEvents;
/// let csv = "key,timestamp,value\na,2014-04-01 00:00:00,1\nb,yesterday,2\n";
/// let events = CsvEvents::new(csv.as_bytes()).unwrap();
/// let report = events.report();
/// assert_eq!(events.count(), 1);
/// assert_eq!(report.malformed(), 1);
/// assert!(report.messages()[0].starts_with("line 3:"));
/// ```
#[derive(Debug, Default)]
pub struct InputReport {
    rows: AtomicU64,
    malformed: AtomicU64,
    messages: Mutex<Vec<String>>,
}

impl InputReport {
    /// Data rows read (good and bad).
    ///
    /// ```
    /// # use agentwire_streaming::pipeline::input::CsvEvents;
    /// let events = CsvEvents::new("value,event_time_ns\n1,2\n".as_bytes()).unwrap();
    /// let report = events.report();
    /// events.for_each(drop);
    /// assert_eq!(report.rows(), 1);
    /// ```
    pub fn rows(&self) -> u64 {
        self.rows.load(Ordering::Relaxed)
    }

    /// Rows skipped because they could not be read.
    ///
    /// ```
    /// # use agentwire_streaming::pipeline::input::CsvEvents;
    /// let events = CsvEvents::new("value,event_time_ns\nx,2\n".as_bytes()).unwrap();
    /// let report = events.report();
    /// events.for_each(drop);
    /// assert_eq!(report.malformed(), 1);
    /// ```
    pub fn malformed(&self) -> u64 {
        self.malformed.load(Ordering::Relaxed)
    }

    /// The first [`MALFORMED_REPORTED_MAX`] problems, each `line N: what`.
    ///
    /// ```
    /// # use agentwire_streaming::pipeline::input::CsvEvents;
    /// let events = CsvEvents::new("value,event_time_ns\n1,soon\n".as_bytes()).unwrap();
    /// let report = events.report();
    /// events.for_each(drop);
    /// assert_eq!(report.messages(), vec!["line 2: event_time_ns = \"soon\": not an integer"]);
    /// ```
    pub fn messages(&self) -> Vec<String> {
        self.messages.lock().map(|m| m.clone()).unwrap_or_default()
    }

    fn skip(&self, line: u64, why: String) {
        self.malformed.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut messages) = self.messages.lock() {
            if messages.len() < MALFORMED_REPORTED_MAX {
                messages.push(format!("line {line}: {why}"));
            }
        }
    }
}

/// Where each known column is.
#[derive(Debug, Clone)]
struct Columns {
    value: usize,
    time: (usize, TimeColumn),
    key: Option<usize>,
    attributes: Vec<(usize, String)>,
}

#[derive(Debug, Clone, Copy)]
enum TimeColumn {
    Nanoseconds,
    DateTime,
}

/// A header the input cannot be read with.
///
/// ```
/// use agentwire_streaming::pipeline::input::CsvEvents;
/// let e = CsvEvents::new("time,v\n".as_bytes()).err().unwrap();
/// assert_eq!(e.to_string(), "the header has no `value` column (it has: time, v)");
/// ```
#[derive(Debug, thiserror::Error)]
pub enum HeaderError {
    /// The header could not be read.
    #[error("cannot read the header: {0}")]
    Read(#[from] csv::Error),
    /// A required column is missing.
    #[error("the header has no {missing} column (it has: {found})")]
    Missing {
        /// What is missing.
        missing: &'static str,
        /// The columns found, comma-separated.
        found: String,
    },
}

/// Events read from CSV, malformed rows skipped and reported in [`InputReport`].
pub struct CsvEvents<R> {
    rows: csv::StringRecordsIntoIter<R>,
    columns: Columns,
    report: Arc<InputReport>,
}

impl<R: Read> CsvEvents<R> {
    /// Reads the header of `reader`.
    ///
    /// ```
    /// use agentwire_streaming::pipeline::input::CsvEvents;
    /// let mut events = CsvEvents::new("key,event_time_ns,value,host\n7,100,2.5,a\n".as_bytes()).unwrap();
    /// let e = events.next().unwrap();
    /// assert_eq!((e.event_time_ns, e.value, e.attribute("host")), (100, 2.5, Some("a")));
    /// ```
    pub fn new(reader: R) -> Result<Self, HeaderError> {
        let mut csv = csv::ReaderBuilder::new().flexible(true).from_reader(reader);
        let header = csv.headers()?.clone();
        let find = |name: &str| header.iter().position(|h| h.trim() == name);
        let found = || header.iter().collect::<Vec<_>>().join(", ");
        let value = find("value").ok_or_else(|| HeaderError::Missing {
            missing: "`value`",
            found: found(),
        })?;
        let time = match (find("event_time_ns"), find("timestamp")) {
            (Some(i), _) => (i, TimeColumn::Nanoseconds),
            (None, Some(i)) => (i, TimeColumn::DateTime),
            (None, None) => {
                return Err(HeaderError::Missing {
                    missing: "`event_time_ns` or `timestamp`",
                    found: found(),
                })
            }
        };
        let key = find("key");
        let attributes = header
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != value && *i != time.0 && Some(*i) != key)
            .map(|(i, name)| (i, name.trim().to_string()))
            .collect();
        Ok(Self {
            rows: csv.into_records(),
            columns: Columns {
                value,
                time,
                key,
                attributes,
            },
            report: Arc::default(),
        })
    }

    /// The report of skipped rows, shared: it stays readable after the events move on.
    ///
    /// ```
    /// # use agentwire_streaming::pipeline::input::CsvEvents;
    /// let events = CsvEvents::new("value,event_time_ns\n".as_bytes()).unwrap();
    /// assert_eq!(events.report().rows(), 0);
    /// ```
    pub fn report(&self) -> Arc<InputReport> {
        Arc::clone(&self.report)
    }
}

impl<R: Read> Iterator for CsvEvents<R> {
    type Item = Event;

    fn next(&mut self) -> Option<Event> {
        loop {
            let row = self.rows.next()?;
            self.report.rows.fetch_add(1, Ordering::Relaxed);
            let row = match row {
                Ok(row) => row,
                Err(e) => {
                    let line = e.position().map_or(0, |p| p.line());
                    self.report.skip(line, e.to_string());
                    continue;
                }
            };
            let line = row.position().map_or(0, |p| p.line());
            match parse_row(&row, &self.columns) {
                Ok(event) => return Some(event),
                Err(why) => self.report.skip(line, why),
            }
        }
    }
}

fn parse_row(row: &csv::StringRecord, columns: &Columns) -> Result<Event, String> {
    let field = |i: usize, name: &str| {
        row.get(i)
            .map(str::trim)
            .ok_or_else(|| format!("no {name} field (the row has {} fields)", row.len()))
    };
    let raw = field(columns.value, "value")?;
    let value: f64 = raw
        .parse()
        .map_err(|_| format!("value = {raw:?}: not a number"))?;
    if !value.is_finite() {
        return Err(format!("value = {raw:?}: not finite"));
    }
    let (time_at, time_kind) = columns.time;
    let event_time_ns = match time_kind {
        TimeColumn::Nanoseconds => {
            let raw = field(time_at, "event_time_ns")?;
            raw.parse()
                .map_err(|_| format!("event_time_ns = {raw:?}: not an integer"))?
        }
        TimeColumn::DateTime => {
            let raw = field(time_at, "timestamp")?;
            parse_timestamp_ns(raw).ok_or_else(|| {
                format!("timestamp = {raw:?}: not `YYYY-MM-DD HH:MM:SS[.fff]` or RFC 3339")
            })?
        }
    };
    let key = match columns.key {
        None => Key::Id(0),
        Some(i) => {
            let raw = field(i, "key")?;
            match raw.parse::<u64>() {
                Ok(id) => Key::Id(id),
                Err(_) => Key::name(raw).map_err(|e| format!("key = {raw:?}: {e}"))?,
            }
        }
    };
    let mut event = Event::new(key, event_time_ns, value);
    for (i, name) in &columns.attributes {
        if let Some(v) = row.get(*i) {
            event.attributes.push(Attribute {
                name: name.clone(),
                value: v.trim().to_string(),
            });
        }
    }
    Ok(event)
}

/// Nanoseconds since the Unix epoch of `YYYY-MM-DD HH:MM:SS[.fff]` (UTC) or RFC 3339 text.
///
/// ```
/// use agentwire_streaming::pipeline::input::parse_timestamp_ns;
/// assert_eq!(parse_timestamp_ns("1970-01-01 00:00:01"), Some(1_000_000_000));
/// assert_eq!(parse_timestamp_ns("1970-01-01T00:00:00.5Z"), Some(500_000_000));
/// assert_eq!(parse_timestamp_ns("noon"), None);
/// ```
pub fn parse_timestamp_ns(text: &str) -> Option<i64> {
    // NAB's form is the detectors' own parser; RFC 3339 is what pipelines add to it.
    crate::detect::parse_timestamp_ns(text).or_else(|| {
        DateTime::parse_from_rfc3339(text)
            .ok()
            .and_then(|t| t.to_utc().timestamp_nanos_opt())
    })
}
