//! The `/metrics` HTTP endpoint: a std thread accepting scrapes, each answered on a thread of
//! its own, at most [`ANSWERING_MAX`] at once.
//!
//! A scrape every few seconds needs no async runtime and no HTTP framework: a connection's
//! thread reads one request head (bounded in size, and in time as a whole, not per read),
//! answers `GET /metrics` with the text its callback renders and anything else with 404, and
//! closes the connection. It runs beside the process's runtime, never on it. A client that
//! opens connections and sends nothing holds one answering thread each for at most
//! [`HEAD_TIMEOUT`]; past [`ANSWERING_MAX`] of them a new connection is answered 503 at once
//! by the accepting thread, so such a client costs bounded threads and memory and a scraper's
//! next try gets through as soon as one of them times out, instead of queueing behind them
//! all.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::{CONTENT_TYPE, CONTENT_TYPE_CLASSIC, Scrape};

/// Longest request head read; a scraper's is a few hundred bytes.
const REQUEST_HEAD_BYTES_MAX: usize = 8 << 10;
/// How long a connection may take to send its whole request head: a scraper sends it at once.
const HEAD_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a connection may take to take the answer.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections answered at once; more are refused with 503 until one ends.
pub const ANSWERING_MAX: usize = 8;

/// Gathers one scrape, or `None` when the process cannot answer now (503).
pub type Render = Box<dyn Fn() -> Option<Scrape> + Send>;

/// A running endpoint; dropping it stops the thread.
pub struct Endpoint {
    address: SocketAddr,
    stopping: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// Binds a process's metrics address as its settings name it: `None` when the address is
/// empty (metrics off) or cannot be bound, which is logged as a warning: a server runs on
/// without metrics rather than refuse to start. Binding apart from [`Endpoint::serve`] lets
/// a server's starter learn the real address (port 0: ephemeral) before the state the
/// scrapes read exists.
pub fn bind_or_warn(address: &str) -> Option<TcpListener> {
    if address.is_empty() {
        return None;
    }
    match TcpListener::bind(address) {
        Ok(listener) => Some(listener),
        Err(e) => {
            log::warn!("no metrics endpoint: cannot listen on {address}: {e}");
            None
        }
    }
}

/// Serves scrapes on `listener` (from [`bind_or_warn`]) with `render`; `None` when there is
/// no listener or its thread cannot start (logged as a warning).
pub fn serve_or_warn(listener: Option<TcpListener>, render: Render) -> Option<Endpoint> {
    match Endpoint::serve(listener?, render) {
        Ok(endpoint) => {
            log::info!("metrics on http://{}/metrics", endpoint.local_addr());
            Some(endpoint)
        }
        Err(e) => {
            log::warn!("no metrics endpoint: {e}");
            None
        }
    }
}

impl Endpoint {
    /// Listens on `address` (port 0: an ephemeral port) and serves scrapes from `render`.
    pub fn start(address: &str, render: Render) -> io::Result<Endpoint> {
        Self::serve(TcpListener::bind(address)?, render)
    }

    /// Serves scrapes from `render` on a bound `listener`.
    pub fn serve(listener: TcpListener, render: Render) -> io::Result<Endpoint> {
        let address = listener.local_addr()?;
        let stopping = Arc::new(AtomicBool::new(false));
        let stop = stopping.clone();
        let thread = std::thread::Builder::new()
            .name("defibus-metrics".into())
            .spawn(move || serve(listener, render, &stop))?;
        Ok(Endpoint {
            address,
            stopping,
            thread: Some(thread),
        })
    }

