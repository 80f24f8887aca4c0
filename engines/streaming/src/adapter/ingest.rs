//! Event batches from frames: the archive is checked (bytecheck) before any byte is read,
//! then each event is checked on its own; a bad event is refused and counted, never the
//! whole batch's good ones.

use agentwire_shm::stream_events::{access_batch, ArchivedWireKey, EVENTS_PER_BATCH_MAX};

use crate::event::{Attribute, Event, Key, EVENT_TIME_NS_MAX};

/// What one batch gave.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BatchOutcome {
    /// Events taken.
    pub accepted: u32,
    /// Events refused.
    pub malformed: u32,
    /// The first problem (empty if none).
    pub first_problem: String,
}

impl BatchOutcome {
    fn refuse(&mut self, problem: impl FnOnce() -> String) {
        self.malformed += 1;
        if self.first_problem.is_empty() {
            self.first_problem = problem();
        }
    }
}

/// Decodes the batch in `payload` (copied into `aligned`, a reused buffer, because a frame's
/// payload need not sit at the archive's alignment) and hands each good event to `take`.
/// An event later than `time_max_ns`, or earlier than `-EVENT_TIME_NS_MAX`, is refused.
///
/// ```
/// use agentwire_shm::stream_events::{encode_batch, EventBatch, WireEvent, WireKey};
/// use agentwire_streaming::adapter::ingest::decode_batch;
/// let batch = EventBatch { events: vec![
///     WireEvent { key: WireKey::Id(1), event_time_ns: 5, value: 1.0, attributes: vec![] },
///     WireEvent { key: WireKey::Id(1), event_time_ns: 6, value: f64::NAN, attributes: vec![] },
/// ] };
/// let mut aligned = rkyv::util::AlignedVec::<16>::new();
/// let mut taken = Vec::new();
/// let outcome = decode_batch(&encode_batch(&batch), &mut aligned, i64::MAX, &mut |e| taken.push(e));
/// assert_eq!((outcome.accepted, outcome.malformed, taken.len()), (1, 1, 1));
/// assert_eq!(outcome.first_problem, "event 1: value NaN is not finite");
/// ```
pub fn decode_batch(
    payload: &[u8],
    aligned: &mut rkyv::util::AlignedVec<16>,
    time_max_ns: i64,
    take: &mut dyn FnMut(Event),
) -> BatchOutcome {
    let mut outcome = BatchOutcome::default();
    aligned.clear();
    aligned.extend_from_slice(payload);
    let batch = match access_batch(aligned) {
        Ok(batch) => batch,
        Err(e) => {
            outcome.refuse(|| format!("the frame is not an event batch: {e}"));
            return outcome;
        }
    };
    if batch.events.len() > EVENTS_PER_BATCH_MAX {
        let n = batch.events.len();
        outcome.malformed = u32::try_from(n).unwrap_or(u32::MAX);
        outcome.first_problem = format!("{n} events in one batch; at most {EVENTS_PER_BATCH_MAX}");
        return outcome;
    }
    for (i, wire) in batch.events.iter().enumerate() {
        let value = wire.value.to_native();
        if !value.is_finite() {
            outcome.refuse(|| format!("event {i}: value {value} is not finite"));
            continue;
        }
        let t = wire.event_time_ns.to_native();
        if t > time_max_ns || t < -EVENT_TIME_NS_MAX {
            outcome.refuse(|| {
                format!("event {i}: event time {t} ns is out of range (at most {time_max_ns})")
            });
            continue;
        }
        let key = match &wire.key {
            ArchivedWireKey::Id(id) => Key::Id(id.to_native()),
            ArchivedWireKey::Name(name) => match Key::name(name.as_str()) {
                Ok(key) => key,
                Err(e) => {
                    outcome.refuse(|| format!("event {i}: {e}"));
                    continue;
                }
            },
        };
        let mut event = Event::new(key, wire.event_time_ns.to_native(), value);
        for a in wire.attributes.iter() {
            event.attributes.push(Attribute {
                name: a.name.as_str().to_string(),
                value: a.value.as_str().to_string(),
            });
        }
        outcome.accepted += 1;
        take(event);
    }
    outcome
}
