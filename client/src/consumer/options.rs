//! What a consumer consumes and how: topic and group, unicast or broadcast, where to start,
//! when to commit, and as which member of the group.

use std::time::Duration;

use protocol::names::{Area, ClientId};

/// How a group shares a topic's messages.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ConsumeMode {
    /// Unicast: each message goes to one member of the group.
    #[default]
    Clustering,
    /// Every member gets every message (offsets are kept per member).
    Broadcast,
}

/// Where a member with no committed offset starts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum StartFrom {
    /// At the group's committed offset (the broker's choice when there is none).
    #[default]
    Committed,
    /// At the oldest retained message.
    Earliest,
    /// At the next message produced.
    Latest,
}

/// When consumed offsets are committed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CommitMode {
    /// Every auto-commit interval and on close.
    #[default]
    Auto,
    /// Only on [`Consumer::commit`].
    Manual,
}

/// What to consume and how.
#[derive(Clone, Debug)]
pub struct ConsumerOptions {
    /// The topic, `[area]-[serviceId]`.
    pub topic: String,
    /// The consumer group.
    pub group: String,
    /// Unicast or broadcast.
    pub mode: ConsumeMode,
    /// Where to start without a committed offset.
    pub start: StartFrom,
    /// When to commit.
    pub commit: CommitMode,
    /// Who the broker sees as the group's member; the client's own id and area when `None`.
    member: Option<Member>,
    /// Handler errors are retried in place, the queue's later messages waiting, instead of
    /// being nacked to the group's retry topic (ARCHITECTURE §13.2).
    pub ordered: bool,
    /// Whether a clustering consumer also consumes its group's retry topic, where nacked
    /// messages come back. Default true.
    pub retries: bool,
    /// The backoff of an ordered consumer's in-place retries; the broker's `[retry]` settings
    /// govern nacked messages.
    pub retry_policy: RetryPolicy,
}

/// How an ordered consumer retries a failing message in place.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Wait before retry `k` is entry `k - 1` (the last for later ones).
    pub schedule: Vec<Duration>,
    /// Retries before the message goes to the group's dead-letter topic.
    pub max_redeliveries: u32,
}

impl Default for RetryPolicy {
    /// The broker's defaults: RocketMQ's schedule (1 s, 5 s, 10 s, 30 s, 1 m, 2 m, ... 2 h)
    /// and 16 redeliveries.
    fn default() -> Self {
        Self {
            schedule: protocol::retry::SCHEDULE_MS_DEFAULT
                .iter()
                .map(|&ms| Duration::from_millis(ms))
                .collect(),
            max_redeliveries: protocol::retry::MAX_REDELIVERIES_DEFAULT,
        }
    }
}

impl RetryPolicy {
    /// The wait before retry `attempt` (1-based).
    pub fn delay(&self, attempt: u32) -> Duration {
        let level = attempt.saturating_sub(1) as usize;
        self.schedule
            .get(level)
            .or(self.schedule.last())
            .copied()
            .unwrap_or_default()
    }
}

/// The identity one consumer subscribes as ([`ConsumerOptions::as_member`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    /// The member id: the group's queues are balanced over distinct ids, and a broadcast
    /// member's offsets are kept under it.
    pub client_id: ClientId,
    /// The member's area: nearby consume gives a broker's queues to its own area's members.
    pub area: Area,
}

impl ConsumerOptions {
    /// Options for `topic` and `group` in `mode`, starting at the committed offset, with auto
    /// commit.
    pub fn new(topic: impl Into<String>, group: impl Into<String>, mode: ConsumeMode) -> Self {
        Self {
            topic: topic.into(),
            group: group.into(),
            mode,
            start: StartFrom::Committed,
            commit: CommitMode::Auto,
            member: None,
            ordered: false,
            retries: true,
            retry_policy: RetryPolicy::default(),
        }
    }

    /// Retries a failing handler in place ([`Consumer::start_with_result`]): the same
    /// message again after the policy's backoff, the messages behind it waiting, so order
    /// holds; past `max_redeliveries` it goes to the group's dead-letter topic and the
    /// consumer moves on. An ordered consumer does not consume the retry topic.
    pub fn ordered(mut self) -> Self {
        self.ordered = true;
        self
    }

    /// Sets the backoff of in-place retries (see [`Self::ordered`]).
    pub fn retry_policy(mut self, policy: RetryPolicy) -> Self {
        self.retry_policy = policy;
        self
    }

    /// Does not consume the group's retry topic (a consumer that never nacks, or one that
    /// leaves retries to other members).
    pub fn without_retries(mut self) -> Self {
        self.retries = false;
        self
    }

    /// Sets where to start.
    pub fn start_from(mut self, start: StartFrom) -> Self {
        self.start = start;
        self
    }

    /// Commits only on [`Consumer::commit`].
    pub fn manual_commit(mut self) -> Self {
        self.commit = CommitMode::Manual;
        self
    }

    /// Subscribes as `member` rather than as the client itself, so one client
    /// can carry many members of one group (a gateway such as the proxy, which serves many
    /// callers over one set of broker connections): each is balanced, and for broadcast
    /// tracked, as its own member.
    pub fn as_member(mut self, member: Member) -> Self {
        self.member = Some(member);
        self
    }

    /// The member this consumer subscribes as, if not the client itself.
    pub fn member(&self) -> Option<&Member> {
        self.member.as_ref()
    }
}
