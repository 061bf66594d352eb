//! One multiplexed connection to a broker or nameserver.
//!
//! Writes happen on the caller's thread under a mutex; one reader thread per connection
//! completes pending requests by request id and hands pushes to their subscription or to the
//! client's reply registry. So a request costs one wake-up: the reader's.
//!
//! Over TLS the same holds, with rustls's state shared between writers and the reader as
//! [`super::tls`] describes; plaintext connections never touch it.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use protocol::codes::{Command, Status};
use protocol::control::{self, ClientHeartbeat, ErrorReply, HeartbeatAck};
use protocol::data::BatchAddress;
use protocol::frame::{FrameBytes, FrameHeader, FrameMeta, Framer, HEADER_LEN, ReadSizer, flag};
use protocol::record::{BATCH_LEN_MAX, BatchView};

use crate::config::{READ_CHUNK_BYTES, READ_CHUNK_MIN_BYTES, WRITE_COPY_BYTES_MAX};
use crate::error::{ClientError, Result};
use crate::slot::slot;

use super::tls::{TlsConnector, TlsReader, TlsState, rustls_cause, tls_error};

/// What a pending request is completed with: the response frame when its status is `Ok`,
/// else the error the status and `ErrorReply` stand for.
pub(crate) type Callback = Box<dyn FnOnce(Result<FrameBytes>) + Send>;

/// Receives `Push` frames of one subscription, on the connection's reader thread.
pub(crate) trait PushSink: Send + Sync {
    /// One pushed batch frame; must not block for long.
    fn on_push(&self, conn: &Arc<Connection>, frame: FrameBytes);

    /// The broker says the subscription's topic changed (queues added or retired); must not
    /// block for long.
    fn on_topic_changed(&self) {}

    /// The broker cannot serve one of the subscription's queues (a `PushFault` frame: an
    /// `ErrorReply` body); must not block for long.
    fn on_fault(&self, _frame: FrameBytes) {}
}

/// Receives `ReplyPush` frames, on the reader thread of whichever connection they arrive on.
pub(crate) trait ReplySink: Send + Sync {
    /// One reply batch frame; must not block for long.
    fn on_reply_push(&self, endpoint: &str, frame: FrameBytes);

    /// A transaction check-back (`TransactionCheck` push); must not block for long.
    fn on_transaction_check(&self, _endpoint: &str, _frame: FrameBytes) {}
}

/// The address and the batch a pushed frame (`Push`, `ReplyPush`) carries, or why either is
/// malformed (naming `endpoint`).
pub(crate) fn pushed_batch<'f>(
    endpoint: &str,
    frame: &'f FrameBytes,
) -> Result<(BatchAddress<'f>, BatchView<'f>), String> {
    let address = BatchAddress::decode(&frame.ext)
        .map_err(|e| format!("{endpoint}: bad batch address: {e}"))?;
    let batch = BatchView::parse(&frame.body, BATCH_LEN_MAX).map_err(|e| {
        format!(
            "{endpoint}: corrupt batch of {}/{}: {e}",
            address.topic, address.queue_id
        )
    })?;
    Ok((address, batch))
}

/// The first frame a broker connection sends, and the heartbeat after it.
#[derive(Clone, Debug)]
pub(crate) struct Handshake {
    pub(crate) heartbeat: ClientHeartbeat,
}

struct Writer {
    stream: TcpStream,
    buf: Vec<u8>,
    /// TLS only: the records sealed from `buf` (or a body), before they go to the socket.
    records: Vec<u8>,
}

/// The reader thread's stream: the socket, or TLS over it.
enum Inbound {
    Plain(TcpStream),
    Tls(TcpStream, TlsReader),
}

impl Inbound {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Self::Plain(stream) => stream.read(buf),
            Self::Tls(stream, tls) => tls.read(stream, buf),
        }
    }

    fn socket(&self) -> &TcpStream {
        match self {
            Self::Plain(stream) | Self::Tls(stream, _) => stream,
        }
    }
}

#[derive(Default)]
struct Pending {
    /// By request id: the callback, and when the request was sent.
    callbacks: HashMap<u64, (Callback, Instant)>,
    closed: bool,
}

