//! The payload formats on Kafka: events in (JSON), window results out (JSON with their
//! output id).
//!
//! **Event payload** (what [`decode_event`] reads and [`encode_event`] writes), one JSON
//! object per Kafka message value:
//!
//! ```json
//! {"key": 7, "event_time_ns": 1700000000000000000, "value": 2.5, "attributes": {"host": "db-1"}}
//! ```
//!
//! - `key`: a non-negative integer (a [`Key::Id`]) or a string of at most
//!   [`KEY_NAME_BYTES_MAX`](crate::event::KEY_NAME_BYTES_MAX) bytes (a [`Key::Name`]).
//! - `event_time_ns`: nanoseconds since the Unix epoch, a signed 64-bit integer.
//! - `value`: a JSON number (JSON has no NaN or infinity, so neither is carried).
//! - `attributes`: optional; an object of string values, kept in the order written, at most
//!   [`EVENT_ATTRIBUTES_MAX`] entries.
//! - Other fields are ignored, so producers may add fields without breaking readers.
//!
//! The Kafka message key is not read: the payload carries the event's key.
//!
//! **Window result payload** ([`encode_window_result`]), one JSON object per output record:
//!
//! ```json
//! {"shard": 0, "epoch": 3, "seq": 12, "key": 7, "start_ns": 0, "end_ns": 1000,
//!  "count": 4, "sum": 10.0, "min": 1.0, "max": 4.0, "mean": 2.5, "quantiles": [2.0], "late": false}
//! ```
//!
//! **Late event payload** ([`encode_output`] of an [`Output::Late`], with the window spec's
//! `late_side_output` on): an event too late for every window it belongs to.
//!
//! ```json
//! {"shard": 0, "epoch": 3, "seq": 13, "late_event": {"key": 7, "event_time_ns": 5, "value": 2.5}}
//! ```
//!
//! `(shard, epoch, seq)` is the output's [`OutputId`]: unique per output and the same when an
//! epoch is replayed from its checkpoint, so a reader can also deduplicate by it. The Kafka
//! message key is the window key's (or the late event's key's) text ([`window_key_bytes`]),
//! so one key's outputs stay on one partition, in order. A non-finite float is written as
//! `null`.

use std::fmt;

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::{Deserialize, Serialize, Serializer};

use crate::event::{Attribute, Event, Key};
use crate::window::{Output, WindowResult};

/// The most attributes one event payload may carry; more make the message malformed.
///
/// ```
/// use agentwire_streaming::kafka::EVENT_ATTRIBUTES_MAX;
/// assert_eq!(EVENT_ATTRIBUTES_MAX, 64);
/// ```
pub const EVENT_ATTRIBUTES_MAX: usize = 64;

/// Why a Kafka message is not an event; the message is counted and skipped.
///
/// ```
/// use agentwire_streaming::kafka::{decode_event, DecodeError};
/// assert_eq!(decode_event(None), Err(DecodeError::NoPayload));
/// assert!(matches!(decode_event(Some(b"{}")), Err(DecodeError::Json(_))));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The message has no value (a tombstone).
    #[error("the message has no payload")]
    NoPayload,
    /// The payload is larger than the source's `payload_bytes_max`.
    #[error("the payload is {len_bytes} bytes; at most {max_bytes} bytes are decoded")]
    TooLarge {
        /// The payload's size.
        len_bytes: usize,
        /// The limit it broke.
        max_bytes: usize,
    },
    /// The payload is not the event JSON described in [`crate::kafka`]; the text says where
    /// and why (serde_json's message, with line and column).
    #[error("the payload is not an event: {0}")]
    Json(String),
}

/// Reads one event from a message payload (the format is in this module's documentation).
///
/// ```
/// use agentwire_streaming::event::Key;
/// use agentwire_streaming::kafka::decode_event;
/// let e = decode_event(Some(br#"{"key":"db-1","event_time_ns":5,"value":1.5,
///     "attributes":{"zone":"eu"}}"#)).unwrap();
/// assert_eq!(e.key, Key::name("db-1").unwrap());
/// assert_eq!((e.event_time_ns, e.value), (5, 1.5));
/// assert_eq!(e.attribute("zone"), Some("eu"));
/// ```
pub fn decode_event(payload: Option<&[u8]>) -> Result<Event, DecodeError> {
    let payload = payload.ok_or(DecodeError::NoPayload)?;
    let wire: EventIn =
        serde_json::from_slice(payload).map_err(|e| DecodeError::Json(e.to_string()))?;
    Ok(Event {
        key: wire.key.0,
        event_time_ns: wire.event_time_ns,
        value: wire.value,
        attributes: wire.attributes.0,
    })
}

