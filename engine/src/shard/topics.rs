//! The topics of one shard: each topic's configuration as last applied and the queues of it
//! this shard owns (their logs), behind operations; nothing outside borrows the map.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use protocol::control::{RedirectRule, TopicConfig};

use crate::config::BrokerConfig;
use crate::queue::Queue;

/// A topic as one shard sees it: its configuration and the queues this shard owns.
#[derive(Clone)]
pub(crate) struct TopicEntry {
    /// The topic's name, shared by its queues and pushes.
    pub name: Rc<str>,
    /// The configuration, as last applied.
    pub config: TopicConfig,
    /// Index = queue id; `Some` for the queues this shard owns.
    pub queues: Vec<Option<Rc<Queue>>>,
}

/// The dark-launch rules of `config`, copied out of the borrow; `None` (no copy) for the
/// usual topic without any.
pub(crate) fn redirects_of(config: &TopicConfig) -> Option<Vec<RedirectRule>> {
    (!config.redirects.is_empty()).then(|| config.redirects.clone())
}

/// The topics a shard knows, by name.
#[derive(Default)]
pub(crate) struct Topics {
    entries: RefCell<HashMap<String, TopicEntry>>,
}

impl Topics {
    /// Adds (or replaces) the entry of its topic.
    pub fn insert(&self, entry: TopicEntry) {
        let name = entry.config.topic.clone();
        self.entries.borrow_mut().insert(name, entry);
    }

    /// Removes `topic`'s entry; its queues are the caller's to close.
    pub fn remove(&self, topic: &str) -> Option<TopicEntry> {
        self.entries.borrow_mut().remove(topic)
    }

    /// Removes every entry (the shard is closing).
    pub fn take_all(&self) -> Vec<TopicEntry> {
        self.entries.borrow_mut().drain().map(|(_, t)| t).collect()
    }

    /// A copy of `topic`'s entry (its queues shared).
    pub fn entry(&self, topic: &str) -> Option<TopicEntry> {
        self.entries.borrow().get(topic).cloned()
    }

    /// How many topics the shard knows.
    pub fn len(&self) -> usize {
        self.entries.borrow().len()
    }

    /// `read(config)` of `topic`, if the shard knows it.
    pub fn with_config<R>(&self, topic: &str, read: impl FnOnce(&TopicConfig) -> R) -> Option<R> {
        self.entries.borrow().get(topic).map(|t| read(&t.config))
    }

    /// Every topic's configuration.
    pub fn configs(&self) -> Vec<TopicConfig> {
        self.entries
            .borrow()
            .values()
            .map(|t| t.config.clone())
            .collect()
    }

    /// The queue this shard owns, or `None`.
    pub fn queue(&self, topic: &str, queue_id: u32) -> Option<Rc<Queue>> {
        self.entries
            .borrow()
            .get(topic)
            .and_then(|t| t.queues.get(queue_id as usize))
            .and_then(Clone::clone)
    }

    /// Every queue this shard owns.
    pub fn queues(&self) -> Vec<Rc<Queue>> {
        self.entries
            .borrow()
            .values()
            .flat_map(|topic| topic.queues.iter().flatten().cloned())
            .collect()
    }

    /// Owned queue ids of `topic`, ascending; `None` for an unknown topic.
    pub fn owned_queue_ids(&self, topic: &str) -> Option<Vec<u32>> {
        self.entries.borrow().get(topic).map(|t| {
            let ids = (0..t.queues.len() as u32).filter(|&q| t.queues[q as usize].is_some());
            ids.collect()
        })
    }

    /// Owned, readable queue ids of `topic`, ascending. A replicated queue is readable only
    /// where it is led: consumers read the leader, below its commit point.
    pub fn readable_queues(&self, topic: &str) -> Vec<u32> {
        let entries = self.entries.borrow();
        let Some(entry) = entries.get(topic) else {
            return Vec::new();
        };
        let readable = entry.config.read_queue_count as usize;
        entry
            .queues
            .iter()
            .take(readable)
            .enumerate()
            .filter(|(_, q)| {
                q.as_ref().is_some_and(|q| {
                    q.replication()
                        .is_none_or(|replication| replication.leading().is_some())
                })
            })
            .map(|(id, _)| id as u32)
            .collect()
    }
}

/// The entry of `config` on shard `id`: reuses the queues of `previous` that stay, opens the
/// owned queues it lacks. Queues past a shrunk `queue_count` are left to the caller to close.
pub(crate) async fn open_topic(
    config: &BrokerConfig,
    id: usize,
    count: usize,
    topic: &TopicConfig,
    previous: Option<&TopicEntry>,
) -> Result<TopicEntry, crate::log::LogError> {
    let name: Rc<str> = previous.map_or_else(|| Rc::from(topic.topic.as_str()), |p| p.name.clone());
    let mut queues = Vec::with_capacity(topic.queue_count as usize);
    for queue_id in 0..topic.queue_count {
        let kept = previous.and_then(|p| p.queues.get(queue_id as usize).cloned().flatten());
        let queue = match kept {
            Some(queue) => Some(queue),
            None if crate::topic::owner_shard(&topic.topic, queue_id, count) == id => Some(
                Rc::new(Queue::open(config, topic, name.clone(), queue_id).await?),
            ),
            None => None,
        };
        queues.push(queue);
    }
    Ok(TopicEntry {
        name,
        config: topic.clone(),
        queues,
    })
}

/// Flushes a queue's log and closes it if nothing else holds it.
pub(crate) async fn close_queue(shard_id: usize, queue: Rc<Queue>) {
    let name = format!("{}/{}", queue.topic, queue.id);
    // A follower's task holds the queue; it lets go once stopped.
    queue.stop_replication().await;
    queue.close_held().await;
    let result = match Rc::try_unwrap(queue) {
        Ok(queue) => queue.log.close().await,
        Err(queue) => queue.log.flush().await,
    };
    if let Err(e) = result {
        log::error!("shard {shard_id}: closing queue {name}: {e}");
    }
}
