//! What each command does.
//!
//! Connection-bound commands (heartbeat, subscribe, credit, unsubscribe) are served inline by
//! the reader, so a `SubscribeAck` is queued before the subscription's first push. Commands that
//! may wait on storage or other shards run as tasks, at most `inflight_requests_max` per
//! connection: past that the reader stops reading, which is the connection's back pressure.
//! Queue-addressed and admin commands that this shard does not own are forwarded over the mesh
//! to the owner (shard 0 for topic changes), and the owner's response relayed back.

use std::cell::Cell;
use std::rc::Rc;

use bytes::{Bytes, BytesMut};
use protocol::codes::{Command, Status};
use protocol::control::{
    self, BrokerStats, ClientHeartbeat, CommitOffset, Credit, FetchOffset, HeartbeatAck,
    OffsetReply, ProduceAck, Subscribe, SubscribeAck, SubscriptionMode, TopicConfig, TopicList,
    TopicName, Unsubscribe,
};
use protocol::data::BatchAddress;
use protocol::frame::{FrameBytes, FrameHeader, FrameMut, flag};

use super::conn::Conn;
use super::outbox::{Outbound, error_response, response};
use crate::error::Reject;
use crate::group::{self, GroupKey, Subscription};
use crate::mesh::MeshMsg;
use crate::notify::Notify;
use crate::rt::Semaphore;
use crate::shard::{Shard, redirects_of};

/// What serving a request produced.
enum Served {
    /// The response body (empty for commands answered with an empty body).
    Body(Vec<u8>),
    /// Another shard owns what the request addresses.
    Forward(usize),
    /// Another shard owns the queue a dark-launch rule re-addressed the request to.
    ForwardFrame(usize, FrameBytes),
    /// Stored batches for a follower: answered with a header extension and the batches as
    /// the body, written from the log's buffers ([`Outbound::Batches`]).
    Batches { ext: Vec<u8>, batches: Vec<Bytes> },
}

/// A produced batch's body.
enum Body {
    /// Read on this shard: its own region of the receive buffer, stamped in place and kept by
    /// the log without a copy.
    Owned(BytesMut),
    /// Forwarded from another shard: copied once to be stamped.
    Shared(Bytes),
}

impl Body {
    fn as_slice(&self) -> &[u8] {
        match self {
            Self::Owned(bytes) => bytes,
            Self::Shared(bytes) => bytes,
        }
    }

    fn into_mut(self) -> BytesMut {
        match self {
            Self::Owned(bytes) => bytes,
            Self::Shared(bytes) => BytesMut::from(&bytes[..]),
        }
    }

    fn freeze(self) -> Bytes {
        match self {
            Self::Owned(bytes) => bytes.freeze(),
            Self::Shared(bytes) => bytes,
        }
    }
}

