//! Pipelines: sharded runs against one operator, stages, and pipelines declared in TOML.

use std::collections::BTreeMap;

use agentwire_streaming::event::{Attribute, Event, Key};
use agentwire_streaming::pipeline::file::PipelineFile;
use agentwire_streaming::pipeline::input::CsvEvents;
use agentwire_streaming::pipeline::sharded::{run_sharded, shard_of, RunError};
use agentwire_streaming::pipeline::Pipeline;
use agentwire_streaming::window::{Output, WindowKind, WindowOperator, WindowSpec};
use proptest::prelude::*;

type Final = BTreeMap<(Key, i64), (i64, u64, i64)>;

/// The last result of each window, as (end, count, sum) with integer sums.
fn finals(results: impl IntoIterator<Item = Output>) -> Final {
    let mut last = BTreeMap::new();
    for o in results {
        if let Output::Window(w) = o {
            last.insert((w.key, w.start_ns), (w.end_ns, w.count, w.sum as i64));
        }
    }
    last
}

fn one_operator(spec: WindowSpec, events: &[Event]) -> Final {
    let mut op = WindowOperator::new(spec).unwrap();
    let mut out = vec![];
    for e in events {
        op.push(e, &mut |o| out.push(o));
    }
    op.finish(&mut |o| out.push(o));
    finals(out)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(60))]

    #[test]
    fn a_sharded_run_ends_with_the_results_of_one_operator(
        shards in 1usize..5,
        size_ns in 1i64..40,
        rows in prop::collection::vec((0u64..16, 0i64..5, 0i64..8, -50i32..50), 1..3000),
    ) {
        // Out of order by up to 8 ns; the watermark's slack covers it, so nothing is late
        // for either run and the last result of every window must agree.
        let mut t = 0;
        let events: Vec<Event> = rows
            .iter()
            .map(|&(key, step, back, v)| {
                t += step;
                Event::new(Key::Id(key), t - back, f64::from(v))
            })
            .collect();
        let mut spec = WindowSpec::new(WindowKind::Tumbling { size_ns });
        spec.out_of_orderness_ns = 8;
        let expected = one_operator(spec.clone(), &events);
        let pipeline = Pipeline::new(spec);
        let mut out = vec![];
        let stats = run_sharded(&pipeline, shards, events.clone(), &mut |_, o| out.push(o)).unwrap();
        prop_assert_eq!(stats.events_in, events.len() as u64);
        prop_assert_eq!(stats.windows().late_events_dropped, 0);
        prop_assert_eq!(stats.outputs, out.len() as u64);
        prop_assert_eq!(finals(out), expected);
    }
}

#[test]
fn a_shard_with_quiet_keys_still_fires_when_other_shards_move_time() {
    // Key 1 speaks at 0; key 2 moves time to 4999 (on the other shard); then key 1 speaks
    // at 1, rounds later. Its window [0, 10) must have fired and gone with the input's
    // progress, so that event is late: with a watermark of its own, key 1's shard would
    // still take it into the open window. (Which shard's outputs reach the caller first
    // depends on thread timing, so the test looks at what the operator did, not at order.)
    let pipeline = Pipeline::new(WindowSpec::new(WindowKind::Tumbling { size_ns: 10 }));
    assert_ne!(shard_of(&Key::Id(1), 2), shard_of(&Key::Id(2), 2));
    let mut events = vec![Event::new(Key::Id(1), 0, 1.0)];
    events.extend((0..5_000).map(|i| Event::new(Key::Id(2), i, 1.0)));
    events.push(Event::new(Key::Id(1), 1, 1.0));
    let mut key_1_counts = vec![];
    let stats = run_sharded(&pipeline, 2, events, &mut |_, o| {
        if let Output::Window(w) = o {
            if w.key == Key::Id(1) {
                key_1_counts.push(w.count);
            }
        }
    })
    .unwrap();
    assert_eq!(key_1_counts, vec![1]);
    assert_eq!(stats.windows().late_events_dropped, 1);
}

#[test]
fn stages_run_in_order_before_the_windows() {
    let pipeline = Pipeline::new(WindowSpec::new(WindowKind::Tumbling { size_ns: 100 }))
        .filter(|e| e.value > 0.0)
        .map(|e| e.value *= 10.0)
        .key_by(|e| Key::Id(e.value as u64 % 20));
    let events = [1.0, -1.0, 2.0, 3.0].map(|v| Event::new(Key::Id(5), 1, v));
    let mut out = vec![];
    let stats = run_sharded(&pipeline, 3, events, &mut |_, o| out.push(o)).unwrap();
    assert_eq!((stats.events_in, stats.events_filtered), (4, 1));
    let keys_and_sums: BTreeMap<Key, f64> = out
        .into_iter()
        .filter_map(|o| match o {
            Output::Window(w) => Some((w.key, w.sum)),
            Output::Late(_) => None,
        })
        .collect();
    // 10 -> key 10, 20 -> key 0, 30 -> key 10.
    assert_eq!(
        keys_and_sums,
        BTreeMap::from([(Key::Id(0), 20.0), (Key::Id(10), 40.0)])
    );
}

