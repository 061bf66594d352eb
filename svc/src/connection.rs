//! One control connection (nameserver, GSL, SGS): read frames, answer them in order, close
//! on a fault. Each server supplies only its command dispatch, as a [`Handler`].
//!
//! Requests are answered in the order they arrive, and every answer to the frames one read
//! brought in goes out in one write. The receive buffer holds at most one partial frame, and
//! the framer refuses a frame larger than `frame_len_max` from its header, so a connection
//! never buffers more than `frame_len_max` bytes; a frame above the small per-connection
//! allowance first reserves its length from the server's partial-frame budget, waiting,
//! reading nothing, until it fits (see `inbound` and [`crate::admission`]).
//!
//! A frame must arrive whole within `frame_timeout` of its first byte, and a new
//! connection's first frame within `frame_timeout` of the accept; else the connection is
//! closed (answered by request id when the header is in). The idle timeout is per read and
//! applies between frames: without the deadline a peer sending a byte now and then (a
//! slowloris) held its connection for ever.
//!
//! A frame that cannot be parsed, an unknown command or an undecodable body is answered with
//! an error (by request id when the header is intact, with request id 0 when it is not) and
//! the connection is closed: after such a fault the stream's frame boundaries cannot be
//! trusted. Other connections never notice.
//!
//! A response frame (the servers send no requests, so they await none) and a command code
//! this build does not know never reach the handler: they close the connection here.
//!
//! A request is answered when [`Handler::handle`] resolves: the connection reads its next
//! request only then, and shutdown waits for it too.
//!
//! When the server's [`Handler::authority`] has security on, a connection must present a
//! token (`Authenticate`) before anything else: any other first request is answered with
//! `Unauthenticated` and the connection closed, and until it authenticates a frame may be at
//! most `preauth_frame_bytes_max` long, so an anonymous peer holds almost no memory. What an
//! authenticated caller may do is each handler's to check, with [`Caller::check`], where the
//! action happens.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use auth::{Action, Authority, Outcome};
use log::{Level, debug, error, warn};
use protocol::codes::{Command, Status};
use protocol::control::{self, Authenticate, Authenticated, ControlError, ErrorReply};
use protocol::frame::{
    FrameError, FrameHeader, FrameMeta, Framer, HEADER_LEN, MAGIC, encode_frame, flag,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;

use crate::admission::Admission;
use crate::inbound::Inbound;
use crate::stream::{Stream, TlsServer};

/// Answers are written once this many bytes are pending, even mid-batch, so a peer
/// pipelining requests without reading cannot grow the write buffer without bound.
const WRITE_BATCH_MAX: usize = 256 << 10;

/// Security off: what [`Handler::authority`] returns unless a server has a policy.
static OPEN: Authority = Authority::open();

/// Who is on the other end of a connection.
#[derive(Clone, Debug)]
pub struct Caller {
    peer: SocketAddr,
    principal: Option<String>,
    session: Option<auth::Session>,
}

impl Caller {
    /// A caller from `peer`, not authenticated (yet).
    pub fn anonymous(peer: SocketAddr) -> Self {
        Self {
            peer,
            principal: None,
            session: None,
        }
    }

    /// A caller from `peer` authenticated as `principal`.
    pub fn authenticated(peer: SocketAddr, principal: impl Into<String>) -> Self {
        Self {
            peer,
            principal: Some(principal.into()),
            session: None,
        }
    }

    /// A caller from `peer` authenticated with `session`.
    fn with_session(peer: SocketAddr, session: auth::Session) -> Self {
        Self {
            peer,
            principal: Some(session.principal.clone()),
            session: Some(session),
        }
    }

    /// Why the caller's credentials no longer hold under `authority`, if they do not.
    fn lapsed(&self, authority: &Authority) -> Option<String> {
        self.session
            .as_ref()
            .and_then(|s| s.lapsed(authority, auth::now_ms()))
    }

    /// The peer's address.
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// The authenticated principal, if any.
    pub fn principal(&self) -> Option<&str> {
        self.principal.as_deref()
    }

    /// May this caller do `action` on `resource` (in `group`, for `consume`)? The refusal is
    /// the `PermissionDenied` answer naming principal, action and resource (and is audited).
    /// Always yes when `authority` has security off.
    pub fn check(
        &self,
        authority: &Authority,
        action: Action,
        resource: &str,
        group: Option<&str>,
    ) -> Result<(), Answer> {
        if !authority.is_enabled() {
            return Ok(());
        }
        let Some(principal) = self.principal() else {
            return Err(Answer::fatal(
                Status::Unauthenticated,
                auth::AuthError::Missing.to_string(),
            ));
        };
        authority
            .check(principal, &self.peer.to_string(), action, resource, group)
            .map_err(|denial| Answer::refused(Status::PermissionDenied, denial.to_string()))
    }

    /// Records an admin action this caller made, and how `answer` says it ended (its
    /// `ErrorReply` message as the detail of a failure), in the audit log.
    pub fn audit_answer(
        &self,
        authority: &Authority,
        action: &str,
        resource: &str,
        answer: &Answer,
    ) {
        let (outcome, detail) = if answer.status.is_ok() {
            (Outcome::Ok, String::new())
        } else {
            let detail = control::decode::<ErrorReply>(&answer.body)
                .map(|e| e.message)
                .unwrap_or_else(|_| answer.status.to_string());
            (Outcome::Failed, detail)
        };
        self.audit(authority, action, resource, outcome, &detail);
    }

    /// Records an admin action this caller made, with its outcome, in the audit log.
    pub fn audit(
        &self,
        authority: &Authority,
        action: &str,
        resource: &str,
        outcome: Outcome,
        detail: &str,
    ) {
        if let Some(audit) = authority.audit() {
            audit.record(
                self.principal(),
                &self.peer.to_string(),
                action,
                resource,
                outcome,
                detail,
            );
        }
    }
}

/// What a server supplies to the frame loop: its name, its limits and its answer to each
/// request.
pub trait Handler: Send + Sync + 'static {
    /// The server's name in the answers that refuse a frame (e.g. `"GSL"`).
    const NAME: &'static str;

    /// The framer, with the server's frame limits.
    fn framer(&self) -> &Framer;

    /// How long a connection may stay silent before it is closed.
    fn idle_timeout(&self) -> Duration;

    /// The server's security policy: connections must authenticate when it is on. Default:
    /// security off.
    fn authority(&self) -> &Authority {
        &OPEN
    }

    /// The server's TLS side, when its `[tls]` table is set: every connection then runs the
    /// handshake before its first frame. Default: plaintext.
    fn tls(&self) -> Option<&TlsServer> {
        None
    }

    /// Largest frame accepted before the connection authenticated (security on only).
    fn preauth_frame_bytes_max(&self) -> usize {
        auth::settings::PREAUTH_FRAME_BYTES_MAX_DEFAULT as usize
    }

    /// Answers one request of `caller`, `command` with `body`; a command the server does not
    /// serve is answered with [`Answer::not_served`]. The connection reads nothing more until
    /// it resolves. With security on, `caller` is authenticated; what it may do is the
    /// handler's to check ([`Caller::check`]).
    fn handle(
        self: &Arc<Self>,
        caller: &Caller,
        command: Command,
        body: &[u8],
    ) -> impl Future<Output = Answer> + Send;
}

