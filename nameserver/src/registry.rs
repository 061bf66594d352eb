//! The broker registry: who is alive, what they hold, and the routes derived from it.
//!
//! Pure data: no sockets, no clock of its own. Every call that depends on time takes a
//! [`Timestamp`], so expiry is tested without waiting. A broker counts as live while its last
//! registration is younger than the expiry; routes and cluster info list live brokers only,
//! so an expired broker stops being routed to at its expiry, even if the periodic
//! [`Registry::sweep`] that removes (and logs) it runs a little later.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use protocol::control::{
    BrokerRegistration, BrokerSummary, ClusterInfo, ControlError, QueueRoute, ReplicaRole,
    TopicInfo, TopicRoute,
};

use protocol::routing::queue_shard;

/// A moment, on the monotonic clock (for expiry) and the wall clock (for reports).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timestamp {
    /// Monotonic time; expiry is judged on it, so wall-clock steps never expire a broker.
    pub mono: Instant,
    /// Wall-clock time, Unix milliseconds; only reported (`last_heartbeat_ms`).
    pub unix_ms: i64,
}

impl Timestamp {
    /// The current time.
    pub fn now() -> Self {
        let unix_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        Self {
            mono: Instant::now(),
            unix_ms,
        }
    }

    /// This moment plus `elapsed`, on both clocks.
    pub fn after(self, elapsed: Duration) -> Self {
        let ms = i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX);
        Self {
            mono: self.mono + elapsed,
            unix_ms: self.unix_ms.saturating_add(ms),
        }
    }
}

/// What a registration changed, for the caller to log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Registered {
    /// The broker was not registered (or had expired).
    New,
    /// The broker refreshed its registration with the same address, ports and topics.
    Refreshed,
    /// The broker was registered but its address, ports, cluster, area or topics changed.
    Changed,
}

/// A broker dropped by [`Registry::sweep`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Expired {
    /// Its id.
    pub broker_id: String,
    /// Its cluster.
    pub cluster: String,
    /// Its address.
    pub address: String,
    /// How long since its last registration.
    pub silent_for: Duration,
}

/// One registered broker.
#[derive(Debug)]
struct BrokerEntry {
    registration: BrokerRegistration,
    /// The registration's topics by name, for route lookups that do not scan every topic.
    topics: HashMap<String, usize>,
    last_seen: Timestamp,
}

impl BrokerEntry {
    fn is_live(&self, now: Instant, expiry: Duration) -> bool {
        now.saturating_duration_since(self.last_seen.mono) < expiry
    }

    fn topic(&self, topic: &str) -> Option<&TopicInfo> {
        let &index = self.topics.get(topic)?;
        self.registration.topics.get(index)
    }
}

/// Every broker that has registered and not yet expired or unregistered, by broker id.
#[derive(Debug)]
pub struct Registry {
    brokers: BTreeMap<String, BrokerEntry>,
    expiry: Duration,
}

impl Registry {
    /// An empty registry whose brokers expire `expiry` after their last registration.
    pub fn new(expiry: Duration) -> Self {
        Self {
            brokers: BTreeMap::new(),
            expiry,
        }
    }

    /// The expiry brokers are held to.
    pub fn expiry(&self) -> Duration {
        self.expiry
    }

    /// Validates `registration` and records it, replacing the broker's previous one.
    ///
    /// Beyond [`BrokerRegistration::validate`], refuses a topic listed twice (its routes
    /// would be ambiguous) and a shard port of 0 (no client can connect to it).
    pub fn register(
        &mut self,
        registration: BrokerRegistration,
        now: Timestamp,
    ) -> Result<Registered, ControlError> {
        registration.validate()?;
        if registration.shard_ports.contains(&0) {
            return Err(ControlError::Invalid {
                field: "shard_ports",
                reason: "port 0 cannot be connected to",
            });
        }
        let mut topics = HashMap::with_capacity(registration.topics.len());
        for (index, info) in registration.topics.iter().enumerate() {
            if topics.insert(info.topic.clone(), index).is_some() {
                return Err(ControlError::Invalid {
                    field: "topics",
                    reason: "a topic is listed more than once",
                });
            }
        }
        let outcome = match self.brokers.get(&registration.broker_id) {
            Some(old) if old.is_live(now.mono, self.expiry) => {
                if same_routes(&old.registration, &registration) {
                    Registered::Refreshed
                } else {
                    Registered::Changed
                }
            }
            _ => Registered::New,
        };
        let entry = BrokerEntry {
            registration,
            topics,
            last_seen: now,
        };
        self.brokers
            .insert(entry.registration.broker_id.clone(), entry);
        Ok(outcome)
    }

