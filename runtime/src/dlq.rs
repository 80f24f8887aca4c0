//! The dead-letter queue: frames the router could not deliver before their deadline, kept in
//! a bounded, append-only file of checksummed records that survives a daemon restart.
//!
//! File layout (all little-endian):
//!
//! ```text
//! file header, 24 bytes:  magic "AWDLQ\0\0\0" u64 | version u32 (2) | reserved u32 | first_sequence u64
//! record, 40 + n bytes:   magic "AWDQ" u32 | frame_len_bytes u32 | sequence u64 | dead_time_ns u64
//!                         | reason u32 | owner_uid u32 (u32::MAX: none) | reserved u32
//!                         | crc32 u32 (over the 36 bytes before it and the frame) | frame
//! ```
//!
//! Format 1 (records of 32 bytes, no owner) is read and rewritten as format 2 when opened.
//!
//! Bounds: records and bytes in all, per sending agent (the frame's source) and per uid (the
//! record's owner; see [`crate::dlq_quota`]), so no one agent or user fills the queue for
//! the others.
//!
//! Appends are plain writes at the end; [`DeadLetterQueue::sync`] makes them durable (the
//! daemon syncs on a timer and at shutdown). On open, records are checked in order; at the
//! first torn (cut short) or corrupt (bad magic, length or checksum) record the file is
//! truncated there, and what was cut is reported in [`RecoveryReport`] and logged once.
//! Records are never partially delivered: [`DeadLetterQueue::drain`] rewrites the file with
//! exactly the records not yet handed off, and renames it into place atomically.
//!
//! ```
//! use agentwire_runtime::dlq::{DeadLetterQueue, DlqConfig};
//! let dir = std::env::temp_dir().join(format!("aw-dlq-doc-{}", std::process::id()));
//! let path = dir.join("dlq.log");
//! # let _ = std::fs::remove_file(&path);
//! let mut dlq = DeadLetterQueue::open(DlqConfig::new(&path)).unwrap();
//! let seq = dlq.append(3, b"an undeliverable frame").unwrap();
//! dlq.sync().unwrap();
//! drop(dlq);
//! let dlq = DeadLetterQueue::open(DlqConfig::new(&path)).unwrap();
//! let letters = dlq.read_all().unwrap();
//! assert_eq!((letters[0].sequence, letters[0].frame.as_slice()), (seq, &b"an undeliverable frame"[..]));
//! ```

use crate::dlq_quota::{SenderUsage, SenderUsages};
use core::mem::size_of;
use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use zerocopy::little_endian::{U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// "AWDLQ\0\0\0" as a little-endian u64.
pub const FILE_MAGIC: u64 = u64::from_le_bytes(*b"AWDLQ\0\0\0");
/// File format version written (format 1, without owners, is upgraded on open).
pub const FILE_VERSION: u32 = 2;
/// The earlier format this build reads (and rewrites as [`FILE_VERSION`]).
pub const FILE_VERSION_V1: u32 = 1;
/// "AWDQ" as a little-endian u32.
pub const RECORD_MAGIC: u32 = u32::from_le_bytes(*b"AWDQ");
/// Bytes of the file header.
pub const FILE_HEADER_BYTES: u64 = 24;
/// Bytes of a record header.
pub const RECORD_HEADER_BYTES: u64 = 40;
/// Bytes of a record header in format 1.
const RECORD_HEADER_BYTES_V1: u64 = 32;
/// `owner_uid` of a record without an owner.
const NO_OWNER: u32 = u32::MAX;
/// Default bound on records kept.
pub const RECORDS_MAX_DEFAULT: u64 = 100_000;
/// Default bound on file size (64 MiB).
pub const BYTES_MAX_DEFAULT: u64 = 64 * 1024 * 1024;
/// Default bound on the records one sending agent may hold: a tenth of
/// [`RECORDS_MAX_DEFAULT`], so no one agent fills the queue for everyone (see
/// [`crate::dlq_quota`]).
pub const RECORDS_PER_SENDER_MAX_DEFAULT: u64 = RECORDS_MAX_DEFAULT / 10;
/// Default bound on the bytes one sending agent's records may take: a tenth of
/// [`BYTES_MAX_DEFAULT`].
pub const BYTES_PER_SENDER_MAX_DEFAULT: u64 = BYTES_MAX_DEFAULT / 10;
/// Default bound on the records the agents of one uid may hold together: the whole queue
/// (on a single-user machine every agent has the same uid); a machine shared by several
/// users lowers it (`dlq_records_per_uid_max`).
pub const RECORDS_PER_UID_MAX_DEFAULT: u64 = RECORDS_MAX_DEFAULT;
/// Default bound on the bytes the agents of one uid may hold together: the whole queue.
pub const BYTES_PER_UID_MAX_DEFAULT: u64 = BYTES_MAX_DEFAULT;

#[repr(C)]
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable)]
struct FileHeader {
    magic: U64,
    version: U32,
    reserved: U32,
    first_sequence: U64,
}

