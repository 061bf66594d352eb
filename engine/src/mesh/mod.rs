//! Messages between shards over the runtime's channel mesh, and how a shard receives them.
//!
//! Every shard runs one receiver task per peer. A receiver never waits on another shard: work
//! that may wait (appending a forwarded produce, applying a topic change) runs in its own task,
//! so two shards sending to each other can never deadlock on full channels.
//!
//! Closing ([`close`]) drains the mesh without a timed wait. A message either *originates*
//! work (a forward, a call, a client's arrival) or *answers* one (a response, a reply). A
//! closing shard originates nothing once its own tasks have ended (it refuses topic changes
//! while closing, the only work a forwarded request could start on another shard), so:
//! 1. when every task it started has ended, a shard tells every peer `Quiet`;
//! 2. once every peer said `Quiet` (channels are FIFO, so everything a peer originated has
//!    arrived before it), it waits for the tasks answering those messages to end;
//! 3. then it closes its channels to the peers, and waits for its receivers to end, which
//!    each does once its peer closed too, having received every answer sent before.
//!
//! A peer whose channel closes without `Quiet` (a shard that failed to start) counts as quiet.

use std::rc::Rc;

use bytes::Bytes;
use protocol::control::{QueueStats, RedirectRule, ShardStats, TopicConfig};
use protocol::frame::FrameBytes;

use crate::net::outbox::Outbound;
use crate::rt::MeshReceivers;

mod peers;

use crate::shard::Shard;
pub(crate) use peers::{Peers, call_all, call_all_within, call_one, close};

/// A message from one shard to another.
pub(crate) enum MeshMsg {
    /// A request from a client of shard `origin`, for a queue (or registry) this shard owns.
    Forward {
        origin: usize,
        conn_id: u64,
        frame: FrameBytes,
    },
    /// The encoded response to a forwarded request, for connection `conn_id` of the receiver.
    Response { conn_id: u64, frame: Vec<u8> },
    /// Shard 0 changed the registry: apply, then answer [`MeshReply::Done`] to `token`.
    ApplyTopic {
        origin: usize,
        token: u64,
        change: TopicChange,
    },
    /// Report this shard's statistics to `token`.
    Collect { origin: usize, token: u64 },
    /// Scrub the queues of `topic` (all when empty) now and report.
    Scrub {
        origin: usize,
        token: u64,
        topic: String,
    },
    /// Report what this shard sees of a dynamic topic (its consumers; whether its queues
    /// among `retiring` are drained).
    DynamicQuery {
        origin: usize,
        token: u64,
        topic: String,
        retiring: Vec<u32>,
    },
    /// Tell this shard's subscribers of `topic` that its configuration changed.
    TopicChanged { topic: String },
    /// To shard 0: register with the nameservers now (a queue's role changed, and clients
    /// should be routed to its new leader without waiting for the interval).
    RegisterNow,
    /// Report the queues of `topic` a redirect `rule` may send to (dark launch).
    RedirectQuery {
        origin: usize,
        token: u64,
        topic: String,
        rule: RedirectRule,
    },
    /// Serve a request this shard owns on behalf of shard `origin` itself (not one of its
    /// clients: a nack's copy to a retry queue, or the retry topic's creation on shard 0),
    /// and answer [`MeshReply::Served`] to `token`.
    Serve {
        origin: usize,
        token: u64,
        frame: FrameBytes,
    },
    /// The answer to a call.
    Reply { token: u64, reply: MeshReply },
    /// Shard `origin` is closing and will originate nothing more (see the module docs).
    Quiet { origin: usize },
    /// A client identified itself on a connection of `shard`.
    ClientUp { client_id: String, shard: usize },
    /// The last connection of a client on `shard` closed.
    ClientDown { client_id: String, shard: usize },
    /// A reply for a requester connected to the receiving shard.
    ReplyPush {
        client_id: String,
        topic: String,
        queue_id: u32,
        batch: Bytes,
    },
    /// A transaction check-back for a producer group, to one of its connections on the
    /// receiving shard if it has one (`crate::held::checks`).
    HeldCheck { group: String, frame: Vec<u8> },
    /// Replies to requests the receiving shard stored were stored at `at` on another shard:
    /// each `(reply_to, correlation_id)` (request-reply metrics).
    RepliesStored {
        replies: Vec<(String, Vec<u8>)>,
        at: std::time::Instant,
    },
}

/// A registry change broadcast by shard 0.
pub(crate) enum TopicChange {
    /// A topic was created or updated.
    Upsert(TopicConfig),
    /// A topic was deleted.
    Delete(String),
}

/// The answer to a call over the mesh.
pub(crate) enum MeshReply {
    /// Done (a topic change was applied).
    Done,
    /// One shard's statistics.
    Stats(ShardSnapshot),
    /// One shard's view of a dynamic topic.
    Dynamic(crate::dynamic::Observation),
    /// The queues of shard `shard` that a redirect rule may send to.
    RedirectTargets { shard: usize, queues: Vec<u32> },
    /// What an on-demand scrub of one shard's queues found.
    Scrubbed(Vec<protocol::control::QueueScrub>),
    /// The outcome of a [`MeshMsg::Serve`]: the response body, or the refusal.
    Served(Result<Vec<u8>, crate::error::Reject>),
}

/// What one shard reports for `Stats`, `ListTopics` and registration.
pub(crate) struct ShardSnapshot {
    pub shard: ShardStats,
    pub queues: Vec<QueueStats>,
    /// What a metrics scrape adds, queue for queue in the order of `queues`.
    pub metrics: crate::metrics::ShardMetrics,
}

