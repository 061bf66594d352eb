//! Redeliveries: records pushed to a consumer group again after they had been pushed to it
//! once.
//!
//! A queue's push to a clustering group starts from the group's committed offset whenever
//! its push task starts again: a consumer that reconnects or rejoins, a rebalance that moves
//! the queue to another member, a broker restart. What was pushed after the last commit is
//! pushed again (at-least-once). Each queue keeps, per clustering group, how far any push of
//! the group reached ([`Delivered`]); a pushed batch's records below that are counted as
//! redelivered. The state lives on the queue, which the owning shard alone touches, and
//! outlives the group's members leaving, so a group whose only consumer reconnects counts
//! what it is sent again. It starts at zero when the broker starts: records redelivered
//! after a restart are not counted.
//!
//! Broadcast subscriptions are left out, as for lag: their offsets are kept per client
//! (`group/client`), so counting them would need a label per client.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::rc::Rc;

/// How far one clustering group was pushed on one queue, and what it was pushed again.
#[derive(Default)]
pub(crate) struct Delivered {
    /// Offset after the furthest record pushed to the group.
    end: Cell<u64>,
    /// Records pushed again below `end`.
    again: Cell<u64>,
}

impl Delivered {
    /// The records `base..next` of a batch were pushed to a consumer that reads from `from`
    /// (it skips the records of the batch below that).
    pub fn pushed(&self, from: u64, base: u64, next: u64) {
        let again = next.min(self.end.get()).saturating_sub(base.max(from));
        self.again.set(self.again.get() + again);
        self.end.set(self.end.get().max(next));
    }
}

/// Per clustering group that consumed the queue on this broker: what it was pushed.
#[derive(Default)]
pub(crate) struct Deliveries {
    groups: RefCell<BTreeMap<String, Rc<Delivered>>>,
}

impl Deliveries {
    /// The state of `group`, kept for its push tasks to record into.
    pub fn of(&self, group: &str) -> Rc<Delivered> {
        let mut groups = self.groups.borrow_mut();
        if let Some(delivered) = groups.get(group) {
            return delivered.clone();
        }
        let delivered = Rc::new(Delivered::default());
        groups.insert(group.to_owned(), delivered.clone());
        delivered
    }

    /// Records redelivered so far, by group.
    pub fn redelivered(&self) -> Vec<(String, u64)> {
        (self.groups.borrow().iter())
            .map(|(group, delivered)| (group.clone(), delivered.again.get()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_pushed_again_below_the_furthest_push_count_once_each() {
        let deliveries = Deliveries::default();
        let g = deliveries.of("g");
        g.pushed(0, 0, 10);
        g.pushed(10, 10, 20);
        assert_eq!(deliveries.redelivered(), [("g".to_owned(), 0)]);
        // Committed 5: the consumer restarts there, sent the batch 0..10 again (it skips
        // 0..5) and 10..20, then new records 20..25.
        let again = deliveries.of("g");
        again.pushed(5, 0, 10);
        again.pushed(10, 10, 20);
        again.pushed(20, 20, 25);
        assert_eq!(deliveries.redelivered(), [("g".to_owned(), 15)]);
        assert_eq!(deliveries.of("h").again.get(), 0);
    }
}
