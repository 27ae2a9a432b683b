//! Whether a port's listener belongs to a live process. A server killed with `kill -9` leaves its
//! listener in the kernel for a while when its io_uring ring held it (the ring is torn down
//! asynchronously), so a restart at once would be refused as if another server ran. A listener
//! that no process holds a descriptor of is such a leftover: the bind is retried until it is gone.

use std::time::{Duration, Instant};

/// How long a restart waits for a leftover listener to go away.
pub(crate) const LEFTOVER_WAIT: Duration = Duration::from_secs(3);

/// True when some process has a descriptor of a TCP socket listening on `port`, or when that
/// cannot be told (no `/proc`): then the port is in use by a live server.
pub(crate) fn live_listener(port: u16) -> bool {
    let inodes = listening_inodes(port);
    let Some(inodes) = inodes else { return true };
    if inodes.is_empty() {
        return false;
    }
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return true;
    };
    let wanted: Vec<String> = inodes.iter().map(|i| format!("socket:[{i}]")).collect();
    for p in procs.flatten() {
        if !p
            .file_name()
            .to_string_lossy()
            .bytes()
            .all(|b| b.is_ascii_digit())
        {
            continue;
        }
        // Processes of other users are not readable: their listeners count as leftovers, and
        // the bind then fails after the wait (SO_REUSEPORT would not join them anyway).
        let Ok(fds) = std::fs::read_dir(p.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            if let Ok(target) = std::fs::read_link(fd.path()) {
                if wanted.iter().any(|w| target.as_os_str() == w.as_str()) {
                    return true;
                }
            }
        }
    }
    false
}

/// Inodes of the sockets in LISTEN state on `port` (IPv4 and IPv6); `None` without `/proc`.
fn listening_inodes(port: u16) -> Option<Vec<u64>> {
    let mut out = Vec::new();
    let mut any = false;
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        any = true;
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            let (Some(local), Some(state), Some(inode)) = (f.get(1), f.get(3), f.get(9)) else {
                continue;
            };
            let p = local
                .rsplit(':')
                .next()
                .and_then(|h| u16::from_str_radix(h, 16).ok());
            if *state == "0A" && p == Some(port) {
                if let Ok(i) = inode.parse() {
                    out.push(i);
                }
            }
        }
    }
    any.then_some(out)
}

/// Runs `bind` until it succeeds, fails otherwise than with `AddrInUse`, a live process is seen
/// listening on `port`, or [`LEFTOVER_WAIT`] has passed.
pub(crate) fn bind_past_leftover<T>(
    port: u16,
    mut bind: impl FnMut() -> std::io::Result<T>,
) -> std::io::Result<T> {
    let deadline = Instant::now() + LEFTOVER_WAIT;
    let mut told = false;
    loop {
        match bind() {
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
                if Instant::now() >= deadline || live_listener(port) {
                    return Err(e);
                }
                if !told {
                    told = true;
                    tracing::warn!(
                        port,
                        "the port is held by a listener no live process owns (a server that just died?): waiting up to {}s for it to go",
                        LEFTOVER_WAIT.as_secs()
                    );
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            r => return r,
        }
    }
}