/// Serves one frame read from `conn`.
pub(crate) async fn dispatch(
    shard: &Rc<Shard>,
    conn: &Rc<Conn>,
    frame: FrameMut,
    inflight: &Rc<Semaphore>,
) {
    let header = frame.header;
    if header.flags & flag::RESPONSE != 0 {
        log::debug!("connection {}: ignoring a response frame", conn.id);
        return;
    }
    let quiet = Quiet::of(header.flags);
    let command = match header.command() {
        Ok(command) => command,
        Err(e) => {
            // Counted: the reader closes a connection that sends many (a fuzzer, not a newer
            // client probing).
            conn.count_unknown_command();
            let out = error_response(&header, Status::UnknownCommand, &e.to_string());
            let _ = conn.outbox.send(Outbound::Frame(out)).await;
            return;
        }
    };
    if command == Command::Authenticate {
        let result = super::access::authenticate(shard, conn, &frame);
        refuse_or_answer(conn, &header, quiet, result.map(Some)).await;
        return;
    }
    if !super::access::frame_allowed(shard, conn, header.frame_len()) {
        let reject = Reject::new(
            Status::Unauthenticated,
            super::conn::preauth_too_large(shard, header.frame_len()),
        );
        refuse_or_answer(
            conn,
            &header,
            quiet,
            Err(super::access::Refusal {
                reject,
                close: true,
            }),
        )
        .await;
        return;
    }
    if let Err(refusal) = super::access::authorize(shard, conn, command, &frame) {
        refuse_or_answer(conn, &header, quiet, Err(refusal)).await;
        return;
    }
    if is_inline(command) {
        let result = serve_inline(shard, conn, command, &frame.freeze()).await;
        answer(conn, &header, quiet, result).await;
        return;
    }
    let Ok(permit) = inflight.acquire_static_permit(1).await else {
        return;
    };
    let tasks = &shard.tasks;
    let shard = shard.clone();
    let conn = conn.clone();
    tasks
        .spawn(async move {
            // A produce keeps its body writable; everything else reads a frozen frame.
            let (result, frozen) = match command {
                Command::Produce | Command::Request => {
                    let (header, ext) = (frame.header, frame.ext);
                    let body = Body::Owned(frame.body);
                    (produce(&shard, header, ext, body, false).await, None)
                }
                Command::CommitOffset => {
                    let frame = frame.freeze();
                    let result = commit(&shard, &conn, &frame).await.map(Served::Body);
                    (result, Some(frame))
                }
                Command::Nack => {
                    let frame = frame.freeze();
                    let result = nack(&shard, &conn, &frame).await.map(Served::Body);
                    (result, Some(frame))
                }
                _ => {
                    let frame = frame.freeze();
                    (serve(&shard, &frame, false).await, Some(frame))
                }
            };
            let result = match result {
                Ok(Served::Batches { ext, batches }) => {
                    let out = Outbound::Batches {
                        request: header,
                        ext,
                        batches,
                    };
                    let _ = conn.outbox.send(out).await;
                    drop(permit);
                    return;
                }
                other => other,
            };
            let outcome = match result {
                Ok(Served::Batches { .. }) => unreachable!("answered above"),
                Ok(Served::Forward(owner)) => match frozen {
                    Some(frame) => Ok((owner, frame)),
                    None => Err(Err(Reject::new(
                        Status::Internal,
                        "a produce is forwarded re-addressed, never as read",
                    ))),
                },
                Ok(Served::ForwardFrame(owner, frame)) => Ok((owner, frame)),
                Ok(Served::Body(body)) => Err(Ok(Some(body))),
                Err(reject) => Err(Err(reject)),
            };
            match outcome {
                Ok((owner, frame)) => {
                    let msg = MeshMsg::Forward {
                        origin: shard.id,
                        conn_id: conn.id,
                        frame,
                    };
                    if !shard.send_to(owner, msg).await {
                        let reject =
                            Reject::new(Status::ShuttingDown, format!("shard {owner} is stopping"));
                        answer(&conn, &header, quiet, Err(reject)).await;
                    }
                }
                Err(answered) => {
                    super::access::audit_result(&shard, &conn, &header, &answered);
                    answer(&conn, &header, quiet, answered).await;
                }
            }
            drop(permit);
        })
        .detach();
}

/// The connection-bound commands, served inline by the reader (see the module docs).
fn is_inline(command: Command) -> bool {
    matches!(
        command,
        Command::Heartbeat
            | Command::Credit
            | Command::Subscribe
            | Command::Unsubscribe
            | Command::TransactionCheck
    )
}

/// Serves a command [`is_inline`] accepts.
async fn serve_inline(
    shard: &Rc<Shard>,
    conn: &Rc<Conn>,
    command: Command,
    frame: &FrameBytes,
) -> Result<Option<Vec<u8>>, Reject> {
    match command {
        Command::Heartbeat => heartbeat(shard, conn, frame).await.map(Some),
        Command::Credit => credit(shard, conn, frame).map(|()| Some(Vec::new())),
        Command::Subscribe => subscribe(shard, conn, frame).await.map(|()| None),
        Command::Unsubscribe => unsubscribe(shard, conn, frame).map(|()| Some(Vec::new())),
        Command::TransactionCheck => {
            crate::held::register_checker(shard, conn, frame).map(|()| Some(Vec::new()))
        }
        other => Err(Reject::new(
            Status::Internal,
            format!("{other} is not served inline"),
        )),
    }
}

/// Which answers a request wants.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Quiet {
    /// Every outcome is answered.
    No,
    /// Only failures are answered ([`flag::FAILURES_ONLY`]).
    OnSuccess,
    /// Nothing is answered ([`flag::ONEWAY`]).
    Always,
}

impl Quiet {
    fn of(flags: u8) -> Self {
        if flags & flag::ONEWAY != 0 {
            Self::Always
        } else if flags & flag::FAILURES_ONLY != 0 {
            Self::OnSuccess
        } else {
            Self::No
        }
    }
}