#[repr(C)]
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable)]
struct RecordHeader {
    magic: U32,
    frame_len_bytes: U32,
    sequence: U64,
    dead_time_ns: U64,
    reason: U32,
    owner_uid: U32,
    reserved: U32,
    crc32: U32,
}

/// A record header of format 1 (read only, to upgrade a file).
#[repr(C)]
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable)]
struct RecordHeaderV1 {
    magic: U32,
    frame_len_bytes: U32,
    sequence: U64,
    dead_time_ns: U64,
    reason: U32,
    crc32: U32,
}

const _: () = assert!(size_of::<FileHeader>() as u64 == FILE_HEADER_BYTES);
const _: () = assert!(size_of::<RecordHeader>() as u64 == RECORD_HEADER_BYTES);
const _: () = assert!(size_of::<RecordHeaderV1>() as u64 == RECORD_HEADER_BYTES_V1);

/// Where the queue lives and how large it may grow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DlqConfig {
    /// The queue file.
    pub path: PathBuf,
    /// Most records kept; appends beyond are refused (and counted by the caller).
    pub records_max: u64,
    /// Largest file size in bytes; appends beyond are refused.
    pub bytes_max: u64,
    /// Most records one sending agent (the frame's source) may hold; its appends beyond are
    /// refused with [`DlqError::SenderQuota`] (see [`crate::dlq_quota`]).
    pub records_per_sender_max: u64,
    /// Most bytes (record headers included) one sending agent's records may take.
    pub bytes_per_sender_max: u64,
    /// Most records the agents of one uid (the record's owner) may hold together; appends
    /// beyond are refused with [`DlqError::SenderQuota`].
    pub records_per_uid_max: u64,
    /// Most bytes the agents of one uid may hold together.
    pub bytes_per_uid_max: u64,
}

impl DlqConfig {
    /// Defaults: 100,000 records, 64 MiB; a tenth of each per sender; all of it per uid.
    ///
    /// ```
    /// let c = agentwire_runtime::dlq::DlqConfig::new("/tmp/dlq.log");
    /// assert_eq!((c.records_max, c.records_per_sender_max), (100_000, 10_000));
    /// assert_eq!(c.records_per_uid_max, 100_000);
    /// ```
    pub fn new(path: impl AsRef<Path>) -> Self {
        Self {
            path: path.as_ref().to_path_buf(),
            records_max: RECORDS_MAX_DEFAULT,
            bytes_max: BYTES_MAX_DEFAULT,
            records_per_sender_max: RECORDS_PER_SENDER_MAX_DEFAULT,
            bytes_per_sender_max: BYTES_PER_SENDER_MAX_DEFAULT,
            records_per_uid_max: RECORDS_PER_UID_MAX_DEFAULT,
            bytes_per_uid_max: BYTES_PER_UID_MAX_DEFAULT,
        }
    }
}

/// The default queue path (see [`crate::dlq_path`], which also says when it falls back to
/// the runtime directory).
pub use crate::dlq_path::default_path;

/// One dead letter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    /// Monotonic sequence number in this queue.
    pub sequence: u64,
    /// When it was declared dead, ns since the Unix epoch.
    pub dead_time_ns: u64,
    /// Why (a `NackReason` code).
    pub reason: u32,
    /// The uid of the agent that sent it, when the router knew it (agents on the control
    /// socket; not in-process endpoints, nor records from before format 2).
    pub owner_uid: Option<u32>,
    /// The frame, header included, as the sender wrote it.
    pub frame: Vec<u8>,
}

/// What recovery found when the queue was opened.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Intact records kept.
    pub records: u64,
    /// Bytes cut from the end (a torn or corrupt tail), 0 if the file was clean.
    pub truncated_bytes: u64,
    /// File offset where the cut was made.
    pub truncated_at: Option<u64>,
    /// Why the first cut record was rejected.
    pub reason: Option<String>,
}

/// Errors of the queue. Each names the file.
#[derive(Debug, thiserror::Error)]
pub enum DlqError {
    /// A file operation failed.
    #[error("{what} {}: {source}", path.display())]
    Io {
        /// What was being done.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file is not a dead-letter queue.
    #[error("{} is not an agentwire dead-letter queue (magic {found:#018x})", path.display())]
    NotADlq {
        /// The file.
        path: PathBuf,
        /// Magic found.
        found: u64,
    },
    /// The file was written by another format version.
    #[error("{} is dead-letter queue format version {found}; this build reads versions {FILE_VERSION_V1} and {FILE_VERSION}", path.display())]
    VersionMismatch {
        /// The file.
        path: PathBuf,
        /// Version found.
        found: u32,
    },
    /// The queue is at its bound; the frame was not stored.
    #[error("dead-letter queue full ({records} records, {bytes} bytes; limits {records_max} records, {bytes_max} bytes)")]
    Full {
        /// Records held.
        records: u64,
        /// Bytes held.
        bytes: u64,
        /// Record limit.
        records_max: u64,
        /// Byte limit.
        bytes_max: u64,
    },
    /// The frame's sender already holds as many records or bytes as one sender may; the
    /// frame was not stored.
    #[error(
        "{} holds {} dead letters ({} bytes) and may hold {} records, {} bytes",
        .0.holder, .0.held.records, .0.held.bytes, .0.records_max, .0.bytes_max
    )]
    SenderQuota(crate::dlq_quota::OverQuota),
    /// Another process holds the queue's lock (only from [`DeadLetterQueue::try_append`]).
    #[error("dead-letter queue {path} is locked by another process (a replay or purge); retry")]
    Busy {
        /// The queue file.
        path: PathBuf,
    },
    /// The frame is larger than the wire format allows.
    #[error("frame of {len_bytes} bytes exceeds the {max_bytes}-byte frame limit")]
    FrameTooLarge {
        /// Frame length.
        len_bytes: usize,
        /// Limit.
        max_bytes: usize,
    },
}

