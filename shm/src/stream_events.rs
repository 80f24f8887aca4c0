//! The streaming engine's ingest schema: many events in one frame payload, as an rkyv
//! archive of [`EventBatch`]. Agents send batches to the engine's feature id
//! ([`STREAM_FEATURE_ID`], routed to whichever engine serves it) with
//! [`Agent::stream_batch`](crate::client::Agent::stream_batch), or as a request to the
//! engine's agent (found by its capability [`STREAM_CAPABILITY`]) with
//! [`Agent::stream_batch_acked`](crate::client::Agent::stream_batch_acked) to learn what it
//! took. The engine validates every archive (bytecheck) before it reads a byte of it.
//!
//! | type | field | meaning |
//! |---|---|---|
//! | [`EventBatch`] | `events` | at most [`EVENTS_PER_BATCH_MAX`] events |
//! | [`WireEvent`] | `key` | [`WireKey::Id`] (u64) or [`WireKey::Name`] (at most 23 bytes of UTF-8) |
//! | | `event_time_ns` | when it happened, ns since the Unix epoch (windows use it) |
//! | | `value` | the measurement (finite; NaN and infinities are malformed) |
//! | | `attributes` | optional `name`/`value` text pairs |
//! | [`IngestAck`] | `accepted`, `malformed` | events taken and refused from one batch |
//! | | `first_problem` | what was wrong with the first refused event, or the batch |
//!
//! ```
//! use agentwire_shm::stream_events::{access_batch, encode_batch, EventBatch, WireEvent, WireKey};
//! let batch = EventBatch { events: vec![WireEvent {
//!     key: WireKey::Name("db-1".into()), event_time_ns: 1_000, value: 0.5, attributes: vec![],
//! }] };
//! let bytes = encode_batch(&batch);
//! let archived = access_batch(&bytes).unwrap();
//! assert_eq!(archived.events.len(), 1);
//! assert_eq!(archived.events[0].event_time_ns.to_native(), 1_000);
//! ```

// rkyv's derive generates resolver types whose fields carry no docs.
use rkyv::{Archive, Deserialize, Serialize};

/// The feature id the streaming engine serves by default (`"ST"` and 1).
pub const STREAM_FEATURE_ID: u32 = 0x5354_0001;
/// The capability the streaming engine's agent offers (version 1.0.0).
pub const STREAM_CAPABILITY: &str = "stream-ingest";
/// The most events in one batch.
pub const EVENTS_PER_BATCH_MAX: usize = 65_536;

/// An event's key.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(attr(allow(missing_docs)))]
pub enum WireKey {
    /// A numeric key.
    Id(u64),
    /// A short name (at most 23 bytes).
    Name(String),
}

/// One attribute.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(attr(allow(missing_docs)))]
pub struct WireAttribute {
    /// Its name.
    pub name: String,
    /// Its value.
    pub value: String,
}

/// One event.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
#[rkyv(attr(allow(missing_docs)))]
pub struct WireEvent {
    /// What it is about.
    pub key: WireKey,
    /// When it happened, ns since the Unix epoch.
    pub event_time_ns: i64,
    /// The value.
    pub value: f64,
    /// Optional attributes.
    pub attributes: Vec<WireAttribute>,
}

/// Many events in one frame.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Default)]
#[rkyv(attr(allow(missing_docs)))]
pub struct EventBatch {
    /// The events, at most [`EVENTS_PER_BATCH_MAX`].
    pub events: Vec<WireEvent>,
}

/// The engine's answer to a batch sent as a request.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
#[rkyv(attr(allow(missing_docs)))]
pub struct IngestAck {
    /// Events taken.
    pub accepted: u32,
    /// Events refused (counted by the engine too).
    pub malformed: u32,
    /// What was wrong with the first refused event (empty if none).
    pub first_problem: String,
}

/// `batch` as an rkyv archive (one allocation per batch).
///
/// ```
/// use agentwire_shm::stream_events::{encode_batch, EventBatch};
/// assert!(!encode_batch(&EventBatch::default()).is_empty());
/// ```
pub fn encode_batch(batch: &EventBatch) -> rkyv::util::AlignedVec {
    rkyv::to_bytes::<rkyv::rancor::Error>(batch).expect("a batch always serialises")
}

/// The batch in `bytes`, checked (bytecheck) before anything is read from it.
///
/// ```
/// use agentwire_shm::stream_events::access_batch;
/// assert!(access_batch(&[1, 2, 3]).is_err());
/// ```
pub fn access_batch(bytes: &[u8]) -> Result<&ArchivedEventBatch, rkyv::rancor::Error> {
    rkyv::access::<ArchivedEventBatch, rkyv::rancor::Error>(bytes)
}

/// `ack` as an rkyv archive.
///
/// ```
/// use agentwire_shm::stream_events::{decode_ack, encode_ack, IngestAck};
/// let ack = IngestAck { accepted: 3, malformed: 1, first_problem: "event 2: value NaN".into() };
/// assert_eq!(decode_ack(&encode_ack(&ack)).unwrap(), ack);
/// ```
pub fn encode_ack(ack: &IngestAck) -> rkyv::util::AlignedVec {
    rkyv::to_bytes::<rkyv::rancor::Error>(ack).expect("an ack always serialises")
}

/// The ack in `bytes`, checked.
///
/// ```
/// use agentwire_shm::stream_events::decode_ack;
/// assert!(decode_ack(b"nonsense").is_err());
/// ```
pub fn decode_ack(bytes: &[u8]) -> Result<IngestAck, rkyv::rancor::Error> {
    // The payload may sit at any alignment in a frame: copy it to an aligned buffer first.
    let mut aligned = rkyv::util::AlignedVec::<16>::with_capacity(bytes.len());
    aligned.extend_from_slice(bytes);
    rkyv::from_bytes::<IngestAck, rkyv::rancor::Error>(&aligned)
}
