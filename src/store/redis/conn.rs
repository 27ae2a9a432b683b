//! One Redis instance as the store thread sees it: a blocking connection with timeouts, opened
//! lazily, the store's Lua scripts loaded on it, and Redis errors turned into [`StoreError`]s.
//!
//! Failure rules (the store thread must never hang on a dead Redis):
//! - connect, read and write time out after [`super::TIMEOUT`] (3 s);
//! - a connection that failed is dropped; the next operation connects afresh, once — and after a
//!   failed connect, operations fail at once with [`StoreError::Unavailable`] for
//!   [`COOL_DOWN`], so a batch of thousands of operations against a black-holed host costs one
//!   timeout, not thousands;
//! - an operation whose connection turned out to be closed (Redis restarted, the old socket
//!   reset) is retried once on a fresh connection; a timeout is never retried (Redis may be
//!   executing it).

use std::borrow::Cow;
use std::time::{Duration, Instant};

use ::redis::{Cmd, Connection, RedisError, Value};

use crate::store::StoreError;

/// After a failed connect, how long operations fail without trying again.
pub(super) const COOL_DOWN: Duration = Duration::from_millis(500);

/// The store's Lua scripts, by index into [`SOURCES`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Script {
    Append,
    Position,
    Positions,
    Read,
    Put,
    Delivered,
    Ack,
    List,
    Expire,
}

const HISTORY: &str = include_str!("meta.lua");
const INBOX: &str = include_str!("inbox_lib.lua");

/// The source of each [`Script`]: a shared head (a Lua function) and the script's body.
const SOURCES: [[&str; 2]; 9] = [
    [HISTORY, include_str!("append.lua")],
    [HISTORY, include_str!("position.lua")],
    [HISTORY, include_str!("positions.lua")],
    [HISTORY, include_str!("read.lua")],
    [INBOX, include_str!("inbox_put.lua")],
    [INBOX, include_str!("inbox_delivered.lua")],
    [INBOX, include_str!("inbox_ack.lua")],
    [INBOX, include_str!("inbox_list.lua")],
    [INBOX, include_str!("expire.lua")],
];

fn source(s: Script) -> String {
    SOURCES[s as usize].concat()
}

/// One argument of a script call (borrowed when the caller's bytes live long enough).
pub(super) type Arg<'a> = Cow<'a, [u8]>;

/// A script call: the script, how many of `args` are keys, and the keys then the arguments.
pub(super) struct Call<'a> {
    pub script: Script,
    pub keys: usize,
    pub args: Vec<Arg<'a>>,
}

impl Call<'_> {
    /// The command.
    fn cmd(&self, sha: Option<&str>) -> Cmd {
        let mut c = match sha {
            Some(sha) => {
                let mut c = ::redis::cmd("EVALSHA");
                c.arg(sha);
                c
            }
            None => {
                let mut c = ::redis::cmd("EVAL");
                c.arg(source(self.script));
                c
            }
        };
        c.arg(self.keys);
        for a in &self.args {
            c.arg(&a[..]);
        }
        c
    }
}

/// Writing commands in RESP straight into a buffer the caller reuses (the append path: no
/// allocation per argument, unlike a [`Cmd`]).
pub(super) mod resp {
    use super::{source, Script};

    /// `*<n>\r\n`: a command of `n` arguments follows.
    pub(crate) fn array(buf: &mut Vec<u8>, n: usize) {
        buf.push(b'*');
        buf.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
        buf.extend_from_slice(b"\r\n");
    }

    /// One argument made of `parts` joined.
    pub(crate) fn bulk_parts(buf: &mut Vec<u8>, parts: &[&[u8]]) {
        let len: usize = parts.iter().map(|p| p.len()).sum();
        buf.push(b'$');
        buf.extend_from_slice(itoa::Buffer::new().format(len).as_bytes());
        buf.extend_from_slice(b"\r\n");
        for p in parts {
            buf.extend_from_slice(p);
        }
        buf.extend_from_slice(b"\r\n");
    }

