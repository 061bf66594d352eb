//! TLS on a blocking connection, with rustls's low-level [`ClientConnection`].
//!
//! A connection has two users of its socket: callers writing on their own threads (under the
//! connection's writer mutex) and one reader thread. Both need the one rustls state, so it
//! sits behind its own mutex, held only to move bytes in and out of rustls, never while a
//! socket call blocks:
//!
//! - the reader reads raw bytes from its socket clone without the lock, then locks to
//!   `read_tls` + `process_new_packets` and take the plaintext;
//! - a writer (holding the writer mutex) locks to encrypt a chunk and take the records
//!   ([`TlsState::seal`]), unlocks, and writes them to the socket.
//!
//! Records reach the socket in the order rustls made them because only holders of the writer
//! mutex take them. Records the reader makes rustls produce (a key update, an alert) are sent
//! by the reader when the writer mutex is free, else by the writer holding it, which takes
//! everything pending after its own write.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tls::rustls::{self, ClientConfig, ClientConnection};

use crate::error::{ClientError, Result};

/// Plaintext bytes sealed per socket write: a large body is sealed and written in pieces
/// rather than all encrypted in memory at once, each piece four full 16 KiB records (the
/// most rustls's send buffer holds by default) written with one syscall.
const SEAL_CHUNK_BYTES: usize = 64 << 10;
/// Raw bytes read from the socket per read by the reader thread.
const RAW_READ_BYTES: usize = 64 << 10;

/// What a client needs to open TLS connections: the config, and the settings it came from
/// (for the server name).
pub(crate) struct TlsConnector {
    config: Arc<ClientConfig>,
    settings: tls::TlsSettings,
}

impl TlsConnector {
    /// A connector for `settings`; fails naming the file or setting that is wrong.
    pub(crate) fn new(settings: &tls::TlsSettings) -> Result<Self> {
        let config = tls::client_config(settings)
            .map_err(|source| ClientError::TlsConfig(Arc::new(source)))?;
        Ok(Self {
            config,
            settings: settings.clone(),
        })
    }

    /// True when the client presents a certificate: over mutual TLS the certificate names
    /// the client, so its token is not sent.
    pub(crate) fn presents_certificate(&self) -> bool {
        self.settings.cert.is_some()
    }

    /// Runs the handshake with `endpoint` over `stream`, within `timeout`.
    pub(crate) fn handshake(
        &self,
        endpoint: &str,
        stream: &mut TcpStream,
        timeout: Duration,
    ) -> Result<TlsState> {
        let name = tls::server_name(&self.settings, endpoint)
            .map_err(|source| ClientError::TlsConfig(Arc::new(source)))?;
        let mut conn = ClientConnection::new(self.config.clone(), name)
            .map_err(|source| tls_error(endpoint, source))?;
        let deadline = Instant::now() + timeout;
        while conn.is_handshaking() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(ClientError::Timeout { after: timeout });
            }
            let io = |source| ClientError::Io {
                endpoint: endpoint.to_owned(),
                source,
            };
            stream.set_read_timeout(Some(left)).map_err(io)?;
            stream.set_write_timeout(Some(left)).map_err(io)?;
            if let Err(e) = conn.complete_io(stream) {
                return Err(handshake_failure(endpoint, &mut conn, e, timeout));
            }
        }
        let io = |source| ClientError::Io {
            endpoint: endpoint.to_owned(),
            source,
        };
        stream.set_read_timeout(None).map_err(io)?;
        stream.set_write_timeout(None).map_err(io)?;
        Ok(TlsState {
            conn: Mutex::new(conn),
        })
    }
}

/// The error a failed handshake step stands for: rustls's reason when it had one (an unknown
/// CA, a plaintext peer), a timeout, or the socket's error.
fn handshake_failure(
    endpoint: &str,
    conn: &mut ClientConnection,
    e: std::io::Error,
    timeout: Duration,
) -> ClientError {
    if let Some(source) = rustls_cause(&e) {
        return tls_error(endpoint, source.clone());
    }
    if let Err(source) = conn.process_new_packets() {
        return tls_error(endpoint, source);
    }
    match e.kind() {
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => {
            ClientError::Timeout { after: timeout }
        }
        _ => ClientError::Io {
            endpoint: endpoint.to_owned(),
            source: e,
        },
    }
}

