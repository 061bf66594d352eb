//! One WebSocket connection: `hello`, then commands until `goodbye`, silence, a replacing
//! session, a socket error or proxy shutdown; then every subscription is closed (committing
//! only acked messages). The bus client is its area's, shared ([`super::buses`]).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use auth::Action;
use axum::extract::ws::{CloseFrame, Message as WsMessage, WebSocket};
use client::{ConsumerOptions, Member, Responder, ResponderOptions};
use futures_util::{SinkExt, StreamExt};
use tokio::sync::{mpsc, watch};

use crate::api::{
    DeliveredMessage, Identity, Mode, OutgoingMessage, Start, Stored, parse_json, payload,
};
use crate::caller::Caller;
use crate::config::{WS_REPLACE_WAIT, WS_SESSION_SUBSCRIPTIONS_MAX};
use crate::error::ApiError;
use crate::limit::SessionLimit;
use crate::routes::{request_reply, request_timeout};
use crate::state::AppState;
use crate::ws::buses::AreaBus;
use crate::ws::protocol::{ClientFrame, Outgoing, ServerFrame};
use crate::ws::pump::{Gate, PendingReplies, SessionLink, Subscription, Window, responder_handler};

/// WebSocket close code "going away" (proxy shutdown or replaced session).
const CLOSE_GOING_AWAY: u16 = 1001;
/// WebSocket close code "policy violation" (no hello, silence).
const CLOSE_POLICY: u16 = 1008;

/// The bus side of an identified session.
struct Bus {
    state: AppState,
    /// The area's shared client and roles.
    bus: Arc<AreaBus>,
    /// Who the session's consumers and responders subscribe as.
    member: Member,
    link: SessionLink,
    subscriptions: HashMap<String, Subscription>,
    next_subscription: u64,
    /// The session's rate-limit bucket (publishes and requests).
    limit: SessionLimit,
    /// Who opened the session: each command is checked against its grants.
    caller: Caller,
}

