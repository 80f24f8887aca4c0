//! The store on real files in a temporary directory.

use std::path::{Path, PathBuf};

use super::segment::{HEADER_BYTES, RECORD_BYTES};
use super::{Bucket, History, HistoryConfig, Tier};

/// Tiers of 1 s kept 10 s and 10 s kept 60 s; four records per segment.
fn small() -> HistoryConfig {
    HistoryConfig::default()
        .tiers(vec![Tier::new(1000, 10_000), Tier::new(10_000, 60_000)])
        .segment_bytes_max(HEADER_BYTES + 4 * RECORD_BYTES)
}

/// Segment files of `series` at resolution `res`, in order.
fn segments(dir: &Path, series: &str, res: u64) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir.join(series))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            name.starts_with(&format!("r{res}-")) && name.ends_with(".seg")
        })
        .collect();
    files.sort();
    files
}

fn bytes_on_disk(dir: &Path) -> u64 {
    let mut total = 0;
    for series in std::fs::read_dir(dir).unwrap() {
        for f in std::fs::read_dir(series.unwrap().path()).unwrap() {
            total += f.unwrap().metadata().unwrap().len();
        }
    }
    total
}

#[test]
fn retention_drops_old_data() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = History::open(dir.path(), small()).unwrap();
    for s in 0..200u64 {
        h.append("ring.occupancy", s * 1000, s as f64).unwrap();
    }
    // Newest sample at 199 s: tier 0 keeps starts >= 189 s, tier 1 starts >= 139 s.
    let seconds = h.query("ring.occupancy", 0, 0, 1_000_000).unwrap();
    let starts: Vec<u64> = seconds.iter().map(|b| b.start_ms / 1000).collect();
    assert_eq!(starts, (189..200).collect::<Vec<_>>());
    let tens = h.query("ring.occupancy", 1, 0, 1_000_000).unwrap();
    let starts: Vec<u64> = tens.iter().map(|b| b.start_ms / 1000).collect();
    assert_eq!(starts, (14..20).map(|t| t * 10).collect::<Vec<_>>());
    // The files went too: tier 0 holds at most the retained 11 s in 4-record segments.
    let stats = h.stats();
    assert!(stats.segments_dropped_age >= 40, "{stats:?}");
    assert!(segments(dir.path(), "ring.occupancy", 1000).len() <= 4);
    // Aging is by the store's clock: another series moving on ages this one out.
    h.append("other", 1_000_000, 1.0).unwrap();
    h.append("other", 1_001_000, 1.0).unwrap();
    h.enforce_retention().unwrap();
    assert!(h
        .query("ring.occupancy", 0, 0, 2_000_000)
        .unwrap()
        .is_empty());
}

#[test]
fn downsampling_aggregates_are_exact() {
    let dir = tempfile::tempdir().unwrap();
    let config = HistoryConfig::default().tiers(vec![
        Tier::new(1000, 3_600_000),
        Tier::new(60_000, 86_400_000),
    ]);
    let mut h = History::open(dir.path(), config).unwrap();
    // Four samples a second for 5 minutes, values -3..=3 and quarters.
    let value = |i: u64| (i % 7) as f64 - 3.0 + (i % 4) as f64 * 0.25;
    let times: Vec<u64> = (0..4 * 300u64).map(|i| i * 250).collect();
    for (i, t) in times.iter().enumerate() {
        h.append("agent7.frames_out", *t, value(i as u64)).unwrap();
    }
    h.flush().unwrap();
    for (tier, res) in [(0usize, 1000u64), (1, 60_000)] {
        let got = h.query("agent7.frames_out", tier, 0, 300_000).unwrap();
        assert_eq!(got.len() as u64, 300_000 / res);
        for b in &got {
            let in_bucket: Vec<f64> = times
                .iter()
                .enumerate()
                .filter(|(_, t)| **t / res * res == b.start_ms)
                .map(|(i, _)| value(i as u64))
                .collect();
            let expected = Bucket {
                start_ms: b.start_ms,
                count: in_bucket.len() as u32,
                min: in_bucket.iter().copied().fold(f64::INFINITY, f64::min),
                max: in_bucket.iter().copied().fold(f64::NEG_INFINITY, f64::max),
                sum: in_bucket.iter().sum(),
                last: *in_bucket.last().unwrap(),
            };
            assert_eq!(*b, expected, "tier {tier}");
        }
    }
}

