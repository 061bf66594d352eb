//! One client connection: a reader (the connection's task) and a writer task draining the
//! connection's bounded [`Outbox`].
//!
//! The reader frames with [`Framer::split_frame_mut`] over one `BytesMut`, so frames are split off
//! without copying. A garbage, oversized or cut-off frame is answered with an error response
//! (carrying the request id when the header could be trusted) and the connection is closed;
//! other connections are not affected. A connection silent for `idle_timeout_ms` is closed.
//!
//! With TLS configured, the handshake runs first, within `frame_timeout_ms`, before the
//! connection is registered: a client that stalls it holds nothing but its socket for that
//! long. Reader and writer then share one [`Stream`] (plain or TLS) as before.

use std::cell::{Cell, RefCell};
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use futures_lite::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use protocol::codes::Status;
use protocol::frame::{
    FrameError, FrameFault, FrameHeader, Framer, HEADER_LEN, HeaderError, ReadSizer,
};

use super::guard::Reservation;
use super::outbox::{Outbound, Outbox, error_response};
use crate::rt::{Semaphore, TcpStream, TlsAcceptor, TlsStream};
use crate::shard::Shard;

/// Fewest and most bytes handed to one socket read (see [`ReadSizer`]): every byte offered is
/// zero-filled first, so a small exchange is offered little and a bulk stream up to the most.
const READ_CHUNK_MIN: usize = 4 << 10;
const READ_CHUNK_MAX: usize = 256 << 10;
/// Most bytes offered to one read of a TLS stream: rustls hands out the plaintext it has
/// decrypted, about one 16 KiB record per read, so a larger offer would only zero-fill bytes
/// the read leaves untouched (once per read, for the whole rest of a large frame).
const TLS_READ_CHUNK_MAX: usize = 32 << 10;
/// Admin requests a connection may have awaiting their audited answer.
const ADMIN_PENDING_MAX: usize = 64;
/// Most bytes gathered from the outbox into one socket write.
const WRITE_BATCH_BYTES: usize = 256 << 10;

/// A connection as the rest of the shard sees it.
pub(crate) struct Conn {
    pub id: u64,
    pub outbox: Outbox,
    /// Set by the first heartbeat (or subscribe): replies to this id come here.
    pub client_id: RefCell<Option<String>>,
    /// When the last frame arrived; the sweeper closes subscribed connections gone silent.
    pub last_seen: Cell<Instant>,
    /// Subscriptions made on this connection.
    pub subs: RefCell<Vec<u64>>,
    stream: Rc<RefCell<Stream>>,
    /// Frames with a command code the broker does not know, so far.
    unknown_commands: Cell<u32>,
    /// The peer's address, for logs and the audit log.
    peer: String,
    /// Who the connection authenticated as (security on); `None` until it did.
    principal: RefCell<Option<Rc<str>>>,
    /// The credentials it authenticated with, re-checked as the policy changes.
    session: RefCell<Option<auth::Session>>,
    /// The policy version the session was last checked against.
    policy_seen: Cell<u64>,
    /// Actions the policy allowed this connection, valid for one policy version.
    verdicts: RefCell<auth::authority::Verdicts>,
    /// Admin requests allowed and not yet answered, by request id: their answer is audited
    /// with its outcome (security on).
    admin_pending: RefCell<Vec<(u64, auth::Action, String)>>,
    /// Who the client's TLS certificate names (see [`tls::principal_of`]).
    tls_principal: Option<String>,
}

impl Conn {
    /// The peer's address.
    pub fn peer(&self) -> &str {
        &self.peer
    }

    /// Who the connection authenticated as, if it did.
    pub fn principal(&self) -> Option<Rc<str>> {
        self.principal.borrow().clone()
    }

    /// Takes `session`'s principal for the rest of the connection (or until its token
    /// lapses: see [`Self::lapsed`]).
    pub fn authenticated(&self, session: auth::Session, policy_version: u64) {
        *self.principal.borrow_mut() = Some(Rc::from(session.principal.as_str()));
        *self.session.borrow_mut() = Some(session);
        self.policy_seen.set(policy_version);
        *self.verdicts.borrow_mut() = auth::authority::Verdicts::default();
    }

    /// Remembers that admin request `request_id` (`action` on `resource`) awaits its answer.
    pub fn admin_requested(&self, request_id: u64, action: auth::Action, resource: String) {
        let mut pending = self.admin_pending.borrow_mut();
        // A request answered only on failure (or never) leaves its entry: keep the newest.
        if pending.len() >= ADMIN_PENDING_MAX {
            pending.remove(0);
        }
        pending.push((request_id, action, resource));
    }

