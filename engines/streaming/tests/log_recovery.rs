//! Recovery and corruption, on real files: torn tails at every length, flipped bytes in the
//! last record and in sealed segments, and the layout errors.

// One module, so `cargo test -p agentwire-streaming log` selects these tests by name.
mod log_recovery {
    use std::fs;
    use std::path::{Path, PathBuf};

    use agentwire_streaming::log::{
        FsyncPolicy, Log, LogConfig, LogError, RecordDefect, RECORD_HEADER_BYTES,
    };

    type Record = (u64, u64, Vec<u8>);

    fn small_config(dir: &Path) -> LogConfig {
        LogConfig {
            partition_count: 2,
            segment_bytes_max: 256,
            record_bytes_max: 64,
            batch_bytes_max: 256,
            read_buffer_bytes: 128,
            fsync: FsyncPolicy::Never,
            ..LogConfig::new(dir)
        }
    }

    fn payload(offset: u64, len: usize) -> Vec<u8> {
        (0..len)
            .map(|i| (offset as usize * 31 + i * 7) as u8)
            .collect()
    }

    /// Appends `batch_count` batches of three records to partition 0 (lengths vary, the last
    /// record of each batch is 40 bytes) and a few to partition 1; returns partition 0's records.
    fn write_log(dir: &Path, batch_count: u64) -> Vec<Record> {
        let (mut log, _) = Log::open(small_config(dir)).unwrap();
        let mut written = Vec::new();
        for batch in 0..batch_count {
            let start = log.end_offset(0).unwrap();
            let payloads: Vec<Vec<u8>> = (0..3u64)
                .map(|i| {
                    payload(
                        start + i,
                        if i == 2 {
                            40
                        } else {
                            (batch as usize * 5 + i as usize) % 30
                        },
                    )
                })
                .collect();
            let refs: Vec<&[u8]> = payloads.iter().map(Vec::as_slice).collect();
            let time_ms = 1_000 + batch;
            let range = log.append_batch_at(0, &refs, time_ms).unwrap();
            for (offset, p) in (range.start..range.end).zip(payloads) {
                written.push((offset, time_ms, p));
            }
            log.append_batch_at(1, &[b"other partition"], time_ms)
                .unwrap();
        }
        written
    }

    fn read_all(log: &mut Log, partition: u32) -> Result<Vec<Record>, (Vec<Record>, LogError)> {
        let mut seen = Vec::new();
        let mut offset = log.start_offset(partition).unwrap();
        loop {
            let mut visit = |o: u64, t: u64, p: &[u8]| seen.push((o, t, p.to_vec()));
            match log.read(partition, offset, 5, &mut visit) {
                Ok(outcome) if outcome.records_visited == 0 => return Ok(seen),
                Ok(outcome) => offset = outcome.next_offset,
                Err(error) => return Err((seen, error)),
            }
        }
    }

    fn segments(dir: &Path, partition: u32) -> Vec<PathBuf> {
        let mut paths: Vec<PathBuf> = fs::read_dir(dir.join(partition.to_string()))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        paths.sort();
        paths
    }

    fn last_segment(dir: &Path) -> PathBuf {
        segments(dir, 0).pop().unwrap()
    }

    const LAST_RECORD_BYTES: u64 = RECORD_HEADER_BYTES as u64 + 40;

