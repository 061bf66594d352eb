//! This shard's end of the mesh: the channels to its peers, the calls waiting for their
//! replies, and the closing handshake (see the [module docs](super)).

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::time::Duration;

use super::{MeshMsg, MeshReply};
use crate::notify::Notify;
use crate::rt::{LocalSender, MeshSenders, Task};
use crate::shard::Shard;

/// Longest wait for every shard to answer a call.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// The channels to every other shard and what is outstanding on them.
pub(crate) struct Peers {
    id: usize,
    count: usize,
    senders: MeshSenders<MeshMsg>,
    /// Outstanding calls by token: where their replies go.
    calls: RefCell<HashMap<u64, Rc<LocalSender<MeshReply>>>>,
    /// Peers that said they originate nothing more (bit per shard).
    quiet: Cell<u64>,
    /// Notified when a peer goes quiet.
    went_quiet_notify: Notify,
}

impl Peers {
    /// Shard `id` of `count`'s end of the mesh.
    pub fn new(id: usize, count: usize, senders: MeshSenders<MeshMsg>) -> Self {
        Self {
            id,
            count,
            senders,
            calls: RefCell::new(HashMap::new()),
            quiet: Cell::new(0),
            went_quiet_notify: Notify::new(),
        }
    }

    fn others(&self) -> impl Iterator<Item = usize> + use<> {
        let id = self.id;
        (0..self.count).filter(move |&p| p != id)
    }

    /// Sends `msg` to shard `to`; false if that shard is gone (shutting down).
    pub async fn send_to(&self, to: usize, msg: MeshMsg) -> bool {
        match self.senders.send_to(to, msg).await {
            Ok(()) => true,
            Err(e) => {
                log::debug!("shard {}: mesh send to shard {to} failed: {e}", self.id);
                false
            }
        }
    }

    /// Sends `make()` to every other shard, one way.
    pub async fn tell_all(&self, make: impl Fn() -> MeshMsg) {
        for peer in self.others() {
            self.send_to(peer, make()).await;
        }
    }

    /// Hands the reply to call `token` to its caller, if it still waits.
    pub fn answered(&self, token: u64, reply: MeshReply) {
        let sender = self.calls.borrow().get(&token).cloned();
        if let Some(sender) = sender {
            let _ = sender.try_send(reply);
        }
    }

    /// Records that `peer` originates nothing more.
    pub fn went_quiet(&self, peer: usize) {
        self.quiet.set(self.quiet.get() | 1 << peer);
        self.went_quiet_notify.notify();
    }

    /// Resolves once every peer went quiet.
    async fn all_quiet(&self) {
        let peers = self.others().fold(0u64, |bits, p| bits | 1 << p);
        loop {
            let seen = self.went_quiet_notify.generation();
            if self.quiet.get() & peers == peers {
                return;
            }
            self.went_quiet_notify.wait(seen).await;
        }
    }
}

/// Closes this shard's side of the mesh once its own tasks have ended: see the module docs.
/// `receivers` are the tasks [`super::spawn_receivers`] returned.
pub(crate) async fn close(shard: &Rc<Shard>, receivers: Vec<Task<()>>) {
    let peers = &shard.peers;
    peers.tell_all(|| MeshMsg::Quiet { origin: shard.id }).await;
    peers.all_quiet().await;
    crate::shard::drain_tasks(shard, "answering peers").await;
    peers.senders.close();
    for receiver in receivers {
        receiver.await;
    }
}

/// Sends a message built by `make(token)` to every other shard and collects their replies.
pub(crate) async fn call_all(shard: &Shard, make: impl Fn(u64) -> MeshMsg) -> Vec<MeshReply> {
    call_all_within(shard, CALL_TIMEOUT, make).await
}

/// Like [`call_all`], waiting up to `within` for the answers: for calls whose work takes
/// long (an on-demand scrub reads every queue of the shard).
pub(crate) async fn call_all_within(
    shard: &Shard,
    within: Duration,
    make: impl Fn(u64) -> MeshMsg,
) -> Vec<MeshReply> {
    let peers = &shard.peers;
    if peers.count <= 1 {
        return Vec::new();
    }
    let token = shard.next_id();
    let (sender, receiver) = crate::rt::local_channel(peers.count - 1);
    peers.calls.borrow_mut().insert(token, Rc::new(sender));
    let mut expected = 0;
    for peer in peers.others() {
        if peers.send_to(peer, make(token)).await {
            expected += 1;
        }
    }
    let mut replies = Vec::with_capacity(expected);
    let collect = async {
        while replies.len() < expected {
            match receiver.recv().await {
                Some(reply) => replies.push(reply),
                None => break,
            }
        }
    };
    // A peer that is shutting down may never answer; nobody waits on it for long.
    if crate::rt::timeout(within, collect).await.is_none() {
        log::warn!(
            "shard {}: {} of {expected} shards did not answer within {within:?}",
            shard.id,
            expected - replies.len()
        );
    }
    peers.calls.borrow_mut().remove(&token);
    replies
}

/// Sends `make(token)` to shard `to` and waits up to `within` for its one reply; `None` when
/// that shard is gone or did not answer in time.
pub(crate) async fn call_one(
    shard: &Shard,
    to: usize,
    within: Duration,
    make: impl FnOnce(u64) -> MeshMsg,
) -> Option<MeshReply> {
    let peers = &shard.peers;
    let token = shard.next_id();
    let (sender, receiver) = crate::rt::local_channel(1);
    peers.calls.borrow_mut().insert(token, Rc::new(sender));
    let reply = if peers.send_to(to, make(token)).await {
        crate::rt::timeout(within, receiver.recv()).await.flatten()
    } else {
        None
    };
    peers.calls.borrow_mut().remove(&token);
    reply
}