/// The answer to one request.
#[derive(Debug)]
pub struct Answer {
    /// The response status.
    pub status: Status,
    /// The response body: the reply archive, or an [`ErrorReply`] when `status` is not `Ok`.
    pub body: Vec<u8>,
    /// The request showed the peer does not speak this protocol as we do (unknown command,
    /// undecodable body): answer, then close the connection.
    pub close: bool,
}

impl Answer {
    /// A success, with the reply archive `body`.
    pub fn ok(body: Vec<u8>) -> Self {
        Self {
            status: Status::Ok,
            body,
            close: false,
        }
    }

    /// An error the peer can correct and retry on the same connection.
    pub fn refused(status: Status, message: impl Into<String>) -> Self {
        Self {
            status,
            body: error_body(status, message.into()),
            close: false,
        }
    }

    /// An error after which the connection is closed.
    pub fn fatal(status: Status, message: impl Into<String>) -> Self {
        Self {
            close: true,
            ..Self::refused(status, message)
        }
    }

    /// A command known to the protocol but not served by `H`: the peer took this server for
    /// another, so nothing it sends next can be trusted to make sense here.
    pub fn not_served<H: Handler>(command: Command) -> Self {
        Self::fatal(
            Status::UnknownCommand,
            format!("{command} is not served by the {}", H::NAME),
        )
    }

