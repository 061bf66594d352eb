//! Produces waiting for the commit point: an `acks=all` produce is answered once every
//! in-sync replica holds it durably, and fails, never succeeds, if its leader is deposed first.
//!
//! Fencing is what keeps an acknowledgement true across a failover: a leader that was paused
//! or cut off while a new epoch began cannot collect acknowledgements from followers that now
//! follow the new leader (their fetches carry the new epoch and are refused), so its commit
//! point stops; when it learns of the new epoch it fails every waiter with
//! [`Deposed`], and the producer retries on the new leader.

use std::{
    cell::{Cell, RefCell},
    collections::VecDeque,
    future::Future,
    pin::Pin,
    rc::Rc,
    task::{Context, Poll, Waker},
};

/// The produce's leader lost its leadership before the produce was committed: it may or may
/// not survive the failover, and the producer must retry on the new leader.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("this broker stopped leading the queue in epoch {epoch} before the write was committed")]
pub struct Deposed {
    /// The epoch that ended.
    pub epoch: u64,
}

#[derive(Default)]
struct Slot {
    outcome: Cell<Option<Result<(), Deposed>>>,
    waker: Cell<Option<Waker>>,
}

impl Slot {
    fn finish(&self, outcome: Result<(), Deposed>) {
        self.outcome.set(Some(outcome));
        if let Some(waker) = self.waker.take() {
            waker.wake();
        }
    }
}

/// The waiters of one leader epoch, in offset order.
#[derive(Default)]
pub struct CommitWaiters {
    committed: Cell<u64>,
    deposed: Cell<Option<u64>>,
    waiters: RefCell<VecDeque<(u64, Rc<Slot>)>>,
}

impl CommitWaiters {
    /// Waiters for a leader whose commit point starts at `committed`.
    pub fn new(committed: u64) -> Self {
        Self {
            committed: Cell::new(committed),
            ..Self::default()
        }
    }

    /// Resolves once the commit point reaches `offset` (the produce's next offset), or with
    /// [`Deposed`] once the epoch ended.
    pub fn wait(&self, offset: u64) -> WaitCommitted {
        let slot = Rc::new(Slot::default());
        if let Some(epoch) = self.deposed.get() {
            slot.outcome.set(Some(Err(Deposed { epoch })));
        } else if offset <= self.committed.get() {
            slot.outcome.set(Some(Ok(())));
        } else {
            let mut waiters = self.waiters.borrow_mut();
            // Produces append in offset order, so this is almost always a push at the back.
            let at = waiters.partition_point(|(o, _)| *o <= offset);
            waiters.insert(at, (offset, slot.clone()));
        }
        WaitCommitted(slot)
    }

    /// The commit point moved to `committed`: answers every produce it covers.
    pub fn advance(&self, committed: u64) {
        if committed <= self.committed.get() {
            return;
        }
        self.committed.set(committed);
        let mut waiters = self.waiters.borrow_mut();
        while waiters.front().is_some_and(|(o, _)| *o <= committed) {
            if let Some((_, slot)) = waiters.pop_front() {
                slot.finish(Ok(()));
            }
        }
    }

    /// The leadership of `epoch` ended: fails every waiting produce, and every later wait.
    pub fn depose(&self, epoch: u64) {
        self.deposed.set(Some(epoch));
        for (_, slot) in self.waiters.borrow_mut().drain(..) {
            slot.finish(Err(Deposed { epoch }));
        }
    }

    /// Produces waiting.
    pub fn len(&self) -> usize {
        self.waiters.borrow().len()
    }

    /// Whether no produce waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Resolves when the produce is committed, or with [`Deposed`].
pub struct WaitCommitted(Rc<Slot>);

impl Future for WaitCommitted {
    type Output = Result<(), Deposed>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.0.outcome.take() {
            Some(outcome) => Poll::Ready(outcome),
            None => {
                self.0.waker.set(Some(cx.waker().clone()));
                Poll::Pending
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_lite::future::{block_on, poll_once};

    #[test]
    fn produces_are_answered_in_order_as_the_commit_point_passes_them() {
        let w = CommitWaiters::new(10);
        block_on(async {
            assert_eq!(w.wait(10).await, Ok(()), "already committed");
            let mut first = w.wait(20);
            let mut second = w.wait(30);
            assert!(poll_once(&mut first).await.is_none());
            w.advance(25);
            assert_eq!(poll_once(&mut first).await, Some(Ok(())));
            assert!(poll_once(&mut second).await.is_none());
            assert_eq!(w.len(), 1);
            w.advance(24);
            assert!(poll_once(&mut second).await.is_none(), "never goes back");
            w.advance(30);
            assert_eq!(second.await, Ok(()));
            assert!(w.is_empty());
        });
    }

    #[test]
    fn a_deposed_leader_answers_nothing_after_its_epoch_ends() {
        let w = CommitWaiters::new(0);
        block_on(async {
            let waiting = w.wait(5);
            w.depose(7);
            assert_eq!(waiting.await, Err(Deposed { epoch: 7 }));
            // Even a commit point that moves later cannot answer a produce any more.
            w.advance(100);
            assert_eq!(w.wait(3).await, Err(Deposed { epoch: 7 }));
        });
    }
}
