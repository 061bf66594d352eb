//! Fault isolation (DESIGN §6): what a client avoids for a while after it failed.
//!
//! - [`QueueIsolation`]: a producer (or requester) avoids a queue after a send to it failed,
//!   for `queue_isolation` (default 60 s). When the failure was the connection's (the broker
//!   did not answer: refused, reset, timed out), the client's prober pings the queue's shard
//!   every `isolation_probe_interval` and lifts the isolation as soon as the shard answers a
//!   heartbeat. When the broker answered with a refusal (busy, queue too deep), an answered
//!   heartbeat proves nothing about the queue, so only time lifts it.
//! - [`StalledBrokers`]: a consumer avoids a broker whose shards stalled (see
//!   [`is_stall`]) for `stalled_broker_isolation` (default 5 min): it neither waits on nor
//!   re-subscribes to it meanwhile, then tries again.

use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use protocol::codes::Status;
use protocol::control::QueueRoute;

use crate::error::ClientError;
use crate::route::QueueTarget;

/// Why a queue is isolated, which decides what lifts the isolation early.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Cause {
    /// The shard did not answer (IO error, disconnect, timeout): an answered probe lifts it.
    Unreachable,
    /// The broker answered with a retryable refusal: only the period lifts it.
    Refused,
}

impl Cause {
    /// The cause `error` stands for; `None` when it does not isolate: it is not retryable
    /// (another queue would fail the same way), or it is a dark-launch refusal, which says
    /// nothing about the queue's health, only that no selected instance consumes there.
    /// A storage error isolates although it is not retryable as such: it concerns the queue
    /// that answered it (its log is poisoned until the broker reopens it), so a send retried
    /// elsewhere avoids it.
    pub(crate) fn of(error: &ClientError) -> Option<Self> {
        if error.status() == Some(Status::StorageError) {
            return Some(Self::Refused);
        }
        if !error.is_retryable() || error.status() == Some(Status::NoRedirectTarget) {
            return None;
        }
        Some(match error {
            ClientError::Io { .. } | ClientError::Disconnected { .. } => Self::Unreachable,
            ClientError::Timeout { .. } => Self::Unreachable,
            _ => Self::Refused,
        })
    }
}

/// One isolated queue.
#[derive(Debug)]
struct Entry {
    /// The shard serving the queue when it failed; an isolation for an unreachable shard
    /// does not apply to the queue once the route names another (the broker restarted on
    /// new ports: a new incarnation, reachable or not).
    address: String,
    shard_port: u16,
    until: Instant,
    cause: Cause,
}

/// Isolated queues by broker id, then queue id (nested, so a check looks a route's queue up
/// by `&str` without building a key).
type Entries = HashMap<String, HashMap<u32, Entry>>;

/// Queues avoided by a client's producers and requesters.
#[derive(Debug, Default)]
pub(crate) struct QueueIsolation {
    entries: Mutex<Entries>,
}

/// Drops expired entries, and brokers left with none.
fn purge(entries: &mut Entries, now: Instant) {
    entries.retain(|_, queues| {
        queues.retain(|_, e| e.until > now);
        !queues.is_empty()
    });
}

impl QueueIsolation {
    /// Avoids `target` for `period` because of `cause`.
    pub(crate) fn isolate(&self, target: &QueueTarget, cause: Cause, period: Duration) {
        let (address, shard_port) = split_endpoint(&target.endpoint);
        let now = Instant::now();
        let mut entries = self.lock();
        purge(&mut entries, now);
        entries.entry(target.broker_id.clone()).or_default().insert(
            target.queue_id,
            Entry {
                address: address.to_owned(),
                shard_port,
                until: now + period,
                cause,
            },
        );
    }

    /// Lifts the isolation of `target`, after a send to it succeeded.
    pub(crate) fn lift(&self, target: &QueueTarget) {
        let mut entries = self.lock();
        if let Some(queues) = entries.get_mut(target.broker_id.as_str()) {
            queues.remove(&target.queue_id);
            if queues.is_empty() {
                entries.remove(target.broker_id.as_str());
            }
        }
    }

