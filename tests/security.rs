//! The door policy over real sockets: JWT refusals, permissions, `user:` privacy, origins, IP
//! lists, connection caps, handshake size, rate limits, TLS, and invalid configuration.

mod common;

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use common::*;
use futures_util::SinkExt;
use jsonwebtoken::{encode, EncodingKey, Header};
use ringhub::guard::Guard;
use ringhub::settings::Settings;
use ringhub::{IoMode, ServerHandle};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message as WsMsg;

const SECRET: &str = "test-secret-that-is-long-enough-for-hs256!";

/// Starts a pub/sub server whose policy comes from settings `(key, value)` pairs, exactly as an
/// operator's file or environment would give them.
fn server(io: IoMode, settings: &[(&str, &str)]) -> Option<ServerHandle> {
    let mut s = Settings::default();
    for (k, v) in settings {
        s.set(k, v, "test").unwrap();
    }
    s.validate().unwrap();
    let guard = Guard::from_settings(&s).unwrap();
    start(builder(io).guard(guard).api_key("k").pubsub())
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn token(claims: Value) -> String {
    encode(
        &Header::default(),
        &claims,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

fn user_token(sub: &str) -> String {
    token(json!({"sub": sub, "exp": now() + 600}))
}

/// The status line of a raw HTTP request.
fn status(addr: SocketAddr, req: &str) -> String {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(GUARD)).unwrap();
    let _ = s.write_all(req.as_bytes());
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out.lines().next().unwrap_or("").to_string()
}

fn upgrade(path: &str, extra: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n{extra}\r\n")
}

async fn connect_with(h: &ServerHandle, path: &str, headers: &[(&str, &str)]) -> Ws {
    let mut req = format!("ws://{}{}", h.local_addr(), path)
        .into_client_request()
        .unwrap();
    for (k, v) in headers {
        let name =
            tokio_tungstenite::tungstenite::http::HeaderName::from_bytes(k.as_bytes()).unwrap();
        req.headers_mut().insert(name, v.parse().unwrap());
    }
    tokio_tungstenite::connect_async(req)
        .await
        .expect("upgrade")
        .0
}

async fn jwt(io: IoMode) {
    let Some(h) = server(io, &[("auth.jwt_secret", SECRET)]) else {
        return;
    };
    let a = h.local_addr();
    let refused = |path: &str| status(a, &upgrade(path, ""));
    assert_eq!(
        refused("/ws"),
        "HTTP/1.1 401 Unauthorized",
        "anonymous must be refused when a key is set"
    );
    let expired = token(json!({"sub": "a", "exp": now() - 3600}));
    assert_eq!(
        refused(&format!("/ws?token={expired}")),
        "HTTP/1.1 401 Unauthorized"
    );
    let forged = encode(
        &Header::default(),
        &json!({"sub": "a", "exp": now() + 60}),
        &EncodingKey::from_secret(b"wrong"),
    )
    .unwrap();
    assert_eq!(
        refused(&format!("/ws?token={forged}")),
        "HTTP/1.1 401 Unauthorized"
    );
    // alg "none": header {"alg":"none","typ":"JWT"} and an empty signature.
    let b64 = |v: Value| base64_url(v.to_string().as_bytes());
    let none = format!(
        "{}.{}.",
        b64(json!({"alg":"none","typ":"JWT"})),
        b64(json!({"sub":"a","exp": now() + 60}))
    );
    assert_eq!(
        refused(&format!("/ws?token={none}")),
        "HTTP/1.1 401 Unauthorized"
    );
    assert_eq!(refused("/ws?token=garbage"), "HTTP/1.1 401 Unauthorized");
    assert_eq!(refused("/sse?topics=a"), "HTTP/1.1 401 Unauthorized");

    // Valid tokens, by query and by header; `sub` becomes the user.
    let mut alice = connect(&h, &format!("/ws?token={}", user_token("alice"))).await;
    let bearer = format!("Bearer {}", user_token("bob"));
    let mut bob = connect_with(&h, "/ws", &[("Authorization", &bearer)]).await;
    subscribe(&mut alice, "*", 1).await;
    subscribe(&mut alice, "user:alice", 2).await;
    subscribe(&mut bob, "*", 3).await;
    // Someone else's private topic: forbidden to subscribe or publish, with the id.
    send(
        &mut bob,
        json!({"event":"subscribe","topic":"user:alice","id":4}),
    )
    .await;
    let e = recv(&mut bob).await;
    assert_eq!(
        (
            e["event"].clone(),
            e["id"].clone(),
            e["data"]["code"].clone()
        ),
        (json!("error"), json!(4), json!("forbidden"))
    );
    send(&mut bob, json!({"topic":"user:alice","event":"dm","id":5})).await;
    assert_eq!(recv(&mut bob).await["data"]["code"], "forbidden");
    // The API sends to alice's private topic: alice gets it (once, though two patterns match);
    // bob's `*` does not reveal it. The following public message proves nothing came before it.
    let resp = http_post(
        a,
        "/api/v1/send",
        &json!({"user":"alice","event":"dm","data":"psst"}),
    );
    assert_eq!(resp["data"]["delivered"], 1, "{resp}");
    send(&mut alice, json!({"topic":"public","event":"hello"})).await;
    assert_eq!(
        recv(&mut alice).await,
        json!({"topic":"user:alice","event":"dm","data":"psst"})
    );
    assert_eq!(
        recv(&mut alice).await,
        json!({"topic":"public","event":"hello"})
    );
    assert_eq!(
        recv(&mut bob).await,
        json!({"topic":"public","event":"hello"})
    );
    // Online lists users; disconnect closes with 4000.
    let online = http_get(a, "/api/v1/online");
    assert_eq!(
        online["data"]["users"],
        json!([{"user":"alice","connections":1},{"user":"bob","connections":1}])
    );
    let d = http_post(a, "/api/v1/disconnect", &json!({"user":"bob"}));
    assert_eq!(d["data"]["disconnected"], 1);
    assert_eq!(expect_close(&mut bob).await, CloseCode::Library(4000));
    drop((alice, bob));
    h.shutdown();
    h.join();
}

fn base64_url(b: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

fn http_raw(addr: SocketAddr, req: String) -> Value {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(GUARD)).unwrap();
    s.write_all(req.as_bytes()).unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    serde_json::from_str(out.split_once("\r\n\r\n").map_or("", |p| p.1)).unwrap_or(Value::Null)
}

fn http_post(addr: SocketAddr, path: &str, body: &Value) -> Value {
    let b = body.to_string();
    http_raw(
        addr,
        format!(
            "POST {path} HTTP/1.1\r\nConnection: close\r\nAuthorization: Bearer k\r\nContent-Length: {}\r\n\r\n{b}",
            b.len()
        ),
    )
}

fn http_get(addr: SocketAddr, path: &str) -> Value {
    http_raw(
        addr,
        format!("GET {path} HTTP/1.1\r\nConnection: close\r\nAuthorization: Bearer k\r\n\r\n"),
    )
}

per_shell!(async fn jwt);

#[tokio::test]
async fn claims_limit_topics() {
    let Some(h) = server(
        IoMode::Epoll,
        &[
            ("auth.jwt_secret", SECRET),
            ("permissions.publish", "chat:*"),
        ],
    ) else {
        return;
    };
    let t = token(json!({"sub": "c", "exp": now() + 600, "subscribe": ["chat:*"]}));
    let mut ws = connect(&h, &format!("/ws?token={t}")).await;
    subscribe(&mut ws, "chat:a", 1).await;
    send(&mut ws, json!({"event":"subscribe","topic":"news","id":2})).await;
    assert_eq!(recv(&mut ws).await["data"]["code"], "forbidden");
    send(&mut ws, json!({"topic":"news","event":"x","id":3})).await;
    assert_eq!(recv(&mut ws).await["data"]["code"], "forbidden");
    send(&mut ws, json!({"topic":"chat:a","event":"x","id":4})).await;
    assert_eq!(recv(&mut ws).await, json!({"topic":"chat:a","event":"x"}));
    assert_eq!(
        recv(&mut ws).await,
        json!({"event":"reply","id":4,"topic":"chat:a"})
    );
    drop(ws);
    h.shutdown();
    h.join();
}

#[tokio::test]
async fn origins_ips_caps_and_head_size() {
    let Some(h) = server(
        IoMode::Epoll,
        &[
            (
                "security.allowed_origins",
                "https://app.example.com,*.example.org",
            ),
            ("limits.max_connections_per_ip", "2"),
            ("limits.max_handshake_bytes", "1024"),
        ],
    ) else {
        return;
    };
    let a = h.local_addr();
    assert_eq!(
        status(a, &upgrade("/ws", "Origin: https://evil.com\r\n")),
        "HTTP/1.1 403 Forbidden"
    );
    let big = format!("X-Pad: {}\r\n", "p".repeat(2000));
    assert_eq!(
        status(a, &upgrade("/ws", &big)),
        "HTTP/1.1 431 Request Header Fields Too Large"
    );
    let good = connect_with(&h, "/ws", &[("Origin", "https://app.example.com")]).await;
    let sub = connect_with(&h, "/ws", &[("Origin", "https://a.b.example.org")]).await;
    // Two connections from 127.0.0.1 are open: the third is refused before the upgrade.
    assert_eq!(
        status(a, &upgrade("/ws", "")),
        "HTTP/1.1 429 Too Many Requests"
    );
    drop((good, sub));
    h.shutdown();
    h.join();
    let Some(h) = server(IoMode::Epoll, &[("security.deny_ips", "127.0.0.0/8")]) else {
        return;
    };
    assert_eq!(
        status(h.local_addr(), &upgrade("/ws", "")),
        "HTTP/1.1 403 Forbidden"
    );
    h.shutdown();
    h.join();
}

#[tokio::test]
async fn rate_limit_rejects_then_closes() {
    let Some(h) = server(
        IoMode::Epoll,
        &[("limits.messages_per_second", "1"), ("limits.burst", "3")],
    ) else {
        return;
    };
    let mut ws = connect(&h, "/ws").await;
    for i in 0..10u64 {
        ws.send(WsMsg::Text(
            json!({"topic":"t","event":"e","id":i}).to_string(),
        ))
        .await
        .unwrap();
    }
    // The burst passes, then rate_limited errors, then 1008 once rejections exceed the burst.
    let mut codes = Vec::new();
    let close = loop {
        match tokio::time::timeout(GUARD, futures_util::StreamExt::next(&mut ws))
            .await
            .unwrap()
        {
            Some(Ok(WsMsg::Text(t))) => {
                let v: Value = serde_json::from_str(&t).unwrap();
                codes.push(v["data"]["code"].as_str().unwrap_or("ok").to_string());
            }
            Some(Ok(WsMsg::Close(f))) => break f.unwrap().code,
            other => panic!("unexpected {other:?}"),
        }
    };
    assert_eq!(close, CloseCode::Policy);
    assert_eq!(&codes[..3], ["ok", "ok", "ok"], "{codes:?}");
    assert!(
        codes[3..].iter().all(|c| c == "rate_limited") && codes.len() >= 6,
        "{codes:?}"
    );
    assert!(h.stats().rate_limited >= 3);
    drop(ws);
    h.shutdown();
    h.join();
}

async fn tls(io: IoMode) {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let dir = std::env::temp_dir().join(format!("ringhub-tls-{}-{:?}", std::process::id(), io));
    std::fs::create_dir_all(&dir).unwrap();
    let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert_path, cert.cert.pem()).unwrap();
    std::fs::write(&key_path, cert.signing_key.serialize_pem()).unwrap();
    let Some(h) = server(
        io,
        &[
            ("tls.cert_file", cert_path.to_str().unwrap()),
            ("tls.key_file", key_path.to_str().unwrap()),
        ],
    ) else {
        return;
    };
    let connector = tls_connector(cert.cert.der().clone());
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let open = || async {
        let tcp = tokio::net::TcpStream::connect(h.local_addr())
            .await
            .unwrap();
        connector
            .connect(name.clone(), tcp)
            .await
            .expect("TLS handshake")
    };
    // wss:// round trip.
    let (mut ws, _) = tokio_tungstenite::client_async(
        format!("wss://localhost:{}/ws", h.local_addr().port()),
        open().await,
    )
    .await
    .unwrap();
    subscribe(&mut ws, "secure", 1).await;
    send(
        &mut ws,
        json!({"topic":"secure","event":"e","data":"over tls"}),
    )
    .await;
    assert_eq!(
        recv(&mut ws).await,
        json!({"topic":"secure","event":"e","data":"over tls"})
    );
    // https:// on the same port.
    let mut s = open().await;
    tokio::io::AsyncWriteExt::write_all(
        &mut s,
        b"GET /healthz HTTP/1.1\r\nConnection: close\r\nHost: localhost\r\n\r\n",
    )
    .await
    .unwrap();
    let mut out = Vec::new();
    let _ = tokio::io::AsyncReadExt::read_to_end(&mut s, &mut out).await;
    assert!(String::from_utf8_lossy(&out).starts_with("HTTP/1.1 200 OK"));
    // Plain text to the TLS port gets a TLS alert, never an HTTP answer.
    assert!(!status(h.local_addr(), &upgrade("/ws", "")).starts_with("HTTP"));
    drop(ws);
    h.shutdown();
    h.join();
    let _ = std::fs::remove_dir_all(dir);
}

per_shell!(async fn tls);

/// `ringhub check-config FILE`'s exit status and output.
fn check_config(file: &std::path::Path) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_ringhub"))
        .arg("check-config")
        .arg(file)
        .output()
        .unwrap()
}

