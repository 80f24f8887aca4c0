//! The window operator: assigns events to windows, keeps their state, and fires and drops
//! them as the watermark moves (the rules are in the module above).

use std::collections::{BTreeSet, HashMap};

use super::accumulator::Accumulator;
use super::keyed::SortedWindows;
use super::snapshot::{OperatorSnapshot, SnapshotError, StoredWindow};
use super::{Output, SpecError, WindowKind, WindowResult, WindowSpec, WindowStats};
use crate::event::{time_in_range, Event, Key};

/// One open window.
struct Window {
    end_ns: i64,
    acc: Accumulator,
    fired: bool,
}

/// A timer: (when, key, window start).
type Timer = (i64, Key, i64);

/// Event-time windows over one shard's keys.
///
/// ```
/// use agentwire_streaming::event::{Event, Key};
/// use agentwire_streaming::window::{WindowKind, WindowOperator, WindowSpec};
/// let mut op = WindowOperator::new(WindowSpec::new(WindowKind::Session { gap_ns: 10 })).unwrap();
/// let mut out = Vec::new();
/// for t in [0, 5, 30] {
///     op.push(&Event::new(Key::Id(1), t, 1.0), &mut |o| out.push(o));
/// }
/// op.finish(&mut |o| out.push(o));
/// assert_eq!(out.len(), 2); // sessions [0, 15) and [30, 40)
/// ```
pub struct WindowOperator {
    spec: WindowSpec,
    /// Per key, its open windows by start. Keys come from agents: foldhash, seeded per
    /// process (fast, and no fixed seed to collide against).
    windows: HashMap<Key, SortedWindows<Window>, foldhash::fast::RandomState>,
    /// (end, key, start): fire when the watermark reaches end.
    fire_at: BTreeSet<Timer>,
    /// (end + allowed lateness, key, start): drop the window then.
    drop_at: BTreeSet<Timer>,
    /// The largest event time seen; None before the first event.
    max_event_time_ns: Option<i64>,
    stats: WindowStats,
}

impl WindowOperator {
    /// An operator for `spec`, checked first.
    ///
    /// ```
    /// use agentwire_streaming::window::{WindowKind, WindowOperator, WindowSpec};
    /// assert!(WindowOperator::new(WindowSpec::new(WindowKind::Tumbling { size_ns: -5 })).is_err());
    /// ```
    pub fn new(spec: WindowSpec) -> Result<Self, SpecError> {
        spec.validate()?;
        Ok(Self {
            spec,
            windows: HashMap::default(),
            fire_at: BTreeSet::new(),
            drop_at: BTreeSet::new(),
            max_event_time_ns: None,
            stats: WindowStats::default(),
        })
    }

    /// The operator's whole state, for a checkpoint.
    ///
    /// ```
    /// use agentwire_streaming::event::{Event, Key};
    /// use agentwire_streaming::window::{WindowKind, WindowOperator, WindowSpec};
    /// let mut op = WindowOperator::new(WindowSpec::new(WindowKind::Tumbling { size_ns: 10 })).unwrap();
    /// op.push(&Event::new(Key::Id(1), 3, 2.0), &mut |_| {});
    /// assert_eq!(op.snapshot().windows_open(), 1);
    /// ```
    pub fn snapshot(&self) -> OperatorSnapshot {
        let mut windows: Vec<StoredWindow> = self
            .windows
            .iter()
            .flat_map(|(key, keyed)| {
                keyed.iter().map(|(&start_ns, w)| StoredWindow {
                    key: *key,
                    start_ns,
                    end_ns: w.end_ns,
                    fired: w.fired,
                    acc: w.acc.clone(),
                })
            })
            .collect();
        windows.sort_by_key(|w| (w.key, w.start_ns));
        OperatorSnapshot {
            max_event_time_ns: self.max_event_time_ns,
            stats: self.stats,
            windows,
        }
    }

    /// An operator for `spec` in the state `snapshot` holds: it emits exactly what the
    /// snapshotted one would have for the same further input.
    ///
    /// ```
    /// use agentwire_streaming::window::{WindowKind, WindowOperator, WindowSpec};
    /// let spec = WindowSpec::new(WindowKind::Tumbling { size_ns: 10 });
    /// let snap = WindowOperator::new(spec.clone()).unwrap().snapshot();
    /// assert!(WindowOperator::restore(spec, snap).is_ok());
    /// ```
    pub fn restore(spec: WindowSpec, snapshot: OperatorSnapshot) -> Result<Self, SnapshotError> {
        snapshot.check(&spec)?;
        let mut op = Self::new(spec)?;
        op.max_event_time_ns = snapshot.max_event_time_ns;
        op.stats = snapshot.stats;
        let watermark_ns = op.watermark_ns();
        let lateness_ns = op.spec.allowed_lateness_ns;
        for w in snapshot.windows {
            // Every window at or below the watermark fired when it got there; only those
            // above it wait for their timer.
            if w.end_ns > watermark_ns {
                op.fire_at.insert((w.end_ns, w.key, w.start_ns));
            }
            op.drop_at
                .insert((w.end_ns.saturating_add(lateness_ns), w.key, w.start_ns));
            let window = Window {
                end_ns: w.end_ns,
                acc: w.acc,
                fired: w.fired,
            };
            op.windows
                .entry(w.key)
                .or_default()
                .insert(w.start_ns, window);
        }
        op.stats.windows_open = op.windows.values().map(|k| k.len() as u64).sum();
        Ok(op)
    }