/// An open dead-letter queue.
#[derive(Debug)]
pub struct DeadLetterQueue {
    config: DlqConfig,
    /// `<path>.lock`, flocked around every read-modify-write of the queue.
    lock: File,
    file: File,
    records: u64,
    bytes: u64,
    /// What each sender holds (see [`crate::dlq_quota`]).
    senders: SenderUsages,
    next_sequence: u64,
    recovery: RecoveryReport,
}

fn io_err<'p>(what: &'static str, path: &'p Path) -> impl FnOnce(std::io::Error) -> DlqError + 'p {
    move |source| DlqError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// The checksum of a record: over its header up to the checksum field, and its frame.
fn checksum(header_before_crc: &[u8], frame: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(header_before_crc);
    hasher.update(frame);
    hasher.finalize()
}

/// Bytes of a record header its checksum covers (all but the checksum), by format.
const CRC_COVERED_BYTES: usize = RECORD_HEADER_BYTES as usize - 4;
const CRC_COVERED_BYTES_V1: usize = RECORD_HEADER_BYTES_V1 as usize - 4;

/// A format-2 record header for `frame` with these fields, its checksum filled in.
fn record_header(
    sequence: u64,
    dead_time_ns: u64,
    reason: u32,
    owner_uid: Option<u32>,
    frame: &[u8],
) -> RecordHeader {
    let mut header = RecordHeader {
        magic: U32::new(RECORD_MAGIC),
        frame_len_bytes: U32::new(frame.len() as u32),
        sequence: U64::new(sequence),
        dead_time_ns: U64::new(dead_time_ns),
        reason: U32::new(reason),
        owner_uid: U32::new(owner_uid.unwrap_or(NO_OWNER)),
        reserved: U32::ZERO,
        crc32: U32::ZERO,
    };
    let crc = checksum(&header.as_bytes()[..CRC_COVERED_BYTES], frame);
    header.crc32 = U32::new(crc);
    header
}

/// Decodes a record header of format `version` from `raw` (its exact size), a format-1
/// header as a format-2 one without an owner; returns it with the bytes its checksum covers.
fn decode_header(version: u32, raw: &[u8]) -> (RecordHeader, &[u8]) {
    if version == FILE_VERSION_V1 {
        let v1 = RecordHeaderV1::ref_from_bytes(raw).expect("a format-1 record header");
        let header = RecordHeader {
            magic: v1.magic,
            frame_len_bytes: v1.frame_len_bytes,
            sequence: v1.sequence,
            dead_time_ns: v1.dead_time_ns,
            reason: v1.reason,
            owner_uid: U32::new(NO_OWNER),
            reserved: U32::ZERO,
            crc32: v1.crc32,
        };
        return (header, &raw[..CRC_COVERED_BYTES_V1]);
    }
    let header = *RecordHeader::ref_from_bytes(raw).expect("a format-2 record header");
    (header, &raw[..CRC_COVERED_BYTES])
}

fn write_file_header(file: &mut File, path: &Path, first_sequence: u64) -> Result<(), DlqError> {
    let header = FileHeader {
        magic: U64::new(FILE_MAGIC),
        version: U32::new(FILE_VERSION),
        reserved: U32::ZERO,
        first_sequence: U64::new(first_sequence),
    };
    file.seek(SeekFrom::Start(0))
        .map_err(io_err("seeking in", path))?;
    file.write_all(header.as_bytes())
        .map_err(io_err("writing header of", path))
}

/// Outcome of reading one record.
enum Next {
    Record(DeadLetter, u64),
    End,
    Bad(String),
}

/// Reads the next record of a file of format `version`.
fn read_record(
    reader: &mut impl Read,
    version: u32,
    frame_bytes_max: usize,
) -> Result<Next, std::io::Error> {
    let mut buf = [0u8; RECORD_HEADER_BYTES as usize];
    let header_bytes = if version == FILE_VERSION_V1 {
        RECORD_HEADER_BYTES_V1
    } else {
        RECORD_HEADER_BYTES
    };
    let raw = &mut buf[..header_bytes as usize];
    let mut filled = 0;
    while filled < raw.len() {
        match reader.read(&mut raw[filled..])? {
            0 if filled == 0 => return Ok(Next::End),
            0 => {
                return Ok(Next::Bad(format!(
                    "torn record header ({filled} of {header_bytes} bytes)"
                )))
            }
            n => filled += n,
        }
    }
    let (header, covered) = decode_header(version, raw);
    if header.magic.get() != RECORD_MAGIC {
        return Ok(Next::Bad(format!(
            "bad record magic {:#010x}",
            header.magic.get()
        )));
    }
    let len = header.frame_len_bytes.get() as usize;
    if len > frame_bytes_max {
        return Ok(Next::Bad(format!(
            "record length {len} exceeds {frame_bytes_max}"
        )));
    }
    let mut frame = vec![0u8; len];
    let mut got = 0;
    while got < len {
        match reader.read(&mut frame[got..])? {
            0 => {
                return Ok(Next::Bad(format!(
                    "torn record body ({got} of {len} bytes)"
                )))
            }
            n => got += n,
        }
    }
    if checksum(covered, &frame) != header.crc32.get() {
        return Ok(Next::Bad(format!(
            "checksum mismatch in record {}",
            header.sequence.get()
        )));
    }
    let owner = header.owner_uid.get();
    let letter = DeadLetter {
        sequence: header.sequence.get(),
        dead_time_ns: header.dead_time_ns.get(),
        reason: header.reason.get(),
        owner_uid: (owner != NO_OWNER).then_some(owner),
        frame,
    };
    Ok(Next::Record(letter, header_bytes + len as u64))
}

impl DeadLetterQueue {
    /// Opens (creating if missing) and recovers the queue: a torn or corrupt tail is cut off
    /// and reported, never an error.
    ///
    /// ```
    /// # let path = std::env::temp_dir().join(format!("aw-dlq-open-{}.log", std::process::id()));
    /// let dlq = agentwire_runtime::dlq::DeadLetterQueue::open(
    ///     agentwire_runtime::dlq::DlqConfig::new(&path)).unwrap();
    /// assert_eq!(dlq.recovery().truncated_bytes, 0);
    /// ```
    pub fn open(config: DlqConfig) -> Result<Self, DlqError> {
        let path = config.path.clone();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            // Created 0750 where missing; the non-root fallback directory is checked.
            agentwire_router::dirs::prepare_dir(dir)
                .map_err(io_err("creating the directory of", &path))?;
        }
        let lock_path = lock_path(&path);
        // The queue holds undelivered payloads: it, its lock and its rewrites are 0600.
        let lock = agentwire_router::dirs::open_private(&lock_path, false)
            .map_err(io_err("opening", &lock_path))?;
        let held = lock.try_clone().map_err(io_err("locking", &lock_path))?;
        let _held = LockGuard::acquire(&held, &lock_path, true)?;
        Self::open_locked(config, lock)
    }

    /// Opens and recovers the file; the caller holds the lock.
    fn open_locked(config: DlqConfig, lock: File) -> Result<Self, DlqError> {
        let path = config.path.clone();
        let mut file =
            agentwire_router::dirs::open_private(&path, false).map_err(io_err("opening", &path))?;
        let len = file
            .metadata()
            .map_err(io_err("reading metadata of", &path))?
            .len();
        if len < FILE_HEADER_BYTES {
            // New (or a header torn at creation): start fresh.
            file.set_len(0).map_err(io_err("resetting", &path))?;
            write_file_header(&mut file, &path, 1)?;
            file.sync_all().map_err(io_err("syncing", &path))?;
            let recovery = RecoveryReport {
                truncated_bytes: len,
                truncated_at: (len > 0).then_some(0),
                reason: (len > 0).then(|| "torn file header".to_string()),
                ..Default::default()
            };
            return Ok(Self {
                config,
                lock,
                file,
                records: 0,
                bytes: FILE_HEADER_BYTES,
                senders: SenderUsages::default(),
                next_sequence: 1,
                recovery,
            });
        }
        let mut raw = [0u8; FILE_HEADER_BYTES as usize];
        file.seek(SeekFrom::Start(0))
            .map_err(io_err("seeking in", &path))?;
        file.read_exact(&mut raw)
            .map_err(io_err("reading header of", &path))?;
        let header = FileHeader::read_from_bytes(&raw).expect("24 bytes");
        if header.magic.get() != FILE_MAGIC {
            return Err(DlqError::NotADlq {
                path,
                found: header.magic.get(),
            });
        }
        let version = header.version.get();
        if version != FILE_VERSION && version != FILE_VERSION_V1 {
            return Err(DlqError::VersionMismatch {
                path,
                found: version,
            });
        }
        let first_sequence = header.first_sequence.get();
        let mut reader = BufReader::new(&mut file);
        let mut offset = FILE_HEADER_BYTES;
        let mut records = 0u64;
        let mut senders = SenderUsages::default();
        let mut next_sequence = first_sequence;
        let mut bad = None;
        // A format-1 file's intact records, rewritten below as format 2 (bounded by the
        // queue's byte limit, as `read_all` is).
        let mut upgraded = Vec::new();
        loop {
            match read_record(&mut reader, version, agentwire_shm::wire::FRAME_BYTES_MAX)
                .map_err(io_err("reading", &path))?
            {
                Next::Record(letter, size) => {
                    offset += size;
                    records += 1;
                    senders.add(&letter.frame, letter.owner_uid, size);
                    next_sequence = letter.sequence + 1;
                    if version == FILE_VERSION_V1 {
                        upgraded.push(letter);
                    }
                }
                Next::End => break,
                Next::Bad(reason) => {
                    bad = Some(reason);
                    break;
                }
            }
        }
        drop(reader);
        let mut recovery = RecoveryReport {
            records,
            ..Default::default()
        };
        if let Some(reason) = bad {
            recovery.truncated_bytes = len - offset;
            recovery.truncated_at = Some(offset);
            tracing::warn!(
                path = %path.display(),
                offset,
                bytes = len - offset,
                "dead-letter queue: {reason}; truncated the tail, {records} intact records kept"
            );
            recovery.reason = Some(reason);
            file.set_len(offset).map_err(io_err("truncating", &path))?;
            file.sync_all().map_err(io_err("syncing", &path))?;
        }
        file.seek(SeekFrom::Start(offset))
            .map_err(io_err("seeking in", &path))?;
        let mut queue = Self {
            config,
            lock,
            file,
            records,
            bytes: offset,
            senders,
            next_sequence,
            recovery,
        };
        if version == FILE_VERSION_V1 {
            queue.rewrite(first_sequence, &upgraded)?;
            tracing::info!(
                path = %queue.config.path.display(),
                records,
                "dead-letter queue: upgraded from format {FILE_VERSION_V1} to {FILE_VERSION} \
                 (records now carry their sender's uid; these have none)"
            );
        }
        Ok(queue)
    }

    /// What recovery found at open.
    ///
    /// ```
    /// # let path = std::env::temp_dir().join(format!("aw-dlq-rec-{}.log", std::process::id()));
    /// # let dlq = agentwire_runtime::dlq::DeadLetterQueue::open(agentwire_runtime::dlq::DlqConfig::new(&path)).unwrap();
    /// println!("{} records recovered", dlq.recovery().records);
    /// ```
    pub fn recovery(&self) -> &RecoveryReport {
        &self.recovery
    }

    /// Records held.
    ///
    /// ```
    /// # let path = std::env::temp_dir().join(format!("aw-dlq-len-{}.log", std::process::id()));
    /// # let _ = std::fs::remove_file(&path);
    /// # let dlq = agentwire_runtime::dlq::DeadLetterQueue::open(agentwire_runtime::dlq::DlqConfig::new(&path)).unwrap();
    /// assert_eq!(dlq.len(), 0);
    /// ```
    pub fn len(&self) -> u64 {
        self.records
    }

    /// Whether the queue holds no record.
    ///
    /// ```
    /// # let path = std::env::temp_dir().join(format!("aw-dlq-empty-{}.log", std::process::id()));
    /// # let _ = std::fs::remove_file(&path);
    /// # let dlq = agentwire_runtime::dlq::DeadLetterQueue::open(agentwire_runtime::dlq::DlqConfig::new(&path)).unwrap();
    /// assert!(dlq.is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.records == 0
    }

    /// What the sending agent `source` holds in the queue (as of this handle's last look at
    /// the file: another process's replay or purge is seen at the next append).
    ///
    /// ```
    /// # let path = std::env::temp_dir().join(format!("aw-dlq-held-{}.log", std::process::id()));
    /// # let _ = std::fs::remove_file(&path);
    /// # let dlq = agentwire_runtime::dlq::DeadLetterQueue::open(agentwire_runtime::dlq::DlqConfig::new(&path)).unwrap();
    /// assert_eq!(dlq.held_by(7).records, 0);
    /// ```
    pub fn held_by(&self, source: u32) -> SenderUsage {
        self.senders.of(source)
    }

    /// What the agents of `uid` hold in the queue together (as of this handle's last look).
    ///
    /// ```
    /// # let path = std::env::temp_dir().join(format!("aw-dlq-held-uid-{}.log", std::process::id()));
    /// # let _ = std::fs::remove_file(&path);
    /// # let dlq = agentwire_runtime::dlq::DeadLetterQueue::open(agentwire_runtime::dlq::DlqConfig::new(&path)).unwrap();
    /// assert_eq!(dlq.held_by_uid(1000).records, 0);
    /// ```
    pub fn held_by_uid(&self, uid: u32) -> SenderUsage {
        self.senders.of_uid(uid)
    }

    /// File size in bytes.
    ///
    /// ```
    /// # let path = std::env::temp_dir().join(format!("aw-dlq-bytes-{}.log", std::process::id()));
    /// # let _ = std::fs::remove_file(&path);
    /// # let dlq = agentwire_runtime::dlq::DeadLetterQueue::open(agentwire_runtime::dlq::DlqConfig::new(&path)).unwrap();
    /// assert_eq!(dlq.bytes(), 24);
    /// ```
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// The queue file.
    ///
    /// ```
    /// # let path = std::env::temp_dir().join(format!("aw-dlq-path-{}.log", std::process::id()));
    /// # let dlq = agentwire_runtime::dlq::DeadLetterQueue::open(agentwire_runtime::dlq::DlqConfig::new(&path)).unwrap();
    /// assert_eq!(dlq.path(), path.as_path());
    /// ```
    pub fn path(&self) -> &Path {
        &self.config.path
    }

    /// Appends a frame with its reason; returns its sequence number. Refused with
    /// [`DlqError::SenderQuota`] when the frame's sender holds its quota, and with
    /// [`DlqError::Full`] at the queue's bounds: the caller counts it as a drop.
    ///
    /// ```
    /// # let path = std::env::temp_dir().join(format!("aw-dlq-append-{}.log", std::process::id()));
    /// # let _ = std::fs::remove_file(&path);
    /// let mut dlq = agentwire_runtime::dlq::DeadLetterQueue::open(agentwire_runtime::dlq::DlqConfig::new(&path)).unwrap();
    /// assert_eq!(dlq.append(1, b"x").unwrap(), 1);
    /// assert_eq!(dlq.append(1, b"y").unwrap(), 2);
    /// ```
    pub fn append(&mut self, reason: u32, frame: &[u8]) -> Result<u64, DlqError> {
        self.append_with(reason, frame, None, true)
    }

    /// [`DeadLetterQueue::append`] of a frame sent by an agent of `owner_uid`, which is
    /// kept with the record and charged the per-uid quota (see [`crate::dlq_quota`]).
    ///
    /// ```
    /// # let path = std::env::temp_dir().join(format!("aw-dlq-append-from-{}.log", std::process::id()));
    /// # let _ = std::fs::remove_file(&path);
    /// let mut dlq = agentwire_runtime::dlq::DeadLetterQueue::open(agentwire_runtime::dlq::DlqConfig::new(&path)).unwrap();
    /// dlq.append_from(1, b"x", Some(1000)).unwrap();
    /// assert_eq!(dlq.read_all().unwrap()[0].owner_uid, Some(1000));
    /// assert_eq!(dlq.held_by_uid(1000).records, 1);
    /// ```
    pub fn append_from(
        &mut self,
        reason: u32,
        frame: &[u8],
        owner_uid: Option<u32>,
    ) -> Result<u64, DlqError> {
        self.append_with(reason, frame, owner_uid, true)
    }

    /// Like [`DeadLetterQueue::append`] but never waits for the lock: [`DlqError::Busy`]
    /// while another process (`agentwire dlq replay`) holds it. The daemon's router uses
    /// this and retries later, keeping the frame meanwhile.
    ///
    /// ```
    /// # let path = std::env::temp_dir().join(format!("aw-dlq-try-{}.log", std::process::id()));
    /// # let _ = std::fs::remove_file(&path);
    /// let mut dlq = agentwire_runtime::dlq::DeadLetterQueue::open(agentwire_runtime::dlq::DlqConfig::new(&path)).unwrap();
    /// assert_eq!(dlq.try_append(1, b"x").unwrap(), 1);
    /// ```
    pub fn try_append(&mut self, reason: u32, frame: &[u8]) -> Result<u64, DlqError> {
        self.append_with(reason, frame, None, false)
    }

    /// [`DeadLetterQueue::try_append`] of a frame sent by an agent of `owner_uid` (what the
    /// daemon's router uses).
    ///
    /// ```
    /// # let path = std::env::temp_dir().join(format!("aw-dlq-try-from-{}.log", std::process::id()));
    /// # let _ = std::fs::remove_file(&path);
    /// let mut dlq = agentwire_runtime::dlq::DeadLetterQueue::open(agentwire_runtime::dlq::DlqConfig::new(&path)).unwrap();
    /// assert_eq!(dlq.try_append_from(1, b"x", Some(7)).unwrap(), 1);
    /// ```
    pub fn try_append_from(
        &mut self,
        reason: u32,
        frame: &[u8],
        owner_uid: Option<u32>,
    ) -> Result<u64, DlqError> {
        self.append_with(reason, frame, owner_uid, false)
    }

    fn append_with(
        &mut self,
        reason: u32,
        frame: &[u8],
        owner_uid: Option<u32>,
        wait: bool,
    ) -> Result<u64, DlqError> {
        self.locked(wait, |q| q.append_unlocked(reason, frame, owner_uid))
    }

    fn append_unlocked(
        &mut self,
        reason: u32,
        frame: &[u8],
        owner_uid: Option<u32>,
    ) -> Result<u64, DlqError> {
        let max_bytes = agentwire_shm::wire::FRAME_BYTES_MAX;
        if frame.len() > max_bytes {
            return Err(DlqError::FrameTooLarge {
                len_bytes: frame.len(),
                max_bytes,
            });
        }
        let size = RECORD_HEADER_BYTES + frame.len() as u64;
        self.senders
            .check(frame, owner_uid, size, &self.config)
            .map_err(DlqError::SenderQuota)?;
        if self.records >= self.config.records_max || self.bytes + size > self.config.bytes_max {
            return Err(DlqError::Full {
                records: self.records,
                bytes: self.bytes,
                records_max: self.config.records_max,
                bytes_max: self.config.bytes_max,
            });
        }
        let sequence = self.next_sequence;
        let header = record_header(sequence, now_ns(), reason, owner_uid, frame);
        let path = &self.config.path;
        // One write per record keeps a crash between header and body to a torn tail, which
        // recovery cuts off.
        let mut record = Vec::with_capacity(size as usize);
        record.extend_from_slice(header.as_bytes());
        record.extend_from_slice(frame);
        self.file
            .write_all(&record)
            .map_err(io_err("appending to", path))?;
        self.records += 1;
        self.bytes += size;
        self.senders.add(frame, owner_uid, size);
        self.next_sequence += 1;
        Ok(sequence)
    }

    /// Makes every append so far durable (fdatasync).
    ///
    /// ```
    /// # let path = std::env::temp_dir().join(format!("aw-dlq-sync-{}.log", std::process::id()));
    /// # let mut dlq = agentwire_runtime::dlq::DeadLetterQueue::open(agentwire_runtime::dlq::DlqConfig::new(&path)).unwrap();
    /// dlq.sync().unwrap();
    /// ```
    pub fn sync(&mut self) -> Result<(), DlqError> {
        self.file
            .sync_data()
            .map_err(io_err("syncing", &self.config.path))
    }

    /// Reads every record (bounded by the queue's byte limit).
    ///
    /// ```
    /// # let path = std::env::temp_dir().join(format!("aw-dlq-read-{}.log", std::process::id()));
    /// # let _ = std::fs::remove_file(&path);
    /// # let mut dlq = agentwire_runtime::dlq::DeadLetterQueue::open(agentwire_runtime::dlq::DlqConfig::new(&path)).unwrap();
    /// dlq.append(2, b"f").unwrap();
    /// assert_eq!(dlq.read_all().unwrap().len(), 1);
    /// ```
    pub fn read_all(&self) -> Result<Vec<DeadLetter>, DlqError> {
        let path = &self.config.path;
        let mut file = File::open(path).map_err(io_err("opening", path))?;
        file.seek(SeekFrom::Start(FILE_HEADER_BYTES))
            .map_err(io_err("seeking in", path))?;
        let mut reader = BufReader::new(file.take(self.bytes - FILE_HEADER_BYTES));
        let mut out = Vec::with_capacity(self.records as usize);
        while let Next::Record(letter, _) = read_record(
            &mut reader,
            FILE_VERSION,
            agentwire_shm::wire::FRAME_BYTES_MAX,
        )
        .map_err(io_err("reading", path))?
        {
            out.push(letter);
        }
        Ok(out)
    }

    /// Hands records to `deliver` in order until it fails or all are handed off; removes
    /// exactly the handed-off ones (the rest are rewritten to a new file renamed into
    /// place). The lock is not held while `deliver` runs, so a daemon can keep appending
    /// (its records are kept); a crash between a delivery and the removal delivers that
    /// record again on the next drain (at least once). Returns how many were handed off and
    /// the first delivery error, if any.
    ///
    /// ```
    /// use agentwire_runtime::dlq::Handoff;
    /// # let path = std::env::temp_dir().join(format!("aw-dlq-drain-{}.log", std::process::id()));
    /// # let _ = std::fs::remove_file(&path);
    /// # let mut dlq = agentwire_runtime::dlq::DeadLetterQueue::open(agentwire_runtime::dlq::DlqConfig::new(&path)).unwrap();
    /// dlq.append(2, b"a").unwrap();
    /// dlq.append(2, b"b").unwrap();
    /// let (delivered, err) = dlq.drain(|l| if l.frame == b"a" { Ok(Handoff::Next) } else { Err("later") }).unwrap();
    /// assert_eq!((delivered, err), (1, Some("later")));
    /// assert_eq!(dlq.len(), 1);
    /// ```
    pub fn drain<E>(
        &mut self,
        mut deliver: impl FnMut(&DeadLetter) -> Result<Handoff, E>,
    ) -> Result<(u64, Option<E>), DlqError> {
        let letters = self.locked(true, |q| q.read_all())?;
        let mut handed_off = 0usize;
        let mut failure = None;
        for letter in &letters {
            match deliver(letter) {
                Ok(Handoff::Next) => handed_off += 1,
                Ok(Handoff::Stop) => {
                    handed_off += 1;
                    break;
                }
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            }
        }
        if let Some(last) = handed_off.checked_sub(1).map(|i| letters[i].sequence) {
            self.locked(true, |q| {
                let keep: Vec<DeadLetter> = q
                    .read_all()?
                    .into_iter()
                    .filter(|l| l.sequence > last)
                    .collect();
                let first = keep.first().map_or(q.next_sequence, |l| l.sequence);
                q.rewrite(first, &keep)
            })?;
        }
        Ok((handed_off as u64, failure))
    }

    /// Removes every record; returns how many were removed.
    ///
    /// ```
    /// # let path = std::env::temp_dir().join(format!("aw-dlq-purge-{}.log", std::process::id()));
    /// # let _ = std::fs::remove_file(&path);
    /// # let mut dlq = agentwire_runtime::dlq::DeadLetterQueue::open(agentwire_runtime::dlq::DlqConfig::new(&path)).unwrap();
    /// dlq.append(2, b"a").unwrap();
    /// assert_eq!(dlq.purge().unwrap(), 1);
    /// assert!(dlq.is_empty());
    /// ```
    pub fn purge(&mut self) -> Result<u64, DlqError> {
        self.locked(true, |q| {
            let removed = q.records;
            let next = q.next_sequence;
            q.rewrite(next, &[])?;
            Ok(removed)
        })
    }

    /// Replaces the file with `keep` (sequence numbers preserved), via a temporary file and
    /// an atomic rename, so a crash leaves either the old or the new queue.
    fn rewrite(&mut self, first_sequence: u64, keep: &[DeadLetter]) -> Result<(), DlqError> {
        let path = self.config.path.clone();
        let tmp = path.with_extension("rewrite");
        let mut file =
            agentwire_router::dirs::open_private(&tmp, true).map_err(io_err("creating", &tmp))?;
        write_file_header(&mut file, &tmp, first_sequence)?;
        let mut bytes = FILE_HEADER_BYTES;
        let mut senders = SenderUsages::default();
        for letter in keep {
            let header = record_header(
                letter.sequence,
                letter.dead_time_ns,
                letter.reason,
                letter.owner_uid,
                &letter.frame,
            );
            file.write_all(header.as_bytes())
                .map_err(io_err("writing", &tmp))?;
            file.write_all(&letter.frame)
                .map_err(io_err("writing", &tmp))?;
            let size = RECORD_HEADER_BYTES + letter.frame.len() as u64;
            bytes += size;
            senders.add(&letter.frame, letter.owner_uid, size);
        }
        file.sync_all().map_err(io_err("syncing", &tmp))?;
        std::fs::rename(&tmp, &path).map_err(io_err("renaming into place", &path))?;
        if let Some(dir) = path.parent() {
            if let Ok(d) = File::open(dir) {
                let _ = d.sync_all();
            }
        }
        self.file = file;
        self.file
            .seek(SeekFrom::Start(bytes))
            .map_err(io_err("seeking in", &path))?;
        self.records = keep.len() as u64;
        self.bytes = bytes;
        self.senders = senders;
        Ok(())
    }
}