#[test]
fn restart_reads_everything_back() {
    let dir = tempfile::tempdir().unwrap();
    let names = ["shard0.frames_in", "shard1.frames_in", "dlq.depth"];
    let before: Vec<Vec<Bucket>> = {
        let mut h = History::open(dir.path(), small()).unwrap();
        for s in 0..37u64 {
            for (k, name) in names.iter().enumerate() {
                h.append(name, s * 1000 + 10 * k as u64, (s * (k as u64 + 1)) as f64)
                    .unwrap();
            }
        }
        let out = names
            .iter()
            .flat_map(|n| [0, 1].map(|t| h.query(n, t, 0, 100_000).unwrap()))
            .collect();
        // Dropping the store writes its open buckets.
        out
    };
    let mut h = History::open(dir.path(), small()).unwrap();
    let after: Vec<Vec<Bucket>> = names
        .iter()
        .flat_map(|n| [0, 1].map(|t| h.query(n, t, 0, 100_000).unwrap()))
        .collect();
    assert_eq!(before, after);
    assert_eq!(h.stats(), Default::default());
    assert_eq!(h.bytes_total(), bytes_on_disk(dir.path()));
    // It goes on where it stopped: the open 30 s bucket of tier 1 takes more samples.
    h.append("dlq.depth", 37_000, 100.0).unwrap();
    h.flush().unwrap();
    let tens = h.query("dlq.depth", 1, 30_000, 40_000).unwrap();
    assert_eq!((tens.len(), tens[0].count, tens[0].last), (1, 8, 100.0));
}

/// A store with series `a` at 0..10 s whose last record is cut 20 bytes in (28 bytes of it
/// lost), as a crash in the middle of a write leaves it.
fn ten_seconds_torn() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut h = History::open(dir.path(), small()).unwrap();
        for s in 0..10u64 {
            h.append("a", s * 1000, s as f64).unwrap();
        }
    }
    let last = segments(dir.path(), "a", 1000).pop().unwrap();
    let len = std::fs::metadata(&last).unwrap().len();
    let file = std::fs::OpenOptions::new().write(true).open(&last).unwrap();
    file.set_len(len - 28).unwrap();
    dir
}

#[test]
fn torn_tail_is_truncated_and_counted() {
    let dir = ten_seconds_torn();
    let mut h = History::open(dir.path(), small()).unwrap();
    let stats = h.stats();
    assert_eq!((stats.torn_segments, stats.torn_bytes), (1, 20));
    let got: Vec<f64> = h
        .query("a", 0, 0, 20_000)
        .unwrap()
        .iter()
        .map(|b| b.last)
        .collect();
    assert_eq!(got, (0..9).map(f64::from).collect::<Vec<_>>());
    // Appends after the repair land on record boundaries and read back.
    h.append("a", 10_000, 10.0).unwrap();
    h.append("a", 11_000, 11.0).unwrap();
    h.flush().unwrap();
    drop(h);
    let h = History::open(dir.path(), small()).unwrap();
    assert_eq!(h.stats().torn_segments, 0);
    let got: Vec<f64> = h
        .query("a", 0, 0, 20_000)
        .unwrap()
        .iter()
        .map(|b| b.last)
        .collect();
    // The clock is at 11 s and tier 0 keeps 10 s: second 0 has aged out.
    assert_eq!(got, [1, 2, 3, 4, 5, 6, 7, 8, 10, 11].map(f64::from));
}

