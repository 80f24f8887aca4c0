//! `agentwire dlq list|replay|purge`: inspect and drain the dead-letter queue file.

use agentwire_runtime::dlq::{DeadLetter, DeadLetterQueue, DlqConfig, Handoff};
use agentwire_shm::client::{decode_nack, query_status, Agent};
use agentwire_shm::control::NackReason;
use agentwire_shm::wire::{Destination, FrameHeader, FrameKind, FLAG_ACK_REQUESTED};
use serde_json::json;
use std::path::PathBuf;
use std::time::Duration;

/// How long replay waits for the router's ack of each frame.
pub const REPLAY_ACK_TIMEOUT: Duration = Duration::from_secs(5);

type BoxError = Box<dyn std::error::Error>;

fn reason_name(code: u32) -> String {
    NackReason::from_u32(code).map_or_else(|| format!("code {code}"), |r| format!("{r:?}"))
}

fn describe(letter: &DeadLetter) -> serde_json::Value {
    let header = FrameHeader::validate(&letter.frame).ok();
    json!({
        "sequence": letter.sequence,
        "dead_time_ns": letter.dead_time_ns,
        "reason": letter.reason,
        "reason_name": reason_name(letter.reason),
        "kind": header.map(|h| format!("{:?}", h.kind())),
        "source": header.map(|h| h.source()),
        "source_uid": letter.owner_uid,
        "destination": header.map(|h| h.destination()),
        "correlation_id": header.map(|h| h.correlation()),
        "frame_bytes": letter.frame.len(),
        "valid_frame": header.is_some(),
    })
}

/// Opens an existing queue; `None` (and nothing created) when there is no file yet.
fn open(path: PathBuf, as_json: bool) -> Result<Option<DeadLetterQueue>, BoxError> {
    if !path.exists() {
        if as_json {
            outln!(
                "{}",
                json!({"path": path, "exists": false, "records": [], "replayed": 0, "purged": 0, "remaining": 0})
            )?;
        } else {
            outln!(
                "no dead-letter queue at {} (nothing has been dead-lettered)",
                path.display()
            )?;
        }
        return Ok(None);
    }
    let dlq = DeadLetterQueue::open(DlqConfig::new(path))?;
    let rec = dlq.recovery();
    if rec.truncated_bytes > 0 {
        eprintln!(
            "agentwire: dead-letter queue {}: cut {} bytes of a damaged tail at offset {} ({})",
            dlq.path().display(),
            rec.truncated_bytes,
            rec.truncated_at.unwrap_or(0),
            rec.reason.as_deref().unwrap_or("unknown")
        );
    }
    Ok(Some(dlq))
}

/// `dlq list`: every record, as a table or one JSON object.
pub fn list(path: PathBuf, as_json: bool) -> Result<(), BoxError> {
    let Some(dlq) = open(path, as_json)? else {
        return Ok(());
    };
    let letters = dlq.read_all()?;
    if as_json {
        let report = json!({
            "path": dlq.path(),
            "exists": true,
            "records": letters.iter().map(describe).collect::<Vec<_>>(),
            "bytes": dlq.bytes(),
            "recovered_truncated_bytes": dlq.recovery().truncated_bytes,
        });
        outln!("{report}")?;
        return Ok(());
    }
    outln!("{} record(s) in {}", letters.len(), dlq.path().display())?;
    if !letters.is_empty() {
        outln!(
            "{:>8}  {:<16} {:<9} {:>7} {:>7} {:>11} {:>14} {:>7}",
            "seq",
            "reason",
            "kind",
            "source",
            "uid",
            "destination",
            "correlation",
            "bytes"
        )?;
    }
    for letter in &letters {
        match FrameHeader::validate(&letter.frame) {
            Ok(h) => outln!(
                "{:>8}  {:<16} {:<9} {:>7} {:>7} {:>11} {:>14} {:>7}",
                letter.sequence,
                reason_name(letter.reason),
                format!("{:?}", h.kind()),
                h.source(),
                letter
                    .owner_uid
                    .map_or_else(|| "-".to_string(), |uid| uid.to_string()),
                h.destination(),
                h.correlation(),
                letter.frame.len()
            )?,
            Err(e) => outln!(
                "{:>8}  {:<16} (not a valid frame: {e})",
                letter.sequence,
                reason_name(letter.reason)
            )?,
        }
    }
    Ok(())
}

/// `dlq purge`: drop every record.
pub fn purge(path: PathBuf, as_json: bool) -> Result<(), BoxError> {
    let Some(mut dlq) = open(path, as_json)? else {
        return Ok(());
    };
    let removed = dlq.purge()?;
    if as_json {
        outln!("{}", json!({"path": dlq.path(), "purged": removed}))?;
    } else {
        outln!("purged {removed} record(s) from {}", dlq.path().display())?;
    }
    Ok(())
}

/// Sends one dead letter again with an ack request and waits for the router's verdict.
/// Sends one record through the daemon and waits for its ack. A nack saying the daemon
/// dead-lettered it again (its destination is still full) hands the record off (the daemon
/// holds the new copy) and stops the replay.
/// Where `dlq replay` sends records that were dead-lettered in an earlier run of the daemon.
#[derive(Debug, Clone, Copy)]
pub struct Replay {
    /// Agent ids below this were given by an earlier run (the daemon's `agent_ids_from`).
    pub ids_from: u32,
    /// The agent that takes records of earlier runs (`--to`), if any.
    pub to: Option<u32>,
}

