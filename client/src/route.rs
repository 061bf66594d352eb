//! Topic routes: fetched from any nameserver that answers, cached, refreshed periodically and
//! after errors; and the choice of a queue to send to.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use protocol::codes::{Command, Status};
use protocol::control::{self, QueueRoute, TopicName, TopicRoute};

use crate::error::{ClientError, Result};
use crate::net::{PeerKind, Pool};

/// One queue of a topic, as a send target.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct QueueTarget {
    /// The broker id.
    pub broker_id: String,
    /// `host:port` of the shard owning the queue.
    pub endpoint: String,
    /// The queue id on that broker.
    pub queue_id: u32,
}

impl QueueTarget {
    fn of(route: &QueueRoute) -> Self {
        Self {
            broker_id: route.broker_id.clone(),
            endpoint: endpoint_of(route),
            queue_id: route.queue_id,
        }
    }
}

/// `host:port` of a queue's owning shard.
pub(crate) fn endpoint_of(route: &QueueRoute) -> String {
    format!("{}:{}", route.address, route.shard_port)
}

/// A fetched route, with its queues sorted so every client orders them alike.
#[derive(Debug)]
pub(crate) struct CachedRoute {
    pub(crate) route: TopicRoute,
    fetched: Instant,
    round_robin: AtomicUsize,
}

impl CachedRoute {
    fn new(mut route: TopicRoute) -> Self {
        route.queues.sort_by(|a, b| {
            (&a.broker_id, a.queue_id, a.shard_port).cmp(&(&b.broker_id, b.queue_id, b.shard_port))
        });
        Self {
            route,
            fetched: Instant::now(),
            round_robin: AtomicUsize::new(0),
        }
    }

    /// The distinct shard endpoints holding readable queues: where a consumer subscribes.
    pub(crate) fn read_endpoints(&self) -> Vec<String> {
        let mut endpoints: Vec<String> = self
            .route
            .queues
            .iter()
            .filter(|q| q.readable)
            .map(endpoint_of)
            .collect();
        endpoints.sort();
        endpoints.dedup();
        endpoints
    }

    /// Picks a queue to send to; see [`choose_queue`].
    pub(crate) fn choose(
        &self,
        key: Option<&[u8]>,
        own_area: &str,
        isolation: &Isolation,
        avoid_broker: Option<&str>,
    ) -> Option<QueueTarget> {
        let turn = self.round_robin.fetch_add(1, Ordering::Relaxed);
        choose_queue(
            &self.route.queues,
            &Choice {
                key,
                turn,
                own_area,
                avoid_broker,
            },
            &|q| isolation.is_isolated(q),
        )
        .map(QueueTarget::of)
    }
}

/// What a queue choice depends on besides the route.
pub(crate) struct Choice<'a> {
    /// Hash this key onto a queue; round robin when `None`.
    pub(crate) key: Option<&'a [u8]>,
    /// The round-robin turn.
    pub(crate) turn: usize,
    /// Queues of this area are preferred (nearby send).
    pub(crate) own_area: &'a str,
    /// A broker that just failed, avoided when any other is available.
    pub(crate) avoid_broker: Option<&'a str>,
}

/// Chooses among the writable queues of `queues` (sorted):
/// 1. own-area queues when there is one, else all (nearby send, DESIGN §6);
/// 2. among them, those neither isolated nor on `avoid_broker`, relaxing first the broker and
///    then isolation when nothing is left, so a send is always attempted somewhere;
/// 3. by key hash over the area's writable queues (stable while the route is), moving on to the
///    next usable queue when that one is unusable; else round robin by `turn`.
pub(crate) fn choose_queue<'q>(
    queues: &'q [QueueRoute],
    choice: &Choice<'_>,
    is_isolated: &dyn Fn(&QueueRoute) -> bool,
) -> Option<&'q QueueRoute> {
    let writable: Vec<&QueueRoute> = queues.iter().filter(|q| q.writable).collect();
    let local: Vec<&QueueRoute> = writable
        .iter()
        .copied()
        .filter(|q| q.area == choice.own_area)
        .collect();
    let pool = if local.is_empty() { writable } else { local };
    if pool.is_empty() {
        return None;
    }
    let avoided = |q: &QueueRoute| choice.avoid_broker == Some(q.broker_id.as_str());
    let filters: [&dyn Fn(&QueueRoute) -> bool; 3] = [
        &|q| !is_isolated(q) && !avoided(q),
        &|q| !is_isolated(q),
        &|_| true,
    ];
    let start = match choice.key {
        Some(key) if !key.is_empty() => (fnv1a64(key) % pool.len() as u64) as usize,
        _ => choice.turn % pool.len(),
    };
    filters.iter().find_map(|usable| {
        (0..pool.len())
            .map(|i| pool[(start + i) % pool.len()])
            .find(|q| usable(q))
    })
}

