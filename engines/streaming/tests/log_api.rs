//! The log's API on real files: round trips across partitions, segment rolls and reopens,
//! retention by size and age, config validation, size limits, fsync counts per policy, and a
//! property test of random batches and reopen points.

// One module, so `cargo test -p agentwire-streaming log` selects these tests by name.
mod log_api {
    use std::fs;
    use std::path::Path;

    use agentwire_streaming::log::{
        ConfigError, FsyncPolicy, Log, LogConfig, LogError, RECORD_HEADER_BYTES,
    };
    use proptest::prelude::*;

    type Record = (u64, u64, Vec<u8>);

    fn small_config(dir: &Path, partition_count: u32, fsync: FsyncPolicy) -> LogConfig {
        LogConfig {
            partition_count,
            segment_bytes_max: 256,
            record_bytes_max: 64,
            batch_bytes_max: 256,
            read_buffer_bytes: 128,
            fsync,
            ..LogConfig::new(dir)
        }
    }

    fn read_range(log: &mut Log, partition: u32, from_offset: u64) -> Vec<Record> {
        let mut seen = Vec::new();
        let mut offset = from_offset;
        loop {
            let mut visit = |o: u64, t: u64, p: &[u8]| seen.push((o, t, p.to_vec()));
            let outcome = log.read(partition, offset, 4, &mut visit).unwrap();
            if outcome.records_visited == 0 {
                assert_eq!(outcome.next_offset, log.end_offset(partition).unwrap());
                return seen;
            }
            offset = outcome.next_offset;
        }
    }

    fn segment_count(dir: &Path, partition: u32) -> usize {
        fs::read_dir(dir.join(partition.to_string()))
            .unwrap()
            .count()
    }

    /// Appends `batch_count` batches of `1 + i % 4` records of 20 bytes to `partition`, time
    /// `time_ms + i`; returns what was appended.
    fn append_batches(
        log: &mut Log,
        partition: u32,
        batch_count: u64,
        time_ms: u64,
    ) -> Vec<Record> {
        let mut written = Vec::new();
        for i in 0..batch_count {
            let start = log.end_offset(partition).unwrap();
            let payloads: Vec<Vec<u8>> = (0..1 + i % 4)
                .map(|j| format!("p{partition}-o{:016}", start + j).into_bytes())
                .collect();
            let refs: Vec<&[u8]> = payloads.iter().map(Vec::as_slice).collect();
            let range = log.append_batch_at(partition, &refs, time_ms + i).unwrap();
            assert_eq!((range.start, range.count()), (start, payloads.len() as u64));
            written.extend(
                (range.start..)
                    .zip(payloads)
                    .map(|(o, p)| (o, time_ms + i, p)),
            );
        }
        written
    }

