//! Stored streams in the shard: repeats skipped, gaps closing with 4010, and what a hold (a
//! subscribe waiting for the store's answer) keeps and lets through.

use super::*;

/// Cluster (the store delivers): a repeat of a stored publication is skipped, and a gap in a
/// topic's offsets closes its subscribers with 4010 so they recover instead of missing it.
#[test]
fn a_gap_in_a_stored_stream_closes_its_subscribers() {
    let (mut st, slot, stored) = held_subscriber();
    let text = |st: &mut ShardState| String::from_utf8_lossy(&written(st, slot)).into_owned();
    st.handle_msg(stored(1));
    st.handle_msg(stored(2));
    let out = text(&mut st);
    assert!(
        out.contains("\"offset\":1") && out.contains("\"offset\":2"),
        "{out}"
    );
    st.handle_msg(stored(2));
    assert_eq!(text(&mut st), "", "a repeat is skipped");
    st.handle_msg(stored(4));
    let out = written(&mut st, slot);
    assert_eq!(out[0], 0x88, "a close frame, not offset 4");
    assert_eq!(u16::from_be_bytes([out[2], out[3]]), 4010);
}

/// Cluster, a connection whose `since` subscribe was answered (top 5) while the node's
/// subscriber connection to Redis was down: the next publication it sees skips offsets (8).
/// It must be closed with 4010 like the topic's other subscribers — before, the hold let
/// offset 8 through and the client saw a silent gap (found by scripts/soak-messaging.sh).
#[test]
fn a_gap_after_an_answered_hold_closes_the_connection() {
    let (mut st, slot, stored) = held_subscriber();
    for o in 1..=5 {
        st.handle_msg(stored(o));
    }
    written(&mut st, slot);
    let id = st.conns[slot as usize].id;
    st.hold(id, "t".into());
    st.release_answered(id, "t", None, Some(("e1".into(), 5)));
    st.handle_msg(stored(8));
    let out = written(&mut st, slot);
    assert_eq!(
        out[0],
        0x88,
        "a close frame, not offset 8: {}",
        String::from_utf8_lossy(&out)
    );
    assert_eq!(u16::from_be_bytes([out[2], out[3]]), 4010);
}

/// Cluster, the same while the answer is still awaited: a kept publication above the answer's
/// top that does not continue it (top 5, kept 8) closes the connection with 4010 after the
/// reply; kept ones that continue it (6, 7) are delivered after the reply.
#[test]
fn kept_publications_must_continue_the_answer() {
    let (mut st, slot, stored) = held_subscriber();
    let id = st.conns[slot as usize].id;
    st.hold(id, "t".into());
    st.handle_msg(stored(8));
    assert!(
        written(&mut st, slot).is_empty(),
        "kept while the hold waits"
    );
    st.release_answered(id, "t", None, Some(("e1".into(), 5)));
    let out = written(&mut st, slot);
    assert_eq!(
        out[0],
        0x88,
        "a close frame, not offset 8: {}",
        String::from_utf8_lossy(&out)
    );
    assert_eq!(u16::from_be_bytes([out[2], out[3]]), 4010);

    let (mut st, slot, stored) = held_subscriber();
    let id = st.conns[slot as usize].id;
    st.hold(id, "t".into());
    st.handle_msg(stored(6));
    st.handle_msg(stored(7));
    st.release_answered(id, "t", None, Some(("e1".into(), 5)));
    let out = String::from_utf8_lossy(&written(&mut st, slot)).into_owned();
    assert!(
        out.contains("\"offset\":6") && out.contains("\"offset\":7"),
        "{out}"
    );
}

