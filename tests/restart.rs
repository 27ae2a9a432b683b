//! The binary restarted on its port right after a crash (issue 21, item 11): `kill -9` of a
//! server that served a connection, then a new one on the same port at once, must serve (the
//! io_uring shell's listener lingers in the kernel while the dead ring is torn down); a second
//! live server on that port is still refused.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};

use common::*;

fn spawn(io: &str, listen: &str) -> Child {
    Command::new(env!("CARGO_BIN_EXE_ringhub"))
        .args(["--listen", listen, "--shards", "2", "--io", io])
        .args(["--stats-interval", "0s", "--store", "memory"])
        .env("RINGHUB_LOG_FORMAT", "text")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn ringhub")
}

fn healthz(addr: &str) -> String {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.write_all(b"GET /healthz HTTP/1.1\r\nConnection: close\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

fn restart_right_after_kill_9(io: &str) {
    if io == "uring" && !shell_available(ringhub::IoMode::Uring) {
        return;
    }
    let mut first = spawn(io, "127.0.0.1:0");
    let addr = wait_listening(&mut first);
    // It served a connection (and its ring holds an accepted socket and the listener).
    assert!(healthz(&addr).starts_with("HTTP/1.1 200"), "{io}");
    // A WebSocket client still connected when it dies.
    let mut ws = TcpStream::connect(&addr).unwrap();
    ws.write_all(
        b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    )
    .unwrap();
    let mut head = [0u8; 12];
    ws.read_exact(&mut head).unwrap();
    assert_eq!(&head, b"HTTP/1.1 101", "{io}");
    first.kill().expect("kill -9");
    first.wait().unwrap();
    // At once, on the same port.
    let mut second = spawn(io, &addr);
    let mut err = second.stderr.take().unwrap();
    let out = second.stdout.take().unwrap();
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(out));
    let listening = lines.any(|l| l.is_ok_and(|l| l.contains("listening addr=")));
    if !listening {
        let status = second.wait().unwrap();
        let mut e = String::new();
        let _ = err.read_to_string(&mut e);
        panic!("{io}: the restart on {addr} did not listen ({status}): {e}");
    }
    std::thread::spawn(move || for _ in lines {});
    assert!(healthz(&addr).starts_with("HTTP/1.1 200"), "{io}");
    // A second live server on the port is still refused, and the first keeps serving.
    let third = spawn(io, &addr);
    let o = third.wait_with_output().unwrap();
    assert!(!o.status.success(), "{io}: a second live server started");
    let text = String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr);
    assert!(text.contains("address already in use"), "{io}: {text}");
    assert!(healthz(&addr).starts_with("HTTP/1.1 200"), "{io}");
    second.kill().unwrap();
    second.wait().unwrap();
    drop(ws);
}

#[test]
fn restart_right_after_kill_9_uring() {
    restart_right_after_kill_9("uring");
}

#[test]
fn restart_right_after_kill_9_epoll() {
    restart_right_after_kill_9("epoll");
}

/// Sends `fd` over `via` (SCM_RIGHTS): while the message is unread, no process's descriptor
/// table holds it — like the listener of a dead server that its io_uring ring still holds.
fn send_fd(via: &std::os::unix::net::UnixStream, fd: i32) {
    use std::os::fd::AsRawFd;
    let mut byte = [0u8; 1];
    let mut iov = libc::iovec {
        iov_base: byte.as_mut_ptr().cast(),
        iov_len: 1,
    };
    // SAFETY: a cmsg buffer sized by CMSG_SPACE for one descriptor, filled through the libc
    // macros; sendmsg reads only these buffers.
    unsafe {
        let space = libc::CMSG_SPACE(std::mem::size_of::<i32>() as u32) as usize;
        let mut cbuf = vec![0u8; space];
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = cbuf.as_mut_ptr().cast();
        msg.msg_controllen = space as _;
        let c = libc::CMSG_FIRSTHDR(&msg);
        (*c).cmsg_level = libc::SOL_SOCKET;
        (*c).cmsg_type = libc::SCM_RIGHTS;
        (*c).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<i32>() as u32) as _;
        std::ptr::copy_nonoverlapping(
            (&fd as *const i32).cast::<u8>(),
            libc::CMSG_DATA(c),
            std::mem::size_of::<i32>(),
        );
        assert_eq!(libc::sendmsg(via.as_raw_fd(), &msg, 0), 1, "sendmsg");
    }
}

/// A port held by a listener no live process owns (the state a `kill -9`ed io_uring server
/// leaves for a moment): the new server waits for it to go instead of refusing at once.
fn waits_for_a_leftover_listener(io: &str) {
    use std::os::fd::AsRawFd;
    if io == "uring" && !shell_available(ringhub::IoMode::Uring) {
        return;
    }
    let leftover = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = leftover.local_addr().unwrap().to_string();
    let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
    send_fd(&a, leftover.as_raw_fd());
    drop(leftover);
    let mut server = spawn(io, &addr);
    let mut err = server.stderr.take().unwrap();
    let out = server.stdout.take().unwrap();
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(out));
    let waiting = lines.any(|l| l.is_ok_and(|l| l.contains("no live process owns")));
    if !waiting {
        let status = server.wait().unwrap();
        let mut e = String::new();
        let _ = err.read_to_string(&mut e);
        panic!("{io}: refused {addr} instead of waiting for the leftover listener ({status}): {e}");
    }
    // The leftover goes (the message holding it is discarded): the server binds and serves.
    drop((a, b));
    let listening = lines.any(|l| l.is_ok_and(|l| l.contains("listening addr=")));
    assert!(listening, "{io}: did not listen once the leftover was gone");
    std::thread::spawn(move || for _ in lines {});
    assert!(healthz(&addr).starts_with("HTTP/1.1 200"), "{io}");
    server.kill().unwrap();
    server.wait().unwrap();
}

#[test]
fn waits_for_a_leftover_listener_uring() {
    waits_for_a_leftover_listener("uring");
}

#[test]
fn waits_for_a_leftover_listener_epoll() {
    waits_for_a_leftover_listener("epoll");
}