/// Starts one receiver task per peer; dropping the returned tasks stops them.
pub(crate) fn spawn_receivers(
    shard: &Rc<Shard>,
    mut receivers: MeshReceivers<MeshMsg>,
) -> Vec<crate::rt::Task<()>> {
    receivers
        .streams()
        .into_iter()
        .map(|(peer, receiver)| {
            let shard = shard.clone();
            crate::rt::spawn(async move {
                while let Some(msg) = receiver.recv().await {
                    receive(&shard, msg);
                }
                log::debug!("shard {}: mesh from shard {peer} closed", shard.id);
                shard.peers.went_quiet(peer);
            })
        })
        .collect()
}

fn receive(shard: &Rc<Shard>, msg: MeshMsg) {
    match msg {
        MeshMsg::Forward {
            origin,
            conn_id,
            frame,
        } => {
            let tasks = &shard.tasks;
            let shard = shard.clone();
            tasks
                .spawn(async move {
                    let Some(response) =
                        crate::net::dispatch::serve_forwarded(&shard, &frame).await
                    else {
                        return; // Succeeded, and only a failure was to be answered.
                    };
                    shard
                        .send_to(
                            origin,
                            MeshMsg::Response {
                                conn_id,
                                frame: response,
                            },
                        )
                        .await;
                })
                .detach();
        }
        MeshMsg::Response { conn_id, frame } => {
            let conn = shard.clients.get(conn_id);
            if let Some(conn) = conn {
                crate::net::access::audit_answer(shard, &conn, &frame);
                if conn.outbox.try_send(Outbound::Frame(frame)).is_err() {
                    log::debug!(
                        "shard {}: connection {conn_id} cannot take a relayed response",
                        shard.id
                    );
                }
            }
        }
        MeshMsg::ApplyTopic {
            origin,
            token,
            change,
        } => {
            let tasks = &shard.tasks;
            let shard = shard.clone();
            tasks
                .spawn(async move {
                    crate::admin::apply_change(&shard, change).await;
                    let reply = MeshReply::Done;
                    shard.send_to(origin, MeshMsg::Reply { token, reply }).await;
                })
                .detach();
        }
        MeshMsg::Collect { origin, token } => {
            answer_call(
                shard,
                origin,
                token,
                MeshReply::Stats(crate::admin::snapshot(shard)),
            );
        }
        MeshMsg::Scrub {
            origin,
            token,
            topic,
        } => {
            let tasks = &shard.tasks;
            let shard = shard.clone();
            tasks
                .spawn(async move {
                    let reply = MeshReply::Scrubbed(crate::scrub::on_demand(&shard, &topic).await);
                    shard.send_to(origin, MeshMsg::Reply { token, reply }).await;
                })
                .detach();
        }
        MeshMsg::DynamicQuery {
            origin,
            token,
            topic,
            retiring,
        } => {
            answer_call(
                shard,
                origin,
                token,
                MeshReply::Dynamic(crate::dynamic::observe(shard, &topic, &retiring)),
            );
        }
        MeshMsg::TopicChanged { topic } => crate::group::announce_change(shard, &topic),
        MeshMsg::RegisterNow => shard.registration.request(),
        MeshMsg::RedirectQuery {
            origin,
            token,
            topic,
            rule,
        } => {
            let reply = MeshReply::RedirectTargets {
                shard: shard.id,
                queues: crate::redirect::local_targets(shard, &topic, &rule),
            };
            answer_call(shard, origin, token, reply);
        }
        MeshMsg::Serve {
            origin,
            token,
            frame,
        } => {
            let tasks = &shard.tasks;
            let shard = shard.clone();
            tasks
                .spawn(async move {
                    let served = crate::net::dispatch::serve_here(&shard, &frame).await;
                    let reply = MeshReply::Served(served);
                    shard.send_to(origin, MeshMsg::Reply { token, reply }).await;
                })
                .detach();
        }
        MeshMsg::Reply { token, reply } => shard.peers.answered(token, reply),
        MeshMsg::Quiet { origin } => shard.peers.went_quiet(origin),
        MeshMsg::ClientUp {
            client_id,
            shard: at,
        } => {
            shard.clients.remote_up(client_id, at);
        }
        MeshMsg::ClientDown {
            client_id,
            shard: at,
        } => {
            shard.clients.remote_down(&client_id, at);
        }
        MeshMsg::ReplyPush {
            client_id,
            topic,
            queue_id,
            batch,
        } => crate::rr::deliver_local(shard, &client_id, Rc::from(topic), queue_id, batch),
        MeshMsg::HeldCheck { group, frame } => {
            crate::held::checks::deliver_local(shard, &group, frame);
        }
        MeshMsg::RepliesStored { replies, at } => {
            let now_ms = crate::metrics::requests::now_ms();
            for (reply_to, correlation_id) in &replies {
                shard
                    .pending_requests
                    .answered(reply_to, correlation_id, at, now_ms);
            }
        }
    }
}

/// Sends `reply` to the call `token` of shard `origin`, from a task: the receiver loop must
/// not wait on a full channel back to the caller.
fn answer_call(shard: &Rc<Shard>, origin: usize, token: u64, reply: MeshReply) {
    let tasks = &shard.tasks;
    let shard = shard.clone();
    tasks
        .spawn(async move {
            shard.send_to(origin, MeshMsg::Reply { token, reply }).await;
        })
        .detach();
}
