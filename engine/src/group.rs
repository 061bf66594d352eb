//! Consumer groups on one shard: membership, and which member each owned queue is pushed to.
//!
//! A consumer subscribes on a connection to every shard, so every shard sees every live member
//! and assigns the queues *it owns* the same way: the members of the broker's own area if any
//! is online (else all members, see [`nearby_members`]), sorted by client id; queue `q` goes to
//! member `q % n`. Membership changes on subscribe, unsubscribe, connection close and heartbeat
//! loss (the connection is closed). A queue leaving a live member is paused until that member
//! commits what it was pushed, or `revoke_timeout_ms` passes; a queue leaving a dead member
//! moves at once and restarts from the committed offset (at-least-once). A broadcast
//! subscription is a group of its own, keyed `group/client_id`, and gets every queue.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;
use std::time::Duration;

use protocol::codes::Command;
use protocol::control::{GroupQueueStats, StartPosition, SubscriptionMode};
use protocol::data::BatchAddress;
use protocol::frame::{FrameMeta, encode_frame};

use crate::net::conn::Conn;
use crate::net::outbox::Outbound;
use crate::notify::Notify;
use crate::offsets::Offsets;
use crate::queue::Queue;
use crate::shard::Shard;

/// A group as offsets and assignment know it: topic and group name (for broadcast, with the
/// client id appended).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct GroupKey {
    pub topic: String,
    pub group: String,
}

/// One subscription of a connection.
pub(crate) struct Subscription {
    pub id: u64,
    pub conn: Rc<Conn>,
    pub key: GroupKey,
    pub client_id: String,
    /// The subscriber's area: nearby consume prefers members of the broker's own area.
    pub area: String,
    pub mode: SubscriptionMode,
    pub start: StartPosition,
    /// Records the broker may still push.
    pub credit: Cell<u64>,
    /// Notified when credit is granted or the subscription ends.
    pub credit_changed: Notify,
    pub closed: Cell<bool>,
}

impl Subscription {
    /// Ends the subscription: its push tasks stop at their next step.
    pub fn close(&self) {
        self.closed.set(true);
        self.credit_changed.notify();
    }
}

/// Who a queue is pushed to, and the task doing it.
#[derive(Default)]
pub(crate) struct Slot {
    pub owner: Option<u64>,
    /// Next offset to push; shared with the push task.
    pub position: Rc<Cell<u64>>,
    /// Where the current owner's pushes began: if `position` is still there, the owner was
    /// pushed nothing and a handover has nothing to wait for.
    pub started_at: Rc<Cell<u64>>,
    /// The push (or handover) task; dropping it cancels it.
    pub task: Option<crate::rt::Task<()>>,
}

/// One group's members and queue slots on this shard.
#[derive(Default)]
pub(crate) struct Group {
    /// A clustering (unicast) group, as opposed to one broadcast instance: only these count
    /// towards a queue's depth.
    pub clustering: bool,
    /// Client id → subscription id, sorted by client id.
    pub members: BTreeMap<String, u64>,
    /// Owned queue id → slot.
    pub slots: HashMap<u32, Slot>,
}

/// Consumption on one shard: its consumer groups, the subscriptions of its connections, and
/// the committed offsets of the queues it owns. Membership and assignment (the functions of
/// this module) change the maps; everything else asks through the methods below.
pub(crate) struct Consumption {
    /// Ordered by topic, then group, so one topic's groups are a range (see [`of_topic`]):
    /// the produce path looks at them for every batch.
    groups: RefCell<BTreeMap<GroupKey, Group>>,
    subs: RefCell<HashMap<u64, Rc<Subscription>>>,
    offsets: Offsets,
}

impl Consumption {
    /// No groups or subscriptions yet; `offsets` as replayed.
    pub fn new(offsets: Offsets) -> Self {
        Self {
            groups: RefCell::new(BTreeMap::new()),
            subs: RefCell::new(HashMap::new()),
            offsets,
        }
    }