/// A TLS failure with `endpoint`, with a hint when the peer is plainly not speaking TLS.
pub(crate) fn tls_error(endpoint: &str, source: rustls::Error) -> ClientError {
    let hint = match source {
        rustls::Error::InvalidMessage(_) => {
            " (the peer does not speak TLS: is the server's [tls] set?)"
        }
        _ => "",
    };
    ClientError::Tls {
        endpoint: endpoint.to_owned(),
        hint,
        source: Box::new(source),
    }
}

/// The rustls state of one connection, shared by its writers and its reader.
pub(crate) struct TlsState {
    conn: Mutex<ClientConnection>,
}

impl TlsState {
    fn lock(&self) -> std::sync::MutexGuard<'_, ClientConnection> {
        // rustls's state is consistent between calls; a panicking holder left no half-step.
        self.conn.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Encrypts `parts` (a frame's header and body, in order) and writes the records to
    /// `stream`. The caller holds the connection's writer mutex; the rustls lock is held only
    /// while sealing, never across a socket write.
    ///
    /// The parts are sealed together, [`SEAL_CHUNK_BYTES`] at a time and written with one
    /// syscall per round: a header does not cost a record and a write of its own, and records
    /// are full-sized (rustls cuts at 16 KiB, which divides the chunk).
    pub(crate) fn write_all(
        &self,
        stream: &mut TcpStream,
        records: &mut Vec<u8>,
        parts: &[&[u8]],
    ) -> std::io::Result<()> {
        let mut rest = Parts::new(parts);
        loop {
            records.clear();
            {
                let mut conn = self.lock();
                while !rest.is_empty() && records.len() < SEAL_CHUNK_BYTES {
                    let taken = conn
                        .writer()
                        .write_vectored(&rest.slices(SEAL_CHUNK_BYTES))?;
                    rest.advance(taken);
                    while conn.wants_write() {
                        conn.write_tls(records)?;
                    }
                    if taken == 0 {
                        break;
                    }
                }
                // Records the reader left (a key update, an alert) go out with these.
                while conn.wants_write() {
                    conn.write_tls(records)?;
                }
            }
            if records.is_empty() && !rest.is_empty() {
                // rustls took nothing and had nothing to send: the connection is closing.
                return Err(std::io::ErrorKind::WriteZero.into());
            }
            stream.write_all(records)?;
            if rest.is_empty() {
                return Ok(());
            }
        }
    }

    /// Hands rustls what of `plaintext` it takes and appends every record it has to send
    /// (these and any the reader left) to `records`; returns the plaintext bytes taken.
    fn seal(&self, records: &mut Vec<u8>, plaintext: &[u8]) -> std::io::Result<usize> {
        let mut conn = self.lock();
        let taken = conn.writer().write(plaintext)?;
        while conn.wants_write() {
            conn.write_tls(records)?;
        }
        Ok(taken)
    }

    /// Records waiting to be sent (a key update the reader answered, an alert), appended to
    /// `records`. The caller holds the writer mutex and sends them.
    pub(crate) fn pending_records(&self, records: &mut Vec<u8>) -> std::io::Result<()> {
        self.seal(records, &[]).map(drop)
    }

    /// The cipher suite agreed in the handshake.
    pub(crate) fn cipher_suite(&self) -> Option<rustls::SupportedCipherSuite> {
        self.lock().negotiated_cipher_suite()
    }
}

/// What of a frame's parts is not sealed yet.
struct Parts<'a> {
    parts: &'a [&'a [u8]],
    /// Bytes of `parts[0]` already sealed.
    offset: usize,
}

impl<'a> Parts<'a> {
    fn new(parts: &'a [&'a [u8]]) -> Self {
        let mut rest = Self { parts, offset: 0 };
        rest.skip_empty();
        rest
    }

    fn is_empty(&self) -> bool {
        self.parts.is_empty()
    }

    /// The next at most `limit` bytes, as slices.
    fn slices(&self, limit: usize) -> Vec<std::io::IoSlice<'a>> {
        let mut slices = Vec::with_capacity(self.parts.len());
        let mut left = limit;
        for (i, part) in self.parts.iter().enumerate() {
            let part = if i == 0 { &part[self.offset..] } else { part };
            let len = part.len().min(left);
            slices.push(std::io::IoSlice::new(&part[..len]));
            left -= len;
            if left == 0 {
                break;
            }
        }
        slices
    }

    /// Marks `taken` more bytes as sealed.
    fn advance(&mut self, mut taken: usize) {
        while let Some(part) = self.parts.first() {
            let left = part.len() - self.offset;
            if taken < left {
                self.offset += taken;
                return;
            }
            taken -= left;
            self.parts = &self.parts[1..];
            self.offset = 0;
            self.skip_empty();
        }
    }

    fn skip_empty(&mut self) {
        while self
            .parts
            .first()
            .is_some_and(|part| part.len() == self.offset)
        {
            self.parts = &self.parts[1..];
            self.offset = 0;
        }
    }
}