    /// The admin request answered by a response to `request_id`, if one was pending.
    pub fn admin_answered(&self, request_id: u64) -> Option<(auth::Action, String)> {
        let mut pending = self.admin_pending.borrow_mut();
        let at = pending.iter().position(|(id, _, _)| *id == request_id)?;
        let (_, action, resource) = pending.swap_remove(at);
        Some((action, resource))
    }

    /// Why the connection's credentials no longer hold, if they do not: the token expired
    /// (checked at every request), or was revoked (checked when the policy version moves).
    pub fn lapsed(&self, authority: &auth::Authority) -> Option<String> {
        let session = self.session.borrow();
        let session = session.as_ref()?;
        let version = authority.version();
        let now = auth::now_ms();
        if version == self.policy_seen.get() {
            return (now >= session.expires_at_ms)
                .then(|| session.lapsed(authority, now))
                .flatten();
        }
        self.policy_seen.set(version);
        session.lapsed(authority, now)
    }

    /// May this connection's `principal` do `action` on `resource` (in `group`)? Through the
    /// connection's cache of allowed verdicts.
    pub fn check(
        &self,
        authority: &auth::Authority,
        principal: &str,
        action: auth::Action,
        resource: &str,
        group: Option<&str>,
    ) -> Result<(), auth::Denial> {
        authority.check_cached(
            &mut self.verdicts.borrow_mut(),
            principal,
            &self.peer,
            action,
            resource,
            group,
        )
    }

    /// The principal the client's verified TLS certificate names (its Common Name, else its
    /// first DNS or URI name): `None` over plaintext, or when the client presented no
    /// certificate (`client_auth = "optional"` or `"none"`).
    pub fn tls_principal(&self) -> Option<&str> {
        self.tls_principal.as_deref()
    }

    /// Counts a frame with an unknown command; returns how many there were.
    pub fn count_unknown_command(&self) -> u32 {
        let n = self.unknown_commands.get() + 1;
        self.unknown_commands.set(n);
        n
    }

    /// Resolves once the connection is closed (its outbox is).
    async fn closed(&self) {
        loop {
            let seen = self.outbox.readable.generation();
            if self.outbox.is_closed() {
                return;
            }
            self.outbox.readable.wait(seen).await;
        }
    }

    /// Closes the connection: the writer drains and stops, the reader sees end of stream.
    pub fn shutdown(&self) {
        self.outbox.close();
        let fd = self.stream.borrow().raw_fd();
        #[allow(unsafe_code)]
        // SAFETY: `fd` belongs to the stream `self` holds, so it is open; shutdown(2) only
        // changes the socket's state (the stream's own `shutdown` does the same, but is async
        // and would hold the stream's borrow across an await).
        let result = unsafe { libc::shutdown(fd, libc::SHUT_RDWR) };
        if result != 0 {
            log::debug!(
                "connection {}: shutdown: {}",
                self.id,
                std::io::Error::last_os_error()
            );
        }
    }
}

/// A connection's byte stream: the TCP stream itself, or TLS over it.
///
/// Plaintext costs one match per poll, nothing more: no buffer or copy of its own.
pub(crate) enum Stream {
    /// Plaintext.
    Plain(TcpStream),
    /// TLS, after the handshake. Boxed: rustls's connection state is a few KiB the
    /// plaintext variant need not carry.
    Tls(Box<TlsStream>),
}

impl Stream {
    /// The socket's file descriptor.
    fn raw_fd(&self) -> std::os::fd::RawFd {
        match self {
            Self::Plain(stream) => stream.as_raw_fd(),
            Self::Tls(stream) => stream.get_ref().0.as_raw_fd(),
        }
    }

    /// How long one read may wait (the socket's, for every read until changed).
    fn set_read_timeout(&self, timeout: Duration) -> std::io::Result<()> {
        let result = match self {
            Self::Plain(stream) => stream.set_read_timeout(Some(timeout)),
            Self::Tls(stream) => stream.get_ref().0.set_read_timeout(Some(timeout)),
        };
        result.map_err(Into::into)
    }

    /// Whether a write may leave bytes inside the stream rather than on the socket: rustls
    /// may hold records it encrypted while the socket was full, until a flush.
    fn holds_writes(&self) -> bool {
        self.is_tls()
    }

