//! A pipeline declared in TOML, so an operator can run one without writing code
//! (`agentwire stream run PIPELINE.toml`). Times are in milliseconds.
//!
//! ```toml
//! shards = 2                      # shard threads, each with its own windows (default 1)
//!
//! [input]
//! path = "events.csv"             # CSV: value, event_time_ns or timestamp, key (optional)
//!
//! [output]
//! path = "results.jsonl"          # one JSON object per window result; "-" is stdout
//!
//! [[stage]]
//! op = "filter"                   # keep events that pass every test given
//! value_min = 0.0                 # value >= this
//! value_max = 1e9                 # value <= this
//! keys = ["db-1", "7"]            # key is one of these
//! attribute = "region"            # with `equals`: the attribute has this value
//! equals = "eu"
//!
//! [[stage]]
//! op = "map"                      # value = abs?(value) * scale + offset
//! scale = 0.001
//! offset = 0.0
//! abs = false
//!
//! [[stage]]
//! op = "key_by"                   # exactly one of:
//! attribute = "host"              #   the attribute's value (missing: the empty name)
//! # constant = "all"              #   one key for every event
//!
//! [window]
//! kind = "sliding"                # tumbling (size_ms), sliding (size_ms, slide_ms), session (gap_ms)
//! size_ms = 60000
//! slide_ms = 10000
//! out_of_orderness_ms = 2000      # the watermark's slack (default 0)
//! allowed_lateness_ms = 5000      # late events still taken (default 0)
//! quantiles = [0.5, 0.99]         # default none
//! late_side_output = true         # too-late events written out too (default false)
//! open_windows_max = 1048576      # bound on open windows, all keys (default 1048576)
//! ```

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::Pipeline;
use crate::event::{Key, KeyName, KEY_NAME_BYTES_MAX};
use crate::window::{WindowKind, WindowSpec, OPEN_WINDOWS_MAX_DEFAULT};

const NS_PER_MS: i64 = 1_000_000;

/// A pipeline file as written.
///
/// ```
/// use agentwire_streaming::pipeline::file::PipelineFile;
/// let file = PipelineFile::parse("[window]\nkind = \"tumbling\"\nsize_ms = 1000\n", "p.toml").unwrap();
/// let pipeline = file.to_pipeline().unwrap();
/// assert_eq!(file.shards, 1);
/// assert!(pipeline.stages().is_empty());
/// ```
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineFile {
    /// Shard threads (default 1).
    #[serde(default = "one")]
    pub shards: usize,
    /// Where events come from (a command-line path may replace it).
    pub input: Option<PathSection>,
    /// Where results go (a command-line path may replace it).
    pub output: Option<PathSection>,
    /// The stages before the windows, in order.
    #[serde(default, rename = "stage")]
    pub stages: Vec<StageSpec>,
    /// The windows.
    pub window: WindowSection,
    /// The file's name, for errors.
    #[serde(skip)]
    origin: String,
}

fn one() -> usize {
    1
}

/// `[input]` or `[output]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PathSection {
    /// The file (`-` is stdin or stdout).
    pub path: PathBuf,
}

/// One `[[stage]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum StageSpec {
    /// Keeps events that pass every test given.
    Filter {
        /// value >= this.
        value_min: Option<f64>,
        /// value <= this.
        value_max: Option<f64>,
        /// The key is one of these (numbers are numeric keys).
        keys: Option<Vec<String>>,
        /// With `equals`: the attribute to test.
        attribute: Option<String>,
        /// With `attribute`: the value it must have.
        equals: Option<String>,
    },
    /// value = abs?(value) * scale + offset.
    Map {
        /// Multiplies the value (default 1).
        scale: Option<f64>,
        /// Added after scaling (default 0).
        offset: Option<f64>,
        /// Take the absolute value first (default false).
        #[serde(default)]
        abs: bool,
    },
    /// Sets the key.
    KeyBy {
        /// The key is this attribute's value.
        attribute: Option<String>,
        /// The key is this constant.
        constant: Option<String>,
    },
}

/// `[window]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WindowSection {
    /// `tumbling`, `sliding` or `session`.
    pub kind: String,
    /// Window length (tumbling, sliding).
    pub size_ms: Option<u64>,
    /// Distance between starts (sliding).
    pub slide_ms: Option<u64>,
    /// Silence that ends a session (session).
    pub gap_ms: Option<u64>,
    /// The watermark's slack.
    #[serde(default)]
    pub out_of_orderness_ms: u64,
    /// How long late events are still taken.
    #[serde(default)]
    pub allowed_lateness_ms: u64,
    /// Quantiles each result carries.
    #[serde(default)]
    pub quantiles: Vec<f64>,
    /// Whether too-late events are written out.
    #[serde(default)]
    pub late_side_output: bool,
    /// The bound on open windows.
    pub open_windows_max: Option<usize>,
}

