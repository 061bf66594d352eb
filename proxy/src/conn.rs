//! Hostile-client bounds on the proxy's connections (docs/ARCHITECTURE.md §7, issue 13).
//!
//! An earlier build served connections with `axum::serve`, which bounds none of these: a body
//! sent at one byte a second held a connection for minutes, and idle connections piled up
//! until descriptors ran out and valid publishes timed out, with nothing logged. Here:
//!
//! 1. [`Admission`] caps connections at accept, in all (`limits.connections_max`) and per
//!    peer address (`limits.connections_per_ip_max`), so one address trickling connections
//!    cannot lock everyone else out. A refused connection is closed at once; refusals are
//!    logged a few lines a second at most ([`svc::loglimit`]). A connection's slot is held by
//!    its socket ([`Admitted`]), so an upgraded WebSocket keeps counting until it closes.
//! 2. With `[tls]`, the TLS handshake must finish within `limits.header_timeout_ms` of the
//!    accept (`crate::handshake`), while the connection already holds its slot. Then a
//!    request head must arrive whole within `limits.header_timeout_ms` of the connection
//!    being ready for one (hyper's header read timeout, which also closes keep-alive
//!    connections that stay idle that long).
//! 3. A request body must arrive whole within `limits.body_timeout_ms` of its head
//!    ([`DeadlineBody`]): a slow body fails with [`BodyError::TimedOut`], answered 408, and
//!    the connection closes. The deadline covers the body only, not the handler's work after
//!    it (a request may wait up to `request_timeout_ms_max` for its reply).

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::ConnectInfo;
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper::body::Incoming;
use log::Level;
use svc::loglimit::LogLimit;
use svc::stream::Stream;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};
use tower_service::Service;

use crate::caller::CertificatePrincipal;
use crate::config::Limits;

/// Why a connection was refused at accept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// `connections_max` connections are open.
    Total(usize),
    /// `connections_per_ip_max` connections from this address are open.
    PerIp(usize),
}

#[derive(Default)]
struct Counts {
    total: usize,
    per_ip: HashMap<IpAddr, usize>,
}

/// The connection caps, and the rate-limited log lines about connections refused or cut off.
pub struct Admission {
    connections_max: usize,
    per_ip_max: usize,
    counts: Mutex<Counts>,
    refused_log: LogLimit,
    cut_log: Arc<LogLimit>,
}

impl Admission {
    /// Caps from `limits`.
    pub fn new(limits: &Limits) -> Self {
        Self {
            connections_max: limits.connections_max,
            per_ip_max: limits.connections_per_ip_max,
            counts: Mutex::default(),
            refused_log: LogLimit::new("proxy connections refused"),
            cut_log: Arc::new(LogLimit::new("proxy connections cut off")),
        }
    }

