//! The blocking side of a session: the unacked window, the threads that move messages from a
//! consumer to the socket, and the bridge that hands a responder's requests to the client.
//!
//! Commit rule: a subscription's consumer uses manual commit, and `commit` is called only at
//! a moment when every message the pump took from the consumer has been acked; the consumer
//! commits what it handed out, so the committed offset never passes an unacked message.
//! Once `ws_commit_interval_ms` has passed since the last commit, the pump takes nothing new
//! until acks catch up, so such moments keep coming under steady load.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use client::{Answer, Consumer, ReceivedMessage, Responder};
use tokio::sync::mpsc::Sender;

use crate::api::DeliveredMessage;
use crate::ws::protocol::ServerFrame;

/// How long a pump waits for a message or a window change before it looks at its flags.
const PUMP_POLL: Duration = Duration::from_millis(50);

/// The session's pushes not yet acked, by delivery id, and how many each subscription has.
pub struct Window {
    state: Mutex<WindowState>,
    changed: Condvar,
    max: usize,
}

#[derive(Default)]
struct WindowState {
    /// Each unacked push: its subscription and where its message is (topic, queue, offset,
    /// broker; payload dropped), for a nack.
    unacked: HashMap<u64, (String, ReceivedMessage)>,
    per_subscription: HashMap<String, usize>,
    /// Nacks the client sent, for the subscription's pump to make (it owns the consumer).
    nacks: HashMap<String, Vec<Nack>>,
}

/// A client's `nack` of one push.
pub struct Nack {
    /// The push.
    pub delivery: u64,
    /// Why, kept with the retry copy.
    pub reason: String,
    /// Echoed in the answer.
    pub reference: Option<serde_json::Value>,
}

impl Window {
    pub fn new(max: usize) -> Self {
        Self {
            state: Mutex::default(),
            changed: Condvar::new(),
            max,
        }
    }

    /// Records an ack; false when the delivery is unknown (already acked, or from an earlier
    /// session: its message comes again under a new id).
    pub fn ack(&self, delivery: u64) -> bool {
        let mut state = self.lock();
        let Some((subscription, _)) = state.unacked.remove(&delivery) else {
            return false;
        };
        if let Some(n) = state.per_subscription.get_mut(&subscription) {
            *n = n.saturating_sub(1);
        }
        drop(state);
        self.changed.notify_all();
        true
    }

    /// Queues a nack for the pump of the push's subscription; false when the delivery is
    /// unknown. The push stays unacked until the broker stored the nack, so the offset commit
    /// never passes a message whose nack was lost.
    pub fn nack(&self, nack: Nack) -> bool {
        let mut state = self.lock();
        let Some((subscription, _)) = state.unacked.get(&nack.delivery) else {
            return false;
        };
        let subscription = subscription.clone();
        state.nacks.entry(subscription).or_default().push(nack);
        drop(state);
        self.changed.notify_all();
        true
    }

    /// The nacks waiting for `subscription`'s pump, each with its message (those acked in
    /// the meantime are dropped: an ack wins).
    fn take_nacks(&self, subscription: &str) -> Vec<(Nack, ReceivedMessage)> {
        let mut state = self.lock();
        let nacks = state.nacks.remove(subscription).unwrap_or_default();
        nacks
            .into_iter()
            .filter_map(|n| {
                let message = state.unacked.get(&n.delivery)?.1.clone();
                Some((n, message))
            })
            .collect()
    }

    fn add(&self, delivery: u64, subscription: &str, message: ReceivedMessage) {
        let mut state = self.lock();
        state
            .unacked
            .insert(delivery, (subscription.to_owned(), message));
        *state
            .per_subscription
            .entry(subscription.to_owned())
            .or_default() += 1;
    }

    fn outstanding(&self, subscription: &str) -> usize {
        self.lock()
            .per_subscription
            .get(subscription)
            .copied()
            .unwrap_or(0)
    }