/// The frame to send again for `letter`, with an ack requested; a record of an earlier run
/// is re-addressed to `replay.to`, or refused without it (its destination id, topic or
/// route may mean something else now) unless it was routed by feature (feature ids do not
/// change between runs).
fn frame_to_replay(letter: &DeadLetter, replay: &Replay) -> Result<Vec<u8>, String> {
    let header = FrameHeader::validate(&letter.frame)
        .map_err(|e| format!("record {} is not a valid frame: {e}", letter.sequence))?;
    let mut header = *header;
    let earlier_run = header.source() < replay.ids_from;
    let by_feature = matches!(header.destination_kind(), Destination::Feature(_));
    if earlier_run && !by_feature {
        match replay.to {
            Some(agent) => header.address_to(agent),
            None => {
                return Err(format!(
                    "record {} was dead-lettered by an earlier run of the daemon (agent {} sent \
                     it; this run's ids start at {}): its destination {:?} may name something \
                     else now. Pass --to AGENT_ID or --to-name NAME to deliver it to an agent \
                     of this run",
                    letter.sequence,
                    header.source(),
                    replay.ids_from,
                    header.destination_kind()
                ))
            }
        }
    }
    let header = header.with_flags(header.routing_flags.get() | FLAG_ACK_REQUESTED);
    let mut frame = letter.frame.clone();
    header.write_to(&mut frame);
    Ok(frame)
}

fn replay_one(
    agent: &mut Agent,
    letter: &DeadLetter,
    replay: &Replay,
    requeued: &mut Option<String>,
) -> Result<Handoff, String> {
    let frame = frame_to_replay(letter, replay)?;
    agent
        .send_raw(&frame)
        .map_err(|e| format!("record {}: {e}", letter.sequence))?;
    loop {
        let reply = agent
            .recv(Some(REPLAY_ACK_TIMEOUT))
            .map_err(|e| format!("record {}: {e}", letter.sequence))?
            .ok_or_else(|| {
                format!(
                    "record {}: no ack within {REPLAY_ACK_TIMEOUT:?}",
                    letter.sequence
                )
            })?
            .to_owned();
        match reply.header().kind() {
            FrameKind::Ack => return Ok(Handoff::Next),
            FrameKind::Nack => {
                let body = decode_nack(reply.payload());
                if let Some(b) = body
                    .as_ref()
                    .filter(|b| b.detail.contains("dead-lettered as"))
                {
                    *requeued = Some(format!(
                        "record {} went back to the dead-letter queue: {}",
                        letter.sequence, b.detail
                    ));
                    return Ok(Handoff::Stop);
                }
                let why = body.map_or_else(
                    || "unreadable nack".to_string(),
                    |b| format!("{} ({})", reason_name(b.reason), b.detail),
                );
                return Err(format!("record {} refused again: {why}", letter.sequence));
            }
            // Traffic addressed to the replay agent itself is not ours to handle.
            _ => continue,
        }
    }
}

/// Who takes the records of earlier runs: an agent id, or an agent name looked up in the
/// daemon's status (it must name exactly one agent).
#[derive(Debug, Clone)]
pub enum ReplayTarget {
    /// `--to AGENT_ID`.
    Id(u32),
    /// `--to-name NAME`.
    Name(String),
}

/// `dlq replay`: send every record again through the daemon at `socket`, in order, removing
/// each one the router acknowledges; stops at the first refusal and keeps the rest. Records
/// of an earlier run go to `target`, or stop the replay without one.
pub fn replay(
    path: PathBuf,
    socket: PathBuf,
    target: Option<ReplayTarget>,
    as_json: bool,
) -> Result<(), BoxError> {
    let Some(mut dlq) = open(path, as_json)? else {
        return Ok(());
    };
    let total = dlq.len();
    let status = query_status(&socket)?;
    let ids_from = status
        .info
        .iter()
        .find(|(k, _)| k == "agent_ids_from")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(1);
    let to = match target {
        None => None,
        Some(ReplayTarget::Id(id)) => {
            if !status.agents.iter().any(|a| a.agent_id == id) {
                return Err(format!("--to {id}: the daemon has no agent {id}").into());
            }
            Some(id)
        }
        Some(ReplayTarget::Name(name)) => {
            let ids: Vec<u32> = status
                .agents
                .iter()
                .filter(|a| a.name == name)
                .map(|a| a.agent_id)
                .collect();
            match ids.as_slice() {
                [id] => Some(*id),
                [] => return Err(format!("--to-name {name}: no agent of that name").into()),
                _ => {
                    return Err(format!(
                        "--to-name {name}: {} agents have that name ({ids:?}); pass --to AGENT_ID",
                        ids.len()
                    )
                    .into())
                }
            }
        }
    };
    let replay = Replay { ids_from, to };
    let mut agent = Agent::builder("agentwire-dlq-replay")
        .socket(&socket)
        .connect()?;
    let mut requeued = None;
    let (replayed, failure) =
        dlq.drain(|letter| replay_one(&mut agent, letter, &replay, &mut requeued))?;
    agent.close();
    let failure = failure.or(requeued);
    if as_json {
        outln!(
            "{}",
            json!({"path": dlq.path(), "records": total, "replayed": replayed, "remaining": dlq.len(), "error": failure})
        )?;
    } else {
        outln!(
            "replayed {replayed} of {total} record(s); {} remain in {}",
            dlq.len(),
            dlq.path().display()
        )?;
    }
    match failure {
        Some(e) => Err(format!("replay stopped: {e}").into()),
        None => Ok(()),
    }
}
