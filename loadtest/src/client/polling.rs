//! Engine.IO v4 HTTP long-polling client (`--transport polling`): one kept-alive TCP
//! connection per client that alternates `GET` (wait for packets) and, when there is
//! something to send, `POST` between two `GET`s. Payloads are packets separated by `\x1e`.
//!
//! Only what the load generator needs: text packets, `Content-Length` bodies (engine.io and
//! ringhub set it; a chunked answer is refused with a clear error), no binary, no upgrade.

use super::{tcp_connect, Target};
use anyhow::{anyhow, bail, Context, Result};
use std::net::IpAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Engine.IO's record separator between packets of one polling payload.
pub const SEPARATOR: u8 = 0x1e;

/// One long-polling Engine.IO session.
pub struct PollConn {
    stream: TcpStream,
    /// `GET`/`POST` request head up to and excluding the method-specific part.
    path: String,
    host: String,
    /// Received bytes: a response head and body, then whatever followed.
    buf: Vec<u8>,
    /// Bytes of `buf` consumed by the previous response.
    used: usize,
    req: Vec<u8>,
}

/// Splits a polling payload into its packets.
pub fn packets(body: &[u8]) -> impl Iterator<Item = &[u8]> {
    body.split(|b| *b == SEPARATOR)
}

impl PollConn {
    /// Connects and performs the Engine.IO handshake (`GET ?EIO=4&transport=polling`),
    /// with an overall timeout. `target.path`'s part before `?` is the endpoint
    /// (`/socket.io/`).
    pub async fn open(target: &Target, src: IpAddr, timeout: Duration) -> Result<PollConn> {
        tokio::time::timeout(timeout, PollConn::open_inner(target, src))
            .await
            .map_err(|_| anyhow!("polling handshake timed out after {timeout:?}"))?
    }

    async fn open_inner(target: &Target, src: IpAddr) -> Result<PollConn> {
        let stream = tcp_connect(target, src).await?;
        let base = target.path.split('?').next().unwrap_or("/socket.io/");
        let mut c = PollConn {
            stream,
            path: format!("{base}?EIO=4&transport=polling"),
            host: target.host.clone(),
            buf: Vec::with_capacity(16 * 1024),
            used: 0,
            req: Vec::with_capacity(512),
        };
        let open = c.get().await?.to_vec();
        let sid = sid_of(&open).ok_or_else(|| {
            anyhow!(
                "no sid in the open packet: {}",
                String::from_utf8_lossy(&open)
            )
        })?;
        c.path.push_str("&sid=");
        c.path.push_str(&sid);
        Ok(c)
    }

    /// Waits for the server's next payload (the body of one `GET`).
    pub async fn get(&mut self) -> Result<&[u8]> {
        self.req.clear();
        self.req.extend_from_slice(b"GET ");
        self.head(0);
        self.exchange().await
    }

    /// Sends packets (already joined with [`SEPARATOR`]) with one `POST`; the server
    /// answers `ok`.
    pub async fn post(&mut self, body: &[u8]) -> Result<()> {
        self.req.clear();
        self.req.extend_from_slice(b"POST ");
        self.head(body.len());
        self.req.extend_from_slice(body);
        let answer = self.exchange().await?;
        if answer != b"ok" {
            bail!("POST answered {:?}", String::from_utf8_lossy(answer));
        }
        Ok(())
    }

    /// Appends the rest of the request head (after the method) to `self.req`.
    fn head(&mut self, content_length: usize) {
        let r = &mut self.req;
        r.extend_from_slice(self.path.as_bytes());
        r.extend_from_slice(b" HTTP/1.1\r\nHost: ");
        r.extend_from_slice(self.host.as_bytes());
        if content_length > 0 {
            r.extend_from_slice(b"\r\nContent-Type: text/plain;charset=UTF-8\r\nContent-Length: ");
            r.extend_from_slice(content_length.to_string().as_bytes());
        }
        r.extend_from_slice(b"\r\n\r\n");
    }

    /// Writes `self.req` and reads one response; returns its body (status 200 only).
    async fn exchange(&mut self) -> Result<&[u8]> {
        self.stream
            .write_all(&self.req)
            .await
            .context("send request")?;
        self.buf.drain(..self.used);
        self.used = 0;
        loop {
            if let Some((head, len)) = parse_head(&self.buf)? {
                while self.buf.len() < head + len {
                    self.read_more().await?;
                }
                self.used = head + len;
                let body = &self.buf[head..head + len];
                super::RX_BYTES
                    .fetch_add((head + len) as u64, std::sync::atomic::Ordering::Relaxed);
                return Ok(body);
            }
            if self.buf.len() > 64 * 1024 {
                bail!("response head too large");
            }
            self.read_more().await?;
        }
    }

    async fn read_more(&mut self) -> Result<()> {
        self.buf.reserve(16 * 1024);
        let n = self.stream.read_buf(&mut self.buf).await?;
        if n == 0 {
            bail!("server closed the polling connection");
        }
        Ok(())
    }
}

/// A complete response head in `buf`: (head length, body length). Non-200 answers and
/// bodies without `Content-Length` are errors.
fn parse_head(buf: &[u8]) -> Result<Option<(usize, usize)>> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut resp = httparse::Response::new(&mut headers);
    let httparse::Status::Complete(head) = resp.parse(buf)? else {
        return Ok(None);
    };
    let len = resp
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("content-length"))
        .and_then(|h| {
            std::str::from_utf8(h.value)
                .ok()?
                .trim()
                .parse::<usize>()
                .ok()
        });
    let Some(len) = len else {
        bail!(
            "HTTP {} without Content-Length (chunked polling answers are not supported)",
            resp.code.unwrap_or(0)
        );
    };
    if resp.code != Some(200) {
        let end = (head + len).min(buf.len());
        bail!(
            "HTTP {} {}: {}",
            resp.code.unwrap_or(0),
            resp.reason.unwrap_or(""),
            String::from_utf8_lossy(&buf[head..end])
        );
    }
    Ok(Some((head, len)))
}

/// The `sid` of an Engine.IO open packet `0{"sid":"...",...}`.
fn sid_of(open: &[u8]) -> Option<String> {
    let first = packets(open).next()?;
    let json = first.strip_prefix(b"0")?;
    let v: serde_json::Value = serde_json::from_slice(json).ok()?;
    Some(v.get("sid")?.as_str()?.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_and_sids() {
        let r = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokGET";
        assert_eq!(parse_head(r).unwrap(), Some((38, 2)));
        assert_eq!(parse_head(b"HTTP/1.1 200 OK\r\n").unwrap(), None);
        let bad = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 5\r\n\r\nnope!";
        assert!(parse_head(bad).unwrap_err().to_string().contains("nope!"));
        let chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert!(parse_head(chunked).is_err());
        assert_eq!(
            sid_of(b"0{\"sid\":\"abc\",\"upgrades\":[]}\x1e40").as_deref(),
            Some("abc")
        );
        assert_eq!(sid_of(b"40"), None);
        let p: Vec<&[u8]> = packets(b"2\x1e42[\"m\",\"x\"]").collect();
        assert_eq!(p, [&b"2"[..], &b"42[\"m\",\"x\"]"[..]]);
    }
}