    /// Waits up to `timeout` for room in the window; true when there is room.
    fn wait_for_room(&self, timeout: Duration) -> bool {
        let state = self.lock();
        let (state, _) = self
            .changed
            .wait_timeout_while(state, timeout, |s| s.unacked.len() >= self.max)
            .unwrap_or_else(PoisonError::into_inner);
        state.unacked.len() < self.max
    }

    /// Waits up to `timeout` for a change (an ack).
    fn wait_for_ack(&self, timeout: Duration) {
        let state = self.lock();
        let _ = self.changed.wait_timeout(state, timeout);
    }

    /// Wakes every waiting pump (at close).
    pub fn wake(&self) {
        self.changed.notify_all();
    }

    fn lock(&self) -> MutexGuard<'_, WindowState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// What a pump or responder needs from its session.
#[derive(Clone)]
pub struct SessionLink {
    pub outbox: Sender<ServerFrame>,
    pub window: Arc<Window>,
    pub deliveries: Arc<AtomicU64>,
    pub closed: Arc<AtomicBool>,
    pub replies: Arc<PendingReplies>,
}

impl SessionLink {
    fn next_delivery(&self) -> u64 {
        self.deliveries.fetch_add(1, Ordering::Relaxed)
    }

    /// Queues a frame for the socket, waiting while the outbox is full; false once the
    /// session is gone.
    fn send(&self, frame: ServerFrame) -> bool {
        !self.closed.load(Ordering::Acquire) && self.outbox.blocking_send(frame).is_ok()
    }
}

/// A running subscription of a session.
pub struct Subscription {
    stop: Arc<AtomicBool>,
    /// Opened once `subscribed` is queued, so no push precedes it on the socket.
    gate: Gate,
    kind: Kind,
}

/// A flag the pump or responder waits on before its first push.
#[derive(Clone, Default)]
pub struct Gate(Arc<AtomicBool>);

impl Gate {
    fn open(&self) {
        self.0.store(true, Ordering::Release);
    }