    /// A view for checking many queues under one lock (a queue choice checks every queue).
    pub(crate) fn view(&self) -> IsolationView<'_> {
        IsolationView {
            entries: self.lock(),
            now: Instant::now(),
        }
    }

    /// The shard endpoints of queues isolated as unreachable: what the prober pings. Drops
    /// expired entries on the way.
    pub(crate) fn unreachable_endpoints(&self) -> Vec<String> {
        let mut entries = self.lock();
        purge(&mut entries, Instant::now());
        let endpoints: HashSet<String> = entries
            .values()
            .flat_map(HashMap::values)
            .filter(|e| e.cause == Cause::Unreachable)
            .map(|e| format!("{}:{}", e.address, e.shard_port))
            .collect();
        let mut endpoints: Vec<String> = endpoints.into_iter().collect();
        endpoints.sort();
        endpoints
    }

    /// Lifts every isolation for an unreachable `endpoint` (it answered a probe); returns how
    /// many queues it freed.
    pub(crate) fn lift_endpoint(&self, endpoint: &str) -> usize {
        let (address, shard_port) = split_endpoint(endpoint);
        let mut entries = self.lock();
        let mut lifted = 0;
        for queues in entries.values_mut() {
            let before = queues.len();
            queues.retain(|_, e| {
                !(e.cause == Cause::Unreachable
                    && e.address == address
                    && e.shard_port == shard_port)
            });
            lifted += before - queues.len();
        }
        entries.retain(|_, queues| !queues.is_empty());
        lifted
    }

    /// Every queue isolated now, sorted.
    pub(crate) fn snapshot(&self) -> Vec<QueueTarget> {
        let now = Instant::now();
        let entries = self.lock();
        let mut queues: Vec<QueueTarget> = entries
            .iter()
            .flat_map(|(broker_id, queues)| {
                queues
                    .iter()
                    .filter(|(_, e)| e.until > now)
                    .map(move |(queue_id, e)| QueueTarget {
                        broker_id: broker_id.clone(),
                        endpoint: format!("{}:{}", e.address, e.shard_port),
                        queue_id: *queue_id,
                    })
            })
            .collect();
        queues.sort_by(|a, b| (&a.broker_id, a.queue_id).cmp(&(&b.broker_id, b.queue_id)));
        queues
    }

    fn lock(&self) -> MutexGuard<'_, Entries> {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// [`QueueIsolation`] held locked for a run of checks.
pub(crate) struct IsolationView<'a> {
    entries: MutexGuard<'a, Entries>,
    now: Instant,
}

impl IsolationView<'_> {
    /// True when `queue`, as routed now, is isolated.
    pub(crate) fn is_isolated(&self, queue: &QueueRoute) -> bool {
        let Some(entry) = self
            .entries
            .get(queue.broker_id.as_str())
            .and_then(|queues| queues.get(&queue.queue_id))
        else {
            return false;
        };
        entry.until > self.now
            && (entry.cause == Cause::Refused
                || (entry.address == queue.address && entry.shard_port == queue.shard_port))
    }
}

/// `host:port` split at the last colon; port 0 when there is none (never routed).
fn split_endpoint(endpoint: &str) -> (&str, u16) {
    match endpoint.rsplit_once(':') {
        Some((host, port)) => (host, port.parse().unwrap_or(0)),
        None => (endpoint, 0),
    }
}

/// True when `error`, from subscribing on a broker shard, means the shard stalled: it took
/// the connection or the request but did not answer in time (a TCP connect that timed out,
/// a handshake or `Subscribe` without an answer). A refused or reset connection is not a
/// stall: it costs nothing to retry, and it ends the moment the broker restarts, which a
/// consumer should notice at once.
pub(crate) fn is_stall(error: &ClientError) -> bool {
    match error {
        ClientError::Timeout { .. } => true,
        ClientError::Io { source, .. } => matches!(
            source.kind(),
            std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock
        ),
        _ => false,
    }
}

/// Broker shard endpoints a client's consumers avoid until a deadline, after the broker
/// stalled.
#[derive(Debug, Default)]
pub(crate) struct StalledBrokers {
    until: Mutex<HashMap<String, Instant>>,
}

impl StalledBrokers {
    /// Avoids every endpoint of `endpoints` for `period`.
    pub(crate) fn isolate(&self, endpoints: &[String], period: Duration) {
        let now = Instant::now();
        let mut until = self.lock();
        until.retain(|_, t| *t > now);
        for endpoint in endpoints {
            until.insert(endpoint.clone(), now + period);
        }
    }

    /// True while `endpoint` is avoided.
    pub(crate) fn is_isolated(&self, endpoint: &str) -> bool {
        let until = self.lock();
        !until.is_empty() && until.get(endpoint).is_some_and(|t| *t > Instant::now())
    }