    /// A payload that could not be decoded closes the connection; one that decoded but was
    /// refused (a bad name, an inconsistent count) is answered and the connection kept.
    pub fn from_control_error(error: &ControlError) -> Self {
        let status = error.status();
        match error {
            ControlError::Decode { .. } | ControlError::Misaligned { .. } => {
                Self::fatal(status, error.to_string())
            }
            ControlError::Encode { .. } => {
                // Our own reply could not be archived: a bug or a reply past 4 GiB.
                error!("cannot encode a reply: {error}");
                Self::refused(status, error.to_string())
            }
            _ => Self::refused(status, error.to_string()),
        }
    }
}

/// The command of a request frame, or the answer that refuses it.
fn request_command<H: Handler>(header: &FrameHeader) -> Result<Command, Answer> {
    if header.flags & flag::RESPONSE != 0 {
        return Err(Answer::fatal(
            Status::MalformedFrame,
            format!(
                "the {} sends no requests, so it takes no responses",
                H::NAME
            ),
        ));
    }
    header
        .command()
        .map_err(|unknown| Answer::fatal(Status::UnknownCommand, unknown.to_string()))
}

/// Archives an [`ErrorReply`]; an empty body if even that fails, since the status alone
/// still tells the peer what happened.
pub fn error_body(status: Status, message: String) -> Vec<u8> {
    control::encode(&ErrorReply::new(status, message)).unwrap_or_else(|e| {
        error!("cannot encode an error reply: {e}");
        Vec::new()
    })
}

/// Serves one connection of `caller` (anonymous, or named by its TLS certificate) until the
/// peer closes it, a fault closes it, it idles past the timeout, a frame misses its
/// deadline, or `shutdown` changes.
pub async fn serve<H: Handler>(
    handler: Arc<H>,
    mut stream: Stream,
    caller: Caller,
    admission: Arc<Admission>,
    mut shutdown: watch::Receiver<bool>,
) {
    let peer = caller.peer();
    match caller.principal() {
        Some(principal) => debug!("connection from {peer}, certificate of {principal}"),
        None => debug!("connection from {peer}"),
    }
    let frame_timeout = admission.limits().frame_timeout;
    let mut connection = Connection {
        handler,
        peer,
        caller,
        inbound: Inbound::new(Instant::now() + frame_timeout),
        admission,
        out: Vec::new(),
    };
    let result = connection.run(&mut stream, &mut shutdown).await;
    // Flush whatever was answered before the close, then close our side cleanly.
    let flushed = match result {
        Ok(()) => connection.flush(&mut stream).await,
        Err(e) => Err(e),
    };
    if let Err(e) = flushed {
        debug!("connection from {peer}: {e}");
    }
    let _ = stream.shutdown().await;
    debug!("connection from {peer} closed");
}

struct Connection<H> {
    handler: Arc<H>,
    peer: SocketAddr,
    caller: Caller,
    inbound: Inbound,
    admission: Arc<Admission>,
    out: Vec<u8>,
}

/// Whether the connection goes on after the frames in the buffer were answered.
#[derive(PartialEq, Eq)]
enum Next {
    /// Read on: `needed` bytes make the next frame (or its header), `answered` frames were
    /// answered.
    Read {
        needed: usize,
        answered: usize,
    },
    Close,
}

impl<H: Handler> Connection<H> {
    async fn run(
        &mut self,
        stream: &mut Stream,
        shutdown: &mut watch::Receiver<bool>,
    ) -> std::io::Result<()> {
        let idle_timeout = self.handler.idle_timeout();
        let frame_timeout = self.admission.limits().frame_timeout;
        loop {
            let Next::Read { needed, answered } = self.answer_buffered(stream).await? else {
                return Ok(());
            };
            self.flush(stream).await?;
            if answered > 0 {
                self.inbound.frames_answered(Instant::now(), frame_timeout);
            }
            if self.inbound.needs_reservation(needed) && !self.reserve(needed, shutdown).await {
                return Ok(());
            }
            self.inbound.make_room(needed);
            let idle_until = Instant::now() + idle_timeout;
            let wake = self
                .inbound
                .deadline()
                .map_or(idle_until, |d| d.min(idle_until));
            let read = tokio::select! {
                read = tokio::time::timeout_at(wake.into(), stream.read_buf(&mut self.inbound.buf)) => read,
                _ = shutdown.changed() => {
                    debug!("closing connection from {} for shutdown", self.peer);
                    return Ok(());
                }
            };
            match read {
                Err(_elapsed) if self.inbound.deadline() == Some(wake) => {
                    self.frame_late(needed);
                    return Ok(());
                }
                Err(_elapsed) => {
                    debug!(
                        "closing connection from {}: idle for {} ms",
                        self.peer,
                        idle_timeout.as_millis()
                    );
                    return Ok(());
                }
                Ok(Ok(0)) => {
                    self.closed_by_peer();
                    return Ok(());
                }
                Ok(Ok(_)) => self.inbound.received(Instant::now(), frame_timeout),
                Ok(Err(e)) => return Err(e),
            }
        }
    }

