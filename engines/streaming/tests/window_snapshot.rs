//! A window operator restored from a snapshot emits exactly what the original would have.

use agentwire_streaming::event::{Event, Key};
use agentwire_streaming::window::{
    OperatorSnapshot, Output, WindowKind, WindowOperator, WindowSpec,
};
use proptest::prelude::*;

mod common;
use common::kind;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn a_restored_operator_continues_exactly_as_the_original(
        kind in kind(),
        out_of_orderness_ns in 0i64..20,
        allowed_lateness_ns in 0i64..20,
        rows in prop::collection::vec((0u64..4, 0i64..15, 0i64..40, -1e6f64..1e6), 1..300),
        split in any::<prop::sample::Index>(),
    ) {
        // Late events included: whatever the original drops, the restored one must too.
        let mut t = 0;
        let events: Vec<Event> = rows
            .iter()
            .map(|&(key, step, back, v)| {
                t += step;
                Event::new(Key::Id(key), t - back, v)
            })
            .collect();
        let mut spec = WindowSpec::new(kind);
        spec.out_of_orderness_ns = out_of_orderness_ns;
        spec.allowed_lateness_ns = allowed_lateness_ns;
        spec.quantiles = vec![0.25, 0.5, 0.99];
        spec.late_side_output = true;
        let at = split.index(events.len() + 1);

        let mut whole = WindowOperator::new(spec.clone()).unwrap();
        let mut expected: Vec<Output> = vec![];
        for e in &events {
            whole.push(e, &mut |o| expected.push(o));
        }
        whole.finish(&mut |o| expected.push(o));

        let mut first = WindowOperator::new(spec.clone()).unwrap();
        let mut got: Vec<Output> = vec![];
        for e in &events[..at] {
            first.push(e, &mut |o| got.push(o));
        }
        let bytes = first.snapshot().to_bytes();
        drop(first);
        let snapshot = OperatorSnapshot::from_bytes(&bytes).unwrap();
        let mut second = WindowOperator::restore(spec, snapshot).unwrap();
        for e in &events[at..] {
            second.push(e, &mut |o| got.push(o));
        }
        second.finish(&mut |o| got.push(o));
        prop_assert_eq!(second.stats(), whole.stats());
        prop_assert_eq!(got.len(), expected.len());
        for (g, e) in got.iter().zip(&expected) {
            // Bit-equal, sketches included (NaN-free values).
            prop_assert_eq!(format!("{g:?}"), format!("{e:?}"));
        }
    }
}

#[test]
fn a_snapshot_with_more_windows_than_the_spec_allows_is_refused() {
    let mut spec = WindowSpec::new(WindowKind::Tumbling { size_ns: 10 });
    let mut op = WindowOperator::new(spec.clone()).unwrap();
    for key in 0..3 {
        op.push(&Event::new(Key::Id(key), 1, 1.0), &mut |_| {});
    }
    spec.open_windows_max = 2;
    let e = WindowOperator::restore(spec, op.snapshot()).err().unwrap();
    assert_eq!(
        e.to_string(),
        "the snapshot does not fit the spec: 3 windows open, the spec allows 2"
    );
}

#[test]
fn garbage_bytes_are_not_a_snapshot() {
    for bytes in [&b""[..], &[0xff; 7][..], &[1, 2, 3, 4, 5][..]] {
        assert!(OperatorSnapshot::from_bytes(bytes).is_err());
    }
}