/// FNV-1a, 64-bit: a stable hash for key → queue, the same in every client language.
pub(crate) fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &b| {
        (hash ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// Queues a producer avoids for a while after a send to them failed (DESIGN §6).
#[derive(Debug, Default)]
pub(crate) struct Isolation {
    until: Mutex<HashMap<(String, u32), Instant>>,
}

impl Isolation {
    /// Avoids `target` for `period`.
    pub(crate) fn isolate(&self, target: &QueueTarget, period: Duration) {
        let mut until = self.until.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        until.retain(|_, t| *t > now);
        until.insert((target.broker_id.clone(), target.queue_id), now + period);
    }

    /// Lifts the isolation of `target`, after a send to it succeeded.
    pub(crate) fn lift(&self, target: &QueueTarget) {
        let mut until = self.until.lock().unwrap_or_else(PoisonError::into_inner);
        if !until.is_empty() {
            until.remove(&(target.broker_id.clone(), target.queue_id));
        }
    }

    fn is_isolated(&self, queue: &QueueRoute) -> bool {
        let until = self.until.lock().unwrap_or_else(PoisonError::into_inner);
        !until.is_empty()
            && until
                .get(&(queue.broker_id.clone(), queue.queue_id))
                .is_some_and(|t| *t > Instant::now())
    }
}

/// Routes by topic, fetched from the nameservers.
pub(crate) struct RouteCache {
    nameservers: Vec<String>,
    request_timeout: Duration,
    refresh_interval: Duration,
    routes: Mutex<HashMap<String, Arc<CachedRoute>>>,
    /// The nameserver to ask first: the one that answered last.
    preferred: AtomicUsize,
}

impl RouteCache {
    pub(crate) fn new(
        nameservers: Vec<String>,
        request_timeout: Duration,
        refresh_interval: Duration,
    ) -> Self {
        Self {
            nameservers,
            request_timeout,
            refresh_interval,
            routes: Mutex::default(),
            preferred: AtomicUsize::new(0),
        }
    }

    /// The cached route of `topic`, fetched when absent or older than the refresh interval.
    /// A failed refresh keeps serving the old route.
    pub(crate) fn get(&self, pool: &Pool, topic: &str) -> Result<Arc<CachedRoute>> {
        let cached = self
            .routes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(topic)
            .cloned();
        match cached {
            Some(route) if route.fetched.elapsed() < self.refresh_interval => Ok(route),
            Some(stale) => Ok(self.refresh(pool, topic).unwrap_or(stale)),
            None => self.refresh(pool, topic),
        }
    }

    /// Fetches `topic`'s route now, from the first nameserver that answers.
    pub(crate) fn refresh(&self, pool: &Pool, topic: &str) -> Result<Arc<CachedRoute>> {
        let route = self.fetch(pool, topic)?;
        let cached = Arc::new(CachedRoute::new(route));
        self.routes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(topic.to_owned(), cached.clone());
        Ok(cached)
    }

    /// Marks `topic`'s route stale so the next use refetches it (after a send error).
    pub(crate) fn invalidate(&self, topic: &str) {
        self.routes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(topic);
    }

    /// Topics currently cached; the maintenance thread refreshes them.
    pub(crate) fn topics(&self) -> Vec<String> {
        self.routes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .keys()
            .cloned()
            .collect()
    }

    fn fetch(&self, pool: &Pool, topic: &str) -> Result<TopicRoute> {
        let body = control::encode(&TopicName {
            topic: topic.to_owned(),
        })
        .map_err(|e| ClientError::control("(local)", e))?;
        let count = self.nameservers.len();
        if count == 0 {
            return Err(ClientError::InvalidArgument(
                "no nameserver configured".into(),
            ));
        }
        let first = self.preferred.load(Ordering::Relaxed);
        let mut last_error = None;
        for i in 0..count {
            let index = (first + i) % count;
            let endpoint = &self.nameservers[index];
            let answer = pool
                .get(endpoint, PeerKind::Nameserver)
                .and_then(|conn| conn.call(Command::TopicRoute, &[], &body, self.request_timeout))
                .and_then(|frame| {
                    control::decode::<TopicRoute>(&frame.body)
                        .map_err(|e| ClientError::control(endpoint, e))
                });
            match answer {
                Ok(route) => {
                    self.preferred.store(index, Ordering::Relaxed);
                    if route.queues.is_empty() {
                        return Err(ClientError::NoRoute {
                            topic: topic.to_owned(),
                        });
                    }
                    return Ok(route);
                }
                Err(ClientError::Status {
                    status: Status::UnknownTopic,
                    ..
                }) => {
                    last_error = Some(ClientError::NoRoute {
                        topic: topic.to_owned(),
                    })
                }
                Err(e) => {
                    log::debug!("nameserver {endpoint}: route of {topic}: {e}");
                    if last_error.is_none() {
                        last_error = Some(e);
                    }
                }
            }
        }
        Err(last_error.unwrap_or(ClientError::NoRoute {
            topic: topic.to_owned(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queue(broker: &str, area: &str, queue_id: u32, writable: bool) -> QueueRoute {
        QueueRoute {
            broker_id: broker.into(),
            cluster: "c".into(),
            area: area.into(),
            address: "127.0.0.1".into(),
            shard_port: 1000 + queue_id as u16,
            queue_id,
            readable: true,
            writable,
        }
    }

    fn choice<'a>(key: Option<&'a [u8]>, turn: usize, avoid: Option<&'a str>) -> Choice<'a> {
        Choice {
            key,
            turn,
            own_area: "A10",
            avoid_broker: avoid,
        }
    }

    #[test]
    fn round_robin_covers_writable_local_queues() {
        let queues = [
            queue("a", "A10", 0, true),
            queue("a", "A10", 1, false),
            queue("a", "A10", 2, true),
            queue("b", "B20", 0, true),
        ];
        let picked: Vec<u32> = (0..4)
            .map(|turn| {
                choose_queue(&queues, &choice(None, turn, None), &|_| false)
                    .unwrap()
                    .queue_id
            })
            .collect();
        assert_eq!(picked, [0, 2, 0, 2], "only writable own-area queues");
    }

    #[test]
    fn other_areas_are_used_when_the_own_area_has_none() {
        let queues = [queue("b", "B20", 0, true), queue("a", "A10", 1, false)];
        let q = choose_queue(&queues, &choice(None, 0, None), &|_| false).unwrap();
        assert_eq!(q.broker_id, "b");
        assert!(
            choose_queue(
                &[queue("a", "A10", 0, false)],
                &choice(None, 0, None),
                &|_| false
            )
            .is_none()
        );
    }

    #[test]
    fn equal_keys_pick_equal_queues_and_failures_move_on() {
        let queues: Vec<_> = (0..4).map(|i| queue("a", "A10", i, true)).collect();
        let key = &b"order-42"[..];
        let first = choose_queue(&queues, &choice(Some(key), 0, None), &|_| false).unwrap();
        let again = choose_queue(&queues, &choice(Some(key), 9, None), &|_| false).unwrap();
        assert_eq!(first.queue_id, again.queue_id);
        assert_eq!(
            first.queue_id as u64,
            fnv1a64(key) % 4,
            "the hash is FNV-1a over the sorted writable queues"
        );
        let isolated = first.queue_id;
        let moved = choose_queue(&queues, &choice(Some(key), 0, None), &|q| {
            q.queue_id == isolated
        })
        .unwrap();
        assert_eq!(moved.queue_id, (isolated + 1) % 4);
    }

    #[test]
    fn a_failed_broker_is_avoided_unless_it_is_the_only_one() {
        let queues = [queue("a", "A10", 0, true), queue("b", "A10", 1, true)];
        for turn in 0..4 {
            let q = choose_queue(&queues, &choice(None, turn, Some("a")), &|_| false).unwrap();
            assert_eq!(q.broker_id, "b");
        }
        let only_a = [queue("a", "A10", 0, true)];
        let q = choose_queue(&only_a, &choice(None, 0, Some("a")), &|_| true).unwrap();
        assert_eq!(
            q.broker_id, "a",
            "everything isolated still sends somewhere"
        );
    }

    #[test]
    fn isolation_expires_and_lifts() {
        let isolation = Isolation::default();
        let q = queue("a", "A10", 0, true);
        let target = QueueTarget::of(&q);
        isolation.isolate(&target, Duration::from_secs(60));
        assert!(isolation.is_isolated(&q));
        isolation.lift(&target);
        assert!(!isolation.is_isolated(&q));
        isolation.isolate(&target, Duration::ZERO);
        assert!(!isolation.is_isolated(&q));
    }

    #[test]
    fn cached_routes_sort_and_list_read_endpoints() {
        let mut b = queue("b", "A10", 0, true);
        b.readable = false;
        let route = CachedRoute::new(TopicRoute {
            topic: "A10-1".into(),
            queues: vec![b, queue("a", "A10", 1, true), queue("a", "A10", 0, true)],
        });
        let ids: Vec<_> = route
            .route
            .queues
            .iter()
            .map(|q| (q.broker_id.as_str(), q.queue_id))
            .collect();
        assert_eq!(ids, [("a", 0), ("a", 1), ("b", 0)]);
        assert_eq!(route.read_endpoints(), ["127.0.0.1:1000", "127.0.0.1:1001"]);
    }
}
