use super::*;

const LIMITS: StreamLimits = StreamLimits {
    max_connections: NonZeroUsize::new(2).unwrap(),
    max_pending_bytes: 16,
    idle_timeout_ns: 1_000,
    max_capture_per_call: 8,
};

fn chunk(pid: u32, conn: u64, dir: Direction, pos: u64, data: &[u8], ts: u64) -> DataRecord {
    DataRecord {
        timestamp_ns: ts,
        pid,
        tid: pid,
        conn,
        cgroup_id: 1,
        direction: dir,
        comm: "test".into(),
        stream_pos: pos,
        call_len: data.len() as u64,
        chunk_offset: 0,
        chunk_len: data.len() as u64,
        payload: data.to_vec(),
        call_truncated: false,
        last_captured: false,
    }
}

/// The bytes, gaps and close reason of every stream, by (pid, conn, seq, direction).
fn streams(events: &[StreamEvent]) -> BTreeMap<StreamId, (Vec<u8>, u64, Option<CloseReason>)> {
    let mut streams: BTreeMap<StreamId, (Vec<u8>, u64, Option<CloseReason>)> = BTreeMap::new();
    for event in events {
        match event {
            StreamEvent::Opened { id, .. } => {
                assert!(
                    streams.insert(*id, Default::default()).is_none(),
                    "opened twice"
                );
            }
            StreamEvent::Data { id, bytes, .. } => {
                let s = streams.get_mut(id).expect("data before open");
                assert!(s.2.is_none(), "data after close");
                s.0.extend_from_slice(bytes);
            }
            StreamEvent::Gap { id, len, .. } => {
                streams.get_mut(id).expect("gap before open").1 += len
            }
            StreamEvent::Closed { id, reason } => {
                let s = streams.get_mut(id).expect("close before open");
                assert!(s.2.replace(*reason).is_none(), "closed twice");
            }
        }
    }
    streams
}

#[test]
fn in_order_chunks_make_one_stream_per_direction() {
    let mut r = Reassembler::new(LIMITS);
    let mut out = vec![];
    r.push(chunk(1, 10, Direction::Write, 0, b"GET /", 1), &mut out);
    r.push(chunk(1, 10, Direction::Write, 5, b" HTTP", 2), &mut out);
    r.push(chunk(1, 10, Direction::Read, 0, b"200", 3), &mut out);
    r.close(1, 10, CloseReason::Free, &mut out);
    let s = streams(&out);
    let w: Vec<_> = s.values().collect();
    assert_eq!(w.len(), 2);
    assert_eq!(w[0].0, b"GET / HTTP");
    assert_eq!(w[1].0, b"200");
    assert!(w.iter().all(|s| s.2 == Some(CloseReason::Free) && s.1 == 0));
}

#[test]
fn out_of_order_chunks_are_reordered() {
    let mut r = Reassembler::new(LIMITS);
    let mut out = vec![];
    r.push(chunk(1, 10, Direction::Write, 0, b"ab", 1), &mut out);
    r.push(chunk(1, 10, Direction::Write, 4, b"ef", 2), &mut out);
    r.push(chunk(1, 10, Direction::Write, 2, b"cd", 3), &mut out);
    r.close_all(&mut out);
    let s = streams(&out);
    let (bytes, gaps, reason) = s.values().next().unwrap();
    assert_eq!(bytes, b"abcdef");
    assert_eq!(*gaps, 0);
    assert_eq!(*reason, Some(CloseReason::AgentShutdown));
}

#[test]
fn a_missing_chunk_becomes_a_gap_when_pending_bytes_overflow() {
    let mut r = Reassembler::new(LIMITS);
    let mut out = vec![];
    r.push(chunk(1, 10, Direction::Read, 0, b"ab", 1), &mut out);
    // 2..4 never arrives; 17 bytes wait behind it, more than the 16 allowed.
    r.push(chunk(1, 10, Direction::Read, 4, &[b'x'; 17], 2), &mut out);
    let gap = out.iter().find_map(|e| match e {
        StreamEvent::Gap { len, cause, .. } => Some((*len, *cause)),
        _ => None,
    });
    assert_eq!(gap, Some((2, GapCause::Lost)));
    r.close_all(&mut out);
    let (bytes, gaps, _) = streams(&out).into_values().next().unwrap();
    assert_eq!(bytes.len(), 19);
    assert_eq!(gaps, 2);
}