/// Queues the response to a request: `Ok(None)` when the handler answered itself.
async fn answer(
    conn: &Conn,
    header: &FrameHeader,
    quiet: Quiet,
    result: Result<Option<Vec<u8>>, Reject>,
) {
    let out = match result {
        Ok(None) => return,
        Ok(Some(_)) if quiet != Quiet::No => return,
        Ok(Some(body)) => response(header, Status::Ok, &body),
        Err(reject) => {
            log::debug!(
                "connection {}: command {:#06x} refused: {reject}",
                conn.id,
                header.command
            );
            if quiet == Quiet::Always {
                return;
            }
            error_response(header, reject.status, &reject.message)
        }
    };
    let _ = conn.outbox.send(Outbound::Frame(out)).await;
}

/// Answers a request that may close the connection: a refusal to authenticate closes it
/// after the answer (which is sent even to a oneway request: the peer must learn why).
async fn refuse_or_answer(
    conn: &Conn,
    header: &FrameHeader,
    quiet: Quiet,
    result: Result<Option<Vec<u8>>, super::access::Refusal>,
) {
    match result {
        Ok(body) => answer(conn, header, quiet, Ok(body)).await,
        Err(refusal) if refusal.close => {
            let out = error_response(header, refusal.reject.status, &refusal.reject.message);
            let _ = conn.outbox.send(Outbound::Frame(out)).await;
            conn.outbox.close();
        }
        Err(refusal) => answer(conn, header, quiet, Err(refusal.reject)).await,
    }
}

/// Serves a request forwarded by another shard; returns the encoded response, or `None` when
/// the request succeeded and asked to hear only of failures.
pub(crate) async fn serve_forwarded(shard: &Rc<Shard>, frame: &FrameBytes) -> Option<Vec<u8>> {
    let failures_only = frame.header.flags & flag::FAILURES_ONLY != 0;
    Some(match serve(shard, frame, true).await {
        Ok(Served::Body(_)) if failures_only => return None,
        Ok(Served::Body(body)) => response(&frame.header, Status::Ok, &body),
        Ok(Served::Batches { ext, batches }) => {
            let mut out = Vec::new();
            super::outbox::encode_outbound(
                &Outbound::Batches {
                    request: frame.header,
                    ext,
                    batches,
                },
                &mut out,
            );
            out
        }
        Ok(Served::Forward(owner) | Served::ForwardFrame(owner, _)) => error_response(
            &frame.header,
            Status::Internal,
            &format!("shard {} and shard {owner} disagree on ownership", shard.id),
        ),
        Err(reject) => error_response(&frame.header, reject.status, &reject.message),
    })
}

/// Serves a request the shard itself makes of another (a [`MeshMsg::Serve`]): the response
/// body, or the refusal.
pub(crate) async fn serve_here(shard: &Rc<Shard>, frame: &FrameBytes) -> Result<Vec<u8>, Reject> {
    match serve(shard, frame, true).await? {
        Served::Body(body) => Ok(body),
        Served::Batches { .. } => Err(Reject::new(
            Status::Internal,
            "an internal request was answered with batches",
        )),
        Served::Forward(owner) | Served::ForwardFrame(owner, _) => Err(Reject::new(
            Status::Internal,
            format!("shard {} and shard {owner} disagree on ownership", shard.id),
        )),
    }
}

/// Serves a request the shard itself makes, here or on the shard that owns what it
/// addresses: a nack's copy appended to a retry queue, a retry topic created on shard 0.
pub(crate) async fn serve_anywhere(
    shard: &Rc<Shard>,
    frame: FrameBytes,
) -> Result<Vec<u8>, Reject> {
    let (owner, frame) = match serve(shard, &frame, true).await? {
        Served::Body(body) => return Ok(body),
        Served::Forward(owner) => (owner, frame),
        Served::ForwardFrame(owner, readdressed) => (owner, readdressed),
        Served::Batches { .. } => {
            return Err(Reject::new(
                Status::Internal,
                "an internal request was answered with batches",
            ));
        }
    };
    let origin = shard.id;
    let within = std::time::Duration::from_millis(shard.config.idle_timeout_ms);
    match crate::mesh::call_one(shard, owner, within, |token| MeshMsg::Serve {
        origin,
        token,
        frame,
    })
    .await
    {
        Some(crate::mesh::MeshReply::Served(served)) => served,
        Some(_) => Err(Reject::new(Status::Internal, "a mismatched mesh reply")),
        None => Err(Reject::new(
            Status::ShuttingDown,
            format!("shard {owner} did not answer"),
        )),
    }
}