/// Why an event could not be encoded.
///
/// ```
/// use agentwire_streaming::event::{Event, Key};
/// use agentwire_streaming::kafka::{encode_event, EncodeError};
/// let e = Event::new(Key::Id(1), 0, f64::NAN);
/// assert_eq!(encode_event(&e, &mut Vec::new()), Err(EncodeError::NonFiniteValue));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// JSON cannot carry NaN or an infinity, and `null` would not decode as a value.
    #[error("the event's value is not finite; JSON cannot carry it")]
    NonFiniteValue,
    /// More than [`EVENT_ATTRIBUTES_MAX`] attributes; the reader would refuse the payload.
    #[error("{count} attributes; at most {EVENT_ATTRIBUTES_MAX} are carried")]
    TooManyAttributes {
        /// The event's attribute count.
        count: usize,
    },
}

/// Appends `event` to `out` as an event payload, the inverse of [`decode_event`].
///
/// ```
/// use agentwire_streaming::event::{Event, Key};
/// use agentwire_streaming::kafka::{decode_event, encode_event};
/// let e = Event::new(Key::Id(7), 1_000, 2.5);
/// let mut buf = Vec::new();
/// encode_event(&e, &mut buf).unwrap();
/// assert_eq!(buf, br#"{"key":7,"event_time_ns":1000,"value":2.5}"#);
/// assert_eq!(decode_event(Some(&buf)).unwrap(), e);
/// ```
pub fn encode_event(event: &Event, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    if !event.value.is_finite() {
        return Err(EncodeError::NonFiniteValue);
    }
    if event.attributes.len() > EVENT_ATTRIBUTES_MAX {
        return Err(EncodeError::TooManyAttributes {
            count: event.attributes.len(),
        });
    }
    let wire = EventOut {
        key: KeyOut(&event.key),
        event_time_ns: event.event_time_ns,
        value: event.value,
        attributes: AttributesOut(&event.attributes),
    };
    // Writing JSON into a Vec fails only for a failing Serialize impl; ours cannot fail.
    serde_json::to_writer(out, &wire).expect("serialising an event into memory cannot fail");
    Ok(())
}

/// The identity of one output: the shard that made it, the checkpoint epoch it belongs to, and
/// its sequence number within that shard's epoch.
///
/// ```
/// use agentwire_streaming::kafka::OutputId;
/// let id = OutputId { shard: 1, epoch: 4, seq: 0 };
/// assert_eq!(id.to_string(), "1/4/0");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct OutputId {
    /// The shard that produced the output.
    pub shard: u32,
    /// The checkpoint epoch the output belongs to.
    pub epoch: u64,
    /// Its position among the shard's outputs in that epoch, from 0.
    pub seq: u64,
}

impl fmt::Display for OutputId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}", self.shard, self.epoch, self.seq)
    }
}

/// Appends `result`, tagged with `id`, to `out` as a window result payload.
///
/// ```
/// use agentwire_streaming::event::Key;
/// use agentwire_streaming::kafka::{decode_output_id, encode_window_result, OutputId};
/// use agentwire_streaming::window::WindowResult;
/// let r = WindowResult { key: Key::Id(7), start_ns: 0, end_ns: 1_000, count: 2, sum: 3.0,
///     min: 1.0, max: 2.0, mean: 1.5, quantiles: vec![1.0], late: false };
/// let id = OutputId { shard: 0, epoch: 3, seq: 12 };
/// let mut buf = Vec::new();
/// encode_window_result(&r, id, &mut buf);
/// assert!(buf.starts_with(br#"{"shard":0,"epoch":3,"seq":12,"key":7,"start_ns":0"#));
/// assert_eq!(decode_output_id(&buf).unwrap(), id);
/// ```
pub fn encode_window_result(result: &WindowResult, id: OutputId, out: &mut Vec<u8>) {
    let wire = WindowOut {
        shard: id.shard,
        epoch: id.epoch,
        seq: id.seq,
        key: KeyOut(&result.key),
        start_ns: result.start_ns,
        end_ns: result.end_ns,
        count: result.count,
        sum: result.sum,
        min: result.min,
        max: result.max,
        mean: result.mean,
        quantiles: &result.quantiles,
        late: result.late,
    };
    serde_json::to_writer(out, &wire).expect("serialising a window result into memory cannot fail");
}