    /// Waits, reading nothing, until the frame of `needed` bytes fits the partial-frame
    /// budget; false when its deadline or shutdown came first and the connection closes.
    async fn reserve(&mut self, needed: usize, shutdown: &mut watch::Receiver<bool>) -> bool {
        let frame_timeout = self.admission.limits().frame_timeout;
        let deadline = self
            .inbound
            .deadline()
            .unwrap_or_else(|| Instant::now() + frame_timeout);
        let admission = Arc::clone(&self.admission);
        tokio::select! {
            reservation = admission.reserve(needed) => {
                self.inbound.reserved(reservation);
                true
            }
            () = tokio::time::sleep_until(deadline.into()) => {
                self.admission.log_fault(Level::Info, format_args!(
                    "closing connection from {}: its {needed}-byte frame waited {} ms for \
                     partial-frame memory ({} of partial_frame_bytes_max {} in use)",
                    self.peer,
                    frame_timeout.as_millis(),
                    self.admission.partial_frame_bytes(),
                    self.admission.limits().partial_frame_bytes_max,
                ));
                let message = format!("frame not received within {} ms: the server is \
                    short of memory for large frames", frame_timeout.as_millis());
                self.answer_fault(Status::SystemBusy, message);
                false
            }
            _ = shutdown.changed() => {
                debug!("closing connection from {} for shutdown", self.peer);
                false
            }
        }
    }

    /// The frame being received (of `needed` bytes, or a header) missed its deadline: close,
    /// answering its request id when the header is in, so a slow but honest peer learns why.
    fn frame_late(&mut self, needed: usize) {
        let ms = self.admission.limits().frame_timeout.as_millis();
        let received = self.inbound.buf.len();
        if received == 0 {
            self.admission.log_fault(
                Level::Info,
                format_args!(
                    "closing connection from {}: no frame within {ms} ms of connecting \
                     (frame_timeout_ms)",
                    self.peer
                ),
            );
            return;
        }
        self.admission.log_fault(
            Level::Info,
            format_args!(
                "closing connection from {}: frame not complete within {ms} ms \
                 (frame_timeout_ms): {received} of {needed} bytes received",
                self.peer
            ),
        );
        let message =
            format!("frame not complete within {ms} ms: {received} of {needed} bytes received");
        self.answer_fault(Status::RequestExpired, message);
    }

    /// Answers every complete frame in the buffer.
    async fn answer_buffered(&mut self, stream: &mut Stream) -> std::io::Result<Next> {
        let mut answered = 0;
        loop {
            let framer = self.handler.framer();
            // `check` first: unlike `split_frame`, it does not grow the buffer for a partial
            // frame, which must wait for its reservation.
            let split = match framer.check(&self.inbound.buf) {
                Ok(_) => framer.split_frame(&mut self.inbound.buf),
                Err(e) => Err(e),
            };
            let frame = match split {
                Ok(Some(frame)) => frame,
                Err(FrameError::Incomplete { needed }) => {
                    if !self.preauth_fits(needed) {
                        return Ok(Next::Close);
                    }
                    return Ok(Next::Read { needed, answered });
                }
                // Not after a successful `check`; reading on is still the right response.
                Ok(None) => {
                    let needed = self.inbound.buf.len() + 1;
                    return Ok(Next::Read { needed, answered });
                }
                Err(FrameError::Invalid { offset, reason }) => {
                    let status = reason.status();
                    self.admission.log_fault(
                        Level::Info,
                        format_args!(
                            "closing connection from {}: invalid frame at byte {offset}: {reason}",
                            self.peer
                        ),
                    );
                    let message = format!("invalid frame at byte {offset}: {reason}");
                    self.answer_fault(status, message);
                    return Ok(Next::Close);
                }
            };
            answered += 1;
            let header = frame.header;
            if !self.preauth_fits(header.frame_len().try_into().unwrap_or(usize::MAX)) {
                return Ok(Next::Close);
            }
            let answer = match request_command::<H>(&header) {
                Ok(Command::Authenticate) => self.authenticate(&frame.body),
                Ok(command) if self.needs_authentication() => {
                    self.handler
                        .authority()
                        .refuse_unauthenticated(&self.peer.to_string(), command.name());
                    Answer::fatal(
                        Status::Unauthenticated,
                        format!(
                            "the {} requires authentication: {}",
                            H::NAME,
                            auth::AuthError::Missing
                        ),
                    )
                }
                Ok(command) => match self.caller.lapsed(self.handler.authority()) {
                    Some(reason) => Answer::fatal(
                        Status::Unauthenticated,
                        format!("{reason}: authenticate again"),
                    ),
                    None => {
                        self.handler
                            .handle(&self.caller, command, &frame.body)
                            .await
                    }
                },
                Err(refusal) => refusal,
            };
            let close = answer.close;
            if close {
                self.admission.log_fault(
                    Level::Info,
                    format_args!(
                        "closing connection from {} after request {} (command {:#06x}): {}",
                        self.peer, header.request_id, header.command, answer.status
                    ),
                );
            }
            // A oneway request expects no answer, unless it is the reason for closing.
            if header.flags & flag::ONEWAY == 0 || close {
                self.push_answer(FrameMeta::response(&header, answer.status), &answer);
            }
            if close {
                return Ok(Next::Close);
            }
            if self.out.len() >= WRITE_BATCH_MAX {
                self.flush(stream).await?;
            }
        }
    }

