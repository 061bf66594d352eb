//! The timer task of one queue's held messages: sleeps until the earliest entry is due (or an
//! earlier one arrives), then fires what is due: delayed messages are released, halves are
//! checked back or, after `held.checks_max` checks, given the default outcome.

use std::rc::Rc;
use std::time::Duration;

use protocol::control::{HeldRef, TransactionCheck};
use protocol::record::{BatchBuilder, Property, Record};

use super::release::{self, for_each_record};
use super::{Held, Outcome, Queue};
use crate::config::HeldOutcome;
use crate::shard::Shard;

/// Entries fired in one round; the next round follows at once.
const FIRE_BATCH_MAX: usize = 16 * 1024;
/// A release that failed (storage) is tried again after this long; its entries stay pending.
const RETRY_MS: u64 = 1000;

fn now_ms() -> u64 {
    crate::log::now_ms().max(0) as u64
}

/// See the module docs. Ends once [`Held::stop`] was called.
pub(super) async fn run(shard: Rc<Shard>, queue: Rc<Queue>, held: Rc<Held>) {
    loop {
        if held.stopping.get() {
            return;
        }
        let seen = held.changed.generation();
        let now = now_ms();
        let next = held.state.borrow_mut().wheel.next_due_ms();
        match next {
            Some(due) if due <= now => fire(&shard, &queue, &held, now).await,
            Some(due) => {
                let wait = Duration::from_millis(due - now);
                crate::rt::timeout(wait, held.changed.wait(seen)).await;
            }
            None => held.changed.wait(seen).await,
        }
    }
}

/// Fires the entries due at `now` (at most [`FIRE_BATCH_MAX`]).
async fn fire(shard: &Rc<Shard>, queue: &Rc<Queue>, held: &Held, now: u64) {
    let Ok(_lock) = held.lock.acquire_permit(1).await else {
        return;
    };
    let mut delayed = Vec::new();
    let mut halves = Vec::new();
    {
        let mut state = held.state.borrow_mut();
        while delayed.len() + halves.len() < FIRE_BATCH_MAX {
            let Some(entry) = state.wheel.pop_due(now) else {
                break;
            };
            // Cancelled or decided meanwhile: nothing to do.
            if !state.pending.contains(entry.offset) {
                continue;
            }
            if state.halves.contains_key(&entry.offset) {
                halves.push(entry.offset);
            } else {
                delayed.push(entry);
            }
        }
    }
    if !delayed.is_empty() {
        let mut offsets: Vec<u64> = delayed.iter().map(|e| e.offset).collect();
        offsets.sort_unstable();
        offsets.dedup();
        match release::release(shard, queue, held, &offsets, Outcome::Fired).await {
            Ok(()) => {
                let fired_at = now_ms();
                for entry in &delayed {
                    held.stats
                        .observe_lateness(fired_at.saturating_sub(entry.due_ms));
                }
            }
            Err(e) => {
                log::warn!(
                    "{}/{}: releasing {} delayed messages failed, retrying in {RETRY_MS} ms: {e}",
                    queue.topic,
                    queue.id,
                    offsets.len()
                );
                for entry in delayed {
                    held.schedule(entry.offset, now + RETRY_MS);
                }
            }
        }
    }
    if !halves.is_empty() {
        halves.sort_unstable();
        check_halves(shard, queue, held, &halves, now).await;
    }
}

/// Halves without an outcome: checked back again, or given the default outcome once their
/// checks ran out.
async fn check_halves(shard: &Rc<Shard>, queue: &Rc<Queue>, held: &Held, halves: &[u64], now: u64) {
    let config = &shard.config.held;
    let mut exhausted = Vec::new();
    let mut to_check = Vec::new();
    {
        let mut state = held.state.borrow_mut();
        for &offset in halves {
            let Some(checks) = state.halves.get_mut(&offset) else {
                continue;
            };
            if *checks >= config.checks_max {
                exhausted.push(offset);
            } else {
                *checks += 1;
                to_check.push((offset, *checks));
            }
        }
    }
    if !exhausted.is_empty() {
        let decided = match config.default_outcome {
            HeldOutcome::Commit => {
                release::release(shard, queue, held, &exhausted, Outcome::Committed).await
            }
            HeldOutcome::Rollback => {
                release::settle_without_release(held, &exhausted, Outcome::RolledBack).await
            }
        };
        match decided {
            Ok(()) => log::info!(
                "{}/{}: {} half messages got no outcome after {} checks: {:?}",
                queue.topic,
                queue.id,
                exhausted.len(),
                config.checks_max,
                config.default_outcome
            ),
            Err(e) => {
                log::warn!(
                    "{}/{}: the default outcome of {} halves failed, retrying: {e}",
                    queue.topic,
                    queue.id,
                    exhausted.len()
                );
                for &offset in &exhausted {
                    held.schedule(offset, now + RETRY_MS);
                }
            }
        }
    }
    if to_check.is_empty() {
        return;
    }
    let offsets: Vec<u64> = to_check.iter().map(|(o, _)| *o).collect();
    let mut checks = Vec::new();
    let read = for_each_record(&held.log, &offsets, |record, _| {
        let Some(group) = record.txn_group() else {
            return;
        };
        // The half as the handler sees it: one record, the held offset as its offset.
        let mut builder = BatchBuilder::new(protocol::record::BATCH_LEN_MAX);
        let properties: Vec<Property<'_>> = record.properties().filter_map(Result::ok).collect();
        let pushed = builder.push(&Record {
            timestamp_ms: record.timestamp_ms(),
            message_type: record.message_type(),
            key: record.key(),
            properties: &properties,
            value: record.value(),
        });
        let check = to_check
            .iter()
            .find(|(o, _)| *o == record.offset())
            .map_or(1, |(_, n)| *n);
        checks.push((
            group.to_owned(),
            TransactionCheck {
                id: HeldRef {
                    topic: queue.topic.to_string(),
                    queue_id: queue.id,
                    offset: record.offset(),
                },
                producer_group: group.to_owned(),
                check,
                batch: pushed
                    .ok()
                    .and_then(|()| builder.finish())
                    .unwrap_or_default(),
            },
        ));
    })
    .await;
    if let Err(e) = read {
        log::warn!("{}/{}: reading halves to check: {e}", queue.topic, queue.id);
    }
    for (group, check) in checks {
        if let Some(frame) = super::checks::check_frame(&check) {
            super::checks::send(shard, &group, frame).await;
            held.stats.checks_sent.set(held.stats.checks_sent.get() + 1);
        }
    }
    let next = now + config.check_interval_ms;
    for offset in offsets {
        held.schedule(offset, next);
    }
}
