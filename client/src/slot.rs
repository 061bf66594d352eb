//! A one-shot completion that a thread can block on with a deadline and an async task can
//! `.await`: the one primitive behind every sync, async and callback form of the SDK.
//!
//! It needs no runtime: the completing side (a connection's reader thread, the timer) fills
//! the slot and wakes either a parked thread (condvar) or a task (its `Waker`), so the same
//! future works under tokio, async-std or a hand-rolled executor.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use crate::error::{ClientError, Result};

struct State<T> {
    value: Option<Result<T>>,
    /// Set once a value was delivered; a second completion is ignored.
    done: bool,
    waker: Option<Waker>,
    /// A thread is parked on `ready`: only then does completing pay for a wake-up call.
    parked: bool,
}

struct Shared<T> {
    state: Mutex<State<T>>,
    ready: Condvar,
    /// Set (after `state.done`) when the slot was filled: what a spinning waiter polls
    /// without taking the lock.
    filled: AtomicBool,
    /// Live [`Completer`]s; when the last goes without completing, the waiter gets `Closed`.
    completers: AtomicUsize,
}

/// The completing half: fill it once with [`Completer::complete`].
pub(crate) struct Completer<T>(Arc<Shared<T>>);

/// The waiting half: block with [`Waiter::wait_until`] or `.await` it.
pub(crate) struct Waiter<T>(Arc<Shared<T>>);

/// A new empty slot.
pub(crate) fn slot<T>() -> (Completer<T>, Waiter<T>) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            value: None,
            done: false,
            waker: None,
            parked: false,
        }),
        ready: Condvar::new(),
        filled: AtomicBool::new(false),
        completers: AtomicUsize::new(1),
    });
    (Completer(shared.clone()), Waiter(shared))
}

impl<T> Clone for Completer<T> {
    fn clone(&self) -> Self {
        self.0.completers.fetch_add(1, Ordering::Relaxed);
        Self(self.0.clone())
    }
}

impl<T> Completer<T> {
    /// Fills the slot; returns false (dropping `value`) when it was already filled, which is
    /// how a late response loses to a timeout and vice versa.
    pub(crate) fn complete(&self, value: Result<T>) -> bool {
        let (waker, parked) = {
            let mut state = self.0.state.lock().unwrap_or_else(PoisonError::into_inner);
            if state.done {
                return false;
            }
            state.done = true;
            state.value = Some(value);
            (state.waker.take(), state.parked)
        };
        self.0.filled.store(true, Ordering::Release);
        if parked {
            self.0.ready.notify_all();
        }
        if let Some(waker) = waker {
            waker.wake();
        }
        true
    }

    /// True when the slot was already filled.
    #[cfg(test)]
    pub(crate) fn is_done(&self) -> bool {
        self.0
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .done
    }
}

impl<T> Waiter<T> {
    /// Blocks until the slot is filled or `deadline` passes; then a
    /// [`ClientError::Timeout`] of `timeout` (the caller's whole budget) is returned.
    pub(crate) fn wait_until(self, deadline: Instant, timeout: Duration) -> Result<T> {
        // A prompt completion is caught without parking, where cores are to spare.
        crate::spin::spin_until(deadline, || self.0.filled.load(Ordering::Acquire));
        let mut state = self.0.state.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            if let Some(value) = state.value.take() {
                return value;
            }
            if state.done {
                return Err(ClientError::Closed);
            }
            let now = Instant::now();
            if now >= deadline {
                // Claim the slot so a late completion is dropped rather than kept.
                state.done = true;
                return Err(ClientError::Timeout { after: timeout });
            }
            state.parked = true;
            state = self
                .0
                .ready
                .wait_timeout(state, deadline - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
            state.parked = false;
        }
    }

    /// Blocks for at most `timeout`.
    pub(crate) fn wait(self, timeout: Duration) -> Result<T> {
        self.wait_until(Instant::now() + timeout, timeout)
    }
}

impl<T> Future for Waiter<T> {
    type Output = Result<T>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<T>> {
        let mut state = self.0.state.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(value) = state.value.take() {
            return Poll::Ready(value);
        }
        if state.done {
            return Poll::Ready(Err(ClientError::Closed));
        }
        match &state.waker {
            Some(waker) if waker.will_wake(cx.waker()) => {}
            _ => state.waker = Some(cx.waker().clone()),
        }
        Poll::Pending
    }
}

impl<T> Drop for Completer<T> {
    fn drop(&mut self) {
        // The last completer gone without a value: wake the waiter with `Closed` rather than
        // leaving it to its deadline.
        if self.0.completers.fetch_sub(1, Ordering::AcqRel) == 1 {
            let waker = {
                let mut state = self.0.state.lock().unwrap_or_else(PoisonError::into_inner);
                if state.done {
                    return;
                }
                state.done = true;
                state.waker.take()
            };
            self.0.filled.store(true, Ordering::Release);
            self.0.ready.notify_all();
            if let Some(waker) = waker {
                waker.wake();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::task::Wake;

    #[test]
    fn a_value_wakes_a_blocked_thread() {
        let (completer, waiter) = slot::<u32>();
        let t = std::thread::spawn(move || waiter.wait(Duration::from_secs(10)));
        assert!(completer.complete(Ok(7)));
        assert_eq!(t.join().unwrap().unwrap(), 7);
    }

    #[test]
    fn the_first_completion_wins() {
        let (completer, waiter) = slot::<u32>();
        assert!(completer.complete(Ok(1)));
        assert!(!completer.complete(Ok(2)));
        assert_eq!(waiter.wait(Duration::ZERO).unwrap(), 1);
    }

    #[test]
    fn a_deadline_is_a_typed_timeout() {
        let (completer, waiter) = slot::<u32>();
        let err = waiter.wait(Duration::from_millis(5)).unwrap_err();
        assert!(matches!(err, ClientError::Timeout { after } if after == Duration::from_millis(5)));
        assert!(!completer.complete(Ok(1)), "a late value is dropped");
    }

    #[test]
    fn dropping_every_completer_closes_the_waiter() {
        let (completer, waiter) = slot::<u32>();
        let copy = completer.clone();
        drop(completer);
        assert!(!copy.is_done());
        drop(copy);
        assert!(matches!(
            waiter.wait(Duration::from_secs(10)),
            Err(ClientError::Closed)
        ));
    }

    struct CountingWaker(AtomicUsize);
    impl Wake for CountingWaker {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn the_future_is_woken_by_its_completion() {
        let (completer, mut waiter) = slot::<u32>();
        let counter = Arc::new(CountingWaker(AtomicUsize::new(0)));
        let waker = Waker::from(counter.clone());
        let mut cx = Context::from_waker(&waker);
        assert!(Pin::new(&mut waiter).poll(&mut cx).is_pending());
        completer.complete(Ok(3));
        assert_eq!(counter.0.load(Ordering::SeqCst), 1);
        assert!(matches!(
            Pin::new(&mut waiter).poll(&mut cx),
            Poll::Ready(Ok(3))
        ));
    }
}
