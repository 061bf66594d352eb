//! A replicated queue's role on this broker, as the controller last assigned it: leading
//! (takes produces, serves consumers below the commit point, answers followers' fetches),
//! following (copies the leader's log), or unassigned (no leader is known: refuses both).
//!
//! Roles change only to a newer epoch (an older assignment is refused with `StaleEpoch`);
//! within an epoch only the in-sync set changes. Leaving a role ends it first: a leader fails
//! every produce still waiting for the commit point ([`super::Deposed`]), a follower's task
//! stops between two log operations (never inside a cut or an append) and is awaited, so two
//! writers never touch the log.

use std::{
    cell::{Cell, RefCell},
    rc::Rc,
    time::{Duration, Instant},
};

use protocol::codes::Status;
use protocol::control::{Acks, FollowerStatus, QueueAssignment, QueueReplication, ReplicaRole};

use super::{CommitWaiters, FetchRefused, ReplicaSet, Term, WaitCommitted};
use crate::error::Reject;
use crate::log::EpochStart;
use crate::notify::Notify;
use crate::queue::Queue;
use crate::rt::Task;
use crate::shard::Shard;

/// How long a follower may go without catching up before its leader reports it out of sync.
pub(crate) const LAG_TIME_MAX: Duration = Duration::from_secs(10);

/// A one-way stop signal for a follower task.
#[derive(Default)]
pub(crate) struct Stop {
    raised: Cell<bool>,
    changed: Notify,
}

impl Stop {
    pub fn raise(&self) {
        self.raised.set(true);
        self.changed.notify();
    }

    pub fn is_raised(&self) -> bool {
        self.raised.get()
    }

    /// Resolves once raised.
    pub async fn wait(&self) {
        loop {
            let seen = self.changed.generation();
            if self.raised.get() {
                return;
            }
            self.changed.wait(seen).await;
        }
    }
}

/// The leader's state for one epoch.
pub(crate) struct Leading {
    epoch: u64,
    set: RefCell<ReplicaSet>,
    waiters: CommitWaiters,
}

impl Leading {
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The commit point.
    pub fn committed(&self) -> u64 {
        self.set.borrow().committed()
    }

    /// Resolves once the commit point reaches `offset`, or with [`super::Deposed`].
    pub fn wait_committed(&self, offset: u64) -> WaitCommitted {
        self.waiters.wait(offset)
    }

    /// The leader's own log is durable to `end`; true if the commit point moved.
    pub fn on_leader_durable(&self, end: u64) -> bool {
        let moved = self.set.borrow_mut().on_leader_durable(end);
        self.after(moved)
    }

    /// A follower's fetch (see [`ReplicaSet::on_fetch`]); true if the commit point moved.
    pub fn on_fetch(&self, replica: &str, offset: u64, log_end: u64) -> Result<bool, FetchRefused> {
        let moved =
            self.set
                .borrow_mut()
                .on_fetch(replica, self.epoch, offset, log_end, Instant::now())?;
        Ok(self.after(moved))
    }

    fn after(&self, moved: bool) -> bool {
        if moved {
            self.waiters.advance(self.committed());
        }
        moved
    }
}

/// What the queue does on this broker.
enum Role {
    /// No leader known for `epoch` (0: never assigned).
    Unassigned { epoch: u64 },
    /// This broker leads.
    Leading(Rc<Leading>),
    /// This broker copies the leader's log.
    Following {
        epoch: u64,
        leader: String,
        stop: Rc<Stop>,
        task: Option<Task<()>>,
    },
}

impl Role {
    fn epoch(&self) -> u64 {
        match self {
            Self::Unassigned { epoch } | Self::Following { epoch, .. } => *epoch,
            Self::Leading(leading) => leading.epoch,
        }
    }
}

/// The replication state of one queue of a topic with more than one replica.
pub(crate) struct Replication {
    acks: Acks,
    role: RefCell<Role>,
    /// The commit point as this broker last knew it (its leader's, while following): where
    /// its commit point starts if it leads next.
    known_committed: Cell<u64>,
    /// Every replica, as the last assignment named them (for reports).
    replicas: RefCell<Vec<String>>,
    /// A role change is running: a second one waits for it (see [`Self::apply`]).
    changing: Cell<bool>,
    changed: Notify,
}

