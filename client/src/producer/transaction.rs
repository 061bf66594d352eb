//! Held messages from the producer's side (ARCHITECTURE §13.3-§13.4): the id of a delayed
//! or half message, and the transactional producer with its check-back handler.
//!
//! A half message is stored by the broker but invisible; the application runs its local
//! transaction, then commits (the message is delivered) or rolls back (it never is). When the
//! producer dies first, the broker asks the producer group (`TransactionCheck`); the handler
//! registered here answers on the client's task thread, never the connection's reader.

use std::collections::HashSet;
use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, Mutex, PoisonError, Weak};

use protocol::codes::Command;
use protocol::control::{self, CheckRegistration, EndTransaction, HeldRef, TransactionCheck};
use protocol::names::GroupName;
use protocol::record::BatchView;

use super::{Producer, SendResult};
use crate::client::{Client, ClientInner};
use crate::error::{ClientError, Result};
use crate::message::{Message, ReceivedMessage};

/// Where a delayed or half message is held: its broker, queue and held-log offset. Written
/// `topic/queue/offset@broker`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct HeldId {
    /// The broker holding it.
    pub broker_id: String,
    /// The topic.
    pub topic: String,
    /// The queue id on that broker.
    pub queue_id: u32,
    /// Its offset in the queue's held log.
    pub offset: u64,
}

impl HeldId {
    /// The id as the broker knows it.
    pub fn held_ref(&self) -> HeldRef {
        HeldRef {
            topic: self.topic.clone(),
            queue_id: self.queue_id,
            offset: self.offset,
        }
    }
}

impl fmt::Display for HeldId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.held_ref(), self.broker_id)
    }
}

impl FromStr for HeldId {
    type Err = ClientError;

    fn from_str(text: &str) -> Result<Self> {
        let (held, broker) = text.rsplit_once('@').ok_or_else(|| {
            ClientError::InvalidArgument(format!("{text:?}: expected topic/queue/offset@broker"))
        })?;
        let held: HeldRef = held
            .parse()
            .map_err(|e| ClientError::InvalidArgument(format!("{text:?}: {e}")))?;
        Ok(Self {
            broker_id: broker.to_owned(),
            topic: held.topic,
            queue_id: held.queue_id,
            offset: held.offset,
        })
    }
}

/// Sends `body` as `command` to the broker shard that holds `id`'s queue.
pub(crate) fn call_held(
    client: &ClientInner,
    id: &HeldId,
    command: Command,
    body: &[u8],
) -> Result<()> {
    let route = client.route(&id.topic)?;
    let queue = route
        .route
        .queues
        .iter()
        .find(|q| q.broker_id == id.broker_id && q.queue_id == id.queue_id)
        .ok_or_else(|| ClientError::NoRoute {
            topic: id.topic.clone(),
        })?;
    let conn = client.broker(&crate::route::endpoint_of(queue))?;
    conn.call(command, &[], body, client.config.request_timeout)?;
    Ok(())
}

/// What a check handler says of a half message's local transaction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TransactionOutcome {
    /// It committed: deliver the message.
    Commit,
    /// It rolled back: discard the message.
    Rollback,
    /// Not known yet: the broker asks again later (up to its limit, then applies its default).
    Unknown,
}

/// A half message the broker asks about.
#[derive(Clone, Debug)]
pub struct HalfMessage {
    /// The message (its offset is its held-log offset).
    pub message: ReceivedMessage,
    /// Which check this is, from 1.
    pub check: u32,
}

/// Handles one check-back: the endpoint it came from and the check.
pub(crate) type CheckHandler = Arc<dyn Fn(&str, TransactionCheck) + Send + Sync>;

/// Sends half messages for a producer group and answers the group's check-backs.
pub struct TransactionalProducer {
    producer: Producer,
    group: String,
    client: Arc<ClientInner>,
    /// Endpoints whose connection was registered for the group's checks.
    registered: Mutex<HashSet<String>>,
}

impl fmt::Debug for TransactionalProducer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TransactionalProducer")
            .field("group", &self.group)
            .finish()
    }
}

impl TransactionalProducer {
    /// A producer of `producer_group`'s halves; `handler` answers the broker's check-backs
    /// for halves whose producer did not commit or roll back in time (any member of the group
    /// may be asked). It runs on the client's task thread.
    pub fn new(
        client: &Client,
        producer_group: &str,
        handler: impl Fn(&HalfMessage) -> TransactionOutcome + Send + Sync + 'static,
    ) -> Result<Self> {
        producer_group
            .parse::<GroupName>()
            .map_err(|e| ClientError::InvalidArgument(e.to_string()))?;
        let weak: Weak<ClientInner> = Arc::downgrade(&client.inner);
        let handler = Arc::new(handler);
        let on_check: CheckHandler = Arc::new(move |endpoint, check| {
            let Some(client) = weak.upgrade() else {
                return;
            };
            let (handler, endpoint, inner) = (handler.clone(), endpoint.to_owned(), client.clone());
            let task = Box::new(move || answer_check(&inner, &endpoint, check, &*handler));
            if let Err(e) = client.spawn_task(task) {
                log::warn!("a transaction check is left for the broker to ask again: {e}");
            }
        });
        client
            .inner
            .replies
            .set_check_handler(producer_group, on_check);
        Ok(Self {
            producer: Producer::new(client)?,
            group: producer_group.to_owned(),
            client: client.inner.clone(),
            registered: Mutex::new(HashSet::new()),
        })
    }

