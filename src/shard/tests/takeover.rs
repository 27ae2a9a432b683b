//! Server context takeover (`[compression] context_takeover`) in the shard: who gets which
//! frame, and what a kept window costs (BENCHMARKS.md, "Context takeover").

use super::*;

/// A shard that keeps the window of the clients that allow it.
fn kept_shard() -> ShardState {
    let mut hub = HubShared::for_bench(1);
    hub.config.compression.context_takeover = true;
    ShardState::new(0, Arc::new(hub))
}

/// [`UPGRADE`] offering permessage-deflate without context takeover.
fn shared_upgrade() -> Vec<u8> {
    let at = UPGRADE.len() - 2;
    [
        &UPGRADE[..at],
        b"Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover\r\n\r\n",
    ]
    .concat()
}

#[test]
fn kept_connections_get_frames_of_their_own_and_others_share_one() {
    let mut st = kept_shard();
    let slots = [
        upgraded_with(&mut st, &deflate_upgrade()),
        upgraded_with(&mut st, &deflate_upgrade()),
        upgraded_with(&mut st, &shared_upgrade()),
        upgraded_with(&mut st, &shared_upgrade()),
    ];
    let ids = slots.map(|s| st.conns[s as usize].id);
    for s in slots {
        st.on_input(s, &mut frame(1, br#"{"event":"subscribe","topic":"t"}"#));
    }
    for id in ids {
        st.take_queued(id);
    }
    assert_eq!(
        st.deflater.kept_streams(),
        0,
        "none before a compressed message"
    );
    let data = format!("\"{}\"", "compressible ".repeat(40));
    let pubf = envelope::publication("t", "m", Some(data.as_bytes()));
    for _ in 0..2 {
        st.deliver_local("t", &pubf, None);
    }
    let [k1, k2, s1, s2] = ids.map(|id| st.take_queued(id));
    assert_eq!(st.deflater.kept_streams(), 2);
    assert_eq!(s1[0].as_ptr(), s2[0].as_ptr(), "shared: one encoding");
    assert_eq!(s1[0], s1[1], "shared: each message on its own");
    assert_ne!(k1[0].as_ptr(), k2[0].as_ptr(), "kept: one encoding each");
    assert_eq!(k1, k2, "the same bytes: two windows in the same state");
    assert!(
        k1[1].len() * 3 < k1[0].len(),
        "the second refers to the first"
    );
    // Closing frees the connection's stream.
    st.on_input(slots[0], &mut frame(8, &1000u16.to_be_bytes()));
    assert_eq!(st.deflater.kept_streams(), 1);
}

#[test]
fn a_kept_window_costs_hundreds_of_kilobytes() {
    let mut st = kept_shard();
    let data = format!("\"{}\"", "compressible ".repeat(40));
    let pubf = envelope::publication("t", "m", Some(data.as_bytes()));
    // Warm the map so that its growth is not counted.
    drop(st.deflater.frame_kept(u64::MAX, &pubf, 15, false));
    for bits in [15u8, 9] {
        let before = heap::live();
        let frames: Vec<_> = (0..10)
            .map(|k| {
                st.deflater
                    .frame_kept(u64::from(bits) * 100 + k, &pubf, bits, false)
            })
            .collect();
        drop(frames);
        let per_conn = (heap::live() - before) / 10;
        eprintln!("context takeover, window {bits} bits: {per_conn} heap bytes per connection");
        assert!(
            (100_000..1_000_000).contains(&per_conn),
            "{per_conn} bytes for a window of {bits} bits"
        );
    }
}