    fn is_tls(&self) -> bool {
        matches!(self, Self::Tls(_))
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(stream) => Pin::new(stream).poll_read(cx, buf),
            Self::Tls(stream) => Pin::new(stream.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(stream) => Pin::new(stream).poll_write(cx, buf),
            Self::Tls(stream) => Pin::new(stream.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Self::Plain(stream) => Pin::new(stream).poll_flush(cx),
            Self::Tls(stream) => Pin::new(stream.as_mut()).poll_flush(cx),
        }
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Self::Plain(stream) => Pin::new(stream).poll_close(cx),
            Self::Tls(stream) => Pin::new(stream.as_mut()).poll_close(cx),
        }
    }
}

/// Polls the shared stream; borrows it only for the duration of one poll, so the reader and
/// the writer task can each hold one.
struct Half(Rc<RefCell<Stream>>);

impl Half {
    /// How long one read may wait (the socket's, for every read until changed).
    fn set_read_timeout(&self, timeout: Duration) {
        if let Err(e) = self.0.borrow().set_read_timeout(timeout) {
            log::warn!("cannot set a read timeout: {e}");
        }
    }

    /// See [`Stream::holds_writes`].
    fn holds_writes(&self) -> bool {
        self.0.borrow().holds_writes()
    }

    fn is_tls(&self) -> bool {
        self.0.borrow().is_tls()
    }
}

impl AsyncRead for Half {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut *self.0.borrow_mut()).poll_read(cx, buf)
    }
}

impl AsyncWrite for Half {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut *self.0.borrow_mut()).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut *self.0.borrow_mut()).poll_flush(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut *self.0.borrow_mut()).poll_close(cx)
    }
}

/// The TLS handshake of a connection, bounded by the frame timeout: the stream to serve and
/// the client certificate's principal, or why the connection is closed.
async fn handshake(
    shard: &Shard,
    acceptor: &TlsAcceptor,
    stream: TcpStream,
) -> Result<(Stream, Option<String>), String> {
    let timeout = shard.config.frame_timeout();
    let stream = match crate::rt::timeout(
        timeout,
        acceptor.accept(crate::rt::buffered_for_tls(stream)),
    )
    .await
    {
        Some(Ok(stream)) => stream,
        Some(Err(e)) => return Err(format!("TLS handshake failed: {e}")),
        None => {
            // Dropping the handshake's future closed the socket.
            return Err(format!(
                "TLS handshake not done within {} ms (frame_timeout_ms)",
                shard.config.frame_timeout_ms
            ));
        }
    };
    let principal = (stream.get_ref().1.peer_certificates())
        .and_then(|chain| chain.first())
        .and_then(tls::principal_of);
    Ok((Stream::Tls(Box::new(stream)), principal))
}

/// Serves one accepted connection until it closes: its TLS handshake first, with `tls`.
pub(crate) async fn serve(shard: Rc<Shard>, stream: TcpStream, tls: Option<TlsAcceptor>) {
    if shard.is_stopping() {
        // Accepted just before the shard began to close, which has shut down the connections
        // it knew of: this one is not served either.
        return;
    }
    let peer = stream
        .peer_addr()
        .map_or_else(|_| "?".to_owned(), |a| a.to_string());
    if let Err(e) = stream.set_nodelay(true) {
        log::debug!("{peer}: set_nodelay: {e}");
    }
    if let Err(e) = stream.set_read_timeout(Some(shard.config.idle_timeout())) {
        log::warn!("{peer}: cannot set the idle timeout: {e}");
    }
    let (stream, tls_principal) = match &tls {
        None => (Stream::Plain(stream), None),
        Some(acceptor) => match handshake(&shard, acceptor, stream).await {
            Ok(done) => done,
            Err(reason) => {
                shard.closing_log.closing(shard.id, &peer, &reason);
                return;
            }
        },
    };
    if shard.is_stopping() {
        // The shard began to close during the handshake.
        return;
    }
    let stream = Rc::new(RefCell::new(stream));
    let conn = Rc::new(Conn {
        id: shard.next_id(),
        outbox: Outbox::new(shard.config.limits.outbound_frames_max),
        client_id: RefCell::new(None),
        last_seen: Cell::new(Instant::now()),
        subs: RefCell::new(Vec::new()),
        stream: stream.clone(),
        unknown_commands: Cell::new(0),
        peer: peer.clone(),
        principal: RefCell::new(None),
        session: RefCell::new(None),
        policy_seen: Cell::new(0),
        verdicts: RefCell::default(),
        admin_pending: RefCell::default(),
        tls_principal,
    });
    if let (Some(principal), true) = (conn.tls_principal(), shard.security.is_enabled()) {
        // Mutual TLS names the caller: it needs no token. The certificate's validity was
        // checked in the handshake.
        let session = auth::Session {
            principal: principal.to_owned(),
            expires_at_ms: u64::MAX,
            token_id: None,
        };
        conn.authenticated(session, shard.security.authority().version());
    }
    shard.clients.add(conn.clone());
    match conn.tls_principal() {
        Some(principal) => log::debug!(
            "shard {}: connection {} from {peer} (TLS, as {principal})",
            shard.id,
            conn.id
        ),
        None => log::debug!("shard {}: connection {} from {peer}", shard.id, conn.id),
    }
    let writer = shard
        .tasks
        .spawn(write_loop(conn.clone(), Half(stream.clone())));
    let ended = read_loop(&shard, &conn, Half(stream)).await;
    match ended {
        Ok(()) => log::debug!("shard {}: {peer} closed the connection", shard.id),
        Err(reason) => shard.closing_log.closing(shard.id, &peer, &reason),
    }
    conn.outbox.close();
    writer.await;
    super::dispatch::disconnected(&shard, &conn).await;
    conn.shutdown();
}

