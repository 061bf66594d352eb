//! What was pushed, remembered in bounded memory: per (group, queue) a ring of the latest
//! pushes, each a range of offsets handed to one member's connection within one millisecond.
//!
//! The push loop records after each batch it hands over: one borrow of a ring this shard
//! alone holds, and either an extension of the newest entry (the next range to the same
//! member in the same millisecond) or one new entry, evicting the oldest when the ring is
//! full. The ring remembers from when its memory is complete (`since_ms`): the shard's start,
//! or the time of the latest entry it let go.

use std::cell::RefCell;
use std::collections::{BTreeMap, VecDeque};
use std::rc::Rc;

use protocol::control::PushLife;

use crate::group::GroupKey;

/// One remembered push.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Push {
    from: u64,
    to: u64,
    at_ms: i64,
    client: Rc<str>,
}

/// The latest pushes of one group on one queue.
#[derive(Debug)]
pub(crate) struct PushRing {
    entries: VecDeque<Push>,
    capacity: usize,
    since_ms: i64,
}

impl PushRing {
    fn new(capacity: usize, since_ms: i64) -> Self {
        Self {
            entries: VecDeque::new(),
            capacity,
            since_ms,
        }
    }

    /// Records that `[from, to)` was handed to `client`'s connection at `at_ms`.
    pub fn record(&mut self, from: u64, to: u64, at_ms: i64, client: &Rc<str>) {
        if from >= to {
            return;
        }
        if let Some(last) = self.entries.back_mut() {
            if last.to == from && last.at_ms == at_ms && Rc::ptr_eq(&last.client, client) {
                last.to = to;
                return;
            }
        }
        if self.entries.len() == self.capacity {
            if let Some(gone) = self.entries.pop_front() {
                self.since_ms = self.since_ms.max(gone.at_ms);
            }
        }
        self.entries.push_back(Push {
            from,
            to,
            at_ms,
            client: client.clone(),
        });
    }

    /// The remembered pushes that carried `offset`, oldest first.
    pub fn covering(&self, offset: u64) -> Vec<PushLife> {
        self.entries
            .iter()
            .filter(|p| p.from <= offset && offset < p.to)
            .map(|p| PushLife {
                client_id: p.client.to_string(),
                at_ms: p.at_ms,
                from_offset: p.from,
                to_offset: p.to,
            })
            .collect()
    }

    /// Every push from this time on is remembered.
    pub fn since_ms(&self) -> i64 {
        self.since_ms
    }
}

/// A ring as the push loop holds it.
pub(crate) type PushLog = Rc<RefCell<PushRing>>;

/// Every ring of the shard, by group and queue; rings live as long as their topic (a group
/// that left keeps its history for traces), so their number is bounded like the committed
/// offsets: one per (group, queue) the shard ever pushed.
pub(crate) struct Pushes {
    capacity: usize,
    started_ms: i64,
    rings: RefCell<BTreeMap<GroupKey, BTreeMap<u32, PushLog>>>,
}

impl Pushes {
    /// Rings of `capacity` entries (0: nothing is remembered); memory complete from
    /// `started_ms`.
    pub fn new(capacity: usize, started_ms: i64) -> Self {
        Self {
            capacity,
            started_ms,
            rings: RefCell::new(BTreeMap::new()),
        }
    }

    /// The ring of `key` on `queue_id`, made on first use; `None` when nothing is remembered.
    pub fn ring(&self, key: &GroupKey, queue_id: u32) -> Option<PushLog> {
        if self.capacity == 0 {
            return None;
        }
        let mut rings = self.rings.borrow_mut();
        let queues = match rings.get_mut(key) {
            Some(queues) => queues,
            None => rings.entry(key.clone()).or_default(),
        };
        Some(
            queues
                .entry(queue_id)
                .or_insert_with(|| {
                    Rc::new(RefCell::new(PushRing::new(self.capacity, self.started_ms)))
                })
                .clone(),
        )
    }

    /// Per group of `topic` with a ring on `queue_id`: its pushes carrying `offset` and from
    /// when its memory is complete.
    pub fn carrying(
        &self,
        topic: &str,
        queue_id: u32,
        offset: u64,
    ) -> Vec<(String, Vec<PushLife>, i64)> {
        let rings = self.rings.borrow();
        crate::group::of_topic(&rings, topic)
            .filter_map(|(key, queues)| {
                let ring = queues.get(&queue_id)?.borrow();
                Some((key.group.clone(), ring.covering(offset), ring.since_ms()))
            })
            .collect()
    }

    /// From when a group with no ring on a queue has its pushes remembered: the shard's
    /// start; `i64::MAX` (never) when the shard remembers no pushes.
    pub fn started_ms(&self) -> i64 {
        if self.capacity == 0 {
            i64::MAX
        } else {
            self.started_ms
        }
    }

    /// Forgets a deleted topic's rings.
    pub fn drop_topic(&self, topic: &str) {
        self.rings.borrow_mut().retain(|key, _| key.topic != topic);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contiguous_pushes_in_one_millisecond_to_one_member_share_an_entry() {
        let (a, b): (Rc<str>, Rc<str>) = (Rc::from("a"), Rc::from("b"));
        let mut ring = PushRing::new(2, 100);
        ring.record(0, 4, 200, &a);
        ring.record(4, 6, 200, &a);
        assert_eq!(ring.entries.len(), 1);
        assert_eq!(ring.covering(5)[0].to_offset, 6);
        ring.record(6, 8, 201, &a);
        assert_eq!(ring.entries.len(), 2);
        assert_eq!(ring.since_ms(), 100);
        // A third entry evicts the oldest: from then on, memory is complete from its time.
        ring.record(0, 8, 202, &b);
        assert_eq!(ring.since_ms(), 200);
        assert!(ring.covering(2).iter().all(|p| p.client_id == "b"));
        let redelivered = ring.covering(7);
        assert_eq!(redelivered.len(), 2, "{redelivered:?}");
        assert_eq!((redelivered[0].at_ms, redelivered[1].at_ms), (201, 202));
        ring.record(3, 3, 203, &b);
        assert_eq!(ring.entries.len(), 2, "an empty range is no push");
    }

    #[test]
    fn nothing_is_remembered_with_a_capacity_of_zero() {
        let key = GroupKey {
            topic: "A10-1".into(),
            group: "g".into(),
        };
        assert!(Pushes::new(0, 0).ring(&key, 0).is_none());
        let pushes = Pushes::new(4, 7);
        let ring = pushes.ring(&key, 1).unwrap();
        ring.borrow_mut().record(0, 2, 9, &Rc::from("c"));
        assert!(Rc::ptr_eq(&ring, &pushes.ring(&key, 1).unwrap()));
        let carrying = pushes.carrying("A10-1", 1, 1);
        assert_eq!(carrying.len(), 1);
        assert_eq!(
            (carrying[0].0.as_str(), carrying[0].1.len(), carrying[0].2),
            ("g", 1, 7)
        );
        assert!(pushes.carrying("A10-2", 1, 1).is_empty());
        pushes.drop_topic("A10-1");
        assert!(pushes.carrying("A10-1", 1, 1).is_empty());
    }
}