    /// One argument.
    pub(crate) fn bulk(buf: &mut Vec<u8>, b: &[u8]) {
        bulk_parts(buf, &[b]);
    }

    /// One integer argument, in decimal.
    pub(crate) fn num(buf: &mut Vec<u8>, n: impl itoa::Integer) {
        bulk(buf, itoa::Buffer::new().format(n).as_bytes());
    }

    /// The head of a script call of `args` further arguments (the key count, the keys and the
    /// script's arguments): `EVALSHA <sha>`, or `EVAL <source>` without a SHA.
    pub(crate) fn script(buf: &mut Vec<u8>, script: Script, sha: Option<&str>, args: usize) {
        array(buf, args + 2);
        match sha {
            Some(sha) => {
                bulk(buf, b"EVALSHA");
                bulk(buf, sha.as_bytes());
            }
            None => {
                bulk(buf, b"EVAL");
                bulk(buf, source(script).as_bytes());
            }
        }
    }
}

/// The instance's clock as this node sees it, for an append's deadline: the script refuses an
/// append that Redis runs so late that this node may already have given up waiting for it
/// (its read timed out and the publisher was answered `not_available`). A stopped Redis
/// (SIGSTOP, a long fork, a stalled VM) that resumes later would otherwise apply, and publish,
/// an append that was answered as failed.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Clock {
    /// Redis's `TIME` minus this node's clock, in ms, measured at connect.
    offset_ms: i64,
    /// The connection's read timeout, in ms.
    timeout_ms: i64,
}

impl Clock {
    /// Reads Redis's `TIME` on a fresh connection: the offset is known within half the round
    /// trip.
    fn measure(conn: &mut Connection, timeout: Duration) -> ::redis::RedisResult<Clock> {
        let t0 = crate::store::now_ms() as i64;
        let (secs, micros): (i64, i64) = ::redis::cmd("TIME").query(conn)?;
        let t1 = crate::store::now_ms() as i64;
        Ok(Clock {
            offset_ms: secs * 1000 + micros / 1000 - (t0 + t1) / 2,
            timeout_ms: timeout.as_millis() as i64,
        })
    }

    /// The last moment (Redis's clock, ms) an append sent now may be applied: a quarter of
    /// the timeout before this node gives up, which leaves the answer time to arrive and
    /// covers the error of the offset (half a round trip).
    pub(super) fn deadline(&self) -> i64 {
        crate::store::now_ms() as i64 + self.offset_ms + self.timeout_ms - self.timeout_ms / 4
    }
}

/// A Redis instance of the store.
pub(super) struct Instance {
    client: ::redis::Client,
    /// The URL with any password hidden, for errors.
    shown: String,
    conn: Option<Connection>,
    /// The SHA1 of each script, as `SCRIPT LOAD` answered on this connection.
    shas: Vec<String>,
    /// Until when operations fail without a connect attempt, and why.
    cooling: Option<(Instant, String)>,
    timeout: Duration,
    /// The connection's clock (for append deadlines).
    clock: Clock,
}

/// Whether an error means the connection is unusable (as opposed to one command refused).
fn is_fatal(e: &RedisError) -> bool {
    e.is_io_error() || e.is_timeout() || e.is_connection_dropped() || e.is_unrecoverable_error()
}

/// Whether it is worth one more try on a fresh connection: the old one was found closed.
fn is_stale(e: &RedisError) -> bool {
    !e.is_timeout() && (e.is_io_error() || e.is_connection_dropped())
}

/// Server replies that mean "not now" rather than "wrong".
fn is_busy(e: &RedisError) -> bool {
    e.code().is_some_and(busy_code)
}

/// Error codes that mean "not now" rather than "wrong".
fn busy_code(code: &str) -> bool {
    matches!(
        code,
        "LOADING" | "BUSY" | "MASTERDOWN" | "TRYAGAIN" | "CLUSTERDOWN" | "READONLY" | "STALE"
    )
}