/// Cluster, an answered hold (top 5) and the connection's own publication (offset 6) that it
/// excluded itself from: the hold must still see offset 6, so offset 7 is delivered — before,
/// 7 looked like a gap after 5 and the publisher was closed with 4010.
#[test]
fn an_excluded_own_publication_keeps_an_answered_hold_gapless() {
    let (mut st, slot, stored) = held_subscriber();
    let id = st.conns[slot as usize].id;
    st.hold(id, "t".into());
    st.release_answered(id, "t", None, Some(("e1".into(), 5)));
    written(&mut st, slot);
    let own = inbox::StoredPub {
        topic: "t".into(),
        frame: crate::proto::envelope::stored_publication("t", "m", None, 6),
        exclude: Some(id),
        epoch: "e1".into(),
        offset: 6,
    };
    st.handle_msg(ShardMsg::Stored(Arc::new([own])));
    st.handle_msg(stored(7));
    let out = String::from_utf8_lossy(&written(&mut st, slot)).into_owned();
    assert!(
        out.contains("\"offset\":7") && !out.contains("\"offset\":6"),
        "offset 7 delivered, its own 6 not: {out}"
    );
}

/// Cluster, two subscribes of one topic both waiting, answered top 5 then top 7: the newer
/// answer supersedes the older answered hold, so offset 8 is delivered — before, the older
/// hold saw 8 after 5 and closed the connection with 4010.
#[test]
fn a_newer_answer_supersedes_an_older_answered_hold() {
    let (mut st, slot, stored) = held_subscriber();
    let id = st.conns[slot as usize].id;
    st.hold(id, "t".into());
    st.hold(id, "t".into());
    st.release_answered(id, "t", None, Some(("e1".into(), 5)));
    st.release_answered(id, "t", None, Some(("e1".into(), 7)));
    written(&mut st, slot);
    st.handle_msg(stored(8));
    let out = written(&mut st, slot);
    assert_ne!(out.first(), Some(&0x88), "not closed");
    assert!(
        String::from_utf8_lossy(&out).contains("\"offset\":8"),
        "{}",
        String::from_utf8_lossy(&out)
    );
}

/// Cluster, Socket.IO with connection state recovery: a publication a hold kept goes out with
/// its offset argument like any other (`42["m","6:e1:t"]`), so the client's recovery offset
/// does not fall behind what it received.
#[test]
fn kept_publications_reach_socket_io_with_their_offset() {
    let mut hub = HubShared::for_bench(1);
    hub.cluster.remote_store = true;
    hub.config.socketio_namespaces = vec!["/".into()];
    let mut st = ShardState::new(0, Arc::new(hub));
    let slot = upgraded_with(&mut st, super::polling::SIO_UPGRADE);
    st.on_input(slot, &mut frame(1, b"40"));
    st.on_input(slot, &mut frame(1, br#"421["join","t"]"#));
    let out = String::from_utf8_lossy(&written(&mut st, slot)).into_owned();
    assert!(out.contains("431"), "joined: {out}");
    let id = st.conns[slot as usize].id;
    st.hold(id, "t".into());
    let sp = inbox::StoredPub {
        topic: "t".into(),
        frame: crate::proto::envelope::stored_publication("t", "m", None, 6),
        exclude: None,
        epoch: "e1".into(),
        offset: 6,
    };
    st.handle_msg(ShardMsg::Stored(Arc::new([sp])));
    assert_eq!(written(&mut st, slot), b"", "kept while the hold waits");
    st.release_answered(id, "t", None, Some(("e1".into(), 5)));
    let out = String::from_utf8_lossy(&written(&mut st, slot)).into_owned();
    assert!(out.contains(r#"42["m","6:e1:t"]"#), "{out}");
}

/// A cluster shard (the store delivers) with one connection subscribed to `t`, and a maker of
/// stored publications of `t` in epoch `e1`.
pub(in crate::shard) fn held_subscriber() -> (ShardState, u32, impl Fn(u64) -> ShardMsg) {
    let mut hub = HubShared::for_bench(1);
    hub.cluster.remote_store = true;
    let mut st = ShardState::new(0, Arc::new(hub));
    let slot = upgraded(&mut st);
    st.on_input(
        slot,
        &mut frame(1, br#"{"event":"subscribe","topic":"t","id":1}"#),
    );
    written(&mut st, slot);
    let epoch: Arc<str> = "e1".into();
    let stored = move |offset: u64| {
        let sp = inbox::StoredPub {
            topic: "t".into(),
            frame: crate::proto::envelope::stored_publication("t", "m", None, offset),
            exclude: None,
            epoch: epoch.clone(),
            offset,
        };
        ShardMsg::Stored(Arc::new([sp]))
    };
    (st, slot, stored)
}