    /// True when security is on and the connection has not authenticated.
    fn needs_authentication(&self) -> bool {
        self.handler.authority().is_enabled() && self.caller.principal().is_none()
    }

    /// False (after answering) when an unauthenticated connection's frame of `frame_len`
    /// bytes is past `preauth_frame_bytes_max`: an anonymous peer may not make the server
    /// hold large frames.
    fn preauth_fits(&mut self, frame_len: usize) -> bool {
        let max = self.handler.preauth_frame_bytes_max();
        if !self.needs_authentication() || frame_len <= max {
            return true;
        }
        self.admission.log_fault(
            Level::Info,
            format_args!(
                "closing connection from {}: a {frame_len}-byte frame before authenticating                  (preauth_frame_bytes_max {max})",
                self.peer
            ),
        );
        self.answer_fault(
            Status::Unauthenticated,
            format!(
                "a {frame_len}-byte frame before authenticating: authenticate first                  (frames up to {max} bytes until then)"
            ),
        );
        false
    }

    /// `Authenticate`: takes the token's principal for the rest of the connection, or closes
    /// it. With security off any token is taken (as `anonymous`), so a client configured
    /// with a token also works against an open server.
    fn authenticate(&mut self, body: &[u8]) -> Answer {
        let request: Authenticate = match control::decode(body) {
            Ok(request) => request,
            Err(e) => return Answer::from_control_error(&e),
        };
        let authority = self.handler.authority();
        match authority.authenticate(&request.token, &self.peer.to_string()) {
            Ok(session) => {
                debug!(
                    "connection from {} authenticated as {}",
                    self.peer, session.principal
                );
                let reply = Authenticated {
                    principal: session.principal.clone(),
                    expires_at_ms: session.expires_at_ms,
                };
                self.caller = Caller::with_session(self.peer, session);
                match control::encode(&reply) {
                    Ok(body) => Answer::ok(body),
                    Err(e) => Answer::from_control_error(&e),
                }
            }
            Err(e) => Answer::fatal(Status::Unauthenticated, e.to_string()),
        }
    }

    /// The peer closed its side. A partial frame left in the buffer is answered (the peer
    /// may still read) when its header is intact.
    fn closed_by_peer(&mut self) {
        if self.inbound.buf.is_empty() {
            debug!("connection from {} closed by the peer", self.peer);
            return;
        }
        let needed = intact_header(&self.inbound.buf).map_or(HEADER_LEN as u64, |h| h.frame_len());
        self.admission.log_fault(
            Level::Info,
            format_args!(
                "connection from {} closed mid-frame: {} of {needed} bytes received",
                self.peer,
                self.inbound.buf.len()
            ),
        );
        let message = format!(
            "connection closed mid-frame: {} of {needed} bytes received",
            self.inbound.buf.len()
        );
        self.answer_fault(Status::MalformedFrame, message);
    }