/// Commands that need no connection state: produce, request, reply, offsets, admin.
/// `forwarded`: the frame came from another shard, which already looked for a better one.
async fn serve(shard: &Rc<Shard>, frame: &FrameBytes, forwarded: bool) -> Result<Served, Reject> {
    let command = frame
        .header
        .command()
        .map_err(|e| Reject::new(Status::UnknownCommand, e.to_string()))?;
    match command {
        Command::Produce | Command::Request => {
            let body = Body::Shared(frame.body.clone());
            produce(shard, frame.header, frame.ext.clone(), body, forwarded).await
        }
        Command::Reply => crate::rr::handle_reply(shard, frame)
            .await
            .map(Served::Body),
        Command::InitProducer => init_producer(shard).map(Served::Body),
        Command::FetchOffset => {
            let request: FetchOffset = control::decode(&frame.body)?;
            request.validate()?;
            let owner = owner(shard, &request.topic, request.queue_id, false)?;
            if owner != shard.id {
                return Ok(Served::Forward(owner));
            }
            let offset =
                shard
                    .consumption
                    .offsets()
                    .get(&request.topic, &request.group, request.queue_id);
            Ok(Served::Body(control::encode(&OffsetReply { offset })?))
        }
        // A closing shard starts nothing that needs the mesh (see `crate::mesh`).
        Command::CreateTopic | Command::UpdateTopic | Command::DeleteTopic
            if shard.is_stopping() =>
        {
            Err(Reject::new(
                Status::ShuttingDown,
                format!("shard {} is shutting down", shard.id),
            ))
        }
        Command::CreateTopic | Command::UpdateTopic | Command::DeleteTopic if shard.id != 0 => {
            Ok(Served::Forward(0))
        }
        Command::CreateTopic | Command::UpdateTopic => {
            let config: TopicConfig = control::decode(&frame.body)?;
            let create = command == Command::CreateTopic;
            crate::admin::upsert_topic(shard, config, create).await?;
            Ok(Served::Body(Vec::new()))
        }
        Command::DeleteTopic => {
            let request: TopicName = control::decode(&frame.body)?;
            request.topic()?;
            crate::admin::delete_topic(shard, request.topic).await?;
            Ok(Served::Body(Vec::new()))
        }
        Command::ListTopics => {
            let topics = crate::admin::topic_infos(shard).await;
            Ok(Served::Body(control::encode(&TopicList { topics })?))
        }
        Command::Stats => {
            let (shards, queues) = crate::admin::collect(shard).await;
            let stats = BrokerStats {
                broker_id: shard.config.broker_id.clone(),
                shards,
                queues,
                policy_version: shard.security.authority().version(),
            };
            Ok(Served::Body(control::encode(&stats)?))
        }
        Command::ScrubLogs => {
            let request: control::ScrubRequest = control::decode(&frame.body)?;
            let topic = match request.topic {
                Some(topic) => {
                    topic.parse::<protocol::names::Topic>().map_err(|e| {
                        Reject::new(Status::InvalidName, format!("topic {topic:?}: {e}"))
                    })?;
                    topic
                }
                None => String::new(),
            };
            let queues = crate::scrub::broker_wide(shard, topic).await;
            let reply = control::ScrubReply {
                broker_id: shard.config.broker_id.clone(),
                queues,
            };
            Ok(Served::Body(control::encode(&reply)?))
        }
        Command::TraceMessage => {
            let request: control::TraceRequest = control::decode(&frame.body)?;
            request.validate()?;
            match owned_queue(shard, &request.topic, request.queue_id)? {
                Ok(queue) => {
                    let reply = crate::trace::answer(shard, &queue, &request).await?;
                    Ok(Served::Body(control::encode(&reply)?))
                }
                Err(owner) => Ok(Served::Forward(owner)),
            }
        }
        Command::DeadLetterShow | Command::DeadLetterResend | Command::DeadLetterPurge => {
            let request: control::DeadLetterRequest = control::decode(&frame.body)?;
            request.validate()?;
            match owned_queue(shard, &request.topic, request.queue_id)? {
                Ok(queue) => {
                    // Boxed: a resend serves produces, through this function.
                    let reply =
                        Box::pin(crate::dead_letter::serve(shard, &queue, command, &request))
                            .await?;
                    Ok(Served::Body(control::encode(&reply)?))
                }
                Err(owner) => Ok(Served::Forward(owner)),
            }
        }
        Command::QueueRole => {
            let assignment: control::QueueAssignment = control::decode(&frame.body)?;
            assignment.validate()?;
            let (topic, queue_id) = (assignment.topic.clone(), assignment.queue_id);
            let queue = match owned_queue(shard, &topic, queue_id)? {
                Ok(queue) => queue,
                Err(owner) => return Ok(Served::Forward(owner)),
            };
            let Some(replication) = queue.replication() else {
                return Err(Reject::new(
                    Status::InvalidArgument,
                    format!("{topic} has one replica: its queues have no roles"),
                ));
            };
            let applied = replication.apply(shard, &queue, assignment).await;
            // Consumers follow the leader: this shard's groups take or give up the queue, and
            // subscribers refetch the route.
            group::rebalance_topic(shard, &topic);
            group::announce_change(shard, &topic);
            // Routes name leaders from registrations: register now, so clients reach a new
            // leader within one route refresh, not one registration interval later.
            if shard.id == 0 {
                shard.registration.request();
            } else {
                shard.send_to(0, MeshMsg::RegisterNow).await;
            }
            applied?;
            Ok(Served::Body(Vec::new()))
        }
        Command::ReplicaFetch => {
            let request: control::ReplicaFetch = control::decode(&frame.body)?;
            match owned_queue(shard, &request.topic, request.queue_id)? {
                Ok(queue) => crate::replica::serve::fetch(shard, &queue, &request)
                    .await
                    .map(|(ext, batches)| Served::Batches { ext, batches }),
                Err(owner) => Ok(Served::Forward(owner)),
            }
        }
        Command::ReplicaEpochEnd => {
            let request: control::ReplicaEpochEnd = control::decode(&frame.body)?;
            match owned_queue(shard, &request.topic, request.queue_id)? {
                Ok(queue) => crate::replica::serve::epoch_end(&queue, &request).map(Served::Body),
                Err(owner) => Ok(Served::Forward(owner)),
            }
        }
        Command::CancelHeld | Command::EndTransaction | Command::HeldStats => {
            crate::held::serve(shard, command, frame)
                .await
                .map(|r| match r {
                    Ok(body) => Served::Body(body),
                    Err(owner) => Served::Forward(owner),
                })
        }
        Command::Push | Command::ReplyPush | Command::PushFault => Err(Reject::new(
            Status::InvalidArgument,
            format!("{command} is sent by brokers, not to them"),
        )),
        _ => Err(Reject::new(
            Status::UnknownCommand,
            format!("{command} is not served by a broker"),
        )),
    }
}