#[test]
fn pending_chunks_are_flushed_after_a_gap_at_close() {
    let mut r = Reassembler::new(LIMITS);
    let mut out = vec![];
    r.push(chunk(1, 10, Direction::Read, 0, b"ab", 1), &mut out);
    r.push(chunk(1, 10, Direction::Read, 5, b"fg", 2), &mut out);
    r.close(1, 10, CloseReason::Shutdown, &mut out);
    let (bytes, gaps, reason) = streams(&out).into_values().next().unwrap();
    assert_eq!((bytes.as_slice(), gaps), (&b"abfg"[..], 3));
    assert_eq!(reason, Some(CloseReason::Shutdown));
}

#[test]
fn a_truncated_call_leaves_a_gap_of_the_uncaptured_rest() {
    let mut r = Reassembler::new(LIMITS);
    let mut out = vec![];
    // A 20-byte call captured as two chunks of 4 (limit 8): bytes 8..20 are a gap.
    for (offset, data) in [(0u64, b"abcd"), (4, b"efgh")] {
        let mut c = chunk(1, 10, Direction::Write, 0, data, 1);
        c.call_len = 20;
        c.chunk_offset = offset;
        c.call_truncated = true;
        r.push(c, &mut out);
    }
    r.push(chunk(1, 10, Direction::Write, 20, b"next", 2), &mut out);
    r.close_all(&mut out);
    assert!(out.contains(&StreamEvent::Gap {
        id: StreamId {
            conn: ConnId {
                pid: 1,
                conn: 10,
                seq: 0
            },
            direction: Direction::Write
        },
        len: 12,
        cause: GapCause::CallTruncated
    }));
    let (bytes, gaps, _) = streams(&out).into_values().next().unwrap();
    assert_eq!((bytes.as_slice(), gaps), (&b"abcdefghnext"[..], 12));
}

#[test]
fn a_failed_read_is_a_gap_of_its_length() {
    let mut r = Reassembler::new(LIMITS);
    let mut out = vec![];
    let mut c = chunk(1, 10, Direction::Write, 0, b"", 1);
    c.chunk_len = 6;
    c.call_len = 6;
    r.push(c, &mut out);
    r.push(chunk(1, 10, Direction::Write, 6, b"ok", 2), &mut out);
    r.close_all(&mut out);
    let (bytes, gaps, _) = streams(&out).into_values().next().unwrap();
    assert_eq!((bytes.as_slice(), gaps), (&b"ok"[..], 6));
}

#[test]
fn the_least_recently_active_connection_is_evicted_beyond_the_limit() {
    let mut r = Reassembler::new(LIMITS);
    let mut out = vec![];
    r.push(chunk(1, 10, Direction::Write, 0, b"a", 1), &mut out);
    r.push(chunk(1, 11, Direction::Write, 0, b"b", 2), &mut out);
    r.push(chunk(1, 10, Direction::Write, 1, b"a", 3), &mut out);
    r.push(chunk(1, 12, Direction::Write, 0, b"c", 4), &mut out);
    assert_eq!(r.connections(), 2);
    let evicted: Vec<_> = out
        .iter()
        .filter_map(|e| match e {
            StreamEvent::Closed { id, reason } => Some((id.conn.conn, *reason)),
            _ => None,
        })
        .collect();
    assert_eq!(evicted, vec![(11, CloseReason::Evicted)]);
}