#[test]
fn a_panicking_stage_is_reported_not_hung() {
    let pipeline = Pipeline::new(WindowSpec::new(WindowKind::Tumbling { size_ns: 10 }))
        .map(|e| assert!(e.value < 100.0, "a stage that fails on big values"));
    let events = (0..200).map(|i| Event::new(Key::Id(0), i, i as f64));
    let e = run_sharded(&pipeline, 2, events, &mut |_, _| {}).unwrap_err();
    assert!(
        matches!(e, RunError::Panicked { ref thread } if thread == "feeder"),
        "{e}"
    );
}

const FULL_FILE: &str = r#"
shards = 2
[[stage]]
op = "filter"
value_min = 0.0
attribute = "region"
equals = "eu"
[[stage]]
op = "map"
scale = 2.0
offset = 1.0
[[stage]]
op = "key_by"
attribute = "host"
[window]
kind = "sliding"
size_ms = 20
slide_ms = 10
quantiles = [0.5]
"#;

#[test]
fn a_toml_pipeline_filters_maps_keys_and_windows() {
    let file = PipelineFile::parse(FULL_FILE, "full.toml").unwrap();
    assert_eq!(file.shards, 2);
    let pipeline = file.to_pipeline().unwrap();
    let csv = "timestamp,value,region,host\n\
               1970-01-01 00:00:00.001,1,eu,a\n\
               1970-01-01 00:00:00.002,-1,eu,a\n\
               1970-01-01 00:00:00.003,3,us,a\n\
               1970-01-01 00:00:00.015,2,eu,b\n";
    let events = CsvEvents::new(csv.as_bytes()).unwrap();
    let mut out = vec![];
    run_sharded(&pipeline, file.shards, events, &mut |_, o| out.push(o)).unwrap();
    let got: BTreeMap<(String, i64), (u64, f64)> = out
        .into_iter()
        .filter_map(|o| match o {
            Output::Window(w) => Some((
                (w.key.to_string(), w.start_ns / 1_000_000),
                (w.count, w.sum),
            )),
            Output::Late(_) => None,
        })
        .collect();
    // Host a: only the first row passes (1 -> 3), in windows starting at -10 and 0 ms.
    // Host b: 2 -> 5 at 15 ms, in windows starting at 0 and 10 ms.
    let expected = BTreeMap::from([
        (("a".to_string(), -10), (1, 3.0)),
        (("a".to_string(), 0), (1, 3.0)),
        (("b".to_string(), 0), (1, 5.0)),
        (("b".to_string(), 10), (1, 5.0)),
    ]);
    assert_eq!(got, expected);
}

#[test]
fn toml_mistakes_name_the_file_line_and_setting() {
    let cases = [
        ("[window]\nkind = \"tumbling\"\n", "p.toml: window.size_ms is missing (kind = \"tumbling\")"),
        ("[window]\nkind = \"tumbling\"\nsize_ms = 0\n", "p.toml: window.size_ms = 0: must be from 1 to 9223372036854 ms"),
        (
            "[window]\nkind = \"sliding\"\nsize_ms = 10\nslide_ms = 20\n",
            "p.toml: window.slide_ms = 20: must be at most size_ms (a larger slide leaves events in no window)",
        ),
        (
            "[[stage]]\nop = \"key_by\"\n[window]\nkind = \"session\"\ngap_ms = 1\n",
            "p.toml: stage 1: key_by: exactly one of `attribute` and `constant`",
        ),
        (
            "[window]\nkind = \"session\"\ngap_ms = 1\nquantiles = [2.0]\n",
            "p.toml: window.quantiles = 2: each must be in [0, 1]",
        ),
    ];
    for (text, message) in cases {
        let file = PipelineFile::parse(text, "p.toml").unwrap();
        assert_eq!(file.to_pipeline().unwrap_err().to_string(), message);
    }
    let e = PipelineFile::parse(
        "[window]\nkind = \"session\"\n\n[[stage]]\nop = \"explode\"\n",
        "p.toml",
    )
    .unwrap_err();
    assert!(
        e.to_string()
            .starts_with("p.toml:5: unknown variant `explode`"),
        "{e}"
    );
}

#[test]
fn malformed_csv_rows_are_skipped_counted_and_described() {
    let csv = "key,event_time_ns,value\n1,10,1.0\n2,x,1.0\n3,30\nname-that-is-far-too-long-for-a-key,40,1\n4,50,2.0\n";
    let events = CsvEvents::new(csv.as_bytes()).unwrap();
    let report = events.report();
    let read: Vec<Event> = events.collect();
    assert_eq!(read.len(), 2);
    assert_eq!((report.rows(), report.malformed()), (5, 3));
    let messages = report.messages();
    assert_eq!(messages[0], "line 3: event_time_ns = \"x\": not an integer");
    assert_eq!(messages[1], "line 4: no value field (the row has 2 fields)");
    assert!(messages[2].starts_with("line 5: key = \"name-that-is-far-too-long-for-a-key\""));
}

#[test]
fn extra_csv_columns_become_attributes() {
    let csv = "value,event_time_ns,zone\n1,2,eu\n";
    let e = CsvEvents::new(csv.as_bytes()).unwrap().next().unwrap();
    assert_eq!(
        e.attributes,
        vec![Attribute {
            name: "zone".into(),
            value: "eu".into()
        }]
    );
}
