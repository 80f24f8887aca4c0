//! `agentwire stream listen`: line input for tools that cannot link the client library.
//!
//! It listens on TCP and/or UDP, reads one event per line, `KEY VALUE [EVENT_TIME_NS]`
//! (spaces or commas between; a numeric key is a numeric key, anything else a name of at
//! most 23 bytes; without a time, the time the line arrived), and forwards the events in
//! batches to the daemon's streaming engine as an agent (`Agent::stream_batch`).
//!
//! Bounds: [`LINE_BYTES_MAX`] per line, [`CONNECTIONS_MAX`] TCP connections, a queue of
//! [`QUEUE_EVENTS_MAX`] events between the readers and the forwarder. A full queue makes TCP
//! readers wait (the sender feels it as TCP backpressure); UDP has no backpressure, so a
//! datagram that finds the queue full is dropped and counted. A bad line is counted, and a
//! TCP sender gets `error LINE: WHY` back on its connection.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use agentwire_shm::client::Agent;
use agentwire_shm::stream_events::{EventBatch, WireEvent, WireKey};

type BoxError = Box<dyn std::error::Error>;

/// The longest line taken, bytes.
pub const LINE_BYTES_MAX: usize = 4_096;
/// TCP connections served at once.
pub const CONNECTIONS_MAX: usize = 64;
/// Events queued between the readers and the forwarder.
pub const QUEUE_EVENTS_MAX: usize = 65_536;
/// Events per forwarded batch at most.
pub const BATCH_EVENTS_MAX: usize = 1_024;
/// A TCP connection that sends nothing for this long is closed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// The longest an error reply may wait for its reader.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a stop request waits for a backpressured engine before giving up.
pub const STOP_GRACE: Duration = Duration::from_secs(5);
/// The longest an event waits for its batch to fill.
pub const FLUSH_INTERVAL: Duration = Duration::from_millis(10);

/// What `stream listen` was asked.
pub struct ListenArgs {
    /// TCP address to listen on.
    pub tcp: Option<String>,
    /// UDP address to listen on.
    pub udp: Option<String>,
    /// The daemon's socket.
    pub socket: Option<PathBuf>,
    /// The engine's feature id.
    pub feature_id: u32,
}

#[derive(Default)]
struct Counters {
    lines: AtomicU64,
    malformed: AtomicU64,
    udp_dropped: AtomicU64,
    forwarded: AtomicU64,
    connections_refused: AtomicU64,
}

/// One line as an event; the error says why not.
///
/// ```ignore
/// assert!(parse_line("db-1 0.5 1000").is_ok());
/// ```
fn parse_line(line: &str) -> Result<WireEvent, String> {
    let mut fields = line
        .split(|c: char| c == ',' || c.is_ascii_whitespace())
        .filter(|f| !f.is_empty());
    let key = fields.next().ok_or("an empty line")?;
    let value = fields
        .next()
        .ok_or("no value (KEY VALUE [EVENT_TIME_NS])")?;
    let value: f64 = value
        .parse()
        .map_err(|_| format!("value {value:?} is not a number"))?;
    if !value.is_finite() {
        return Err(format!("value {value} is not finite"));
    }
    let event_time_ns = match fields.next() {
        Some(t) => t
            .parse::<i64>()
            .map_err(|_| format!("event time {t:?} is not an integer (ns)"))?,
        None => SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as i64),
    };
    if let Some(extra) = fields.next() {
        return Err(format!("unexpected {extra:?} after the event time"));
    }
    let key = match key.parse::<u64>() {
        Ok(id) => WireKey::Id(id),
        Err(_) if key.len() <= agentwire_streaming::event::KEY_NAME_BYTES_MAX => {
            WireKey::Name(key.to_string())
        }
        Err(_) => return Err(format!("key {key:?} is longer than 23 bytes")),
    };
    Ok(WireEvent {
        key,
        event_time_ns,
        value,
        attributes: Vec::new(),
    })
}