    /// The current watermark, in ns (`i64::MIN` before the first event).
    ///
    /// ```
    /// use agentwire_streaming::event::{Event, Key};
    /// use agentwire_streaming::window::{WindowKind, WindowOperator, WindowSpec};
    /// let mut spec = WindowSpec::new(WindowKind::Tumbling { size_ns: 10 });
    /// spec.out_of_orderness_ns = 3;
    /// let mut op = WindowOperator::new(spec).unwrap();
    /// op.push(&Event::new(Key::Id(1), 100, 0.0), &mut |_| {});
    /// assert_eq!(op.watermark_ns(), 97);
    /// ```
    pub fn watermark_ns(&self) -> i64 {
        self.max_event_time_ns.map_or(i64::MIN, |t| {
            t.saturating_sub(self.spec.out_of_orderness_ns)
        })
    }

    /// What the operator counted so far.
    ///
    /// ```
    /// use agentwire_streaming::window::{WindowKind, WindowOperator, WindowSpec};
    /// let op = WindowOperator::new(WindowSpec::new(WindowKind::Tumbling { size_ns: 1 })).unwrap();
    /// assert_eq!(op.stats().windows_open, 0);
    /// ```
    pub fn stats(&self) -> WindowStats {
        self.stats
    }

    /// Takes one event into its windows, then fires and drops windows as the watermark moves;
    /// results (and late events, if asked) go to `out`.
    ///
    /// ```
    /// use agentwire_streaming::event::{Event, Key};
    /// use agentwire_streaming::window::{WindowKind, WindowOperator, WindowSpec};
    /// let mut op = WindowOperator::new(WindowSpec::new(WindowKind::Tumbling { size_ns: 10 })).unwrap();
    /// let mut fired = 0;
    /// op.push(&Event::new(Key::Id(1), 5, 1.0), &mut |_| fired += 1);
    /// op.push(&Event::new(Key::Id(1), 10, 1.0), &mut |_| fired += 1);
    /// assert_eq!(fired, 1);
    /// ```
    pub fn push(&mut self, event: &Event, out: &mut impl FnMut(Output)) {
        if self.push_held(event, out) {
            self.observe_time(event.event_time_ns, out);
        }
    }

    /// Takes one event into its windows against the current watermark without moving it
    /// (the caller moves it with [`observe_time`](Self::observe_time)); false if its time is
    /// out of range ([`EVENT_TIME_NS_MAX`](crate::event::EVENT_TIME_NS_MAX)), refused and counted. A sharded run holds
    /// every shard's watermark to the input's progress at the last round, so which events
    /// are late does not depend on how keys are split over shards.
    ///
    /// ```
    /// use agentwire_streaming::event::{Event, Key};
    /// use agentwire_streaming::window::{WindowKind, WindowOperator, WindowSpec};
    /// let mut op = WindowOperator::new(WindowSpec::new(WindowKind::Tumbling { size_ns: 10 })).unwrap();
    /// op.push_held(&Event::new(Key::Id(1), 50, 1.0), &mut |_| {});
    /// assert_eq!(op.watermark_ns(), i64::MIN);
    /// ```
    pub fn push_held(&mut self, event: &Event, out: &mut impl FnMut(Output)) -> bool {
        self.stats.events_in += 1;
        if !time_in_range(event.event_time_ns) {
            // Window bounds near i64's ends would overflow; no real clock is there. Refused
            // events do not move the watermark either.
            self.stats.events_refused_time_range += 1;
            return false;
        }
        let watermark_ns = self.watermark_ns();
        let taken = match self.spec.kind {
            WindowKind::Tumbling { size_ns } => self.assign(event, size_ns, size_ns, out),
            WindowKind::Sliding { size_ns, slide_ns } => self.assign(event, size_ns, slide_ns, out),
            WindowKind::Session { gap_ns } => self.sessionize(event, gap_ns, watermark_ns, out),
        };
        if taken == Taken::TooLate {
            self.stats.late_events_dropped += 1;
            if self.spec.late_side_output {
                out(Output::Late(event.clone()));
            }
        }
        true
    }

