//! The DeFiBus Rust SDK.
//!
//! No async runtime of its own: blocking `std::net` sockets, one reader thread per connection
//! that completes requests by id and dispatches pushes, writes on the caller's thread under a
//! lock. Sync calls block with a timeout; async calls return runtime-agnostic futures, so the
//! SDK works from plain threads, from tokio, or from anything else.
//!
//! - [`Client`]: identity, connection pool (one connection per broker shard or nameserver,
//!   reconnected with jittered backoff), route cache, heartbeats;
//! - [`Producer`]: sync, async, callback and oneway sends; optional batching with linger;
//!   round-robin or key-hash queue choice, own area first (nearby send, `min_local_queues`);
//!   retry on another broker; failed queues isolated until a probe hears their broker again;
//! - [`Consumer`]: clustering or broadcast; handler or pull style; credit window; auto or
//!   manual commit; resubscribes after reconnects; leaves a stalled broker alone for a while;
//! - [`Requester`] and [`Responder`]: request-reply with deadlines and typed timeouts; a
//!   responder's handler runs on a thread of its own, or on the connections' reader threads
//!   ([`ResponderOptions::inline`], for quick handlers); [`Replier`] answers a request later,
//!   by its [`ReplyAddress`];
//! - [`Admin`]: topics, routes, cluster info and statistics; one message's life
//!   ([`Admin::trace`]);
//! - [`trace`]: W3C trace context carried by messages ([`Message::with_trace`],
//!   [`Message::with_new_trace`], [`ReceivedMessage::trace`]), from requests to replies;
//! - [`ServiceLocator`] ([`Client::locator`], with [`ClientConfig::with_gsl`]): services by
//!   id through GSL, nearest deployment first; every role above has a by-service-id form
//!   ([`Producer::send_to_service`], [`Requester::request_service`],
//!   [`Responder::start_service`], [`Consumer::subscribe_service`]).
//!
//! ```no_run
//! use client::{Client, ClientConfig, Message, Producer};
//! let client = Client::new(ClientConfig::new(["127.0.0.1:9876"], "A10")?)?;
//! let producer = Producer::new(&client)?;
//! let sent = producer.send(Message::new("A10-20190001", b"hello".to_vec()))?;
//! println!("stored at offset {} of queue {}", sent.offset, sent.queue_id);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![deny(unsafe_code)]
#![warn(missing_docs)]

mod admin;
mod backoff;
mod client;
pub mod config;
mod consumer;
mod error;
mod idempotence;
mod isolation;
mod locator;
mod message;
mod net;
mod producer;
mod route;
mod rr;
mod send;
mod slot;
mod spin;
mod timer;
pub mod trace;

pub use admin::{Admin, TraceLookup};
pub use backoff::Backoff;
pub use client::Client;
pub use config::ClientConfig;
pub use consumer::{
    CommitMode, ConsumeMode, Consumer, ConsumerOptions, Member, Nacked, RetryPolicy, StartFrom,
};
pub use error::{ClientError, Result};
pub use locator::ServiceLocator;
pub use message::{Message, ReceivedMessage, Redelivery, Reply};
pub use producer::{
    Half, HalfMessage, HeldId, Producer, QueueSelector, SendFuture, SendResult, TransactionOutcome,
    TransactionalProducer,
};
pub use route::QueueTarget;
pub use rr::{Answer, Replier, ReplyAddress, ReplyFuture, Requester, Responder, ResponderOptions};
pub use trace::{TraceContext, TraceParent, TraceState};

/// Protocol types that appear in this crate's API (topic configs, routes, statistics).
pub use protocol::control::{
    BrokerStats, ClusterInfo, CommitTime, Deployment, GroupLife, MessageLife, PushLife, ReplyLife,
    ReplySearch, RequestLife, TopicConfig, TopicInfo, TopicRoute, TraceReply, TraceTarget,
};
pub use protocol::record::MessageType;
