//! Checked payloads for conservation tests across processes: each carries its sequence
//! number, its own length and a byte pattern derived from both, so a reader can tell a
//! lost, duplicated, reordered, torn or corrupted frame from an intact one.
//!
//! ```
//! use agentwire_shm::pattern::{checked_len, fill_checked, read_checked};
//! let mut frame = vec![0u8; checked_len(3)];
//! fill_checked(3, &mut frame);
//! assert_eq!(read_checked(&frame), Ok(3));
//! frame[20] ^= 1;
//! assert!(read_checked(&frame).is_err());
//! ```

/// Bytes before the pattern: the sequence number and the length, little-endian.
pub const CHECKED_PREFIX_BYTES: usize = 16;

/// The length of checked frame number `seq`: 16 to 915 bytes, varying so frames wrap the
/// ring at every offset.
///
/// ```
/// assert!((16..=915).contains(&agentwire_shm::pattern::checked_len(12345)));
/// ```
pub fn checked_len(seq: u64) -> usize {
    CHECKED_PREFIX_BYTES + (seq.wrapping_mul(7919) % 900) as usize
}

/// Fills `out` (at least [`CHECKED_PREFIX_BYTES`] long) as checked frame number `seq`.
///
/// ```
/// let mut out = [0u8; 20];
/// agentwire_shm::pattern::fill_checked(1, &mut out);
/// assert_eq!(out[16], 1);
/// ```
pub fn fill_checked(seq: u64, out: &mut [u8]) {
    let len_bytes = out.len() as u64;
    out[..8].copy_from_slice(&seq.to_le_bytes());
    out[8..16].copy_from_slice(&len_bytes.to_le_bytes());
    for (i, b) in out[CHECKED_PREFIX_BYTES..].iter_mut().enumerate() {
        *b = (seq as usize).wrapping_add(i) as u8;
    }
}

/// The sequence number of an intact checked frame, or what is wrong with it.
///
/// ```
/// assert!(agentwire_shm::pattern::read_checked(&[0u8; 4]).is_err());
/// ```
pub fn read_checked(frame: &[u8]) -> Result<u64, String> {
    if frame.len() < CHECKED_PREFIX_BYTES {
        return Err(format!(
            "{} bytes: shorter than a checked frame",
            frame.len()
        ));
    }
    let seq = u64::from_le_bytes(frame[..8].try_into().expect("8 bytes"));
    let len_bytes = u64::from_le_bytes(frame[8..16].try_into().expect("8 bytes"));
    if len_bytes != frame.len() as u64 {
        return Err(format!(
            "frame {seq}: length field {len_bytes}, frame {} bytes",
            frame.len()
        ));
    }
    match frame[CHECKED_PREFIX_BYTES..]
        .iter()
        .enumerate()
        .find(|&(i, &b)| b != (seq as usize).wrapping_add(i) as u8)
    {
        Some((i, _)) => Err(format!("frame {seq} torn or corrupted at payload byte {i}")),
        None => Ok(seq),
    }
}
