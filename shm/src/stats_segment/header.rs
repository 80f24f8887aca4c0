//! The shared header's fields loaded once, their checksum, and the checks a reader makes
//! before it trusts any of them.

use super::*;

/// The header's fields after the magic, each loaded once from shared memory.
pub(super) struct HeaderFields {
    layout_version: u32,
    header_bytes: u32,
    segment_bytes: u64,
    slot_count: u32,
    counters_per_slot: u32,
    slot_bytes: u32,
    slots_offset: u32,
    creator_pid: u32,
    reserved0: u32,
    header_checksum: u64,
}

impl HeaderFields {
    pub(super) fn load(h: &StatsHeader) -> Self {
        let r = Ordering::Relaxed;
        Self {
            layout_version: h.layout_version.load(r),
            header_bytes: h.header_bytes.load(r),
            segment_bytes: h.segment_bytes.load(r),
            slot_count: h.slot_count.load(r),
            counters_per_slot: h.counters_per_slot.load(r),
            slot_bytes: h.slot_bytes.load(r),
            slots_offset: h.slots_offset.load(r),
            creator_pid: h.creator_pid.load(r),
            reserved0: h.reserved0.load(r),
            header_checksum: h.header_checksum.load(r),
        }
    }
}

/// FNV-1a 64 over header bytes 8..48 in layout order. Every step is a bijection of the
/// running hash, so any change confined to one byte changes the result.
pub(super) fn header_checksum(f: &HeaderFields) -> u64 {
    let mut hash = 0xcbf2_9ce4_8422_2325u64;
    let mut eat = |bytes: &[u8]| {
        for b in bytes {
            hash = (hash ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3);
        }
    };
    eat(&f.layout_version.to_le_bytes());
    eat(&f.header_bytes.to_le_bytes());
    eat(&f.segment_bytes.to_le_bytes());
    eat(&f.slot_count.to_le_bytes());
    eat(&f.counters_per_slot.to_le_bytes());
    eat(&f.slot_bytes.to_le_bytes());
    eat(&f.slots_offset.to_le_bytes());
    eat(&f.creator_pid.to_le_bytes());
    eat(&f.reserved0.to_le_bytes());
    hash
}

/// Checks a received header against the file's size and this build's rules; each shared
/// field is loaded once into a local and only the locals are used. Fields are checked one by
/// one first (so an error names the field), the checksum last.
pub(super) fn checked_layout(
    h: &StatsHeader,
    file_bytes: u64,
) -> Result<(StatsLayout, u32), StatsSegmentError> {
    let magic = h.magic.load(Ordering::Relaxed);
    // SYNC POINT: magic (a relaxed load and an acquire fence, not an acquire load: the
    // mapping is read-only, where only relaxed atomic loads are guaranteed to work).
    fence(Ordering::Acquire);
    if magic != STATS_MAGIC {
        return Err(StatsSegmentError::BadMagic { found: magic });
    }
    let f = HeaderFields::load(h);
    if f.layout_version != STATS_LAYOUT_VERSION {
        return Err(StatsSegmentError::VersionMismatch {
            found: f.layout_version,
        });
    }
    let check = |field, expected: u64, found: u64| {
        if expected == found {
            Ok(())
        } else {
            Err(StatsSegmentError::LayoutMismatch {
                field,
                expected,
                found,
            })
        }
    };
    check(
        "header_bytes",
        size_of::<StatsHeader>() as u64,
        f.header_bytes.into(),
    )?;
    let layout = StatsLayout::new(f.slot_count, f.counters_per_slot);
    layout.validate()?;
    check(
        "slot_bytes",
        layout.slot_bytes() as u64,
        f.slot_bytes.into(),
    )?;
    check(
        "slots_offset",
        STATS_SLOTS_OFFSET as u64,
        f.slots_offset.into(),
    )?;
    let expected_bytes = layout.segment_bytes() as u64;
    check("segment_bytes", expected_bytes, f.segment_bytes)?;
    if file_bytes < expected_bytes {
        return Err(StatsSegmentError::TooShort {
            expected_bytes,
            found_bytes: file_bytes,
        });
    }
    check("file size", expected_bytes, file_bytes)?;
    check("header_checksum", header_checksum(&f), f.header_checksum)?;
    Ok((layout, f.creator_pid))
}