fn serve_tcp(
    stream: TcpStream,
    queue: SyncSender<WireEvent>,
    counters: &Counters,
    open: &AtomicUsize,
) {
    // An idle connection does not hold one of the CONNECTIONS_MAX places forever, and a
    // client that never reads its error replies does not block this reader.
    let _ = stream.set_read_timeout(Some(IDLE_TIMEOUT));
    let _ = stream.set_write_timeout(Some(REPLY_TIMEOUT));
    let mut writer = stream.try_clone().ok();
    let mut reader = BufReader::new(stream);
    let mut line = Vec::with_capacity(256);
    let mut number = 0u64;
    loop {
        line.clear();
        // At most LINE_BYTES_MAX + 1 bytes: a longer line is refused, then skipped.
        let limit = (LINE_BYTES_MAX + 1) as u64;
        match std::io::Read::take(&mut reader, limit).read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        number += 1;
        counters.lines.fetch_add(1, Ordering::Relaxed);
        let parsed = if line.len() > LINE_BYTES_MAX && !line.ends_with(b"\n") {
            // Skip the rest of the long line without keeping it.
            if !skip_line(&mut reader) {
                break;
            }
            Err(format!("a line over {LINE_BYTES_MAX} bytes"))
        } else {
            std::str::from_utf8(&line)
                .map_err(|_| "not UTF-8".to_string())
                .and_then(|text| parse_line(text.trim_end()))
        };
        match parsed {
            Ok(event) => {
                if queue.send(event).is_err() {
                    break;
                }
            }
            Err(why) => {
                counters.malformed.fetch_add(1, Ordering::Relaxed);
                if let Some(w) = writer.as_mut() {
                    let _ = writeln!(w, "error {number}: {why}");
                }
            }
        }
    }
    open.fetch_sub(1, Ordering::Relaxed);
}

/// Consumes input up to and including the next newline, holding nothing; false at the end
/// of the stream or on an error.
fn skip_line(reader: &mut impl BufRead) -> bool {
    loop {
        let (found, used) = match reader.fill_buf() {
            Ok([]) | Err(_) => return false,
            Ok(buf) => match buf.iter().position(|&b| b == b'\n') {
                Some(at) => (true, at + 1),
                None => (false, buf.len()),
            },
        };
        reader.consume(used);
        if found {
            return true;
        }
    }
}

