//! The window operator against a simple batch reference: random events, out of order within
//! what the watermark and the allowed lateness accept, give the same final window results
//! as grouping all events at once.

use std::collections::BTreeMap;

use agentwire_streaming::event::{Event, Key};
use agentwire_streaming::window::{
    Output, WindowKind, WindowOperator, WindowResult, WindowSpec, QUANTILE_RELATIVE_ACCURACY,
};
use proptest::prelude::*;

mod common;
use common::kind;

const QUANTILES: [f64; 3] = [0.0, 0.5, 0.9];

/// What the reference computes for one window.
#[derive(Debug)]
struct Expected {
    values: Vec<f64>,
}

fn reference_fixed(
    events: &[Event],
    size_ns: i64,
    slide_ns: i64,
) -> BTreeMap<(Key, i64), Expected> {
    let mut windows: BTreeMap<(Key, i64), Expected> = BTreeMap::new();
    for e in events {
        // Every start that is a multiple of the slide with start <= t < start + size, found
        // by scanning, independent of the operator's arithmetic.
        let t = e.event_time_ns;
        let lowest = t - size_ns - slide_ns;
        let mut start = lowest - lowest.rem_euclid(slide_ns);
        while start <= t {
            if t < start + size_ns {
                let w = windows
                    .entry((e.key, start))
                    .or_insert(Expected { values: vec![] });
                w.values.push(e.value);
            }
            start += slide_ns;
        }
    }
    windows
}

fn reference_sessions(events: &[Event], gap_ns: i64) -> BTreeMap<(Key, i64), (i64, Expected)> {
    let mut by_key: BTreeMap<Key, Vec<&Event>> = BTreeMap::new();
    for e in events {
        by_key.entry(e.key).or_default().push(e);
    }
    let mut sessions = BTreeMap::new();
    for (key, mut evs) in by_key {
        evs.sort_by_key(|e| e.event_time_ns);
        let mut start = evs[0].event_time_ns;
        let mut last = start;
        let mut values = vec![];
        for e in evs {
            if e.event_time_ns - last >= gap_ns {
                sessions.insert((key, start), (last + gap_ns, Expected { values }));
                values = vec![];
                start = e.event_time_ns;
            }
            last = e.event_time_ns;
            values.push(e.value);
        }
        sessions.insert((key, start), (last + gap_ns, Expected { values }));
    }
    sessions
}

fn check(result: &WindowResult, expected: &Expected) -> Result<(), TestCaseError> {
    let mut sorted = expected.values.clone();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    prop_assert_eq!(result.count, n as u64);
    // Integer values: sums are exact in f64 whatever the order.
    let sum: f64 = sorted.iter().sum();
    prop_assert_eq!(result.sum, sum);
    prop_assert_eq!(result.min, sorted[0]);
    prop_assert_eq!(result.max, sorted[n - 1]);
    prop_assert_eq!(result.mean, sum / n as f64);
    for (i, q) in QUANTILES.iter().enumerate() {
        let exact = sorted[(q * (n as f64 - 1.0)) as usize];
        let tolerance = exact.abs() * (QUANTILE_RELATIVE_ACCURACY * 1.01) + 1e-6;
        prop_assert!(
            (result.quantiles[i] - exact).abs() <= tolerance,
            "q{} = {} against {}",
            q,
            result.quantiles[i],
            exact
        );
    }
    Ok(())
}

/// Events whose times rise with random steps and then jitter back by up to `jitter_ns`.
fn events(jitter_ns: i64) -> impl Strategy<Value = Vec<Event>> {
    prop::collection::vec((0u64..4, 0i64..20, 0..=jitter_ns, -1000i32..1000), 1..300).prop_map(
        |rows| {
            let mut base = 1_000;
            rows.into_iter()
                .map(|(key, step, back, value)| {
                    base += step;
                    Event::new(Key::Id(key), base - back, f64::from(value))
                })
                .collect()
        },
    )
}