    #[test]
    fn round_trip_across_partitions_and_rolls_and_offsets_continue_after_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let config = small_config(dir.path(), 3, FsyncPolicy::EveryBatch);
        let mut written: Vec<Vec<Record>> = vec![Vec::new(); 3];
        {
            let (mut log, report) = Log::open(config.clone()).unwrap();
            assert_eq!(report.bytes_truncated_total(), 0);
            for partition in 0..3 {
                written[partition as usize] =
                    append_batches(&mut log, partition, 10 + partition as u64 * 5, 100);
            }
            assert!(log.stats().segments_rolled >= 6);
            for partition in 0..3 {
                assert!(segment_count(dir.path(), partition) >= 2);
                assert_eq!(
                    read_range(&mut log, partition, 0),
                    written[partition as usize]
                );
            }
        }
        let (mut log, report) = Log::open(config).unwrap();
        assert_eq!(report.bytes_truncated_total(), 0);
        for partition in 0..3u32 {
            let ours = &mut written[partition as usize];
            assert_eq!(
                report.partitions[partition as usize].next_offset,
                ours.len() as u64
            );
            assert_eq!(log.end_offset(partition).unwrap(), ours.len() as u64);
            ours.extend(append_batches(&mut log, partition, 6, 500));
            assert_eq!(read_range(&mut log, partition, 0), *ours);
            // A read from the middle of a segment, and one at the end.
            let middle = ours.len() as u64 / 2;
            assert_eq!(
                read_range(&mut log, partition, middle),
                ours[middle as usize..]
            );
            assert!(read_range(&mut log, partition, ours.len() as u64).is_empty());
        }
        let above = log.read(0, 1_000, 1, &mut |_, _, _: &[u8]| {});
        assert!(matches!(
            above,
            Err(LogError::OffsetAboveEnd { offset: 1_000, .. })
        ));
    }

    #[test]
    fn no_segment_passes_segment_bytes_max_and_a_batch_never_straddles_two() {
        let dir = tempfile::tempdir().unwrap();
        let config = small_config(dir.path(), 1, FsyncPolicy::Never);
        let (mut log, _) = Log::open(config.clone()).unwrap();
        append_batches(&mut log, 0, 40, 0);
        for entry in fs::read_dir(dir.path().join("0")).unwrap() {
            let len = entry.unwrap().metadata().unwrap().len();
            assert!(len <= config.segment_bytes_max, "segment of {len} bytes");
        }
    }

    #[test]
    fn retention_by_size_deletes_oldest_sealed_segments_and_moves_the_start_offset() {
        let dir = tempfile::tempdir().unwrap();
        let config = LogConfig {
            retention_bytes_max: 600,
            ..small_config(dir.path(), 1, FsyncPolicy::Never)
        };
        let (mut log, _) = Log::open(config).unwrap();
        let written = append_batches(&mut log, 0, 40, 0);
        let segments_before = segment_count(dir.path(), 0);
        let deleted = log.enforce_retention(0).unwrap();
        assert!(deleted > 0);
        assert_eq!(
            segment_count(dir.path(), 0),
            segments_before - deleted as usize
        );
        assert_eq!(log.stats().segments_deleted, deleted);
        assert!(log.stored_bytes(0).unwrap() <= 600);
        // Deleting one more segment would have been unnecessary: the bound is not undershot by
        // more than a segment.
        assert!(log.stored_bytes(0).unwrap() + 256 > 600);
        let start = log.start_offset(0).unwrap();
        assert!(start > 0);
        let below = log.read(0, start - 1, 1, &mut |_, _, _: &[u8]| {});
        assert!(matches!(
            below,
            Err(LogError::OffsetBelowStart { partition: 0, offset, start_offset }) if offset == start - 1 && start_offset == start
        ));
        assert_eq!(read_range(&mut log, 0, start), written[start as usize..]);
        assert_eq!(
            log.enforce_retention(0).unwrap(),
            0,
            "already within bounds"
        );
    }

    #[test]
    fn retention_by_age_deletes_segments_whose_newest_record_is_older_than_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let config = LogConfig {
            retention_age_ms: 10_000,
            ..small_config(dir.path(), 2, FsyncPolicy::Never)
        };
        let (mut log, _) = Log::open(config.clone()).unwrap();
        let old = append_batches(&mut log, 0, 12, 1_000); // times 1_000..1_012
        let young = append_batches(&mut log, 0, 12, 50_000); // times 50_000..50_012
        append_batches(&mut log, 1, 12, 1_000);
        drop(log);

        // Reopened, so the sealed segments' newest times are learned by scanning them.
        let (mut log, _) = Log::open(config).unwrap();
        assert_eq!(
            log.enforce_retention(11_000).unwrap(),
            0,
            "nothing older than 10 s yet"
        );
        let deleted = log.enforce_retention(40_000).unwrap();
        assert!(deleted > 0);
        let start = log.start_offset(0).unwrap();
        let remaining = read_range(&mut log, 0, start);
        // Every segment holding only old records is gone; the one where young records begin
        // (which may also hold old ones) stays.
        assert!(remaining.iter().all(|(o, _, _)| *o >= start));
        assert!(remaining.ends_with(&young));
        assert!(remaining.len() < old.len() + young.len());
        // Partition 1 keeps its active segment, which retention never deletes.
        assert_eq!(segment_count(dir.path(), 1), 1);
        assert!(log.end_offset(1).unwrap() > log.start_offset(1).unwrap());
        let sealed_count = segment_count(dir.path(), 0) as u64 - 1;
        assert_eq!(log.enforce_retention(u64::MAX).unwrap(), sealed_count);
        assert_eq!(segment_count(dir.path(), 0), 1);
    }

    #[test]
    fn config_validation_names_the_bad_key_and_value() {
        let dir = Path::new("/nonexistent/never-created");
        let base = small_config(dir, 1, FsyncPolicy::EveryBatch);
        let cases: Vec<(LogConfig, &str, u64)> = vec![
            (
                LogConfig {
                    partition_count: 0,
                    ..base.clone()
                },
                "partition_count",
                0,
            ),
            (
                LogConfig {
                    partition_count: 5_000,
                    ..base.clone()
                },
                "partition_count",
                5_000,
            ),
            (
                LogConfig {
                    record_bytes_max: 0,
                    ..base.clone()
                },
                "record_bytes_max",
                0,
            ),
            (
                LogConfig {
                    segment_bytes_max: 50,
                    ..base.clone()
                },
                "segment_bytes_max",
                50,
            ),
            (
                LogConfig {
                    segment_bytes_max: 1 << 41,
                    ..base.clone()
                },
                "segment_bytes_max",
                1 << 41,
            ),
            (
                LogConfig {
                    batch_bytes_max: 88,
                    ..base.clone()
                },
                "batch_bytes_max",
                88,
            ),
            (
                LogConfig {
                    batch_bytes_max: 257,
                    ..base.clone()
                },
                "batch_bytes_max",
                257,
            ),
            (
                LogConfig {
                    read_buffer_bytes: 10,
                    ..base.clone()
                },
                "read_buffer_bytes",
                10,
            ),
            (
                LogConfig {
                    retention_bytes_max: 255,
                    ..base.clone()
                },
                "retention_bytes_max",
                255,
            ),
            (
                LogConfig {
                    fsync: FsyncPolicy::Interval { interval_ms: 0 },
                    ..base.clone()
                },
                "fsync.interval_ms",
                0,
            ),
        ];
        for (config, key, value) in cases {
            let error = config.validate().unwrap_err();
            match &error {
                ConfigError::OutOfRange {
                    key: k, value: v, ..
                } => assert_eq!((*k, *v), (key, value)),
                other => panic!("{key}: {other}"),
            }
            assert!(
                error.to_string().contains(&format!("{key} = {value}")),
                "{error}"
            );
            assert!(matches!(Log::open(config), Err(LogError::Config(_))));
        }
        assert_eq!(LogConfig::new("").validate(), Err(ConfigError::DirEmpty));
        assert!(!dir.exists(), "validation comes before touching the disk");
        assert!(base.validate().is_ok());
        assert!(
            LogConfig::new("/x").validate().is_ok(),
            "the defaults are valid"
        );
    }

    #[test]
    fn records_and_batches_over_their_limits_are_refused_and_nothing_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = Log::open(small_config(dir.path(), 1, FsyncPolicy::EveryBatch)).unwrap();
        let too_big = vec![0u8; 65];
        let error = log.append_batch(0, &[b"fine", &too_big]).unwrap_err();
        assert!(matches!(
            error,
            LogError::RecordTooLarge {
                index_in_batch: 1,
                record_bytes: 65,
                record_bytes_max: 64
            }
        ));
        let max = vec![0u8; 64];
        let error = log.append_batch(0, &[&max, &max, &max]).unwrap_err();
        let batch_bytes = 3 * (64 + RECORD_HEADER_BYTES as u64);
        assert!(
            matches!(error, LogError::BatchTooLarge { batch_bytes: b, batch_bytes_max: 256 } if b == batch_bytes)
        );
        assert!(matches!(
            log.append_batch(3, &[b"x"]),
            Err(LogError::PartitionOutOfRange { partition: 3, .. })
        ));
        assert_eq!(log.end_offset(0).unwrap(), 0);
        assert_eq!(log.stored_bytes(0).unwrap(), 0);
        let empty = log.append_batch(0, &[]).unwrap();
        assert_eq!((empty.start, empty.end), (0, 0));
        assert_eq!(
            log.append_batch(0, &[&max, &max]).unwrap().count(),
            2,
            "exactly at the limits"
        );
        assert_eq!(
            log.append_batch(0, &[b""]).unwrap().start,
            2,
            "empty records are records"
        );
    }

    #[test]
    fn every_batch_syncs_once_per_batch_however_many_records() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = Log::open(small_config(dir.path(), 2, FsyncPolicy::EveryBatch)).unwrap();
        log.append_batch_at(0, &[b"a", b"b", b"c", b"d"], 1)
            .unwrap();
        log.append_batch_at(1, &[b"a"], 1).unwrap();
        log.append_batch_at(0, &[b"e", b"f"], 1).unwrap();
        let stats = log.stats();
        assert_eq!(
            (stats.batches_appended, stats.records_appended, stats.fsyncs),
            (3, 7, 3)
        );
        assert_eq!(stats.bytes_appended, 7 * (RECORD_HEADER_BYTES as u64 + 1));
        log.sync_now().unwrap();
        assert_eq!(log.stats().fsyncs, 3, "nothing was left unsynced");
    }

    #[test]
    fn interval_syncs_on_the_first_append_after_the_interval_and_on_sync_now() {
        let dir = tempfile::tempdir().unwrap();
        let policy = FsyncPolicy::Interval { interval_ms: 100 };
        let (mut log, _) = Log::open(small_config(dir.path(), 2, policy)).unwrap();
        log.append_batch_at(0, &[b"a"], 1_000).unwrap();
        log.append_batch_at(1, &[b"a"], 1_050).unwrap();
        log.append_batch_at(0, &[b"b"], 1_099).unwrap();
        assert_eq!(log.stats().fsyncs, 0);
        log.append_batch_at(0, &[b"c"], 1_100).unwrap();
        assert_eq!(
            log.stats().fsyncs,
            1,
            "partition 0: 100 ms after its oldest unsynced append"
        );
        log.append_batch_at(0, &[b"d"], 1_150).unwrap();
        assert_eq!(
            log.stats().fsyncs,
            1,
            "the interval restarts at the first unsynced append"
        );
        log.sync_now().unwrap();
        assert_eq!(log.stats().fsyncs, 3, "sync_now syncs both partitions");
        log.sync_now().unwrap();
        assert_eq!(log.stats().fsyncs, 3);
    }

    #[test]
    fn never_syncs_only_on_sync_now_and_when_sealing_a_segment() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = Log::open(small_config(dir.path(), 1, FsyncPolicy::Never)).unwrap();
        log.append_batch_at(0, &[b"a"], 1).unwrap();
        log.append_batch_at(0, &[b"b"], 1).unwrap();
        assert_eq!(log.stats().fsyncs, 0);
        log.sync_now().unwrap();
        assert_eq!(log.stats().fsyncs, 1);
        let big = vec![1u8; 64];
        for _ in 0..3 {
            log.append_batch_at(0, &[&big], 2).unwrap(); // 89 bytes each: the third rolls
        }
        let stats = log.stats();
        assert_eq!(
            (stats.segments_rolled, stats.fsyncs, stats.dir_syncs),
            (1, 2, 1)
        );
    }

    #[derive(Debug, Clone)]
    enum Op {
        Append {
            partition: u32,
            record_lens: Vec<usize>,
        },
        Reopen,
        Retention,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            8 => (0..3u32, prop::collection::vec(0..=64usize, 0..=2))
                .prop_map(|(partition, record_lens)| Op::Append { partition, record_lens }),
            1 => Just(Op::Reopen),
            1 => Just(Op::Retention),
        ]
    }

    fn policy() -> impl Strategy<Value = FsyncPolicy> {
        prop_oneof![
            Just(FsyncPolicy::Never),
            (1..50u64).prop_map(|interval_ms| FsyncPolicy::Interval { interval_ms }),
            Just(FsyncPolicy::EveryBatch),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        #[test]
        fn read_back_equals_what_was_appended(ops in prop::collection::vec(op(), 1..60), fsync in policy()) {
            let dir = tempfile::tempdir().unwrap();
            let config = LogConfig { retention_bytes_max: 768, ..small_config(dir.path(), 3, fsync) };
            let (mut log, _) = Log::open(config.clone()).unwrap();
            let mut model: Vec<Vec<Record>> = vec![Vec::new(); 3];
            let mut starts = [0u64; 3];
            for (step, op) in ops.into_iter().enumerate() {
                let time_ms = step as u64 * 7;
                match op {
                    Op::Append { partition, record_lens } => {
                        let ours = &mut model[partition as usize];
                        let next = starts[partition as usize] + ours.len() as u64;
                        let payloads: Vec<Vec<u8>> = record_lens
                            .iter()
                            .enumerate()
                            .map(|(i, len)| vec![(next as u8).wrapping_add(i as u8); *len])
                            .collect();
                        let refs: Vec<&[u8]> = payloads.iter().map(Vec::as_slice).collect();
                        let range = log.append_batch_at(partition, &refs, time_ms).unwrap();
                        prop_assert_eq!(range.start, next);
                        ours.extend((range.start..).zip(payloads).map(|(o, p)| (o, time_ms, p)));
                    }
                    Op::Reopen => {
                        drop(log);
                        let (reopened, report) = Log::open(config.clone()).unwrap();
                        prop_assert_eq!(report.bytes_truncated_total(), 0);
                        log = reopened;
                    }
                    Op::Retention => {
                        log.enforce_retention(0).unwrap();
                        for partition in 0..3 {
                            let start = log.start_offset(partition).unwrap();
                            let dropped = (start - starts[partition as usize]) as usize;
                            model[partition as usize].drain(..dropped);
                            starts[partition as usize] = start;
                        }
                    }
                }
            }
            for partition in 0..3u32 {
                prop_assert_eq!(log.start_offset(partition).unwrap(), starts[partition as usize]);
                let read = read_range(&mut log, partition, starts[partition as usize]);
                prop_assert_eq!(&read, &model[partition as usize]);
            }
        }
    }
}
