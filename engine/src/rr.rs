//! Request-reply routing.
//!
//! A requester's request is an ordinary produce of `Request` records (reply-to, correlation
//! id, deadline); push skips requests past their deadline (see [`crate::push`]). A responder
//! sends the `Reply` to any shard; that shard checks the requester is connected somewhere,
//! appends the reply to its reply queue (`<data>/replies/shard-<n>/`, kept for audit), and hands
//! it to the shard holding the requester's connection, which writes a `ReplyPush`.
//!
//! The [`Directory`] says where each client is: every shard knows its own connections and
//! learns the others' over the mesh (`ClientUp` / `ClientDown`).

use std::collections::HashMap;
use std::path::Path;
use std::rc::Rc;

use bytes::{Bytes, BytesMut};
use protocol::codes::Status;
use protocol::control::ProduceAck;
use protocol::data::BatchAddress;
use protocol::frame::FrameBytes;
use protocol::record::{BatchView, MessageType};

use crate::config::BrokerConfig;
use crate::error::Reject;
use crate::log::{FlushMode, Log, LogConfig, LogError};
use crate::mesh::MeshMsg;
use crate::net::outbox::Outbound;
use crate::shard::Shard;

/// Where clients are connected: local connections by client id, other shards as a bit set.
#[derive(Default)]
pub(crate) struct Directory {
    local: HashMap<String, Vec<u64>>,
    remote: HashMap<String, u64>,
}

/// Where a reply for a client goes.
pub(crate) enum Location {
    Local(u64),
    Shard(usize),
}

impl Directory {
    /// Records a local connection of `client_id`; true if it is the client's first here.
    pub fn local_up(&mut self, client_id: &str, conn_id: u64) -> bool {
        let conns = self.local.entry(client_id.to_owned()).or_default();
        if !conns.contains(&conn_id) {
            conns.push(conn_id);
        }
        conns.len() == 1
    }

    /// Forgets a local connection; true if the client has none left here.
    pub fn local_down(&mut self, client_id: &str, conn_id: u64) -> bool {
        let Some(conns) = self.local.get_mut(client_id) else {
            return false;
        };
        conns.retain(|&c| c != conn_id);
        if conns.is_empty() {
            self.local.remove(client_id);
            return true;
        }
        false
    }

    /// Another shard has the client.
    pub fn remote_up(&mut self, client_id: String, shard: usize) {
        *self.remote.entry(client_id).or_default() |= 1 << shard;
    }

    /// Another shard no longer has the client.
    pub fn remote_down(&mut self, client_id: &str, shard: usize) {
        if let Some(bits) = self.remote.get_mut(client_id) {
            *bits &= !(1 << shard);
            if *bits == 0 {
                self.remote.remove(client_id);
            }
        }
    }

    /// Where to deliver to `client_id`: a local connection first, else the lowest shard.
    pub fn locate(&self, client_id: &str) -> Option<Location> {
        if let Some(&conn) = self.local.get(client_id).and_then(|c| c.last()) {
            return Some(Location::Local(conn));
        }
        let bits = *self.remote.get(client_id)?;
        Some(Location::Shard(bits.trailing_zeros() as usize))
    }
}

/// The shard's reply queue.
pub(crate) struct ReplyLog {
    log: Log,
}

impl ReplyLog {
    /// Opens the reply queue in `dir` (async flush: replies are an audit trail, the requester
    /// gets its reply from memory).
    pub async fn open(config: &BrokerConfig, dir: &Path) -> Result<Self, LogError> {
        let mut log = LogConfig::new(dir);
        log.segment_bytes_max = config.storage.segment_bytes_max;
        log.batch_len_max = config.limits.batch_len_max;
        log.tail_cache_bytes = 1 << 20;
        log.retention_age_ms = Some(protocol::control::RETENTION_AGE_MS_DEFAULT);
        log.flush = FlushMode::Async {
            interval_ms: config.storage.flush_interval_ms,
            bytes: config.storage.flush_bytes,
        };
        Ok(Self {
            log: Log::open(log).await?,
        })
    }

    /// Flushes and closes the reply queue.
    pub async fn close(self) -> Result<(), LogError> {
        self.log.close().await
    }
}

/// Serves `Reply`: route check, append to the reply queue, hand over for `ReplyPush`.
pub(crate) async fn handle_reply(shard: &Rc<Shard>, frame: &FrameBytes) -> Result<Vec<u8>, Reject> {
    let address = BatchAddress::decode(&frame.ext)?;
    let client_id = reply_target(&frame.body, shard.config.limits.batch_len_max)?;
    let Some(location) = shard.directory.borrow().locate(&client_id) else {
        return Err(Reject::new(
            Status::NoResponder,
            format!("requester {client_id} is not connected to this broker"),
        ));
    };
    let appended = shard
        .replies
        .log
        .append(BytesMut::from(&frame.body[..]))
        .await?;
    shard.counters.replies.set(shard.counters.replies.get() + 1);
    let batch = frame.body.clone();
    match location {
        Location::Local(_) => {
            deliver_local(
                shard,
                &client_id,
                Rc::from(address.topic),
                address.queue_id,
                batch,
            );
        }
        Location::Shard(to) => {
            let msg = MeshMsg::ReplyPush {
                client_id,
                topic: address.topic.to_owned(),
                queue_id: address.queue_id,
                batch,
            };
            shard.send_to(to, msg).await;
        }
    }
    let ack = ProduceAck {
        queue_id: shard.id as u32,
        base_offset: appended.base_offset,
        next_offset: appended.next_offset,
    };
    Ok(protocol::control::encode(&ack)?)
}

/// The requester every record of a reply batch is addressed to.
fn reply_target(body: &[u8], batch_len_max: usize) -> Result<String, Reject> {
    let invalid = |message: String| Reject::new(Status::InvalidArgument, message);
    let view =
        BatchView::parse(body, batch_len_max).map_err(|e| invalid(format!("reply batch: {e}")))?;
    let mut target: Option<&str> = None;
    for record in view.records() {
        if record.message_type() != MessageType::Reply {
            return Err(invalid(format!(
                "record {} is not a reply",
                record.offset()
            )));
        }
        let Some(reply_to) = record.reply_to() else {
            return Err(invalid(format!(
                "reply record {} has no reply_to",
                record.offset()
            )));
        };
        match target {
            Some(t) if t != reply_to => {
                return Err(invalid("a reply batch must address one requester".into()));
            }
            _ => target = Some(reply_to),
        }
    }
    target
        .map(str::to_owned)
        .ok_or_else(|| invalid("empty reply batch".into()))
}

/// Writes a `ReplyPush` to the requester's local connection; drops it (with a log line) if
/// the requester left or cannot take more.
pub(crate) fn deliver_local(
    shard: &Shard,
    client_id: &str,
    topic: Rc<str>,
    queue_id: u32,
    batch: Bytes,
) {
    let conn = match shard.directory.borrow().locate(client_id) {
        Some(Location::Local(conn_id)) => shard.conns.borrow().get(&conn_id).cloned(),
        _ => None,
    };
    let Some(conn) = conn else {
        log::info!(
            "shard {}: reply for {client_id} dropped: not connected here",
            shard.id
        );
        return;
    };
    let push = Outbound::ReplyPush {
        topic,
        queue_id,
        batch,
    };
    if conn.outbox.try_send(push).is_err() {
        log::warn!(
            "shard {}: reply for {client_id} dropped: its connection is full or closing",
            shard.id
        );
    }
}