/// The queue `queue_id` of `topic` when this shard owns it, else the shard that does.
pub(crate) fn owned_queue(
    shard: &Shard,
    topic: &str,
    queue_id: u32,
) -> Result<Result<Rc<crate::queue::Queue>, usize>, Reject> {
    let owner = owner(shard, topic, queue_id, false)?;
    if owner != shard.id {
        return Ok(Err(owner));
    }
    shard
        .topics
        .queue(topic, queue_id)
        .map(Ok)
        .ok_or_else(|| Reject::new(Status::Internal, "owned queue is not open"))
}

/// The shard owning queue `queue_id` of `topic`, after checking it exists (and is writable).
fn owner(shard: &Shard, topic: &str, queue_id: u32, write: bool) -> Result<usize, Reject> {
    let counts = shard
        .topics
        .with_config(topic, |c| (c.queue_count, c.write_queue_count));
    let Some((queue_count, write_queue_count)) = counts else {
        return Err(Reject::new(
            Status::UnknownTopic,
            format!("no topic {topic}"),
        ));
    };
    let limit = if write {
        write_queue_count
    } else {
        queue_count
    };
    if queue_id >= queue_count {
        return Err(Reject::new(
            Status::InvalidArgument,
            format!("queue {queue_id} of {topic} is not in 0..{queue_count}"),
        ));
    }
    if queue_id >= limit {
        // The queue exists but takes no writes (a shrink in progress): the producer's route
        // is stale, which NotOwner tells it to refetch before retrying elsewhere.
        return Err(Reject::new(
            Status::NotOwner,
            format!("queue {queue_id} of {topic} takes no writes (writable: 0..{limit})"),
        ));
    }
    Ok(crate::topic::owner_shard(topic, queue_id, shard.count))
}