/// Appends `output`, tagged with `id`, to `out`: a window result payload or a late event
/// payload (both in this module's documentation).
///
/// ```
/// use agentwire_streaming::event::{Event, Key};
/// use agentwire_streaming::kafka::{decode_output_id, encode_output, OutputId};
/// use agentwire_streaming::window::Output;
/// let id = OutputId { shard: 0, epoch: 2, seq: 5 };
/// let mut buf = Vec::new();
/// encode_output(&Output::Late(Event::new(Key::Id(7), 5, 2.5)), id, &mut buf);
/// assert_eq!(buf, br#"{"shard":0,"epoch":2,"seq":5,"late_event":{"key":7,"event_time_ns":5,"value":2.5}}"#);
/// assert_eq!(decode_output_id(&buf).unwrap(), id);
/// ```
pub fn encode_output(output: &Output, id: OutputId, out: &mut Vec<u8>) {
    match output {
        Output::Window(result) => encode_window_result(result, id, out),
        Output::Late(event) => {
            let wire = LateOut {
                shard: id.shard,
                epoch: id.epoch,
                seq: id.seq,
                late_event: EventOut {
                    key: KeyOut(&event.key),
                    event_time_ns: event.event_time_ns,
                    value: event.value,
                    attributes: AttributesOut(&event.attributes),
                },
            };
            serde_json::to_writer(out, &wire)
                .expect("serialising a late event into memory cannot fail");
        }
    }
}

/// Appends the Kafka message key of `output`: its window's key or its late event's key, as
/// text ([`window_key_bytes`]).
///
/// ```
/// use agentwire_streaming::event::{Event, Key};
/// use agentwire_streaming::kafka::output_key_bytes;
/// use agentwire_streaming::window::Output;
/// let mut k = Vec::new();
/// output_key_bytes(&Output::Late(Event::new(Key::Id(7), 0, 1.0)), &mut k);
/// assert_eq!(k, b"7");
/// ```
pub fn output_key_bytes(output: &Output, out: &mut Vec<u8>) {
    match output {
        Output::Window(result) => window_key_bytes(&result.key, out),
        Output::Late(event) => window_key_bytes(&event.key, out),
    }
}

/// Appends the Kafka message key for a window result: its key's text (`7`, `db-1`).
///
/// ```
/// use agentwire_streaming::event::Key;
/// use agentwire_streaming::kafka::window_key_bytes;
/// let mut k = Vec::new();
/// window_key_bytes(&Key::name("db-1").unwrap(), &mut k);
/// assert_eq!(k, b"db-1");
/// ```
pub fn window_key_bytes(key: &Key, out: &mut Vec<u8>) {
    use std::io::Write;
    // Writing into a Vec cannot fail.
    let _ = write!(out, "{key}");
}

/// Reads the [`OutputId`] of an output payload (the `shard`, `epoch` and `seq` fields), for a
/// reader that deduplicates replayed outputs.
///
/// ```
/// use agentwire_streaming::kafka::{decode_output_id, OutputId};
/// let id = decode_output_id(br#"{"shard":2,"epoch":9,"seq":1,"count":3}"#).unwrap();
/// assert_eq!(id, OutputId { shard: 2, epoch: 9, seq: 1 });
/// assert!(decode_output_id(b"[]").is_err());
/// ```
pub fn decode_output_id(payload: &[u8]) -> Result<OutputId, DecodeError> {
    serde_json::from_slice(payload).map_err(|e| DecodeError::Json(e.to_string()))
}

#[derive(Deserialize)]
struct EventIn {
    key: KeyIn,
    event_time_ns: i64,
    value: f64,
    #[serde(default)]
    attributes: AttributesIn,
}

/// A key read without allocating: a number or a short string, copied inline.
struct KeyIn(Key);

impl<'de> Deserialize<'de> for KeyIn {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl Visitor<'_> for KeyVisitor {
            type Value = KeyIn;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a non-negative integer or a short string")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<KeyIn, E> {
                Ok(KeyIn(Key::Id(v)))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<KeyIn, E> {
                u64::try_from(v)
                    .map(|id| KeyIn(Key::Id(id)))
                    .map_err(|_| E::custom(format!("a negative key {v}")))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<KeyIn, E> {
                Key::name(v).map(KeyIn).map_err(E::custom)
            }
        }
        d.deserialize_any(KeyVisitor)
    }
}

