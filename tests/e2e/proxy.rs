//! A TCP proxy on loopback in front of a store server, to take the store away from outside the
//! processes under test, as a network or store outage would: once the bytes sent through it
//! toward the store pass a threshold (or a request of one kind starts), every connection is
//! reset and new ones are refused, for a while or for good.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Default)]
struct State {
    upstream_bytes: AtomicU64,
    /// The outage starts once `upstream_bytes` passes this,
    trip_after: AtomicU64,
    /// or once a read toward the store holds a request line starting with the first and
    /// holding the second of these (before any of it is passed on).
    trip_on_request: Option<(&'static str, &'static str)>,
    tripped: AtomicBool,
    down: AtomicBool,
    /// How long the outage lasts; `None`: until `restore`.
    down_for: Mutex<Option<Duration>>,
    streams: Mutex<Vec<TcpStream>>,
    stop: AtomicBool,
}

impl State {
    /// Starts the outage, unless one already started (then `false`).
    fn go_down(self: &Arc<Self>) -> bool {
        if self.tripped.swap(true, Ordering::SeqCst) {
            return false;
        }
        self.down.store(true, Ordering::SeqCst);
        for s in self.streams.lock().unwrap().drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
        if let Some(d) = *self.down_for.lock().unwrap() {
            let state = self.clone();
            std::thread::spawn(move || {
                std::thread::sleep(d);
                state.down.store(false, Ordering::SeqCst);
            });
        }
        true
    }
}

pub struct Proxy {
    pub addr: SocketAddr,
    state: Arc<State>,
}

impl Proxy {
    /// A proxy to `upstream` that goes down for `down_for` (or for good) once `trip_after`
    /// bytes went through it toward the store.
    pub fn start(upstream: SocketAddr, trip_after: u64, down_for: Option<Duration>) -> Proxy {
        Self::with_state(
            upstream,
            State {
                trip_after: AtomicU64::new(trip_after),
                down_for: Mutex::new(down_for),
                ..Default::default()
            },
        )
    }

    /// A proxy to `upstream` that goes down for `down_for` as the first HTTP request whose
    /// request line starts with `method` and holds `query` (`"POST "`, `"uploadId="`: an S3
    /// multipart completion) reaches it; that request never reaches the store.
    pub fn start_on_request(
        upstream: SocketAddr,
        (method, query): (&'static str, &'static str),
        down_for: Duration,
    ) -> Proxy {
        Self::with_state(
            upstream,
            State {
                trip_after: AtomicU64::new(u64::MAX),
                trip_on_request: Some((method, query)),
                down_for: Mutex::new(Some(down_for)),
                ..Default::default()
            },
        )
    }

    fn with_state(upstream: SocketAddr, state: State) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(state);
        let s = state.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                if s.stop.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(client) = client else { continue };
                if s.down.load(Ordering::SeqCst) {
                    // Refused: the connection is closed before a byte is read.
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                }
                let Ok(server) = TcpStream::connect(upstream) else {
                    continue;
                };
                for stream in [&client, &server] {
                    if let Ok(c) = stream.try_clone() {
                        s.streams.lock().unwrap().push(c);
                    }
                }
                pump(
                    client.try_clone().unwrap(),
                    server.try_clone().unwrap(),
                    s.clone(),
                    true,
                );
                pump(server, client, s.clone(), false);
            }
        });
        Proxy { addr, state }
    }

    /// Bytes sent through the proxy toward the store so far.
    pub fn upstream_bytes(&self) -> u64 {
        self.state.upstream_bytes.load(Ordering::SeqCst)
    }

    /// Whether the outage has started.
    pub fn tripped(&self) -> bool {
        self.state.tripped.load(Ordering::SeqCst)
    }

    /// Ends an outage.
    pub fn restore(&self) {
        self.state.down.store(false, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.state.stop.store(true, Ordering::SeqCst);
        // Wakes the accept loop so it sees the stop.
        let _ = TcpStream::connect(self.addr);
        for s in self.state.streams.lock().unwrap().drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }
}

/// Copies `from` to `to` until either closes or the proxy goes down; bytes toward the store
/// (`upstream`) count toward the trip.
fn pump(mut from: TcpStream, mut to: TcpStream, state: Arc<State>, upstream: bool) {
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            if state.down.load(Ordering::SeqCst) {
                break;
            }
            if upstream
                && state
                    .trip_on_request
                    .is_some_and(|r| holds_request(&buf[..n], r))
                && state.go_down()
            {
                break;
            }
            if upstream {
                let total = state.upstream_bytes.fetch_add(n as u64, Ordering::SeqCst) + n as u64;
                if total > state.trip_after.load(Ordering::SeqCst) && state.go_down() {
                    break;
                }
            }
            if to.write_all(&buf[..n]).is_err() {
                break;
            }
        }
        let _ = from.shutdown(Shutdown::Both);
        let _ = to.shutdown(Shutdown::Both);
    });
}

/// Whether `bytes` hold a line starting with `method` and holding `query` (a request line).
/// Lines are compared as bytes: most reads are body bytes, and only a line that starts like a
/// request is searched.
fn holds_request(bytes: &[u8], (method, query): (&str, &str)) -> bool {
    let holds = |line: &[u8], needle: &[u8]| line.windows(needle.len()).any(|w| w == needle);
    bytes.split(|&b| b == b'\n').any(|line| {
        line.starts_with(method.as_bytes())
            && holds(line, query.as_bytes())
            && holds(line, b" HTTP/1.")
    })
}
