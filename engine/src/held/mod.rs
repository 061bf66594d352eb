//! Held messages: delayed (and scheduled) messages, and transactional half messages
//! (`docs/ARCHITECTURE.md` §13.3-§13.4).
//!
//! A produce whose records carry `DELIVER_AT_MS` (delayed) or `TXN_GROUP` (half) is not
//! appended to its queue: it goes to the queue's *held log*, a second [`Log`] in
//! `<queue dir>/held/` with the queue's flush mode, so it is acknowledged as durably as any
//! produce. Its acknowledgement names held-log offsets: `topic/queue/offset` is the message id
//! a producer cancels, commits or rolls back by ([`protocol::control::HeldRef`]).
//!
//! What becomes of a held record is written after it, in the same log, as an outcome marker
//! ([`marker`]). Releasing one (a delayed message's time came, a half was committed) appends
//! a copy to the queue carrying `HELD_ORIGIN` = its held offset, waits until that copy is
//! durable, then appends the marker. Recovery ([`recover`]) rebuilds the pending set from the
//! held log, entries minus markers, and finds copies released before a crash whose marker
//! was lost by their `HELD_ORIGIN` in the queue: each held record reaches the queue once.
//!
//! In memory, per queue: which held offsets are pending ([`pending`], a bit each), when each
//! is due ([`wheel`], 16 bytes each), and for halves, the checks sent so far. One timer task
//! per queue with held messages ([`timer`]) sleeps until the next due entry.
//!
//! - [`release`]: reading held records, releasing copies, writing markers;
//! - [`checks`]: which connections answer check-backs for a producer group.

pub(crate) mod checks;
mod marker;
mod pending;
mod recover;
mod release;
mod timer;
mod wheel;

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::rc::Rc;

use bytes::BytesMut;
use protocol::codes::Status;
use protocol::control::{HeldStats, ProduceAck};
use protocol::record::{BatchView, HeldKind};

use crate::error::Reject;
use crate::log::{Log, LogError};
use crate::notify::Notify;
use crate::queue::Queue;
use crate::rt::{Semaphore, Task};
use crate::shard::Shard;

pub(crate) use marker::Outcome;
use pending::Pending;
use wheel::{Entry, Wheel};

/// Name of the held log's directory inside its queue's directory.
pub(crate) const HELD_DIR: &str = "held";
/// Outcomes remembered per queue, so a repeated commit or cancel is answered by what
/// happened rather than a bare "settled".
const RECENT_OUTCOMES_MAX: usize = 4096;

/// The held messages of one queue. See the module docs.
pub(crate) struct Held {
    log: Log,
    state: RefCell<State>,
    /// Notified when an entry earlier than the timer's wait arrives, and on stop.
    changed: Notify,
    /// One release, cancel or outcome at a time per queue: markers follow their copies in
    /// order, and a cancel never races the release of the same message.
    lock: Semaphore,
    stopping: Cell<bool>,
    timer: RefCell<Option<Task<()>>>,
    stats: Stats,
}

/// What the timer and the producers' commands share.
#[derive(Default)]
struct State {
    wheel: Wheel,
    pending: Pending,
    /// Pending halves and the check-backs sent for each (since this broker started).
    halves: HashMap<u64, u32>,
    recent: Recent,
}

/// Counters of one queue's held messages, for metrics and `HeldStats`.
#[derive(Default)]
pub(crate) struct Stats {
    pub fired: Cell<u64>,
    pub cancelled: Cell<u64>,
    pub committed: Cell<u64>,
    pub rolled_back: Cell<u64>,
    pub checks_sent: Cell<u64>,
    /// How late fired messages were appended to the queue after their time, µs (measured
    /// on the wall clock in ms, which `deliver_at` is given in).
    pub lateness: RefCell<telemetry::Histogram>,
}

impl Stats {
    fn observe_lateness(&self, late_ms: u64) {
        self.lateness
            .borrow_mut()
            .observe(late_ms.saturating_mul(1000));
    }

    fn count(&self, outcome: Outcome, n: u64) {
        let cell = match outcome {
            Outcome::Base => return,
            Outcome::Fired => &self.fired,
            Outcome::Cancelled => &self.cancelled,
            Outcome::Committed => &self.committed,
            Outcome::RolledBack => &self.rolled_back,
        };
        cell.set(cell.get() + n);
    }
}

/// The last outcomes recorded here, bounded.
#[derive(Default)]
struct Recent {
    order: VecDeque<u64>,
    outcomes: HashMap<u64, Outcome>,
}