    #[test]
    fn torn_tail_at_every_length_recovers_the_records_before_it_and_appends_continue() {
        for cut_bytes in 0..LAST_RECORD_BYTES {
            let dir = tempfile::tempdir().unwrap();
            let written = write_log(dir.path(), 7);
            let path = last_segment(dir.path());
            let file_len = fs::metadata(&path).unwrap().len();
            let last_record_start = file_len - LAST_RECORD_BYTES;
            fs::OpenOptions::new()
                .write(true)
                .open(&path)
                .unwrap()
                .set_len(last_record_start + cut_bytes)
                .unwrap();

            let (mut log, report) = Log::open(small_config(dir.path())).unwrap();
            let recovery = report.partitions[0];
            assert_eq!(recovery.bytes_truncated, cut_bytes, "cut at {cut_bytes}");
            let expected_defect = match cut_bytes {
                0 => None,
                n if n < RECORD_HEADER_BYTES as u64 => Some(RecordDefect::ShortHeader),
                _ => Some(RecordDefect::ShortPayload),
            };
            assert_eq!(recovery.defect, expected_defect, "cut at {cut_bytes}");
            assert_eq!(report.partitions[1].bytes_truncated, 0);
            assert_eq!(log.stats().bytes_truncated_at_recovery, cut_bytes);
            assert_eq!(fs::metadata(&path).unwrap().len(), last_record_start);

            let kept = &written[..written.len() - 1];
            assert_eq!(read_all(&mut log, 0).unwrap(), kept);
            let next_offset = kept.len() as u64;
            assert_eq!(log.end_offset(0).unwrap(), next_offset);
            let range = log.append_batch_at(0, &[b"after recovery"], 9_000).unwrap();
            assert_eq!(range.start, next_offset);
            let all = read_all(&mut log, 0).unwrap();
            assert_eq!(
                all.last().unwrap(),
                &(next_offset, 9_000, b"after recovery".to_vec())
            );
        }
    }

    #[test]
    fn a_flipped_byte_anywhere_in_the_last_record_is_cut_by_recovery() {
        for flip_at in 0..LAST_RECORD_BYTES {
            let dir = tempfile::tempdir().unwrap();
            let written = write_log(dir.path(), 5);
            let path = last_segment(dir.path());
            let mut bytes = fs::read(&path).unwrap();
            let last_record_start = bytes.len() as u64 - LAST_RECORD_BYTES;
            bytes[(last_record_start + flip_at) as usize] ^= 0xFF;
            fs::write(&path, &bytes).unwrap();

            let (mut log, report) = Log::open(small_config(dir.path())).unwrap();
            let recovery = report.partitions[0];
            assert_eq!(
                recovery.bytes_truncated, LAST_RECORD_BYTES,
                "flip at {flip_at}"
            );
            let expected_defect = match flip_at {
                0 => RecordDefect::BadMagic,
                5..=8 => recovery.defect.unwrap(), // a length: too long (short payload) or too short (checksum)
                _ => RecordDefect::BadChecksum,
            };
            assert_eq!(recovery.defect, Some(expected_defect), "flip at {flip_at}");
            assert!(matches!(
                expected_defect,
                RecordDefect::BadMagic | RecordDefect::BadChecksum | RecordDefect::ShortPayload
            ));
            assert_eq!(
                read_all(&mut log, 0).unwrap(),
                &written[..written.len() - 1]
            );
            assert_eq!(
                log.append_batch(0, &[b"x"]).unwrap().start,
                written.len() as u64 - 1
            );
        }
    }

    #[test]
    fn a_flipped_byte_in_a_sealed_segment_is_reported_as_corrupt_never_served() {
        let dir = tempfile::tempdir().unwrap();
        let written = write_log(dir.path(), 8);
        let sealed = segments(dir.path(), 0);
        assert!(
            sealed.len() >= 3,
            "the test needs sealed segments: {sealed:?}"
        );
        let path = &sealed[1];
        let segment_base: u64 = path.file_stem().unwrap().to_str().unwrap().parse().unwrap();
        let original = fs::read(path).unwrap();
        for flip_at in 0..original.len() {
            let mut bytes = original.clone();
            bytes[flip_at] ^= 0xFF;
            fs::write(path, &bytes).unwrap();

            let (mut log, report) = Log::open(small_config(dir.path())).unwrap();
            assert_eq!(
                report.bytes_truncated_total(),
                0,
                "sealed segments are not cut"
            );
            let (seen, error) = read_all(&mut log, 0).unwrap_err();
            match error {
                LogError::Corrupt {
                    partition: 0,
                    segment,
                    position,
                    ..
                } => {
                    assert_eq!(segment, segment_base, "flip at {flip_at}");
                    assert!(
                        position <= flip_at as u64,
                        "flip at {flip_at}, reported at {position}"
                    );
                }
                other => panic!("flip at {flip_at}: expected Corrupt, got {other}"),
            }
            assert_eq!(seen, &written[..seen.len()], "only good records, in order");
            assert!(seen.len() < written.len());
            drop(log);
            fs::write(path, &original).unwrap();
        }
        let (mut log, _) = Log::open(small_config(dir.path())).unwrap();
        assert_eq!(read_all(&mut log, 0).unwrap(), written);
    }

