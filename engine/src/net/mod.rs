//! The network side of a shard: its listener, connections and request dispatch.
//!
//! - [`conn`]: one connection's read and write loops;
//! - [`outbox`]: a connection's bounded queue of outgoing frames and their encoding;
//! - [`dispatch`]: what each command does;
//! - [`clients`]: the shard's connections and where every client is connected.

pub(crate) mod access;
pub(crate) mod clients;
pub(crate) mod conn;
pub(crate) mod dispatch;
pub(crate) mod guard;
pub(crate) mod outbox;

use std::rc::Rc;
use std::time::{Duration, Instant};

use crate::rt::{TcpListener, TlsAcceptor};
use crate::shard::Shard;

/// Accepts connections until the task is dropped; refuses (closes) those past the limit.
/// With `tls`, each connection's handshake runs in its own task ([`conn::serve`]), so a slow
/// one holds up no other.
pub(crate) async fn accept_loop(shard: Rc<Shard>, listener: TcpListener, tls: Option<TlsAcceptor>) {
    let max = shard.config.limits.connections_per_shard_max;
    let mut refused_logged = false;
    crate::security::wait_for_policy(&shard).await;
    loop {
        match listener.accept().await {
            Ok(stream) => {
                if shard.clients.len() >= max {
                    if !refused_logged {
                        log::warn!("shard {}: {max} connections open; refusing more", shard.id);
                        refused_logged = true;
                    }
                    drop(stream);
                    continue;
                }
                refused_logged = false;
                shard
                    .tasks
                    .spawn(conn::serve(shard.clone(), stream, tls.clone()))
                    .detach();
            }
            Err(e) => {
                // Typically EMFILE: back off instead of spinning on the error.
                log::warn!("shard {}: accept: {e}", shard.id);
                crate::rt::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Closes subscribed connections that stopped heartbeating, so their queues move on.
pub(crate) async fn sweep_loop(shard: Rc<Shard>) {
    let timeout = Duration::from_millis(shard.config.consumer_timeout_ms);
    let period = (timeout / 3).clamp(Duration::from_millis(10), Duration::from_secs(1));
    loop {
        crate::rt::sleep(period).await;
        let now = Instant::now();
        let dead = shard.clients.select(|c| {
            !c.subs.borrow().is_empty() && now.duration_since(c.last_seen.get()) > timeout
        });
        for conn in dead {
            log::info!(
                "shard {}: consumer {:?} missed heartbeats for {timeout:?}; closing its connection",
                shard.id,
                conn.client_id.borrow()
            );
            conn.shutdown();
        }
    }
}

/// Closes every connection: each writer drains what is queued and each reader sees the end
/// of its stream. Their tasks end on their own; the shard waits for them with its others.
pub(crate) fn close_all(shard: &Shard) {
    let conns = shard.clients.select(|_| true);
    for conn in conns {
        conn.shutdown();
    }
}