pub async fn run(state: AppState, socket: WebSocket, caller: Caller) {
    let (mut sink, mut stream) = socket.split();
    let (outbox, mut outbox_rx) = mpsc::channel::<ServerFrame>(state.config.ws_outbox_frames);
    let (close_tx, mut close_rx) = mpsc::channel::<(u16, String)>(1);
    // The writer owns the sink: frames from the session and the pumps, then a close frame.
    let writer = tokio::spawn(async move {
        loop {
            tokio::select! {
                frame = outbox_rx.recv() => {
                    let Some(frame) = frame else { break };
                    let text = match serde_json::to_string(&frame) {
                        Ok(text) => text,
                        Err(e) => { log::error!("unserializable frame {frame:?}: {e}"); continue }
                    };
                    if sink.send(WsMessage::Text(text.into())).await.is_err() {
                        return;
                    }
                }
                close = close_rx.recv() => {
                    // Flush what is queued, then close.
                    while let Ok(frame) = outbox_rx.try_recv() {
                        if let Ok(text) = serde_json::to_string(&frame) {
                            let _ = sink.send(WsMessage::Text(text.into())).await;
                        }
                    }
                    let (code, reason) = close.unwrap_or((CLOSE_GOING_AWAY, String::new()));
                    let frame = CloseFrame { code, reason: reason.into() };
                    let _ = sink.send(WsMessage::Close(Some(frame))).await;
                    break;
                }
            }
        }
    });
    let idle = Duration::from_millis(state.config.ws_idle_timeout_ms);
    let mut shutdown = state.shared.sessions.shutdown_signal();

    // The first message must be a hello.
    let hello = tokio::select! {
        _ = shutdown.wait_for(|s| *s) => Ok(None),
        frame = tokio::time::timeout(idle, next_frame(&mut stream, &state)) => frame,
    };
    let identity = match hello {
        Ok(Some(Ok(ClientFrame::Hello { identity }))) => identity,
        Ok(Some(Ok(_))) => {
            let error = ApiError::bad_request("the first message must be a hello");
            let _ = outbox.send(ServerFrame::error(None, &error)).await;
            let _ = close_tx.send((CLOSE_POLICY, "no hello".into())).await;
            let _ = writer.await;
            return;
        }
        Ok(Some(Err(error))) => {
            let _ = outbox.send(ServerFrame::error(None, &error)).await;
            let _ = close_tx.send((CLOSE_POLICY, "bad hello".into())).await;
            let _ = writer.await;
            return;
        }
        Ok(None) | Err(_) => {
            drop(outbox);
            let _ = writer.await;
            return;
        }
    };
    if let Err(error) = identity.validate() {
        let _ = outbox.send(ServerFrame::error(None, &error)).await;
        let _ = close_tx.send((CLOSE_POLICY, "bad identity".into())).await;
        let _ = writer.await;
        return;
    }

    let client_id = identity.client_id();
    let generation = state.next_id();
    let (done_tx, done_rx) = watch::channel(false);
    let (mut stop, replaced) = state
        .shared
        .sessions
        .register(&client_id, generation, done_rx);
    if let Some(mut old) = replaced {
        log::info!("session {client_id}: replacing the previous session");
        let _ = tokio::time::timeout(WS_REPLACE_WAIT, old.wait_for(|done| *done)).await;
    }
    let closed = Arc::new(AtomicBool::new(false));
    let link = SessionLink {
        outbox: outbox.clone(),
        window: Arc::new(Window::new(state.config.ws_window_messages)),
        deliveries: Arc::new(AtomicU64::new(1)),
        closed: closed.clone(),
        replies: Arc::new(PendingReplies::default()),
    };
    let mut bus = match Bus::connect(&state, &identity, link, caller).await {
        Ok(bus) => bus,
        Err(error) => {
            let _ = outbox.send(ServerFrame::error(None, &error)).await;
            let _ = close_tx
                .send((CLOSE_GOING_AWAY, "bus unavailable".into()))
                .await;
            let _ = writer.await;
            state.shared.sessions.unregister(&client_id, generation);
            let _ = done_tx.send(true);
            return;
        }
    };
    log::info!("session {client_id}: open");
    let _ = outbox
        .send(ServerFrame::Welcome {
            client_id: client_id.clone(),
            window: state.config.ws_window_messages,
            idle_timeout_ms: state.config.ws_idle_timeout_ms,
        })
        .await;

    let close = loop {
        let frame = tokio::select! {
            _ = stop.wait_for(|stop| *stop) => break (CLOSE_GOING_AWAY, "replaced by a new session"),
            _ = shutdown.wait_for(|s| *s) => break (CLOSE_GOING_AWAY, "proxy shutting down"),
            frame = tokio::time::timeout(idle, next_frame(&mut stream, &state)) => frame,
        };
        let frame = match frame {
            Err(_) => break (CLOSE_POLICY, "idle timeout"),
            Ok(None) => break (CLOSE_GOING_AWAY, ""),
            Ok(Some(Err(error))) => {
                // A malformed command is answered; the session goes on.
                let _ = outbox.send(ServerFrame::error(None, &error)).await;
                continue;
            }
            Ok(Some(Ok(frame))) => frame,
        };
        if matches!(frame, ClientFrame::Goodbye {}) {
            let _ = outbox.send(ServerFrame::Goodbye {}).await;
            break (1000, "goodbye");
        }
        bus.handle(frame).await;
    };
    log::info!("session {client_id}: closing ({})", close.1);
    closed.store(true, Ordering::Release);
    bus.link.window.wake();
    bus.link.replies.clear();
    let _ = close_tx.send((close.0, close.1.to_owned())).await;
    bus.close().await;
    drop(outbox);
    let _ = writer.await;
    state.shared.sessions.unregister(&client_id, generation);
    let _ = done_tx.send(true);
}

/// The next client frame: `None` at the end of the stream, `Err` for a malformed message.
async fn next_frame(
    stream: &mut futures_util::stream::SplitStream<WebSocket>,
    state: &AppState,
) -> Option<Result<ClientFrame, ApiError>> {
    loop {
        let message = match stream.next().await? {
            Ok(message) => message,
            Err(e) => {
                log::debug!("WebSocket read: {e}");
                let limit = state.config.body_bytes_max;
                if e.to_string().contains("too long") || e.to_string().contains("too big") {
                    return Some(Err(ApiError::payload_too_large(limit)));
                }
                return None;
            }
        };
        return match message {
            WsMessage::Text(text) => Some(parse_json(text.as_bytes())),
            WsMessage::Binary(bytes) => Some(parse_json(&bytes)),
            WsMessage::Close(_) => None,
            WsMessage::Ping(_) | WsMessage::Pong(_) => continue,
        };
    }
}

impl Bus {
    /// Joins the identity's area bus (created with the area's first session) as the member
    /// the identity names.
    async fn connect(
        state: &AppState,
        identity: &Identity,
        link: SessionLink,
        caller: Caller,
    ) -> Result<Self, ApiError> {
        let invalid = |what: &str, e: &dyn std::fmt::Display| {
            ApiError::bad_request(format!("identity: {what}: {e}"))
        };
        let member = Member {
            client_id: identity
                .client_id()
                .parse()
                .map_err(|e| invalid("client id", &e))?,
            area: identity.area.parse().map_err(|e| invalid("area", &e))?,
        };
        let shared = state.clone();
        let area = identity.area.clone();
        let bus =
            tokio::task::spawn_blocking(move || shared.shared.session_buses.get(&shared, &area))
                .await
                .map_err(|e| ApiError::internal(e.to_string()))??;
        Ok(Self {
            state: state.clone(),
            bus,
            member,
            link,
            subscriptions: HashMap::new(),
            next_subscription: 1,
            // With security on, a session takes from its principal's bucket, so opening a
            // session per message gains nothing.
            limit: state
                .shared
                .limits
                .session(caller.principal().map(|_| caller.rate_key())),
            caller,
        })
    }

