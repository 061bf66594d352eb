//! Command and status codes of the whole system.
//!
//! Every frame carries one [`Command`] (what the frame asks for or answers) and one
//! [`Status`] (how a request went; [`Status::Ok`] on requests). Both travel as raw `u16` in
//! the frame header so that a process can still frame, log and answer a code it does not know;
//! they are converted to these enums with `TryFrom<u16>` where a process acts on them.
//!
//! Commands are grouped by the process that serves them, one range of 256 codes each, so a
//! code read in a packet capture says where it belongs:
//!
//! | range | served by |
//! |---|---|
//! | `0x01xx` | broker data plane: produce, consume, request-reply, offsets |
//! | `0x02xx` | broker admin: topics and statistics |
//! | `0x03xx` | nameserver: broker registry and topic routes |
//! | `0x04xx` | GSL (`0x040x`) and SGS (`0x041x`) |
//! | `0x05xx` | controller: Raft between its nodes (`0x050x`), its API (`0x051x`) |
//!
//! Codes are part of the wire format: never renumber or reuse one, only add.

use std::fmt;

/// Defines a `#[repr(u16)]` code enum with its docs, names, `ALL` list and `TryFrom<u16>`.
macro_rules! code_enum {
    (
        $(#[$meta:meta])*
        pub enum $name:ident / $unknown:ident {
            $( $(#[$vmeta:meta])* $variant:ident = $code:literal, )+
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[repr(u16)]
        pub enum $name {
            $( $(#[$vmeta])* $variant = $code, )+
        }

        impl $name {
            /// Every code, in declaration order; for tables, tests and exhaustive checks.
            pub const ALL: &'static [$name] = &[ $( $name::$variant, )+ ];

            /// The code as it travels in the frame header.
            pub const fn code(self) -> u16 {
                self as u16
            }

            /// The variant's name, for logs and metrics labels.
            pub const fn name(self) -> &'static str {
                match self {
                    $( $name::$variant => stringify!($variant), )+
                }
            }
        }

        impl TryFrom<u16> for $name {
            type Error = $unknown;
            fn try_from(code: u16) -> Result<Self, $unknown> {
                match code {
                    $( $code => Ok($name::$variant), )+
                    _ => Err($unknown(code)),
                }
            }
        }

        impl From<$name> for u16 {
            fn from(value: $name) -> u16 {
                value.code()
            }
        }
    };
}

code_enum! {
    /// What a frame asks for (on requests) or answers (on responses, which echo the command).
    pub enum Command / UnknownCommand {
        // ---- 0x01xx: broker data plane ----
        /// Producer → broker: append the record batch in the body to one queue.
        Produce = 0x0101,
        /// Consumer → broker: join a consumer group on a topic and start receiving pushes.
        Subscribe = 0x0102,
        /// Consumer → broker: leave a consumer group's subscription on a topic.
        Unsubscribe = 0x0103,
        /// Broker → consumer: delivery of a record batch to a subscribed consumer.
        Push = 0x0104,
        /// Consumer → broker: flow-control grant; the broker may push that many more records.
        Credit = 0x0105,
        /// Consumer → broker: store the group's consumed offset for a queue.
        CommitOffset = 0x0106,
        /// Consumer → broker: read the group's committed offset for a queue.
        FetchOffset = 0x0107,
        /// Either direction: connection and client liveness; unanswered heartbeats expire a peer.
        Heartbeat = 0x0108,
        /// Requester → broker: send a request message (request-reply) to a service topic.
        Request = 0x0109,
        /// Responder → broker: send the reply to a request, addressed by its reply-to property.
        Reply = 0x010A,
        /// Broker → requester: delivery of a reply to the client that sent the request.
        ReplyPush = 0x010B,
        /// Broker → consumer: a subscribed queue cannot be served (its stored data is
        /// damaged); the extension addresses it like a push, the body is an `ErrorReply`.
        PushFault = 0x010C,
        /// Consumer → broker shard that pushed the message: the message was rejected;
        /// redeliver it after the group's backoff, or dead-letter it (`Nack` → `NackAck`,
        /// ARCHITECTURE §13.2).
        Nack = 0x010D,
        // ---- held messages (ARCHITECTURE §13.3-§13.4) ----
        /// Producer → broker: cancel a delayed message before it fires (`HeldRef` → empty).
        CancelHeld = 0x010F,
        /// Producer → broker: commit or roll back a transactional half message
        /// (`EndTransaction` → empty).
        EndTransaction = 0x0110,
        /// Broker → producer (push, `TransactionCheck`): what became of this half message's
        /// local transaction? Answered with `EndTransaction`. Producer → broker (request,
        /// `CheckRegistration` → empty): this connection answers check-backs for a group.
        TransactionCheck = 0x0111,
        // ---- end of held messages ----
        /// Producer → broker: assign an idempotent producer id (empty body; the answer is an
        /// `InitProducerReply`). Ids are unique in the cluster and never reused (§13.1).
        InitProducer = 0x010E,

        // ---- 0x02xx: broker admin ----
        /// Admin → broker: create a topic with the configuration in the body.
        CreateTopic = 0x0201,
        /// Admin → broker: change a topic's configuration (queue counts, depth, retention).
        UpdateTopic = 0x0202,
        /// Admin → broker: delete a topic and its data.
        DeleteTopic = 0x0203,
        /// Admin → broker: list the topics the broker holds.
        ListTopics = 0x0204,
        /// Admin → broker: runtime statistics (rates, depths, latencies).
        Stats = 0x0205,
        /// Admin → broker: scrub (read and verify) the stored data of its queues now.
        ScrubLogs = 0x0206,
        /// Admin → broker: one message's life (stored, pushed, committed, replied), by offset
        /// or key in one queue (`TraceRequest` → `TraceReply`).
        TraceMessage = 0x0207,
        /// Admin → broker (forwarded to the queue's owner): the pending messages of one queue
        /// of a dead-letter topic (`DeadLetterRequest` → `DeadLetterReply`, §13.2).
        DeadLetterShow = 0x0208,
        /// Admin → broker: re-produce pending dead letters to their original topic and queue,
        /// then mark them done, so a second resend does not duplicate them.
        DeadLetterResend = 0x0209,
        /// Admin → broker: mark a dead-letter queue's pending messages done without resending.
        DeadLetterPurge = 0x020A,
        // ---- held messages ----
        /// Admin → broker: the held (delayed and half) messages of one queue
        /// (`HeldStatsRequest` → `HeldStats`).
        HeldStats = 0x020B,
        // ---- end of held messages ----

        // ---- 0x03xx: nameserver ----
        /// Client → nameserver: the queues of a topic and where they live.
        TopicRoute = 0x0301,
        /// Client → nameserver: the clusters and brokers the nameserver knows.
        ClusterInfo = 0x0302,
        /// Broker → nameserver: register or refresh (sent periodically, so also the heartbeat).
        BrokerRegister = 0x0303,
        /// Broker → nameserver: leave the registry before shutting down.
        BrokerUnregister = 0x0304,
        /// Nameserver → client: a topic's configuration or route changed; refetch it.
        TopicConfigChanged = 0x0305,
        /// Broker → nameserver: "alive", for the replication controller's failure detector;
        /// a `BrokerId`, sent far more often than the full registration. Empty answer.
        BrokerHeartbeat = 0x0306,

        // ---- 0x06xx: replication, broker → broker ----
        /// Follower → leader: the batches of a queue from an offset, which is also the
        /// follower's acknowledgement that it holds everything below it durably.
        ReplicaFetch = 0x0601,
        /// Follower → leader: where the follower's latest leader epoch ended in the leader's
        /// log, so the follower cuts a tail the leader never had before it fetches.
        ReplicaEpochEnd = 0x0602,
        /// Controller → broker: the leader, epoch and in-sync set of one queue the broker
        /// holds (a `QueueAssignment`).
        QueueRole = 0x0603,

        // ---- 0x040x: GSL, service location ----
        /// Client → GSL: where is service S, seen from area A?
        GslResolve = 0x0401,
        /// SGS → GSL: replace the recorded deployments of a service.
        GslUpdate = 0x0402,

        // ---- 0x041x: SGS, service governance ----
        /// Owner → SGS: apply for a new service id.
        ServiceApply = 0x0410,
        /// Operator → SGS: deploy a service to areas (creates its topics on clusters).
        ServiceDeploy = 0x0411,
        /// Operator → SGS: take a service offline.
        ServiceOffline = 0x0412,
        /// Any → SGS: list services.
        ServiceList = 0x0413,
        /// Any → SGS: show one service's record.
        ServiceShow = 0x0414,

        // ---- 0x050x: controller, Raft between controller nodes ----
        /// Controller → controller: Raft AppendEntries (also the leader's heartbeat).
        RaftAppendEntries = 0x0501,
        /// Controller → controller: Raft RequestVote.
        RaftVote = 0x0502,
        /// Controller → controller: one chunk of a Raft snapshot.
        RaftInstallSnapshot = 0x0503,

        // ---- 0x051x: controller API ----
        /// Any → controller: apply a command to the replicated state (forwarded to the leader).
        ControllerPropose = 0x0510,
        /// Any → controller: the controller node's applied state.
        ControllerState = 0x0511,
        /// Broker → controller leader: the broker is alive.
        ControllerHeartbeat = 0x0512,

        // ---- 0x070x: security, served by every server ----
        /// Any → any server: present a token (`Authenticate`) for this connection; the first
        /// frame of a connection when the server requires authentication and the transport
        /// did not already name the caller (mutual TLS). Answered with `Authenticated`.
        Authenticate = 0x0701,
        /// Any → nameserver: the security policy (tokens, hashed, and grants) when newer than
        /// the caller's copy (`PolicyGet` → `PolicyDocument`).
        PolicyGet = 0x0702,
        /// Admin → nameserver: replace the security policy when its version is the one the
        /// caller read (`PolicyPut` → `PolicyDocument`); needs the `admin_acl` grant.
        PolicyPut = 0x0703,
    }
}

impl Command {
    /// True when the body is a record batch, which carries its own checksums; only these
    /// commands may omit the frame's body checksum.
    pub const fn carries_record_batch(self) -> bool {
        matches!(
            self,
            Command::Produce
                | Command::Push
                | Command::Request
                | Command::Reply
                | Command::ReplyPush
        )
    }

    /// True when the *answer* (not the request) is record batches that carry their own
    /// checksums, so its frame may omit the body checksum: a follower's fetch.
    pub const fn answer_carries_record_batches(self) -> bool {
        matches!(self, Command::ReplicaFetch)
    }

    /// True for broker data-plane commands (`0x01xx`), the latency-critical path.
    pub const fn is_data_plane(self) -> bool {
        self.code() >> 8 == 0x01
    }
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}({:#06x})", self.name(), self.code())
    }
}

/// A command code this build does not know; answered with [`Status::UnknownCommand`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown command code {0:#06x}")]
pub struct UnknownCommand(pub u16);

code_enum! {
    /// How a request went. Requests carry [`Status::Ok`]; a response's status says whether the
    /// body is the answer or an error reply.
    ///
    /// Ranges: `0` success, `1xx` the frame itself was bad (the connection is usually closed),
    /// `2xx` the request was refused as given, `3xx` refused for now (capacity, time, peers),
    /// `5xx` the server failed.
    pub enum Status / UnknownStatus {
        /// The request succeeded.
        Ok = 0,

        /// The frame could not be parsed (bad magic, bad lengths, bad body encoding).
        MalformedFrame = 100,
        /// The frame's protocol version is not one this server speaks.
        UnsupportedVersion = 101,
        /// The command code is unknown to this server.
        UnknownCommand = 102,
        /// The frame is larger than the server's limit.
        FrameTooLarge = 103,
        /// A header, body or record checksum did not match: data was corrupted in transit.
        ChecksumMismatch = 104,

        /// An argument is out of range or inconsistent with another.
        InvalidArgument = 200,
        /// A topic, service, group, area or client name is not well formed.
        InvalidName = 201,
        /// The topic does not exist.
        UnknownTopic = 202,
        /// The topic to create already exists.
        TopicExists = 203,
        /// The queue is not on this broker or shard; the client's route is stale.
        NotOwner = 204,
        /// The authenticated caller (principal) has no grant for this action on this resource;
        /// the message names the principal, the action and the resource. Not retryable: an
        /// operator must grant the permission (`defibus admin acl grant`).
        PermissionDenied = 205,
        /// This broker holds the queue but does not lead it (a follower, or a leader whose
        /// epoch ended); the route is stale: refresh it and send to the current leader.
        /// A controller node answers it too when it is not the controller's Raft leader; its
        /// message names the leader when one is known.
        NotLeader = 206,
        /// A replication request names an epoch other than the queue's current one: the
        /// sender is behind (it learns the new epoch from the controller) or deposed.
        StaleEpoch = 207,
        /// The server requires authentication and the connection has none, or presented a
        /// token that is unknown, expired or revoked. Not retryable with the same credentials.
        Unauthenticated = 208,
        /// The batch was not stored: its producer sequence does not follow the last one the
        /// queue stored for the producer (a gap, or an epoch the queue moved past), or the
        /// queue cannot store now (a poisoned log) and does not hold it. The producer sends it
        /// again under a new numbering (§13.1).
        OutOfOrderSequence = 209,
        /// The batch was stored earlier (a retry of it); it is past the broker's duplicate
        /// window, so its offsets are no longer known. Not stored again.
        DuplicateSequence = 210,
        // ---- held messages ----
        /// The held message already has its outcome (fired, cancelled, committed or rolled
        /// back); the message says which when the broker still knows.
        HeldSettled = 211,
        /// No held message has this id in this queue (never produced, or its entry is gone).
        NotHeld = 212,
        // ---- end of held messages ----
        /// A nack cannot be served: the group consumes in broadcast mode, the message is not
        /// an event, or its retry or dead-letter topic name does not fit the topic rules.
        RetryUnavailable = 213,
        /// The nacked offset is not in the queue (retention removed it, or it was never
        /// written): there is nothing to redeliver.
        MessageGone = 214,

        /// The server is overloaded; back off and retry.
        SystemBusy = 300,
        /// The queue holds as many unconsumed messages as its depth limit allows (DeFiBus 301).
        QueueDepthExceeded = 301,
        /// The request's deadline passed before it could be delivered or answered.
        RequestExpired = 302,
        /// No consumer or responder of the service is online to take the request.
        NoResponder = 303,
        /// A dark-launch redirect rule matches the message, but no instance it selects
        /// consumes a queue on this broker; another broker may have one.
        NoRedirectTarget = 304,
        /// The broker's data directory is at its free-space watermark
        /// (`storage.min_free_percent`): it takes no new produces until space is freed, while
        /// reads, commits and deletes go on. Another queue or broker may take the batch.
        DiskFull = 305,

        /// An unexpected server-side failure; see the server log.
        Internal = 500,
        /// Storage failed (write, fsync or read); the queue is poisoned until the broker
        /// reopens its log, which it tries once space returns.
        StorageError = 501,
        /// The server is shutting down and takes no new work.
        ShuttingDown = 502,
        /// Stored data of the queue is damaged (a checksum or offset check failed) at or
        /// before the requested offset; it is not served until an operator repairs the queue.
        DataDamaged = 503,
    }
}

impl Status {
    /// True when the same request may succeed if sent again later, possibly to another broker
    /// after refreshing routes, without being changed.
    ///
    /// Checksum mismatches are not retryable here: the sender must decide whether its own
    /// buffer or the network is at fault. Storage errors are not, because a poisoned queue
    /// does not heal by itself and a blind retry could duplicate a partially written batch.
    pub const fn is_retryable(self) -> bool {
        matches!(
            self,
            Status::NotOwner
                | Status::NotLeader
                | Status::SystemBusy
                | Status::QueueDepthExceeded
                | Status::NoResponder
                | Status::NoRedirectTarget
                | Status::DiskFull
                | Status::ShuttingDown
        )
    }

    /// True for [`Status::Ok`].
    pub const fn is_ok(self) -> bool {
        matches!(self, Status::Ok)
    }

    /// A short human-readable explanation, for error messages shown to users.
    pub const fn message(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::MalformedFrame => "malformed frame",
            Status::UnsupportedVersion => "unsupported protocol version",
            Status::UnknownCommand => "unknown command",
            Status::FrameTooLarge => "frame too large",
            Status::ChecksumMismatch => "checksum mismatch: data corrupted in transit",
            Status::InvalidArgument => "invalid argument",
            Status::InvalidName => "invalid name",
            Status::UnknownTopic => "unknown topic",
            Status::TopicExists => "topic already exists",
            Status::NotOwner => "queue not owned by this broker or shard (stale route)",
            Status::PermissionDenied => "permission denied",
            Status::Unauthenticated => "not authenticated",
            Status::HeldSettled => "the held message already has its outcome",
            Status::NotHeld => "no such held message",
            Status::RetryUnavailable => "the message cannot be retried or dead-lettered",
            Status::MessageGone => "the message is no longer in its queue",
            Status::NotLeader => "this broker does not lead the queue (stale route)",
            Status::StaleEpoch => "the request's leader epoch is not the queue's current one",
            Status::OutOfOrderSequence => {
                "not stored: the producer sequence does not follow the queue's last one"
            }
            Status::DuplicateSequence => {
                "already stored earlier; its offsets are past the duplicate window"
            }
            Status::SystemBusy => "system busy, retry later",
            Status::QueueDepthExceeded => "queue depth limit exceeded",
            Status::RequestExpired => "request expired before delivery",
            Status::NoResponder => "no consumer or responder online",
            Status::NoRedirectTarget => "no instance selected by the redirect rule is online",
            Status::DiskFull => "the broker's disk is at its free-space watermark",
            Status::Internal => "internal server error",
            Status::StorageError => "storage error",
            Status::DataDamaged => "stored data is damaged",
            Status::ShuttingDown => "server shutting down",
        }
    }
}

/// The words only: errors shown to users read "invalid argument: area Z99 not configured",
/// not "invalid argument (200): ..."; the number is [`Status::code`], and in `Debug`.
impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.message())
    }
}

/// A status code this build does not know (sent by a newer peer).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown status code {0}")]
pub struct UnknownStatus(pub u16);

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn every_code_round_trips_and_is_unique() {
        let mut seen = HashSet::new();
        for &command in Command::ALL {
            assert!(seen.insert(command.code()), "{command} reused");
            assert_eq!(Command::try_from(command.code()), Ok(command));
            assert!((0x01..=0x07).contains(&(command.code() >> 8)), "{command}");
        }
        let mut seen = HashSet::new();
        for &status in Status::ALL {
            assert!(seen.insert(status.code()), "{status} reused");
            assert_eq!(Status::try_from(status.code()), Ok(status));
            assert!(!status.message().is_empty());
        }
    }

    #[test]
    fn unknown_codes_are_errors_that_name_the_code() {
        assert_eq!(Command::try_from(0x01FF), Err(UnknownCommand(0x01FF)));
        assert_eq!(
            UnknownCommand(0x0999).to_string(),
            "unknown command code 0x0999"
        );
        assert_eq!(Status::try_from(999), Err(UnknownStatus(999)));
    }

    #[test]
    fn pinned_codes_and_classes() {
        assert_eq!(Status::QueueDepthExceeded.code(), 301);
        assert_eq!(Command::Produce.code(), 0x0101);
        assert!(Status::QueueDepthExceeded.is_retryable());
        assert!(Status::DiskFull.is_retryable());
        assert!(!Status::InvalidName.is_retryable());
        assert!(!Status::Ok.is_retryable());
        assert!(Command::Push.carries_record_batch());
        assert!(!Command::CreateTopic.carries_record_batch());
        assert!(Command::Credit.is_data_plane() && !Command::GslResolve.is_data_plane());
        assert_eq!(
            Status::QueueDepthExceeded.to_string(),
            "queue depth limit exceeded"
        );
        assert_eq!(Status::QueueDepthExceeded.code(), 301);
        assert_eq!(Command::Produce.to_string(), "Produce(0x0101)");
    }
}