    /// Every endpoint avoided now, sorted.
    pub(crate) fn snapshot(&self) -> Vec<String> {
        let now = Instant::now();
        let mut endpoints: Vec<String> = self
            .lock()
            .iter()
            .filter(|(_, t)| **t > now)
            .map(|(e, _)| e.clone())
            .collect();
        endpoints.sort();
        endpoints
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Instant>> {
        self.until.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(broker: &str, queue_id: u32, shard_port: u16) -> QueueRoute {
        QueueRoute {
            broker_id: broker.into(),
            cluster: "c".into(),
            area: "A10".into(),
            address: "127.0.0.1".into(),
            shard_port,
            queue_id,
            readable: true,
            writable: true,
        }
    }

    fn target(queue: &QueueRoute) -> QueueTarget {
        QueueTarget {
            broker_id: queue.broker_id.clone(),
            endpoint: format!("{}:{}", queue.address, queue.shard_port),
            queue_id: queue.queue_id,
        }
    }

    #[test]
    fn causes_follow_the_error() {
        let io = ClientError::Io {
            endpoint: "h:1".into(),
            source: std::io::ErrorKind::ConnectionRefused.into(),
        };
        assert_eq!(Cause::of(&io), Some(Cause::Unreachable));
        let busy = ClientError::from_status(Status::QueueDepthExceeded.code(), "deep".into());
        assert_eq!(Cause::of(&busy), Some(Cause::Refused));
        assert_eq!(
            Cause::of(&ClientError::InvalidArgument("x".into())),
            None,
            "a non-retryable error would fail on any queue"
        );
        let full = ClientError::from_status(Status::DiskFull.code(), "full".into());
        assert_eq!(Cause::of(&full), Some(Cause::Refused));
        let poisoned = ClientError::from_status(Status::StorageError.code(), "poisoned".into());
        assert_eq!(
            Cause::of(&poisoned),
            Some(Cause::Refused),
            "a poisoned queue is avoided by the retry"
        );
        let dark = ClientError::from_status(Status::NoRedirectTarget.code(), "none".into());
        assert_eq!(
            Cause::of(&dark),
            None,
            "a redirect refusal is not ill health"
        );
        assert!(!is_stall(&io), "a refused connection is not a stall");
        assert!(is_stall(&ClientError::Timeout {
            after: Duration::from_secs(1)
        }));
        assert!(is_stall(&ClientError::Io {
            endpoint: "h:1".into(),
            source: std::io::ErrorKind::TimedOut.into(),
        }));
    }

    #[test]
    fn isolation_expires_lifts_and_follows_the_endpoint() {
        let isolation = QueueIsolation::default();
        let q = route("a", 0, 1000);
        isolation.isolate(&target(&q), Cause::Unreachable, Duration::from_secs(60));
        assert!(isolation.view().is_isolated(&q));
        assert_eq!(isolation.snapshot(), [target(&q)]);
        // The broker restarted on another port: its queue there is a fresh start.
        assert!(!isolation.view().is_isolated(&route("a", 0, 2000)));
        isolation.lift(&target(&q));
        assert!(!isolation.view().is_isolated(&q));
        isolation.isolate(&target(&q), Cause::Unreachable, Duration::ZERO);
        assert!(!isolation.view().is_isolated(&q));
        assert!(isolation.snapshot().is_empty());
    }

    #[test]
    fn a_probe_lifts_unreachable_queues_of_its_endpoint_only() {
        let isolation = QueueIsolation::default();
        let period = Duration::from_secs(60);
        let (a0, a1, b0) = (
            route("a", 0, 1000),
            route("a", 1, 1000),
            route("b", 0, 3000),
        );
        let deep = route("a", 2, 1000);
        isolation.isolate(&target(&a0), Cause::Unreachable, period);
        isolation.isolate(&target(&a1), Cause::Unreachable, period);
        isolation.isolate(&target(&b0), Cause::Unreachable, period);
        isolation.isolate(&target(&deep), Cause::Refused, period);
        assert_eq!(
            isolation.unreachable_endpoints(),
            ["127.0.0.1:1000", "127.0.0.1:3000"]
        );
        assert_eq!(isolation.lift_endpoint("127.0.0.1:1000"), 2);
        let view = isolation.view();
        assert!(!view.is_isolated(&a0) && !view.is_isolated(&a1));
        assert!(view.is_isolated(&b0));
        assert!(
            view.is_isolated(&deep),
            "an answered heartbeat says nothing about a refusing queue"
        );
        // A refusal holds wherever the broker is now.
        assert!(view.is_isolated(&route("a", 2, 4000)));
    }

    #[test]
    fn stalled_brokers_are_avoided_for_the_period() {
        let stalled = StalledBrokers::default();
        let endpoints = ["127.0.0.1:1".to_owned(), "127.0.0.1:2".to_owned()];
        stalled.isolate(&endpoints, Duration::from_secs(300));
        assert!(stalled.is_isolated("127.0.0.1:2"));
        assert!(!stalled.is_isolated("127.0.0.1:3"));
        assert_eq!(stalled.snapshot(), endpoints);
        stalled.isolate(&endpoints[..1], Duration::ZERO);
        assert_eq!(stalled.snapshot(), ["127.0.0.1:2"]);
    }
}