impl Recent {
    fn record(&mut self, offset: u64, outcome: Outcome) {
        if self.outcomes.insert(offset, outcome).is_none() {
            self.order.push_back(offset);
        }
        while self.order.len() > RECENT_OUTCOMES_MAX {
            if let Some(old) = self.order.pop_front() {
                self.outcomes.remove(&old);
            }
        }
    }
}

impl Held {
    fn new(log: Log) -> Self {
        Self {
            log,
            state: RefCell::default(),
            changed: Notify::new(),
            lock: Semaphore::new(1),
            stopping: Cell::new(false),
            timer: RefCell::new(None),
            stats: Stats::default(),
        }
    }

    /// Adds a pending entry due at `due_ms`, waking the timer when it is the earliest.
    fn schedule(&self, offset: u64, due_ms: u64) {
        let mut state = self.state.borrow_mut();
        let earliest = state.wheel.next_due_ms().is_none_or(|next| due_ms < next);
        state.wheel.insert(Entry { due_ms, offset });
        drop(state);
        if earliest {
            self.changed.notify();
        }
    }

    /// Counters and sizes, for `HeldStats` and metrics.
    pub fn stats(&self) -> HeldStats {
        let state = self.state.borrow();
        let halves = state.halves.len() as u64;
        HeldStats {
            pending_delayed: state.pending.len().saturating_sub(halves),
            pending_half: halves,
            next_offset: self.log.next_offset(),
            timer_bytes: (state.wheel.bytes() + state.pending.bytes()) as u64,
        }
    }

    /// The figures of what happened here, for metrics.
    pub fn metrics(&self) -> crate::metrics::HeldMetrics {
        let stats = self.stats();
        crate::metrics::HeldMetrics {
            pending_delayed: stats.pending_delayed,
            pending_half: stats.pending_half,
            timer_bytes: stats.timer_bytes,
            fired: self.stats.fired.get(),
            cancelled: self.stats.cancelled.get(),
            committed: self.stats.committed.get(),
            rolled_back: self.stats.rolled_back.get(),
            checks_sent: self.stats.checks_sent.get(),
            lateness: Box::new(self.stats.lateness.borrow().clone()),
        }
    }

    /// Stops the timer task at its next step (the shard or the queue is closing).
    pub fn stop(&self) {
        self.stopping.set(true);
        self.changed.notify();
    }

    /// Stops the timer, waits for it, and closes the held log.
    pub async fn close(self: Rc<Self>) -> Result<(), LogError> {
        self.stop();
        let timer = self.timer.borrow_mut().take();
        if let Some(timer) = timer {
            timer.await;
        }
        match Rc::try_unwrap(self) {
            Ok(held) => held.log.close().await,
            Err(held) => held.log.flush().await,
        }
    }
}

/// The held messages of `queue`, opening (and recovering) its held log on first use.
pub(crate) async fn of(shard: &Rc<Shard>, queue: &Rc<Queue>) -> Result<Rc<Held>, Reject> {
    if let Some(held) = queue.held() {
        return Ok(held);
    }
    let _opening = queue
        .held_opening
        .acquire_permit(1)
        .await
        .map_err(|_| Reject::new(Status::ShuttingDown, "the queue is closing"))?;
    if let Some(held) = queue.held() {
        return Ok(held);
    }
    let Some(topic) = shard.topics.with_config(&queue.topic, Clone::clone) else {
        return Err(Reject::new(
            Status::UnknownTopic,
            format!("no topic {}", queue.topic),
        ));
    };
    if topic.replicas > 1 {
        return Err(Reject::new(
            Status::InvalidArgument,
            format!(
                "{} has {} replicas: delayed and transactional messages are not replicated \
                 yet, so a replicated topic refuses them",
                queue.topic, topic.replicas
            ),
        ));
    }
    let config = crate::queue::held_log_config(&shard.config, &topic, queue.id);
    let held = Rc::new(Held::new(Log::open(config).await?));
    let recovered = recover::recover(shard, queue, &held).await;
    if let Err(e) = recovered {
        let _ = held.close().await;
        return Err(e);
    }
    let task = shard
        .tasks
        .spawn(timer::run(shard.clone(), queue.clone(), held.clone()));
    *held.timer.borrow_mut() = Some(task);
    queue.set_held(held.clone());
    Ok(held)
}

