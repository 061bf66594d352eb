//! What a consumer consumes and how: topic and group, unicast or broadcast, where to start,
//! when to commit.

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
        }
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
}
