//! Messages as applications build and receive them, and their record encoding.

use std::time::{SystemTime, UNIX_EPOCH};

use protocol::names::Area;
use protocol::record::{BatchBuilder, MessageType, Property, Record, RecordView};
use protocol::trace::{TraceContext, TraceParent, TraceState};

use crate::error::Result;

/// A message to send: a topic, an optional key, a value and properties.
///
/// ```
/// let message = client::Message::new("A10-20190001", b"hello".to_vec())
///     .with_key(b"order-42".to_vec())
///     .with_tag("gray")
///     .with_property("trace", b"abc".to_vec());
/// assert_eq!(message.topic(), "A10-20190001");
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Message {
    topic: String,
    key: Vec<u8>,
    value: Vec<u8>,
    tag: Option<String>,
    properties: Vec<(String, Vec<u8>)>,
    trace: Option<TraceContext>,
    ttl: Option<std::time::Duration>,
    /// Delayed: when the broker delivers it, Unix ms (ARCHITECTURE §13.3).
    deliver_at_ms: Option<u64>,
    /// A transactional half: its producer group (set by `TransactionalProducer`).
    txn_group: Option<String>,
}

impl Message {
    /// A message for `topic` (`[area]-[serviceId]`) carrying `value`.
    pub fn new(topic: impl Into<String>, value: impl Into<Vec<u8>>) -> Self {
        Self {
            topic: topic.into(),
            value: value.into(),
            ..Self::default()
        }
    }

    /// A message for a service, carrying `value`: its topic is chosen when it is sent by
    /// service id (`Producer::send_to_service`, `Requester::request_service`).
    pub fn for_service(value: impl Into<Vec<u8>>) -> Self {
        Self::new(String::new(), value)
    }

    /// Sets the topic.
    pub fn with_topic(mut self, topic: impl Into<String>) -> Self {
        self.topic = topic.into();
        self
    }

    /// Sets the key; with key-hash queue selection, equal keys go to one queue, in order.
    pub fn with_key(mut self, key: impl Into<Vec<u8>>) -> Self {
        self.key = key.into();
        self
    }

    /// Sets the dark-launch or filtering tag.
    pub fn with_tag(mut self, tag: impl Into<String>) -> Self {
        self.tag = Some(tag.into());
        self
    }

    /// Adds a user property (key at most 255 bytes).
    pub fn with_property(mut self, key: impl Into<String>, value: impl Into<Vec<u8>>) -> Self {
        self.properties.push((key.into(), value.into()));
        self
    }

    /// Sets the W3C trace context (`traceparent` and optional `tracestate`), carried unchanged
    /// to every consumer of the message and, for a request, to its responder. Parse header
    /// values with [`TraceContext::parse`], which refuses invalid ones with the rule they
    /// break.
    ///
    /// ```
    /// let context = client::TraceContext::parse(
    ///     Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
    ///     Some("rojo=00f067aa0ba902b7"),
    /// )?
    /// .expect("a traceparent was given");
    /// let message = client::Message::new("A10-20190001", b"hello".to_vec()).with_trace(context);
    /// assert!(message.trace().is_some());
    /// # Ok::<(), client::ClientError>(())
    /// ```
    pub fn with_trace(mut self, context: TraceContext) -> Self {
        self.trace = Some(context);
        self
    }

    /// Starts a new trace with this message: a random trace id and span id, sampled
    /// ([`crate::trace::new_trace`]). Messages get no context unless asked.
    pub fn with_new_trace(self) -> Self {
        self.with_trace(crate::trace::new_trace())
    }

    /// Sets a time-to-live on an event (ARCHITECTURE §13.5): a message still undelivered
    /// `ttl` after it is sent is never delivered, and is counted
    /// (`defibus_queue_expired_events`). Stored as the record's deadline, the one requests
    /// carry; a request's own timeout sets its deadline, so this applies to events only.
    pub fn with_ttl(mut self, ttl: std::time::Duration) -> Self {
        self.ttl = Some(ttl);
        self
    }

    /// The time-to-live, if set.
    pub fn ttl(&self) -> Option<std::time::Duration> {
        self.ttl
    }

    /// Delays the message: the broker holds it durably and delivers it at `at` (its clock),
    /// not before. A producer can cancel it until then ([`crate::Producer::cancel`]).
    ///
    /// ```
    /// use std::time::{Duration, SystemTime};
    /// let at = SystemTime::now() + Duration::from_secs(30);
    /// let message = client::Message::new("A10-20190001", b"later".to_vec()).deliver_at(at);
    /// assert!(message.deliver_at_ms().is_some());
    /// ```
    pub fn deliver_at(mut self, at: SystemTime) -> Self {
        let ms = at
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        self.deliver_at_ms = Some(ms);
        self
    }

