//! The segment file format: a 32-byte header, then fixed-size 48-byte records, each with its
//! own checksum (CRC-32, IEEE polynomial, as `crc32fast` computes it).
//!
//! Header (little-endian): magic `AWTH` (4 bytes), version `u16` = 1, record size `u16` = 48,
//! the tier's resolution in ms `u64`, 12 reserved zero bytes, CRC-32 of the first 28 bytes
//! `u32`. Record: bucket start ms `u64`, count `u32`, min, max, sum, last (`f64` each), CRC-32
//! of the first 44 bytes `u32`. Fixed-size records make recovery simple: a torn tail is the
//! remainder of the length after the header modulo 48, and a corrupt record is skipped by
//! moving to the next 48-byte slot.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;

use super::Bucket;

/// The header's size in bytes.
pub(crate) const HEADER_BYTES: u64 = 32;
/// One record's size in bytes.
pub(crate) const RECORD_BYTES: u64 = 48;
const MAGIC: [u8; 4] = *b"AWTH";
const VERSION: u16 = 1;
/// Read buffer for scans and queries: bounded, independent of the file's size.
const READ_BUFFER_BYTES: usize = 64 * 1024;

/// The header of a segment of a tier with `resolution_ms`.
pub(crate) fn encode_header(resolution_ms: u64) -> [u8; HEADER_BYTES as usize] {
    let mut b = [0u8; HEADER_BYTES as usize];
    b[0..4].copy_from_slice(&MAGIC);
    b[4..6].copy_from_slice(&VERSION.to_le_bytes());
    b[6..8].copy_from_slice(&(RECORD_BYTES as u16).to_le_bytes());
    b[8..16].copy_from_slice(&resolution_ms.to_le_bytes());
    let crc = crc32fast::hash(&b[..28]);
    b[28..32].copy_from_slice(&crc.to_le_bytes());
    b
}

/// Whether `b` is a valid header for a tier with `resolution_ms`.
pub(crate) fn header_is_valid(b: &[u8; HEADER_BYTES as usize], resolution_ms: u64) -> bool {
    *b == encode_header(resolution_ms)
}

/// A bucket as a record.
pub(crate) fn encode_record(bucket: &Bucket) -> [u8; RECORD_BYTES as usize] {
    let mut b = [0u8; RECORD_BYTES as usize];
    b[0..8].copy_from_slice(&bucket.start_ms.to_le_bytes());
    b[8..12].copy_from_slice(&bucket.count.to_le_bytes());
    for (i, v) in [bucket.min, bucket.max, bucket.sum, bucket.last]
        .iter()
        .enumerate()
    {
        b[12 + 8 * i..20 + 8 * i].copy_from_slice(&v.to_le_bytes());
    }
    let crc = crc32fast::hash(&b[..44]);
    b[44..48].copy_from_slice(&crc.to_le_bytes());
    b
}

/// The bucket in a record, or `None` when its checksum fails or its fields are impossible
/// (a zero count, a value that is not finite, min above max).
pub(crate) fn decode_record(b: &[u8; RECORD_BYTES as usize]) -> Option<Bucket> {
    let word = |at: usize| u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"));
    let crc = u32::from_le_bytes(b[44..48].try_into().expect("4 bytes"));
    if crc32fast::hash(&b[..44]) != crc {
        return None;
    }
    let bucket = Bucket {
        start_ms: word(0),
        count: u32::from_le_bytes(b[8..12].try_into().expect("4 bytes")),
        min: f64::from_bits(word(12)),
        max: f64::from_bits(word(20)),
        sum: f64::from_bits(word(28)),
        last: f64::from_bits(word(36)),
    };
    let finite = [bucket.min, bucket.max, bucket.sum, bucket.last]
        .iter()
        .all(|v| v.is_finite());
    (bucket.count > 0 && finite && bucket.min <= bucket.max).then_some(bucket)
}

/// What a scan of a segment found.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Scan {
    /// The first valid record's bucket start.
    pub first_ms: Option<u64>,
    /// The last valid record's bucket start.
    pub last_ms: Option<u64>,
    /// Whole record slots (valid or not).
    pub records: u64,
    /// Slots whose record failed its checksum or checks.
    pub corrupt: u64,
    /// Bytes after the last whole record (a torn write).
    pub torn_bytes: u64,
}

/// Scans the segment at `path`: `Ok(None)` when its header is missing, torn or wrong.
pub(crate) fn scan(path: &Path, resolution_ms: u64) -> std::io::Result<Option<Scan>> {
    let file = File::open(path)?;
    let len = file.metadata()?.len();
    let mut reader = BufReader::with_capacity(READ_BUFFER_BYTES, file);
    let mut header = [0u8; HEADER_BYTES as usize];
    if len < HEADER_BYTES {
        return Ok(None);
    }
    reader.read_exact(&mut header)?;
    if !header_is_valid(&header, resolution_ms) {
        return Ok(None);
    }
    let body = len - HEADER_BYTES;
    let mut scan = Scan {
        records: body / RECORD_BYTES,
        torn_bytes: body % RECORD_BYTES,
        ..Scan::default()
    };
    let mut record = [0u8; RECORD_BYTES as usize];
    for _ in 0..scan.records {
        reader.read_exact(&mut record)?;
        match decode_record(&record) {
            Some(b) => {
                scan.first_ms.get_or_insert(b.start_ms);
                scan.last_ms = Some(b.start_ms);
            }
            None => scan.corrupt += 1,
        }
    }
    Ok(Some(scan))
}

/// Calls `visit` with every valid record of the segment at `path` (its header already
/// checked at open), in file order. Stops early when `visit` returns false.
pub(crate) fn read(path: &Path, mut visit: impl FnMut(Bucket) -> bool) -> std::io::Result<()> {
    let file = File::open(path)?;
    let len = file.metadata()?.len();
    let mut reader = BufReader::with_capacity(READ_BUFFER_BYTES, file);
    let mut header = [0u8; HEADER_BYTES as usize];
    if len < HEADER_BYTES {
        return Ok(());
    }
    reader.read_exact(&mut header)?;
    let mut record = [0u8; RECORD_BYTES as usize];
    for _ in 0..(len - HEADER_BYTES) / RECORD_BYTES {
        reader.read_exact(&mut record)?;
        if let Some(b) = decode_record(&record) {
            if !visit(b) {
                break;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_round_trips_and_any_flipped_bit_is_caught() {
        let b = Bucket {
            start_ms: 60_000,
            count: 3,
            min: -1.5,
            max: 7.0,
            sum: 9.25,
            last: 2.0,
        };
        let bytes = encode_record(&b);
        assert_eq!(decode_record(&bytes), Some(b));
        for bit in 0..RECORD_BYTES as usize * 8 {
            let mut bad = bytes;
            bad[bit / 8] ^= 1 << (bit % 8);
            assert_eq!(decode_record(&bad), None, "bit {bit}");
        }
    }

    #[test]
    fn header_names_its_resolution() {
        let h = encode_header(1000);
        assert!(header_is_valid(&h, 1000));
        assert!(!header_is_valid(&h, 60_000));
        let mut bad = h;
        bad[10] ^= 4;
        assert!(!header_is_valid(&bad, 1000));
    }
}
