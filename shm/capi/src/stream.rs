//! Events for the streaming engine: an array of `aw_stream_event` sent as one batch (the
//! engine's rkyv schema, `agentwire_shm::stream_events`), with or without waiting for the
//! engine's count of what it took and refused. Attributes are not offered here (the Rust
//! and Python clients carry them).

use crate::agent::{aw_agent, with_agent};
use crate::args;
use crate::send::copy_text;
use crate::status::{aw_status, Failure};
use agentwire_shm::stream_events::{EventBatch, WireEvent, WireKey, EVENTS_PER_BATCH_MAX};
use std::ffi::c_char;
use std::time::Duration;

/// The feature id the streaming engine serves by default: pass it to `aw_stream_batch`.
pub const AW_STREAM_FEATURE_ID: u32 = 0x5354_0001;
/// Bytes of `aw_ingest_ack.first_problem`, NUL included.
pub const AW_PROBLEM_BYTES: usize = 256;
/// The most events in one batch.
pub const AW_STREAM_EVENTS_MAX: usize = 65_536;

const _: () = {
    assert!(AW_STREAM_FEATURE_ID == agentwire_shm::stream_events::STREAM_FEATURE_ID);
    assert!(AW_STREAM_EVENTS_MAX == EVENTS_PER_BATCH_MAX);
};

/// One event: a key (a name, or a number when `key_name` is NULL), its event time and
/// its value. The engine refuses (and counts) a name over 23 bytes, a value that is not
/// finite, or a time out of range.
///
/// ```c
/// aw_stream_event e = { .key_name = "disk-1", .event_time_ns = now_ns, .value = 0.93 };
/// ```
#[allow(non_camel_case_types)]
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct aw_stream_event {
    /// The key's name (UTF-8, NUL-terminated), or NULL for the numeric key `key_id`.
    pub key_name: *const c_char,
    /// The numeric key, used when `key_name` is NULL.
    pub key_id: u64,
    /// When it happened, ns since the Unix epoch.
    pub event_time_ns: i64,
    /// The value.
    pub value: f64,
}

/// The engine's answer to `aw_stream_batch_acked`.
///
/// ```c
/// aw_ingest_ack ack;
/// if (aw_stream_batch_acked(agent, engine, events, n, 1000, &ack) == AW_OK && ack.malformed)
///     fprintf(stderr, "%u refused: %s\n", ack.malformed, ack.first_problem);
/// ```
#[allow(non_camel_case_types)]
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct aw_ingest_ack {
    /// Events the engine took.
    pub accepted: u32,
    /// Events it refused (and counted).
    pub malformed: u32,
    /// What was wrong with the first refused event, NUL-terminated ("" if none; cut if
    /// longer).
    pub first_problem: [c_char; AW_PROBLEM_BYTES],
}

/// The batch for `count` events at `events`.
///
/// # Safety
/// `events` is NULL (with `count` 0) or `count` readable events whose `key_name`s are NULL
/// or NUL-terminated strings.
unsafe fn batch(events: *const aw_stream_event, count: usize) -> Result<EventBatch, Failure> {
    if count > EVENTS_PER_BATCH_MAX {
        return Err(Failure::argument(
            "count",
            "exceeds AW_STREAM_EVENTS_MAX: split the batch",
        ));
    }
    // SAFETY: NULL with 0, or `count` readable events (caller).
    let events = unsafe { args::slice(events, count, "events") }?;
    let mut batch = EventBatch::default();
    batch.events.reserve(count);
    for e in events {
        let key = if e.key_name.is_null() {
            WireKey::Id(e.key_id)
        } else {
            // SAFETY: a NUL-terminated string (caller).
            WireKey::Name(unsafe { args::text(e.key_name, "events[].key_name") }?.to_owned())
        };
        batch.events.push(WireEvent {
            key,
            event_time_ns: e.event_time_ns,
            value: e.value,
            attributes: Vec::new(),
        });
    }
    Ok(batch)
}

/// Sends `count` events to the streaming engine serving `feature_id` (usually
/// `AW_STREAM_FEATURE_ID`), all in one frame. The engine answers (an `AW_KIND_RESPONSE`
/// message carrying its count) only when it refused some; `aw_stream_batch_acked` waits for
/// the count every time.
///
/// ```c
/// aw_stream_event events[2] = {{.key_id = 7, .event_time_ns = t, .value = 1.0},
///                              {.key_name = "disk-1", .event_time_ns = t, .value = 0.5}};
/// aw_stream_batch(agent, AW_STREAM_FEATURE_ID, events, 2);
/// ```
///
/// # Safety
/// `agent` is NULL or a live agent handle; `events` is NULL (with `count` 0) or `count`
/// readable events whose `key_name`s are NULL or NUL-terminated strings.
#[no_mangle]
pub unsafe extern "C" fn aw_stream_batch(
    agent: *mut aw_agent,
    feature_id: u32,
    events: *const aw_stream_event,
    count: usize,
) -> aw_status {
    with_agent(agent, |a| {
        // SAFETY: as this function's contract.
        let batch = unsafe { batch(events, count) }?;
        a.agent()?.stream_batch(feature_id, &batch)?;
        Ok(())
    })
}

/// Sends `count` events as a request to the engine's agent `engine` (found with
/// `aw_discover(agent, "stream-ingest", "^1", ...)`) and waits up to `timeout_ms` for its
/// count of the events it took and refused, written to `*ack_out`. `AW_ERR_TIMEOUT` or
/// `AW_ERR_NACKED` (no such agent) otherwise. Releases the message received before.
///
/// ```c
/// aw_ingest_ack ack;
/// aw_stream_batch_acked(agent, engine_id, events, 2, 1000, &ack);
/// ```
///
/// # Safety
/// As `aw_stream_batch`; `ack_out` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn aw_stream_batch_acked(
    agent: *mut aw_agent,
    engine: u32,
    events: *const aw_stream_event,
    count: usize,
    timeout_ms: u32,
    ack_out: *mut aw_ingest_ack,
) -> aw_status {
    with_agent(agent, |a| {
        let out = args::out(ack_out, "ack_out")?;
        // SAFETY: as this function's contract.
        let batch = unsafe { batch(events, count) }?;
        let timeout = Duration::from_millis(u64::from(timeout_ms));
        a.no_claim_open()?;
        // The request reads the rx ring: the reply of an earlier request goes with it.
        a.reply = None;
        let ack = a.agent()?.stream_batch_acked(engine, &batch, timeout)?;
        let mut c = aw_ingest_ack {
            accepted: ack.accepted,
            malformed: ack.malformed,
            first_problem: [0; AW_PROBLEM_BYTES],
        };
        copy_text(&ack.first_problem, &mut c.first_problem);
        // SAFETY: checked not NULL; writable (caller).
        unsafe { out.write(c) };
        Ok(())
    })
}
