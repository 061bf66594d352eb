//! A connection's bounded queue of frames to write, and their encoding.
//!
//! Pushes and reply pushes are queued as their record batch (a reference-counted [`Bytes`])
//! plus addressing; the writer encodes the header and extension straight into its write buffer,
//! so a push costs no allocation of its own. When the queue is full, whoever queues waits:
//! a slow reader slows its own pushes and responses, nothing else.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;

use bytes::Bytes;
use protocol::codes::{Command, Status};
use protocol::control::{self, ErrorReply};
use protocol::data::BatchAddress;
use protocol::frame::{FrameHeader, FrameMeta, HEADER_LEN, encode_frame};

use crate::notify::Notify;

/// One frame waiting to be written.
pub(crate) enum Outbound {
    /// A fully encoded frame (responses, and anything relayed from another shard).
    Frame(Vec<u8>),
    /// A `Push` of one batch to a subscription.
    Push {
        /// The topic.
        topic: Rc<str>,
        /// The queue.
        queue_id: u32,
        /// The subscription.
        subscription_id: u64,
        /// The stored batch, as read from the log.
        batch: Bytes,
    },
    /// The answer to a follower's `ReplicaFetch`: its header extension, then the stored
    /// batches as the body (no body checksum: each batch carries its own).
    Batches {
        /// The request answered.
        request: FrameHeader,
        /// The encoded header extension.
        ext: Vec<u8>,
        /// The batches, as read from the log.
        batches: Vec<Bytes>,
    },
    /// A `ReplyPush` of a reply batch to its requester.
    ReplyPush {
        /// The request's topic.
        topic: Rc<str>,
        /// The request's queue.
        queue_id: u32,
        /// The reply batch.
        batch: Bytes,
    },
}

/// Why a frame could not be queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Closed;

/// The bounded outbound queue of one connection.
pub(crate) struct Outbox {
    queue: RefCell<VecDeque<Outbound>>,
    capacity: usize,
    closed: Cell<bool>,
    /// Notified when a frame is queued or the outbox closes.
    pub(crate) readable: Notify,
    writable: Notify,
}

impl Outbox {
    /// An empty outbox holding at most `capacity` frames.
    pub fn new(capacity: usize) -> Self {
        Self {
            queue: RefCell::new(VecDeque::with_capacity(capacity.min(64))),
            capacity,
            closed: Cell::new(false),
            readable: Notify::new(),
            writable: Notify::new(),
        }
    }

    /// Queues a frame, waiting while the outbox is full.
    pub async fn send(&self, item: Outbound) -> Result<(), Closed> {
        loop {
            if self.closed.get() {
                return Err(Closed);
            }
            let seen = self.writable.generation();
            if self.queue.borrow().len() < self.capacity {
                break;
            }
            self.writable.wait(seen).await;
        }
        self.queue.borrow_mut().push_back(item);
        self.readable.notify();
        Ok(())
    }

    /// Queues a frame unless the outbox is full or closed; for senders that must not wait
    /// (the mesh receiver), which drop what a stuck connection cannot take.
    pub fn try_send(&self, item: Outbound) -> Result<(), Closed> {
        if self.closed.get() || self.queue.borrow().len() >= self.capacity {
            return Err(Closed);
        }
        self.queue.borrow_mut().push_back(item);
        self.readable.notify();
        Ok(())
    }

    /// Stops accepting frames; the writer drains what is queued, then ends.
    pub fn close(&self) {
        self.closed.set(true);
        self.readable.notify();
        self.writable.notify();
    }

    /// True once closed.
    pub fn is_closed(&self) -> bool {
        self.closed.get()
    }

    /// Encodes every queued frame into `out` (up to about `max_bytes`); returns how many.
    pub fn drain_into(&self, out: &mut Vec<u8>, max_bytes: usize) -> usize {
        let mut count = 0;
        let mut queue = self.queue.borrow_mut();
        while out.len() < max_bytes {
            let Some(item) = queue.pop_front() else { break };
            encode_outbound(&item, out);
            count += 1;
        }
        drop(queue);
        if count > 0 {
            self.writable.notify();
        }
        count
    }
}