impl Instance {
    /// An instance at `url` (the connection is opened on first use).
    pub(super) fn new(url: &str, timeout: Duration) -> Result<Self, StoreError> {
        let shown = crate::proto::wire::redact(url);
        let client = ::redis::Client::open(url)
            .map_err(|e| StoreError::Unavailable(format!("redis {shown}: {e}")))?;
        Ok(Instance {
            client,
            shown,
            conn: None,
            shas: Vec::new(),
            cooling: None,
            timeout,
            clock: Clock::default(),
        })
    }

    /// The error for `e`, dropping the connection when it is unusable.
    fn fail(&mut self, e: &RedisError) -> StoreError {
        let msg = format!("redis {}: {e}", self.shown);
        if is_fatal(e) {
            self.conn = None;
            StoreError::Unavailable(msg)
        } else if is_busy(e) {
            StoreError::Unavailable(msg)
        } else {
            StoreError::Io(msg)
        }
    }

    /// Opens a connection (unless one is open) and loads the scripts on it.
    pub(super) fn ensure(&mut self) -> Result<(), StoreError> {
        if self.conn.is_some() {
            return Ok(());
        }
        if let Some((until, why)) = &self.cooling {
            if Instant::now() < *until {
                return Err(StoreError::Unavailable(why.clone()));
            }
        }
        match self.open() {
            Ok((conn, shas, clock)) => {
                self.conn = Some(conn);
                self.shas = shas;
                self.clock = clock;
                self.cooling = None;
                Ok(())
            }
            Err(e) => {
                let err = self.fail(&e);
                let why = format!("redis {}: {e}", self.shown);
                self.cooling = Some((Instant::now() + COOL_DOWN, why));
                Err(match err {
                    StoreError::Io(m) => StoreError::Unavailable(m),
                    other => other,
                })
            }
        }
    }

    fn open(&self) -> ::redis::RedisResult<(Connection, Vec<String>, Clock)> {
        let mut conn = self.client.get_connection_with_timeout(self.timeout)?;
        conn.set_read_timeout(Some(self.timeout))?;
        conn.set_write_timeout(Some(self.timeout))?;
        let mut pipe = ::redis::pipe();
        for s in SOURCES {
            pipe.cmd("SCRIPT").arg("LOAD").arg(s.concat());
        }
        let shas: Vec<String> = pipe.query(&mut conn)?;
        let clock = Clock::measure(&mut conn, self.timeout)?;
        Ok((conn, shas, clock))
    }

    /// Runs `f` on the connection (opened if needed); on a closed connection, once more on a
    /// fresh one.
    pub(super) fn run<T>(
        &mut self,
        mut f: impl FnMut(&mut Connection, &[String], &Clock) -> ::redis::RedisResult<T>,
    ) -> Result<T, StoreError> {
        for attempt in 0..2 {
            self.ensure()?;
            let Some(conn) = self.conn.as_mut() else {
                break;
            };
            match f(conn, &self.shas, &self.clock) {
                Ok(v) => return Ok(v),
                Err(e) if attempt == 0 && is_stale(&e) => {
                    self.conn = None;
                }
                Err(e) => return Err(self.fail(&e)),
            }
        }
        Err(StoreError::Unavailable(format!(
            "redis {}: connection lost",
            self.shown
        )))
    }

    /// One script call (EVALSHA; EVAL when Redis no longer knows the script).
    pub(super) fn eval(&mut self, call: &Call<'_>) -> Result<Value, StoreError> {
        self.run(|conn, shas, _| {
            let sha = shas.get(call.script as usize).map(String::as_str);
            match call.cmd(sha).query::<Value>(conn) {
                Err(e) if e.code() == Some("NOSCRIPT") => call.cmd(None).query(conn),
                r => r,
            }
        })
    }