#[test]
fn invalid_config_is_one_line_and_exit_2() {
    let dir = std::env::temp_dir().join(format!("ringhub-cfg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("bad.toml");
    std::fs::write(&file, "[limits]\nburst = \"lots\"\n").unwrap();
    let out = check_config(&file);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("limits.burst") && err.contains("lots"),
        "{err}"
    );
    let good = dir.join("good.toml");
    std::fs::write(
        &good,
        "[auth]\njwt_secret = \"a-very-long-secret-value-0123456789\"\n[api]\nkey = \"xyz\"\n",
    )
    .unwrap();
    let out = check_config(&good);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(
        !shown.contains("a-very-long-secret") && !shown.contains("xyz"),
        "secrets must be masked: {shown}"
    );
    // The example file as shipped: effective limits printed, no warning; with its placeholder
    // secret uncommented, a warning (that does not print the secret).
    let example = include_str!("../ringhub.example.toml");
    let ex = dir.join("example.toml");
    std::fs::write(&ex, example).unwrap();
    let out = check_config(&ex);
    assert_eq!(out.status.code(), Some(0));
    let shown = String::from_utf8_lossy(&out.stdout);
    let expect = format!(
        "max_connections = {} # default",
        ringhub::settings::default_max_connections()
    );
    assert!(shown.contains(&expect), "{expect:?} in {shown}");
    assert!(shown.contains("messages_per_second = 1000\n"), "{shown}");
    assert!(shown.contains("max_connections_per_ip = 1000\n"), "{shown}");
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let placeholder = example.replace(
        "# jwt_secret = \"change-me-to-a-long-random-string\"",
        "jwt_secret = \"change-me-to-a-long-random-string\"",
    );
    assert_ne!(placeholder, example, "the example has the placeholder line");
    std::fs::write(&ex, placeholder).unwrap();
    let out = check_config(&ex);
    assert_eq!(out.status.code(), Some(0));
    let warned = String::from_utf8_lossy(&out.stderr);
    assert!(
        warned.contains("warning: auth.jwt_secret is the placeholder"),
        "{warned}"
    );
    assert!(!warned.contains("change-me-to-a-long"), "{warned}");
    let _ = std::fs::remove_dir_all(dir);
}
