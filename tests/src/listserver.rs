//! A small real HTTP/1.1 server on loopback that publishes a revocation
//! list the way a static web server does (an `ETag`, 304 on
//! `If-None-Match`, keep-alive), or misbehaves on demand: an error status,
//! garbage, or no answer at all. One thread per connection; every read has
//! a timeout and every thread ends when the server is dropped.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

/// What the server answers with.
#[derive(Clone, Debug)]
pub enum Serve {
    /// The file's current bytes, with an `ETag` of their hash (304 when the
    /// client already has them).
    File(PathBuf),
    /// This status, with a short body.
    Status(u16),
    /// 200 with these bytes and no validators.
    Bytes(Vec<u8>),
    /// Reads the request and never answers (until the mode changes or the
    /// server is dropped, at most a minute).
    Hang,
}

struct State {
    serve: Mutex<Serve>,
    stop: AtomicBool,
    requests: AtomicU64,
    not_modified: AtomicU64,
}

/// The server; dropping it stops it.
pub struct ListServer {
    pub port: u16,
    state: Arc<State>,
}

impl ListServer {
    /// Starts serving `serve` on a free loopback port.
    pub fn start(serve: Serve) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind list server");
        let port = listener.local_addr().expect("addr").port();
        let state = Arc::new(State {
            serve: Mutex::new(serve),
            stop: AtomicBool::new(false),
            requests: AtomicU64::new(0),
            not_modified: AtomicU64::new(0),
        });
        let st = Arc::clone(&state);
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if st.stop.load(Ordering::SeqCst) {
                    return;
                }
                if let Ok(c) = conn {
                    let st = Arc::clone(&st);
                    std::thread::spawn(move || serve_conn(c, &st));
                }
            }
        });
        Self { port, state }
    }

    /// The list's URL.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/crl.pem", self.port)
    }

    /// Changes what the server answers from the next request on.
    pub fn set(&self, serve: Serve) {
        *self.state.serve.lock().expect("lock") = serve;
    }

    /// Requests answered or held so far.
    pub fn requests(&self) -> u64 {
        self.state.requests.load(Ordering::SeqCst)
    }

    /// 304 answers so far.
    pub fn not_modified(&self) -> u64 {
        self.state.not_modified.load(Ordering::SeqCst)
    }
}

impl Drop for ListServer {
    fn drop(&mut self) {
        self.state.stop.store(true, Ordering::SeqCst);
        // Wakes the accept loop so that it sees the flag.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

fn serve_conn(c: TcpStream, st: &State) {
    let _ = c.set_read_timeout(Some(Duration::from_secs(30)));
    let Ok(mut out) = c.try_clone() else { return };
    let mut reader = BufReader::new(c);
    // One request after another on a kept-alive connection; at most a
    // thousand, which is far more than any test makes.
    for _ in 0..1000 {
        let Some(if_none_match) = read_request(&mut reader) else {
            return;
        };
        if st.stop.load(Ordering::SeqCst) {
            return;
        }
        st.requests.fetch_add(1, Ordering::SeqCst);
        let serve = st.serve.lock().expect("lock").clone();
        let reply = match serve {
            Serve::File(path) => {
                let body = std::fs::read(&path).unwrap_or_default();
                let etag = format!("\"{}\"", hex(&Sha256::digest(&body)));
                if if_none_match.as_deref() == Some(etag.as_str()) {
                    st.not_modified.fetch_add(1, Ordering::SeqCst);
                    format!("HTTP/1.1 304 Not Modified\r\nETag: {etag}\r\n\r\n").into_bytes()
                } else {
                    response("200 OK", &format!("ETag: {etag}\r\n"), &body)
                }
            }
            Serve::Status(code) => response(&format!("{code} Oops"), "", b"oops\n"),
            Serve::Bytes(body) => response("200 OK", "", &body),
            Serve::Hang => {
                let start = Instant::now();
                while start.elapsed() < Duration::from_secs(60)
                    && !st.stop.load(Ordering::SeqCst)
                    && matches!(*st.serve.lock().expect("lock"), Serve::Hang)
                {
                    std::thread::sleep(Duration::from_millis(20));
                }
                return;
            }
        };
        if out.write_all(&reply).is_err() {
            return;
        }
    }
}

fn response(status: &str, headers: &str, body: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/x-pem-file\r\n{headers}Content-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body);
    out
}

/// Reads one request head; returns its `If-None-Match`, or `None` at the
/// end of the connection.
fn read_request(r: &mut BufReader<TcpStream>) -> Option<Option<String>> {
    let mut if_none_match = None;
    let mut first = true;
    for _ in 0..100 {
        let mut line = String::new();
        match r.read_line(&mut line) {
            Ok(0) | Err(_) => return None,
            Ok(_) => {}
        }
        let line = line.trim_end();
        if line.is_empty() {
            return if first { None } else { Some(if_none_match) };
        }
        first = false;
        if let Some((name, value)) = line.split_once(':')
            && name.eq_ignore_ascii_case("if-none-match")
        {
            if_none_match = Some(value.trim().to_owned());
        }
    }
    None
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
