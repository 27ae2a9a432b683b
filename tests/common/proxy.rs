//! A TCP relay a test can cut: every connection through it is closed at once and new ones are
//! refused until it is restored, while the server behind it keeps running — one node losing its
//! link to Redis while the other nodes keep theirs.

use std::io::copy;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

#[derive(Default)]
struct State {
    cut: bool,
    open: Vec<TcpStream>,
}

/// Relays 127.0.0.1:`port` to `target`.
pub struct Relay {
    pub port: u16,
    state: Arc<Mutex<State>>,
}

impl Relay {
    pub fn to(target: SocketAddr) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new(Mutex::new(State::default()));
        let st = state.clone();
        // Runs until the test process ends (a blocked accept cannot be interrupted).
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                let mut s = st.lock().unwrap();
                if s.cut {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                }
                let Ok(server) = TcpStream::connect(target) else {
                    continue;
                };
                let (Ok(c2), Ok(s2)) = (client.try_clone(), server.try_clone()) else {
                    continue;
                };
                s.open.push(client.try_clone().unwrap());
                s.open.push(server.try_clone().unwrap());
                pipe(client, server);
                pipe(s2, c2);
            }
        });
        Relay { port, state }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Closes every relayed connection and refuses new ones.
    pub fn cut(&self) {
        let mut s = self.state.lock().unwrap();
        s.cut = true;
        for c in s.open.drain(..) {
            let _ = c.shutdown(Shutdown::Both);
        }
    }

    /// Relays new connections again.
    pub fn restore(&self) {
        self.state.lock().unwrap().cut = false;
    }
}

/// Copies `from` to `to` until either ends, then closes both directions.
fn pipe(mut from: TcpStream, mut to: TcpStream) {
    std::thread::spawn(move || {
        let _ = copy(&mut from, &mut to);
        let _ = from.shutdown(Shutdown::Both);
        let _ = to.shutdown(Shutdown::Both);
    });
}
