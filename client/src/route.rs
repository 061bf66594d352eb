//! Topic routes: fetched from any nameserver that answers, cached, refreshed periodically and
//! after errors; and the choice of a queue to send to (nearby first, around isolated queues).

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use protocol::codes::{Command, Status};
use protocol::control::{self, QueueRoute, TopicName, TopicRoute};

use crate::config::ClientConfig;
use crate::error::{ClientError, Result};
use crate::isolation::QueueIsolation;
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

    /// The read endpoints of the broker that owns `endpoint` (all its shards in this route);
    /// just `endpoint` when the route does not name it.
    pub(crate) fn broker_read_endpoints(&self, endpoint: &str) -> Vec<String> {
        let broker = self
            .route
            .queues
            .iter()
            .find(|q| endpoint_of(q) == endpoint)
            .map(|q| q.broker_id.as_str());
        let mut endpoints: Vec<String> = self
            .route
            .queues
            .iter()
            .filter(|q| q.readable && Some(q.broker_id.as_str()) == broker)
            .map(endpoint_of)
            .collect();
        if !endpoints.iter().any(|e| e == endpoint) {
            endpoints.push(endpoint.to_owned());
        }
        endpoints.sort();
        endpoints.dedup();
        endpoints
    }

    /// Picks a queue to send to; see [`choose_queue`].
    pub(crate) fn choose(
        &self,
        key: Option<&[u8]>,
        config: &ClientConfig,
        isolation: &QueueIsolation,
        avoid_broker: Option<&str>,
    ) -> Option<QueueTarget> {
        let turn = self.round_robin.fetch_add(1, Ordering::Relaxed);
        let view = isolation.view();
        choose_queue(
            &self.route.queues,
            &Choice {
                key,
                turn,
                own_area: config.area.as_str(),
                min_local_queues: config.min_local_queues,
                avoid_broker,
            },
            &|q| view.is_isolated(q),
        )
        .map(QueueTarget::of)
    }

    /// Every writable queue, as a send target.
    pub(crate) fn queues(&self) -> impl Iterator<Item = QueueTarget> + '_ {
        self.route
            .queues
            .iter()
            .filter(|q| q.writable)
            .map(QueueTarget::of)
    }

    /// True when some writable queue is not isolated: a service deployment worth calling.
    pub(crate) fn has_healthy_writable(&self, isolation: &QueueIsolation) -> bool {
        let view = isolation.view();
        self.route
            .queues
            .iter()
            .any(|q| q.writable && !view.is_isolated(q))
    }

    /// True when some queue is writable.
    pub(crate) fn has_writable(&self) -> bool {
        self.route.queues.iter().any(|q| q.writable)
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
    /// Below this many healthy writable own-area queues, every area's queues are used.
    pub(crate) min_local_queues: usize,
    /// A broker that just failed, avoided when any other is available.
    pub(crate) avoid_broker: Option<&'a str>,
}

/// Which queues a tier draws from, and which of those it may use.
type Tier<'t> = (
    &'t dyn Fn(&QueueRoute) -> bool,
    &'t dyn Fn(&QueueRoute) -> bool,
);

