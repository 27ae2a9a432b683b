//! The HTTP upgrade: request heads (upgrade, SSE topics, token lookup) and the connection token
//! (JWT) checked before a client is let in.

use crate::config::settings::Secret;
use crate::policy::auth::{token_from_request, Authenticator};
use crate::proto::handshake as http;

/// Parses an HTTP request head and runs every check the server makes on one: the upgrade, the
/// SSE topics, the token lookup.
pub fn http_head(data: &[u8]) {
    match http::parse_head(data, http::MAX_HEAD) {
        Err(e) => {
            assert!((400..=599).contains(&e.status));
            let r = e.response();
            assert!(r.starts_with(b"HTTP/1.1 "));
            assert!(
                e.message.len() <= 512,
                "error message of {} bytes",
                e.message.len()
            );
        }
        Ok(None) => assert!(data.len() < http::MAX_HEAD),
        Ok(Some((head, used))) => {
            assert!(used <= data.len());
            if let Ok(resp) = http::accept_upgrade(&head) {
                assert!(resp.starts_with(b"HTTP/1.1 101 "));
                assert!(head.version >= 1 && head.method == "GET");
            }
            if let Err(e) = http::sse_topics(&head, 16) {
                assert!(
                    e.message.len() <= 512,
                    "error message of {} bytes",
                    e.message.len()
                );
            } else {
                assert!(http::sse_topics(&head, 16).unwrap().len() <= 16);
            }
            let _ = token_from_request(head.query.as_deref(), head.header("Authorization"));
            let _ = head.query_param("token");
        }
    }
}

/// The HS256 secret the JWT target verifies with.
pub const JWT_SECRET: &str = "fuzz-secret-0123456789abcdef0123";

thread_local! {
    static AUTH: Authenticator =
        Authenticator::from_keys(Some(&Secret::new(JWT_SECRET)), None, false)
            .expect("HS256 authenticator");
}

/// Verifies `data` as a connection token with a fixed HS256 key, as the upgrade does. Only a
/// token signed with [`JWT_SECRET`] (the fuzzer cannot forge one) may be accepted.
pub fn jwt(data: &[u8]) {
    let token = String::from_utf8_lossy(data);
    AUTH.with(|a| {
        if let Ok(id) = a.authenticate(Some(&token)) {
            if let Some(u) = &id.user {
                assert!(!u.is_empty() && u.len() <= crate::policy::auth::MAX_USER_LEN);
            }
        }
        // Also through the request paths a token arrives by.
        let q = format!("token={token}");
        let _ = token_from_request(Some(&q), None);
        let _ = token_from_request(None, Some(&format!("Bearer {token}")));
    });
}
