//! Request-reply written directly on the `protocol` crate: the floor for the client's own
//! cost. A raw requester and a raw echo responder, each a blocking [`Wire`] per broker shard,
//! speak the same frames as the client through the same broker:
//!
//! 1. both connect and send `Heartbeat` with their client id (replies are routed by it);
//! 2. the responder sends `Subscribe` (clustering group) on every shard holding the topic's
//!    queues, and grants `Credit` as it consumes, like the client's credit window;
//! 3. the requester sends a `Request` batch (reply-to, correlation id, deadline, area) to
//!    the queue's shard and reads frames until the `ReplyPush` with its correlation id;
//! 4. the responder gets the request in a `Push`, and sends a `Reply` batch with the same
//!    reply-to and correlation id on that connection.
//!
//! Acknowledgements of `Request` and `Reply` are read and checked, never waited for, as the
//! client does.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use protocol::codes::Command;
use protocol::control::{self, Credit, StartPosition, Subscribe, SubscribeAck, SubscriptionMode};
use protocol::data::BatchAddress;
use protocol::frame::{FrameBytes, flag};
use protocol::record::{BATCH_LEN_MAX, BatchBuilder, BatchView, MessageType, Property, Record};

use super::wire::{Wire, check_status};
use crate::cli::{GlobalArgs, Window};
use crate::measure;
use crate::report::{Baseline, Measured};
use crate::target::Target;

pub const NAME: &str = "raw-protocol-rr";
/// The raw responders' consumer group.
const RESPONDER_GROUP: &str = "bench-raw-echo";
/// Records the raw responder lets the broker push ahead, as the client's default window.
const CREDIT_WINDOW: u32 = client::config::CREDIT_WINDOW_DEFAULT;

/// What a raw request-reply run needs.
pub struct Setup<'a> {
    pub topic: &'a str,
    pub requesters: usize,
    pub message_bytes: usize,
    pub timeout: Duration,
}

/// Measures `requesters` raw requesters, closed loop, against a raw echo responder on
/// `topic` (a topic no other responder consumes).
pub fn run(
    target: &Target,
    global: &GlobalArgs,
    window: Window,
    setup: &Setup<'_>,
) -> anyhow::Result<Baseline> {
    let route = target.route(global, setup.topic)?;
    let mut endpoints: Vec<(String, u32)> = route
        .queues
        .iter()
        .map(|q| (format!("{}:{}", q.address, q.shard_port), q.queue_id))
        .collect();
    endpoints.sort();
    let mut shards: Vec<String> = endpoints.iter().map(|(e, _)| e.clone()).collect();
    shards.dedup();
    let pid = std::process::id();
    let responder_id = format!("bench-raw-responder@{pid}#{}", global.area);
    // Subscribed before any request goes out, so none waits for a late subscription.
    let responders = shards
        .iter()
        .map(|endpoint| Responder::subscribe(endpoint, &responder_id, &global.area, setup.topic))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let stop = AtomicBool::new(false);
    std::thread::scope(|scope| {
        let serving: Vec<_> = responders
            .into_iter()
            .map(|mut responder| {
                let stop = &stop;
                scope.spawn(move || responder.serve(&global.area, stop))
            })
            .collect();
        let measured =
            measure::run_latency_window(NAME, window, setup.requesters, |index, shared| {
                let (endpoint, queue_id) = &endpoints[index % endpoints.len()];
                let client_id = format!("bench-raw-requester@{pid}.{index}#{}", global.area);
                let mut requester = Requester {
                    wire: Wire::connect(endpoint, &client_id, &global.area)?,
                    client_id,
                    topic: setup.topic,
                    queue_id: *queue_id,
                    area: &global.area,
                    next_correlation: 1,
                    acks_pending: 0,
                };
                let value = vec![0xA5u8; setup.message_bytes];
                measure::closed_loop(shared, setup.message_bytes as u64, || {
                    let reply = requester.request(&value, setup.timeout)?;
                    anyhow::ensure!(
                        reply == setup.message_bytes,
                        "a reply of {reply} B to a request of {} B",
                        setup.message_bytes
                    );
                    Ok(())
                })
            });
        stop.store(true, Ordering::Release);
        for responder in serving {
            match responder.join() {
                Ok(result) => result?,
                Err(_) => anyhow::bail!("a raw responder panicked"),
            }
        }
        Ok(Baseline {
            name: NAME.into(),
            setup: format!(
                "{} raw requester(s), {} B echo by a raw responder, blocking sockets, frames \
                 from the protocol crate only",
                setup.requesters, setup.message_bytes
            ),
            measured: Measured::Latency(measured?),
        })
    })
}

/// A raw requester: one connection to the shard of its queue.
struct Requester<'a> {
    wire: Wire,
    client_id: String,
    topic: &'a str,
    queue_id: u32,
    area: &'a str,
    next_correlation: u64,
    /// `Request` acks not read yet: read and checked on the way to later replies.
    acks_pending: u64,
}

