//! A `redis-server` of one test, on a free port, killed on drop. When `redis-server` is not
//! installed the test fails, saying to install it, unless `RINGHUB_SKIP_REDIS_TESTS=1` asks to
//! skip it (with a note) — and never skips on CI (`CI=true`). A silent skip counted as a pass.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub(crate) struct RedisServer {
    child: Option<Child>,
    pub port: u16,
}

fn on_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v.eq_ignore_ascii_case("true"))
}

fn skip_asked() -> bool {
    std::env::var("RINGHUB_SKIP_REDIS_TESTS").is_ok_and(|v| v == "1")
}

impl RedisServer {
    /// Starts one on a free port; `None` (after a note) when redis-server is not installed and
    /// `RINGHUB_SKIP_REDIS_TESTS=1` (else that fails the test).
    pub(crate) fn start() -> Option<RedisServer> {
        if Command::new("redis-server")
            .arg("--version")
            .stdout(Stdio::null())
            .status()
            .is_err()
        {
            assert!(
                !on_ci(),
                "redis-server is not installed on CI (CI=true): the Redis store tests cannot run"
            );
            assert!(
                skip_asked(),
                "redis-server is not installed: the Redis store tests need it (Debian/Ubuntu: \
                 apt-get install redis-server); RINGHUB_SKIP_REDIS_TESTS=1 skips them"
            );
            eprintln!("note: skipping a Redis store test: redis-server is not installed (RINGHUB_SKIP_REDIS_TESTS=1)");
            return None;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        Some(RedisServer::on(port))
    }

    /// Starts one on `port` (without persistence) and waits until it answers.
    pub(crate) fn on(port: u16) -> RedisServer {
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-server");
        let r = RedisServer {
            child: Some(child),
            port,
        };
        let until = Instant::now() + Duration::from_secs(10);
        loop {
            if r.try_conn().is_some() {
                return r;
            }
            assert!(Instant::now() < until, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn try_conn(&self) -> Option<::redis::Connection> {
        let mut c = ::redis::Client::open(self.url())
            .ok()?
            .get_connection_with_timeout(Duration::from_secs(2))
            .ok()?;
        ::redis::cmd("PING").query::<String>(&mut c).ok()?;
        Some(c)
    }

    pub(crate) fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// A plain connection, for looking behind the store's back.
    pub(crate) fn conn(&self) -> ::redis::Connection {
        self.try_conn().expect("connect to the test's redis-server")
    }

    pub(crate) fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}