/// `Produce` and `Request`: append the batch to its queue; acknowledged per the topic's flush.
async fn produce(
    shard: &Rc<Shard>,
    header: FrameHeader,
    ext: Bytes,
    body: Body,
    forwarded: bool,
) -> Result<Served, Reject> {
    let address = BatchAddress::decode(&ext)?;
    let owner = owner(shard, address.topic, address.queue_id, true)?;
    if owner != shard.id {
        let frame = FrameBytes {
            header,
            ext: ext.clone(),
            body: body.freeze(),
        };
        return Ok(Served::ForwardFrame(owner, frame));
    }
    let (max_depth, redirects) = shard
        .topics
        .with_config(address.topic, |c| (c.max_queue_depth, redirects_of(c)))
        .unwrap_or((u64::MAX, None));
    let mut queue_id = address.queue_id;
    let mut body = body;
    if let Some(rule) = redirects.as_deref().and_then(|rules| {
        crate::redirect::matching_rule(rules, body.as_slice(), shard.config.limits.batch_len_max)
    }) {
        let target =
            crate::redirect::target(shard, address.topic, queue_id, rule, forwarded).await?;
        // A moved batch leaves its producer's numbering, which is per queue addressed.
        let moved = match target {
            crate::redirect::Target::Here(id) => id != queue_id,
            crate::redirect::Target::Elsewhere(..) => true,
        };
        if moved {
            body = without_producer(body, shard.config.limits.batch_len_max)?;
        }
        match target {
            crate::redirect::Target::Here(id) => queue_id = id,
            crate::redirect::Target::Elsewhere(owner, id) => {
                let readdressed =
                    crate::redirect::readdress(header, address.topic, id, body.freeze())?;
                return Ok(Served::ForwardFrame(owner, readdressed));
            }
        }
    }
    let Some(queue) = shard.topics.queue(address.topic, queue_id) else {
        return Err(Reject::new(Status::Internal, "owned queue is not open"));
    };
    // A replicated queue takes produces only where it is led, in the leader's epoch.
    let leading = match queue.replication() {
        None => None,
        Some(replication) => Some(
            replication
                .leading()
                .ok_or_else(|| replication.not_leader(address.topic, queue_id))?,
        ),
    };
    crate::depth::admit(shard, &queue, max_depth)?;
    shard.watermark.admit(body.as_slice().len() as u64)?;
    // Delayed and half records go to the queue's held log (ARCHITECTURE §13.3-§13.4).
    let held = protocol::record::held_kind(body.as_slice());
    if held != protocol::record::HeldKind::Plain {
        if matches!(header.command(), Ok(Command::Request)) {
            return Err(Reject::new(
                Status::InvalidArgument,
                "a request cannot be delayed or transactional",
            ));
        }
        let ack = crate::held::produce(shard, &queue, held, body.into_mut()).await?;
        return Ok(Served::Body(control::encode(&ack)?));
    }
    // Requests are tracked before the append, so a reply can never arrive untracked, and
    // stamped again when it resolves: latency counts from the request stored.
    let requests = matches!(header.command(), Ok(Command::Request)).then(|| {
        let now = std::time::Instant::now();
        shard
            .pending_requests
            .storing(body.as_slice(), &queue.requests, now)
    });
    let appended = queue.append(body.into_mut()).await;
    if let Some(keys) = requests.filter(|keys| !keys.is_empty()) {
        match &appended {
            Ok(_) => shard
                .pending_requests
                .stored(&keys, std::time::Instant::now()),
            Err(_) => shard.pending_requests.not_stored(&keys),
        }
    }
    let appended = appended?;
    if let Some(leading) = leading {
        if leading.on_leader_durable(queue.durable_end()) {
            queue.appended.notify();
        }
        let acks = queue.replication().map(|r| r.acks());
        if acks == Some(control::Acks::All) {
            leading
                .wait_committed(appended.next_offset)
                .await
                .map_err(|deposed| {
                    Reject::new(
                        Status::NotLeader,
                        format!(
                            "{deposed}: the batch at offset {} of queue {queue_id} of {} may \
                             or may not survive the failover; retry on the new leader",
                            appended.base_offset, address.topic
                        ),
                    )
                })?;
        }
    }
    let ack = ProduceAck {
        queue_id,
        base_offset: appended.base_offset,
        next_offset: appended.next_offset,
    };
    Ok(Served::Body(control::encode(&ack)?))
}

