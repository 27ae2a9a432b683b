//! The refresh proxy (a session extended, a revoked one disconnected), `on_down = "allow"` for
//! every proxy, and SSE streams' topics passing the subscribe proxy.

use super::*;
use ringhub::config::proxy::OnDown;

fn allowed_when_down(url: String) -> Option<Arc<ProxyEndpoint>> {
    let mut e = ProxyEndpoint::new(url);
    e.on_down = OnDown::Allow;
    Some(Arc::new(e))
}

/// One shard: every connection's expiry is checked at the same tick.
fn one_shard(io: IoMode, proxy: ProxyConfig) -> Option<ServerHandle> {
    let cfg = Config {
        proxy,
        ..Config::default()
    };
    start(builder_with(io, cfg).shards(1).api_key("k").pubsub())
}

/// The proxy's calls and errors of `kind` in `/metrics`.
fn proxy_metric(h: &ServerHandle, line: &str) -> Option<u64> {
    let (status, metrics) = http_exchange(
        h.local_addr(),
        "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status, 200);
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(line)?.trim().parse().ok())
}

/// Waits (under the guard) until the metric reaches `n`: the refresh runs at the shard's timer
/// tick, which the test cannot trigger.
async fn metric_reaches(h: &ServerHandle, line: &str, n: u64) {
    let deadline = tokio::time::Instant::now() + GUARD;
    while proxy_metric(h, line).unwrap_or(0) < n {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{line} never reached {n}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn refresh_extends_or_disconnects(io: IoMode) {
    let backend = Backend::start();
    let Some(h) = one_shard(io, proxies(&backend)) else {
        return;
    };
    // Dave's session expires at once: the backend extends it by an hour.
    let (mut dave, _) = login(&h, "tok-dave").await;
    assert_eq!(backend.next_line(), "refresh dave");
    // Erin's expires at once too, and the backend revoked it. Her refresh is the next call the
    // backend sees: Dave, extended, is not asked again at that tick (one shard, one timer).
    let (mut erin, _) = login(&h, "tok-erin").await;
    assert_eq!(backend.next_line(), "refresh erin");
    assert_eq!(u16::from(expect_close(&mut erin).await), 4401);
    // Dave's connection goes on.
    let info = request(&mut dave, json!({"event":"info","topic":"","id":1})).await;
    assert_eq!(info["data"]["user"], "dave", "{info}");
    drop(dave);
    stop_server(h);
}
per_shell!(async fn refresh_extends_or_disconnects);

/// The refresh proxy down: refused (the default) closes with 4503; allowed keeps the connection
/// (and asks again a minute later).
async fn refresh_backend_down(io: IoMode) {
    let backend = Backend::start();
    for on_down in [OnDown::Refuse, OnDown::Allow] {
        let mut refresh = ProxyEndpoint::new(dead_url("/refresh"));
        refresh.on_down = on_down;
        let proxy = ProxyConfig {
            connect: ep(backend.url("/connect")),
            refresh: Some(Arc::new(refresh)),
            ..Default::default()
        };
        let Some(h) = one_shard(io, proxy) else {
            return;
        };
        let (mut dave, _) = login(&h, "tok-dave").await;
        let failed = r#"ringhub_proxy_errors_total{proxy="refresh",kind="unavailable"}"#;
        if on_down == OnDown::Refuse {
            assert_eq!(u16::from(expect_close(&mut dave).await), 4503);
        } else {
            metric_reaches(&h, failed, 1).await;
            let info = request(&mut dave, json!({"event":"info","topic":"","id":1})).await;
            assert_eq!(info["data"]["user"], "dave", "{info}");
        }
        drop(dave);
        stop_server(h);
    }
}
per_shell!(async fn refresh_backend_down);

/// Every proxy down with `on_down = "allow"`: the client goes on as if no proxy were
/// configured — except an RPC, which has no answer without the backend.
async fn backend_down_allowed(io: IoMode) {
    let proxy = ProxyConfig {
        connect: allowed_when_down(dead_url("/connect")),
        rpc: allowed_when_down(dead_url("/rpc")),
        topics: vec![TopicProxies {
            pattern: "project:*".into(),
            subscribe: allowed_when_down(dead_url("/subscribe")),
            publish: allowed_when_down(dead_url("/publish")),
            ..Default::default()
        }],
        ..Default::default()
    };
    let Some(h) = server(io, proxy) else {
        return;
    };
    // Connected without the backend: no user (no token), the `connected` frame all the same.
    let (mut a, hello) = login(&h, "tok-alice").await;
    assert_eq!(hello["data"]["user"], Value::Null, "{hello}");
    let (mut b, _) = login(&h, "tok-bob").await;
    for ws in [&mut a, &mut b] {
        let r = request(ws, json!({"event":"subscribe","topic":"project:1","id":1})).await;
        assert_eq!(r, json!({"event":"reply","id":1,"topic":"project:1"}));
    }
    let r = request(
        &mut a,
        json!({"event":"comment","topic":"project:1","data":{"text":"hi"},"id":2}),
    )
    .await;
    assert_eq!(r["event"], "reply", "{r}");
    assert_eq!(
        recv(&mut b).await,
        json!({"topic":"project:1","event":"comment","data":{"text":"hi"}})
    );
    let r = request(
        &mut a,
        json!({"event":"rpc","topic":"projects.mine","id":3}),
    )
    .await;
    assert_eq!(r["data"]["code"], "not_available", "{r}");
    for (kind, n) in [("connect", 2), ("subscribe", 2), ("publish", 1), ("rpc", 1)] {
        let line = format!(r#"ringhub_proxy_errors_total{{proxy="{kind}",kind="unavailable"}}"#);
        assert_eq!(proxy_metric(&h, &line), Some(n), "{line}");
    }
    drop((a, b));
    stop_server(h);
}
per_shell!(async fn backend_down_allowed);

/// An SSE stream's topics pass the subscribe proxy before the stream starts: a refused one
/// gets an `error` event naming it, the others are subscribed (with the backend's data).
async fn sse_topics_pass_the_subscribe_proxy(io: IoMode) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let backend = Backend::start();
    let Some(h) = server(io, proxies(&backend)) else {
        return;
    };
    let query = as_user("tok-alice").replace("/ws?", "");
    let mut s = tokio::net::TcpStream::connect(h.local_addr())
        .await
        .unwrap();
    let req =
        format!("GET /sse?topics=project:2,chat:x,project:1&{query} HTTP/1.1\r\nHost: x\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&got).contains("\"event\":\"connected\"") {
        let n = tokio::time::timeout(GUARD, s.read(&mut buf))
            .await
            .expect("SSE read timed out")
            .unwrap();
        assert!(n > 0, "stream ended: {}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&got).into_owned();
    let refused = r#""event":"error","topic":"project:2","data":{"code":"forbidden","message":"not a member of project 2"}"#;
    let subscribed = r#"{"topic":"project:1","event":"subscribed","data":{"project":"Apollo"}}"#;
    let (at_refused, at_subscribed) = (text.find(refused), text.find(subscribed));
    assert!(at_refused.is_some() && at_subscribed.is_some(), "{text}");
    assert!(at_refused < at_subscribed, "asked in order: {text}");
    got.clear();
    // The stream runs on project:1 and chat:x, not on project:2.
    h.publish("project:2", "no", &json!(0)).unwrap();
    h.publish("project:1", "yes", &json!(1)).unwrap();
    h.publish("chat:x", "also", &json!(2)).unwrap();
    while !String::from_utf8_lossy(&got).contains("\"event\":\"also\"") {
        let n = tokio::time::timeout(GUARD, s.read(&mut buf))
            .await
            .expect("SSE read timed out")
            .unwrap();
        assert!(n > 0, "stream ended");
        got.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&got);
    assert!(text.contains("\"event\":\"yes\""), "{text}");
    assert!(!text.contains("\"event\":\"no\""), "{text}");
    drop(s);
    stop_server(h);
}
per_shell!(async fn sse_topics_pass_the_subscribe_proxy);
