//! Connections and their pool: one connection per (address, port), re-established with a
//! bounded, jittered exponential backoff.

mod conn;
mod tls;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

pub(crate) use conn::{Connection, Handshake, PushSink, ReplySink, pushed_batch};
pub(crate) use tls::TlsConnector;

use crate::backoff::Backoff;
use crate::error::{ClientError, Result};

/// Whether a peer is a broker (heartbeats, pushes, replies) or a control server: a
/// nameserver or GSL (requests only).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PeerKind {
    /// A broker shard.
    Broker,
    /// A nameserver or GSL.
    Control,
}

/// A pool key: the endpoint, and whether it is a broker (connections differ by handshake).
type SlotKey = (String, bool);

/// One endpoint's slot: its connection and its reconnect pacing.
struct Slot {
    conn: Option<Arc<Connection>>,
    backoff: Backoff,
    /// No new attempt before this instant, after a failed one.
    retry_at: Option<Instant>,
    /// Why the last attempt failed, answered while backing off instead of a bare
    /// `Disconnected`: the OS's reason (connection refused, no route), or, when another
    /// attempt would fail the same way (a refused certificate, TLS against plaintext), the
    /// TLS or protocol error, which is not retryable and so must not look like a broker down.
    last_failure: Option<ClientError>,
}

/// Everything the pool needs to open connections.
pub(crate) struct PoolConfig {
    pub(crate) handshake: Handshake,
    pub(crate) replies: Arc<dyn ReplySink>,
    pub(crate) connect_timeout: Duration,
    pub(crate) backoff_min: Duration,
    pub(crate) backoff_max: Duration,
    /// Presented first on every connection, when set.
    pub(crate) token: Option<String>,
    /// TLS for every connection when set: brokers, nameservers and GSL alike (a bus with
    /// TLS has it on every server).
    pub(crate) tls: Option<TlsConnector>,
}

/// Live connections keyed by endpoint, shared by every producer, consumer and requester of a
/// client.
pub(crate) struct Pool {
    config: PoolConfig,
    slots: Mutex<HashMap<SlotKey, Arc<Mutex<Slot>>>>,
}

impl Pool {
    pub(crate) fn new(config: PoolConfig) -> Self {
        Self {
            config,
            slots: Mutex::default(),
        }
    }

    /// The live connection to `endpoint`, connecting if there is none. While an endpoint is
    /// backing off after a failed attempt this fails fast with [`ClientError::Disconnected`],
    /// so callers move on to another queue instead of waiting.
    pub(crate) fn get(&self, endpoint: &str, kind: PeerKind) -> Result<Arc<Connection>> {
        let is_broker = kind == PeerKind::Broker;
        let slot = {
            let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
            slots
                .entry((endpoint.to_owned(), is_broker))
                .or_insert_with(|| {
                    Arc::new(Mutex::new(Slot {
                        conn: None,
                        backoff: Backoff::new(self.config.backoff_min, self.config.backoff_max),
                        retry_at: None,
                        last_failure: None,
                    }))
                })
                .clone()
        };
        // Held while connecting, so concurrent callers share one attempt.
        let mut slot = slot.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(conn) = &slot.conn {
            if !conn.is_closed() {
                return Ok(conn.clone());
            }
        }
        slot.conn = None;
        if slot.retry_at.is_some_and(|at| Instant::now() < at) {
            return Err(match &slot.last_failure {
                Some(failure) => failure.duplicate(),
                None => ClientError::Disconnected {
                    endpoint: endpoint.to_owned(),
                },
            });
        }
        let opened = Connection::open(
            endpoint,
            is_broker.then(|| self.config.handshake.clone()),
            is_broker.then(|| self.config.replies.clone()),
            self.config.token.as_deref(),
            self.config.connect_timeout,
            self.config.tls.as_ref(),
        );
        match opened {
            Ok(conn) => {
                slot.backoff.reset();
                slot.retry_at = None;
                slot.last_failure = None;
                slot.conn = Some(conn.clone());
                Ok(conn)
            }
            Err(e) => {
                let delay = slot.backoff.next_delay();
                slot.retry_at = Some(Instant::now() + delay);
                // A timeout is not kept: answered later, it would read as the caller's own.
                slot.last_failure = matches!(
                    e,
                    ClientError::Io { .. } | ClientError::Tls { .. } | ClientError::Protocol { .. }
                )
                .then(|| e.duplicate());
                log::debug!("connecting to {endpoint} failed ({e}); next attempt in {delay:?}");
                Err(e)
            }
        }
    }

    /// Every live connection, for heartbeats and idle checks.
    pub(crate) fn connections(&self) -> Vec<Arc<Connection>> {
        let slots: Vec<_> = self
            .slots
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .cloned()
            .collect();
        slots
            .iter()
            .filter_map(|slot| {
                // A slot that is mid-connect is skipped rather than waited for.
                let slot = slot.try_lock().ok()?;
                slot.conn.clone().filter(|c| !c.is_closed())
            })
            .collect()
    }

    /// Closes every connection.
    pub(crate) fn close_all(&self) {
        let slots: Vec<_> = self
            .slots
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .drain()
            .map(|(_, slot)| slot)
            .collect();
        for slot in slots {
            let conn = slot
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .conn
                .take();
            if let Some(conn) = conn {
                conn.close();
            }
        }
    }
}