/// What [`DeadLetterQueue::drain`] does after a record was handed off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handoff {
    /// Remove it and go on with the next record.
    Next,
    /// Remove it and stop (e.g. the daemon took it but dead-lettered it again).
    Stop,
}

fn lock_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".lock");
    PathBuf::from(name)
}

/// An exclusive flock on the queue's lock file, released on drop.
struct LockGuard<'a> {
    file: &'a File,
}

impl<'a> LockGuard<'a> {
    fn acquire(file: &'a File, path: &Path, wait: bool) -> Result<Self, DlqError> {
        use rustix::fs::{flock, FlockOperation};
        let op = if wait {
            FlockOperation::LockExclusive
        } else {
            FlockOperation::NonBlockingLockExclusive
        };
        match flock(file, op) {
            Ok(()) => Ok(Self { file }),
            Err(rustix::io::Errno::WOULDBLOCK) => Err(DlqError::Busy {
                path: path.to_path_buf(),
            }),
            Err(e) => Err(DlqError::Io {
                what: "locking",
                path: path.to_path_buf(),
                source: e.into(),
            }),
        }
    }
}

impl Drop for LockGuard<'_> {
    fn drop(&mut self) {
        let _ = rustix::fs::flock(self.file, rustix::fs::FlockOperation::Unlock);
    }
}