    /// Takes a slot for a connection from `ip`, or says which cap is reached.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Slot, Refusal> {
        let mut counts = self.lock();
        if counts.total >= self.connections_max {
            return Err(Refusal::Total(self.connections_max));
        }
        let from_ip = counts.per_ip.entry(ip).or_insert(0);
        if *from_ip >= self.per_ip_max {
            return Err(Refusal::PerIp(self.per_ip_max));
        }
        *from_ip += 1;
        counts.total += 1;
        Ok(Slot {
            admission: self.clone(),
            ip,
        })
    }

    /// Records (and logs, rate-limited) a refused connection from `peer`.
    pub fn refused(&self, peer: SocketAddr, refusal: Refusal) {
        let why = match refusal {
            Refusal::Total(max) => format!("{max} connections open (limits.connections_max)"),
            Refusal::PerIp(max) => format!(
                "{max} connections open from {} (limits.connections_per_ip_max)",
                peer.ip()
            ),
        };
        self.refused_log.log(
            Level::Warn,
            format_args!("connection from {peer} refused: {why}"),
        );
    }

    /// Connections open now (read by a scrape).
    pub fn open(&self) -> usize {
        self.lock().total
    }

    /// The rate-limited log of requests cut off, for [`serve_connection`].
    pub fn cut_log(&self) -> Arc<LogLimit> {
        self.cut_log.clone()
    }

    /// Logs (rate-limited) a connection closed for a slow or incomplete request.
    pub fn cut_off(&self, args: std::fmt::Arguments<'_>) {
        self.cut_log.log(Level::Info, args);
    }

    /// Connections open now.
    #[cfg(test)]
    fn open_count(&self) -> usize {
        self.lock().total
    }

    /// Logs the counts of lines suppressed in windows that have ended (called every second).
    pub fn flush_logs(&self) {
        self.refused_log.flush(Level::Warn);
        self.cut_log.flush(Level::Info);
    }

    fn release(&self, ip: IpAddr) {
        let mut counts = self.lock();
        counts.total = counts.total.saturating_sub(1);
        if let Some(from_ip) = counts.per_ip.get_mut(&ip) {
            *from_ip -= 1;
            if *from_ip == 0 {
                counts.per_ip.remove(&ip);
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Counts> {
        // Counts stay consistent across a panic elsewhere: each change is one statement.
        self.counts.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// One admitted connection's place in the counts, given back when dropped.
pub struct Slot {
    admission: Arc<Admission>,
    ip: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.admission.release(self.ip);
    }
}

/// An admitted connection: it carries its [`Slot`], so the slot is held as long as the
/// connection is, through an upgrade to a WebSocket too. Its stream is plain TCP or TLS
/// (`crate::handshake`).
pub struct Admitted {
    stream: Stream,
    _slot: Slot,
}

impl Admitted {
    /// `stream` holding `slot`.
    pub fn new(stream: Stream, slot: Slot) -> Self {
        Self {
            stream,
            _slot: slot,
        }
    }
}

impl AsyncRead for Admitted {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Admitted {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }

    // Plain TCP keeps its vectored writes (hyper then writes head and body without copying
    // them together); rustls seals one buffer at a time, so TLS takes the default.
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().stream {
            Stream::Plain(tcp) => Pin::new(tcp).poll_write_vectored(cx, bufs),
            tls => Pin::new(tls).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match &self.stream {
            Stream::Plain(tcp) => tcp.is_write_vectored(),
            Stream::Tls(_) => false,
        }
    }
}

/// Why a request body could not be read.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// The connection failed or closed mid-body.
    #[error("reading the request body: {0}")]
    Read(#[source] hyper::Error),
    /// The body was not whole within `limits.body_timeout_ms` of the request's head.
    #[error("the request body did not arrive whole within {} ms", .after.as_millis())]
    TimedOut {
        /// The body timeout.
        after: Duration,
    },
}

/// A request body that fails once its deadline passes before it is whole.
pub struct DeadlineBody {
    inner: Incoming,
    deadline: Instant,
    after: Duration,
    /// Made on the first poll that has to wait, so bodyless requests cost no timer.
    sleep: Option<Pin<Box<Sleep>>>,
    timed_out: bool,
    peer: SocketAddr,
    log: Arc<LogLimit>,
}

impl DeadlineBody {
    /// `inner`, due whole `after` from now.
    fn new(inner: Incoming, after: Duration, peer: SocketAddr, log: Arc<LogLimit>) -> Self {
        Self {
            inner,
            deadline: Instant::now() + after,
            after,
            sleep: None,
            timed_out: false,
            peer,
            log,
        }
    }
}

impl HttpBody for DeadlineBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.get_mut();
        if this.timed_out {
            return Poll::Ready(None);
        }
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            return Poll::Ready(frame.map(|f| f.map_err(BodyError::Read)));
        }
        let deadline = this.deadline;
        let sleep = this
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if sleep.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        this.timed_out = true;
        this.log.log(
            Level::Info,
            format_args!(
                "request from {} cut off: its body was not whole within {} ms \
                 (limits.body_timeout_ms)",
                this.peer,
                this.after.as_millis()
            ),
        );
        Poll::Ready(Some(Err(BodyError::TimedOut { after: this.after })))
    }

    fn is_end_stream(&self) -> bool {
        self.timed_out || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Serves one admitted connection with `router`: HTTP/1.1 with upgrades, the header read
/// timeout, each request's body under its deadline, the peer address as [`ConnectInfo`] and
/// the client certificate's `principal` (TLS only) as a [`CertificatePrincipal`]; body
/// timeouts are logged on `cut_log`. Resolves when the connection ends (or is upgraded).
pub fn serve_connection(
    connection: Admitted,
    peer: SocketAddr,
    principal: Option<Arc<str>>,
    router: Router,
    limits: Limits,
    cut_log: Arc<LogLimit>,
) -> hyper::server::conn::http1::UpgradeableConnection<
    hyper_util::rt::TokioIo<Admitted>,
    impl hyper::service::Service<
        hyper::Request<Incoming>,
        Response = axum::response::Response,
        Error = std::convert::Infallible,
        Future = impl Future<Output = Result<axum::response::Response, std::convert::Infallible>> + Send,
    > + Send,
> {
    let body_timeout = Duration::from_millis(limits.body_timeout_ms);
    let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
        let log = cut_log.clone();
        let mut request = request
            .map(|body| axum::body::Body::new(DeadlineBody::new(body, body_timeout, peer, log)));
        request.extensions_mut().insert(ConnectInfo(peer));
        if let Some(principal) = &principal {
            request
                .extensions_mut()
                .insert(CertificatePrincipal(principal.clone()));
        }
        let mut router = router.clone();
        // A `Router` is always ready (its `poll_ready` returns `Ready` at once).
        async move { router.call(request).await }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(Duration::from_millis(limits.header_timeout_ms));
    builder
        .serve_connection(hyper_util::rt::TokioIo::new(connection), service)
        .with_upgrades()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_hold_in_all_and_per_address_and_free_on_drop() {
        let admission = Arc::new(Admission::new(&Limits {
            connections_max: 3,
            connections_per_ip_max: 2,
            ..Limits::default()
        }));
        let (a, b): (IpAddr, IpAddr) = ("127.0.0.1".parse().unwrap(), "127.0.0.2".parse().unwrap());
        let a1 = admission.admit(a).unwrap();
        let _a2 = admission.admit(a).unwrap();
        assert_eq!(admission.admit(a).err(), Some(Refusal::PerIp(2)));
        let _b1 = admission.admit(b).unwrap();
        assert_eq!(admission.admit(b).err(), Some(Refusal::Total(3)));
        assert_eq!(admission.open_count(), 3);
        drop(a1);
        assert_eq!(admission.open_count(), 2);
        let _a3 = admission.admit(a).unwrap();
    }
}