    /// The committed offsets.
    pub fn offsets(&self) -> &Offsets {
        &self.offsets
    }

    /// The offsets, to close them (the shard is closing).
    pub fn into_offsets(self) -> Offsets {
        self.offsets
    }

    /// The subscription `id`, if it is live.
    pub fn subscription(&self, id: u64) -> Option<Rc<Subscription>> {
        self.subs.borrow().get(&id).cloned()
    }

    /// The furthest offset any online clustering group was pushed on the queue, or `None`
    /// while none consumes it (what a queue's depth is measured from).
    pub fn furthest_delivered(&self, topic: &str, queue_id: u32) -> Option<u64> {
        of_topic(&self.groups.borrow(), topic)
            .filter(|(_, group)| group.clustering)
            .filter_map(|(_, group)| group.slots.get(&queue_id))
            .filter(|slot| slot.owner.is_some())
            .map(|slot| slot.position.get())
            .max()
    }

    /// Per group consuming the queue: who holds it, what was pushed and what is committed.
    pub fn queue_stats(&self, topic: &str, queue_id: u32) -> Vec<GroupQueueStats> {
        let subs = self.subs.borrow();
        of_topic(&self.groups.borrow(), topic)
            .filter_map(|(key, group)| {
                let slot = group.slots.get(&queue_id)?;
                let client_id = slot
                    .owner
                    .and_then(|id| subs.get(&id).map(|s| s.client_id.clone()))
                    .unwrap_or_default();
                Some(GroupQueueStats {
                    group: key.group.clone(),
                    client_id,
                    delivered_offset: slot.position.get(),
                    committed_offset: self.offsets.get(&key.topic, &key.group, queue_id),
                })
            })
            .collect()
    }

    /// The clustering groups of `topic`, and the largest number of members of `area` any of
    /// them has.
    pub fn clustering_groups(&self, topic: &str, area: &str) -> (Vec<String>, u32) {
        let groups = self.groups.borrow();
        let subs = self.subs.borrow();
        let clustering = || of_topic(&groups, topic).filter(|(_, g)| g.clustering);
        let names = clustering().map(|(key, _)| key.group.clone()).collect();
        let in_area = clustering()
            .map(|(_, group)| {
                group
                    .members
                    .values()
                    .filter(|id| subs.get(id).is_some_and(|s| s.area == area))
                    .count() as u32
            })
            .max()
            .unwrap_or(0);
        (names, in_area)
    }

    /// The queues of group `key` that a live member accepted by `selects` (given its client
    /// id) holds, ascending.
    pub fn queues_held(&self, key: &GroupKey, selects: impl Fn(&str) -> bool) -> Vec<u32> {
        let groups = self.groups.borrow();
        let Some(group) = groups.get(key) else {
            return Vec::new();
        };
        let subs = self.subs.borrow();
        let mut queues: Vec<u32> = group
            .slots
            .iter()
            .filter(|(_, slot)| {
                slot.owner
                    .and_then(|owner| subs.get(&owner))
                    .is_some_and(|sub| !sub.closed.get() && selects(&sub.client_id))
            })
            .map(|(queue_id, _)| *queue_id)
            .collect();
        queues.sort_unstable();
        queues
    }
}

/// The groups of `topic`: a range of the ordered map, not a scan of every group.
pub(crate) fn of_topic<'g, V>(
    groups: &'g BTreeMap<GroupKey, V>,
    topic: &str,
) -> impl Iterator<Item = (&'g GroupKey, &'g V)> {
    let from = GroupKey {
        topic: topic.to_owned(),
        group: String::new(),
    };
    groups
        .range(from..)
        .take_while(move |(key, _)| key.topic == topic)
}