/// Chooses among the writable queues of `queues` (sorted), nearby first (DESIGN §6):
/// 1. the *pool* is the own area's writable queues while at least `min_local_queues` (and at
///    least one) of them are healthy (not isolated); below that it is every area's writable
///    queues, so traffic spreads to other areas before the own area is out altogether;
/// 2. the first of these that has a candidate wins:
///    healthy pool queues off `avoid_broker`; healthy queues of any area off `avoid_broker`
///    (a retry leaves the broker that just failed, even for another area, as DeFiBus does);
///    healthy pool queues; healthy queues of any area; then anything, own area first, so a
///    send is always attempted somewhere;
/// 3. within that candidate set: by key hash over the set's base (the pool, or every area's
///    queues), stable while the route is, moving on to the next candidate when the hashed
///    queue is not one; else round robin by `turn` over the candidates.
///
/// It runs per send, so it allocates nothing: each tier re-walks the (short) queue list.
pub(crate) fn choose_queue<'q>(
    queues: &'q [QueueRoute],
    choice: &Choice<'_>,
    is_isolated: &dyn Fn(&QueueRoute) -> bool,
) -> Option<&'q QueueRoute> {
    let writable = || queues.iter().filter(|q| q.writable);
    let local = |q: &QueueRoute| q.area == choice.own_area;
    let healthy_local = writable().filter(|q| local(q) && !is_isolated(q)).count();
    let nearby = healthy_local >= choice.min_local_queues.max(1);
    let any_local = writable().any(local);
    let in_pool = |q: &QueueRoute| !nearby || local(q);
    let in_last_resort = |q: &QueueRoute| !any_local || local(q);
    let everywhere = |_: &QueueRoute| true;
    let off_avoided = |q: &QueueRoute| choice.avoid_broker != Some(q.broker_id.as_str());
    let healthy_off_avoided = |q: &QueueRoute| off_avoided(q) && !is_isolated(q);
    let healthy = |q: &QueueRoute| !is_isolated(q);
    let anything = |_: &QueueRoute| true;
    let tiers: [Tier<'_>; 5] = [
        (&in_pool, &healthy_off_avoided),
        (&everywhere, &healthy_off_avoided),
        (&in_pool, &healthy),
        (&everywhere, &healthy),
        (&in_last_resort, &anything),
    ];
    tiers.iter().find_map(|(in_base, usable)| {
        let base = || writable().filter(|q| in_base(q));
        match choice.key {
            Some(key) if !key.is_empty() => {
                let len = base().count();
                if len == 0 {
                    return None;
                }
                let start = (fnv1a64(key) % len as u64) as usize;
                base()
                    .skip(start)
                    .chain(base().take(start))
                    .find(|q| usable(q))
            }
            _ => {
                let len = base().filter(|q| usable(q)).count();
                if len == 0 {
                    return None;
                }
                base().filter(|q| usable(q)).nth(choice.turn % len)
            }
        }
    })
}

/// FNV-1a, 64-bit: a stable hash for key → queue, the same in every client language.
pub(crate) fn fnv1a64(bytes: &[u8]) -> u64 {
    fnv1a64_append(FNV1A64_OFFSET, bytes)
}

/// The FNV-1a 64 offset basis: the hash of no bytes.
pub(crate) const FNV1A64_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