#[test]
fn flipped_byte_loses_only_its_record() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut h = History::open(dir.path(), small()).unwrap();
        for s in 0..10u64 {
            h.append("a", s * 1000, s as f64).unwrap();
        }
    }
    // The second segment holds seconds 4..8; flip a byte inside second 5's record.
    let second = segments(dir.path(), "a", 1000)[1].clone();
    let mut bytes = std::fs::read(&second).unwrap();
    bytes[(HEADER_BYTES + RECORD_BYTES + 17) as usize] ^= 0x40;
    std::fs::write(&second, &bytes).unwrap();
    let h = History::open(dir.path(), small()).unwrap();
    assert_eq!(h.stats().corrupt_records, 1);
    let got: Vec<f64> = h
        .query("a", 0, 0, 20_000)
        .unwrap()
        .iter()
        .map(|b| b.last)
        .collect();
    assert_eq!(got, [0, 1, 2, 3, 4, 6, 7, 8, 9].map(f64::from));
}

#[test]
fn corruption_after_open_is_never_returned() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = History::open(dir.path(), small()).unwrap();
    for s in 0..6u64 {
        h.append("a", s * 1000, s as f64).unwrap();
    }
    let first = segments(dir.path(), "a", 1000)[0].clone();
    let mut bytes = std::fs::read(&first).unwrap();
    bytes[(HEADER_BYTES + 2 * RECORD_BYTES + 3) as usize] ^= 1;
    std::fs::write(&first, &bytes).unwrap();
    let got: Vec<f64> = h
        .query("a", 0, 0, 20_000)
        .unwrap()
        .iter()
        .map(|b| b.last)
        .collect();
    assert_eq!(got, [0, 1, 3, 4, 5].map(f64::from));
}

#[test]
fn size_bound_holds_and_drops_the_oldest_first() {
    let dir = tempfile::tempdir().unwrap();
    let segment_bytes = HEADER_BYTES + 8 * RECORD_BYTES;
    let config = HistoryConfig::default()
        .tiers(vec![Tier::new(1000, 1 << 40), Tier::new(10_000, 1 << 40)])
        .segment_bytes_max(segment_bytes)
        .bytes_max(6 * segment_bytes);
    let mut h = History::open(dir.path(), config.clone()).unwrap();
    for s in 0..500u64 {
        for name in ["a", "b"] {
            h.append(name, s * 1000, s as f64).unwrap();
            assert!(h.bytes_total() <= 6 * segment_bytes);
        }
        assert_eq!(h.bytes_total(), bytes_on_disk(dir.path()));
    }
    let stats = h.stats();
    assert!(stats.segments_dropped_size > 0 && stats.bytes_dropped_size > 0);
    // Their records are counted (a dropped segment may be one still being written).
    assert!(stats.records_dropped_size > 0);
    assert!(stats.records_dropped_size <= stats.segments_dropped_size * 8);
    // The newest data is there, the oldest gone.
    let a = h.query("a", 0, 0, 1_000_000).unwrap();
    assert!(!a.is_empty() && a.last().unwrap().start_ms == 499_000);
    assert!(a[0].start_ms > 0);
    drop(h);
    // A smaller bound applies at open.
    let h = History::open(dir.path(), config.bytes_max(2 * segment_bytes)).unwrap();
    assert!(h.bytes_total() <= 2 * segment_bytes);
    assert_eq!(h.bytes_total(), bytes_on_disk(dir.path()));
}

#[test]
fn bad_files_are_removed_or_ignored_never_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut h = History::open(dir.path(), small()).unwrap();
        h.append("a", 0, 1.0).unwrap();
    }
    let series = dir.path().join("a");
    // An empty segment (a crash before the header), garbage, a header of another
    // resolution, a tier no longer configured, a stranger's file, a bad directory name.
    std::fs::write(series.join("r1000-0000000007.seg"), b"").unwrap();
    std::fs::write(series.join("r1000-0000000008.seg"), [0xa5u8; 1000]).unwrap();
    std::fs::write(
        series.join("r1000-0000000009.seg"),
        super::segment::encode_header(2000),
    )
    .unwrap();
    std::fs::write(series.join("r5000-0000000001.seg"), b"x").unwrap();
    std::fs::write(series.join("notes.txt"), b"hello").unwrap();
    std::fs::create_dir(dir.path().join(".hidden")).unwrap();
    std::fs::create_dir(series.join("r1000-0000000010.seg")).unwrap();
    let h = History::open(dir.path(), small()).unwrap();
    let stats = h.stats();
    assert_eq!(stats.bad_segments_removed, 3);
    assert_eq!(stats.orphan_segments_removed, 1);
    assert!(series.join("notes.txt").exists());
    assert_eq!(h.query("a", 0, 0, 10_000).unwrap().len(), 1);
    assert_eq!(h.series().collect::<Vec<_>>(), ["a"]);
}