/// Runs the operator; the results in emission order.
fn run(spec: WindowSpec, events: &[Event]) -> (Vec<WindowResult>, WindowOperator) {
    let mut op = WindowOperator::new(spec).expect("a valid spec");
    let mut results = vec![];
    let mut sink = |o: Output| match o {
        Output::Window(w) => results.push(w),
        Output::Late(e) => panic!("nothing is too late here, yet {e:?} was"),
    };
    for e in events {
        op.push(e, &mut sink);
    }
    op.finish(&mut sink);
    (results, op)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn final_results_equal_the_batch_reference(
        kind in kind(),
        jitter_ns in 0i64..60,
        split in 0.0f64..=1.0,
        seed_events in events(60),
    ) {
        // The watermark's slack and the lateness share the jitter: nothing is too late.
        let out_of_orderness_ns = (jitter_ns as f64 * split) as i64;
        let allowed_lateness_ns = jitter_ns - out_of_orderness_ns;
        let events: Vec<Event> = seed_events
            .into_iter()
            .scan(i64::MIN, |max, mut e| {
                // Clamp the jitter to this case's bound.
                *max = (*max).max(e.event_time_ns);
                e.event_time_ns = e.event_time_ns.max(*max - jitter_ns);
                Some(e)
            })
            .collect();
        let mut spec = WindowSpec::new(kind);
        spec.out_of_orderness_ns = out_of_orderness_ns;
        spec.allowed_lateness_ns = allowed_lateness_ns;
        spec.quantiles = QUANTILES.to_vec();
        spec.late_side_output = true;
        let (results, op) = run(spec, &events);
        let stats = op.stats();
        prop_assert_eq!(stats.late_events_dropped, 0);
        prop_assert_eq!(stats.late_assignments_dropped, 0);
        prop_assert_eq!(stats.events_in, events.len() as u64);
        prop_assert_eq!(stats.windows_open, 0);
        match kind {
            WindowKind::Tumbling { size_ns } | WindowKind::Sliding { size_ns, .. } => {
                let slide_ns = match kind {
                    WindowKind::Sliding { slide_ns, .. } => slide_ns,
                    _ => size_ns,
                };
                let expected = reference_fixed(&events, size_ns, slide_ns);
                let mut last: BTreeMap<(Key, i64), &WindowResult> = BTreeMap::new();
                for r in &results {
                    prop_assert_eq!(r.end_ns - r.start_ns, size_ns);
                    last.insert((r.key, r.start_ns), r);
                }
                prop_assert_eq!(last.len(), expected.len());
                for (at, e) in &expected {
                    let r = last.get(at);
                    prop_assert!(r.is_some(), "window {:?} never fired", at);
                    check(r.unwrap(), e)?;
                }
            }
            WindowKind::Session { gap_ns } => {
                let expected = reference_sessions(&events, gap_ns);
                // A result later covered by another of its key (a merge) is superseded.
                let mut live: Vec<&WindowResult> = vec![];
                for r in &results {
                    live.retain(|old| {
                        !(old.key == r.key && r.start_ns <= old.start_ns && old.end_ns <= r.end_ns)
                    });
                    live.push(r);
                }
                prop_assert_eq!(live.len(), expected.len());
                for r in live {
                    let e = expected.get(&(r.key, r.start_ns));
                    prop_assert!(e.is_some(), "session {:?} at {} unexpected", r.key, r.start_ns);
                    let (end_ns, e) = e.unwrap();
                    prop_assert_eq!(r.end_ns, *end_ns);
                    check(r, e)?;
                }
            }
        }
    }
}

fn event(key: u64, t: i64, value: f64) -> Event {
    Event::new(Key::Id(key), t, value)
}

fn windows(outputs: &[Output]) -> Vec<(i64, u64, bool)> {
    outputs
        .iter()
        .filter_map(|o| match o {
            Output::Window(w) => Some((w.start_ns, w.count, w.late)),
            Output::Late(_) => None,
        })
        .collect()
}

#[test]
fn a_late_event_within_the_lateness_fires_its_window_again() {
    let mut spec = WindowSpec::new(WindowKind::Tumbling { size_ns: 10 });
    spec.allowed_lateness_ns = 10;
    let mut op = WindowOperator::new(spec).unwrap();
    let mut out = vec![];
    for e in [event(1, 3, 1.0), event(1, 12, 1.0), event(1, 5, 1.0)] {
        op.push(&e, &mut |o| out.push(o));
    }
    // On time with one event, then again with two, marked late.
    assert_eq!(windows(&out), vec![(0, 1, false), (0, 2, true)]);
    assert_eq!(op.stats().late_firings, 1);
}

#[test]
fn an_event_past_the_lateness_is_counted_and_sent_to_the_side_output() {
    let mut spec = WindowSpec::new(WindowKind::Tumbling { size_ns: 10 });
    spec.allowed_lateness_ns = 5;
    spec.late_side_output = true;
    let mut op = WindowOperator::new(spec).unwrap();
    let mut out = vec![];
    for e in [event(1, 3, 1.0), event(1, 15, 1.0), event(1, 4, 7.0)] {
        op.push(&e, &mut |o| out.push(o));
    }
    // The watermark is 15 = end 10 + lateness 5: window [0, 10) is gone.
    assert_eq!(out.last(), Some(&Output::Late(event(1, 4, 7.0))));
    assert_eq!(windows(&out), vec![(0, 1, false)]);
    let stats = op.stats();
    assert_eq!(
        (stats.late_events_dropped, stats.late_assignments_dropped),
        (1, 1)
    );
}

#[test]
fn without_the_side_output_a_late_event_is_only_counted() {
    let mut op =
        WindowOperator::new(WindowSpec::new(WindowKind::Tumbling { size_ns: 10 })).unwrap();
    let mut out = vec![];
    for e in [event(1, 3, 1.0), event(1, 20, 1.0), event(1, 4, 7.0)] {
        op.push(&e, &mut |o| out.push(o));
    }
    assert_eq!(out.len(), 1);
    assert_eq!(op.stats().late_events_dropped, 1);
}

