//! TLS: SSE over TLS and plain text, a large echo and a burst of publications over wss://.

use super::*;

// ---------------------------------------------------------------------------------------------
// 7. SSE streams over TLS and in plain text, with publications from the library handle.

struct TlsFiles {
    dir: std::path::PathBuf,
    cert: rcgen::CertifiedKey<rcgen::KeyPair>,
}

fn tls_files(tag: &str) -> TlsFiles {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let dir = std::env::temp_dir().join(format!("ringhub-engine-{}-{tag}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("cert.pem"), cert.cert.pem()).unwrap();
    std::fs::write(dir.join("key.pem"), cert.signing_key.serialize_pem()).unwrap();
    TlsFiles { dir, cert }
}

/// A TLS client connection to `addr` trusting `files`' certificate.
async fn tls_connect(
    files: &TlsFiles,
    addr: SocketAddr,
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let connector = tls_connector(files.cert.cert.der().clone());
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    tokio::time::timeout(LONG_GUARD, connector.connect(name, tcp))
        .await
        .expect("TLS handshake timed out")
        .expect("TLS handshake")
}

/// The length of `got` and its last bytes, for failure messages.
fn tail(got: &[u8]) -> String {
    let from = got.len().saturating_sub(200);
    format!(
        "{} bytes, ending {:?}",
        got.len(),
        String::from_utf8_lossy(&got[from..])
    )
}

/// Reads from `r` until `got` contains `want`.
async fn read_until<R: tokio::io::AsyncRead + Unpin>(
    label: &str,
    r: &mut R,
    got: &mut Vec<u8>,
    want: &str,
) {
    let mut buf = vec![0u8; 16 * 1024];
    // One deadline for the whole wait: SSE heartbeats must not keep a broken stream alive.
    let deadline = tokio::time::Instant::now() + LONG_GUARD;
    while !String::from_utf8_lossy(got).contains(want) {
        let n = tokio::time::timeout_at(deadline, tokio::io::AsyncReadExt::read(r, &mut buf))
            .await
            .unwrap_or_else(|_| {
                panic!("{label}: timed out waiting for {want:?}; got {}", tail(got))
            })
            .expect("read");
        assert!(
            n > 0,
            "stream ended; got {:?}",
            String::from_utf8_lossy(got)
        );
        got.extend_from_slice(&buf[..n]);
    }
}

async fn sse_stream<R: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    io: IoMode,
    label: &str,
    h: &ServerHandle,
    s: &mut R,
) {
    tokio::io::AsyncWriteExt::write_all(
        s,
        b"GET /sse?topics=feed,big HTTP/1.1\r\nHost: localhost\r\n\r\n",
    )
    .await
    .unwrap();
    let mut got = Vec::new();
    // The head comes once the subscriptions are active on every shard.
    read_until(&format!("{io:?} {label}"), s, &mut got, "\r\n\r\n").await;
    let text = String::from_utf8_lossy(&got).into_owned();
    assert!(
        text.starts_with("HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"),
        "{io:?} {label}: {text}"
    );
    got.clear();
    h.publish("feed", "a", &json!({"n": 1})).unwrap();
    h.publish("other", "x", &json!(0)).unwrap();
    let big = "b".repeat(100_000); // many TLS records
    h.publish("big", "b", &big).unwrap();
    h.publish("feed", "c", &json!("end")).unwrap();
    let want = format!(
        "data: {{\"topic\":\"feed\",\"event\":\"a\",\"data\":{{\"n\":1}}}}\n\ndata: {{\"topic\":\"big\",\"event\":\"b\",\"data\":\"{big}\"}}\n\ndata: {{\"topic\":\"feed\",\"event\":\"c\",\"data\":\"end\"}}\n\n"
    );
    read_until(&format!("{io:?} {label}"), s, &mut got, "\"end\"}\n\n").await;
    let text = String::from_utf8_lossy(&got);
    assert!(
        text == want,
        "{io:?} {label}: SSE stream differs ({} bytes, want {})",
        text.len(),
        want.len()
    );
}

async fn sse_tls_and_plain(io: IoMode) {
    // Plain first, then the same stream over TLS.
    let Some(h) = start(builder(io).pubsub()) else {
        return;
    };
    let mut tcp = tokio::net::TcpStream::connect(h.local_addr())
        .await
        .unwrap();
    sse_stream(io, "plain", &h, &mut tcp).await;
    drop(tcp);
    stop_server(h);

    let files = tls_files(&format!("{io:?}"));
    let Some(h) = server_with(
        io,
        &[
            (
                "tls.cert_file",
                files.dir.join("cert.pem").to_str().unwrap(),
            ),
            ("tls.key_file", files.dir.join("key.pem").to_str().unwrap()),
        ],
        |b| b,
    ) else {
        return;
    };
    let mut tls = tls_connect(&files, h.local_addr()).await;
    let _ = std::fs::remove_dir_all(&files.dir);
    sse_stream(io, "TLS", &h, &mut tls).await;
    drop(tls);
    stop_server(h);
}

#[tokio::test]
async fn sse_tls_and_plain_uring() {
    sse_tls_and_plain(IoMode::Uring).await;
}

#[tokio::test]
async fn sse_tls_and_plain_epoll() {
    sse_tls_and_plain(IoMode::Epoll).await;
}

// ---------------------------------------------------------------------------------------------
// 8b. Large output over TLS (wss://): a 200 KB echo, and a burst of publications that adds up to
// more than rustls buffers by default (64 KiB of plaintext).

async fn large_echo_over_tls(io: IoMode) {
    let files = tls_files(&format!("big-{io:?}"));
    let Some(h) = server_with(
        io,
        &[
            (
                "tls.cert_file",
                files.dir.join("cert.pem").to_str().unwrap(),
            ),
            ("tls.key_file", files.dir.join("key.pem").to_str().unwrap()),
        ],
        |b| b.echo_path("/echo"),
    ) else {
        return;
    };
    let port = h.local_addr().port();
    let tls = tls_connect(&files, h.local_addr()).await;
    let (mut echo, _) =
        tokio_tungstenite::client_async(format!("wss://localhost:{port}/echo"), tls)
            .await
            .expect("wss upgrade");
    let msg: String = (0..200_000u32)
        .map(|i| (b'a' + (i % 26) as u8) as char)
        .collect();
    futures_util::SinkExt::send(&mut echo, WsMsg::Text(msg.clone()))
        .await
        .unwrap();
    match tokio::time::timeout(LONG_GUARD, echo.next())
        .await
        .expect("echo timed out")
    {
        Some(Ok(WsMsg::Text(t))) => assert!(t == msg, "{io:?}: echo differs ({} bytes)", t.len()),
        other => panic!("{io:?}: 200 KB echo over TLS failed: {other:?}"),
    }
    drop(echo);
    stop_server(h);
    let _ = std::fs::remove_dir_all(&files.dir);
}

#[tokio::test]
async fn large_echo_over_tls_uring() {
    large_echo_over_tls(IoMode::Uring).await;
}

#[tokio::test]
async fn large_echo_over_tls_epoll() {
    large_echo_over_tls(IoMode::Epoll).await;
}

async fn tls_publication_burst(io: IoMode) {
    let files = tls_files(&format!("burst-{io:?}"));
    let Some(h) = server_with(
        io,
        &[
            (
                "tls.cert_file",
                files.dir.join("cert.pem").to_str().unwrap(),
            ),
            ("tls.key_file", files.dir.join("key.pem").to_str().unwrap()),
        ],
        |b| b.outbound_queue(64 << 20),
    ) else {
        return;
    };
    let port = h.local_addr().port();
    // 400 publications of 20 KB (8 MB, more than the kernel's socket buffers take, under the
    // 64 MB queue) to a wss subscriber that reads only afterwards: frames pile up behind a
    // blocked send and are then encrypted together.
    let tls = tls_connect(&files, h.local_addr()).await;
    let (mut sub, _) = tokio_tungstenite::client_async(format!("wss://localhost:{port}/ws"), tls)
        .await
        .expect("wss upgrade");
    subscribe(&mut sub, "burst", 1).await;
    let chunk = "q".repeat(20_000);
    for n in 0..400 {
        h.publish("burst", "e", &json!({"n": n, "c": chunk}))
            .unwrap();
    }
    for n in 0..400 {
        let v = match tokio::time::timeout(LONG_GUARD, sub.next())
            .await
            .expect("timed out")
        {
            Some(Ok(WsMsg::Text(t))) => serde_json::from_str::<Value>(&t).unwrap(),
            other => panic!("{io:?}: publication {n} over TLS: {other:?}"),
        };
        assert_eq!(v["data"]["n"], n, "{io:?}");
        assert!(
            v["data"]["c"] == chunk.as_str(),
            "{io:?}: publication {n} mangled"
        );
    }
    drop(sub);
    stop_server(h);
    let _ = std::fs::remove_dir_all(&files.dir);
}

#[tokio::test]
async fn tls_publication_burst_uring() {
    tls_publication_burst(IoMode::Uring).await;
}

#[tokio::test]
async fn tls_publication_burst_epoll() {
    tls_publication_burst(IoMode::Epoll).await;
}