#[test]
fn bounds_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = History::open(dir.path(), small().series_max(1).query_points_max(100)).unwrap();
    h.append("a", 0, 1.0).unwrap();
    assert!(matches!(
        h.append("b", 0, 1.0),
        Err(super::AppendError::TooManySeries { max: 1, .. })
    ));
    assert!(matches!(
        h.query("a", 0, 0, 101_000),
        Err(super::QueryError::RangeTooLarge {
            points: 101,
            max: 100
        })
    ));
    for bad in [
        small().segment_bytes_max(10),
        small().bytes_max(10),
        small().tiers(vec![Tier::new(1000, 10_000), Tier::new(1000, 20_000)]),
        small().tiers(vec![Tier::new(0, 10)]),
    ] {
        assert!(History::open(dir.path(), bad).is_err());
    }
}

/// Every file under `dir` with its bytes, sorted.
fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    for series in std::fs::read_dir(dir).unwrap() {
        for f in std::fs::read_dir(series.unwrap().path()).unwrap() {
            let p = f.unwrap().path();
            let bytes = std::fs::read(&p).unwrap();
            out.push((p, bytes));
        }
    }
    out.sort();
    out
}

#[test]
fn read_only_changes_nothing_and_skips_what_it_cannot_trust() {
    // A writer in the middle of a record, a segment of a tier nobody has, a bad header.
    let dir = ten_seconds_torn();
    std::fs::write(dir.path().join("a").join("r5000-0.seg"), [0u8; 80]).unwrap();
    std::fs::write(dir.path().join("a").join("r1000-99.seg"), [7u8; 80]).unwrap();
    let before = snapshot(dir.path());

    let mut h = History::open_read_only(dir.path(), small()).unwrap();
    let got: Vec<f64> = h
        .query("a", 0, 0, 20_000)
        .unwrap()
        .iter()
        .map(|b| b.last)
        .collect();
    assert_eq!(got, (0..9).map(f64::from).collect::<Vec<_>>());
    assert_eq!(h.stats(), Default::default(), "nothing repaired or removed");
    assert!(matches!(
        h.append("a", 20_000, 1.0),
        Err(super::AppendError::ReadOnly)
    ));
    assert!(matches!(h.flush(), Err(super::AppendError::ReadOnly)));
    drop(h);
    assert_eq!(snapshot(dir.path()), before, "not a byte changed");

    // A store that is not there is an error, and is not created.
    let missing = dir.path().join("missing");
    assert!(History::open_read_only(&missing, small()).is_err());
    assert!(!missing.exists());
}

#[test]
fn read_only_reads_on_while_the_writer_retires_segments() {
    let dir = tempfile::tempdir().unwrap();
    let mut writer = History::open(dir.path(), small()).unwrap();
    for s in 0..10u64 {
        writer.append("a", s * 1000, s as f64).unwrap();
    }
    writer.flush().unwrap();
    let reader = History::open_read_only(dir.path(), small()).unwrap();
    let known = reader.query("a", 0, 0, 20_000).unwrap();
    assert_eq!(known.len(), 10);
    // The writer moves on 100 s: retention deletes every segment the reader knows.
    for s in 100..110u64 {
        writer.append("a", s * 1000, s as f64).unwrap();
    }
    writer.flush().unwrap();
    assert!(writer.stats().segments_dropped_age > 0);
    // The retired segments read as empty, not as an error: what is left is the segment the
    // writer still appends to (8 s and 9 s, then 100 s on).
    let left = reader.query("a", 0, 0, 20_000).unwrap();
    assert_eq!(left, known[8..]);
    // A fresh reader sees the writer's present.
    let fresh = History::open_read_only(dir.path(), small()).unwrap();
    let got = fresh.query("a", 0, 100_000, 120_000).unwrap();
    assert_eq!(got.len(), 10);
}
