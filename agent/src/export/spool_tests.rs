use std::os::unix::fs::PermissionsExt;

use super::*;

fn config(dir: &Path) -> SpoolConfig {
    SpoolConfig {
        dir: dir.to_path_buf(),
        max_bytes: 1 << 20,
        segment_bytes: 64,
    }
}

fn record(i: usize) -> Vec<u8> {
    format!("{{\"id\":\"r{i}\"}}").into_bytes()
}

fn texts(batch: &Batch) -> Vec<String> {
    batch
        .records
        .iter()
        .map(|r| String::from_utf8(r.clone()).unwrap())
        .collect()
}

#[test]
fn records_come_back_in_order_across_segments() {
    let dir = tempfile::tempdir().unwrap();
    let mut spool = Spool::open(config(dir.path())).unwrap();
    for i in 0..20 {
        assert_eq!(spool.append(&record(i)).unwrap(), 0);
    }
    spool.flush().unwrap();
    assert!(spool.segments.len() > 1, "64-byte segments rotate");
    let batch = spool.read_batch(100).unwrap();
    let expected: Vec<String> = (0..20).map(|i| format!("{{\"id\":\"r{i}\"}}")).collect();
    assert_eq!(texts(&batch), expected);
    assert_eq!(spool.read_batch(100).unwrap().records.len(), 0);
}

#[test]
fn a_restart_resends_what_was_not_acknowledged_and_nothing_before() {
    let dir = tempfile::tempdir().unwrap();
    let mut spool = Spool::open(config(dir.path())).unwrap();
    for i in 0..10 {
        spool.append(&record(i)).unwrap();
    }
    spool.flush().unwrap();
    let first = spool.read_batch(4).unwrap();
    spool.ack(first.end).unwrap();
    let _lost_in_flight = spool.read_batch(3).unwrap(); // sent, never acknowledged
    drop(spool);

    let mut reopened = Spool::open(config(dir.path())).unwrap();
    let again = reopened.read_batch(100).unwrap();
    let expected: Vec<String> = (4..10).map(|i| format!("{{\"id\":\"r{i}\"}}")).collect();
    assert_eq!(texts(&again), expected);
}

#[test]
fn acknowledged_segments_are_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let mut spool = Spool::open(config(dir.path())).unwrap();
    for i in 0..20 {
        spool.append(&record(i)).unwrap();
    }
    let segments_before = spool.segments.len();
    let batch = spool.read_batch(100).unwrap();
    spool.ack(batch.end).unwrap();
    assert_eq!(spool.segments.len(), 1);
    assert!(segments_before > 1);
    let files = fs::read_dir(dir.path()).unwrap().count();
    assert_eq!(files, 2, "the current segment and the cursor");
}

#[test]
fn a_torn_last_line_is_cut_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let mut spool = Spool::open(config(dir.path())).unwrap();
    spool.append(&record(1)).unwrap();
    spool.flush().unwrap();
    drop(spool);
    // A crash in the middle of the next write.
    let path = segment_path(dir.path(), 1);
    let mut file = OpenOptions::new().append(true).open(&path).unwrap();
    file.write_all(b"{\"id\":\"r2\",\"tok").unwrap();
    drop(file);
    let mut spool = Spool::open(config(dir.path())).unwrap();
    spool.append(&record(3)).unwrap();
    let batch = spool.read_batch(10).unwrap();
    assert_eq!(texts(&batch), vec!["{\"id\":\"r1\"}", "{\"id\":\"r3\"}"]);
}

#[test]
fn a_full_spool_drops_the_oldest_and_says_how_many() {
    let dir = tempfile::tempdir().unwrap();
    let mut spool = Spool::open(SpoolConfig {
        max_bytes: 200,
        ..config(dir.path())
    })
    .unwrap();
    let mut dropped = 0;
    for i in 0..40 {
        dropped += spool.append(&record(i)).unwrap();
    }
    assert!(spool.bytes() <= 200 + 64, "bounded: {}", spool.bytes());
    let kept = spool.read_batch(1000).unwrap().records.len() as u64;
    assert_eq!(
        kept + dropped,
        40,
        "every record is either kept or counted as dropped"
    );
    let last = spool.read_batch(1).unwrap();
    assert!(last.records.is_empty());
}

#[test]
fn a_failed_delivery_rewinds_to_the_acknowledgement() {
    let dir = tempfile::tempdir().unwrap();
    let mut spool = Spool::open(config(dir.path())).unwrap();
    for i in 0..3 {
        spool.append(&record(i)).unwrap();
    }
    let sent = spool.read_batch(10).unwrap();
    spool.rewind();
    assert_eq!(spool.read_batch(10).unwrap(), sent);
}

#[test]
fn a_read_only_directory_is_a_clear_error() {
    if unsafe { libc::geteuid() } == 0 {
        // root ignores directory permissions; a read-only mount is what stops root, and
        // the end-to-end tests own that case.
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("not-a-dir");
        fs::write(&file, "x").unwrap();
        let error = Spool::open(config(&file)).err().unwrap().to_string();
        assert!(error.contains("not-a-dir"), "{error}");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o500)).unwrap();
    let error = Spool::open(config(&dir.path().join("spool")))
        .err()
        .unwrap()
        .to_string();
    assert!(error.contains("spool"), "{error}");
}

#[test]
fn a_record_with_a_newline_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut spool = Spool::open(config(dir.path())).unwrap();
    assert!(matches!(spool.append(b"a\nb"), Err(SpoolError::Newline)));
}

#[test]
fn read_from_replays_without_moving_the_read_position() {
    let dir = tempfile::tempdir().unwrap();
    let mut spool = Spool::open(config(dir.path())).unwrap();
    spool.append(&record(0)).unwrap();
    let middle = spool.end();
    for i in 1..10 {
        spool.append(&record(i)).unwrap();
    }
    let replay = spool.read_from(middle, 100).unwrap();
    assert_eq!(replay.records.len(), 9);
    assert_eq!(replay.end, spool.end());
    assert_eq!(spool.read_batch(100).unwrap().records.len(), 10);
}

#[test]
fn kept_segments_outlive_their_acknowledgement() {
    let dir = tempfile::tempdir().unwrap();
    let mut spool = Spool::open(config(dir.path())).unwrap();
    spool.append(&record(0)).unwrap();
    let pinned = spool.end();
    spool.keep_from(pinned).unwrap();
    for i in 1..20 {
        spool.append(&record(i)).unwrap();
    }
    let batch = spool.read_batch(100).unwrap();
    spool.ack(batch.end).unwrap();
    // Everything is delivered, yet the records after the pin can still be replayed.
    assert_eq!(spool.read_from(pinned, 100).unwrap().records.len(), 19);
    // Moving the pin to the end frees them.
    spool.keep_from(spool.end()).unwrap();
    assert_eq!(spool.segments.len(), 1);
}