    /// The address it listens on (the real port when started on port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.address
    }
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        self.stopping.store(true, Ordering::Release);
        // Wakes the blocked accept; the thread sees the flag and ends. Answering threads end
        // on their own within their timeouts.
        let _ = TcpStream::connect_timeout(&self.address, HEAD_TIMEOUT);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn serve(listener: TcpListener, render: Render, stopping: &AtomicBool) {
    // Renders are quick and rare; one at a time keeps `Render` free of a `Sync` bound.
    let render = Arc::new(Mutex::new(render));
    let answering = Arc::new(AtomicUsize::new(0));
    for stream in listener.incoming() {
        if stopping.load(Ordering::Acquire) {
            return;
        }
        let Ok(stream) = stream else {
            continue;
        };
        if answering.fetch_add(1, Ordering::AcqRel) >= ANSWERING_MAX {
            answering.fetch_sub(1, Ordering::AcqRel);
            refuse(stream);
            continue;
        }
        let (render, done) = (render.clone(), answering.clone());
        let spawned = std::thread::Builder::new()
            .name("defibus-metrics-answer".into())
            .spawn(move || {
                if let Err(e) = answer(stream, &render) {
                    log::debug!("metrics endpoint: a scrape failed: {e}");
                }
                done.fetch_sub(1, Ordering::AcqRel);
            });
        if let Err(e) = spawned {
            answering.fetch_sub(1, Ordering::AcqRel);
            log::warn!("metrics endpoint: cannot start a thread to answer a scrape: {e}");
        }
    }
}

/// Answers 503 without waiting on the peer: a fresh socket's send buffer takes the short
/// answer at once. Whatever part of the request has arrived is read first, without blocking,
/// so that closing with it unread does not reset the connection before the answer is read.
fn refuse(mut stream: TcpStream) {
    let mut buf = [0u8; 1024];
    if stream.set_nonblocking(true).is_ok() {
        let _ = stream.read(&mut buf);
        let _ = stream.set_nonblocking(false);
    }
    let _ = stream.set_write_timeout(Some(WRITE_TIMEOUT));
    let _ = respond(&mut stream, "503 Service Unavailable", "text/plain", "");
}

/// Reads a request head within [`HEAD_TIMEOUT`] in all; `None` when the peer closed first.
fn read_head(stream: &mut TcpStream) -> io::Result<Option<Vec<u8>>> {
    let deadline = Instant::now() + HEAD_TIMEOUT;
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        if head.len() >= REQUEST_HEAD_BYTES_MAX {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "head too large"));
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::ErrorKind::TimedOut.into());
        }
        stream.set_read_timeout(Some(left))?;
        let n = stream.read(&mut buf)?;
        if n == 0 {
            return Ok(None);
        }
        head.extend_from_slice(&buf[..n]);
    }
    Ok(Some(head))
}

fn answer(mut stream: TcpStream, render: &Mutex<Render>) -> io::Result<()> {
    stream.set_write_timeout(Some(WRITE_TIMEOUT))?;
    let head = match read_head(&mut stream) {
        Ok(Some(head)) => head,
        Ok(None) => return Ok(()),
        Err(e) if e.kind() == io::ErrorKind::InvalidData => {
            return respond(
                &mut stream,
                "431 Request Header Fields Too Large",
                "text/plain",
                "",
            );
        }
        Err(e) => return Err(e),
    };
    let line = head.split(|b| *b == b'\r').next().unwrap_or_default();
    let mut parts = line.split(|b| *b == b' ');
    let (method, path) = (parts.next(), parts.next());
    // A query string (`?name[]=…`) is allowed and ignored: every scrape returns everything.
    let path = path.map(|p| p.split(|b| *b == b'?').next().unwrap_or_default());
    match (method, path) {
        (Some(b"GET"), Some(b"/metrics")) => {
            let scrape = (render.lock().unwrap_or_else(PoisonError::into_inner))();
            match scrape {
                Some(scrape) if wants_openmetrics(&head) => {
                    respond(&mut stream, "200 OK", CONTENT_TYPE, &scrape.render())
                }
                Some(scrape) => respond(
                    &mut stream,
                    "200 OK",
                    CONTENT_TYPE_CLASSIC,
                    &scrape.render_classic(),
                ),
                None => respond(&mut stream, "503 Service Unavailable", "text/plain", ""),
            }
        }
        (Some(b"GET"), _) => respond(&mut stream, "404 Not Found", "text/plain", ""),
        _ => respond(&mut stream, "405 Method Not Allowed", "text/plain", ""),
    }
}

/// Whether the request's `Accept` header names OpenMetrics (Prometheus's does).
fn wants_openmetrics(head: &[u8]) -> bool {
    String::from_utf8_lossy(head).lines().any(|line| {
        let line = line.to_ascii_lowercase();
        line.starts_with("accept:") && line.contains("application/openmetrics-text")
    })
}