    /// Waits until the gate opens; false when `stopped` says to give up first.
    fn wait(&self, stopped: impl Fn() -> bool) -> bool {
        while !self.0.load(Ordering::Acquire) {
            if stopped() {
                return false;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        true
    }
}

enum Kind {
    Messages(Option<JoinHandle<()>>),
    Requests(Option<Responder>),
}

impl Subscription {
    /// Starts the pump thread moving `consumer`'s messages to the session.
    pub fn messages(
        id: String,
        consumer: Consumer,
        link: SessionLink,
        commit_interval: Duration,
    ) -> std::io::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let gate = Gate::default();
        let thread = std::thread::Builder::new()
            .name(format!("proxy-pump-{id}"))
            .spawn({
                let stop = stop.clone();
                let gate = gate.clone();
                move || {
                    let stopped = || stop.load(Ordering::Acquire);
                    if gate.wait(stopped) {
                        pump(&id, &consumer, &link, &stop, commit_interval);
                    }
                    // Manual commit: closing commits nothing more, so unacked messages come
                    // again.
                    if let Err(e) = consumer.close() {
                        log::debug!("subscription {id}: close: {e}");
                    }
                }
            })?;
        Ok(Self {
            stop,
            gate,
            kind: Kind::Messages(Some(thread)),
        })
    }

    /// Wraps a responder started with [`responder_handler`] and `gate`.
    pub fn requests(responder: Responder, gate: Gate) -> Self {
        Self {
            stop: Arc::new(AtomicBool::new(false)),
            gate,
            kind: Kind::Requests(Some(responder)),
        }
    }

    /// Lets pushes flow; called once `subscribed` is queued.
    pub fn open(&self) {
        self.gate.open();
    }

    /// Stops the subscription (blocking): the pump makes its last commit if everything it
    /// handed out is acked, then unsubscribes.
    pub fn close(mut self) {
        self.stop.store(true, Ordering::Release);
        match &mut self.kind {
            Kind::Messages(thread) => {
                if let Some(thread) = thread.take() {
                    let _ = thread.join();
                }
            }
            Kind::Requests(responder) => {
                if let Some(responder) = responder.take()
                    && let Err(e) = responder.close()
                {
                    log::debug!("closing a responder: {e}");
                }
            }
        }
    }
}

fn pump(
    id: &str,
    consumer: &Consumer,
    link: &SessionLink,
    stop: &AtomicBool,
    commit_interval: Duration,
) {
    let stopped = || stop.load(Ordering::Acquire) || link.closed.load(Ordering::Acquire);
    let mut dirty = false;
    let mut last_commit = Instant::now();
    while !stopped() {
        for (nack, message) in link.window.take_nacks(id) {
            let frame = match consumer.nack(&message, &nack.reason) {
                Ok(_) => {
                    link.window.ack(nack.delivery);
                    ServerFrame::Nacked {
                        reference: nack.reference,
                        delivery: nack.delivery,
                    }
                }
                // Still unacked: the client may ack it, nack it again, or have it redelivered.
                Err(e) => ServerFrame::error(nack.reference, &crate::error::ApiError::from(e)),
            };
            if !link.send(frame) {
                break;
            }
        }
        let outstanding = link.window.outstanding(id);
        if dirty && outstanding == 0 {
            match consumer.commit() {
                Ok(()) => dirty = false,
                Err(e) => log::debug!("subscription {id}: commit failed, retried later: {e}"),
            }
            last_commit = Instant::now();
        }
        if dirty && outstanding > 0 && last_commit.elapsed() >= commit_interval {
            // Let the acks catch up so a commit can be made.
            link.window.wait_for_ack(PUMP_POLL);
            continue;
        }
        if !link.window.wait_for_room(PUMP_POLL) {
            continue;
        }
        let message = match consumer.recv(PUMP_POLL) {
            Ok(Some(message)) => message,
            Ok(None) => continue,
            // A broker cannot serve one of the queues (damaged stored data): the client is
            // told, and the subscription goes on with the other queues.
            Err(e @ client::ClientError::Status { .. }) => {
                let error = crate::error::ApiError::from_client(&e);
                let frame = ServerFrame::Error {
                    reference: None,
                    code: error.code,
                    message: format!("subscription {id}: {}", error.message),
                    retry_after_ms: None,
                };
                if !link.send(frame) {
                    break;
                }
                continue;
            }
            Err(e) => {
                log::debug!("subscription {id}: consumer ended: {e}");
                break;
            }
        };
        let delivery = link.next_delivery();
        let delivered = DeliveredMessage::from(&message);
        // Only where the message is stays in the window (a nack needs no payload).
        let mut message = message;
        message.value = Vec::new();
        message.key = Vec::new();
        message.properties = Vec::new();
        link.window.add(delivery, id, message);
        dirty = true;
        let frame = ServerFrame::Message {
            subscription: id.to_owned(),
            delivery,
            message: delivered,
        };
        if !link.send(frame) {
            break;
        }
    }
    if dirty
        && link.window.outstanding(id) == 0
        && let Err(e) = consumer.commit()
    {
        log::debug!("subscription {id}: final commit failed: {e}");
    }
}

/// Replies awaited from the client, by delivery id.
#[derive(Default)]
pub struct PendingReplies(Mutex<HashMap<u64, mpsc::Sender<Answer>>>);

impl PendingReplies {
    /// Hands a client's reply to the waiting responder; false when none waits (expired,
    /// already answered, or unknown).
    pub fn complete(&self, delivery: u64, answer: Answer) -> bool {
        let waiting = self.lock().remove(&delivery);
        waiting.is_some_and(|tx| tx.send(answer).is_ok())
    }