    async fn handle(&mut self, frame: ClientFrame) {
        match frame {
            ClientFrame::Hello { .. } => {
                let error = ApiError::bad_request("hello was already received");
                self.send(ServerFrame::error(None, &error)).await;
            }
            ClientFrame::Heartbeat { reference } => {
                self.send(ServerFrame::Heartbeat { reference }).await;
            }
            ClientFrame::Subscribe {
                reference,
                topic,
                group,
                mode,
                start,
                responder,
            } => match self.subscribe(topic, group, mode, start, responder).await {
                Ok(subscription) => {
                    let frame = ServerFrame::Subscribed {
                        reference,
                        subscription: subscription.clone(),
                    };
                    self.send(frame).await;
                    if let Some(running) = self.subscriptions.get(&subscription) {
                        running.open();
                    }
                }
                Err(error) => self.send(ServerFrame::error(reference, &error)).await,
            },
            ClientFrame::Unsubscribe {
                reference,
                subscription,
            } => {
                let frame = match self.subscriptions.remove(&subscription) {
                    Some(running) => {
                        let _ = tokio::task::spawn_blocking(move || running.close()).await;
                        ServerFrame::Unsubscribed {
                            reference,
                            subscription,
                        }
                    }
                    None => ServerFrame::error(
                        reference,
                        &ApiError::not_found(format!("no subscription {subscription}")),
                    ),
                };
                self.send(frame).await;
            }
            ClientFrame::Publish {
                reference,
                topic,
                service,
                value,
                value_b64,
                key,
                tag,
                properties,
                trace,
                ttl_ms,
                delay_ms,
                deliver_at_ms,
            } => {
                let outgoing = Outgoing {
                    topic,
                    service,
                    value,
                    value_b64,
                    key,
                    tag,
                    properties,
                    trace,
                    ttl_ms,
                    delay_ms,
                    deliver_at_ms,
                };
                let message = match self.admit(outgoing, Action::Produce).await {
                    Ok(message) => message,
                    Err(error) => return self.send(ServerFrame::error(reference, &error)).await,
                };
                let outbox = self.link.outbox.clone();
                // Publishes run concurrently; each answer goes out when its ack comes. With
                // the batcher on, submitting only queues the message: no blocking thread is
                // held per publish, and the future ends at the send timeout at the latest.
                let sent = self.bus.producer().send_async(message);
                tokio::spawn(async move {
                    let frame = match sent.await {
                        Ok(result) => ServerFrame::Published {
                            reference,
                            stored: Stored::from(result),
                        },
                        Err(e) => ServerFrame::error(reference, &ApiError::from(e)),
                    };
                    let _ = outbox.send(frame).await;
                });
            }
            ClientFrame::Request {
                reference,
                topic,
                service,
                value,
                value_b64,
                key,
                tag,
                properties,
                timeout_ms,
                trace,
            } => {
                let outgoing = Outgoing {
                    topic,
                    service,
                    value,
                    value_b64,
                    key,
                    tag,
                    properties,
                    trace,
                    ttl_ms: None,
                    delay_ms: None,
                    deliver_at_ms: None,
                };
                let admitted = match request_timeout(&self.state, timeout_ms) {
                    Ok(timeout) => self
                        .admit(outgoing, Action::Request)
                        .await
                        .map(|m| (timeout, m)),
                    Err(e) => Err(e),
                };
                let (timeout, message) = match admitted {
                    Ok(admitted) => admitted,
                    Err(error) => return self.send(ServerFrame::error(reference, &error)).await,
                };
                let requester = self.bus.requester().clone();
                let outbox = self.link.outbox.clone();
                tokio::spawn(async move {
                    let frame = match request_reply(requester, message, timeout).await {
                        Ok(reply) => ServerFrame::Reply {
                            reference,
                            message: DeliveredMessage::from(&reply),
                        },
                        Err(error) => ServerFrame::error(reference, &error),
                    };
                    let _ = outbox.send(frame).await;
                });
            }
            ClientFrame::Reply {
                delivery,
                value,
                value_b64,
                trace,
            } => {
                let answer = payload(value.as_deref(), value_b64.as_deref()).and_then(|value| {
                    let answer = client::Answer::new(value);
                    match trace.as_ref().map(crate::trace::TraceFields::to_context) {
                        Some(context) => Ok(answer.with_trace(context?)),
                        None => Ok(answer),
                    }
                });
                let answer = match answer {
                    Ok(answer) => answer,
                    Err(error) => return self.send(ServerFrame::error(None, &error)).await,
                };
                if !self.link.replies.complete(delivery, answer) {
                    let error = ApiError::not_found(format!(
                        "no request awaits a reply with delivery {delivery} (expired or answered)"
                    ));
                    self.send(ServerFrame::error(None, &error)).await;
                }
            }
            ClientFrame::Ack {
                delivery,
                deliveries,
            } => {
                for delivery in delivery.into_iter().chain(deliveries) {
                    if !self.link.window.ack(delivery) {
                        log::debug!("ack of unknown delivery {delivery}");
                    }
                }
            }
            ClientFrame::Nack {
                reference,
                delivery,
                reason,
            } => {
                let nack = super::pump::Nack {
                    delivery,
                    reason,
                    reference: reference.clone(),
                };
                if !self.link.window.nack(nack) {
                    let error =
                        ApiError::not_found(format!("no unacked message with delivery {delivery}"));
                    self.send(ServerFrame::error(reference, &error)).await;
                }
            }
            ClientFrame::Goodbye {} => {}
        }
    }

