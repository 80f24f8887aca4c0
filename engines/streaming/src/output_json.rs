//! Window results and late events as JSON, the form `agentwire stream` commands and the
//! exactly-once sink write.

use serde_json::{json, Map, Value};

use crate::event::Event;
use crate::window::{Output, WindowResult};

/// `result` as a JSON object; `quantiles` names the values of `result.quantiles`.
///
/// ```
/// use agentwire_streaming::event::{Event, Key};
/// use agentwire_streaming::output_json::output_json;
/// use agentwire_streaming::window::{WindowKind, WindowOperator, WindowSpec};
/// let mut op = WindowOperator::new(WindowSpec::new(WindowKind::Tumbling { size_ns: 10 })).unwrap();
/// op.push(&Event::new(Key::name("a").unwrap(), 1, 2.0), &mut |_| {});
/// let mut out = Vec::new();
/// op.finish(&mut |o| out.push(o));
/// let v = output_json(&out[0], &[]);
/// assert_eq!((v["key"].as_str(), v["count"].as_u64()), (Some("a"), Some(1)));
/// ```
pub fn output_json(output: &Output, quantiles: &[f64]) -> Value {
    match output {
        Output::Window(w) => result_json(w, quantiles),
        Output::Late(e) => json!({ "late_event": event_json(e) }),
    }
}

fn result_json(w: &WindowResult, quantiles: &[f64]) -> Value {
    let q: Map<String, Value> = quantiles
        .iter()
        .zip(&w.quantiles)
        .map(|(q, v)| (q.to_string(), json!(v)))
        .collect();
    json!({
        "key": w.key, "start_ns": w.start_ns, "end_ns": w.end_ns,
        "count": w.count, "sum": w.sum, "min": w.min, "max": w.max, "mean": w.mean,
        "quantiles": q, "late": w.late,
    })
}

/// `event` as a JSON object.
///
/// ```
/// use agentwire_streaming::event::{Event, Key};
/// use agentwire_streaming::output_json::event_json;
/// let v = event_json(&Event::new(Key::Id(4), 10, 0.5));
/// assert_eq!(v["key"], 4);
/// ```
pub fn event_json(e: &Event) -> Value {
    let attributes: Map<String, Value> = e
        .attributes
        .iter()
        .map(|a| (a.name.clone(), json!(a.value)))
        .collect();
    json!({
        "key": e.key, "event_time_ns": e.event_time_ns, "value": e.value,
        "attributes": attributes,
    })
}
