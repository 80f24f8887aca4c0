//! Streaming anomaly detectors: each row gets a score in [0, 1] from that row and earlier ones.
//!
//! Every detector keeps bounded state (fixed windows allocated at construction) and allocates
//! nothing per row. [`by_name`] builds one from its registered name ([`NAMES`]); [`DEFAULT`] is
//! the one to use when nothing is said. [`detect_csv`] runs one over a NAB-style CSV file.
//!
//! | name | what it is |
//! |---|---|
//! | `null` | NAB's null detector: 0.5 everywhere, never more anomalous than anything else |
//! | `windowed-gaussian` | NAB's baseline ([`WindowedGaussian`]) |
//! | `surprise` | the raw multi-scale prediction surprise alone ([`surprise::Surprise`]) |
//! | `surprise-likelihood` | surprise + context novelty → likelihood → suppression ([`SurpriseLikelihood`]) |
//! | `cad-ose` | NAB's CAD OSE, streaming value range ([`cad_ose::CadOse`]) |

pub mod cad_ose;
pub mod composite;
pub mod context;
mod csv_io;
pub mod gaussian;
pub mod likelihood;
pub mod normal;
pub mod refractory;
pub mod surprise;

pub use composite::SurpriseLikelihood;
pub use csv_io::{detect_csv, parse_timestamp_ns, DetectCsvError, DetectSummary};
pub use gaussian::WindowedGaussian;

/// A streaming anomaly detector.
///
/// ```
/// use agentwire_streaming::detect::{by_name, Detector};
/// let mut d: Box<dyn Detector> = by_name("windowed-gaussian").unwrap();
/// let s = d.score(0, 1.0);
/// assert!((0.0..=1.0).contains(&s));
/// ```
pub trait Detector: Send {
    /// The registered name of this detector.
    fn name(&self) -> &'static str;

    /// The anomaly score in [0, 1] of `value` at `timestamp_ns` (nanoseconds since the Unix
    /// epoch), from this row and earlier rows only. Rows come in stream order.
    fn score(&mut self, timestamp_ns: i64, value: f64) -> f64;
}

/// The detector used when none is named: `cad-ose`, the faithful port of the published NAB
/// detector with the best published score among those ported here (CAD OSE, 69.9 on NAB's
/// 58 files). Chosen by that rule before any subset score was seen, not by comparing scores.
pub const DEFAULT: &str = "cad-ose";

/// Every registered detector name.
pub const NAMES: &[&str] = &[
    "null",
    "windowed-gaussian",
    "surprise",
    "surprise-likelihood",
    "cad-ose",
];

/// A detector name that is not registered; lists the registered ones.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown detector {name:?}; known detectors: {}", NAMES.join(", "))]
pub struct UnknownDetector {
    /// The name that was asked for.
    pub name: String,
}

/// Builds the detector registered as `name`.
///
/// ```
/// use agentwire_streaming::detect::{by_name, DEFAULT, NAMES};
/// for name in NAMES { assert_eq!(by_name(name).unwrap().name(), *name); }
/// assert_eq!(by_name(DEFAULT).unwrap().name(), DEFAULT);
/// assert!(by_name("nope").err().unwrap().to_string().contains("windowed-gaussian"));
/// ```
pub fn by_name(name: &str) -> Result<Box<dyn Detector>, UnknownDetector> {
    match name {
        "null" => Ok(Box::new(Null)),
        "windowed-gaussian" => Ok(Box::new(WindowedGaussian::new())),
        "surprise" => Ok(Box::new(RawSurprise(surprise::Surprise::new()))),
        "surprise-likelihood" => Ok(Box::new(SurpriseLikelihood::new())),
        "cad-ose" => Ok(Box::new(cad_ose::CadOse::new())),
        _ => Err(UnknownDetector {
            name: name.to_owned(),
        }),
    }
}

/// NAB's null detector: the same score (0.5) for every row, so no threshold separates rows.
///
/// ```
/// use agentwire_streaming::detect::{Detector, Null};
/// assert_eq!(Null.score(0, 123.0), 0.5);
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct Null;

impl Detector for Null {
    fn name(&self) -> &'static str {
        "null"
    }

    fn score(&mut self, _timestamp_ns: i64, _value: f64) -> f64 {
        0.5
    }
}

/// The raw surprise as a detector (no likelihood, no suppression), for comparison.
#[derive(Debug, Clone, Default)]
struct RawSurprise(surprise::Surprise);

impl Detector for RawSurprise {
    fn name(&self) -> &'static str {
        "surprise"
    }

    fn score(&mut self, _timestamp_ns: i64, value: f64) -> f64 {
        self.0.raw(value)
    }
}