    /// The bus message of a `publish` or `request` (`action`), once it is valid, the caller is
    /// granted it and the session's rate limit lets it through.
    async fn admit(&self, outgoing: Outgoing, action: Action) -> Result<client::Message, ApiError> {
        let mut outgoing = [OutgoingMessage::from(outgoing)];
        crate::api::resolve_services(self.bus.client(), &mut outgoing).await?;
        let message = outgoing[0].to_message()?;
        self.caller
            .check(&self.state, action, message.topic(), None)?;
        self.limit.check(1)?;
        Ok(message)
    }

    async fn subscribe(
        &mut self,
        topic: String,
        group: String,
        mode: Mode,
        start: Start,
        responder: bool,
    ) -> Result<String, ApiError> {
        if self.subscriptions.len() >= WS_SESSION_SUBSCRIPTIONS_MAX {
            return Err(ApiError::too_many(format!(
                "at most {WS_SESSION_SUBSCRIPTIONS_MAX} subscriptions per session"
            )));
        }
        topic
            .parse::<protocol::names::Topic>()
            .map_err(|e| ApiError::bad_request(e.to_string()))?;
        group
            .parse::<protocol::names::GroupName>()
            .map_err(|e| ApiError::bad_request(e.to_string()))?;
        self.caller
            .check(&self.state, Action::Consume, &topic, Some(&group))?;
        // A responder answers what it takes: the caller must be allowed both.
        if responder {
            self.caller
                .check(&self.state, Action::Respond, &topic, None)?;
        }
        let id = format!("s{}", self.next_subscription);
        self.next_subscription += 1;
        let bus = self.bus.clone();
        let member = self.member.clone();
        let link = self.link.clone();
        let commit_interval = Duration::from_millis(self.state.config.ws_commit_interval_ms);
        let subscription_id = id.clone();
        let running = tokio::task::spawn_blocking(move || {
            if responder {
                let gate = Gate::default();
                let handler = responder_handler(subscription_id, link, gate.clone());
                let options = ResponderOptions::new(topic, group).as_member(member);
                let responder = Responder::start_with(bus.client(), options, handler)?;
                return Ok(Subscription::requests(responder, gate));
            }
            let options = ConsumerOptions::new(topic, group, mode.into())
                .start_from(start.into())
                .manual_commit()
                .as_member(member);
            let consumer = client::Consumer::subscribe_with(bus.client(), options)?;
            Subscription::messages(subscription_id, consumer, link, commit_interval).map_err(
                |source| client::ClientError::Io {
                    endpoint: "(local)".into(),
                    source,
                },
            )
        })
        .await
        .map_err(|e| ApiError::internal(e.to_string()))??;
        self.subscriptions.insert(id.clone(), running);
        Ok(id)
    }

    async fn send(&self, frame: ServerFrame) {
        let _ = self.link.outbox.send(frame).await;
    }

    /// Closes every subscription (blocking work, off the runtime); the area's client stays
    /// for the area's other sessions.
    async fn close(self) {
        let subscriptions: Vec<Subscription> = self.subscriptions.into_values().collect();
        let closed = tokio::task::spawn_blocking(move || {
            for subscription in subscriptions {
                subscription.close();
            }
        })
        .await;
        if let Err(e) = closed {
            log::error!("closing a session's subscriptions panicked: {e}");
        }
    }
}