#[test]
fn idle_connections_expire_and_busy_ones_stay() {
    let mut r = Reassembler::new(LIMITS);
    let mut out = vec![];
    r.push(chunk(1, 10, Direction::Write, 0, b"a", 100), &mut out);
    r.push(chunk(1, 11, Direction::Write, 0, b"b", 900), &mut out);
    r.expire_idle(1_500, &mut out);
    assert_eq!(r.connections(), 1);
    let closed: Vec<_> = out
        .iter()
        .filter_map(|e| match e {
            StreamEvent::Closed { id, reason } => Some((id.conn.conn, *reason)),
            _ => None,
        })
        .collect();
    assert_eq!(closed, vec![(10, CloseReason::Idle)]);
}

#[test]
fn process_exit_finishes_only_that_process() {
    let mut r = Reassembler::new(LIMITS);
    let mut out = vec![];
    r.push(chunk(1, 10, Direction::Write, 0, b"a", 1), &mut out);
    r.push(chunk(2, 10, Direction::Write, 0, b"b", 2), &mut out);
    r.process_exited(1, &mut out);
    assert_eq!(r.connections(), 1);
    assert!(out.iter().any(|e| matches!(e,
        StreamEvent::Closed { id, reason: CloseReason::ProcessExit } if id.conn.pid == 1)));
}

#[test]
fn a_reused_ssl_pointer_starts_a_new_connection() {
    let mut r = Reassembler::new(LIMITS);
    let mut out = vec![];
    r.push(chunk(1, 10, Direction::Write, 0, b"first", 1), &mut out);
    r.push(chunk(1, 10, Direction::Write, 0, b"second", 2), &mut out);
    r.close_all(&mut out);
    let s = streams(&out);
    let got: Vec<_> = s
        .iter()
        .map(|(id, v)| (id.conn.seq, v.0.clone(), v.2))
        .collect();
    assert_eq!(
        got,
        vec![
            (0, b"first".to_vec(), Some(CloseReason::Reused)),
            (1, b"second".to_vec(), Some(CloseReason::AgentShutdown)),
        ]
    );
}

#[test]
fn feeding_chunks_one_by_one_or_shuffled_gives_the_same_stream() {
    let data: Vec<u8> = (0..200u32).map(|i| (i * 7) as u8).collect();
    let chunks: Vec<_> = data
        .chunks(3)
        .enumerate()
        .map(|(i, c)| chunk(1, 10, Direction::Read, (i * 3) as u64, c, i as u64))
        .collect();
    let limits = StreamLimits {
        max_pending_bytes: 1 << 20,
        ..LIMITS
    };
    let mut order: Vec<usize> = (1..chunks.len()).collect();
    // A fixed permutation (no RNG dependency): reverse, then interleave.
    order.reverse();
    order.sort_by_key(|i| i % 5);
    let mut r = Reassembler::new(limits);
    let mut out = vec![];
    r.push(chunks[0].clone(), &mut out);
    for i in order {
        r.push(chunks[i].clone(), &mut out);
    }
    r.close_all(&mut out);
    let (bytes, gaps, _) = streams(&out).into_values().next().unwrap();
    assert_eq!(bytes, data);
    assert_eq!(gaps, 0);
}

#[test]
fn a_delayed_close_spares_a_newer_connection_on_the_same_ssl_pointer() {
    let mut r = Reassembler::new(LIMITS);
    let mut out = vec![];
    r.push(chunk(1, 10, Direction::Write, 0, b"old", 1), &mut out);
    let old = r.current(1, 10).unwrap();
    // The SSL* is reused before the delayed close of the old connection is applied.
    r.push(chunk(1, 10, Direction::Write, 0, b"new", 2), &mut out);
    r.close_id(old, CloseReason::Free, &mut out);
    assert_ne!(r.current(1, 10), Some(old));
    assert!(
        r.current(1, 10).is_some(),
        "the new connection must stay open"
    );
    let new = r.current(1, 10).unwrap();
    r.close_id(new, CloseReason::Free, &mut out);
    assert_eq!(r.connections(), 0);
}