/// A live connection; see the module docs.
pub(crate) struct Connection {
    endpoint: String,
    writer: Mutex<Writer>,
    pending: Mutex<Pending>,
    next_request_id: AtomicU64,
    subscriptions: Mutex<HashMap<u64, Arc<dyn PushSink>>>,
    replies: Option<Arc<dyn ReplySink>>,
    close_listeners: Mutex<Vec<Box<dyn Fn() + Send + Sync>>>,
    closed: AtomicBool,
    /// Set when the client closed the connection because the peer stopped answering
    /// heartbeats: the peer stalled, rather than went away.
    closed_silent: AtomicBool,
    opened: Instant,
    /// Milliseconds after `opened` when the last frame arrived; shows a dead peer.
    last_read_ms: AtomicU64,
    heartbeat: Option<Handshake>,
    ack: OnceLock<HeartbeatAck>,
    /// TLS connections: rustls's state, shared by writers and the reader.
    tls: Option<Arc<TlsState>>,
    /// Why TLS ended the connection (a fatal alert from the peer, a corrupt record): set by
    /// the reader before it closes, so a failed first heartbeat reports it.
    tls_fault: OnceLock<tls::rustls::Error>,
    /// Set when a plaintext connection met a TLS server: what the caller is told instead of
    /// a bare "disconnected".
    speaks_tls: OnceLock<String>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("endpoint", &self.endpoint)
            .field("closed", &self.is_closed())
            .finish()
    }
}

/// The first bytes of a TLS alert record (content type 21, version 3.x): what a TLS server
/// answers a plaintext request with.
const TLS_ALERT_PREFIX: [u8; 2] = [0x15, 0x03];
/// How long a failed write on a TLS connection waits for the reader to read the alert that
/// explains it: the peer closed, so the reader ends at once unless the network stalls.
const TLS_FAULT_WAIT: Duration = Duration::from_secs(1);

impl Connection {
    /// Connects to `endpoint` (`host:port`), runs the TLS handshake with `tls`, starts the
    /// reader thread, authenticates with `token` when given and, for a broker (`handshake`
    /// given), sends the first heartbeat and waits for its ack. With TLS 1.3 a server refuses
    /// a client certificate after the client finished its side, so that refusal arrives as
    /// an alert in answer to the first request and is reported as [`ClientError::Tls`].
    pub(crate) fn open(
        endpoint: &str,
        handshake: Option<Handshake>,
        replies: Option<Arc<dyn ReplySink>>,
        token: Option<&str>,
        connect_timeout: Duration,
        tls: Option<&TlsConnector>,
    ) -> Result<Arc<Self>> {
        let io = |source| ClientError::Io {
            endpoint: endpoint.to_owned(),
            source,
        };
        let addrs: Vec<SocketAddr> = endpoint.to_socket_addrs().map_err(io)?.collect();
        let mut last = std::io::Error::new(std::io::ErrorKind::NotFound, "no address resolved");
        let mut stream = None;
        for addr in addrs {
            match TcpStream::connect_timeout(&addr, connect_timeout) {
                Ok(s) => {
                    stream = Some(s);
                    break;
                }
                Err(e) => last = e,
            }
        }
        let mut stream = stream.ok_or_else(|| io(last))?;
        stream.set_nodelay(true).map_err(io)?;
        let certified = tls.is_some_and(TlsConnector::presents_certificate);
        let tls = match tls {
            Some(connector) => Some(Arc::new(connector.handshake(
                endpoint,
                &mut stream,
                connect_timeout,
            )?)),
            None => None,
        };
        let reader = stream.try_clone().map_err(io)?;
        let reader = match &tls {
            Some(state) => Inbound::Tls(reader, TlsReader::new(state.clone())),
            None => Inbound::Plain(reader),
        };
        let conn = Arc::new(Self {
            endpoint: endpoint.to_owned(),
            writer: Mutex::new(Writer {
                stream,
                buf: Vec::with_capacity(WRITE_COPY_BYTES_MAX + HEADER_LEN),
                records: Vec::new(),
            }),
            pending: Mutex::default(),
            next_request_id: AtomicU64::new(1),
            subscriptions: Mutex::default(),
            replies,
            close_listeners: Mutex::default(),
            closed: AtomicBool::new(false),
            closed_silent: AtomicBool::new(false),
            opened: Instant::now(),
            last_read_ms: AtomicU64::new(0),
            heartbeat: handshake,
            ack: OnceLock::new(),
            tls,
            tls_fault: OnceLock::new(),
            speaks_tls: OnceLock::new(),
        });
        let run = conn.clone();
        // Dropped when the reader thread ends: a failed TLS first heartbeat waits for it, so
        // the alert that explains the failure is read before the failure is reported.
        let (reader_done_tx, reader_done) = std::sync::mpsc::channel::<()>();
        std::thread::Builder::new()
            .name(format!("defibus-read-{endpoint}"))
            .spawn(move || {
                let _done = reader_done_tx;
                run.read_loop(reader);
            })
            .map_err(io)?;
        // A refused client certificate comes as an alert after the handshake, in answer to
        // the first request, whose write may fail (broken pipe) before the reader has read
        // it: wait for the reader to end, then report the TLS cause. A timeout has nothing
        // more to learn.
        let first_failure = |e: ClientError| {
            if conn.tls.is_some() && !matches!(e, ClientError::Timeout { .. }) {
                let _ = reader_done.recv_timeout(connect_timeout);
            }
            conn.close();
            match conn.tls_fault.get() {
                Some(fault) => tls_error(endpoint, fault.clone()),
                None => e,
            }
        };
        // Over mutual TLS the certificate is the credential: a token would only rename the
        // caller, so it is not sent.
        let token = token.filter(|_| !certified);
        if let Some(token) = token {
            let principal = conn
                .authenticate(token, connect_timeout)
                .map_err(first_failure)?;
            log::debug!("authenticated to {endpoint} as {principal}");
        }
        if conn.heartbeat.is_some() {
            let ack = conn
                .heartbeat_call(connect_timeout)
                .map_err(first_failure)?;
            log::debug!(
                "connected to {endpoint}: broker {} shard {} of {}",
                ack.broker_id,
                ack.shard_id,
                ack.shard_count
            );
            let _ = conn.ack.set(ack);
        } else {
            log::debug!("connected to {endpoint}");
        }
        Ok(conn)
    }