/// Adds `sub` to its group (replacing an older subscription of the same client) and rebalances.
pub(crate) fn join(shard: &Rc<Shard>, sub: Rc<Subscription>) {
    let key = sub.key.clone();
    let replaced = {
        let mut groups = shard.consumption.groups.borrow_mut();
        let group = groups.entry(key.clone()).or_default();
        group.clustering = sub.mode == SubscriptionMode::Clustering;
        group.members.insert(sub.client_id.clone(), sub.id)
    };
    if let Some(old) = replaced.filter(|&old| old != sub.id) {
        if let Some(old) = shard.consumption.subs.borrow_mut().remove(&old) {
            old.close();
        }
    }
    shard.consumption.subs.borrow_mut().insert(sub.id, sub);
    rebalance(shard, &key);
}

/// Removes a subscription (unsubscribe, connection closed) and rebalances its group at once.
pub(crate) fn leave(shard: &Rc<Shard>, subscription_id: u64) {
    let Some(sub) = shard.consumption.subs.borrow_mut().remove(&subscription_id) else {
        return;
    };
    sub.close();
    {
        let mut groups = shard.consumption.groups.borrow_mut();
        if let Some(group) = groups.get_mut(&sub.key) {
            if group.members.get(&sub.client_id) == Some(&subscription_id) {
                group.members.remove(&sub.client_id);
            }
        }
    }
    rebalance(shard, &sub.key);
}

/// Rebalances every group of `topic` (its queues changed).
pub(crate) fn rebalance_topic(shard: &Rc<Shard>, topic: &str) {
    let keys: Vec<GroupKey> = of_topic(&shard.consumption.groups.borrow(), topic)
        .map(|(key, _)| key.clone())
        .collect();
    for key in keys {
        rebalance(shard, &key);
    }
}

/// Tells every subscriber of `topic` on this shard that its configuration changed
/// (`TopicConfigChanged`, addressed like a push), so consumers refetch the route and subscribe
/// where new queues appeared at once. A connection too backed up to take it is skipped: its
/// consumer still follows the route at its next refresh.
pub(crate) fn announce_change(shard: &Shard, topic: &str) {
    for sub in shard.consumption.subs.borrow().values() {
        if sub.key.topic != topic || sub.closed.get() {
            continue;
        }
        let mut ext = Vec::new();
        let address = BatchAddress::new(topic, 0).with_subscription(sub.id);
        if address.encode(&mut ext).is_err() {
            continue;
        }
        let mut frame = Vec::new();
        let meta = FrameMeta::oneway(Command::TopicConfigChanged, 0);
        if encode_frame(&meta, &ext, &[], &mut frame).is_ok() {
            let _ = sub.conn.outbox.try_send(Outbound::Frame(frame));
        }
    }
}

/// Ends every subscription and group of the shard (it is closing): their push and handover
/// tasks are cancelled.
pub(crate) fn close_all(shard: &Shard) {
    let subs = std::mem::take(&mut *shard.consumption.subs.borrow_mut());
    for sub in subs.values() {
        sub.close();
    }
    let groups = std::mem::take(&mut *shard.consumption.groups.borrow_mut());
    drop(groups);
}

/// Stops every group of a deleted topic, and forgets what was pushed of it.
pub(crate) fn drop_topic(shard: &Rc<Shard>, topic: &str) {
    shard.pushes.drop_topic(topic);
    shard
        .consumption
        .groups
        .borrow_mut()
        .retain(|k, _| k.topic != topic);
}

