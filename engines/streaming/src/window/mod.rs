//! Event-time windows: tumbling, sliding and session windows per key, with a watermark and
//! allowed lateness, and their aggregates (count, sum, min, max, mean, quantiles).
//!
//! **Time.** Windows follow the events' own times, never the clock. The watermark is the
//! largest event time seen less `out_of_orderness_ns`: the promise that no earlier event is
//! still expected. A window `[start, end)` fires once the watermark reaches `end`.
//!
//! **Lateness.** An event behind the watermark is still taken by its windows while the
//! watermark is below their `end + allowed_lateness_ns`; a window that already fired then
//! fires again at once with the updated result (`late: true`), so the last result of a window
//! is always over every event it took. Once the watermark reaches `end + allowed_lateness_ns`
//! the window's state is dropped; an event that finds all its windows dropped is counted in
//! [`WindowStats::late_events_dropped`] and, if asked, sent to the side output
//! ([`Output::Late`]).
//!
//! **Sessions** are per key: an event at `t` opens `[t, t + gap_ns)`, and sessions that
//! overlap merge, so a session ends `gap_ns` after its last event. A merge can replace a
//! session that already fired; the new result covers it (its start is at or before, its end
//! at or after the old one's).
//!
//! **Bounds.** At most `open_windows_max` windows are open at once (all keys together); an
//! event that would open one more is refused and counted
//! ([`WindowStats::events_refused_window_limit`]); an event belongs to at most
//! [`WINDOWS_PER_EVENT_MAX`] sliding windows (checked when the spec is built).
//!
//! ```
//! use agentwire_streaming::event::{Event, Key};
//! use agentwire_streaming::window::{Output, WindowKind, WindowOperator, WindowSpec};
//!
//! let spec = WindowSpec::new(WindowKind::Tumbling { size_ns: 10 });
//! let mut op = WindowOperator::new(spec).unwrap();
//! let mut results = Vec::new();
//! for (t, v) in [(1, 1.0), (4, 3.0), (12, 5.0)] {
//!     op.push(&Event::new(Key::Id(1), t, v), &mut |o| results.push(o));
//! }
//! // The event at 12 moved the watermark to 12: window [0, 10) fired.
//! let Output::Window(w) = &results[0] else { panic!() };
//! assert_eq!((w.start_ns, w.end_ns, w.count, w.sum), (0, 10, 2, 4.0));
//! op.finish(&mut |o| results.push(o));
//! assert_eq!(results.len(), 2);
//! ```

mod accumulator;
mod keyed;
mod operator;
mod snapshot;

pub use accumulator::QUANTILE_RELATIVE_ACCURACY;
pub use operator::WindowOperator;
pub use snapshot::{OperatorSnapshot, SnapshotError};

use crate::event::{Event, Key};

/// The most sliding windows one event may fall in (`size_ns / slide_ns`): a bound on the
/// work per event.
pub const WINDOWS_PER_EVENT_MAX: i64 = 1_024;

/// The default bound on windows open at once, all keys together.
pub const OPEN_WINDOWS_MAX_DEFAULT: usize = 1 << 20;

/// How events are grouped in time.
///
/// ```
/// use agentwire_streaming::window::WindowKind;
/// let minute = WindowKind::Tumbling { size_ns: 60_000_000_000 };
/// assert!(matches!(minute, WindowKind::Tumbling { .. }));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowKind {
    /// Back-to-back windows `[k * size, (k + 1) * size)`.
    Tumbling {
        /// The window length, in ns.
        size_ns: i64,
    },
    /// Windows of `size_ns` starting every `slide_ns` (an event falls in `size / slide`).
    Sliding {
        /// The window length, in ns.
        size_ns: i64,
        /// The distance between window starts, in ns (at most `size_ns`).
        slide_ns: i64,
    },
    /// Per key, events less than `gap_ns` apart share a session.
    Session {
        /// The silence that ends a session, in ns.
        gap_ns: i64,
    },
}

