//! The cluster thread reads its Redis subscriber connections itself (`proto::resp`): the frames
//! its bench and fuzz target are fed must be the bytes a real `redis-server` writes. This test
//! subscribes a raw socket, publishes binary payloads (CR, LF, NUL, `$`, `*` inside) and
//! compares what arrives with `bench_support::cluster::resp_message`, byte for byte.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::redis::Redis;
use ringhub::bench_support::cluster::{resp_message, resp_publications};

fn command(args: &[&[u8]]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
    out
}

fn read_exactly(s: &mut TcpStream, n: usize) -> Vec<u8> {
    let mut buf = vec![0u8; n];
    s.read_exact(&mut buf).expect("bytes from redis-server");
    buf
}

#[test]
fn generated_frames_match_redis_server() {
    let Some(redis) = Redis::start() else { return };
    let addr = ("127.0.0.1", redis.port);
    let mut sub = TcpStream::connect(addr).unwrap();
    sub.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    sub.write_all(&command(&[b"SUBSCRIBE", b"rh:t:chat:0"]))
        .unwrap();
    let confirm = b"*3\r\n$9\r\nsubscribe\r\n$11\r\nrh:t:chat:0\r\n:1\r\n";
    assert_eq!(read_exactly(&mut sub, confirm.len()), confirm);

    // Three real cluster messages (wire format, binary sequence numbers) and one with every
    // byte RESP cares about.
    let stream = resp_publications("n2", 0x0d0a_2400_2a0d_0a00, 3, &["chat:0"], 64);
    let mut expected = stream.clone();
    let odd: Vec<u8> = b"\r\n$-1\r\n*3\r\n\x00\xff".repeat(5);
    resp_message(&mut expected, "rh:t:chat:0", &odd);
    // The payloads, taken back out of the generated frames by the parser under test.
    let mut payloads = Vec::new();
    let mut at = 0;
    let all = expected.clone();
    while at < all.len() {
        let (frame, n) = ringhub::fuzz_support::resp_frame(&all[at..]).expect("a frame");
        payloads.push(frame);
        at += n;
    }
    assert_eq!(payloads.len(), 4);
    assert_eq!(payloads[3], odd);

    let mut publisher = TcpStream::connect(addr).unwrap();
    publisher
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    for p in &payloads {
        publisher
            .write_all(&command(&[b"PUBLISH", b"rh:t:chat:0", p]))
            .unwrap();
        assert_eq!(read_exactly(&mut publisher, 4), b":1\r\n");
    }
    assert_eq!(read_exactly(&mut sub, expected.len()), expected);
}