/// A pipeline file that cannot be used; the message names the file, and the line where
/// the TOML parser knows it.
///
/// ```
/// use agentwire_streaming::pipeline::file::PipelineFile;
/// let e = PipelineFile::parse("[window]\nkind = \"hourly\"\n", "p.toml").unwrap().to_pipeline().unwrap_err();
/// assert_eq!(e.to_string(), "p.toml: window.kind = \"hourly\": one of tumbling, sliding, session");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{origin}: {message}")]
pub struct FileError {
    /// The file.
    pub origin: String,
    /// What is wrong, and where.
    pub message: String,
}

impl PipelineFile {
    /// Reads and parses the file at `path`.
    ///
    /// ```
    /// use agentwire_streaming::pipeline::file::PipelineFile;
    /// let e = PipelineFile::load(std::path::Path::new("/nonexistent.toml")).unwrap_err();
    /// assert!(e.to_string().starts_with("/nonexistent.toml: cannot read it:"));
    /// ```
    pub fn load(path: &Path) -> Result<Self, FileError> {
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| FileError {
            origin: origin.clone(),
            message: format!("cannot read it: {e}"),
        })?;
        Self::parse(&text, &origin)
    }

    /// Parses TOML text; `origin` names it in errors.
    ///
    /// ```
    /// use agentwire_streaming::pipeline::file::PipelineFile;
    /// let e = PipelineFile::parse("[window]\nkind = \"session\"\ngap = 5\n", "p.toml").unwrap_err();
    /// assert!(e.to_string().starts_with("p.toml:3: unknown field `gap`"), "{e}");
    /// ```
    pub fn parse(text: &str, origin: &str) -> Result<Self, FileError> {
        let mut file: PipelineFile = toml::from_str(text).map_err(|e: toml::de::Error| {
            let line = e.span().map(|span| {
                let before = &text.as_bytes()[..span.start.min(text.len())];
                before.iter().filter(|&&b| b == b'\n').count() + 1
            });
            FileError {
                origin: match line {
                    Some(line) => format!("{origin}:{line}"),
                    None => origin.to_string(),
                },
                message: e.message().lines().next().unwrap_or_default().to_string(),
            }
        })?;
        file.origin = origin.to_string();
        Ok(file)
    }

    /// The pipeline the file declares, every setting checked.
    ///
    /// ```
    /// use agentwire_streaming::pipeline::file::PipelineFile;
    /// let text = "[[stage]]\nop = \"map\"\nscale = 2.0\n[window]\nkind = \"session\"\ngap_ms = 5\n";
    /// let p = PipelineFile::parse(text, "p.toml").unwrap().to_pipeline().unwrap();
    /// assert_eq!(p.stages().len(), 1);
    /// let f = PipelineFile::parse("shards = 0\n[window]\nkind = \"session\"\ngap_ms = 5\n", "x.toml").unwrap();
    /// assert_eq!(f.to_pipeline().unwrap_err().to_string(), "x.toml: shards = 0: must be 1 to 256");
    /// ```
    pub fn to_pipeline(&self) -> Result<Pipeline, FileError> {
        let fail = |message: String| FileError {
            origin: self.origin.clone(),
            message,
        };
        if !(1..=super::sharded::SHARDS_MAX).contains(&self.shards) {
            let max = super::sharded::SHARDS_MAX;
            return Err(fail(format!(
                "shards = {}: must be 1 to {max}",
                self.shards
            )));
        }
        let spec = self.window.to_spec().map_err(fail)?;
        let mut pipeline = Pipeline::new(spec);
        for (n, stage) in self.stages.iter().enumerate() {
            pipeline =
                add_stage(pipeline, stage).map_err(|m| fail(format!("stage {}: {m}", n + 1)))?;
        }
        Ok(pipeline)
    }
}