    /// Queues the error answer to a frame that could not be parsed: to its request id when
    /// the header is intact, else to request id 0, which no request uses for a reply that
    /// matters, so the peer sees why it is being disconnected.
    fn answer_fault(&mut self, status: Status, message: String) {
        let meta = match intact_header(&self.inbound.buf) {
            Some(header) => FrameMeta::response(&header, status),
            None => FrameMeta {
                command: 0,
                flags: flag::RESPONSE,
                request_id: 0,
                status: status.code(),
            },
        };
        let answer = Answer::fatal(status, message);
        self.push_answer(meta, &answer);
    }

    fn push_answer(&mut self, meta: FrameMeta, answer: &Answer) {
        if let Err(e) = encode_frame(&meta, &[], &answer.body, &mut self.out) {
            // Only a body past 4 GiB fails to frame; answer with the status alone.
            warn!(
                "cannot frame a {}-byte answer to {}: {e}",
                answer.body.len(),
                self.peer
            );
            let meta = FrameMeta {
                status: Status::Internal.code(),
                ..meta
            };
            let body = error_body(Status::Internal, e.to_string());
            let _ = encode_frame(&meta, &[], &body, &mut self.out);
        }
    }

    /// Writes the pending answers. A peer that does not read its answers gets
    /// `frame_timeout` to start, else the connection closes: it would otherwise hold its
    /// slot and output buffer for as long as it liked.
    async fn flush(&mut self, stream: &mut Stream) -> std::io::Result<()> {
        if !self.out.is_empty() {
            let frame_timeout = self.admission.limits().frame_timeout;
            // Over TLS, rustls may keep sealed records when the socket was full: the flush
            // sends them (a no-op on plain TCP).
            let write = async {
                stream.write_all(&self.out).await?;
                stream.flush().await
            };
            tokio::time::timeout(frame_timeout, write)
                .await
                .map_err(|_| {
                    std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!(
                            "answers not taken within {} ms (frame_timeout_ms)",
                            frame_timeout.as_millis()
                        ),
                    )
                })??;
            self.out.clear();
            if self.out.capacity() > WRITE_BATCH_MAX {
                // A large answer's capacity is not kept while the connection idles.
                self.out = Vec::new();
            }
        }
        Ok(())
    }
}

/// The header at the start of `buf`, if it is complete, starts with the magic and its
/// checksum matches: only then is its request id worth answering to.
fn intact_header(buf: &[u8]) -> Option<FrameHeader> {
    let header = FrameHeader::decode(buf).ok()?;
    (header.magic == MAGIC && header.compute_header_crc() == header.header_crc32c).then_some(header)
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Gsl;

    impl Handler for Gsl {
        const NAME: &'static str = "GSL";

        fn framer(&self) -> &Framer {
            unreachable!("the refusals need no framer")
        }

        fn idle_timeout(&self) -> Duration {
            Duration::from_secs(1)
        }

        fn handle(
            self: &Arc<Self>,
            _caller: &Caller,
            command: Command,
            _body: &[u8],
        ) -> impl Future<Output = Answer> + Send {
            std::future::ready(Answer::not_served::<Self>(command))
        }
    }

    fn message(answer: &Answer) -> String {
        control::decode::<ErrorReply>(&answer.body).unwrap().message
    }

    #[test]
    fn responses_unknown_and_unserved_commands_close_with_the_servers_name() {
        let request = FrameHeader {
            command: Command::GslResolve.code(),
            flags: flag::REQUEST,
            ..FrameHeader::default()
        };
        assert_eq!(
            request_command::<Gsl>(&request).unwrap(),
            Command::GslResolve
        );

        let response = FrameHeader {
            flags: flag::RESPONSE,
            ..request
        };
        let refusal = request_command::<Gsl>(&response).unwrap_err();
        assert_eq!(
            (refusal.status, refusal.close),
            (Status::MalformedFrame, true)
        );
        assert_eq!(
            message(&refusal),
            "the GSL sends no requests, so it takes no responses"
        );

        let unknown = FrameHeader {
            command: 0x01FF,
            ..request
        };
        let refusal = request_command::<Gsl>(&unknown).unwrap_err();
        assert_eq!(
            (refusal.status, refusal.close),
            (Status::UnknownCommand, true)
        );
        assert_eq!(
            message(&refusal),
            protocol::codes::UnknownCommand(0x01FF).to_string()
        );

        let unserved = Answer::not_served::<Gsl>(Command::TopicRoute);
        assert_eq!(
            (unserved.status, unserved.close),
            (Status::UnknownCommand, true)
        );
        assert_eq!(
            message(&unserved),
            format!("{} is not served by the GSL", Command::TopicRoute)
        );
    }
}