impl DeadLetterQueue {
    /// Runs `f` holding the queue's lock (waiting for it, or [`DlqError::Busy`] without
    /// `wait`), on a view re-read if another process replaced or extended the file.
    fn locked<T>(
        &mut self,
        wait: bool,
        f: impl FnOnce(&mut Self) -> Result<T, DlqError>,
    ) -> Result<T, DlqError> {
        let lock = self
            .lock
            .try_clone()
            .map_err(io_err("locking", &self.config.path))?;
        let _held = LockGuard::acquire(&lock, &self.config.path, wait)?;
        self.reload_if_replaced()?;
        f(self)
    }

    /// Another process may have rewritten (drain, purge: a new file renamed into place) or
    /// extended the queue since we last looked: if the file at the path is not the one we
    /// hold, or its length is not what we wrote, read it again. The caller holds the lock.
    fn reload_if_replaced(&mut self) -> Result<(), DlqError> {
        use std::os::unix::fs::MetadataExt;
        let path = &self.config.path;
        let ours = self
            .file
            .metadata()
            .map_err(io_err("reading metadata of", path))?;
        let current = match std::fs::metadata(path) {
            Ok(m) => Some(m),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(io_err("reading metadata of", path)(e)),
        };
        let same = current.is_some_and(|m| {
            m.ino() == ours.ino() && m.dev() == ours.dev() && m.len() == self.bytes
        });
        if !same {
            let lock = self.lock.try_clone().map_err(io_err("locking", path))?;
            let next_sequence = self.next_sequence;
            *self = Self::open_locked(self.config.clone(), lock)?;
            // Sequence numbers are never reused, even if the file was removed by hand.
            self.next_sequence = self.next_sequence.max(next_sequence);
        }
        Ok(())
    }
}
