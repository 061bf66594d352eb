//! Check-backs: which connections answer for which producer group, and sending them a
//! `TransactionCheck`.
//!
//! A transactional producer registers its connections for its producer group
//! (`TransactionCheck` as a request, `CheckRegistration`). The shard that owns a half
//! message's queue sends the check to one registered connection of its own, else asks every
//! other shard to send it to one of theirs: a group connected on several shards may then hear
//! one check more than once, which is harmless (the second answer finds the half settled).

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use protocol::codes::Command;
use protocol::control::{self, TransactionCheck};
use protocol::frame::{FrameMeta, encode_frame};

use crate::mesh::MeshMsg;
use crate::net::outbox::Outbound;
use crate::shard::Shard;

/// Producer groups a connection may answer for at once; a registration past it is refused.
pub(crate) const GROUPS_PER_CONNECTION_MAX: usize = 64;

/// The connections of this shard registered per producer group.
#[derive(Default)]
pub(crate) struct Checkers {
    groups: RefCell<HashMap<String, Vec<u64>>>,
    /// A round-robin cursor, so one connection does not take every check.
    turn: std::cell::Cell<usize>,
}

impl Checkers {
    /// `conn_id` answers the checks of `group`; false when it already holds too many groups.
    pub fn register(&self, group: &str, conn_id: u64) -> bool {
        let mut groups = self.groups.borrow_mut();
        let held = groups.values().filter(|c| c.contains(&conn_id)).count();
        let conns = groups.entry(group.to_owned()).or_default();
        if conns.contains(&conn_id) {
            return true;
        }
        if held >= GROUPS_PER_CONNECTION_MAX {
            return false;
        }
        conns.push(conn_id);
        true
    }

    /// Forgets a closed connection.
    pub fn forget(&self, conn_id: u64) {
        let mut groups = self.groups.borrow_mut();
        groups.retain(|_, conns| {
            conns.retain(|&c| c != conn_id);
            !conns.is_empty()
        });
    }

    /// One registered connection of `group`, taking turns.
    fn pick(&self, group: &str) -> Option<u64> {
        let groups = self.groups.borrow();
        let conns = groups.get(group)?;
        let turn = self.turn.get().wrapping_add(1);
        self.turn.set(turn);
        conns.get(turn % conns.len()).copied()
    }
}

/// The encoded `TransactionCheck` push.
pub(crate) fn check_frame(check: &TransactionCheck) -> Option<Vec<u8>> {
    let body = control::encode(check).ok()?;
    let mut out = Vec::new();
    let meta = FrameMeta::oneway(Command::TransactionCheck, 0);
    encode_frame(&meta, &[], &body, &mut out).ok()?;
    Some(out)
}

/// Sends `frame` to one connection of `group` on this shard; false if none took it.
pub(crate) fn deliver_local(shard: &Shard, group: &str, frame: Vec<u8>) -> bool {
    let Some(conn) = shard
        .held_checkers
        .pick(group)
        .and_then(|id| shard.clients.get(id))
    else {
        return false;
    };
    conn.outbox.try_send(Outbound::Frame(frame)).is_ok()
}

/// Sends a check to the producer group: here if a connection of it is here, else through
/// every other shard.
pub(crate) async fn send(shard: &Rc<Shard>, group: &str, frame: Vec<u8>) {
    if deliver_local(shard, group, frame.clone()) {
        return;
    }
    shard
        .tell_peers(|| MeshMsg::HeldCheck {
            group: group.to_owned(),
            frame: frame.clone(),
        })
        .await;
}