/// The batch with its idempotent producer's fields cleared: a dark-launch redirect moves it
/// to another queue than its producer numbered it for, where its sequence means nothing, so
/// it is stored there without the duplicate check (ARCHITECTURE §13.1).
fn without_producer(body: Body, batch_len_max: usize) -> Result<Body, Reject> {
    if protocol::record::ProducerFields::of(body.as_slice()).is_none() {
        return Ok(body);
    }
    let records_crc = protocol::record::BatchView::parse(body.as_slice(), batch_len_max)
        .map_err(|e| {
            Reject::new(
                Status::InvalidArgument,
                format!("invalid record batch: {e}"),
            )
        })?
        .records_crc();
    let mut bytes = body.into_mut();
    protocol::record::set_producer(&mut bytes, records_crc, Default::default()).map_err(|e| {
        Reject::new(
            Status::InvalidArgument,
            format!("invalid record batch: {e}"),
        )
    })?;
    Ok(Body::Owned(bytes))
}

/// Assigns a producer id (ARCHITECTURE §13.1); a lease of a new block writes and fsyncs the
/// broker's id file first.
fn init_producer(shard: &Shard) -> Result<Vec<u8>, Reject> {
    let producer_id = shard.producer_ids.next().map_err(|e| {
        ::log::error!("cannot assign a producer id: {e}");
        Reject::new(
            Status::StorageError,
            format!("cannot assign a producer id: {e}"),
        )
    })?;
    Ok(control::encode(&control::InitProducerReply {
        producer_id,
    })?)
}

async fn heartbeat(
    shard: &Rc<Shard>,
    conn: &Rc<Conn>,
    frame: &FrameBytes,
) -> Result<Vec<u8>, Reject> {
    let heartbeat: ClientHeartbeat = control::decode(&frame.body)?;
    heartbeat.validate()?;
    identify(shard, conn, &heartbeat.client_id).await;
    let ack = HeartbeatAck {
        broker_id: shard.config.broker_id.clone(),
        shard_id: shard.id as u32,
        shard_count: shard.count as u32,
    };
    Ok(control::encode(&ack)?)
}

/// Records which client a connection belongs to, here and (on its first connection to this
/// shard) on every other shard, so replies find it.
async fn identify(shard: &Rc<Shard>, conn: &Rc<Conn>, client_id: &str) {
    if conn.client_id.borrow().as_deref() == Some(client_id) {
        return;
    }
    let previous = conn.client_id.replace(Some(client_id.to_owned()));
    if let Some(previous) = previous {
        forget_client(shard, conn, &previous).await;
    }
    let first = shard.clients.identified(client_id, conn.id);
    if first {
        shard
            .tell_peers(|| MeshMsg::ClientUp {
                client_id: client_id.to_owned(),
                shard: shard.id,
            })
            .await;
    }
}

async fn forget_client(shard: &Rc<Shard>, conn: &Conn, client_id: &str) {
    let last = shard.clients.departed(client_id, conn.id);
    if last {
        shard
            .tell_peers(|| MeshMsg::ClientDown {
                client_id: client_id.to_owned(),
                shard: shard.id,
            })
            .await;
    }
}

/// Cleans up after a closed connection: its subscriptions leave their groups (their queues
/// move at once) and the directory forgets it.
pub(crate) async fn disconnected(shard: &Rc<Shard>, conn: &Rc<Conn>) {
    let subs = std::mem::take(&mut *conn.subs.borrow_mut());
    for id in subs {
        group::leave(shard, id);
    }
    shard.clients.remove(conn.id);
    shard.held_checkers.forget(conn.id);
    let client_id = conn.client_id.borrow_mut().take();
    if let Some(client_id) = client_id {
        forget_client(shard, conn, &client_id).await;
    }
}