    /// Drops every wait (session end): each waiting responder gives up on its request.
    pub fn clear(&self) {
        self.lock().clear();
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<u64, mpsc::Sender<Answer>>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The handler of a responder whose answers come from the WebSocket client: it pushes each
/// request as a `request` frame and waits for the client's `reply` until the request's
/// deadline.
///
/// The client's `Responder` sends whatever the handler returns, unless the request has
/// expired by then; so when no reply comes (session gone, client silent) the handler waits
/// out the deadline rather than send an empty reply, and the requester times out.
pub fn responder_handler(
    id: String,
    link: SessionLink,
    gate: Gate,
) -> impl FnMut(&ReceivedMessage) -> Answer + Send + 'static {
    move |request: &ReceivedMessage| {
        gate.wait(|| link.closed.load(Ordering::Acquire));
        let deadline = request
            .deadline_ms
            .map(|ms| ms.saturating_sub(now_ms()))
            .map_or(Duration::from_secs(1), Duration::from_millis);
        let delivery = link.next_delivery();
        let (tx, rx) = mpsc::channel();
        link.replies.lock().insert(delivery, tx);
        let frame = ServerFrame::Request {
            subscription: id.clone(),
            delivery,
            message: DeliveredMessage::from(request),
        };
        let started = Instant::now();
        if link.send(frame)
            && let Ok(answer) = rx.recv_timeout(deadline)
        {
            return answer;
        }
        link.replies.lock().remove(&delivery);
        // No answer: outlive the deadline so the client drops the request unanswered.
        let waited = started.elapsed();
        if waited < deadline {
            std::thread::sleep(deadline - waited + Duration::from_millis(2));
        }
        Answer::default()
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(offset: u64) -> ReceivedMessage {
        ReceivedMessage {
            topic: "A10-1".into(),
            queue_id: 0,
            offset,
            endpoint: "127.0.0.1:1".into(),
            timestamp_ms: 0,
            message_type: client::MessageType::Event,
            key: Vec::new(),
            value: Vec::new(),
            tag: None,
            area: None,
            reply_to: None,
            correlation_id: None,
            deadline_ms: None,
            properties: Vec::new(),
            trace: None,
            deliver_at_ms: None,
            redelivery: None,
        }
    }

    #[test]
    fn the_window_counts_per_subscription_and_bounds_the_session() {
        let window = Window::new(2);
        window.add(1, "s1", at(1));
        assert!(window.wait_for_room(Duration::ZERO));
        window.add(2, "s2", at(2));
        assert!(!window.wait_for_room(Duration::from_millis(1)));
        assert_eq!(window.outstanding("s1"), 1);
        assert!(window.ack(1));
        assert!(!window.ack(1), "a second ack is unknown");
        assert_eq!(window.outstanding("s1"), 0);
        assert!(window.wait_for_room(Duration::ZERO));
    }

    #[test]
    fn a_nack_goes_to_its_subscriptions_pump_and_an_ack_wins_over_it() {
        let window = Window::new(4);
        window.add(1, "s1", at(10));
        window.add(2, "s1", at(11));
        let nack = |delivery| Nack {
            delivery,
            reason: "bad".into(),
            reference: None,
        };
        assert!(window.nack(nack(1)));
        assert!(window.nack(nack(2)));
        assert!(!window.nack(nack(9)), "an unknown delivery");
        assert!(window.take_nacks("s2").is_empty());
        assert!(window.ack(2));
        let taken = window.take_nacks("s1");
        assert_eq!(taken.len(), 1);
        assert_eq!(taken[0].1.offset, 10);
        // Still unacked until the pump stored the nack.
        assert_eq!(window.outstanding("s1"), 1);
    }

    #[test]
    fn replies_reach_the_waiting_responder_once() {
        let pending = PendingReplies::default();
        let (tx, rx) = mpsc::channel();
        pending.lock().insert(7, tx);
        assert!(pending.complete(7, Answer::new(b"ok".to_vec())));
        assert_eq!(rx.recv().unwrap().value, b"ok");
        assert!(!pending.complete(7, Answer::new(b"again".to_vec())));
    }
}