    /// Moves the watermark as if an event of time `event_time_ns` had been seen (by another
    /// shard of the same input: the source's progress reaches every shard this way), firing
    /// and dropping windows as [`push`](Self::push) does. An earlier time changes nothing.
    ///
    /// ```
    /// use agentwire_streaming::event::{Event, Key};
    /// use agentwire_streaming::window::{WindowKind, WindowOperator, WindowSpec};
    /// let mut op = WindowOperator::new(WindowSpec::new(WindowKind::Tumbling { size_ns: 10 })).unwrap();
    /// op.push(&Event::new(Key::Id(1), 5, 1.0), &mut |_| {});
    /// let mut fired = 0;
    /// op.observe_time(10, &mut |_| fired += 1);
    /// assert_eq!((fired, op.watermark_ns()), (1, 10));
    /// ```
    pub fn observe_time(&mut self, event_time_ns: i64, out: &mut impl FnMut(Output)) {
        if self.max_event_time_ns.is_none_or(|max| event_time_ns > max) {
            self.max_event_time_ns = Some(event_time_ns);
            self.advance(out);
        }
    }

    /// The end of the input: fires every open window and drops them all.
    ///
    /// ```
    /// use agentwire_streaming::event::{Event, Key};
    /// use agentwire_streaming::window::{WindowKind, WindowOperator, WindowSpec};
    /// let mut op = WindowOperator::new(WindowSpec::new(WindowKind::Tumbling { size_ns: 10 })).unwrap();
    /// op.push(&Event::new(Key::Id(1), 5, 1.0), &mut |_| {});
    /// let mut fired = 0;
    /// op.finish(&mut |_| fired += 1);
    /// assert_eq!((fired, op.stats().windows_open), (1, 0));
    /// ```
    pub fn finish(&mut self, out: &mut impl FnMut(Output)) {
        self.fire_until(i64::MAX, out);
        self.windows.clear();
        self.drop_at.clear();
        self.stats.windows_open = 0;
    }

    /// Tumbling and sliding windows: adds the event to each window `[s, s + size)` with `s`
    /// a multiple of `slide` and `s <= t < s + size` that is not dropped yet.
    fn assign(
        &mut self,
        event: &Event,
        size_ns: i64,
        slide_ns: i64,
        out: &mut impl FnMut(Output),
    ) -> Taken {
        let t = event.event_time_ns;
        let watermark_ns = self.watermark_ns();
        let lateness_ns = self.spec.allowed_lateness_ns;
        let mut start_ns = t - t.rem_euclid(slide_ns);
        let mut taken = Taken::TooLate;
        while start_ns > t.saturating_sub(size_ns) {
            let end_ns = start_ns.saturating_add(size_ns);
            if end_ns.saturating_add(lateness_ns) <= watermark_ns {
                self.stats.late_assignments_dropped += 1;
            } else if self.add_to_window(event, start_ns, end_ns, watermark_ns, out) {
                taken = Taken::Yes;
            } else if taken == Taken::TooLate {
                taken = Taken::Refused;
            }
            start_ns = start_ns.saturating_sub(slide_ns);
        }
        taken
    }

    /// Adds the event to window `[start, end)` of its key, opening it if needed; false if
    /// the window limit refused it.
    fn add_to_window(
        &mut self,
        event: &Event,
        start_ns: i64,
        end_ns: i64,
        watermark_ns: i64,
        out: &mut impl FnMut(Output),
    ) -> bool {
        let open = self.stats.windows_open as usize;
        let keyed = self.windows.entry(event.key).or_default();
        if !keyed.contains_key(&start_ns) {
            if open >= self.spec.open_windows_max {
                self.stats.events_refused_window_limit += 1;
                if keyed.is_empty() {
                    self.windows.remove(&event.key);
                }
                return false;
            }
            let with_quantiles = !self.spec.quantiles.is_empty();
            let acc = Accumulator::new(with_quantiles);
            let fired = false;
            keyed.insert(start_ns, Window { end_ns, acc, fired });
            self.stats.windows_open += 1;
            let lateness_ns = self.spec.allowed_lateness_ns;
            self.drop_at
                .insert((end_ns.saturating_add(lateness_ns), event.key, start_ns));
            if end_ns > watermark_ns {
                self.fire_at.insert((end_ns, event.key, start_ns));
            }
        }
        let Some(window) = keyed.get_mut(&start_ns) else {
            return false;
        };
        window.acc.add(event.value);
        if end_ns <= watermark_ns {
            window.fired = true;
            self.stats.late_firings += 1;
            out(Output::Window(result(
                &self.spec, event.key, start_ns, window, true,
            )));
        }
        true
    }