    /// Removes a broker; returns whether it was registered.
    pub fn unregister(&mut self, broker_id: &str) -> bool {
        self.brokers.remove(broker_id).is_some()
    }

    /// Every queue of `topic` on every live broker holding it, ordered by broker id then queue
    /// id; `None` when no live broker holds the topic.
    pub fn topic_route(&self, topic: &str, now: Instant) -> Option<TopicRoute> {
        let mut queues = Vec::new();
        // A replicated queue is routed once, to the broker that reports leading it in the
        // highest epoch: during a failover a deposed leader may still report its old epoch.
        let mut leaders: BTreeMap<u32, (u64, QueueRoute)> = BTreeMap::new();
        let mut found = false;
        for entry in self.live(now) {
            let Some(info) = entry.topic(topic) else {
                continue;
            };
            found = true;
            let reg = &entry.registration;
            let route = |queue_id: u32| {
                let shard = queue_shard(topic, queue_id, reg.shard_ports.len());
                QueueRoute {
                    broker_id: reg.broker_id.clone(),
                    cluster: reg.cluster.clone(),
                    area: reg.area.clone(),
                    address: reg.address.clone(),
                    // Validated non-empty, so the shard index is in range.
                    shard_port: reg.shard_ports.get(shard).copied().unwrap_or_default(),
                    queue_id,
                    readable: queue_id < info.read_queue_count,
                    writable: queue_id < info.write_queue_count,
                }
            };
            if info.replicas > 1 {
                for r in &info.replication {
                    if r.role != ReplicaRole::Leader || r.queue_id >= info.queue_count {
                        continue;
                    }
                    let newer = leaders
                        .get(&r.queue_id)
                        .is_none_or(|(epoch, _)| r.epoch > *epoch);
                    if newer {
                        leaders.insert(r.queue_id, (r.epoch, route(r.queue_id)));
                    }
                }
                continue;
            }
            queues.extend((0..info.queue_count).map(route));
        }
        queues.extend(leaders.into_values().map(|(_, route)| route));
        found.then(|| TopicRoute {
            topic: topic.to_owned(),
            queues,
        })
    }

    /// Every live broker's last registration.
    pub fn live_registrations(&self, now: Instant) -> Vec<BrokerRegistration> {
        self.live(now).map(|e| e.registration.clone()).collect()
    }

    /// A summary of every live broker, ordered by broker id.
    pub fn cluster_info(&self, now: Instant) -> ClusterInfo {
        let brokers = self
            .live(now)
            .map(|entry| {
                let reg = &entry.registration;
                BrokerSummary {
                    broker_id: reg.broker_id.clone(),
                    cluster: reg.cluster.clone(),
                    area: reg.area.clone(),
                    address: reg.address.clone(),
                    shard_ports: reg.shard_ports.clone(),
                    topic_count: u32::try_from(reg.topics.len()).unwrap_or(u32::MAX),
                    last_heartbeat_ms: entry.last_seen.unix_ms,
                }
            })
            .collect();
        ClusterInfo { brokers }
    }

    /// Removes every broker whose last registration is at least the expiry old.
    pub fn sweep(&mut self, now: Instant) -> Vec<Expired> {
        let expiry = self.expiry;
        let mut expired = Vec::new();
        self.brokers.retain(|_, entry| {
            if entry.is_live(now, expiry) {
                return true;
            }
            let reg = &entry.registration;
            expired.push(Expired {
                broker_id: reg.broker_id.clone(),
                cluster: reg.cluster.clone(),
                address: reg.address.clone(),
                silent_for: now.saturating_duration_since(entry.last_seen.mono),
            });
            false
        });
        expired
    }

