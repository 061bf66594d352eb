//! Request-reply routing.
//!
//! A requester's request is an ordinary produce of `Request` records (reply-to, correlation
//! id, deadline); push skips requests past their deadline (see [`crate::push`]). A responder
//! sends the `Reply` to any shard; that shard checks the requester is connected somewhere,
//! appends the reply to its reply queue (`<data>/replies/shard-<n>/`, kept for audit), and hands
//! it to the shard holding the requester's connection, which writes a `ReplyPush`.
//!
//! The shard's [`crate::net::clients::Clients`] says where each requester is connected.
//!
//! Once a reply is stored, the shard that stored its request is told (itself, normally:
//! replies come back on the connection the request was pushed on, to the queue's owner), which
//! observes the request-reply latency ([`crate::metrics::requests`]).

use std::path::Path;
use std::rc::Rc;
use std::time::Instant;

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
use crate::net::clients::Location;
use crate::net::outbox::Outbound;
use crate::shard::Shard;

/// How long after a request's deadline a trace still looks for its reply: the deadline is
/// the requester's clock, the reply's time the broker's.
pub(crate) const REPLY_CLOCK_SLACK_MS: i64 = 1000;

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
        log.reopen_after_poison_ms = Some(config.storage.reopen_after_poison_ms);
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

    /// The reply to the request `(reply_to, correlation_id)` stored from `since_ms` (when the
    /// request was) until its deadline plus [`REPLY_CLOCK_SLACK_MS`]. See [`crate::trace`].
    pub async fn find(
        &self,
        shard_id: u32,
        reply_to: &str,
        correlation_id: &[u8],
        since_ms: i64,
        deadline_ms: u64,
        budget: &crate::trace::scan::Budget,
    ) -> protocol::control::ReplySearch {
        use crate::trace::scan::{self, Step};
        let until_ms = i64::try_from(deadline_ms)
            .unwrap_or(i64::MAX)
            .saturating_add(REPLY_CLOCK_SLACK_MS);
        let scanned = async {
            let from = scan::first_at_or_after(&self.log, since_ms, budget).await?;
            scan::forward(&self.log, from, budget, |view| {
                let stored_ms = view.header().append_time_ms;
                if stored_ms > until_ms {
                    return Step::Stop;
                }
                let reply = view.records().find(|r| {
                    r.reply_to() == Some(reply_to) && r.correlation_id() == Some(correlation_id)
                });
                match reply {
                    Some(reply) => Step::Found(protocol::control::ReplyLife {
                        stored_ms,
                        shard_id,
                        offset: reply.offset(),
                        traceparent: reply.trace_parent().map(|p| p.to_string()),
                    }),
                    None => Step::Next,
                }
            })
            .await
        };
        crate::trace::reply_search(scanned.await)
    }

    /// Flushes and closes the reply queue.
    pub async fn close(self) -> Result<(), LogError> {
        self.log.close().await
    }
}

/// Serves `Reply`: route check, append to the reply queue, hand over for `ReplyPush`.
pub(crate) async fn handle_reply(shard: &Rc<Shard>, frame: &FrameBytes) -> Result<Vec<u8>, Reject> {
    let address = BatchAddress::decode(&frame.ext)?;
    let view = BatchView::parse(&frame.body, shard.config.limits.batch_len_max)
        .map_err(|e| Reject::new(Status::InvalidArgument, format!("reply batch: {e}")))?;
    let client_id = reply_target(&view)?;
    let Some(location) = shard.clients.locate(&client_id) else {
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
    let stored_at = Instant::now();
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
    // After the reply is on its way: metrics never delay it.
    answered(shard, &address, &view, stored_at).await;
    let ack = ProduceAck {
        queue_id: shard.id as u32,
        base_offset: appended.base_offset,
        next_offset: appended.next_offset,
    };
    Ok(protocol::control::encode(&ack)?)
}

/// Tells the shard that stored the requests of `reply` (a validated reply batch for the
/// queue at `address`, stored at `at`) that they are answered: here at once, elsewhere over
/// the mesh.
async fn answered(shard: &Shard, address: &BatchAddress<'_>, reply: &BatchView<'_>, at: Instant) {
    let owner = crate::topic::owner_shard(address.topic, address.queue_id, shard.count);
    let answers = reply
        .records()
        .filter_map(|r| Some((r.reply_to()?, r.correlation_id()?)));
    if owner == shard.id {
        let now_ms = crate::metrics::requests::now_ms();
        for (reply_to, correlation_id) in answers {
            shard
                .pending_requests
                .answered(reply_to, correlation_id, at, now_ms);
        }
        return;
    }
    let replies = answers
        .map(|(reply_to, correlation_id)| (reply_to.to_owned(), correlation_id.to_vec()))
        .collect();
    // One way: the owner records what it can; a closing owner's figures no longer matter.
    shard
        .send_to(owner, MeshMsg::RepliesStored { replies, at })
        .await;
}

/// The requester every record of a reply batch is addressed to.
fn reply_target(view: &BatchView<'_>) -> Result<String, Reject> {
    let invalid = |message: String| Reject::new(Status::InvalidArgument, message);
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
    let Some(conn) = shard.clients.local_conn_of(client_id) else {
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