    /// The producer group.
    pub fn producer_group(&self) -> &str {
        &self.group
    }

    /// Answers the check-backs of `topic`'s halves from now on, also for halves another
    /// member of the group sent (every broker shard of the topic learns of this client).
    pub fn listen(&self, topic: &str) -> Result<()> {
        let route = self.client.route(topic)?;
        for queue in &route.route.queues {
            self.register(&crate::route::endpoint_of(queue), true)?;
        }
        Ok(())
    }

    fn register(&self, endpoint: &str, again: bool) -> Result<()> {
        let fresh = self
            .registered
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(endpoint.to_owned());
        if !fresh && !again {
            return Ok(());
        }
        let body = control::encode(&CheckRegistration {
            producer_group: self.group.clone(),
        })
        .map_err(|e| ClientError::control(endpoint, e))?;
        let conn = self.client.broker(endpoint)?;
        conn.call(
            Command::TransactionCheck,
            &[],
            &body,
            self.client.config.request_timeout,
        )?;
        Ok(())
    }

    /// Sends `message` as a half: stored, invisible until [`Half::commit`].
    pub fn send_half(&self, message: Message) -> Result<Half> {
        let sent: SendResult = self.producer.send(message.into_half(&self.group))?;
        let id = sent.held_id().ok_or_else(|| {
            ClientError::InvalidArgument("the broker did not hold the half".into())
        })?;
        // The broker asks this connection's group when no outcome comes in time.
        if let Some(endpoint) = self.endpoint_of(&id) {
            self.register(&endpoint, false)?;
        }
        Ok(Half {
            id,
            client: self.client.clone(),
        })
    }

    fn endpoint_of(&self, id: &HeldId) -> Option<String> {
        let route = self.client.route(&id.topic).ok()?;
        let queue = route
            .route
            .queues
            .iter()
            .find(|q| q.broker_id == id.broker_id && q.queue_id == id.queue_id)?;
        Some(crate::route::endpoint_of(queue))
    }
}

/// Runs the handler for one check and sends its answer back on the connection it came on.
fn answer_check(
    client: &ClientInner,
    endpoint: &str,
    check: TransactionCheck,
    handler: &(dyn Fn(&HalfMessage) -> TransactionOutcome + Send + Sync),
) {
    let Ok(view) = BatchView::parse(&check.batch, protocol::record::BATCH_LEN_MAX) else {
        log::warn!("{endpoint}: a transaction check without a valid half record");
        return;
    };
    let Some(record) = view.records().next() else {
        return;
    };
    let mut message =
        ReceivedMessage::from_record(&record, &check.id.topic, check.id.queue_id, endpoint);
    message.offset = check.id.offset;
    let half = HalfMessage {
        message,
        check: check.check,
    };
    let commit = match handler(&half) {
        TransactionOutcome::Commit => true,
        TransactionOutcome::Rollback => false,
        TransactionOutcome::Unknown => return,
    };
    let answered = control::encode(&EndTransaction {
        id: check.id,
        commit,
    })
    .map_err(|e| ClientError::control(endpoint, e))
    .and_then(|body| {
        let conn = client.broker(endpoint)?;
        conn.call(
            Command::EndTransaction,
            &[],
            &body,
            client.config.request_timeout,
        )
    });
    if let Err(e) = answered {
        log::warn!("{endpoint}: answering a transaction check failed: {e}");
    }
}

/// A half message sent and awaiting its outcome.
#[derive(Clone)]
pub struct Half {
    id: HeldId,
    client: Arc<ClientInner>,
}

impl fmt::Debug for Half {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Half").field(&self.id).finish()
    }
}

impl Half {
    /// The half `id` sent earlier, by this process or another member of its group, to give
    /// its outcome by id alone (what the HTTP proxy does for its callers).
    pub fn of(client: &Client, id: HeldId) -> Self {
        Self {
            id,
            client: client.inner.clone(),
        }
    }

    /// Its id.
    pub fn id(&self) -> &HeldId {
        &self.id
    }

    /// Delivers the message. Committing twice is no error; after a rollback it is refused
    /// (status `HeldSettled`, 211).
    pub fn commit(&self) -> Result<()> {
        self.end(true)
    }

    /// Discards the message: it is never delivered.
    pub fn rollback(&self) -> Result<()> {
        self.end(false)
    }

    fn end(&self, commit: bool) -> Result<()> {
        let body = control::encode(&EndTransaction {
            id: self.id.held_ref(),
            commit,
        })
        .map_err(|e| ClientError::control(&self.id.broker_id, e))?;
        call_held(&self.client, &self.id, Command::EndTransaction, &body)
    }
}