impl Requester<'_> {
    /// Sends one request and reads until its reply; returns the reply's value length.
    fn request(&mut self, value: &[u8], timeout: Duration) -> anyhow::Result<usize> {
        let correlation = format!("{:016x}", self.next_correlation);
        self.next_correlation += 1;
        let deadline_ms = unix_ms() + timeout.as_millis() as u64;
        let area = self.area.parse().context("benchmark area")?;
        let mut batch = BatchBuilder::new(BATCH_LEN_MAX);
        batch.push(&Record {
            timestamp_ms: unix_ms() as i64,
            message_type: MessageType::Request,
            key: &[],
            properties: &[
                Property::ReplyTo(&self.client_id),
                Property::CorrelationId(correlation.as_bytes()),
                Property::DeadlineMs(deadline_ms),
                Property::Area(area),
            ],
            value,
        })?;
        let body = batch.finish().context("an empty request batch")?;
        let mut ext = Vec::new();
        BatchAddress::new(self.topic, self.queue_id).encode(&mut ext)?;
        self.wire.send(Command::Request, false, &ext, &body)?;
        self.acks_pending += 1;
        let give_up = Instant::now() + timeout;
        loop {
            anyhow::ensure!(
                Instant::now() < give_up,
                "no reply to request {correlation} within {timeout:?}"
            );
            self.wire.heartbeat_if_due()?;
            let Some(frame) = self.wire.read()? else {
                continue;
            };
            if frame.header.flags & flag::RESPONSE != 0 {
                if frame.header.command() == Ok(Command::Request) {
                    check_status(self.wire.endpoint(), &frame)?;
                    self.acks_pending = self.acks_pending.saturating_sub(1);
                }
                continue;
            }
            if frame.header.command() != Ok(Command::ReplyPush) {
                continue;
            }
            let batch = BatchView::parse(&frame.body, BATCH_LEN_MAX)
                .with_context(|| format!("a reply batch from {}", self.wire.endpoint()))?;
            let reply = batch.records().find(|record| {
                record.message_type() == MessageType::Reply
                    && record.correlation_id() == Some(correlation.as_bytes())
            });
            if let Some(reply) = reply {
                return Ok(reply.value().len());
            }
        }
    }
}

/// A raw echo responder: one subscribed connection to one shard.
struct Responder {
    wire: Wire,
    subscription_id: u64,
    /// Records consumed since credit was last granted.
    consumed: u32,
}

impl Responder {
    fn subscribe(endpoint: &str, client_id: &str, area: &str, topic: &str) -> anyhow::Result<Self> {
        let mut wire = Wire::connect(endpoint, client_id, area)?;
        let body = control::encode(&Subscribe {
            topic: topic.to_owned(),
            group: RESPONDER_GROUP.to_owned(),
            client_id: client_id.to_owned(),
            area: area.to_owned(),
            mode: SubscriptionMode::Clustering,
            start: StartPosition::Committed,
            credit_messages: CREDIT_WINDOW,
        })?;
        let ack = wire.call(Command::Subscribe, &[], &body)?;
        let ack = control::decode::<SubscribeAck>(&ack.body)
            .with_context(|| format!("{endpoint}: subscribe ack"))?;
        Ok(Self {
            wire,
            subscription_id: ack.subscription_id,
            consumed: 0,
        })
    }

    /// Answers pushed requests until `stop`.
    fn serve(&mut self, area: &str, stop: &AtomicBool) -> anyhow::Result<()> {
        let area = area.parse().context("benchmark area")?;
        while !stop.load(Ordering::Acquire) {
            self.wire.heartbeat_if_due()?;
            let Some(frame) = self.wire.read()? else {
                continue;
            };
            if frame.header.flags & flag::RESPONSE != 0 {
                // Acks of replies, credits' and heartbeats' answers: only failures matter.
                check_status(self.wire.endpoint(), &frame)?;
                continue;
            }
            if frame.header.command() == Ok(Command::Push) {
                self.answer(&frame, area)?;
            }
        }
        Ok(())
    }

    /// Replies to every request in one pushed batch, then grants credit back once half the
    /// window is used (as the client's consumer does).
    fn answer(&mut self, push: &FrameBytes, area: protocol::names::Area) -> anyhow::Result<()> {
        let address = BatchAddress::decode(&push.ext)?;
        let batch = BatchView::parse(&push.body, BATCH_LEN_MAX)?;
        let mut ext = Vec::new();
        BatchAddress::new(address.topic, address.queue_id).encode(&mut ext)?;
        for request in batch.records() {
            self.consumed += 1;
            let (Some(reply_to), Some(correlation)) =
                (request.reply_to(), request.correlation_id())
            else {
                continue;
            };
            if request.message_type() != MessageType::Request {
                continue;
            }
            let mut reply = BatchBuilder::new(BATCH_LEN_MAX);
            reply.push(&Record {
                timestamp_ms: unix_ms() as i64,
                message_type: MessageType::Reply,
                key: &[],
                properties: &[
                    Property::ReplyTo(reply_to),
                    Property::CorrelationId(correlation),
                    Property::Area(area),
                ],
                value: request.value(),
            })?;
            let body = reply.finish().context("an empty reply batch")?;
            self.wire.send(Command::Reply, false, &ext, &body)?;
        }
        if self.consumed >= CREDIT_WINDOW / 2 {
            let credit = control::encode(&Credit {
                subscription_id: self.subscription_id,
                messages: std::mem::take(&mut self.consumed),
            })?;
            self.wire.send(Command::Credit, true, &[], &credit)?;
        }
        Ok(())
    }
}

/// The wall clock in Unix milliseconds: record timestamps and request deadlines.
fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