/// A window operator's settings.
///
/// ```
/// use agentwire_streaming::window::{WindowKind, WindowSpec};
/// let mut spec = WindowSpec::new(WindowKind::Sliding { size_ns: 60, slide_ns: 10 });
/// spec.allowed_lateness_ns = 30;
/// spec.quantiles = vec![0.5, 0.99];
/// assert!(spec.validate().is_ok());
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct WindowSpec {
    /// Tumbling, sliding or session.
    pub kind: WindowKind,
    /// How far behind the largest event time seen the watermark stays, in ns (default 0).
    pub out_of_orderness_ns: i64,
    /// How long past the watermark a window still takes late events, in ns (default 0).
    pub allowed_lateness_ns: i64,
    /// The quantiles each result carries, each in [0, 1] (default none: no sketch is kept).
    pub quantiles: Vec<f64>,
    /// Whether events too late for every window are sent on as [`Output::Late`] (default
    /// false: only counted).
    pub late_side_output: bool,
    /// The most windows open at once, all keys together (default
    /// [`OPEN_WINDOWS_MAX_DEFAULT`]).
    pub open_windows_max: usize,
}

impl WindowSpec {
    /// A spec with the defaults above.
    ///
    /// ```
    /// use agentwire_streaming::window::{WindowKind, WindowSpec};
    /// let spec = WindowSpec::new(WindowKind::Session { gap_ns: 5 });
    /// assert_eq!(spec.allowed_lateness_ns, 0);
    /// ```
    pub fn new(kind: WindowKind) -> Self {
        Self {
            kind,
            out_of_orderness_ns: 0,
            allowed_lateness_ns: 0,
            quantiles: Vec::new(),
            late_side_output: false,
            open_windows_max: OPEN_WINDOWS_MAX_DEFAULT,
        }
    }

    /// Checks every setting; the error names the first bad one and its value.
    ///
    /// ```
    /// use agentwire_streaming::window::{WindowKind, WindowSpec};
    /// let spec = WindowSpec::new(WindowKind::Tumbling { size_ns: 0 });
    /// assert_eq!(spec.validate().unwrap_err().to_string(), "size_ns = 0: must be above 0");
    /// ```
    pub fn validate(&self) -> Result<(), SpecError> {
        let positive = |name: &'static str, value: i64| {
            if value > 0 {
                Ok(())
            } else {
                Err(SpecError::new(name, value, "must be above 0"))
            }
        };
        match self.kind {
            WindowKind::Tumbling { size_ns } => positive("size_ns", size_ns)?,
            WindowKind::Sliding { size_ns, slide_ns } => {
                positive("size_ns", size_ns)?;
                positive("slide_ns", slide_ns)?;
                if slide_ns > size_ns {
                    return Err(SpecError::new(
                        "slide_ns",
                        slide_ns,
                        "must be at most size_ns (a larger slide leaves events in no window)",
                    ));
                }
                if size_ns / slide_ns + i64::from(size_ns % slide_ns != 0) > WINDOWS_PER_EVENT_MAX {
                    return Err(SpecError::new(
                        "slide_ns",
                        slide_ns,
                        "puts each event in more than 1024 windows (size_ns / slide_ns)",
                    ));
                }
            }
            WindowKind::Session { gap_ns } => positive("gap_ns", gap_ns)?,
        }
        if self.out_of_orderness_ns < 0 {
            let v = self.out_of_orderness_ns;
            return Err(SpecError::new(
                "out_of_orderness_ns",
                v,
                "must be 0 or more",
            ));
        }
        if self.allowed_lateness_ns < 0 {
            let v = self.allowed_lateness_ns;
            return Err(SpecError::new(
                "allowed_lateness_ns",
                v,
                "must be 0 or more",
            ));
        }
        if let Some(q) = self.quantiles.iter().find(|q| !(0.0..=1.0).contains(*q)) {
            return Err(SpecError {
                setting: "quantiles",
                value: q.to_string(),
                why: "each must be in [0, 1]",
            });
        }
        if self.open_windows_max == 0 {
            return Err(SpecError::new("open_windows_max", 0, "must be above 0"));
        }
        Ok(())
    }
}

/// A bad [`WindowSpec`] setting.
///
/// ```
/// use agentwire_streaming::window::{WindowKind, WindowSpec};
/// let e = WindowSpec::new(WindowKind::Session { gap_ns: -1 }).validate().unwrap_err();
/// assert_eq!(e.setting, "gap_ns");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{setting} = {value}: {why}")]
pub struct SpecError {
    /// The setting's name.
    pub setting: &'static str,
    /// Its value, as written.
    pub value: String,
    /// What it must be.
    pub why: &'static str,
}