/// Appends the frame for `item` to `out`.
pub(crate) fn encode_outbound(item: &Outbound, out: &mut Vec<u8>) {
    match item {
        Outbound::Frame(bytes) => out.extend_from_slice(bytes),
        Outbound::Push {
            topic,
            queue_id,
            subscription_id,
            batch,
        } => {
            let address = BatchAddress::new(topic, *queue_id).with_subscription(*subscription_id);
            encode_batch_frame(Command::Push, &address, batch, out);
        }
        Outbound::ReplyPush {
            topic,
            queue_id,
            batch,
        } => {
            let address = BatchAddress::new(topic, *queue_id);
            encode_batch_frame(Command::ReplyPush, &address, batch, out);
        }
        Outbound::Batches {
            request,
            ext,
            batches,
        } => {
            let body_len: u64 = batches.iter().map(|b| b.len() as u64).sum();
            let meta = FrameMeta::response(request, Status::Ok).without_body_crc();
            match FrameHeader::seal_without_body(&meta, ext, body_len) {
                Ok(header) => {
                    out.reserve(HEADER_LEN + ext.len() + body_len as usize);
                    out.extend_from_slice(&header.encode());
                    out.extend_from_slice(ext);
                    for batch in batches {
                        out.extend_from_slice(batch);
                    }
                }
                Err(e) => {
                    log::error!("cannot frame a fetch answer of {body_len} bytes: {e}");
                    out.extend_from_slice(&error_response(
                        request,
                        Status::Internal,
                        &format!("cannot frame the answer: {e}"),
                    ));
                }
            }
        }
    }
}

/// A oneway batch frame: header, address extension, the batch untouched.
fn encode_batch_frame(
    command: Command,
    address: &BatchAddress<'_>,
    batch: &[u8],
    out: &mut Vec<u8>,
) {
    let start = out.len();
    out.resize(start + HEADER_LEN, 0);
    if address.encode(out).is_err() {
        // Topics were validated on creation, so this cannot happen; never send half a frame.
        log::error!(
            "cannot encode the address of a {command} to {:?}",
            address.topic
        );
        out.truncate(start);
        return;
    }
    let meta = FrameMeta::oneway(command, 0).without_body_crc();
    let sealed = FrameHeader::seal(&meta, &out[start + HEADER_LEN..], batch);
    match sealed {
        Ok(header) => {
            out[start..start + HEADER_LEN].copy_from_slice(&header.encode());
            out.extend_from_slice(batch);
        }
        Err(e) => {
            log::error!(
                "cannot frame a {command} batch of {} bytes: {e}",
                batch.len()
            );
            out.truncate(start);
        }
    }
}

/// A `PushFault`: the subscription's queue cannot be served (`status` and `message` say
/// why), addressed like a push. The consumer reports it to its application.
pub(crate) fn push_fault(
    topic: &str,
    queue_id: u32,
    subscription_id: u64,
    status: Status,
    message: &str,
) -> Vec<u8> {
    let mut ext = Vec::new();
    let address = BatchAddress::new(topic, queue_id).with_subscription(subscription_id);
    let body = control::encode(&ErrorReply::new(status, message)).unwrap_or_default();
    let mut out = Vec::with_capacity(HEADER_LEN + 64 + body.len());
    let meta = FrameMeta::oneway(Command::PushFault, 0);
    if let Err(e) = address
        .encode(&mut ext)
        .map_err(|e| e.to_string())
        .and_then(|()| encode_frame(&meta, &ext, &body, &mut out).map_err(|e| e.to_string()))
    {
        log::error!("cannot encode an error push of {topic}/{queue_id}: {e}");
        out.clear();
    }
    out
}

/// The response to `request` with `status` and `body`.
pub(crate) fn response(request: &FrameHeader, status: Status, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + body.len());
    if let Err(e) = encode_frame(&FrameMeta::response(request, status), &[], body, &mut out) {
        log::error!("cannot encode a response of {} bytes: {e}", body.len());
        out.clear();
    }
    out
}

/// An error response to `request`: `status` in the header and an [`ErrorReply`] body.
pub(crate) fn error_response(request: &FrameHeader, status: Status, message: &str) -> Vec<u8> {
    let body = control::encode(&ErrorReply::new(status, message)).unwrap_or_default();
    response(request, status, &body)
}