impl WindowSection {
    /// The window spec this section declares, every setting checked; the error names the
    /// key (`window.size_ms = 0: ...`).
    ///
    /// ```
    /// use agentwire_streaming::pipeline::file::PipelineFile;
    /// let f = PipelineFile::parse("[window]\nkind = \"tumbling\"\nsize_ms = 5\n", "p").unwrap();
    /// assert!(f.window.to_spec().is_ok());
    /// ```
    pub fn to_spec(&self) -> Result<WindowSpec, String> {
        let ns = |name: &str, ms: Option<u64>| -> Result<i64, String> {
            let ms =
                ms.ok_or_else(|| format!("window.{name} is missing (kind = {:?})", self.kind))?;
            i64::try_from(ms)
                .ok()
                .and_then(|ms| ms.checked_mul(NS_PER_MS))
                .filter(|ns| *ns > 0)
                .ok_or_else(|| format!("window.{name} = {ms}: must be from 1 to 9223372036854 ms"))
        };
        let kind = match self.kind.as_str() {
            "tumbling" => WindowKind::Tumbling {
                size_ns: ns("size_ms", self.size_ms)?,
            },
            "sliding" => WindowKind::Sliding {
                size_ns: ns("size_ms", self.size_ms)?,
                slide_ns: ns("slide_ms", self.slide_ms)?,
            },
            "session" => WindowKind::Session {
                gap_ns: ns("gap_ms", self.gap_ms)?,
            },
            other => {
                return Err(format!(
                    "window.kind = {other:?}: one of tumbling, sliding, session"
                ))
            }
        };
        let mut spec = WindowSpec::new(kind);
        let non_negative = |name: &str, ms: u64| {
            if ms == 0 {
                Ok(0)
            } else {
                ns(name, Some(ms))
            }
        };
        spec.out_of_orderness_ns = non_negative("out_of_orderness_ms", self.out_of_orderness_ms)?;
        spec.allowed_lateness_ns = non_negative("allowed_lateness_ms", self.allowed_lateness_ms)?;
        spec.quantiles = self.quantiles.clone();
        spec.late_side_output = self.late_side_output;
        spec.open_windows_max = self.open_windows_max.unwrap_or(OPEN_WINDOWS_MAX_DEFAULT);
        spec.validate().map_err(|e| {
            // The spec speaks nanoseconds; the file, milliseconds.
            match e.setting.strip_suffix("_ns") {
                Some(stem) => {
                    let ms = e
                        .value
                        .parse::<i64>()
                        .map_or(e.value.clone(), |ns| (ns / NS_PER_MS).to_string());
                    format!("window.{stem}_ms = {ms}: {}", e.why.replace("_ns", "_ms"))
                }
                None => format!("window.{e}"),
            }
        })?;
        Ok(spec)
    }
}

/// A key as the file writes it: a number is a numeric key, anything else a name.
fn key_of(text: &str) -> Result<Key, String> {
    match text.parse::<u64>() {
        Ok(id) => Ok(Key::Id(id)),
        Err(_) => Key::name(text).map_err(|e| format!("key {text:?}: {e}")),
    }
}

/// The longest prefix of `text` that fits a key name, cut at a character boundary.
fn name_prefix(text: &str) -> KeyName {
    let mut end = text.len().min(KEY_NAME_BYTES_MAX);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    KeyName::new(&text[..end]).expect("cut to fit")
}

fn add_stage(pipeline: Pipeline, stage: &StageSpec) -> Result<Pipeline, String> {
    Ok(match stage.clone() {
        StageSpec::Filter {
            value_min,
            value_max,
            keys,
            attribute,
            equals,
        } => {
            let keys = match keys {
                Some(keys) => Some(
                    keys.iter()
                        .map(|k| key_of(k))
                        .collect::<Result<Vec<_>, _>>()?,
                ),
                None => None,
            };
            let attribute_test = match (attribute, equals) {
                (Some(a), Some(v)) => Some((a, v)),
                (None, None) => None,
                _ => return Err("filter: `attribute` and `equals` go together".into()),
            };
            pipeline.filter(move |e| {
                value_min.is_none_or(|m| e.value >= m)
                    && value_max.is_none_or(|m| e.value <= m)
                    && keys.as_ref().is_none_or(|keys| keys.contains(&e.key))
                    && attribute_test
                        .as_ref()
                        .is_none_or(|(a, v)| e.attribute(a) == Some(v.as_str()))
            })
        }
        StageSpec::Map { scale, offset, abs } => {
            let (scale, offset) = (scale.unwrap_or(1.0), offset.unwrap_or(0.0));
            if !scale.is_finite() || !offset.is_finite() {
                return Err(format!(
                    "map: scale {scale} and offset {offset} must be finite"
                ));
            }
            pipeline.map(move |e| {
                let v = if abs { e.value.abs() } else { e.value };
                e.value = v * scale + offset;
            })
        }
        StageSpec::KeyBy {
            attribute,
            constant,
        } => match (attribute, constant) {
            (Some(attribute), None) => pipeline.key_by(move |e| {
                Key::Name(name_prefix(e.attribute(&attribute).unwrap_or_default()))
            }),
            (None, Some(constant)) => {
                let key = key_of(&constant)?;
                pipeline.key_by(move |_| key)
            }
            _ => return Err("key_by: exactly one of `attribute` and `constant`".into()),
        },
    })
}