/// Opens the held logs this shard's queues have on disk, so what waits in them fires after a
/// restart without a produce to open them.
pub(crate) async fn start_all(shard: &Rc<Shard>) {
    for queue in shard.topics.queues() {
        let dir = crate::topic::queue_dir(&shard.config.data_dir, &queue.topic, queue.id);
        if !dir.join(HELD_DIR).is_dir() {
            continue;
        }
        if let Err(e) = of(shard, &queue).await {
            log::error!(
                "shard {}: the held messages of {}/{} cannot be recovered: {e}",
                shard.id,
                queue.topic,
                queue.id
            );
        }
    }
}

/// Stops every timer of this shard (it is closing); their logs close with their queues.
pub(crate) fn stop_all(shard: &Shard) {
    for queue in shard.topics.queues() {
        if let Some(held) = queue.held() {
            held.stop();
        }
    }
}

/// Appends a produced batch of held records (`kind` as [`protocol::record::held_kind`] said)
/// to the queue's held log and schedules each record.
pub(crate) async fn produce(
    shard: &Rc<Shard>,
    queue: &Rc<Queue>,
    kind: HeldKind,
    batch: BytesMut,
) -> Result<ProduceAck, Reject> {
    let invalid = |message: String| Reject::new(Status::InvalidArgument, message);
    let now_ms = crate::log::now_ms().max(0) as u64;
    let latest_ms = now_ms.saturating_add(shard.config.held.delay_max_ms);
    match kind {
        HeldKind::Delayed | HeldKind::Half => {}
        HeldKind::Mixed => {
            return Err(invalid(
                "a batch mixes delayed, transactional and plain records; send each kind in \
                 its own batch"
                    .into(),
            ));
        }
        HeldKind::Origin | HeldKind::Plain => {
            return Err(invalid(
                "records may not carry the held origin property: only the broker sets it".into(),
            ));
        }
    }
    // Checked before anything is stored: a delay past the limit refuses the whole batch.
    let view = BatchView::parse(&batch, shard.config.limits.batch_len_max)
        .map_err(|e| invalid(format!("batch: {e}")))?;
    let mut dues = Vec::with_capacity(view.record_count() as usize);
    for record in view.records() {
        match kind {
            HeldKind::Delayed => {
                let due = record.deliver_at_ms().unwrap_or(0);
                if due > latest_ms {
                    return Err(invalid(format!(
                        "deliver_at {due} is more than held.delay_max_ms ({} ms) away",
                        shard.config.held.delay_max_ms
                    )));
                }
                dues.push(due);
            }
            _ => dues.push(now_ms.saturating_add(shard.config.held.check_interval_ms)),
        }
    }
    let held = of(shard, queue).await?;
    let appended = held.log.append(batch).await?;
    {
        let mut state = held.state.borrow_mut();
        for (i, _) in dues.iter().enumerate() {
            let offset = appended.base_offset + i as u64;
            state.pending.insert(offset);
            if kind == HeldKind::Half {
                state.halves.insert(offset, 0);
            }
        }
    }
    for (i, due) in dues.into_iter().enumerate() {
        held.schedule(appended.base_offset + i as u64, due);
    }
    Ok(ProduceAck {
        queue_id: queue.id,
        base_offset: appended.base_offset,
        next_offset: appended.next_offset,
    })
}

/// What a request may do to the held record at `offset`: `Ok(true)` for a pending half,
/// `Ok(false)` for a pending delayed message, else the refusal: `HeldSettled` for a held
/// record with its outcome, `NotHeld` for an offset that holds none (a marker, or past the
/// end).
async fn pending_kind(held: &Held, offset: u64) -> Result<bool, Reject> {
    {
        let state = held.state.borrow();
        if state.pending.contains(offset) {
            return Ok(state.halves.contains_key(&offset));
        }
        if let Some(&outcome) = state.recent.outcomes.get(&offset) {
            return Err(settled(Some(outcome), offset));
        }
    }
    let not_held = || {
        Reject::new(
            Status::NotHeld,
            format!("no held message at offset {offset}"),
        )
    };
    if offset >= held.log.next_offset() || offset < held.log.start_offset() {
        return Err(not_held());
    }
    // Settled before this broker started: read it to tell a held record from a marker.
    let mut is_held = false;
    release::for_each_record(&held.log, &[offset], |record, _| {
        is_held = record.held_origin().is_none();
    })
    .await?;
    Err(if is_held {
        settled(None, offset)
    } else {
        not_held()
    })
}

fn settled(outcome: Option<Outcome>, offset: u64) -> Reject {
    let what = outcome.map_or(
        "already settled (fired, cancelled, committed or rolled back)",
        |o| o.describe(),
    );
    Reject::new(
        Status::HeldSettled,
        format!("held message {offset}: {what}"),
    )
}