    /// Delays the message by `delay` from now ([`Self::deliver_at`]).
    pub fn with_delay(self, delay: std::time::Duration) -> Self {
        self.deliver_at(SystemTime::now() + delay)
    }

    /// When a delayed message is due, Unix ms.
    pub fn deliver_at_ms(&self) -> Option<u64> {
        self.deliver_at_ms
    }

    /// Makes the message a transactional half of `group`.
    pub(crate) fn into_half(mut self, group: &str) -> Self {
        self.txn_group = Some(group.to_owned());
        self
    }

    /// True for delayed and half messages: the broker holds them, so they travel in batches
    /// of their own.
    pub(crate) fn is_held(&self) -> bool {
        self.deliver_at_ms.is_some() || self.txn_group.is_some()
    }

    /// The trace context, if set.
    pub fn trace(&self) -> Option<&TraceContext> {
        self.trace.as_ref()
    }

    /// The topic.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// The key; empty when none was set.
    pub fn key(&self) -> &[u8] {
        &self.key
    }

    /// The value.
    pub fn value(&self) -> &[u8] {
        &self.value
    }

    /// The tag, if set.
    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    /// The user properties, in the order added.
    pub fn properties(&self) -> &[(String, Vec<u8>)] {
        &self.properties
    }

    /// Appends this message to `builder` as one record of `message_type`, with the sender's
    /// area and the request-reply properties in `extra`.
    pub(crate) fn append_to(
        &self,
        builder: &mut BatchBuilder,
        message_type: MessageType,
        area: Area,
        extra: &[Property<'_>],
    ) -> Result<()> {
        // Listed straight, not through a chain of iterator adapters: this runs per message,
        // and an adapter per optional property cost ~10% of a 100 B send.
        let mut list = PropertyList::new(Property::Area(area));
        for property in extra {
            list.push(*property);
        }
        let now = now_ms();
        if let (Some(ttl), MessageType::Event) = (self.ttl, message_type) {
            let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
            list.push(Property::DeadlineMs(now.saturating_add(ttl_ms)));
        }
        list.push(Property::Area(area));
        if let Some(tag) = &self.tag {
            list.push(Property::Tag(tag));
        }
        if let Some(trace) = &self.trace {
            list.push(Property::TraceParent(trace.parent));
            if let Some(state) = trace.tracestate() {
                list.push(Property::TraceState(state));
            }
        }
        if let Some(at) = self.deliver_at_ms {
            list.push(Property::DeliverAtMs(at));
        }
        if let Some(group) = &self.txn_group {
            list.push(Property::TxnGroup(group));
        }
        for (key, value) in &self.properties {
            list.push(Property::User { key, value });
        }
        builder.push(&Record {
            timestamp_ms: now as i64,
            message_type,
            key: &self.key,
            properties: list.as_slice(),
            value: &self.value,
        })?;
        Ok(())
    }
}

/// A record's properties as they are listed for encoding: on the stack while they fit (the
/// usual message: the request-reply trio, the area, a tag, a trace context and a user
/// property; no allocation per send), on the heap past that.
struct PropertyList<'a> {
    inline: [Property<'a>; INLINE_PROPERTIES],
    len: usize,
    heap: Vec<Property<'a>>,
}

impl<'a> PropertyList<'a> {
    /// An empty list; `filler` only initialises the unused slots.
    fn new(filler: Property<'a>) -> Self {
        Self {
            inline: [filler; INLINE_PROPERTIES],
            len: 0,
            heap: Vec::new(),
        }
    }

    fn push(&mut self, property: Property<'a>) {
        if self.heap.is_empty() && self.len < INLINE_PROPERTIES {
            self.inline[self.len] = property;
            self.len += 1;
            return;
        }
        if self.heap.is_empty() {
            self.heap.extend_from_slice(&self.inline[..self.len]);
        }
        self.heap.push(property);
    }