    /// Sends the `count` commands `encode` writes into `buf` as one pipeline and reads their
    /// answers (server errors as [`Value::ServerError`], in place). `encode` is given the
    /// SHA1 of `script` on this connection (`None` when unknown: write `EVAL`) and the clock,
    /// and may run twice (a closed connection is retried once on a fresh one).
    pub(super) fn pipeline_raw(
        &mut self,
        buf: &mut Vec<u8>,
        count: usize,
        script: Script,
        mut encode: impl FnMut(&mut Vec<u8>, Option<&str>, &Clock),
    ) -> Result<Vec<Value>, StoreError> {
        use ::redis::ConnectionLike;
        let answers = self.run(|conn, shas, clock| {
            buf.clear();
            encode(buf, shas.get(script as usize).map(String::as_str), clock);
            conn.req_packed_commands(buf, 0, count)
        })?;
        if answers.len() != count {
            return Err(StoreError::Corrupt(format!(
                "redis {}: {} answers to {count} commands",
                self.shown,
                answers.len()
            )));
        }
        Ok(answers)
    }

    /// The error a script reported for one of its steps (`pcall`): like a refused command.
    pub(super) fn step_error(&self, msg: &str) -> StoreError {
        let code = msg.split(' ').next().unwrap_or_default();
        let msg = format!("redis {}: {msg}", self.shown);
        if busy_code(code) {
            StoreError::Unavailable(msg)
        } else {
            StoreError::Io(msg)
        }
    }

    /// The error for a server error answered to one command of a pipeline.
    pub(super) fn server_error(&mut self, e: ::redis::ServerError) -> StoreError {
        self.fail(&RedisError::from(e))
    }

    /// A plain command (not a script).
    pub(super) fn query<T: ::redis::FromRedisValue>(&mut self, cmd: &Cmd) -> Result<T, StoreError> {
        self.run(|conn, _, _| cmd.query(conn))
    }
}

/// The same error again (one failure reported for every call of a pipeline).
pub(super) fn copy(e: &StoreError) -> StoreError {
    match e {
        StoreError::Io(m) => StoreError::Io(m.clone()),
        StoreError::Corrupt(m) => StoreError::Corrupt(m.clone()),
        StoreError::Unavailable(m) => StoreError::Unavailable(m.clone()),
    }
}

/// Reading script answers: every shape mismatch is [`StoreError::Corrupt`], never a panic.
pub(super) mod val {
    use ::redis::Value;

    use crate::store::StoreError;

    fn bad(what: &str, v: &Value) -> StoreError {
        StoreError::Corrupt(format!("unexpected Redis answer for {what}: {v:?}"))
    }

    /// The elements of an array.
    pub(crate) fn array<'a>(v: &'a Value, what: &str) -> Result<&'a [Value], StoreError> {
        match v {
            Value::Array(a) => Ok(a),
            _ => Err(bad(what, v)),
        }
    }

    /// Element `i` of an array.
    pub(crate) fn at<'a>(a: &'a [Value], i: usize, what: &str) -> Result<&'a Value, StoreError> {
        a.get(i)
            .ok_or_else(|| StoreError::Corrupt(format!("short Redis answer for {what}")))
    }

    /// Bytes of a string (none for nil).
    pub(crate) fn bytes_opt<'a>(v: &'a Value, what: &str) -> Result<Option<&'a [u8]>, StoreError> {
        match v {
            Value::Nil => Ok(None),
            Value::BulkString(b) => Ok(Some(b)),
            Value::SimpleString(s) => Ok(Some(s.as_bytes())),
            _ => Err(bad(what, v)),
        }
    }

    /// Text of a string.
    pub(crate) fn text<'a>(v: &'a Value, what: &str) -> Result<&'a str, StoreError> {
        bytes_opt(v, what)?
            .and_then(|b| std::str::from_utf8(b).ok())
            .ok_or_else(|| bad(what, v))
    }

    /// A non-negative integer (an integer reply or its decimal text).
    pub(crate) fn u64(v: &Value, what: &str) -> Result<u64, StoreError> {
        match v {
            Value::Int(i) => u64::try_from(*i).map_err(|_| bad(what, v)),
            _ => text(v, what)?.parse().map_err(|_| bad(what, v)),
        }
    }
}
