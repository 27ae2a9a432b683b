//! `--pipeline P`: a slot's P requests written in one write on its kept-alive connection, then
//! their P answers read in order (HTTP/1.1 pipelining), then the next P (one write per refill:
//! the slot waits for all P answers before it writes again).

use super::{check_answer, record, Shared, ThreadResult};
use crate::client;
use crate::scenarios::secs;
use crate::stats;
use anyhow::{anyhow, bail, Result};
use std::cell::RefCell;
use std::net::IpAddr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One round on the slot's connection (opened first when there is none; dropped on an error
/// or when the server closes): `reqs` written together, each answer recorded as it completes.
/// A request not answered (the connection failed or the round timed out) counts as an error.
pub(super) async fn round(
    sh: &Shared,
    tid: usize,
    src: IpAddr,
    reqs: &[String],
    buf: &mut Vec<u8>,
    conn: &mut Option<TcpStream>,
    acc: &RefCell<ThreadResult>,
) {
    let t0 = stats::now_ns();
    let mut answered = 0;
    let timeout = secs(sh.args.request_timeout);
    let r = tokio::time::timeout(timeout, async {
        let s = match conn {
            Some(s) => s,
            None => conn.insert(client::tcp_connect(&sh.ctx.target, src).await?),
        };
        s.write_all(reqs.concat().as_bytes()).await?;
        buf.clear();
        while answered < reqs.len() {
            let (end, keep) = read_answer(s, buf).await?;
            let r = check_answer(&buf[..end]);
            buf.drain(..end);
            answered += 1;
            record(sh, tid, &mut acc.borrow_mut(), r, t0, stats::now_ns());
            if !keep && answered < reqs.len() {
                bail!("the server closed the connection mid-pipeline");
            }
            if !keep {
                *conn = None;
                return Ok(());
            }
        }
        anyhow::Ok(())
    })
    .await
    .unwrap_or_else(|_| Err(anyhow!("request timed out")));
    if let Err(e) = r {
        *conn = None;
        let mut acc = acc.borrow_mut();
        record(sh, tid, &mut acc, Err(e), t0, stats::now_ns());
    }
}

/// Reads until `buf` starts with one whole answer: its length and whether the connection stays
/// open (no `Connection: close`).
pub(super) async fn read_answer(s: &mut TcpStream, buf: &mut Vec<u8>) -> Result<(usize, bool)> {
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 16];
        let mut resp = httparse::Response::new(&mut headers);
        if let httparse::Status::Complete(n) = resp.parse(buf)? {
            let header = |name: &str| {
                resp.headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case(name))
                    .map(|h| String::from_utf8_lossy(h.value).trim().to_ascii_lowercase())
            };
            let len: usize = header("content-length")
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| anyhow!("answer without Content-Length"))?;
            let keep = header("connection").as_deref() != Some("close");
            while buf.len() < n + len {
                if s.read_buf(buf).await? == 0 {
                    bail!("connection closed mid-answer");
                }
            }
            return Ok((n + len, keep));
        }
        if s.read_buf(buf).await? == 0 {
            bail!("connection closed before the answer");
        }
    }
}