    fn as_slice(&self) -> &[Property<'a>] {
        if self.heap.is_empty() {
            &self.inline[..self.len]
        } else {
            &self.heap
        }
    }
}

/// Properties a record lists without allocating when it is encoded.
const INLINE_PROPERTIES: usize = 8;

/// A message as a consumer, responder or requester receives it: an owned copy of one record
/// with where it came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReceivedMessage {
    /// The topic.
    pub topic: String,
    /// The queue id on its broker.
    pub queue_id: u32,
    /// The record's offset in its queue.
    pub offset: u64,
    /// The broker endpoint (`host:port`) that delivered it.
    pub endpoint: String,
    /// Create time, Unix milliseconds.
    pub timestamp_ms: i64,
    /// Event, request or reply.
    pub message_type: MessageType,
    /// The key; empty when none was set.
    pub key: Vec<u8>,
    /// The value.
    pub value: Vec<u8>,
    /// The dark-launch or filtering tag.
    pub tag: Option<String>,
    /// The sender's area.
    pub area: Option<Area>,
    /// On requests and replies: the requester's client id.
    pub reply_to: Option<String>,
    /// On requests and replies: the id pairing them.
    pub correlation_id: Option<Vec<u8>>,
    /// On requests, and events with a time-to-live: the absolute deadline, Unix ms.
    pub deadline_ms: Option<u64>,
    /// User properties, in the order they were added.
    pub properties: Vec<(String, Vec<u8>)>,
    /// The W3C trace context, as the sender gave it.
    pub trace: Option<TraceContext>,
    /// On a delayed message: when it was due, Unix milliseconds.
    pub deliver_at_ms: Option<u64>,
    /// Set when this is a redelivery of a message the group rejected before (§13.2): which
    /// one, and where the original is.
    pub redelivery: Option<Redelivery>,
}

/// What a redelivered message says of its past (its retry mark): it came from the group's
/// retry topic (or, read by `defibus dlq`, its dead-letter topic).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Redelivery {
    /// Which redelivery this is: 1 for the first.
    pub attempt: u32,
    /// The topic the message was first delivered from.
    pub origin_topic: String,
    /// Its queue there.
    pub origin_queue_id: u32,
    /// Its offset there.
    pub origin_offset: u64,
    /// The group that rejected it.
    pub group: String,
    /// Why the last delivery was rejected, as the consumer said (may be empty).
    pub reason: String,
    /// When it was due for redelivery, Unix ms (0 in a dead-letter topic).
    pub due_ms: u64,
}

impl ReceivedMessage {
    /// Copies `record` out of its batch.
    pub(crate) fn from_record(
        record: &RecordView<'_>,
        topic: &str,
        queue_id: u32,
        endpoint: &str,
    ) -> Self {
        let mut message = Self {
            topic: topic.to_owned(),
            queue_id,
            offset: record.offset(),
            endpoint: endpoint.to_owned(),
            timestamp_ms: record.timestamp_ms(),
            message_type: record.message_type(),
            key: record.key().to_vec(),
            value: record.value().to_vec(),
            tag: None,
            area: None,
            reply_to: None,
            correlation_id: None,
            deadline_ms: None,
            properties: Vec::new(),
            trace: None,
            redelivery: None,
            deliver_at_ms: None,
        };
        let mut trace_parent: Option<TraceParent> = None;
        let mut trace_state: Option<&str> = None;
        // The batch was validated when parsed, so property errors cannot occur here.
        for property in record.properties().flatten() {
            match property {
                Property::ReplyTo(v) => message.reply_to = Some(v.to_owned()),
                Property::CorrelationId(v) => message.correlation_id = Some(v.to_vec()),
                Property::DeadlineMs(v) => message.deadline_ms = Some(v),
                Property::Area(v) => message.area = Some(v),
                Property::Tag(v) => message.tag = Some(v.to_owned()),
                Property::TraceParent(v) => trace_parent = Some(v),
                Property::TraceState(v) => trace_state = Some(v),
                Property::User { key, value } => {
                    message.properties.push((key.to_owned(), value.to_vec()))
                }
                Property::Retry(mark) => {
                    message.redelivery = Some(Redelivery {
                        attempt: u32::from(mark.attempt),
                        origin_topic: mark.origin_topic.to_owned(),
                        origin_queue_id: mark.origin_queue,
                        origin_offset: mark.origin_offset,
                        group: mark.group.to_owned(),
                        reason: mark.reason.to_owned(),
                        due_ms: mark.due_ms,
                    })
                }
                Property::DeliverAtMs(v) => message.deliver_at_ms = Some(v),
                Property::HeldOrigin(_) | Property::TxnGroup(_) | Property::Unknown { .. } => {}
            }
        }
        // A stored tracestate passed its checks at parse; one without a traceparent beside
        // it (a hand-built record) is dropped, as W3C asks of a tracestate on its own.
        message.trace = trace_parent.map(|parent| TraceContext {
            parent,
            state: trace_state.and_then(|s| TraceState::parse(s).ok()),
        });
        message
    }