async fn read_loop(shard: &Rc<Shard>, conn: &Rc<Conn>, mut reader: Half) -> Result<(), String> {
    let framer = Framer::new(shard.config.frame_limits());
    let read_buffer_bytes = shard.config.limits.read_buffer_bytes;
    let inflight = Rc::new(Semaphore::new(
        shard.config.limits.inflight_requests_max as u64,
    ));
    let mut buf = BytesMut::with_capacity(read_buffer_bytes);
    let read_chunk_max = if reader.is_tls() {
        TLS_READ_CHUNK_MAX
    } else {
        READ_CHUNK_MAX
    };
    let mut sizer = ReadSizer::new(READ_CHUNK_MIN, read_chunk_max);
    let unknown_max = shard.config.limits.unknown_commands_per_connection_max;
    let frame_timeout = shard.config.frame_timeout();
    // When the first byte of the frame now arriving came (`None` between frames), and what
    // it reserved of the shard's partial-frame budget.
    let mut frame_started: Option<Instant> = None;
    let mut reserved: Option<Reservation> = None;
    let mut read_timeout = shard.config.idle_timeout();
    loop {
        let mut completed = false;
        loop {
            match framer.split_frame_mut(&mut buf) {
                Ok(Some(frame)) => {
                    completed = true;
                    reserved = None;
                    conn.last_seen.set(Instant::now());
                    super::dispatch::dispatch(shard, conn, frame, &inflight).await;
                    if conn.outbox.is_closed() {
                        return Ok(());
                    }
                    if conn.unknown_commands.get() >= unknown_max {
                        conn.outbox.close();
                        return Err(format!(
                            "{unknown_max} frames with unknown commands \
                             (limits.unknown_commands_per_connection_max)"
                        ));
                    }
                }
                Ok(None) | Err(FrameError::Incomplete { .. }) => break,
                Err(FrameError::Invalid { offset, reason }) => {
                    let header = trusted_header(&buf, &reason);
                    refuse(shard, conn, &header, reason.status(), &reason.to_string()).await;
                    return Err(format!("invalid frame at byte {offset}: {reason}"));
                }
            }
        }
        if buf.is_empty() {
            frame_started = None;
        } else if completed || frame_started.is_none() {
            frame_started = Some(Instant::now());
        }
        if let Some(started) = frame_started {
            // A frame larger than the read buffer holds memory only within the shard's
            // budget: reserve its length before reading more of it.
            if reserved.is_none() && buf.len() >= HEADER_LEN {
                let frame_len = FrameHeader::decode(&buf).map_or(0, |h| h.frame_len());
                if !super::access::frame_allowed(shard, conn, frame_len) {
                    let header = FrameHeader::decode(&buf).unwrap_or_default();
                    let message = preauth_too_large(shard, frame_len);
                    refuse(shard, conn, &header, Status::Unauthenticated, &message).await;
                    return Err(message);
                }
                let frame_len = usize::try_from(frame_len).unwrap_or(usize::MAX);
                if frame_len > read_buffer_bytes {
                    let budget = &shard.frame_budget;
                    let reserve = budget.reserve_by(frame_len, started + frame_timeout);
                    match futures_lite::future::or(reserve, async {
                        conn.closed().await;
                        None
                    })
                    .await
                    {
                        Some(reservation) => reserved = Some(reservation),
                        None if conn.outbox.is_closed() => return Ok(()),
                        None => {
                            return Err(format!(
                                "a frame of {frame_len} bytes found no room in the shard's \
                                 partial-frame budget within {} ms \
                                 (limits.partial_frame_bytes_shard_max)",
                                shard.config.frame_timeout_ms
                            ));
                        }
                    }
                }
            }
        }
        // Between frames the idle timeout applies; within one, what is left of its time.
        let timeout = match frame_started {
            Some(started) => {
                let left = frame_timeout.saturating_sub(started.elapsed());
                if left.is_zero() {
                    return Err(frame_timed_out(shard, buf.len()));
                }
                left.min(shard.config.idle_timeout())
            }
            None => shard.config.idle_timeout(),
        };
        if timeout != read_timeout {
            reader.set_read_timeout(timeout);
            read_timeout = timeout;
        }
        let len = buf.len();
        if buf.capacity() - len < HEADER_LEN {
            buf.reserve(read_buffer_bytes);
        }
        let chunk = sizer.offer_after(&framer, &buf, buf.capacity() - len);
        buf.resize(len + chunk, 0);
        let read = reader.read(&mut buf[len..]).await;
        let n = match read {
            Ok(n) => n,
            // A TLS peer that closed its socket without a close_notify alert. Frames delimit
            // themselves, so this is an end of stream like any other: cut mid-frame it is
            // answered as such below.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => 0,
            Err(e) => {
                buf.truncate(len);
                return Err(if e.kind() == std::io::ErrorKind::TimedOut {
                    if frame_started.is_some() {
                        frame_timed_out(shard, len)
                    } else {
                        format!("idle for {} ms", shard.config.idle_timeout_ms)
                    }
                } else {
                    format!("read: {e}")
                });
            }
        };
        buf.truncate(len + n);
        sizer.observe(chunk, n);
        if n == 0 {
            if buf.is_empty() || shard.is_stopping() {
                return Ok(());
            }
            let header = match framer.check(&buf) {
                Err(FrameError::Incomplete { .. }) if buf.len() >= HEADER_LEN => {
                    FrameHeader::decode(&buf).unwrap_or_default()
                }
                _ => FrameHeader::default(),
            };
            let message = format!("connection closed {} bytes into a frame", buf.len());
            refuse(shard, conn, &header, Status::MalformedFrame, &message).await;
            return Err(message);
        }
    }
}