/// Attributes in the order written, at most [`EVENT_ATTRIBUTES_MAX`].
#[derive(Default)]
struct AttributesIn(Vec<Attribute>);

impl<'de> Deserialize<'de> for AttributesIn {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct AttributesVisitor;
        impl<'de> Visitor<'de> for AttributesVisitor {
            type Value = AttributesIn;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object of string values")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<AttributesIn, A::Error> {
                let mut attributes = Vec::new();
                while let Some((name, value)) = map.next_entry::<String, String>()? {
                    if attributes.len() == EVENT_ATTRIBUTES_MAX {
                        return Err(de::Error::custom(format!(
                            "more than {EVENT_ATTRIBUTES_MAX} attributes"
                        )));
                    }
                    attributes.push(Attribute { name, value });
                }
                Ok(AttributesIn(attributes))
            }
        }
        d.deserialize_map(AttributesVisitor)
    }
}

#[derive(Serialize)]
struct EventOut<'a> {
    key: KeyOut<'a>,
    event_time_ns: i64,
    value: f64,
    #[serde(skip_serializing_if = "AttributesOut::is_empty")]
    attributes: AttributesOut<'a>,
}

struct KeyOut<'a>(&'a Key);

impl Serialize for KeyOut<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Key::Id(id) => s.serialize_u64(*id),
            Key::Name(name) => s.serialize_str(name.as_str()),
        }
    }
}

struct AttributesOut<'a>(&'a [Attribute]);

impl AttributesOut<'_> {
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl Serialize for AttributesOut<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.0.iter().map(|a| (&a.name, &a.value)))
    }
}

#[derive(Serialize)]
struct LateOut<'a> {
    shard: u32,
    epoch: u64,
    seq: u64,
    late_event: EventOut<'a>,
}

#[derive(Serialize)]
struct WindowOut<'a> {
    shard: u32,
    epoch: u64,
    seq: u64,
    key: KeyOut<'a>,
    start_ns: i64,
    end_ns: i64,
    count: u64,
    sum: f64,
    min: f64,
    max: f64,
    mean: f64,
    quantiles: &'a [f64],
    late: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reason(payload: &[u8]) -> String {
        match decode_event(Some(payload)) {
            Err(DecodeError::Json(why)) => why,
            other => panic!("expected a JSON error, got {other:?}"),
        }
    }

    #[test]
    fn attributes_round_trip_in_the_order_written() {
        let mut e = Event::new(Key::name("db-1").unwrap(), -5, 0.25);
        for (n, v) in [("zone", "eu"), ("host", "a"), ("unit", "ms")] {
            e.attributes.push(Attribute {
                name: n.into(),
                value: v.into(),
            });
        }
        let mut buf = Vec::new();
        encode_event(&e, &mut buf).unwrap();
        assert_eq!(decode_event(Some(&buf)).unwrap(), e);
    }

    #[test]
    fn rejects_keys_that_do_not_fit_and_missing_fields() {
        assert!(reason(br#"{"key":-1,"event_time_ns":0,"value":1}"#).contains("negative key"));
        let long = format!(
            r#"{{"key":"{}","event_time_ns":0,"value":1}}"#,
            "k".repeat(24)
        );
        assert!(reason(long.as_bytes()).contains("at most 23 bytes"));
        assert!(reason(br#"{"key":1,"value":1}"#).contains("event_time_ns"));
        assert!(reason(br#"{"key":1.5,"event_time_ns":0,"value":1}"#).contains("integer"));
        assert!(reason(b"not json").contains("line 1"));
    }

    #[test]
    fn rejects_more_attributes_than_the_limit() {
        let fields: Vec<String> = (0..=EVENT_ATTRIBUTES_MAX)
            .map(|i| format!(r#""a{i}":"v""#))
            .collect();
        let payload = format!(
            r#"{{"key":1,"event_time_ns":0,"value":1,"attributes":{{{}}}}}"#,
            fields.join(",")
        );
        assert!(reason(payload.as_bytes()).contains("more than 64 attributes"));
    }

    #[test]
    fn ignores_unknown_fields() {
        let e = decode_event(Some(
            br#"{"key":3,"event_time_ns":1,"value":2,"source":"x"}"#,
        ))
        .unwrap();
        assert_eq!(e, Event::new(Key::Id(3), 1, 2.0));
    }
}