/// FNV-1a 64 of `bytes` appended to a hash so far.
pub(crate) fn fnv1a64_append(hash: u64, bytes: &[u8]) -> u64 {
    bytes.iter().fold(hash, |hash, &b| {
        (hash ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// Routes by topic, fetched from the nameservers.
pub(crate) struct RouteCache {
    nameservers: Vec<String>,
    request_timeout: Duration,
    refresh_interval: Duration,
    routes: Mutex<HashMap<String, Arc<CachedRoute>>>,
    /// Nameservers GSL named for a topic (a service deployment in another area may be routed
    /// only by that area's nameservers): asked before the configured ones.
    topic_nameservers: Mutex<HashMap<String, Vec<String>>>,
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
            topic_nameservers: Mutex::default(),
            preferred: AtomicUsize::new(0),
        }
    }

    /// Asks `nameservers` first for `topic`'s route (those of a service deployment, from
    /// GSL); the configured nameservers remain the fallback.
    pub(crate) fn set_topic_nameservers(&self, topic: &str, nameservers: &[String]) {
        let mut known = self
            .topic_nameservers
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let extra: Vec<String> = nameservers
            .iter()
            .filter(|n| !self.nameservers.contains(n))
            .cloned()
            .collect();
        if extra.is_empty() {
            known.remove(topic);
        } else {
            known.insert(topic.to_owned(), extra);
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
        let own = self
            .topic_nameservers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(topic)
            .cloned()
            .unwrap_or_default();
        let count = self.nameservers.len();
        if count == 0 && own.is_empty() {
            return Err(ClientError::InvalidArgument(
                "no nameserver configured".into(),
            ));
        }
        let first = self.preferred.load(Ordering::Relaxed);
        // The topic's own nameservers first, then the configured ones from the one that
        // answered last; `None` marks an own one (it does not become preferred).
        let order = own.iter().map(|n| (n, None)).chain((0..count).map(|i| {
            let index = (first + i) % count;
            (&self.nameservers[index], Some(index))
        }));
        let mut last_error = None;
        for (endpoint, index) in order {
            let answer = pool
                .get(endpoint, PeerKind::Control)
                .and_then(|conn| conn.call(Command::TopicRoute, &[], &body, self.request_timeout))
                .and_then(|frame| {
                    control::decode::<TopicRoute>(&frame.body)
                        .map_err(|e| ClientError::control(endpoint, e))
                });
            match answer {
                Ok(route) => {
                    if let Some(index) = index {
                        self.preferred.store(index, Ordering::Relaxed);
                    }
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
            min_local_queues: 1,
            avoid_broker: avoid,
        }
    }

    /// The brokers and queues `turns` round-robin choices land on.
    fn spread(
        queues: &[QueueRoute],
        choice: &dyn Fn(usize) -> Choice<'static>,
        is_isolated: &dyn Fn(&QueueRoute) -> bool,
    ) -> Vec<(String, u32)> {
        let mut picked: Vec<(String, u32)> = (0..queues.len() * 2)
            .map(|turn| {
                let q = choose_queue(queues, &choice(turn), is_isolated).unwrap();
                (q.broker_id.clone(), q.queue_id)
            })
            .collect();
        picked.sort();
        picked.dedup();
        picked
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
    fn isolated_own_area_queues_fall_back_to_other_areas() {
        let queues = [
            queue("a1", "A10", 0, true),
            queue("a2", "A10", 1, true),
            queue("b1", "B20", 2, true),
            queue("b2", "B20", 3, true),
        ];
        let own_area = |q: &QueueRoute| q.area == "A10";
        assert_eq!(
            spread(&queues, &|turn| choice(None, turn, None), &|_| false),
            [("a1".into(), 0), ("a2".into(), 1)],
            "healthy own-area queues keep traffic home"
        );
        assert_eq!(
            spread(&queues, &|turn| choice(None, turn, None), &|q| q.queue_id
                == 0),
            [("a2".into(), 1)],
            "one healthy own-area queue is enough by default"
        );
        assert_eq!(
            spread(&queues, &|turn| choice(None, turn, None), &own_area),
            [("b1".into(), 2), ("b2".into(), 3)],
            "with every own-area queue isolated, other areas take the traffic"
        );
    }

    #[test]
    fn fewer_healthy_own_area_queues_than_the_minimum_spread_to_every_area() {
        let queues = [
            queue("a1", "A10", 0, true),
            queue("a2", "A10", 1, true),
            queue("b1", "B20", 2, true),
        ];
        let at_least_two = |turn| Choice {
            min_local_queues: 2,
            ..choice(None, turn, None)
        };
        assert_eq!(
            spread(&queues, &at_least_two, &|_| false),
            [("a1".into(), 0), ("a2".into(), 1)],
            "two healthy own-area queues meet a minimum of two"
        );
        assert_eq!(
            spread(&queues, &at_least_two, &|q| q.queue_id == 0),
            [("a2".into(), 1), ("b1".into(), 2)],
            "below the minimum, the healthy queues of every area share the traffic"
        );
    }

    #[test]
    fn a_retry_leaves_the_failed_broker_even_for_another_area() {
        let queues = [
            queue("a1", "A10", 0, true),
            queue("a1", "A10", 1, true),
            queue("b1", "B20", 2, true),
        ];
        for turn in 0..4 {
            let q = choose_queue(&queues, &choice(None, turn, Some("a1")), &|q| {
                q.queue_id == 0
            })
            .unwrap();
            assert_eq!(q.broker_id, "b1", "turn {turn}");
        }
        // Nowhere else to go: the failed broker's healthy queue rather than nothing.
        let only_a = [queue("a1", "A10", 0, true), queue("a1", "A10", 1, true)];
        let q = choose_queue(&only_a, &choice(None, 0, Some("a1")), &|q| q.queue_id == 0).unwrap();
        assert_eq!(q.queue_id, 1);
        // Everything isolated: still the own area first.
        let q = choose_queue(&queues, &choice(None, 2, None), &|_| true).unwrap();
        assert_eq!(q.area, "A10");
    }

    #[test]
    fn keys_stay_on_their_queue_in_the_fallback_too() {
        let queues: Vec<_> = (0..4)
            .map(|i| {
                queue(
                    if i < 2 { "a" } else { "b" },
                    if i < 2 { "A10" } else { "B20" },
                    i,
                    true,
                )
            })
            .collect();
        let key = &b"order-42"[..];
        let own_isolated = |q: &QueueRoute| q.area == "A10";
        let first = choose_queue(&queues, &choice(Some(key), 0, None), &own_isolated).unwrap();
        let again = choose_queue(&queues, &choice(Some(key), 7, None), &own_isolated).unwrap();
        assert_eq!(first, again);
        assert_eq!(first.area, "B20");
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
