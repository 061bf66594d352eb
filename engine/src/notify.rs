//! A single-threaded wake-up for tasks of one executor: tail readers waiting for appends,
//! push tasks waiting for credit, handovers waiting for a commit.
//!
//! A waiter takes the [`Notify::generation`] before it checks its condition and waits for the
//! generation to move past it, so a notification between the check and the wait is never lost.
//! No allocation per notification; waiters are kept until the next notification.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

/// Wakes every task waiting at the moment [`Notify::notify`] is called.
#[derive(Debug, Default)]
pub struct Notify {
    generation: Cell<u64>,
    waiters: RefCell<Vec<Waker>>,
}

impl Notify {
    /// A notify with no waiters.
    pub fn new() -> Self {
        Self::default()
    }

    /// The current generation; pass it to [`Notify::wait`] after checking the condition.
    pub fn generation(&self) -> u64 {
        self.generation.get()
    }

    /// Advances the generation and wakes every waiter.
    pub fn notify(&self) {
        self.generation.set(self.generation.get().wrapping_add(1));
        let waiters = std::mem::take(&mut *self.waiters.borrow_mut());
        for waker in waiters {
            waker.wake();
        }
    }

    /// Resolves once the generation differs from `seen`.
    pub fn wait(&self, seen: u64) -> Wait<'_> {
        Wait { notify: self, seen }
    }
}

/// The future of [`Notify::wait`].
#[derive(Debug)]
pub struct Wait<'a> {
    notify: &'a Notify,
    seen: u64,
}

impl Future for Wait<'_> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.notify.generation.get() != self.seen {
            return Poll::Ready(());
        }
        let mut waiters = self.notify.waiters.borrow_mut();
        if !waiters.iter().any(|w| w.will_wake(cx.waker())) {
            waiters.push(cx.waker().clone());
        }
        Poll::Pending
    }
}