    /// The value of the first user property named `key`.
    pub fn property(&self, key: &str) -> Option<&[u8]> {
        self.properties
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_slice())
    }

    /// How many times this message was delivered before and rejected: 0 for a first
    /// delivery.
    pub fn redelivery_count(&self) -> u32 {
        self.redelivery.as_ref().map_or(0, |r| r.attempt)
    }

    /// The topic the message was produced to: its origin for a redelivery (which arrives
    /// from the group's retry topic, [`Self::topic`]), else its own topic.
    pub fn origin_topic(&self) -> &str {
        self.redelivery
            .as_ref()
            .map_or(&self.topic, |r| &r.origin_topic)
    }

    /// True for a request whose deadline has passed (nobody waits for its reply any more),
    /// or an event whose time-to-live has.
    pub fn is_expired(&self) -> bool {
        self.deadline_ms.is_some_and(|deadline| deadline < now_ms())
    }
}

/// A reply to a request, as the requester receives it.
pub type Reply = ReceivedMessage;

/// The wall clock in Unix milliseconds, which deadlines and timestamps are measured in.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::record::{BATCH_LEN_MAX, BatchView};

    #[test]
    fn messages_encode_to_records_and_come_back() {
        let area: Area = "A10".parse().unwrap();
        let mut builder = BatchBuilder::new(BATCH_LEN_MAX);
        let message = Message::new("A10-1", b"v".to_vec())
            .with_key(b"k".to_vec())
            .with_tag("gray")
            .with_property("p", b"1".to_vec());
        message
            .append_to(&mut builder, MessageType::Event, area, &[])
            .unwrap();
        Message::new("A10-1", b"w".to_vec())
            .append_to(
                &mut builder,
                MessageType::Request,
                area,
                &[
                    Property::ReplyTo("me@1#A10"),
                    Property::CorrelationId(b"c"),
                    Property::DeadlineMs(5),
                ],
            )
            .unwrap();
        let bytes = builder.finish().unwrap();
        let batch = BatchView::parse(&bytes, BATCH_LEN_MAX).unwrap();
        let got: Vec<_> = batch
            .records()
            .map(|r| ReceivedMessage::from_record(&r, "A10-1", 3, "h:1"))
            .collect();
        assert_eq!(got[0].value, b"v");
        assert_eq!(got[0].key, b"k");
        assert_eq!(got[0].tag.as_deref(), Some("gray"));
        assert_eq!(got[0].property("p"), Some(&b"1"[..]));
        assert_eq!(got[0].area, Some(area));
        assert_eq!((got[1].offset, got[1].queue_id), (1, 3));
        assert_eq!(got[1].message_type, MessageType::Request);
        assert_eq!(got[1].reply_to.as_deref(), Some("me@1#A10"));
        assert!(got[1].is_expired());
        assert!(!got[0].is_expired());
    }

    #[test]
    fn trace_contexts_and_many_properties_survive_encoding() {
        let area: Area = "A10".parse().unwrap();
        let context = crate::trace::new_trace();
        let mut message = Message::new("A10-1", b"v".to_vec())
            .with_tag("t")
            .with_trace(TraceContext {
                state: Some(TraceState::parse("rojo=1").unwrap()),
                ..context.clone()
            });
        // Past the inline list: ten user properties spill onto the heap, in order.
        for i in 0..10 {
            message = message.with_property(format!("p{i}"), vec![i]);
        }
        let mut builder = BatchBuilder::new(BATCH_LEN_MAX);
        message
            .append_to(&mut builder, MessageType::Event, area, &[])
            .unwrap();
        let bytes = builder.finish().unwrap();
        let batch = BatchView::parse(&bytes, BATCH_LEN_MAX).unwrap();
        let got = ReceivedMessage::from_record(&batch.records().next().unwrap(), "A10-1", 0, "h:1");
        let trace = got.trace.expect("the context");
        assert_eq!(trace.parent, context.parent);
        assert_eq!(trace.tracestate(), Some("rojo=1"));
        assert_eq!(got.tag.as_deref(), Some("t"));
        let keys: Vec<&str> = got.properties.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, (0..10).map(|i| format!("p{i}")).collect::<Vec<_>>());
        assert_eq!(message.trace().map(|t| t.parent), Some(context.parent));
    }
}