fn respond(stream: &mut TcpStream, status: &str, content_type: &str, body: &str) -> io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes())?;
    stream.write_all(body.as_bytes())?;
    stream.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(address: SocketAddr, path: &str) -> String {
        get_accepting(address, path, "*/*")
    }

    fn get_accepting(address: SocketAddr, path: &str, accept: &str) -> String {
        let mut stream = TcpStream::connect(address).unwrap();
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: x\r\nAccept: {accept}\r\n\r\n"
        )
        .unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).unwrap();
        answer
    }

    #[test]
    fn metrics_is_served_in_the_format_asked_and_other_paths_are_not_found() {
        let render = || {
            let mut scrape = Scrape::default();
            scrape.counter("m", "M.", &[], 1);
            Some(scrape)
        };
        let endpoint = Endpoint::start("127.0.0.1:0", Box::new(render)).unwrap();
        let classic = get(endpoint.local_addr(), "/metrics");
        assert!(classic.starts_with("HTTP/1.1 200 OK\r\n"), "{classic}");
        assert!(classic.contains(CONTENT_TYPE_CLASSIC), "{classic}");
        assert!(
            classic.ends_with("\n# TYPE m_total counter\nm_total 1\n"),
            "{classic}"
        );
        let open = get_accepting(
            endpoint.local_addr(),
            "/metrics",
            "application/openmetrics-text;version=1.0.0,text/plain;q=0.5",
        );
        assert!(open.contains(CONTENT_TYPE), "{open}");
        assert!(open.ends_with("m_total 1\n# EOF\n"), "{open}");
        assert!(get(endpoint.local_addr(), "/").starts_with("HTTP/1.1 404"));
    }

    #[test]
    fn an_empty_or_taken_address_serves_nothing_and_the_process_runs_on() {
        assert!(bind_or_warn("").is_none());
        let taken = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = taken.local_addr().unwrap().to_string();
        assert!(bind_or_warn(&address).is_none());
        assert!(serve_or_warn(None, Box::new(|| None)).is_none());
        let listener = bind_or_warn("127.0.0.1:0").unwrap();
        let endpoint = serve_or_warn(Some(listener), Box::new(|| None)).unwrap();
        assert!(get(endpoint.local_addr(), "/metrics").starts_with("HTTP/1.1 503"));
    }

    #[test]
    fn a_process_that_cannot_answer_says_unavailable() {
        let endpoint = Endpoint::start("127.0.0.1:0", Box::new(|| None)).unwrap();
        assert!(get(endpoint.local_addr(), "/metrics").starts_with("HTTP/1.1 503"));
    }

    #[test]
    fn silent_connections_do_not_keep_a_scrape_waiting() {
        let render = || {
            let mut scrape = Scrape::default();
            scrape.counter("m", "M.", &[], 1);
            Some(scrape)
        };
        let endpoint = Endpoint::start("127.0.0.1:0", Box::new(render)).unwrap();
        let address = endpoint.local_addr();
        // Connections that never send a head: one fewer than the bound, so a scrape still
        // finds an answering thread free and is served at once, not after their timeouts.
        let silent: Vec<TcpStream> = (0..ANSWERING_MAX - 1)
            .map(|_| TcpStream::connect(address).unwrap())
            .collect();
        let started = Instant::now();
        assert!(get(address, "/metrics").starts_with("HTTP/1.1 200 OK"));
        assert!(started.elapsed() < HEAD_TIMEOUT, "{:?}", started.elapsed());
        // Past the bound a connection is answered 503 at once rather than queued: the
        // accepting thread takes connections in order, so `more`'s hold the last slot first.
        let more: Vec<TcpStream> = (0..2)
            .map(|_| TcpStream::connect(address).unwrap())
            .collect();
        // The answer is 503, or a reset when the refusal closed before the request arrived.
        let mut refused = TcpStream::connect(address).unwrap();
        let _ = refused.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
        let mut answer = String::new();
        match refused.read_to_string(&mut answer) {
            Ok(_) => assert!(answer.starts_with("HTTP/1.1 503"), "{answer}"),
            Err(e) => assert_eq!(e.kind(), io::ErrorKind::ConnectionReset, "{e}"),
        }
        assert!(started.elapsed() < HEAD_TIMEOUT, "{:?}", started.elapsed());
        drop((silent, more));
    }
}