/// The reader thread's side: raw bytes from the socket in, plaintext out.
pub(crate) struct TlsReader {
    state: Arc<TlsState>,
    raw: Vec<u8>,
    /// `raw[start..end]`: bytes read from the socket that rustls has not taken yet.
    start: usize,
    end: usize,
    /// Set once the socket reported its end (and rustls was told).
    eof: bool,
}

impl TlsReader {
    pub(crate) fn new(state: Arc<TlsState>) -> Self {
        Self {
            state,
            raw: vec![0; RAW_READ_BYTES],
            start: 0,
            end: 0,
            eof: false,
        }
    }

    /// Reads plaintext into `buf` (0: the stream ended), reading the socket without the
    /// rustls lock as needed. A TLS failure (a fatal alert, a corrupt record) is an
    /// `InvalidData` error carrying the [`rustls::Error`].
    pub(crate) fn read(
        &mut self,
        socket: &mut TcpStream,
        buf: &mut [u8],
    ) -> std::io::Result<usize> {
        loop {
            {
                let mut conn = self.state.lock();
                match conn.reader().read(buf) {
                    Ok(len) => return Ok(len),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    // The peer closed without close_notify. Frames delimit themselves, so the
                    // framer judges whether what came is whole; either way the stream ended.
                    Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(0),
                    Err(e) => return Err(e),
                }
                if self.start < self.end {
                    // One read_tls at a time: rustls holds a bounded amount of plaintext,
                    // drained above before more records go in.
                    let mut raw = &self.raw[self.start..self.end];
                    self.start += conn.read_tls(&mut raw)?;
                    conn.process_new_packets().map_err(invalid_data)?;
                    continue;
                }
                if self.eof {
                    return Ok(0);
                }
            }
            let n = socket.read(&mut self.raw)?;
            self.start = 0;
            self.end = n;
            if n == 0 {
                // An empty read_tls tells rustls the stream ended; what it still holds is
                // read above, then the end.
                self.eof = true;
                let mut conn = self.state.lock();
                conn.read_tls(&mut &[][..])?;
                conn.process_new_packets().map_err(invalid_data)?;
            }
        }
    }

    /// Whether rustls has records to send (answering the peer, or an alert); the reader sends
    /// them when it can take the writer mutex, else the writer holding it does.
    pub(crate) fn wants_write(&self) -> bool {
        self.state.lock().wants_write()
    }
}

fn invalid_data(e: rustls::Error) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, e)
}

/// A rustls error carried by an IO error from [`TlsReader::read`].
pub(crate) fn rustls_cause(e: &std::io::Error) -> Option<&rustls::Error> {
    e.get_ref().and_then(|e| e.downcast_ref::<rustls::Error>())
}

#[cfg(test)]
mod tests {
    use super::Parts;

    fn concat(slices: &[std::io::IoSlice<'_>]) -> Vec<u8> {
        slices.iter().flat_map(|s| s.iter().copied()).collect()
    }

    #[test]
    fn parts_hand_out_every_byte_once_in_order_across_boundaries() {
        let header = b"head".as_slice();
        let empty = b"".as_slice();
        let body = b"0123456789".as_slice();
        let all = [header, empty, body];
        let mut rest = Parts::new(&all);
        let mut seen = Vec::new();
        // Takes that end inside a part, exactly at its end, and short of what was offered.
        for (limit, take) in [(3, 3), (5, 1), (4, 4), (100, 2), (100, 100)] {
            assert!(!rest.is_empty());
            let offered = concat(&rest.slices(limit));
            assert!(offered.len() <= limit);
            let take = take.min(offered.len());
            seen.extend_from_slice(&offered[..take]);
            rest.advance(take);
        }
        assert!(rest.is_empty());
        assert_eq!(seen, b"head0123456789");
    }

    #[test]
    fn parts_of_nothing_are_empty_at_once() {
        let empty = b"".as_slice();
        assert!(Parts::new(&[]).is_empty());
        assert!(Parts::new(&[empty, empty]).is_empty());
    }
}