impl Replication {
    /// The state of a queue whose log last took part in `epoch` (0: never): no role until
    /// the controller assigns one for `epoch` or later.
    pub fn new(acks: Acks, epoch: u64) -> Self {
        Self {
            acks,
            role: RefCell::new(Role::Unassigned { epoch }),
            known_committed: Cell::new(0),
            replicas: RefCell::new(Vec::new()),
            changing: Cell::new(false),
            changed: Notify::new(),
        }
    }

    pub fn acks(&self) -> Acks {
        self.acks
    }

    /// The current epoch (0 before the first assignment).
    pub fn epoch(&self) -> u64 {
        self.role.borrow().epoch()
    }

    /// The leader state, while this broker leads.
    pub fn leading(&self) -> Option<Rc<Leading>> {
        match &*self.role.borrow() {
            Role::Leading(leading) => Some(leading.clone()),
            _ => None,
        }
    }

    /// Below this, records may be pushed to consumers: the commit point while leading (a
    /// record above it may still be cut by a failover), what the leader said while following.
    pub fn committed(&self) -> u64 {
        self.leading()
            .map_or(self.known_committed.get(), |leading| leading.committed())
    }

    /// The queue's role and, while leading, its followers: for statistics and registration.
    pub fn status(&self, queue_id: u32, log_end: u64) -> QueueReplication {
        let (role, followers) = match &*self.role.borrow() {
            Role::Leading(leading) => {
                let followers = leading
                    .set
                    .borrow()
                    .followers(Instant::now())
                    .into_iter()
                    .map(|f| FollowerStatus {
                        broker_id: f.broker_id,
                        durable_end: f.durable_end,
                        in_sync: f.in_sync,
                        lagging: f.lagging,
                        caught_up: f.caught_up,
                    })
                    .collect();
                (ReplicaRole::Leader, followers)
            }
            Role::Following { .. } => (ReplicaRole::Follower, Vec::new()),
            Role::Unassigned { .. } => (ReplicaRole::Unassigned, Vec::new()),
        };
        QueueReplication {
            queue_id,
            epoch: self.epoch(),
            role,
            committed: self.committed(),
            log_end,
            followers,
            replicas: self.replicas.borrow().clone(),
        }
    }

    /// The leader told this follower its commit point.
    pub fn learned_committed(&self, committed: u64) {
        if committed > self.known_committed.get() {
            self.known_committed.set(committed);
        }
    }

    /// The refusal a produce or fetch gets when this broker does not lead: names the leader.
    pub fn not_leader(&self, topic: &str, queue_id: u32) -> Reject {
        let detail = match &*self.role.borrow() {
            Role::Following { epoch, leader, .. } => {
                format!("{leader} leads it in epoch {epoch}")
            }
            Role::Unassigned { epoch: 0 } => "no leader was assigned yet".to_owned(),
            Role::Unassigned { epoch } => format!("it has no leader in epoch {epoch}"),
            Role::Leading(leading) => format!("this broker leads it in epoch {}", leading.epoch),
        };
        Reject::new(
            Status::NotLeader,
            format!("queue {queue_id} of {topic} is not led here: {detail}"),
        )
    }