    #[test]
    fn stale_intact_records_after_the_tail_are_cut_as_out_of_sequence() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = Log::open(small_config(dir.path())).unwrap();
        log.append_batch_at(0, &[b"a", b"b"], 1).unwrap();
        drop(log);
        let path = last_segment(dir.path());
        let mut bytes = fs::read(&path).unwrap();
        let first_record = bytes[..RECORD_HEADER_BYTES + 1].to_vec(); // offset 0, intact
        bytes.extend_from_slice(&first_record);
        fs::write(&path, &bytes).unwrap();

        let (mut log, report) = Log::open(small_config(dir.path())).unwrap();
        assert_eq!(
            report.partitions[0].defect,
            Some(RecordDefect::OffsetOutOfSequence)
        );
        assert_eq!(
            report.partitions[0].bytes_truncated,
            first_record.len() as u64
        );
        assert_eq!(read_all(&mut log, 0).unwrap().len(), 2);
    }

    #[test]
    fn a_garbage_last_segment_is_cut_to_empty_and_offsets_continue_from_its_name() {
        let dir = tempfile::tempdir().unwrap();
        let written = write_log(dir.path(), 8);
        let path = last_segment(dir.path());
        let base: u64 = path.file_stem().unwrap().to_str().unwrap().parse().unwrap();
        let len = fs::metadata(&path).unwrap().len() as usize;
        fs::write(&path, vec![0u8; len]).unwrap();

        let (mut log, report) = Log::open(small_config(dir.path())).unwrap();
        assert_eq!(report.partitions[0].bytes_truncated, len as u64);
        assert_eq!(report.partitions[0].defect, Some(RecordDefect::BadMagic));
        assert_eq!(log.end_offset(0).unwrap(), base);
        assert_eq!(read_all(&mut log, 0).unwrap(), &written[..base as usize]);
        assert_eq!(log.append_batch(0, &[b"next"]).unwrap().start, base);
    }

    #[test]
    fn a_segment_renamed_away_from_its_first_record_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        write_log(dir.path(), 8);
        for victim in [0, 1] {
            // 0: a sealed segment; 1 (after 0 was restored): the last one.
            let all = segments(dir.path(), 0);
            let path = if victim == 0 {
                all[1].clone()
            } else {
                all.last().unwrap().clone()
            };
            let base: u64 = path.file_stem().unwrap().to_str().unwrap().parse().unwrap();
            let renamed = path.with_file_name(format!("{:020}.log", base + 1));
            fs::rename(&path, &renamed).unwrap();
            match Log::open(small_config(dir.path())) {
                Err(LogError::SegmentNameMismatch {
                    name_offset,
                    record_offset,
                    ..
                }) => assert_eq!((name_offset, record_offset), (base + 1, base)),
                other => panic!("expected SegmentNameMismatch, got {:?}", other.map(|_| ())),
            }
            fs::rename(&renamed, &path).unwrap();
        }
        assert!(Log::open(small_config(dir.path())).is_ok());
    }

    #[test]
    fn files_the_log_did_not_make_and_missing_ones_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        write_log(dir.path(), 2);
        let open = |dir: &Path| Log::open(small_config(dir)).map(|_| ());

        let stray = dir.path().join("notes.txt");
        fs::write(&stray, "x").unwrap();
        assert!(
            matches!(open(dir.path()), Err(LogError::UnexpectedFile { path }) if path == stray)
        );
        fs::remove_file(&stray).unwrap();

        let stray = dir.path().join("0").join("00000000000000000000.index");
        fs::write(&stray, "x").unwrap();
        assert!(
            matches!(open(dir.path()), Err(LogError::UnexpectedFile { path }) if path == stray)
        );
        fs::remove_file(&stray).unwrap();

        let extra_partition = dir.path().join("2");
        fs::create_dir(&extra_partition).unwrap();
        assert!(matches!(
            open(dir.path()),
            Err(LogError::UnexpectedFile { .. })
        ));
        fs::remove_dir(&extra_partition).unwrap();

        let partition_1 = dir.path().join("1");
        let elsewhere = tempfile::tempdir().unwrap();
        let moved = elsewhere.path().join("moved-partition");
        fs::rename(&partition_1, &moved).unwrap();
        assert!(matches!(
            open(dir.path()),
            Err(LogError::MissingPartition { partition: 1, .. })
        ));
        fs::create_dir(&partition_1).unwrap();
        assert!(matches!(
            open(dir.path()),
            Err(LogError::NoSegments { partition: 1, .. })
        ));
        fs::remove_dir(&partition_1).unwrap();
        fs::rename(&moved, &partition_1).unwrap();

        let meta = dir.path().join("agentwire-log.toml");
        let meta_text = fs::read_to_string(&meta).unwrap();
        fs::write(
            &meta,
            meta_text.replace("format_version = 1", "format_version = 2"),
        )
        .unwrap();
        assert!(matches!(
            open(dir.path()),
            Err(LogError::FormatVersionMismatch {
                on_disk: 2,
                supported: 1,
                ..
            })
        ));
        fs::write(&meta, "garbage").unwrap();
        assert!(matches!(
            open(dir.path()),
            Err(LogError::MetaInvalid { .. })
        ));
        fs::remove_file(&meta).unwrap();
        assert!(matches!(
            open(dir.path()),
            Err(LogError::MetaMissing { .. })
        ));
        fs::write(&meta, meta_text).unwrap();
        assert!(open(dir.path()).is_ok());
    }

    #[test]
    fn an_interrupted_creation_is_finished_on_the_next_open() {
        let dir = tempfile::tempdir().unwrap();
        let log_dir = dir.path().join("log");
        fs::create_dir_all(log_dir.join("0")).unwrap();
        fs::write(log_dir.join("0").join("00000000000000000000.log"), b"").unwrap();
        fs::write(log_dir.join("agentwire-log.toml.tmp"), b"half").unwrap();
        let (mut log, _) = Log::open(small_config(&log_dir)).unwrap();
        assert_eq!(log.append_batch(1, &[b"a"]).unwrap().start, 0);
    }

    #[test]
    fn a_record_larger_than_the_read_buffer_is_recovered_but_refused_to_readers() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = Log::open(small_config(dir.path())).unwrap();
        let big = vec![7u8; 64];
        log.append_batch_at(0, &[b"small", &big, b"small again"], 5)
            .unwrap();
        drop(log);

        // Reopened with a smaller record limit and buffer: the tail scan streams the big record's
        // checksum through the buffer and keeps it; a reader gets a typed error, not the record.
        let config = LogConfig {
            record_bytes_max: 8,
            read_buffer_bytes: 40,
            ..small_config(dir.path())
        };
        let (mut log, report) = Log::open(config).unwrap();
        assert_eq!(report.bytes_truncated_total(), 0);
        assert_eq!(log.end_offset(0).unwrap(), 3);
        let (seen, error) = read_all(&mut log, 0).unwrap_err();
        assert_eq!(seen, vec![(0, 5, b"small".to_vec())]);
        assert!(matches!(
            error,
            LogError::RecordExceedsReadBuffer {
                offset: 1,
                read_buffer_bytes: 40,
                ..
            }
        ));
        let mut after = Vec::new();
        log.read(0, 2, 10, &mut |o, _, p: &[u8]| after.push((o, p.to_vec())))
            .unwrap();
        assert_eq!(after, vec![(2, b"small again".to_vec())]);
    }
}