#[test]
fn the_window_limit_refuses_new_windows_and_counts_them() {
    let mut spec = WindowSpec::new(WindowKind::Tumbling { size_ns: 10 });
    spec.open_windows_max = 2;
    let mut op = WindowOperator::new(spec).unwrap();
    let mut out = vec![];
    for key in 0..3 {
        op.push(&event(key, 1, 1.0), &mut |o| out.push(o));
    }
    // A third key's window would be one too many; an open window still takes events.
    op.push(&event(0, 2, 1.0), &mut |o| out.push(o));
    let stats = op.stats();
    assert_eq!(
        (stats.windows_open, stats.events_refused_window_limit),
        (2, 1)
    );
    op.finish(&mut |o| out.push(o));
    assert_eq!(windows(&out), vec![(0, 2, false), (0, 1, false)]);
}

#[test]
fn a_late_event_that_bridges_two_fired_sessions_merges_them() {
    let mut spec = WindowSpec::new(WindowKind::Session { gap_ns: 10 });
    spec.allowed_lateness_ns = 100;
    let mut op = WindowOperator::new(spec).unwrap();
    let mut out = vec![];
    for e in [
        event(1, 0, 1.0),
        event(1, 15, 2.0),
        event(1, 40, 0.0),
        event(1, 8, 4.0),
    ] {
        op.push(&e, &mut |o| out.push(o));
    }
    let results: Vec<(i64, i64, u64, f64, bool)> = out
        .iter()
        .filter_map(|o| match o {
            Output::Window(w) => Some((w.start_ns, w.end_ns, w.count, w.sum, w.late)),
            Output::Late(_) => None,
        })
        .collect();
    // [0, 10) and [15, 25) fired on time; the late event at 8 joins them into [0, 25).
    assert_eq!(
        results,
        vec![
            (0, 10, 1, 1.0, false),
            (15, 25, 1, 2.0, false),
            (0, 25, 3, 7.0, true)
        ]
    );
    assert_eq!(op.stats().windows_open, 2);
}

#[test]
fn negative_event_times_fall_in_the_right_windows() {
    let (results, _) = run(
        WindowSpec::new(WindowKind::Sliding {
            size_ns: 10,
            slide_ns: 5,
        }),
        &[event(1, -3, 1.0)],
    );
    let starts: Vec<i64> = results.iter().map(|r| r.start_ns).collect();
    assert_eq!(starts, vec![-10, -5]);
}

#[test]
fn bad_specs_are_refused_with_the_setting_named() {
    let cases = [
        (
            WindowKind::Sliding {
                size_ns: 10,
                slide_ns: 20,
            },
            "slide_ns",
        ),
        (
            WindowKind::Sliding {
                size_ns: 10_000,
                slide_ns: 1,
            },
            "slide_ns",
        ),
        (WindowKind::Session { gap_ns: 0 }, "gap_ns"),
    ];
    for (kind, setting) in cases {
        let e = WindowSpec::new(kind).validate().unwrap_err();
        assert_eq!(e.setting, setting, "{e}");
    }
    let mut spec = WindowSpec::new(WindowKind::Tumbling { size_ns: 1 });
    spec.quantiles = vec![1.5];
    assert_eq!(
        spec.validate().unwrap_err().to_string(),
        "quantiles = 1.5: each must be in [0, 1]"
    );
}

#[test]
fn a_late_event_inside_an_open_session_joins_it() {
    // Gap 10, slack 20: events every 5 ns keep one session open; an event at 52 arrives
    // when the watermark is past 52 + 10, but the session it falls in is still open.
    let mut spec = WindowSpec::new(WindowKind::Session { gap_ns: 10 });
    spec.out_of_orderness_ns = 20;
    let mut op = WindowOperator::new(spec).unwrap();
    let mut out = vec![];
    for t in (0..=90).step_by(5) {
        op.push(&event(1, t, 1.0), &mut |o| out.push(o));
    }
    op.push(&event(1, 52, 1.0), &mut |o| out.push(o));
    op.finish(&mut |o| out.push(o));
    assert_eq!(op.stats().late_events_dropped, 0);
    assert_eq!(windows(&out), vec![(0, 20, false)]);
}

#[test]
fn event_times_near_the_ends_of_i64_are_refused_not_overflowed() {
    let mut op = WindowOperator::new(WindowSpec::new(WindowKind::Tumbling {
        size_ns: 1_000_000_000,
    }))
    .unwrap();
    for t in [i64::MIN, i64::MIN + 1, i64::MAX] {
        op.push(&event(1, t, 1.0), &mut |_| {});
    }
    op.push(&event(1, 5, 1.0), &mut |_| {});
    let stats = op.stats();
    assert_eq!(
        (stats.events_refused_time_range, stats.windows_open),
        (3, 1)
    );
}