    /// The peer, `host:port`.
    pub(crate) fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The TLS cipher suite agreed with the peer (e.g. `TLS13_AES_256_GCM_SHA384`); `None`
    /// for a plaintext connection.
    pub(crate) fn tls_cipher_suite(&self) -> Option<String> {
        let suite = self.tls.as_ref()?.cipher_suite()?;
        Some(format!("{:?}", suite.suite()))
    }

    /// True once the socket failed or [`Self::close`] was called.
    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// True for broker connections, which heartbeat and so must hear back regularly.
    pub(crate) fn sends_heartbeats(&self) -> bool {
        self.heartbeat.is_some()
    }

    /// Time since the last frame arrived.
    pub(crate) fn idle_for(&self) -> Duration {
        let last = Duration::from_millis(self.last_read_ms.load(Ordering::Relaxed));
        self.opened.elapsed().saturating_sub(last)
    }

    /// Calls `listener` once the connection closes (at once if it already has).
    pub(crate) fn on_close(&self, listener: Box<dyn Fn() + Send + Sync>) {
        let mut listeners = self
            .close_listeners
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if self.is_closed() {
            drop(listeners);
            listener();
        } else {
            listeners.push(listener);
        }
    }

    /// Routes `Push` frames of `subscription_id` to `sink`.
    pub(crate) fn add_subscription(&self, subscription_id: u64, sink: Arc<dyn PushSink>) {
        self.subscriptions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(subscription_id, sink);
    }

