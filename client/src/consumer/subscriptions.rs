//! A consumer's subscriptions: one session per broker shard of the topic's route, opened
//! where missing, dropped where the route no longer leads, left alone on a stalled broker
//! (ARCHITECTURE §4.5), and the push sink each one registers on its connection.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, PoisonError, Weak};
use std::time::{Duration, Instant};

use protocol::codes::Command;
use protocol::control::{
    self, StartPosition, Subscribe, SubscribeAck, SubscriptionMode, Unsubscribe,
};
use protocol::frame::FrameBytes;

use super::{ConsumeMode, ConsumerInner, StartFrom};
use crate::error::{ClientError, Result};
use crate::isolation::is_stall;
use crate::net::{Connection, PushSink};
use crate::route::CachedRoute;
use crate::slot::slot;

/// A subscription on one broker shard.
pub(super) struct Session {
    pub(super) conn: Arc<Connection>,
    pub(super) subscription_id: u64,
    /// Records received or skipped since credit was last granted.
    pub(super) consumed: AtomicU32,
}

impl ConsumerInner {
    /// Subscribes on every shard of the route that has no live subscription. With
    /// `report_route_errors`, a route failure is returned; otherwise it is logged.
    pub(super) fn ensure_sessions(self: &Arc<Self>, report_route_errors: bool) -> Result<()> {
        if self.route_recently_missing() {
            return Ok(());
        }
        let route = match self.client.route(&self.options.topic) {
            Ok(route) => {
                self.route_found();
                route
            }
            Err(e) if report_route_errors => return Err(e),
            Err(e) => {
                log::debug!("route of {}: {e}", self.options.topic);
                self.route_missing(&e);
                return Ok(());
            }
        };
        let endpoints = route.read_endpoints();
        for endpoint in &endpoints {
            if self.closed.load(Ordering::Acquire) {
                break;
            }
            let existing = self
                .sessions
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .get(endpoint)
                .cloned();
            if let Some(session) = existing {
                if !session.conn.is_closed() {
                    continue;
                }
                // A dead session is looked at once: it either stalled or went away.
                self.sessions
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .remove(endpoint);
                if session.conn.closed_silent() {
                    self.broker_stalled(&route, endpoint, "stopped answering heartbeats");
                }
            }
            if self.client.stalled.is_isolated(endpoint) {
                continue;
            }
            match self.subscribe_on(endpoint) {
                Ok(session) => {
                    log::debug!(
                        "{}: subscribed to {} as {} (subscription {})",
                        endpoint,
                        self.options.topic,
                        self.options.group,
                        session.subscription_id
                    );
                    self.sessions
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .insert(endpoint.clone(), session);
                }
                Err(e) if is_stall(&e) => {
                    self.broker_stalled(&route, endpoint, &format!("subscribe: {e}"));
                }
                Err(e) => {
                    // The broker may be gone or back on other ports: refetch the route, at
                    // most once per second so a dead broker does not flood the nameservers.
                    let mut last = self
                        .route_invalidated
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner);
                    if last.is_none_or(|at| at.elapsed() >= Duration::from_secs(1)) {
                        *last = Some(Instant::now());
                        self.client.routes.invalidate(&self.options.topic);
                    }
                    drop(last);
                    log::debug!(
                        "{endpoint}: subscribe to {} failed: {e}",
                        self.options.topic
                    );
                }
            }
        }
        // Shards that left the route: drop their subscriptions.
        let gone: Vec<Arc<Session>> = {
            let mut sessions = self.sessions.lock().unwrap_or_else(PoisonError::into_inner);
            let stale: Vec<String> = sessions
                .keys()
                .filter(|e| !endpoints.contains(e))
                .cloned()
                .collect();
            stale.iter().filter_map(|e| sessions.remove(e)).collect()
        };
        for session in gone {
            self.unsubscribe(&session);
        }
        Ok(())
    }

    /// Isolates the broker owning `endpoint` after it stalled: every one of its shards in
    /// `route`, for `stalled_broker_isolation`, so no pass of the supervisor waits on it
    /// again before then (DESIGN §6, consumer fault isolation).
    fn broker_stalled(&self, route: &CachedRoute, endpoint: &str, why: &str) {
        let broker_endpoints = route.broker_read_endpoints(endpoint);
        let period = self.client.config.stalled_broker_isolation;
        log::warn!(
            "{endpoint} stalled ({why}); consumers of this client leave {} alone for {period:?}",
            broker_endpoints.join(", ")
        );
        self.client.stalled.isolate(&broker_endpoints, period);
    }

    fn subscribe_on(self: &Arc<Self>, endpoint: &str) -> Result<Arc<Session>> {
        let client = &self.client;
        let conn = client.broker(endpoint)?;
        let request = Subscribe {
            topic: self.options.topic.clone(),
            group: self.options.group.clone(),
            client_id: self
                .options
                .member()
                .map_or(client.client_id.as_str(), |m| m.client_id.as_str())
                .to_string(),
            area: self
                .options
                .member()
                .map_or(client.config.area, |m| m.area)
                .to_string(),
            mode: match self.options.mode {
                ConsumeMode::Clustering => SubscriptionMode::Clustering,
                ConsumeMode::Broadcast => SubscriptionMode::Broadcast,
            },
            start: match self.options.start {
                StartFrom::Committed => StartPosition::Committed,
                StartFrom::Earliest => StartPosition::Earliest,
                StartFrom::Latest => StartPosition::Latest,
            },
            credit_messages: client.config.credit_window,
        };
        let body = control::encode(&request).map_err(|e| ClientError::control(endpoint, e))?;
        // The sink is registered on the reader thread as the ack is read, before any push
        // that follows it, so no push finds the subscription missing.
        let (completer, waiter) = slot::<Arc<Session>>();
        let weak = Arc::downgrade(self);
        let registering = conn.clone();
        let endpoint_owned = endpoint.to_owned();
        let request_id = conn.call_with(
            Command::Subscribe,
            &[],
            &body,
            Box::new(move |result: Result<FrameBytes>| {
                let ack = result.and_then(|frame| {
                    control::decode::<SubscribeAck>(&frame.body)
                        .map_err(|e| ClientError::control(&endpoint_owned, e))
                });
                let session = ack.map(|ack| {
                    registering.add_subscription(
                        ack.subscription_id,
                        Arc::new(SubscriptionSink {
                            consumer: weak.clone(),
                            endpoint: endpoint_owned.clone(),
                            subscription_id: ack.subscription_id,
                        }),
                    );
                    Arc::new(Session {
                        conn: registering.clone(),
                        subscription_id: ack.subscription_id,
                        consumed: AtomicU32::new(0),
                    })
                });
                match session {
                    Ok(session) => {
                        if !completer.complete(Ok(session.clone())) {
                            // The caller gave up waiting: undo the registration.
                            registering.remove_subscription(session.subscription_id);
                        }
                    }
                    Err(e) => {
                        completer.complete(Err(e));
                    }
                }
            }),
        )?;
        let session = waiter.wait(client.config.request_timeout);
        if session.is_err() {
            conn.forget(request_id);
        }
        let session = session?;
        let weak = Arc::downgrade(self);
        conn.on_close(Box::new(move || {
            if let Some(consumer) = weak.upgrade() {
                consumer.wake_supervisor();
            }
        }));
        Ok(session)
    }

    fn unsubscribe(&self, session: &Session) {
        session.conn.remove_subscription(session.subscription_id);
        if session.conn.is_closed() || self.client.stalled.is_isolated(session.conn.endpoint()) {
            return;
        }
        let request = Unsubscribe {
            subscription_id: session.subscription_id,
        };
        let result = control::encode(&request)
            .map_err(|e| ClientError::control(session.conn.endpoint(), e))
            .and_then(|body| {
                session.conn.call(
                    Command::Unsubscribe,
                    &[],
                    &body,
                    self.client.config.request_timeout,
                )
            });
        if let Err(e) = result {
            log::debug!("{}: unsubscribe failed: {e}", session.conn.endpoint());
        }
    }

    pub(super) fn unsubscribe_all(&self) {
        let sessions: Vec<_> = self
            .sessions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .drain()
            .map(|(_, s)| s)
            .collect();
        for session in sessions {
            self.unsubscribe(&session);
        }
        self.deliveries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
    }
}

/// Routes one subscription's pushes to its consumer.
struct SubscriptionSink {
    consumer: Weak<ConsumerInner>,
    endpoint: String,
    subscription_id: u64,
}

impl PushSink for SubscriptionSink {
    fn on_push(&self, conn: &Arc<Connection>, frame: FrameBytes) {
        if let Some(consumer) = self.consumer.upgrade() {
            consumer.on_push(conn, &self.endpoint, self.subscription_id, &frame);
        }
    }

    fn on_fault(&self, frame: FrameBytes) {
        if let Some(consumer) = self.consumer.upgrade() {
            consumer.on_push_fault(&self.endpoint, &frame);
        }
    }

    fn on_topic_changed(&self) {
        if let Some(consumer) = self.consumer.upgrade() {
            // Cheap here on the reader thread; the supervisor refetches the route and
            // subscribes where queues appeared.
            consumer.client.routes.invalidate(&consumer.options.topic);
            consumer.wake_supervisor();
            // The group's retry topic may just have been created (its first nack).
            if let Some(retry) = &consumer.retry {
                retry.route_may_exist();
            }
        }
    }
}