impl SpecError {
    fn new(setting: &'static str, value: i64, why: &'static str) -> Self {
        Self {
            setting,
            value: value.to_string(),
            why,
        }
    }
}

/// The aggregates of one window of one key.
///
/// ```
/// use agentwire_streaming::event::{Event, Key};
/// use agentwire_streaming::window::{Output, WindowKind, WindowOperator, WindowSpec};
/// let mut spec = WindowSpec::new(WindowKind::Tumbling { size_ns: 100 });
/// spec.quantiles = vec![0.5];
/// let mut op = WindowOperator::new(spec).unwrap();
/// let mut out = Vec::new();
/// for v in [1.0, 2.0, 9.0] {
///     op.push(&Event::new(Key::Id(3), 10, v), &mut |o| out.push(o));
/// }
/// op.finish(&mut |o| out.push(o));
/// let Output::Window(w) = &out[0] else { panic!() };
/// assert_eq!((w.count, w.min, w.max, w.mean), (3, 1.0, 9.0, 4.0));
/// assert!((w.quantiles[0] - 2.0).abs() <= 0.02 * 2.0);
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct WindowResult {
    /// The key the window belongs to.
    pub key: Key,
    /// The window's first instant, in ns (inclusive).
    pub start_ns: i64,
    /// The window's end, in ns (exclusive).
    pub end_ns: i64,
    /// Events taken.
    pub count: u64,
    /// Their sum.
    pub sum: f64,
    /// Their smallest value.
    pub min: f64,
    /// Their largest value.
    pub max: f64,
    /// `sum / count`.
    pub mean: f64,
    /// One value per [`WindowSpec::quantiles`] entry, in that order: the value at rank
    /// `floor(q * (count - 1))` within [`QUANTILE_RELATIVE_ACCURACY`].
    pub quantiles: Vec<f64>,
    /// True when a late event made the window fire again (or fire first) after the
    /// watermark had passed its end; the latest result of a window is the one that counts.
    pub late: bool,
}

/// What a window operator emits.
///
/// ```
/// use agentwire_streaming::window::Output;
/// fn describe(o: &Output) -> &'static str {
///     match o { Output::Window(_) => "result", Output::Late(_) => "late event" }
/// }
/// ```
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// A window's result.
    Window(WindowResult),
    /// An event that came too late for every window it belongs to (only with
    /// [`WindowSpec::late_side_output`]).
    Late(Event),
}

impl WindowStats {
    /// Adds `other`'s counts to these (shards summed, snapshots merged).
    ///
    /// ```
    /// use agentwire_streaming::window::WindowStats;
    /// let mut sum = WindowStats { events_in: 2, ..Default::default() };
    /// sum.add(&WindowStats { events_in: 3, ..Default::default() });
    /// assert_eq!(sum.events_in, 5);
    /// ```
    pub fn add(&mut self, other: &WindowStats) {
        self.events_in += other.events_in;
        self.late_events_dropped += other.late_events_dropped;
        self.late_assignments_dropped += other.late_assignments_dropped;
        self.events_refused_window_limit += other.events_refused_window_limit;
        self.windows_fired += other.windows_fired;
        self.late_firings += other.late_firings;
        self.windows_open += other.windows_open;
        self.events_refused_time_range += other.events_refused_time_range;
    }
}

/// What a window operator counted.
///
/// ```
/// use agentwire_streaming::window::WindowStats;
/// let s = WindowStats::default();
/// assert_eq!(s.events_in, 0);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct WindowStats {
    /// Events pushed.
    pub events_in: u64,
    /// Events too late for every window they belong to.
    pub late_events_dropped: u64,
    /// Window memberships refused because that window was already dropped (an event
    /// in several sliding windows may lose some and keep others).
    pub late_assignments_dropped: u64,
    /// Events refused because `open_windows_max` windows were open.
    pub events_refused_window_limit: u64,
    /// Results emitted when the watermark passed a window's end.
    pub windows_fired: u64,
    /// Results emitted again (or first) because of a late event.
    pub late_firings: u64,
    /// Windows open now.
    pub windows_open: u64,
    /// Events refused because their time is beyond ±[`EVENT_TIME_NS_MAX`](crate::event::EVENT_TIME_NS_MAX).
    #[serde(default)]
    pub events_refused_time_range: u64,
}