    /// Stops routing pushes of `subscription_id`.
    pub(crate) fn remove_subscription(&self, subscription_id: u64) {
        self.subscriptions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&subscription_id);
    }

    /// Shuts the socket; the reader thread then fails every pending request and exits.
    pub(crate) fn close(&self) {
        if let Ok(writer) = self.writer.lock() {
            let _ = writer.stream.shutdown(Shutdown::Both);
        }
        self.mark_closed();
    }

    /// Closes a connection whose peer stopped answering (nothing received for several
    /// heartbeat intervals); [`Self::closed_silent`] tells it apart from a peer that left.
    pub(crate) fn close_silent(&self) {
        self.closed_silent.store(true, Ordering::Release);
        self.close();
    }

    /// True when the connection was closed by [`Self::close_silent`].
    pub(crate) fn closed_silent(&self) -> bool {
        self.closed_silent.load(Ordering::Acquire)
    }

    /// Sends a heartbeat and waits up to `timeout` for its ack: proof the broker shard
    /// serves requests. Fails for a connection without a handshake (not a broker).
    pub(crate) fn ping(&self, timeout: Duration) -> Result<()> {
        self.heartbeat_call(timeout).map(drop)
    }

    /// Sends a request and calls `callback` with its response, on the reader thread. When
    /// sending fails the error is returned and `callback` is dropped uncalled. Returns the
    /// request id, for [`Self::forget`].
    pub(crate) fn call_with(
        &self,
        command: Command,
        ext: &[u8],
        body: &[u8],
        callback: Callback,
    ) -> Result<u64> {
        let meta = self.request_meta(command, FrameMeta::request);
        let request_id = meta.request_id;
        {
            let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
            if pending.closed {
                return Err(self.disconnected());
            }
            pending
                .callbacks
                .insert(request_id, (callback, Instant::now()));
        }
        if let Err(e) = self.write_frame(&meta, ext, body) {
            self.forget(request_id);
            return Err(e);
        }
        Ok(request_id)
    }

    /// Sends a request and blocks for its response for at most `timeout`.
    pub(crate) fn call(
        &self,
        command: Command,
        ext: &[u8],
        body: &[u8],
        timeout: Duration,
    ) -> Result<FrameBytes> {
        let (completer, waiter) = slot();
        let request_id = self.call_with(
            command,
            ext,
            body,
            Box::new(move |result| {
                completer.complete(result);
            }),
        )?;
        let result = waiter.wait(timeout);
        if result.is_err() {
            self.forget(request_id);
        }
        result
    }

    /// Sends a request that expects no response.
    pub(crate) fn send_oneway(&self, command: Command, ext: &[u8], body: &[u8]) -> Result<()> {
        let meta = self.request_meta(command, FrameMeta::oneway);
        self.write_frame(&meta, ext, body)
    }

    /// Sends a request whose success needs no response ([`flag::FAILURES_ONLY`]): the peer
    /// answers only a refusal, which the reader thread logs. Nothing is registered, so
    /// nothing waits and nothing is left behind when no answer comes.
    pub(crate) fn send_failures_only(
        &self,
        command: Command,
        ext: &[u8],
        body: &[u8],
    ) -> Result<()> {
        let meta = self.request_meta(command, |command, id| {
            FrameMeta::request(command, id).failures_only()
        });
        self.write_frame(&meta, ext, body)
    }

    /// The header of a new request of `command` (`make` picks its kind) under a fresh request
    /// id; a record batch's body is left out of the frame checksum, since it carries its own.
    fn request_meta(
        &self,
        command: Command,
        make: impl Fn(Command, u64) -> FrameMeta,
    ) -> FrameMeta {
        let meta = make(
            command,
            self.next_request_id.fetch_add(1, Ordering::Relaxed),
        );
        if command.carries_record_batch() {
            meta.without_body_crc()
        } else {
            meta
        }
    }

    /// Drops a pending request (after its caller gave up); a late response is then ignored.
    /// Returns its callback, so a timer can complete it with a timeout.
    pub(crate) fn forget(&self, request_id: u64) -> Option<Callback> {
        self.pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .callbacks
            .remove(&request_id)
            .map(|(callback, _)| callback)
    }

    /// Completes every request sent more than `max_age` ago with [`ClientError::Timeout`]
    /// (a late response is then ignored); returns how many. Requests sent with
    /// [`Self::call_with`] have no deadline of their own (a produce, say): this is what
    /// ends one on a stalled broker, so that it is retried elsewhere instead of waiting for
    /// the whole send's timeout.
    pub(crate) fn expire_pending(&self, max_age: Duration) -> usize {
        let expired: Vec<Callback> = {
            let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
            if pending.callbacks.is_empty() {
                return 0;
            }
            let old: Vec<u64> = pending
                .callbacks
                .iter()
                .filter(|(_, (_, sent))| sent.elapsed() > max_age)
                .map(|(id, _)| *id)
                .collect();
            old.iter()
                .filter_map(|id| pending.callbacks.remove(id))
                .map(|(callback, _)| callback)
                .collect()
        };
        let count = expired.len();
        for callback in expired {
            callback(Err(ClientError::Timeout { after: max_age }));
        }
        count
    }

    /// Sends a heartbeat whose ack only proves liveness; failures close the connection through
    /// the reader thread, so nothing waits for it.
    pub(crate) fn heartbeat(&self) -> Result<()> {
        let Some(handshake) = &self.heartbeat else {
            return Ok(());
        };
        let body = control::encode(&handshake.heartbeat)
            .map_err(|e| ClientError::control(&self.endpoint, e))?;
        let endpoint = self.endpoint.clone();
        self.call_with(
            Command::Heartbeat,
            &[],
            &body,
            Box::new(move |result| {
                if let Err(e) = result {
                    log::debug!("{endpoint}: heartbeat failed: {e}");
                }
            }),
        )
        .map(drop)
    }

    /// `Authenticate` with `token`; the principal the peer took it for.
    fn authenticate(&self, token: &str, timeout: Duration) -> Result<String> {
        let request = control::Authenticate {
            token: token.to_owned(),
        };
        let body =
            control::encode(&request).map_err(|e| ClientError::control(&self.endpoint, e))?;
        let frame = self.call(Command::Authenticate, &[], &body, timeout)?;
        control::decode::<control::Authenticated>(&frame.body)
            .map(|reply| reply.principal)
            .map_err(|e| ClientError::control(&self.endpoint, e))
    }

    fn heartbeat_call(&self, timeout: Duration) -> Result<HeartbeatAck> {
        let Some(handshake) = &self.heartbeat else {
            return Err(ClientError::InvalidArgument(
                "no heartbeat configured".into(),
            ));
        };
        let body = control::encode(&handshake.heartbeat)
            .map_err(|e| ClientError::control(&self.endpoint, e))?;
        let frame = self.call(Command::Heartbeat, &[], &body, timeout)?;
        control::decode::<HeartbeatAck>(&frame.body)
            .map_err(|e| ClientError::control(&self.endpoint, e))
    }

    /// Why the connection is unusable: the TLS fault that closed it (a refused certificate
    /// arrives as an alert answering the first request to a nameserver or GSL, which sends
    /// none before), else a plain disconnect.
    fn disconnected(&self) -> ClientError {
        if let Some(reason) = self.speaks_tls.get() {
            return ClientError::Protocol {
                endpoint: self.endpoint.clone(),
                reason: reason.clone(),
            };
        }
        match self.tls_fault.get() {
            Some(fault) => tls_error(&self.endpoint, fault.clone()),
            None => ClientError::Disconnected {
                endpoint: self.endpoint.clone(),
            },
        }
    }

    fn write_frame(&self, meta: &FrameMeta, ext: &[u8], body: &[u8]) -> Result<()> {
        let header = FrameHeader::seal(meta, ext, body)
            .map_err(|e| ClientError::InvalidArgument(format!("unencodable frame: {e}")))?;
        let mut writer = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        if self.is_closed() {
            return Err(self.disconnected());
        }
        let Writer {
            stream,
            buf,
            records,
        } = &mut *writer;
        buf.clear();
        buf.extend_from_slice(&header.encode());
        buf.extend_from_slice(ext);
        let result = match &self.tls {
            None if body.len() <= WRITE_COPY_BYTES_MAX => {
                buf.extend_from_slice(body);
                stream.write_all(buf)
            }
            None => stream.write_all(buf).and_then(|()| stream.write_all(body)),
            // Sealing copies anyway: header and body go into the same records.
            Some(tls) => tls.write_all(stream, records, &[buf, body]),
        };
        if let Err(source) = result {
            if self.tls.is_some() && self.tls_fault.get().is_none() {
                // A TLS server that refused our certificate sent an alert and closed, which
                // a write may see first (broken pipe): give the reader, which ends at that
                // alert or the close, a moment to read why before reporting.
                drop(writer);
                let (ended, end) = std::sync::mpsc::channel();
                self.on_close(Box::new(move || {
                    let _ = ended.send(());
                }));
                let _ = end.recv_timeout(TLS_FAULT_WAIT);
                writer = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
            }
            // A partial write leaves the stream mid-frame: nothing more can go on it.
            let _ = writer.stream.shutdown(Shutdown::Both);
            drop(writer);
            self.mark_closed();
            if let Some(fault) = self.tls_fault.get() {
                return Err(tls_error(&self.endpoint, fault.clone()));
            }
            return Err(ClientError::Io {
                endpoint: self.endpoint.clone(),
                source,
            });
        }
        Ok(())
    }

    fn mark_closed(&self) {
        if self.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        let callbacks = {
            let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
            pending.closed = true;
            std::mem::take(&mut pending.callbacks)
        };
        for (_, (callback, _)) in callbacks {
            callback(Err(self.disconnected()));
        }
        self.subscriptions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
        let listeners = std::mem::take(
            &mut *self
                .close_listeners
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        );
        for listener in listeners {
            listener();
        }
        log::debug!("connection to {} closed", self.endpoint);
    }

    /// Sends the records rustls made while reading (a key update, an alert) if no writer
    /// holds the writer mutex; one that does sends them after its own (see
    /// [`super::tls`]), so the reader never waits on a writer blocked on the peer.
    fn send_pending_records(&self, tls: &TlsState) {
        let Ok(mut writer) = self.writer.try_lock() else {
            return;
        };
        let Writer {
            stream, records, ..
        } = &mut *writer;
        records.clear();
        let sent = tls
            .pending_records(records)
            .and_then(|()| stream.write_all(records));
        if let Err(e) = sent {
            log::debug!("{}: sending TLS records: {e}", self.endpoint);
        }
    }

    fn read_loop(self: Arc<Self>, mut stream: Inbound) {
        let framer = Framer::default();
        let mut buf = BytesMut::with_capacity(READ_CHUNK_BYTES);
        // Every byte offered to a read is zero-filled first: offer what the stream needs.
        let mut sizer = ReadSizer::new(READ_CHUNK_MIN_BYTES, READ_CHUNK_BYTES);
        'read: loop {
            let len = buf.len();
            let offered = sizer.offer_after(&framer, &buf, usize::MAX);
            buf.resize(len + offered, 0);
            let n = match stream.read(&mut buf[len..]) {
                Ok(0) => {
                    buf.truncate(len);
                    break;
                }
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {
                    buf.truncate(len);
                    continue;
                }
                Err(e) => {
                    buf.truncate(len);
                    if let Some(fault) = rustls_cause(&e) {
                        let _ = self.tls_fault.set(fault.clone());
                    }
                    if !self.is_closed() {
                        log::debug!("{}: read failed: {e}", self.endpoint);
                    }
                    break;
                }
            };
            if let (Some(tls), Inbound::Tls(_, reader)) = (&self.tls, &stream) {
                if reader.wants_write() {
                    self.send_pending_records(tls);
                }
            }
            buf.truncate(len + n);
            sizer.observe(offered, n);
            self.last_read_ms
                .store(self.opened.elapsed().as_millis() as u64, Ordering::Relaxed);
            loop {
                match framer.split_frame(&mut buf) {
                    Ok(Some(frame)) => self.dispatch(frame),
                    Ok(None) => break,
                    Err(e) if self.tls.is_none() && buf.starts_with(&TLS_ALERT_PREFIX) => {
                        let reason = "the server answered with a TLS alert, so it speaks TLS: \
                             configure the client with TLS (ClientConfig::with_tls; the \
                             defibus CLI: --tls-ca FILE or DEFIBUS_TLS_CA)";
                        log::debug!("{}: {reason} ({e})", self.endpoint);
                        let _ = self.speaks_tls.set(reason.to_owned());
                        break 'read;
                    }
                    Err(e) => {
                        log::warn!("{}: bad frame, closing: {e}", self.endpoint);
                        break 'read;
                    }
                }
            }
        }
        let _ = stream.socket().shutdown(Shutdown::Both);
        self.mark_closed();
    }

    fn dispatch(self: &Arc<Self>, frame: FrameBytes) {
        let header = frame.header;
        if header.flags & flag::RESPONSE != 0 {
            let callback = self
                .pending
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .callbacks
                .remove(&header.request_id);
            match callback {
                Some((callback, _)) => callback(response_result(&self.endpoint, frame)),
                // A refusal of a request sent with `send_failures_only` (or an answer that
                // came after its caller gave up).
                None => {
                    if let Err(e) = response_result(&self.endpoint, frame) {
                        log::debug!(
                            "{}: request {} refused: {e}",
                            self.endpoint,
                            header.request_id
                        );
                    }
                }
            }
            return;
        }
        match header.command() {
            Ok(Command::TopicConfigChanged) => {
                let subscription_id = protocol::data::BatchAddress::decode(&frame.ext)
                    .ok()
                    .and_then(|address| address.subscription_id);
                let sink = subscription_id.and_then(|id| {
                    self.subscriptions
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .get(&id)
                        .cloned()
                });
                if let Some(sink) = sink {
                    sink.on_topic_changed();
                }
            }
            Ok(command @ (Command::Push | Command::PushFault)) => {
                let Ok(address) = protocol::data::BatchAddress::decode(&frame.ext) else {
                    log::warn!("{}: push without a valid address dropped", self.endpoint);
                    return;
                };
                let Some(subscription_id) = address.subscription_id else {
                    log::warn!("{}: push without a subscription id dropped", self.endpoint);
                    return;
                };
                let sink = self
                    .subscriptions
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .get(&subscription_id)
                    .cloned();
                match sink {
                    Some(sink) if command == Command::PushFault => sink.on_fault(frame),
                    Some(sink) => sink.on_push(self, frame),
                    None => log::debug!(
                        "{}: push for unknown subscription {subscription_id} dropped",
                        self.endpoint
                    ),
                }
            }
            Ok(Command::ReplyPush) => match &self.replies {
                Some(replies) => replies.on_reply_push(&self.endpoint, frame),
                None => log::debug!("{}: unexpected reply push dropped", self.endpoint),
            },
            Ok(Command::TransactionCheck) => match &self.replies {
                Some(replies) => replies.on_transaction_check(&self.endpoint, frame),
                None => log::debug!("{}: unexpected transaction check dropped", self.endpoint),
            },
            Ok(Command::Heartbeat) if header.flags & flag::ONEWAY == 0 => {
                // A broker probing us: answer with an empty ack so it sees us alive.
                let meta = FrameMeta::response(&header, Status::Ok);
                let _ = self.write_frame(&meta, &[], &[]);
            }
            other => log::debug!(
                "{}: ignoring request {:?} ({:#06x})",
                self.endpoint,
                other,
                header.command
            ),
        }
    }
}