/// Brings the group's slots in line with its members: see the module documentation.
pub(crate) fn rebalance(shard: &Rc<Shard>, key: &GroupKey) {
    let owned = shard.topics.readable_queues(&key.topic);
    let mut groups = shard.consumption.groups.borrow_mut();
    let Some(group) = groups.get_mut(key) else {
        return;
    };
    let members = nearby_members(shard, group);
    group.slots.retain(|q, _| owned.contains(q));
    for &queue_id in &owned {
        let desired = (!members.is_empty()).then(|| members[queue_id as usize % members.len()]);
        let slot = group.slots.entry(queue_id).or_default();
        if slot.owner == desired && (slot.task.is_some() || desired.is_none()) {
            continue;
        }
        let previous = slot.owner;
        slot.owner = desired;
        slot.task = None; // cancels whatever pushed this queue before
        let Some(new_owner) = desired else { continue };
        let Some(sub) = shard.consumption.subs.borrow().get(&new_owner).cloned() else {
            continue;
        };
        let Some(queue) = shard.topics.queue(&key.topic, queue_id) else {
            continue;
        };
        let previous_alive = previous
            .filter(|&p| p != new_owner)
            .and_then(|p| {
                shard
                    .consumption
                    .subs
                    .borrow()
                    .get(&p)
                    .map(|s| !s.closed.get())
            })
            .unwrap_or(false);
        let (started_at, delivered) = (slot.started_at.get(), slot.position.get());
        let handover = (previous_alive && delivered > started_at).then_some(delivered);
        let position = slot.position.clone();
        let started = slot.started_at.clone();
        // Broadcast instances are keyed per client: redeliveries are counted per clustering
        // group only (crate::metrics::deliveries).
        let delivered = group.clustering.then(|| queue.deliveries.of(&key.group));
        let pushes = shard.pushes.ring(key, queue_id);
        let pusher = shard.clone();
        slot.task = Some(shard.tasks.spawn(async move {
            let shard = pusher;
            if let Some(delivered) = handover {
                wait_for_commit(&shard, &sub, queue.id, delivered).await;
            }
            let start = start_offset(&shard, &sub, &queue);
            position.set(start);
            started.set(start);
            log::debug!(
                "shard {}: {}/{} → {} from offset {start}",
                shard.id,
                sub.key.group,
                queue.id,
                sub.client_id
            );
            let read_bytes = shard.config.limits.push_read_bytes;
            drop(shard);
            crate::push::run(sub, queue, position, read_bytes, delivered, pushes).await;
        }));
    }
    if group.members.is_empty() {
        groups.remove(key);
    }
}

/// The members this shard's queues are spread over (nearby consume, DESIGN §6): those of the
/// broker's own area while any is online, else every member, so the queues of an area whose
/// consumers all died are taken over by the other areas' (multi-active) and return once one
/// of its own subscribes again.
fn nearby_members(shard: &Shard, group: &Group) -> Vec<u64> {
    let all: Vec<u64> = group.members.values().copied().collect();
    let subs = shard.consumption.subs.borrow();
    let own_area = |id: &&u64| subs.get(id).is_some_and(|s| s.area == shard.config.area);
    let local: Vec<u64> = all.iter().filter(own_area).copied().collect();
    if local.is_empty() { all } else { local }
}

/// Where a subscription starts on a queue: the committed offset, else its start position.
fn start_offset(shard: &Shard, sub: &Subscription, queue: &Queue) -> u64 {
    let committed = shard
        .consumption
        .offsets
        .get(&sub.key.topic, &sub.key.group, queue.id);
    match (sub.start, committed) {
        (StartPosition::Earliest, _) => queue.log.start_offset(),
        (_, Some(offset)) => offset.max(queue.log.start_offset()),
        (StartPosition::Committed, None) => queue.log.start_offset(),
        (StartPosition::Latest, None) => queue.log.next_offset(),
    }
}

/// The revoke pause: waits until the group committed `delivered` on the queue, or the revoke
/// timeout passes, so two members never consume one queue at once.
async fn wait_for_commit(shard: &Shard, sub: &Subscription, queue_id: u32, delivered: u64) {
    let timeout = Duration::from_millis(shard.config.revoke_timeout_ms);
    let wait = async {
        loop {
            let seen = shard.consumption.offsets.changed.generation();
            let committed = shard
                .consumption
                .offsets
                .get(&sub.key.topic, &sub.key.group, queue_id);
            if committed.is_some_and(|c| c >= delivered) {
                return;
            }
            shard.consumption.offsets.changed.wait(seen).await;
        }
    };
    if crate::rt::timeout(timeout, wait).await.is_none() {
        log::info!(
            "shard {}: {}/{queue_id} handed to {} after the revoke timeout, uncommitted below {delivered}",
            shard.id,
            sub.key.group,
            sub.client_id
        );
    }
}
