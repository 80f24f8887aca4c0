//! Walking the records of one segment file through one bounded read buffer.
//!
//! Every record read, by a reader or by recovery, goes through [`next_record`], so the checks
//! that keep a bad record from being served are written once.

use std::io;

use super::error::RecordDefect;
use super::file_io::SegmentFile;
use super::record::{decode_header, Checksum, RecordHeader, RECORD_HEADER_BYTES, RECORD_MAGIC};

/// The log's one read buffer: a window `[file_position, file_position + len)` of one segment
/// file. Its size is fixed at `read_buffer_bytes` and allocated once, when the log opens.
pub(crate) struct ReadBuffer {
    bytes: Vec<u8>,
    file_position: u64,
    len: usize,
}

impl ReadBuffer {
    pub(crate) fn new(capacity_bytes: usize) -> Self {
        Self {
            bytes: vec![0; capacity_bytes],
            file_position: 0,
            len: 0,
        }
    }

    pub(crate) fn capacity_bytes(&self) -> usize {
        self.bytes.len()
    }

    /// Forgets the window: call it before reading another file, or a file that was cut.
    pub(crate) fn invalidate(&mut self) {
        self.len = 0;
    }

    /// Makes `[position, position + want_bytes)` resident, reading as much of the file ahead
    /// as fits (never past `end_position`). The caller checked that the bytes exist and that
    /// `want_bytes` fits the buffer.
    fn make_resident(
        &mut self,
        file: &SegmentFile,
        position: u64,
        want_bytes: usize,
        end_position: u64,
    ) -> io::Result<()> {
        debug_assert!(want_bytes <= self.bytes.len());
        debug_assert!(position + want_bytes as u64 <= end_position);
        let window_end = self.file_position + self.len as u64;
        if position >= self.file_position && position + want_bytes as u64 <= window_end {
            return Ok(());
        }
        let fill_bytes = (end_position - position).min(self.bytes.len() as u64) as usize;
        self.len = 0; // a failed read leaves no stale window behind
        file.read_exact_at(&mut self.bytes[..fill_bytes], position)?;
        self.file_position = position;
        self.len = fill_bytes;
        Ok(())
    }

    fn resident(&self, position: u64, n_bytes: usize) -> &[u8] {
        let at = (position - self.file_position) as usize;
        &self.bytes[at..at + n_bytes]
    }

    /// The payload of a record [`next_record`] returned, or `None` when the record is larger
    /// than the buffer.
    pub(crate) fn payload(
        &mut self,
        file: &SegmentFile,
        found: &Found,
        end_position: u64,
    ) -> io::Result<Option<&[u8]>> {
        let record_bytes = found.header.record_bytes();
        if record_bytes > self.bytes.len() as u64 {
            return Ok(None);
        }
        self.make_resident(file, found.position, record_bytes as usize, end_position)?;
        let payload_position = found.position + RECORD_HEADER_BYTES as u64;
        Ok(Some(self.resident(
            payload_position,
            found.header.payload_bytes as usize,
        )))
    }
}

/// How much of a record to check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Check {
    /// Magic, length and offset only: for records a reader skips on its way to the offset it
    /// wants. They are never served, and a header that lies is caught by the next header's
    /// magic and offset (or by the checksum of the first record served).
    HeaderOnly,
    /// Everything, checksum included: for every record served or kept by recovery.
    Full,
}

/// A record that passed its checks, at `position` in its segment.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Found {
    pub(crate) header: RecordHeader,
    pub(crate) position: u64,
}

impl Found {
    pub(crate) fn next_position(&self) -> u64 {
        self.position + self.header.record_bytes()
    }
}

/// What [`next_record`] found at a position.
pub(crate) enum Next {
    /// A good record with the expected offset.
    Record(Found),
    /// An intact record (checksum matches under [`Check::Full`]) with another offset.
    Misplaced(Found),
    /// A record that failed a check.
    Defect(RecordDefect),
}

/// Checks the record at `position` of a segment whose valid bytes end at `end_position`
/// (`position < end_position`), expecting offset `expected_offset`.
pub(crate) fn next_record(
    buf: &mut ReadBuffer,
    file: &SegmentFile,
    position: u64,
    end_position: u64,
    expected_offset: u64,
    check: Check,
) -> io::Result<Next> {
    debug_assert!(position < end_position);
    let remaining_bytes = end_position - position;
    if remaining_bytes < RECORD_HEADER_BYTES as u64 {
        return Ok(Next::Defect(RecordDefect::ShortHeader));
    }
    buf.make_resident(file, position, RECORD_HEADER_BYTES, end_position)?;
    let header_bytes: [u8; RECORD_HEADER_BYTES] = buf
        .resident(position, RECORD_HEADER_BYTES)
        .try_into()
        .expect("header length");
    let header = decode_header(&header_bytes);
    if header.magic != RECORD_MAGIC {
        return Ok(Next::Defect(RecordDefect::BadMagic));
    }
    if header.record_bytes() > remaining_bytes {
        return Ok(Next::Defect(RecordDefect::ShortPayload));
    }
    let found = Found { header, position };
    if check == Check::Full
        && checksum_of(buf, file, &found, &header_bytes, end_position)? != header.checksum
    {
        return Ok(Next::Defect(RecordDefect::BadChecksum));
    }
    if header.offset != expected_offset {
        return Ok(Next::Misplaced(found));
    }
    Ok(Next::Record(found))
}

/// The checksum of a record as stored; a record larger than the buffer is streamed through it
/// in pieces, so recovery never needs more memory than `read_buffer_bytes`.
fn checksum_of(
    buf: &mut ReadBuffer,
    file: &SegmentFile,
    found: &Found,
    header_bytes: &[u8; RECORD_HEADER_BYTES],
    end_position: u64,
) -> io::Result<u32> {
    let mut checksum = Checksum::start(header_bytes);
    let record_bytes = found.header.record_bytes();
    if record_bytes <= buf.capacity_bytes() as u64 {
        buf.make_resident(file, found.position, record_bytes as usize, end_position)?;
        let payload_position = found.position + RECORD_HEADER_BYTES as u64;
        checksum.update(buf.resident(payload_position, found.header.payload_bytes as usize));
        return Ok(checksum.finish());
    }
    let mut at = found.position + RECORD_HEADER_BYTES as u64;
    let stop = found.position + record_bytes;
    buf.invalidate();
    while at < stop {
        let piece_bytes = (stop - at).min(buf.capacity_bytes() as u64) as usize;
        file.read_exact_at(&mut buf.bytes[..piece_bytes], at)?;
        checksum.update(&buf.bytes[..piece_bytes]);
        at += piece_bytes as u64;
    }
    Ok(checksum.finish())
}