/// The result a response frame stands for.
fn response_result(endpoint: &str, frame: FrameBytes) -> Result<FrameBytes> {
    if frame.header.status == Status::Ok.code() {
        return Ok(frame);
    }
    let message = control::decode::<ErrorReply>(&frame.body)
        .map(|reply| reply.message)
        .unwrap_or_else(|_| format!("(no detail from {endpoint})"));
    Err(ClientError::from_status(frame.header.status, message))
}

#[cfg(test)]
mod tests {
    //! The connection against a scripted peer on loopback: handshake, responses matched by
    //! request id out of order, pushes routed by subscription, failure of pending calls.

    use super::*;
    use protocol::data::BatchAddress;
    use protocol::frame::{Frame, encode_frame};
    use std::net::TcpListener;
    use std::sync::mpsc;

    fn read_frame(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<(FrameHeader, Vec<u8>)> {
        let framer = Framer::default();
        loop {
            if let Ok(Frame { header, body, .. }) = framer.parse(buf) {
                let len = header.frame_len() as usize;
                let body = body.to_vec();
                buf.drain(..len);
                return Some((header, body));
            }
            let mut chunk = [0u8; 4096];
            let n = stream.read(&mut chunk).ok()?;
            if n == 0 {
                return None;
            }
            buf.extend_from_slice(&chunk[..n]);
        }
    }

    fn respond(stream: &mut TcpStream, request: &FrameHeader, body: &[u8]) {
        let mut out = Vec::new();
        encode_frame(
            &FrameMeta::response(request, Status::Ok),
            &[],
            body,
            &mut out,
        )
        .unwrap();
        stream.write_all(&out).unwrap();
    }

    struct Pushes(mpsc::Sender<u64>);
    impl PushSink for Pushes {
        fn on_push(&self, _conn: &Arc<Connection>, frame: FrameBytes) {
            let address = BatchAddress::decode(&frame.ext).unwrap();
            self.0.send(address.subscription_id.unwrap()).unwrap();
        }
    }

    #[test]
    fn handshake_out_of_order_responses_pushes_and_disconnect() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let endpoint = listener.local_addr().unwrap().to_string();
        let peer = std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let mut buf = Vec::new();
            let (hello, body) = read_frame(&mut stream, &mut buf).unwrap();
            assert_eq!(
                hello.command(),
                Ok(Command::Heartbeat),
                "heartbeat comes first"
            );
            let heartbeat = control::decode::<ClientHeartbeat>(&body).unwrap();
            assert_eq!(heartbeat.client_id, "me@1#A10");
            let ack = HeartbeatAck {
                broker_id: "b".into(),
                shard_id: 0,
                shard_count: 1,
            };
            respond(&mut stream, &hello, &control::encode(&ack).unwrap());
            // Two requests, answered in reverse order.
            let (first, _) = read_frame(&mut stream, &mut buf).unwrap();
            let (second, _) = read_frame(&mut stream, &mut buf).unwrap();
            respond(&mut stream, &second, b"second");
            respond(&mut stream, &first, b"first");
            // A push for subscription 9, then one for an unknown subscription.
            for subscription in [9u64, 10] {
                let mut ext = Vec::new();
                BatchAddress::new("A10-1", 0)
                    .with_subscription(subscription)
                    .encode(&mut ext)
                    .unwrap();
                let mut out = Vec::new();
                let meta = FrameMeta::oneway(Command::Push, 0).without_body_crc();
                encode_frame(&meta, &ext, b"batch", &mut out).unwrap();
                stream.write_all(&out).unwrap();
            }
            // A third request is left unanswered: the connection drops instead.
            read_frame(&mut stream, &mut buf).unwrap();
        });
        let handshake = Handshake {
            heartbeat: ClientHeartbeat {
                client_id: "me@1#A10".into(),
                area: "A10".into(),
            },
        };
        let conn = Connection::open(
            &endpoint,
            Some(handshake),
            None,
            None,
            Duration::from_secs(10),
            None,
        )
        .unwrap();
        assert_eq!(conn.ack.get().unwrap().broker_id, "b");
        let (pushes, pushed) = mpsc::channel();
        conn.add_subscription(9, Arc::new(Pushes(pushes)));
        let (tx, rx) = mpsc::channel();
        for label in ["first", "second"] {
            let tx = tx.clone();
            conn.call_with(
                Command::Stats,
                &[],
                &[],
                Box::new(move |r| tx.send((label, r.map(|f| f.body.to_vec()))).unwrap()),
            )
            .unwrap();
        }
        let mut answers: Vec<_> = (0..2)
            .map(|_| rx.recv_timeout(Duration::from_secs(10)).unwrap())
            .map(|(label, body)| (label, String::from_utf8(body.unwrap()).unwrap()))
            .collect();
        answers.sort();
        assert_eq!(
            answers,
            [("first", "first".into()), ("second", "second".into())]
        );
        assert_eq!(pushed.recv_timeout(Duration::from_secs(10)).unwrap(), 9);
        let err = conn
            .call(Command::Stats, &[], &[], Duration::from_secs(10))
            .unwrap_err();
        assert!(matches!(err, ClientError::Disconnected { .. }), "{err}");
        assert!(conn.is_closed());
        assert!(
            pushed.try_recv().is_err(),
            "the unknown subscription's push was dropped"
        );
        assert!(matches!(
            conn.send_oneway(Command::Credit, &[], &[]),
            Err(ClientError::Disconnected { .. })
        ));
        peer.join().unwrap();
    }

    #[test]
    fn a_silent_peer_is_a_timeout_and_a_dead_port_an_io_error() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let endpoint = listener.local_addr().unwrap().to_string();
        let conn =
            Connection::open(&endpoint, None, None, None, Duration::from_secs(10), None).unwrap();
        let err = conn
            .call(Command::TopicRoute, &[], &[], Duration::from_millis(20))
            .unwrap_err();
        assert!(matches!(err, ClientError::Timeout { .. }), "{err}");
        assert!(
            conn.pending.lock().unwrap().callbacks.is_empty(),
            "the wait was forgotten"
        );
        // A request without a deadline of its own is ended by the expiry sweep, not before.
        let (tx, rx) = mpsc::channel();
        conn.call_with(
            Command::Produce,
            &[],
            &[],
            Box::new(move |r| tx.send(r.map(drop)).unwrap()),
        )
        .unwrap();
        assert_eq!(conn.expire_pending(Duration::from_secs(3600)), 0);
        assert!(rx.try_recv().is_err());
        assert_eq!(conn.expire_pending(Duration::ZERO), 1);
        let err = rx.try_recv().unwrap().unwrap_err();
        assert!(matches!(err, ClientError::Timeout { .. }), "{err}");
        assert!(!conn.is_closed(), "expiry leaves the connection up");
        conn.close();
        drop(listener);
        let err = Connection::open(&endpoint, None, None, None, Duration::from_secs(1), None)
            .unwrap_err();
        assert!(matches!(err, ClientError::Io { .. }), "{err}");
    }
}