    /// Applies the controller's assignment for `queue` (see the module docs).
    pub async fn apply(
        &self,
        shard: &Rc<Shard>,
        queue: &Rc<Queue>,
        assignment: QueueAssignment,
    ) -> Result<(), Reject> {
        assignment.validate()?;
        let me = &shard.config.broker_id;
        if !assignment.replicas.contains(me) {
            return Err(Reject::new(
                Status::InvalidArgument,
                format!(
                    "{me} is not a replica of queue {} of {} (replicas: {})",
                    queue.id,
                    queue.topic,
                    assignment.replicas.join(", ")
                ),
            ));
        }
        // One change at a time: the end of a follower's role is awaited.
        while self.changing.get() {
            let seen = self.changed.generation();
            if !self.changing.get() {
                break;
            }
            self.changed.wait(seen).await;
        }
        let current = self.epoch();
        if assignment.epoch < current {
            return Err(Reject::new(
                Status::StaleEpoch,
                format!(
                    "assignment for epoch {} of queue {} of {}, which is in epoch {current}",
                    assignment.epoch, queue.id, queue.topic
                ),
            ));
        }
        *self.replicas.borrow_mut() = assignment.replicas.clone();
        let unassigned = matches!(*self.role.borrow(), Role::Unassigned { .. });
        if assignment.epoch == current && !unassigned {
            if let Some(leading) = self.leading() {
                let moved = leading.set.borrow_mut().set_in_sync(&assignment.in_sync);
                if leading.after(moved) {
                    queue.appended.notify();
                }
            }
            return Ok(());
        }
        if assignment.epoch == current && assignment.leader == *me && current > 0 {
            // This broker took part in the epoch before it restarted (its journal says so);
            // what it held then may differ from what it holds now, so it leads again only in
            // a new epoch, never by resuming an old one.
            return Err(Reject::new(
                Status::StaleEpoch,
                format!(
                    "{me} restarted in epoch {current} of queue {} of {}: it can lead only in a \
                     new epoch",
                    queue.id, queue.topic
                ),
            ));
        }
        self.changing.set(true);
        let changed = self.change(shard, queue, assignment).await;
        self.changing.set(false);
        self.changed.notify();
        queue.appended.notify();
        changed
    }

    async fn change(
        &self,
        shard: &Rc<Shard>,
        queue: &Rc<Queue>,
        assignment: QueueAssignment,
    ) -> Result<(), Reject> {
        self.end_role(assignment.epoch).await;
        let name = format!("{}/{}", queue.topic, queue.id);
        if assignment.leader == shard.config.broker_id {
            let start = EpochStart {
                epoch: assignment.epoch,
                start_offset: queue.log.next_offset(),
            };
            queue.log.record_epoch(start).await?;
            let term = Term {
                leader: &assignment.leader,
                epoch: assignment.epoch,
                replicas: &assignment.replicas,
                in_sync: &assignment.in_sync,
            };
            let durable = queue.durable_end();
            let set = ReplicaSet::new(
                term,
                durable,
                self.known_committed.get(),
                LAG_TIME_MAX,
                Instant::now(),
            );
            let committed = set.committed();
            log::info!(
                "{name}: leading in epoch {} from offset {}, commit point {committed}, in sync: {}",
                assignment.epoch,
                start.start_offset,
                assignment.in_sync.join(", ")
            );
            *self.role.borrow_mut() = Role::Leading(Rc::new(Leading {
                epoch: assignment.epoch,
                set: RefCell::new(set),
                waiters: CommitWaiters::new(committed),
            }));
        } else if assignment.leader.is_empty() {
            log::warn!(
                "{name}: no leader in epoch {}: it takes no produces until one is elected",
                assignment.epoch
            );
            *self.role.borrow_mut() = Role::Unassigned {
                epoch: assignment.epoch,
            };
        } else {
            log::info!(
                "{name}: following {} at {} in epoch {}",
                assignment.leader,
                assignment.leader_endpoint,
                assignment.epoch
            );
            let stop = Rc::new(Stop::default());
            let task = crate::rt::spawn(super::follower::follow(
                shard.clone(),
                queue.clone(),
                assignment.epoch,
                assignment.leader_endpoint.clone(),
                stop.clone(),
            ));
            *self.role.borrow_mut() = Role::Following {
                epoch: assignment.epoch,
                leader: assignment.leader,
                stop,
                task: Some(task),
            };
        }
        Ok(())
    }

    /// Ends the current role on the way to `next_epoch`: deposes a leader, stops a follower.
    async fn end_role(&self, next_epoch: u64) {
        let task = {
            let mut role = self.role.borrow_mut();
            match &mut *role {
                Role::Leading(leading) => {
                    self.known_committed
                        .set(self.known_committed.get().max(leading.committed()));
                    leading.waiters.depose(leading.epoch);
                    None
                }
                Role::Following { stop, task, .. } => {
                    stop.raise();
                    task.take()
                }
                Role::Unassigned { .. } => None,
            }
        };
        if let Some(task) = task {
            task.await;
        }
        *self.role.borrow_mut() = Role::Unassigned { epoch: next_epoch };
    }

    /// Stops whatever role runs, before the queue closes.
    pub async fn close(&self) {
        let epoch = self.epoch();
        self.end_role(epoch).await;
    }
}