/// `CancelHeld`: cancels the pending delayed message at `offset`.
pub(crate) async fn cancel(
    shard: &Rc<Shard>,
    queue: &Rc<Queue>,
    offset: u64,
) -> Result<(), Reject> {
    let held = of(shard, queue).await?;
    let _lock = held.lock.acquire_permit(1).await.map_err(closing)?;
    if pending_kind(&held, offset).await? {
        return Err(Reject::new(
            Status::InvalidArgument,
            format!("held message {offset} is a transactional half: roll it back instead"),
        ));
    }
    release::settle_without_release(&held, &[offset], Outcome::Cancelled).await?;
    Ok(())
}

/// `EndTransaction`: commits (releases) or rolls back the half message at `offset`. The
/// same outcome twice is answered as done; the other one is refused with `HeldSettled`.
pub(crate) async fn end(
    shard: &Rc<Shard>,
    queue: &Rc<Queue>,
    offset: u64,
    commit: bool,
) -> Result<(), Reject> {
    let held = of(shard, queue).await?;
    let _lock = held.lock.acquire_permit(1).await.map_err(closing)?;
    let wanted = if commit {
        Outcome::Committed
    } else {
        Outcome::RolledBack
    };
    match pending_kind(&held, offset).await {
        Ok(true) => {}
        Ok(false) => {
            return Err(Reject::new(
                Status::InvalidArgument,
                format!("held message {offset} is delayed, not a transactional half"),
            ));
        }
        Err(reject) => {
            let recorded = held.state.borrow().recent.outcomes.get(&offset).copied();
            return if recorded == Some(wanted) {
                Ok(())
            } else {
                Err(reject)
            };
        }
    }
    if commit {
        release::release(shard, queue, &held, &[offset], Outcome::Committed).await?;
    } else {
        release::settle_without_release(&held, &[offset], Outcome::RolledBack).await?;
    }
    Ok(())
}

fn closing<E>(_: E) -> Reject {
    Reject::new(Status::ShuttingDown, "the queue is closing")
}

/// Serves `CancelHeld`, `EndTransaction` and `HeldStats`: `Ok(Ok(body))` when answered here,
/// `Ok(Err(owner))` when another shard owns the queue.
pub(crate) async fn serve(
    shard: &Rc<Shard>,
    command: protocol::codes::Command,
    frame: &protocol::frame::FrameBytes,
) -> Result<Result<Vec<u8>, usize>, Reject> {
    use protocol::codes::Command;
    use protocol::control::{self, EndTransaction, HeldRef, HeldStatsRequest};
    let (topic, queue_id) = match command {
        Command::CancelHeld => {
            let id: HeldRef = control::decode(&frame.body)?;
            id.validate()?;
            (id.topic, id.queue_id)
        }
        Command::EndTransaction => {
            let end: EndTransaction = control::decode(&frame.body)?;
            end.id.validate()?;
            (end.id.topic, end.id.queue_id)
        }
        _ => {
            let request: HeldStatsRequest = control::decode(&frame.body)?;
            (request.topic, request.queue_id)
        }
    };
    let queue = match crate::net::dispatch::owned_queue(shard, &topic, queue_id)? {
        Ok(queue) => queue,
        Err(owner) => return Ok(Err(owner)),
    };
    match command {
        Command::CancelHeld => {
            let id: HeldRef = control::decode(&frame.body)?;
            cancel(shard, &queue, id.offset).await?;
            Ok(Ok(Vec::new()))
        }
        Command::EndTransaction => {
            let request: EndTransaction = control::decode(&frame.body)?;
            end(shard, &queue, request.id.offset, request.commit).await?;
            Ok(Ok(Vec::new()))
        }
        _ => {
            // Stats never open a held log that is not open yet: none means nothing held.
            let stats = queue.held().map(|h| h.stats()).unwrap_or_default();
            Ok(Ok(control::encode(&stats)?))
        }
    }
}

/// `TransactionCheck` sent by a producer: its connection answers the check-backs of a
/// producer group from now on.
pub(crate) fn register_checker(
    shard: &Shard,
    conn: &crate::net::conn::Conn,
    frame: &protocol::frame::FrameBytes,
) -> Result<(), Reject> {
    let request: protocol::control::CheckRegistration = protocol::control::decode(&frame.body)?;
    request.validate()?;
    if !shard
        .held_checkers
        .register(&request.producer_group, conn.id)
    {
        return Err(Reject::new(
            Status::SystemBusy,
            format!(
                "a connection answers for at most {} producer groups",
                checks::GROUPS_PER_CONNECTION_MAX
            ),
        ));
    }
    Ok(())
}
