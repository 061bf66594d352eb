//! One blocking connection to a broker shard that speaks the wire protocol with nothing but
//! the `protocol` crate: frames encoded and parsed on the calling thread, no reader thread,
//! no pool, no callbacks. What the client does for a connection, stripped to the exchange.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::BytesMut;
use protocol::codes::{Command, Status};
use protocol::control::{self, ClientHeartbeat, ErrorReply, HeartbeatAck};
use protocol::frame::{FrameBytes, FrameMeta, Framer, encode_frame, flag};

/// Bytes read from the socket per `read` call (the client's chunk size).
const READ_CHUNK_BYTES: usize = 64 * 1024;
/// How long a read waits before the caller gets to send a due heartbeat.
const READ_TIMEOUT: Duration = Duration::from_millis(500);
/// Heartbeat period: the broker closes a subscribed connection silent for three of them.
const HEARTBEAT_INTERVAL: Duration =
    Duration::from_millis(protocol::control::HEARTBEAT_INTERVAL_MS_DEFAULT);
/// How long the handshake and control calls may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// A connection; see the module docs.
pub struct Wire {
    endpoint: String,
    stream: TcpStream,
    framer: Framer,
    inbound: BytesMut,
    chunk: Vec<u8>,
    outbound: Vec<u8>,
    next_request_id: u64,
    heartbeat: Vec<u8>,
    last_heartbeat: Instant,
}

impl Wire {
    /// Connects to `endpoint` and introduces `client_id`: the heartbeat that must come first
    /// and that tells the broker where replies to this id go.
    pub fn connect(endpoint: &str, client_id: &str, area: &str) -> anyhow::Result<Self> {
        let stream =
            TcpStream::connect(endpoint).with_context(|| format!("connecting to {endpoint}"))?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(READ_TIMEOUT))?;
        let heartbeat = control::encode(&ClientHeartbeat {
            client_id: client_id.to_owned(),
            area: area.to_owned(),
        })?;
        let mut wire = Self {
            endpoint: endpoint.to_owned(),
            stream,
            framer: Framer::default(),
            inbound: BytesMut::with_capacity(READ_CHUNK_BYTES),
            chunk: vec![0; READ_CHUNK_BYTES],
            outbound: Vec::with_capacity(READ_CHUNK_BYTES),
            next_request_id: 1,
            heartbeat,
            last_heartbeat: Instant::now(),
        };
        let body = wire.heartbeat.clone();
        let ack = wire.call(Command::Heartbeat, &[], &body)?;
        control::decode::<HeartbeatAck>(&ack.body)
            .with_context(|| format!("{endpoint}: heartbeat ack"))?;
        Ok(wire)
    }

    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Sends a request frame (`oneway`: expecting no response); returns its request id.
    /// Record batches go without the frame body checksum, as the client sends them: they
    /// carry their own.
    pub fn send(
        &mut self,
        command: Command,
        oneway: bool,
        ext: &[u8],
        body: &[u8],
    ) -> anyhow::Result<u64> {
        let request_id = self.next_request_id;
        self.next_request_id += 1;
        let mut meta = if oneway {
            FrameMeta::oneway(command, request_id)
        } else {
            FrameMeta::request(command, request_id)
        };
        if command.carries_record_batch() {
            meta = meta.without_body_crc();
        }
        self.outbound.clear();
        encode_frame(&meta, ext, body, &mut self.outbound)
            .with_context(|| format!("encoding a {command:?} frame"))?;
        self.stream
            .write_all(&self.outbound)
            .with_context(|| format!("writing to {}", self.endpoint))?;
        Ok(request_id)
    }

    /// The next frame the broker sends that is not a liveness probe (probes are answered
    /// here); `None` when none arrived within the read timeout.
    pub fn read(&mut self) -> anyhow::Result<Option<FrameBytes>> {
        loop {
            if let Some(frame) = self
                .framer
                .split_frame(&mut self.inbound)
                .with_context(|| format!("a bad frame from {}", self.endpoint))?
            {
                if frame.header.command() == Ok(Command::Heartbeat)
                    && frame.header.flags & flag::REQUEST != 0
                {
                    self.answer_probe(&frame)?;
                    continue;
                }
                return Ok(Some(frame));
            }
            match self.stream.read(&mut self.chunk) {
                Ok(0) => anyhow::bail!("{} closed the connection", self.endpoint),
                Ok(n) => self.inbound.extend_from_slice(&self.chunk[..n]),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    return Ok(None);
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e).with_context(|| format!("reading {}", self.endpoint)),
            }
        }
    }

    /// Sends a heartbeat if one is due; its ack comes back as an ordinary response, which
    /// callers skip.
    pub fn heartbeat_if_due(&mut self) -> anyhow::Result<()> {
        if self.last_heartbeat.elapsed() >= HEARTBEAT_INTERVAL {
            let body = std::mem::take(&mut self.heartbeat);
            let sent = self.send(Command::Heartbeat, false, &[], &body);
            self.heartbeat = body;
            sent?;
            self.last_heartbeat = Instant::now();
        }
        Ok(())
    }

    /// Sends a request and waits for its response, which must be `Ok`; for the handshake and
    /// subscriptions, before any push can arrive.
    pub fn call(
        &mut self,
        command: Command,
        ext: &[u8],
        body: &[u8],
    ) -> anyhow::Result<FrameBytes> {
        let request_id = self.send(command, false, ext, body)?;
        let deadline = Instant::now() + CALL_TIMEOUT;
        loop {
            anyhow::ensure!(
                Instant::now() < deadline,
                "{}: no answer to {command:?} within {CALL_TIMEOUT:?}",
                self.endpoint
            );
            let Some(frame) = self.read()? else { continue };
            if frame.header.flags & flag::RESPONSE != 0 && frame.header.request_id == request_id {
                check_status(&self.endpoint, &frame)?;
                return Ok(frame);
            }
        }
    }

    fn answer_probe(&mut self, probe: &FrameBytes) -> anyhow::Result<()> {
        if probe.header.flags & flag::ONEWAY != 0 {
            return Ok(());
        }
        self.outbound.clear();
        encode_frame(
            &FrameMeta::response(&probe.header, Status::Ok),
            &[],
            &[],
            &mut self.outbound,
        )?;
        self.stream
            .write_all(&self.outbound)
            .with_context(|| format!("writing to {}", self.endpoint))
    }
}

/// `Ok(())` for a response with status `Ok`, else the broker's error message.
pub fn check_status(endpoint: &str, frame: &FrameBytes) -> anyhow::Result<()> {
    if frame.header.status == Status::Ok.code() {
        return Ok(());
    }
    let message = control::decode::<ErrorReply>(&frame.body)
        .map(|reply| reply.message)
        .unwrap_or_else(|_| "(no detail)".into());
    anyhow::bail!(
        "{endpoint} answered {:?} with status {}: {message}",
        frame.header.command(),
        frame.header.status
    )
}