fn serve_udp(socket: UdpSocket, queue: SyncSender<WireEvent>, counters: &Counters) {
    let mut buf = vec![0u8; 65_536];
    while let Ok((n, _from)) = socket.recv_from(&mut buf) {
        let Ok(text) = std::str::from_utf8(&buf[..n]) else {
            counters.malformed.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            counters.lines.fetch_add(1, Ordering::Relaxed);
            match parse_line(line.trim()) {
                Ok(event) => match queue.try_send(event) {
                    Ok(()) => {}
                    Err(TrySendError::Full(_)) => {
                        counters.udp_dropped.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(TrySendError::Disconnected(_)) => return,
                },
                Err(_) => {
                    counters.malformed.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }
}

/// Forwards queued events in batches until `stop`; flushes what is left.
fn forward(
    agent: &mut Agent,
    feature_id: u32,
    queue: &Receiver<WireEvent>,
    counters: &Counters,
    stop: &AtomicBool,
) -> Result<(), BoxError> {
    let mut batch = EventBatch::default();
    let mut oldest: Option<Instant> = None;
    loop {
        let wait = oldest.map_or(FLUSH_INTERVAL, |t| {
            FLUSH_INTERVAL.saturating_sub(t.elapsed())
        });
        match queue.recv_timeout(wait) {
            Ok(event) => {
                oldest.get_or_insert_with(Instant::now);
                batch.events.push(event);
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break,
        }
        let due = oldest.is_some_and(|t| t.elapsed() >= FLUSH_INTERVAL);
        if batch.events.len() >= BATCH_EVENTS_MAX || (due && !batch.events.is_empty()) {
            send(agent, feature_id, &mut batch, counters, stop)?;
            oldest = None;
        }
        if stop.load(Ordering::Relaxed) {
            while let Ok(event) = queue.try_recv() {
                batch.events.push(event);
                if batch.events.len() >= BATCH_EVENTS_MAX {
                    send(agent, feature_id, &mut batch, counters, stop)?;
                }
            }
            break;
        }
    }
    if !batch.events.is_empty() {
        send(agent, feature_id, &mut batch, counters, stop)?;
    }
    Ok(())
}

fn send(
    agent: &mut Agent,
    feature_id: u32,
    batch: &mut EventBatch,
    counters: &Counters,
    stop: &AtomicBool,
) -> Result<(), BoxError> {
    // A ring that stays full (the engine behind): keep trying with a back-off while the
    // readers wait on the bounded queue, so TCP senders feel the backpressure and nothing
    // accepted is dropped. Only a stop request ends the wait (after STOP_GRACE), and the
    // error says how many events were not forwarded.
    let started = Instant::now();
    let mut said = Instant::now();
    let mut stopping_since: Option<Instant> = None;
    loop {
        match agent.stream_batch(feature_id, batch) {
            Ok(()) => break,
            Err(agentwire_shm::client::ClientError::Backpressure(_)) => {
                if stop.load(Ordering::Relaxed)
                    && stopping_since.get_or_insert_with(Instant::now).elapsed() >= STOP_GRACE
                {
                    let lost = batch.events.len();
                    return Err(format!(
                        "stopped while the engine was not taking events: {lost} events of the \
                         last batch (and any still queued) were not forwarded"
                    )
                    .into());
                }
                if said.elapsed() >= Duration::from_secs(10) {
                    said = Instant::now();
                    say(format_args!(
                        "the engine has not taken a batch for {:.0} s; holding input",
                        started.elapsed().as_secs_f64()
                    ));
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(e) => return Err(format!("forwarding to the engine: {e}").into()),
        }
    }
    counters
        .forwarded
        .fetch_add(batch.events.len() as u64, Ordering::Relaxed);
    batch.events.clear();
    Ok(())
}

/// A line on stderr; a closed stderr is not an error worth dying for.
fn say(args: std::fmt::Arguments<'_>) {
    let _ = writeln!(std::io::stderr(), "agentwire stream listen: {args}");
}

/// `agentwire stream listen`.
pub fn listen(args: ListenArgs) -> Result<(), BoxError> {
    if args.tcp.is_none() && args.udp.is_none() {
        return Err("give --tcp ADDR, --udp ADDR or both".into());
    }
    let socket = args
        .socket
        .clone()
        .unwrap_or_else(agentwire_shm::client::default_socket_path);
    let mut agent = Agent::builder("stream-listen")
        .socket(&socket)
        .connect()
        .map_err(|e| format!("connecting to the daemon at {}: {e}", socket.display()))?;
    let counters = Arc::new(Counters::default());
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(signal, stop.clone())?;
    }
    let (queue_tx, queue_rx) = sync_channel::<WireEvent>(QUEUE_EVENTS_MAX);
    if let Some(addr) = &args.tcp {
        let listener =
            TcpListener::bind(addr).map_err(|e| format!("listening on tcp {addr}: {e}"))?;
        say(format_args!("tcp {}", listener.local_addr()?));
        let (queue, counters) = (queue_tx.clone(), counters.clone());
        std::thread::Builder::new()
            .name("aw-listen-tcp".into())
            .spawn(move || {
                let open = Arc::new(AtomicUsize::new(0));
                for stream in listener.incoming().flatten() {
                    if open.load(Ordering::Relaxed) >= CONNECTIONS_MAX {
                        counters.connections_refused.fetch_add(1, Ordering::Relaxed);
                        let mut s = stream;
                        let _ =
                            writeln!(s, "error 0: {CONNECTIONS_MAX} connections open, the most");
                        continue;
                    }
                    open.fetch_add(1, Ordering::Relaxed);
                    let (queue, counters, open) = (queue.clone(), counters.clone(), open.clone());
                    let _ = std::thread::Builder::new()
                        .name("aw-listen-conn".into())
                        .spawn(move || serve_tcp(stream, queue, &counters, &open));
                }
            })?;
    }
    if let Some(addr) = &args.udp {
        let udp = UdpSocket::bind(addr).map_err(|e| format!("listening on udp {addr}: {e}"))?;
        say(format_args!("udp {}", udp.local_addr()?));
        let (queue, counters) = (queue_tx.clone(), counters.clone());
        std::thread::Builder::new()
            .name("aw-listen-udp".into())
            .spawn(move || serve_udp(udp, queue, &counters))?;
    }
    drop(queue_tx);
    forward(&mut agent, args.feature_id, &queue_rx, &counters, &stop)?;
    let c = &counters;
    say(format_args!(
        "{} lines, {} forwarded, {} malformed, {} UDP events dropped (queue full), {} connections refused",
        c.lines.load(Ordering::Relaxed),
        c.forwarded.load(Ordering::Relaxed),
        c.malformed.load(Ordering::Relaxed),
        c.udp_dropped.load(Ordering::Relaxed),
        c.connections_refused.load(Ordering::Relaxed),
    ));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_parse_with_spaces_or_commas_and_bad_ones_say_why() {
        let e = parse_line("db-1 0.5 1000").unwrap();
        assert_eq!(
            (e.key, e.value, e.event_time_ns),
            (WireKey::Name("db-1".into()), 0.5, 1000)
        );
        let e = parse_line("7,2.5,9").unwrap();
        assert_eq!((e.key, e.value, e.event_time_ns), (WireKey::Id(7), 2.5, 9));
        assert!(parse_line("7 1").unwrap().event_time_ns > 1_700_000_000_000_000_000);
        assert_eq!(
            parse_line("k").unwrap_err(),
            "no value (KEY VALUE [EVENT_TIME_NS])"
        );
        assert_eq!(
            parse_line("k x").unwrap_err(),
            "value \"x\" is not a number"
        );
        assert_eq!(parse_line("k NaN").unwrap_err(), "value NaN is not finite");
        assert_eq!(
            parse_line("k 1 soon").unwrap_err(),
            "event time \"soon\" is not an integer (ns)"
        );
        assert_eq!(
            parse_line("k 1 2 3").unwrap_err(),
            "unexpected \"3\" after the event time"
        );
        assert!(parse_line(&format!("{} 1", "n".repeat(24)))
            .unwrap_err()
            .contains("longer than 23 bytes"));
    }
}
