//! What a slot writes (one request: a send, a publish or a batch of them) and how one answer
//! is checked.

use super::Shared;
use anyhow::{bail, Result};
use memchr::memmem;

/// The request of one send to user `u` (with `--batch`: a batch of sends from `u` on).
pub(super) fn request(sh: &Shared, data: &str, u: usize) -> String {
    let a = &sh.args;
    let one = |u: usize| match &a.publish {
        Some(topic) => format!("{{\"topic\":\"{topic}\",\"event\":\"m\",\"data\":\"{data}\"}}"),
        None => format!(
            "{{\"user\":\"u{u}\",\"event\":\"m\",\"data\":\"{data}\"{}}}",
            if a.plain { "" } else { ",\"durable\":true" }
        ),
    };
    let method = if a.publish.is_some() {
        "publish"
    } else {
        "send"
    };
    let (path, body) = if a.batch > 1 {
        let commands: Vec<String> = (0..a.batch)
            .map(|i| {
                let p = one((u + i * sh.ctx.threads) % a.users);
                format!("{{\"method\":\"{method}\",\"params\":{p}}}")
            })
            .collect();
        (
            "batch",
            format!("{{\"commands\":[{}]}}", commands.join(",")),
        )
    } else {
        (method, one(u))
    };
    format!(
        "POST /api/v1/{path} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\n{}Content-Length: {}\r\n\r\n{body}",
        sh.ctx.target.host,
        a.api_key,
        if a.close { "Connection: close\r\n" } else { "" },
        body.len()
    )
}

/// The delivered count of one complete answer (head and body) in `buf`: `Ok` on HTTP 200 with
/// `"success":true` (and no `"success":false` in a batch's results).
pub(super) fn check_answer(buf: &[u8]) -> Result<u64> {
    let mut headers = [httparse::EMPTY_HEADER; 16];
    let mut resp = httparse::Response::new(&mut headers);
    let head = match resp.parse(buf)? {
        httparse::Status::Complete(n) => n,
        httparse::Status::Partial => bail!("incomplete HTTP answer"),
    };
    let body = &buf[head..];
    if resp.code != Some(200) || memmem::find(body, b"\"success\":true").is_none() {
        bail!(
            "HTTP {}: {}",
            resp.code.unwrap_or(0),
            String::from_utf8_lossy(&body[..body.len().min(200)])
        );
    }
    if memmem::find(body, b"\"success\":false").is_some() {
        bail!(
            "HTTP 200, a command failed: {}",
            String::from_utf8_lossy(&body[..body.len().min(200)])
        );
    }
    // One `"delivered":` per send (a batch's results hold one each).
    let delivered = memmem::find_iter(body, b"\"delivered\":")
        .filter(|&i| {
            body.get(i + 12)
                .is_some_and(|b| b.is_ascii_digit() && *b != b'0')
        })
        .count();
    Ok(delivered as u64)
}
