//! perf_event_open counters for one target (a thread, or every task on one CPU), opened one
//! by one so that a counter the machine lacks (no hardware PMU in a VM) is reported as
//! unavailable with the kernel's reason while the others still count.
//!
//! ```text
//! let mut set = CounterSet::open(Target::Thread(tid), include_kernel(p), p);
//! std::thread::sleep(interval);
//! let values = set.read(); // values.get("task_clock_ns"), values.ipc(), ...
//! ```

use perf_event::events::{Event, Hardware, Software};
use perf_event::{Builder, Counter};
use serde::Serialize;
use std::collections::BTreeMap;
use std::io;

/// One counter `agentwire perf` reads: its JSON name and the perf event behind it.
#[derive(Debug, Clone, Copy)]
pub struct CounterSpec {
    /// Name in the JSON output (`values.<name>`), with its unit where it has one.
    pub name: &'static str,
    /// Short column title of the table.
    pub column: &'static str,
    event: EventKind,
    /// Happens only in the kernel (a context switch, a migration, a page fault): a count
    /// that excludes kernel time would read 0, so without kernel access it is unavailable.
    kernel_side: bool,
}

#[derive(Debug, Clone, Copy)]
enum EventKind {
    Hw(Hardware),
    Sw(Software),
}

impl EventKind {
    fn event(self) -> Event {
        match self {
            Self::Hw(h) => h.into(),
            Self::Sw(s) => s.into(),
        }
    }
}

/// The counters of `agentwire perf`, hardware first (instructions, cycles, cache references
/// and misses, branch misses), then the kernel's software counters (context switches, page
/// faults, CPU migrations, task clock).
pub const COUNTERS: [CounterSpec; 9] = [
    CounterSpec {
        name: "instructions",
        column: "instr",
        event: EventKind::Hw(Hardware::INSTRUCTIONS),
        kernel_side: false,
    },
    CounterSpec {
        name: "cycles",
        column: "cycles",
        event: EventKind::Hw(Hardware::CPU_CYCLES),
        kernel_side: false,
    },
    CounterSpec {
        name: "cache_references",
        column: "cache-ref",
        event: EventKind::Hw(Hardware::CACHE_REFERENCES),
        kernel_side: false,
    },
    CounterSpec {
        name: "cache_misses",
        column: "cache-miss",
        event: EventKind::Hw(Hardware::CACHE_MISSES),
        kernel_side: false,
    },
    CounterSpec {
        name: "branch_misses",
        column: "br-miss",
        event: EventKind::Hw(Hardware::BRANCH_MISSES),
        kernel_side: false,
    },
    CounterSpec {
        name: "context_switches",
        column: "ctx-sw",
        event: EventKind::Sw(Software::CONTEXT_SWITCHES),
        kernel_side: true,
    },
    CounterSpec {
        name: "page_faults",
        column: "faults",
        event: EventKind::Sw(Software::PAGE_FAULTS),
        kernel_side: true,
    },
    CounterSpec {
        name: "cpu_migrations",
        column: "migr",
        event: EventKind::Sw(Software::CPU_MIGRATIONS),
        kernel_side: true,
    },
    CounterSpec {
        name: "task_clock_ns",
        column: "task-ms",
        event: EventKind::Sw(Software::TASK_CLOCK),
        kernel_side: false,
    },
];

/// What a counter set watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// One thread (any CPU it runs on).
    Thread(i32),
    /// Every task while it runs on this CPU (needs root or `perf_event_paranoid` <= 0).
    Cpu(usize),
}

/// Counts of one target over the measured interval: `None` where the counter could not be
/// opened or read. Counts of a multiplexed counter are scaled to its whole enabled time.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Values(pub BTreeMap<&'static str, Option<u64>>);

impl Values {
    /// The count named `name` (a [`COUNTERS`] name), when it was counted.
    pub fn get(&self, name: &str) -> Option<u64> {
        self.0.get(name).copied().flatten()
    }

    /// Adds `other` into `self`: a counter stays counted only where both sides counted it.
    pub fn add(&mut self, other: &Values) {
        for spec in COUNTERS {
            let sum = match (self.0.get(spec.name), other.get(spec.name)) {
                (None, v) => v,
                (Some(Some(a)), Some(b)) => Some(a + b),
                _ => None,
            };
            self.0.insert(spec.name, sum);
        }
    }

    /// Instructions per cycle, when both were counted and cycles is not zero.
    pub fn ipc(&self) -> Option<f64> {
        let (i, c) = (self.get("instructions")?, self.get("cycles")?);
        (c > 0).then(|| i as f64 / c as f64)
    }
}

/// Whether counters include time in the kernel: they do for root or when
/// `perf_event_paranoid` <= 1; otherwise only user space may be counted.
pub fn include_kernel(paranoid: Option<i32>) -> bool {
    rustix::process::geteuid().is_root() || paranoid.is_some_and(|p| p <= 1)
}

