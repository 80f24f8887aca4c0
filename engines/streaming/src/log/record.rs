//! The record encoding: a fixed 25-byte little-endian header, then the payload.
//!
//! The table and the reason for each field are in the [module doc](super).

/// The first byte of every record: a magic value that also names the record format (v1).
///
/// ```
/// assert_eq!(agentwire_streaming::log::RECORD_MAGIC, 0xA1);
/// ```
pub const RECORD_MAGIC: u8 = 0xA1;

/// Bytes in a record header: magic (1) + CRC (4) + payload length (4) + offset (8) +
/// append time (8).
///
/// ```
/// assert_eq!(agentwire_streaming::log::RECORD_HEADER_BYTES, 25);
/// ```
pub const RECORD_HEADER_BYTES: usize = 25;

/// The checksum covers every byte from here to the end of the payload: the payload length,
/// the offset, the append time and the payload (everything after the checksum field).
const CHECKSUMMED_FROM: usize = 5;

/// A decoded record header; nothing in it is trusted until the checksum matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RecordHeader {
    pub(crate) magic: u8,
    pub(crate) checksum: u32,
    pub(crate) payload_bytes: u32,
    pub(crate) offset: u64,
    pub(crate) append_time_ms: u64,
}

impl RecordHeader {
    /// Header plus payload, in bytes.
    pub(crate) fn record_bytes(&self) -> u64 {
        RECORD_HEADER_BYTES as u64 + u64::from(self.payload_bytes)
    }
}

/// Bytes one record of `payload_bytes` takes on disk.
pub(crate) fn encoded_bytes(payload_bytes: usize) -> usize {
    RECORD_HEADER_BYTES + payload_bytes
}

/// Appends one encoded record to `buf`. Allocates nothing once `buf` has the capacity.
pub(crate) fn encode_into(buf: &mut Vec<u8>, offset: u64, append_time_ms: u64, payload: &[u8]) {
    debug_assert!(
        u32::try_from(payload.len()).is_ok(),
        "validated against record_bytes_max"
    );
    let start = buf.len();
    buf.push(RECORD_MAGIC);
    buf.extend_from_slice(&[0; 4]); // the checksum, patched below once the rest is in place
    buf.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    buf.extend_from_slice(&offset.to_le_bytes());
    buf.extend_from_slice(&append_time_ms.to_le_bytes());
    buf.extend_from_slice(payload);
    let checksum = crc32fast::hash(&buf[start + CHECKSUMMED_FROM..]);
    buf[start + 1..start + CHECKSUMMED_FROM].copy_from_slice(&checksum.to_le_bytes());
}

/// Decodes a header from its first [`RECORD_HEADER_BYTES`] bytes.
pub(crate) fn decode_header(bytes: &[u8]) -> RecordHeader {
    let field = |at: usize, n: usize| &bytes[at..at + n];
    let u32_at = |at| u32::from_le_bytes(field(at, 4).try_into().expect("4 bytes"));
    let u64_at = |at| u64::from_le_bytes(field(at, 8).try_into().expect("8 bytes"));
    RecordHeader {
        magic: bytes[0],
        checksum: u32_at(1),
        payload_bytes: u32_at(5),
        offset: u64_at(9),
        append_time_ms: u64_at(17),
    }
}

/// A running checksum over a record whose payload is read in pieces.
pub(crate) struct Checksum(crc32fast::Hasher);

impl Checksum {
    /// Starts the checksum with the header's checksummed part.
    pub(crate) fn start(header_bytes: &[u8]) -> Self {
        let mut hasher = crc32fast::Hasher::new();
        hasher.update(&header_bytes[CHECKSUMMED_FROM..RECORD_HEADER_BYTES]);
        Self(hasher)
    }

    /// Adds the next piece of payload.
    pub(crate) fn update(&mut self, payload_piece: &[u8]) {
        self.0.update(payload_piece);
    }

    /// The checksum of everything added.
    pub(crate) fn finish(self) -> u32 {
        self.0.finalize()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoded_header_decodes_to_its_fields_and_checksum_covers_the_rest() {
        let mut buf = Vec::new();
        encode_into(&mut buf, 7, 1_700_000_000_000, b"hello");
        assert_eq!(buf.len(), encoded_bytes(5));
        let header = decode_header(&buf);
        assert_eq!(header.magic, RECORD_MAGIC);
        assert_eq!(header.payload_bytes, 5);
        assert_eq!(header.offset, 7);
        assert_eq!(header.append_time_ms, 1_700_000_000_000);
        let mut checksum = Checksum::start(&buf);
        checksum.update(&buf[RECORD_HEADER_BYTES..]);
        assert_eq!(checksum.finish(), header.checksum);
    }
}