    /// Session windows: the event's `[t, t + gap)` merges with every open session of its key
    /// that it overlaps.
    fn sessionize(
        &mut self,
        event: &Event,
        gap_ns: i64,
        watermark_ns: i64,
        out: &mut impl FnMut(Output),
    ) -> Taken {
        let t = event.event_time_ns;
        let lateness_ns = self.spec.allowed_lateness_ns;
        let mut start_ns = t;
        let mut end_ns = t.saturating_add(gap_ns);
        let key = event.key;
        // Too late only if its own session would be dropped and it falls in no session that
        // is still open (an open session takes it whatever its own window says).
        let overlaps_open = self
            .windows
            .get(&key)
            .and_then(|k| k.last_before(end_ns))
            .is_some_and(|(_, w)| w.end_ns > t);
        if !overlaps_open && end_ns.saturating_add(lateness_ns) <= watermark_ns {
            self.stats.late_assignments_dropped += 1;
            return Taken::TooLate;
        }
        let keyed = self.windows.entry(key).or_default();
        // Sessions of one key never overlap, so those this one overlaps are the ones
        // starting before its end, walked back while they end after its start.
        let mut merged: Option<Window> = None;
        while let Some((s, w)) = keyed.last_before(end_ns) {
            if w.end_ns <= t {
                break;
            }
            let w = keyed.remove(&s).expect("the entry just seen");
            self.fire_at.remove(&(w.end_ns, key, s));
            self.drop_at
                .remove(&(w.end_ns.saturating_add(lateness_ns), key, s));
            self.stats.windows_open -= 1;
            start_ns = start_ns.min(s);
            end_ns = end_ns.max(w.end_ns);
            merged = Some(match merged {
                None => w,
                Some(mut m) => {
                    m.acc.merge(&w.acc);
                    m.fired |= w.fired;
                    m
                }
            });
        }
        let mut window = match merged {
            Some(w) => w,
            None if self.stats.windows_open as usize >= self.spec.open_windows_max => {
                self.stats.events_refused_window_limit += 1;
                if keyed.is_empty() {
                    self.windows.remove(&key);
                }
                return Taken::Refused;
            }
            None => {
                let acc = Accumulator::new(!self.spec.quantiles.is_empty());
                Window {
                    end_ns,
                    acc,
                    fired: false,
                }
            }
        };
        window.end_ns = end_ns;
        window.acc.add(event.value);
        if end_ns <= watermark_ns {
            window.fired = true;
            self.stats.late_firings += 1;
            out(Output::Window(result(
                &self.spec, key, start_ns, &window, true,
            )));
        } else {
            self.fire_at.insert((end_ns, key, start_ns));
        }
        self.drop_at
            .insert((end_ns.saturating_add(lateness_ns), key, start_ns));
        keyed.insert(start_ns, window);
        self.stats.windows_open += 1;
        Taken::Yes
    }

    /// Fires the windows the watermark has passed, then drops those past their lateness.
    fn advance(&mut self, out: &mut impl FnMut(Output)) {
        let watermark_ns = self.watermark_ns();
        self.fire_until(watermark_ns, out);
        while let Some(&(at, key, start_ns)) = self.drop_at.first() {
            if at > watermark_ns {
                break;
            }
            self.drop_at.pop_first();
            if let Some(keyed) = self.windows.get_mut(&key) {
                if keyed.remove(&start_ns).is_some() {
                    self.stats.windows_open -= 1;
                }
                if keyed.is_empty() {
                    self.windows.remove(&key);
                }
            }
        }
    }

    /// Fires every window whose end is at or below `watermark_ns`.
    fn fire_until(&mut self, watermark_ns: i64, out: &mut impl FnMut(Output)) {
        while let Some(&(end_ns, key, start_ns)) = self.fire_at.first() {
            if end_ns > watermark_ns {
                break;
            }
            self.fire_at.pop_first();
            let window = self
                .windows
                .get_mut(&key)
                .and_then(|k| k.get_mut(&start_ns));
            if let Some(window) = window.filter(|w| w.end_ns == end_ns) {
                window.fired = true;
                self.stats.windows_fired += 1;
                out(Output::Window(result(
                    &self.spec, key, start_ns, window, false,
                )));
            }
        }
    }
}

/// Whether an event found a window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Taken {
    /// At least one window took it.
    Yes,
    /// Every window it belongs to was already dropped.
    TooLate,
    /// A window was open to it but the window limit refused it (counted there).
    Refused,
}

fn result(spec: &WindowSpec, key: Key, start_ns: i64, window: &Window, late: bool) -> WindowResult {
    let acc = &window.acc;
    WindowResult {
        key,
        start_ns,
        end_ns: window.end_ns,
        count: acc.count,
        sum: acc.sum,
        min: acc.min,
        max: acc.max,
        mean: acc.mean(),
        quantiles: spec.quantiles.iter().map(|&q| acc.quantile(q)).collect(),
        late,
    }
}