/// `/proc/sys/kernel/perf_event_paranoid`, when readable.
pub fn paranoid_level() -> Option<i32> {
    std::fs::read_to_string("/proc/sys/kernel/perf_event_paranoid")
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Why the kernel refused a counter, in words an operator can act on.
pub fn unavailable_reason(spec: &CounterSpec, error: &io::Error, paranoid: Option<i32>) -> String {
    let hardware = matches!(spec.event, EventKind::Hw(_));
    match error.raw_os_error() {
        Some(libc::ENOENT) | Some(libc::ENODEV) | Some(libc::EOPNOTSUPP) if hardware => format!(
            "no hardware PMU exposes this event ({error}); a VM without a virtual PMU has none"
        ),
        Some(libc::ENOENT) | Some(libc::EOPNOTSUPP) => {
            format!("the kernel does not support this event ({error})")
        }
        Some(libc::EACCES) | Some(libc::EPERM) => format!(
            "permission denied ({error}): perf_event_paranoid is {}; run as root or lower it",
            paranoid.map_or("unknown".to_string(), |p| p.to_string())
        ),
        Some(libc::ESRCH) => format!("the thread is gone ({error})"),
        Some(libc::EMFILE) => format!("out of file descriptors ({error})"),
        _ => error.to_string(),
    }
}

/// The counters of one target, opened and enabled; unavailable ones keep their reason.
pub struct CounterSet {
    counters: Vec<(&'static str, Result<Counter, String>)>,
}

impl CounterSet {
    /// Opens and enables every counter of [`COUNTERS`] on `target`, counting kernel time
    /// too when `kernel` (see [`include_kernel`]); `paranoid` words the refusals.
    pub fn open(target: Target, kernel: bool, paranoid: Option<i32>) -> Self {
        let counters = COUNTERS
            .iter()
            .map(|spec| {
                let opened = if spec.kernel_side && !kernel {
                    Err(format!(
                        "counted in the kernel, which perf_event_paranoid {} hides from \
                         non-root users; run as root or set it to 1 or less",
                        paranoid.map_or("(unknown)".to_string(), |p| p.to_string())
                    ))
                } else {
                    open_one(spec, target, kernel)
                        .map_err(|e| unavailable_reason(spec, &e, paranoid))
                };
                (spec.name, opened)
            })
            .collect();
        Self { counters }
    }

    /// Names and reasons of the counters that could not be opened.
    pub fn unavailable(&self) -> impl Iterator<Item = (&'static str, &str)> {
        self.counters.iter().filter_map(|(name, c)| match c {
            Err(reason) => Some((*name, reason.as_str())),
            Ok(_) => None,
        })
    }

    /// Stops counting and returns the counts (scaled where multiplexed).
    pub fn read(&mut self) -> Values {
        let mut values = Values::default();
        for (name, counter) in &mut self.counters {
            let value = match counter {
                Ok(c) => {
                    let _ = c.disable();
                    c.read_count_and_time().ok().map(|t| {
                        if t.time_running == 0 || t.time_running == t.time_enabled {
                            t.count
                        } else {
                            (t.count as u128 * t.time_enabled as u128 / t.time_running as u128)
                                as u64
                        }
                    })
                }
                Err(_) => None,
            };
            values.0.insert(name, value);
        }
        values
    }
}

fn open_one(spec: &CounterSpec, target: Target, kernel: bool) -> io::Result<Counter> {
    let builder = Builder::new().kind(spec.event.event());
    let mut builder = match target {
        Target::Thread(tid) => builder.observe_pid(tid).any_cpu(),
        Target::Cpu(cpu) => builder.any_pid().one_cpu(cpu),
    };
    builder.exclude_kernel(!kernel);
    let mut counter = builder.build()?;
    counter.enable()?;
    Ok(counter)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn software_counters_count_this_thread_and_missing_ones_say_why() {
        let tid = rustix::thread::gettid().as_raw_nonzero().get();
        let paranoid = paranoid_level();
        let mut set = CounterSet::open(Target::Thread(tid), include_kernel(paranoid), paranoid);
        let mut x = 0u64;
        for i in 0..2_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        let values = set.read();
        assert!(
            values.get("task_clock_ns").is_some_and(|ns| ns > 0),
            "task clock counts on every Linux: {values:?}"
        );
        for (name, reason) in set.unavailable() {
            assert_eq!(values.0[name], None);
            assert!(!reason.is_empty());
        }
        // Every counter has a value or a reason.
        assert_eq!(values.0.len(), COUNTERS.len());
    }

    #[test]
    fn sums_keep_a_counter_only_where_both_sides_counted_it() {
        let mut a = Values::default();
        a.0.insert("instructions", Some(10));
        a.0.insert("cycles", None);
        let mut total = Values::default();
        total.add(&a);
        total.add(&a);
        assert_eq!(total.get("instructions"), Some(20));
        assert_eq!(total.get("cycles"), None);
        assert_eq!(total.ipc(), None);
        let mut b = Values::default();
        b.0.insert("instructions", Some(30));
        b.0.insert("cycles", Some(20));
        assert_eq!(b.ipc(), Some(1.5));
    }

    #[test]
    fn reasons_name_the_pmu_and_the_paranoid_level() {
        let hw = &COUNTERS[0];
        let enoent = io::Error::from_raw_os_error(libc::ENOENT);
        assert!(unavailable_reason(hw, &enoent, Some(2)).contains("no hardware PMU"));
        let eacces = io::Error::from_raw_os_error(libc::EACCES);
        assert!(unavailable_reason(hw, &eacces, Some(3)).contains("perf_event_paranoid is 3"));
    }
}