    /// Number of brokers recorded, live or awaiting the sweep.
    pub fn len(&self) -> usize {
        self.brokers.len()
    }

    /// True when no broker is recorded.
    pub fn is_empty(&self) -> bool {
        self.brokers.is_empty()
    }

    fn live(&self, now: Instant) -> impl Iterator<Item = &BrokerEntry> {
        let expiry = self.expiry;
        self.brokers
            .values()
            .filter(move |entry| entry.is_live(now, expiry))
    }
}

/// True when two registrations of one broker route clients identically (queue depths aside,
/// which change on every registration).
fn same_routes(a: &BrokerRegistration, b: &BrokerRegistration) -> bool {
    fn topic_shape(t: &TopicInfo) -> (&str, u32, u32, u32) {
        (
            t.topic.as_str(),
            t.queue_count,
            t.read_queue_count,
            t.write_queue_count,
        )
    }
    a.cluster == b.cluster
        && a.area == b.area
        && a.address == b.address
        && a.shard_ports == b.shard_ports
        && a.topics
            .iter()
            .map(topic_shape)
            .eq(b.topics.iter().map(topic_shape))
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::control::FlushMode;

    const EXPIRY: Duration = Duration::from_millis(9_000);

    fn topic(name: &str, queues: u32, read: u32, write: u32) -> TopicInfo {
        TopicInfo {
            topic: name.into(),
            queue_count: queues,
            read_queue_count: read,
            write_queue_count: write,
            flush_mode: FlushMode::Async,
            max_queue_depth: 500,
            queue_depths: vec![0; queues as usize],
            ..TopicInfo::default()
        }
    }

    fn broker(id: &str, ports: &[u16], topics: Vec<TopicInfo>) -> BrokerRegistration {
        BrokerRegistration {
            broker_id: id.into(),
            cluster: "c1".into(),
            area: "A10".into(),
            address: "127.0.0.1".into(),
            shard_ports: ports.to_vec(),
            topics,
        }
    }

    #[test]
    fn routes_list_every_queue_with_owner_port_and_flags() {
        let now = Timestamp::now();
        let mut registry = Registry::new(EXPIRY);
        let reg = broker("b", &[7001, 7002, 7003], vec![topic("A10-1", 4, 3, 2)]);
        assert_eq!(registry.register(reg, now).unwrap(), Registered::New);
        let route = registry.topic_route("A10-1", now.mono).unwrap();
        assert_eq!(route.topic, "A10-1");
        assert_eq!(route.queues.len(), 4);
        for (q, queue) in route.queues.iter().enumerate() {
            let q = q as u32;
            assert_eq!(queue.queue_id, q);
            assert_eq!(queue.readable, q < 3);
            assert_eq!(queue.writable, q < 2);
            let shard = queue_shard("A10-1", q, 3);
            assert_eq!(queue.shard_port, [7001, 7002, 7003][shard]);
        }
        assert_eq!(registry.topic_route("A10-2", now.mono), None);
    }

    #[test]
    fn a_replicated_queue_is_routed_to_the_leader_of_the_highest_epoch() {
        use protocol::control::{Acks, QueueReplication};
        let now = Timestamp::now();
        let mut registry = Registry::new(EXPIRY);
        let replicated = |roles: &[(u32, u64, ReplicaRole)]| {
            let mut info = topic("A10-9", 2, 2, 2);
            info.replicas = 3;
            info.acks = Acks::All;
            info.replication = roles
                .iter()
                .map(|&(queue_id, epoch, role)| QueueReplication {
                    queue_id,
                    epoch,
                    role,
                    ..QueueReplication::default()
                })
                .collect();
            info
        };
        use ReplicaRole::{Follower, Leader};
        // a led queue 0 in epoch 1 and still says so (partitioned); b leads it in epoch 2.
        let a = replicated(&[(0, 1, Leader), (1, 1, Follower)]);
        let b = replicated(&[(0, 2, Leader), (1, 1, Leader)]);
        let c = replicated(&[(0, 2, Follower), (1, 1, Follower)]);
        registry
            .register(broker("a", &[7001], vec![a]), now)
            .unwrap();
        registry
            .register(broker("b", &[7002], vec![b]), now)
            .unwrap();
        registry
            .register(broker("c", &[7003], vec![c]), now)
            .unwrap();
        let route = registry.topic_route("A10-9", now.mono).unwrap();
        let routed: Vec<(u32, &str)> = route
            .queues
            .iter()
            .map(|q| (q.queue_id, q.broker_id.as_str()))
            .collect();
        assert_eq!(routed, [(0, "b"), (1, "b")]);
    }

    #[test]
    fn brokers_expire_at_the_expiry_and_the_sweep_reports_them() {
        let t0 = Timestamp::now();
        let mut registry = Registry::new(EXPIRY);
        registry
            .register(broker("a", &[1], vec![topic("A10-1", 1, 1, 1)]), t0)
            .unwrap();
        let t1 = t0.after(Duration::from_millis(5_000));
        registry
            .register(broker("b", &[2], vec![topic("A10-1", 1, 1, 1)]), t1)
            .unwrap();
        let just_before = t0.after(EXPIRY - Duration::from_millis(1));
        assert_eq!(registry.cluster_info(just_before.mono).brokers.len(), 2);
        assert!(registry.sweep(just_before.mono).is_empty());
        let at_expiry = t0.after(EXPIRY);
        let route = registry.topic_route("A10-1", at_expiry.mono).unwrap();
        assert_eq!(
            route.queues.len(),
            1,
            "expired broker a is no longer routed"
        );
        assert_eq!(route.queues[0].broker_id, "b");
        let expired = registry.sweep(at_expiry.mono);
        assert_eq!(expired.len(), 1);
        assert_eq!(expired[0].broker_id, "a");
        assert_eq!(expired[0].silent_for, EXPIRY);
        assert_eq!(registry.len(), 1);
        let reg = broker("a", &[1], vec![topic("A10-1", 1, 1, 1)]);
        assert_eq!(registry.register(reg, at_expiry).unwrap(), Registered::New);
    }

    #[test]
    fn reregistration_reports_refresh_or_change() {
        let now = Timestamp::now();
        let mut registry = Registry::new(EXPIRY);
        let mut reg = broker("a", &[1], vec![topic("A10-1", 2, 2, 2)]);
        registry.register(reg.clone(), now).unwrap();
        reg.topics[0].queue_depths = vec![5, 9];
        assert_eq!(
            registry.register(reg.clone(), now).unwrap(),
            Registered::Refreshed
        );
        reg.topics[0].write_queue_count = 1;
        assert_eq!(
            registry.register(reg.clone(), now).unwrap(),
            Registered::Changed
        );
        let info = registry.cluster_info(now.mono);
        assert_eq!(info.brokers.len(), 1);
        assert_eq!(info.brokers[0].last_heartbeat_ms, now.unix_ms);
        assert!(registry.unregister("a"));
        assert!(!registry.unregister("a"));
        assert!(registry.is_empty());
    }

    #[test]
    fn invalid_registrations_are_refused_and_change_nothing() {
        let now = Timestamp::now();
        let mut registry = Registry::new(EXPIRY);
        let dup = broker(
            "a",
            &[1],
            vec![topic("A10-1", 1, 1, 1), topic("A10-1", 1, 1, 1)],
        );
        let err = registry.register(dup, now).unwrap_err();
        assert!(err.to_string().contains("topics"), "{err}");
        let err = registry
            .register(broker("a", &[0], vec![]), now)
            .unwrap_err();
        assert!(err.to_string().contains("shard_ports"), "{err}");
        let err = registry
            .register(broker("a", &[], vec![]), now)
            .unwrap_err();
        assert!(err.to_string().contains("shard_ports"), "{err}");
        let mut bad_area = broker("a", &[1], vec![]);
        bad_area.area = "a10".into();
        assert!(matches!(
            registry.register(bad_area, now),
            Err(ControlError::Name(_))
        ));
        assert!(registry.is_empty());
    }
}