/// Answers itself (the ack must precede the first push), hence `()`.
async fn subscribe(shard: &Rc<Shard>, conn: &Rc<Conn>, frame: &FrameBytes) -> Result<(), Reject> {
    let request: Subscribe = control::decode(&frame.body)?;
    request.validate()?;
    if conn.subs.borrow().len() >= shard.config.limits.subscriptions_per_connection_max {
        return Err(Reject::new(
            Status::SystemBusy,
            "too many subscriptions on this connection",
        ));
    }
    let Some(queue_ids) = shard.topics.owned_queue_ids(&request.topic) else {
        return Err(Reject::new(
            Status::UnknownTopic,
            format!("no topic {}", request.topic),
        ));
    };
    identify(shard, conn, &request.client_id).await;
    let group = match request.mode {
        SubscriptionMode::Clustering => request.group.clone(),
        SubscriptionMode::Broadcast => format!("{}/{}", request.group, request.client_id),
    };
    let sub = Rc::new(Subscription {
        id: shard.next_id(),
        conn: conn.clone(),
        key: GroupKey {
            topic: request.topic.clone(),
            group,
        },
        client_id: request.client_id.clone(),
        area: request.area.clone(),
        mode: request.mode,
        start: request.start,
        credit: Cell::new(u64::from(request.credit_messages)),
        credit_changed: Notify::new(),
        closed: Cell::new(false),
    });
    let ack = SubscribeAck {
        subscription_id: sub.id,
        queue_ids,
    };
    // The ack is queued before the group starts pushing, so it reaches the client first.
    let out = response(&frame.header, Status::Ok, &control::encode(&ack)?);
    conn.outbox
        .send(Outbound::Frame(out))
        .await
        .map_err(|_| Reject::new(Status::ShuttingDown, "closing"))?;
    conn.subs.borrow_mut().push(sub.id);
    log::info!(
        "shard {}: {} subscribed to {} as {} ({:?})",
        shard.id,
        sub.client_id,
        sub.key.topic,
        sub.key.group,
        sub.mode
    );
    group::join(shard, sub);
    Ok(())
}

/// The subscription `id` if it belongs to `conn`.
fn own_subscription(shard: &Shard, conn: &Conn, id: u64) -> Result<Rc<Subscription>, Reject> {
    shard
        .consumption
        .subscription(id)
        .filter(|s| s.conn.id == conn.id)
        .ok_or_else(|| {
            Reject::new(
                Status::InvalidArgument,
                format!("no subscription {id} on this connection"),
            )
        })
}

fn credit(shard: &Shard, conn: &Conn, frame: &FrameBytes) -> Result<(), Reject> {
    // `decode`, not `access`: a body is 8-aligned within its frame, not in the receive
    // buffer, where the frames before it may have any length.
    let grant = control::decode::<Credit>(&frame.body)?;
    let sub = own_subscription(shard, conn, grant.subscription_id)?;
    sub.credit
        .set(sub.credit.get().saturating_add(u64::from(grant.messages)));
    sub.credit_changed.notify();
    Ok(())
}

fn unsubscribe(shard: &Rc<Shard>, conn: &Conn, frame: &FrameBytes) -> Result<(), Reject> {
    let request = control::decode::<Unsubscribe>(&frame.body)?;
    let id = request.subscription_id;
    own_subscription(shard, conn, id)?;
    conn.subs.borrow_mut().retain(|&s| s != id);
    group::leave(shard, id);
    Ok(())
}

/// `Nack`: the subscription's message goes to its group's retry or dead-letter topic.
async fn nack(shard: &Rc<Shard>, conn: &Conn, frame: &FrameBytes) -> Result<Vec<u8>, Reject> {
    let request = control::decode::<control::Nack>(&frame.body)?;
    request.validate()?;
    let sub = own_subscription(shard, conn, request.subscription_id)?;
    let ack = crate::retry::nack(shard, &sub, &request).await?;
    Ok(control::encode(&ack)?)
}

async fn commit(shard: &Rc<Shard>, conn: &Conn, frame: &FrameBytes) -> Result<Vec<u8>, Reject> {
    let request = control::decode::<CommitOffset>(&frame.body)?;
    let sub = own_subscription(shard, conn, request.subscription_id)?;
    if shard
        .topics
        .queue(&sub.key.topic, request.queue_id)
        .is_none()
    {
        return Err(Reject::new(
            Status::NotOwner,
            format!(
                "queue {} of {} is not owned by shard {}",
                request.queue_id, sub.key.topic, shard.id
            ),
        ));
    }
    shard
        .consumption
        .offsets()
        .commit(
            &sub.key.topic,
            &sub.key.group,
            request.queue_id,
            request.offset,
        )
        .await?;
    Ok(Vec::new())
}
