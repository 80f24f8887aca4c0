//! Strategies shared by the window tests.

use agentwire_streaming::window::WindowKind;
use proptest::prelude::*;

/// Small tumbling, sliding (slide at most size) and session windows.
pub fn kind() -> impl Strategy<Value = WindowKind> {
    prop_oneof![
        (1i64..50).prop_map(|size_ns| WindowKind::Tumbling { size_ns }),
        (1i64..50, 1i64..50).prop_map(|(a, b)| WindowKind::Sliding {
            size_ns: a.max(b),
            slide_ns: a.min(b)
        }),
        (1i64..40).prop_map(|gap_ns| WindowKind::Session { gap_ns }),
    ]
}
