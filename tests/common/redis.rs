//! A `redis-server` of a test's own, on a free port (never a system service). When
//! `redis-server` is not installed a cluster test fails, saying to install it, unless
//! `RINGHUB_SKIP_REDIS_TESTS=1` asks to skip it (with a note); on CI (`CI=true`) it always fails.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A `redis-server` killed on drop.
pub struct Redis {
    child: Option<Child>,
    pub port: u16,
    /// With AOF (`appendfsync always`) in this directory; `None`: no persistence at all.
    aof: Option<PathBuf>,
}

/// Whether `redis-server` can run here; asserts it unless `RINGHUB_SKIP_REDIS_TESTS=1` (and
/// always on CI).
pub fn redis_installed() -> bool {
    let ok = Command::new("redis-server")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_ok();
    if !ok {
        assert!(
            !super::on_ci(),
            "redis-server is not installed on CI (CI=true): the cluster tests cannot run"
        );
        assert!(
            std::env::var("RINGHUB_SKIP_REDIS_TESTS").is_ok_and(|v| v == "1"),
            "redis-server is not installed: the cluster tests need it (Debian/Ubuntu: \
             apt-get install redis-server); RINGHUB_SKIP_REDIS_TESTS=1 skips them"
        );
        eprintln!(
            "note: skipping a cluster test: redis-server is not installed (RINGHUB_SKIP_REDIS_TESTS=1)"
        );
    }
    ok
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Redis {
    /// Starts one without persistence on a free port; `None` when redis-server is missing.
    pub fn start() -> Option<Redis> {
        redis_installed().then(|| Redis::on(free_port()))
    }

    /// Starts one with AOF, `appendfsync always`, in `dir`.
    pub fn start_aof(dir: PathBuf) -> Option<Redis> {
        redis_installed().then(|| Redis::spawn(free_port(), Some(dir)))
    }

    /// Starts one without persistence on `port` and waits until it answers.
    pub fn on(port: u16) -> Redis {
        Redis::spawn(port, None)
    }

    fn spawn(port: u16, aof: Option<PathBuf>) -> Redis {
        let mut cmd = Command::new("redis-server");
        cmd.args(["--port", &port.to_string(), "--bind", "127.0.0.1"]);
        match &aof {
            Some(dir) => {
                std::fs::create_dir_all(dir).unwrap();
                cmd.arg("--dir").arg(dir);
                cmd.args([
                    "--save",
                    "",
                    "--appendonly",
                    "yes",
                    "--appendfsync",
                    "always",
                ]);
            }
            None => {
                cmd.args(["--save", "", "--appendonly", "no"]);
            }
        }
        let child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-server");
        let r = Redis {
            child: Some(child),
            port,
            aof,
        };
        let until = Instant::now() + Duration::from_secs(10);
        loop {
            let ok = redis::Client::open(r.url())
                .and_then(|c| c.get_connection())
                .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c))
                .is_ok();
            if ok {
                return r;
            }
            assert!(Instant::now() < until, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the server (SIGKILL: no shutdown save) and starts it again on the same port with
    /// the same persistence: what it kept is what its AOF had.
    pub fn restart(&mut self) {
        self.kill();
        self.revive();
    }

    /// Starts a killed server again on the same port with the same persistence.
    pub fn revive(&mut self) {
        assert!(self.child.is_none(), "still running");
        let mut fresh = Redis::spawn(self.port, self.aof.clone());
        self.child = fresh.child.take();
    }

    /// Stops the server (SIGSTOP): its sockets stay open and nothing is answered until
    /// [`resume`](Self::resume).
    pub fn pause(&self) {
        self.signal(libc::SIGSTOP);
    }

    /// Lets a paused server run again (SIGCONT): it then works through what it was sent.
    pub fn resume(&self) {
        self.signal(libc::SIGCONT);
    }

    fn signal(&self, sig: i32) {
        if let Some(c) = &self.child {
            // SAFETY: a plain syscall on our own child's pid.
            unsafe { libc::kill(c.id() as i32, sig) };
        }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// A plain connection for inspecting it.
    pub fn conn(&self) -> redis::Connection {
        redis::Client::open(self.url())
            .unwrap()
            .get_connection()
            .unwrap()
    }

    /// Channels subscribed on this instance.
    pub fn channels(&self) -> Vec<String> {
        redis::cmd("PUBSUB")
            .arg("CHANNELS")
            .query(&mut self.conn())
            .unwrap()
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}
