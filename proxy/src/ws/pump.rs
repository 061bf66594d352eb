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
    unacked: HashMap<u64, String>,
    per_subscription: HashMap<String, usize>,
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
        let Some(subscription) = state.unacked.remove(&delivery) else {
            return false;
        };
        if let Some(n) = state.per_subscription.get_mut(&subscription) {
            *n = n.saturating_sub(1);
        }
        drop(state);
        self.changed.notify_all();
        true
    }

    fn add(&self, delivery: u64, subscription: &str) {
        let mut state = self.lock();
        state.unacked.insert(delivery, subscription.to_owned());
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
        link.window.add(delivery, id);
        dirty = true;
        let frame = ServerFrame::Message {
            subscription: id.to_owned(),
            delivery,
            message: DeliveredMessage::from(&message),
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

    #[test]
    fn the_window_counts_per_subscription_and_bounds_the_session() {
        let window = Window::new(2);
        window.add(1, "s1");
        assert!(window.wait_for_room(Duration::ZERO));
        window.add(2, "s2");
        assert!(!window.wait_for_room(Duration::from_millis(1)));
        assert_eq!(window.outstanding("s1"), 1);
        assert!(window.ack(1));
        assert!(!window.ack(1), "a second ack is unknown");
        assert_eq!(window.outstanding("s1"), 0);
        assert!(window.wait_for_room(Duration::ZERO));
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
