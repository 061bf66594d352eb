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

/// Plaintext bytes handed to rustls per seal: its send buffer holds 64 KiB by default, so a
/// large body is sealed and written in pieces rather than all encrypted in memory at once.
const SEAL_CHUNK_BYTES: usize = 16 << 10;
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

    /// Encrypts `plaintext` and writes the records to `stream`. The caller holds the
    /// connection's writer mutex; the rustls lock is held only while sealing.
    pub(crate) fn write_all(
        &self,
        stream: &mut TcpStream,
        records: &mut Vec<u8>,
        mut plaintext: &[u8],
    ) -> std::io::Result<()> {
        loop {
            records.clear();
            let sealed = self.seal(records, &plaintext[..plaintext.len().min(SEAL_CHUNK_BYTES)])?;
            plaintext = &plaintext[sealed..];
            stream.write_all(records)?;
            if plaintext.is_empty() {
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