/// Why a frame was refused before the connection authenticated.
pub(crate) fn preauth_too_large(shard: &Shard, frame_len: u64) -> String {
    format!(
        "a {frame_len}-byte frame before authenticating: authenticate first (frames up to {} \
         bytes until then; security.preauth_frame_bytes_max)",
        shard.config.security.preauth_frame_bytes_max
    )
}

/// Why a connection whose frame did not complete in time is closed.
fn frame_timed_out(shard: &Shard, received: usize) -> String {
    format!(
        "a frame was not whole within {} ms ({received} bytes of it received; \
         frame_timeout_ms)",
        shard.config.frame_timeout_ms
    )
}

/// The header to answer a bad frame with: the frame's own when its checksum held (so the
/// request id is known), otherwise a blank one (request id 0).
fn trusted_header(buf: &[u8], fault: &FrameFault) -> FrameHeader {
    let untrusted = matches!(
        fault,
        FrameFault::Header(
            HeaderError::BadMagic { .. }
                | HeaderError::HeaderChecksum { .. }
                | HeaderError::UnsupportedVersion { .. }
        )
    );
    if untrusted {
        return FrameHeader::default();
    }
    FrameHeader::decode(buf).unwrap_or_default()
}

/// Answers a bad frame and closes the outbox behind the answer.
async fn refuse(shard: &Shard, conn: &Conn, header: &FrameHeader, status: Status, message: &str) {
    shard
        .counters
        .bad_frames
        .set(shard.counters.bad_frames.get() + 1);
    let response = error_response(header, status, message);
    let _ = conn.outbox.send(Outbound::Frame(response)).await;
    conn.outbox.close();
}

async fn write_loop(conn: Rc<Conn>, mut writer: Half) {
    let mut wbuf = Vec::with_capacity(64 << 10);
    loop {
        let seen = conn.outbox.readable.generation();
        wbuf.clear();
        if conn.outbox.drain_into(&mut wbuf, WRITE_BATCH_BYTES) == 0 {
            if conn.outbox.is_closed() {
                break;
            }
            conn.outbox.readable.wait(seen).await;
            continue;
        }
        let mut written = writer.write_all(&wbuf).await;
        if written.is_ok() && writer.holds_writes() {
            written = writer.flush().await;
        }
        if let Err(e) = written {
            log::debug!("connection {}: write: {e}", conn.id);
            conn.shutdown();
            return;
        }
        if wbuf.capacity() > 4 * WRITE_BATCH_BYTES {
            wbuf = Vec::with_capacity(64 << 10);
        }
    }
    let _ = writer.flush().await;
}
