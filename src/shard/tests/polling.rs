//! Socket.IO long-polling sessions in the shard: the session entry with no socket, its output
//! answered to a parked GET, and what an idle session costs against a WebSocket connection.

use super::*;

pub(super) const SIO_UPGRADE: &[u8] = b"GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";

fn sio_shard() -> ShardState {
    let mut hub = HubShared::for_bench(1);
    hub.config.socketio_namespaces = vec!["/".into()];
    ShardState::new(0, Arc::new(hub))
}

/// A socket of the tests: a descriptor no other test connection has (never a real one: the
/// state only hands it back to the shell). A parked GET's socket changes entries, so tests
/// follow sockets, not slots.
fn fake_fd() -> i32 {
    static NEXT: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(1 << 20);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// The slot of the connection holding socket `fd` (not a session that borrowed it).
fn slot_of(st: &ShardState, fd: i32) -> u32 {
    st.conns
        .iter()
        .find(|(_, c)| c.fd == fd && !c.has(flag::POLL))
        .map_or(u32::MAX, |(slot, _)| slot as u32)
}

/// Takes what the state asked of the shell (closes, sockets that changed entries), as a shell
/// does every iteration: the tests' sockets are not real, so nothing is done with it.
fn shell_takes(st: &mut ShardState) {
    st.take_io(&mut Vec::new());
    st.take_rewatch(&mut Vec::new());
}

/// Sends `req` on a new connection (closed after its answer); returns its socket.
fn send(st: &mut ShardState, req: &str) -> i32 {
    let fd = fake_fd();
    let slot = st.accept(fd, ([127, 0, 0, 1], 2).into());
    st.on_input(slot, &mut req.as_bytes().to_vec());
    fd
}

/// The body of the answer written on socket `fd`, once the sessions' output has moved; the
/// connection is then released.
fn answer(st: &mut ShardState, fd: i32) -> String {
    st.take_dirty(&mut Vec::new());
    let slot = slot_of(st, fd);
    let out = written(st, slot);
    st.on_eof(slot);
    shell_takes(st);
    let text = String::from_utf8(out).expect("UTF-8");
    let (_, body) = text.split_once("\r\n\r\n").expect("a whole answer");
    body.to_string()
}

fn get(sid: &str) -> String {
    format!("GET /socket.io/?EIO=4&transport=polling&sid={sid} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
}

fn post(sid: &str, body: &str) -> String {
    format!(
        "POST /socket.io/?EIO=4&transport=polling&sid={sid} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// A session with the default namespace connected; its id.
fn session(st: &mut ShardState) -> String {
    let slot = send(
        st,
        "GET /socket.io/?EIO=4&transport=polling HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    let open = answer(st, slot);
    let v: serde_json::Value = serde_json::from_str(&open[1..]).expect("OPEN");
    let sid = v["sid"].as_str().expect("sid").to_string();
    let slot = send(st, &post(&sid, "40"));
    assert_eq!(answer(st, slot), "ok");
    let slot = send(st, &get(&sid));
    assert!(answer(st, slot).starts_with("40{\"sid\":"));
    sid
}

#[test]
fn a_parked_get_gets_the_output_of_later_posts() {
    let mut st = sio_shard();
    let sid = session(&mut st);
    let parked = send(&mut st, &get(&sid));
    // The shell looks before it waits: the session takes the GET's socket.
    shell_takes(&mut st);
    assert_eq!(slot_of(&st, parked), u32::MAX, "held by the session");
    st.take_dirty(&mut Vec::new());
    let slot = slot_of(&st, parked);
    assert!(written(&mut st, slot).is_empty(), "nothing yet: parked");
    let slot = send(
        &mut st,
        &post(&sid, "421[\"join\",\"r\"]\u{1e}422[\"leave\",\"r\"]"),
    );
    assert_eq!(answer(&mut st, slot), "ok");
    assert_eq!(answer(&mut st, parked), "431[]\u{1e}432[]");
    // A second GET while one is parked ends the session: 400 to it, the close to the first.
    let first = send(&mut st, &get(&sid));
    let second = send(&mut st, &get(&sid));
    assert_eq!(
        answer(&mut st, second),
        r#"{"code":3,"message":"Bad request"}"#
    );
    assert_eq!(answer(&mut st, first), "1");
    let slot = send(&mut st, &get(&sid));
    assert_eq!(
        answer(&mut st, slot),
        r#"{"code":1,"message":"Session ID unknown"}"#
    );
    assert_eq!(st.len(), 0, "the session's entry is released");
}

#[test]
fn an_idle_polling_session_costs_about_what_a_websocket_connection_does() {
    assert!(
        ShardState::poll_session_size() <= 48,
        "{} bytes of session state in the entry",
        ShardState::poll_session_size()
    );
    let mut st = sio_shard();
    // Warm what the shard keeps once (maps, the first entries).
    for _ in 0..4 {
        session(&mut st);
        let s = upgraded_with(&mut st, SIO_UPGRADE);
        st.on_input(s, &mut frame(1, b"40"));
        written(&mut st, s);
    }
    let before = heap::live();
    for _ in 0..100 {
        let s = upgraded_with(&mut st, SIO_UPGRADE);
        st.on_input(s, &mut frame(1, b"40"));
        written(&mut st, s);
    }
    let ws = (heap::live() - before) as f64 / 100.0;
    // A Socket.IO connection's state is boxed beside its entry (BENCHMARKS.md, "Socket.IO":
    // idle memory per client); 261 B when this bound was set.
    let sio = std::mem::size_of::<super::super::sio::SioConn>();
    assert!(sio <= 144, "SioConn is {sio} bytes");
    assert!(ws <= 320.0, "heap bytes per idle Socket.IO WebSocket {ws}");
    let before = heap::live();
    for _ in 0..100 {
        session(&mut st);
    }
    let polling = (heap::live() - before) as f64 / 100.0;
    // Beside the same entry and Socket.IO state, a session holds its polling state in its
    // entry (where a socket's buffers are: no heap); a WebSocket connection holds a socket
    // instead (the kernel's socket and TCP state: kilobytes). A session's HTTP connections are
    // gone between polls. What is left is the shard's maps growing during this batch.
    // 211.7 against 261.1 when this bound was set.
    eprintln!("heap per idle session {polling} B, per WebSocket {ws} B");
    assert!(
        polling <= ws,
        "heap bytes per idle polling session {polling} vs WebSocket connection {ws}"
    );
}

/// A client as the load generator's (`--transport polling`): one kept-alive connection for
/// the handshake, the CONNECT, its answer, then a GET parked on that same connection.
/// Returns the connection's socket.
fn kept_client(st: &mut ShardState) -> i32 {
    let fd = fake_fd();
    st.accept(fd, ([127, 0, 0, 1], 3).into());
    let exchange = |st: &mut ShardState, req: String| -> String {
        st.on_input(slot_of(st, fd), &mut req.into_bytes());
        st.take_dirty(&mut Vec::new());
        let slot = slot_of(st, fd);
        let out = String::from_utf8(written(st, slot)).expect("UTF-8");
        shell_takes(st);
        out.split_once("\r\n\r\n")
            .map_or(String::new(), |(_, b)| b.to_string())
    };
    let open = exchange(
        st,
        "GET /socket.io/?EIO=4&transport=polling HTTP/1.1\r\nHost: x\r\n\r\n".into(),
    );
    let v: serde_json::Value = serde_json::from_str(&open[1..]).expect("OPEN");
    let sid = v["sid"].as_str().expect("sid").to_string();
    let q = format!("/socket.io/?EIO=4&transport=polling&sid={sid}");
    let post = format!("POST {q} HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n40");
    assert_eq!(exchange(st, post), "ok");
    let get = format!("GET {q} HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(exchange(st, get.clone()).starts_with("40{\"sid\":"));
    assert_eq!(exchange(st, get), "", "parked");
    fd
}

/// A session whose waiting GET was answered before a tick came is busy: its next GET waits on
/// its own entry (moving the socket for a GET answered soon costs more than the entry), until a
/// tick finds it still waiting; a GET that waited past a tick makes the session idle again.
#[test]
fn a_busy_sessions_get_keeps_its_entry_until_a_tick() {
    let mut st = sio_shard();
    let sid = session(&mut st);
    let parked = send(&mut st, &get(&sid));
    shell_takes(&mut st);
    assert_eq!(slot_of(&st, parked), u32::MAX, "idle: lent at once");
    let slot = send(&mut st, &post(&sid, "421[\"join\",\"r\"]"));
    assert_eq!(answer(&mut st, slot), "ok");
    assert_eq!(
        answer(&mut st, parked),
        "431[]",
        "answered in the tick it parked in"
    );
    let parked = send(&mut st, &get(&sid));
    shell_takes(&mut st);
    assert_ne!(slot_of(&st, parked), u32::MAX, "busy: its own entry");
    st.lend_idle();
    shell_takes(&mut st);
    assert_eq!(
        slot_of(&st, parked),
        u32::MAX,
        "still waiting at the tick: lent"
    );
    let slot = send(&mut st, &post(&sid, "422[\"leave\",\"r\"]"));
    assert_eq!(answer(&mut st, slot), "ok");
    assert_eq!(answer(&mut st, parked), "432[]", "answered after a tick");
    let parked = send(&mut st, &get(&sid));
    shell_takes(&mut st);
    assert_eq!(slot_of(&st, parked), u32::MAX, "idle again: lent at once");
}

/// What an idle client costs the shard, entries and heap, over WebSocket and over
/// long-polling with a GET parked on its kept-alive connection (BENCHMARKS.md, "Polling client
/// breakdown"). The session holds its parked GET's socket (that connection's entry is freed)
/// and its polling state sits where a socket's buffers are: one entry, as a WebSocket client.
#[test]
fn an_idle_polling_client_costs_no_more_than_a_websocket_client() {
    use std::mem::size_of;
    let mut st = sio_shard();
    for _ in 0..4 {
        kept_client(&mut st);
        let s = upgraded_with(&mut st, SIO_UPGRADE);
        st.on_input(s, &mut frame(1, b"40"));
        written(&mut st, s);
    }
    let entry = size_of::<ConnEntry>();
    assert!(entry <= 256, "ConnEntry is {entry} bytes");
    let per = |st: &mut ShardState, f: &dyn Fn(&mut ShardState)| {
        let (n0, h0) = (st.len(), heap::live());
        for _ in 0..100 {
            f(st);
        }
        let entries = (st.len() - n0) as f64 / 100.0;
        let heap = (heap::live() - h0) as f64 / 100.0;
        (entries, heap, entries * entry as f64 + heap)
    };
    let (ws_entries, ws_heap, ws) = per(&mut st, &|st| {
        let s = upgraded_with(st, SIO_UPGRADE);
        st.on_input(s, &mut frame(1, b"40"));
        written(st, s);
    });
    let (poll_entries, poll_heap, polling) = per(&mut st, &|st| {
        kept_client(st);
    });
    eprintln!(
        "ConnEntry {entry} B, SioConn {} B, poll session state {} B",
        size_of::<super::super::sio::SioConn>(),
        ShardState::poll_session_size()
    );
    eprintln!("WebSocket: {ws_entries} entries + {ws_heap} B heap = {ws} B");
    eprintln!("polling: {poll_entries} entries + {poll_heap} B heap = {polling} B");
    assert_eq!(
        (ws_entries, poll_entries),
        (1.0, 1.0),
        "the parked GET's entry"
    );
    // 467.5 against 517.1 when this bound was set; 807.9 (two entries, the session's state
    // boxed) before, 900.3 against 533.1 before that.
    assert!(
        polling <= ws,
        "an idle polling client {polling} B vs a WebSocket one {ws} B"
    );
}

/// The socket a session holds while its GET waits goes back to an HTTP connection of its own
/// when it has input or its EOF (the shell watches it for that): an EOF then ends the session,
/// as for any waiting GET whose connection closes.
#[test]
fn a_borrowed_socket_with_input_goes_back_and_its_eof_ends_the_session() {
    let mut st = sio_shard();
    let fd = kept_client(&mut st);
    let sid = st
        .conns
        .iter()
        .find(|(_, c)| c.has(flag::POLL))
        .map(|(slot, _)| slot as u32)
        .expect("the session");
    assert_eq!(slot_of(&st, fd), u32::MAX, "the session holds the socket");
    assert!(st.lent(sid) && !st.wants_input(sid), "watched, not read");
    assert_eq!(st.len(), 1, "one entry while the GET waits");
    st.lent_ready(sid);
    let slot = slot_of(&st, fd);
    assert!(slot != u32::MAX && !st.lent(sid), "given back");
    assert!(matches!(st.conns[slot as usize].phase, Phase::Api));
    // Pipelined input waits for the GET's answer on its own entry, as on any other.
    st.on_input(slot, &mut b"GET /x".to_vec());
    assert!(st.conns[slot as usize].buffer_capacities().0 > 0, "kept");
    st.on_eof(slot);
    st.take_dirty(&mut Vec::new());
    written(&mut st, slot);
    shell_takes(&mut st);
    assert_eq!(st.len(), 0, "the connection and its session are gone");
}
