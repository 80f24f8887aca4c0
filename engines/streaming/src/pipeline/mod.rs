//! A pipeline: filter, map and key_by stages in order, then event-time windows; run on one
//! thread ([`Pipeline::prepare`] + a [`WindowOperator`](crate::window::WindowOperator)) or
//! sharded by key over several ([`sharded::run_sharded`]). A pipeline is written in Rust
//! with the builder below or declared in TOML ([`file::PipelineFile`]).
//!
//! ```
//! use agentwire_streaming::event::{Event, Key};
//! use agentwire_streaming::pipeline::Pipeline;
//! use agentwire_streaming::window::{WindowKind, WindowSpec};
//!
//! let pipeline = Pipeline::new(WindowSpec::new(WindowKind::Tumbling { size_ns: 1_000 }))
//!     .filter(|e| e.value >= 0.0)
//!     .map(|e| e.value *= 2.0)
//!     .key_by(|_| Key::Id(0));
//! let mut e = Event::new(Key::Id(9), 10, 1.5);
//! assert!(pipeline.prepare(&mut e));
//! assert_eq!((e.key, e.value), (Key::Id(0), 3.0));
//! assert!(!pipeline.prepare(&mut Event::new(Key::Id(9), 10, -1.0)));
//! ```

pub mod file;
pub mod input;
pub mod sharded;

use crate::event::{Event, Key};
use crate::window::WindowSpec;

/// A filter: keeps the events it returns true for.
pub type FilterFn = Box<dyn Fn(&Event) -> bool + Send + Sync>;
/// A map: changes an event in place.
pub type MapFn = Box<dyn Fn(&mut Event) + Send + Sync>;
/// A key function: the key windows group by from here on.
pub type KeyFn = Box<dyn Fn(&Event) -> Key + Send + Sync>;

/// One stage before the windows.
pub enum Stage {
    /// Keeps the events the function returns true for.
    Filter(FilterFn),
    /// Changes each event.
    Map(MapFn),
    /// Sets each event's key.
    KeyBy(KeyFn),
}

/// Stages in order, then windows.
///
/// ```
/// use agentwire_streaming::pipeline::Pipeline;
/// use agentwire_streaming::window::{WindowKind, WindowSpec};
/// let p = Pipeline::new(WindowSpec::new(WindowKind::Session { gap_ns: 5 }));
/// assert_eq!(p.stages().len(), 0);
/// ```
pub struct Pipeline {
    stages: Vec<Stage>,
    window: WindowSpec,
}

impl std::fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let stages: Vec<&str> = self
            .stages
            .iter()
            .map(|s| match s {
                Stage::Filter(_) => "filter",
                Stage::Map(_) => "map",
                Stage::KeyBy(_) => "key_by",
            })
            .collect();
        f.debug_struct("Pipeline")
            .field("stages", &stages)
            .field("window", &self.window)
            .finish()
    }
}

impl Pipeline {
    /// A pipeline with no stages before `window`.
    ///
    /// ```
    /// use agentwire_streaming::pipeline::Pipeline;
    /// use agentwire_streaming::window::{WindowKind, WindowSpec};
    /// let p = Pipeline::new(WindowSpec::new(WindowKind::Tumbling { size_ns: 10 }));
    /// assert!(matches!(p.window().kind, WindowKind::Tumbling { size_ns: 10 }));
    /// ```
    pub fn new(window: WindowSpec) -> Self {
        Self {
            stages: Vec::new(),
            window,
        }
    }

    /// Adds a filter stage.
    ///
    /// ```
    /// # use agentwire_streaming::pipeline::Pipeline;
    /// # use agentwire_streaming::window::{WindowKind, WindowSpec};
    /// let p = Pipeline::new(WindowSpec::new(WindowKind::Tumbling { size_ns: 10 }))
    ///     .filter(|e| e.value.is_finite());
    /// assert_eq!(p.stages().len(), 1);
    /// ```
    pub fn filter(mut self, keep: impl Fn(&Event) -> bool + Send + Sync + 'static) -> Self {
        self.stages.push(Stage::Filter(Box::new(keep)));
        self
    }

    /// Adds a map stage.
    ///
    /// ```
    /// # use agentwire_streaming::pipeline::Pipeline;
    /// # use agentwire_streaming::window::{WindowKind, WindowSpec};
    /// let p = Pipeline::new(WindowSpec::new(WindowKind::Tumbling { size_ns: 10 }))
    ///     .map(|e| e.value = e.value.abs());
    /// assert_eq!(p.stages().len(), 1);
    /// ```
    pub fn map(mut self, change: impl Fn(&mut Event) + Send + Sync + 'static) -> Self {
        self.stages.push(Stage::Map(Box::new(change)));
        self
    }

    /// Adds a key_by stage.
    ///
    /// ```
    /// # use agentwire_streaming::pipeline::Pipeline;
    /// # use agentwire_streaming::event::Key;
    /// # use agentwire_streaming::window::{WindowKind, WindowSpec};
    /// let p = Pipeline::new(WindowSpec::new(WindowKind::Tumbling { size_ns: 10 }))
    ///     .key_by(|e| Key::Id(e.value as u64 % 4));
    /// assert_eq!(p.stages().len(), 1);
    /// ```
    pub fn key_by(mut self, key: impl Fn(&Event) -> Key + Send + Sync + 'static) -> Self {
        self.stages.push(Stage::KeyBy(Box::new(key)));
        self
    }

    /// Runs the stages on `event` in order; false if a filter dropped it.
    ///
    /// ```
    /// # use agentwire_streaming::pipeline::Pipeline;
    /// # use agentwire_streaming::event::{Event, Key};
    /// # use agentwire_streaming::window::{WindowKind, WindowSpec};
    /// let p = Pipeline::new(WindowSpec::new(WindowKind::Tumbling { size_ns: 10 }))
    ///     .filter(|e| e.value > 1.0);
    /// assert!(!p.prepare(&mut Event::new(Key::Id(0), 0, 0.5)));
    /// ```
    pub fn prepare(&self, event: &mut Event) -> bool {
        for stage in &self.stages {
            match stage {
                Stage::Filter(keep) => {
                    if !keep(event) {
                        return false;
                    }
                }
                Stage::Map(change) => change(event),
                Stage::KeyBy(key) => event.key = key(event),
            }
        }
        true
    }

    /// The stages, in order.
    ///
    /// ```
    /// # use agentwire_streaming::pipeline::Pipeline;
    /// # use agentwire_streaming::window::{WindowKind, WindowSpec};
    /// assert!(Pipeline::new(WindowSpec::new(WindowKind::Tumbling { size_ns: 1 })).stages().is_empty());
    /// ```
    pub fn stages(&self) -> &[Stage] {
        &self.stages
    }

    /// The windows after the stages.
    ///
    /// ```
    /// # use agentwire_streaming::pipeline::Pipeline;
    /// # use agentwire_streaming::window::{WindowKind, WindowSpec};
    /// let p = Pipeline::new(WindowSpec::new(WindowKind::Tumbling { size_ns: 1 }));
    /// assert_eq!(p.window().allowed_lateness_ns, 0);
    /// ```
    pub fn window(&self) -> &WindowSpec {
        &self.window
    }
}
