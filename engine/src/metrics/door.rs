//! How the metrics endpoint's thread asks shard 0 for a scrape without touching any shard's
//! state: it leaves a request at the door and waits for the figures; shard 0 takes requests in a
//! task of its own, gathers every shard's snapshot over the mesh and answers.
//!
//! The door's mutex is shared by shard 0 and the endpoint thread only, held for a push or a
//! pop, once per scrape; no recording path touches it.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use telemetry::Scrape;

/// Scrapes waiting at once; more are answered 503 (a scraper retries at its next interval).
const WAITING_MAX: usize = 4;

/// Where scrapes wait for shard 0.
#[derive(Default)]
pub(crate) struct Door {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    waiting: VecDeque<SyncSender<Scrape>>,
    taker: Option<Waker>,
    closed: bool,
}

impl Door {
    /// From the endpoint thread: the scrape, or `None` if shard 0 is closing, too many
    /// scrapes wait, or no answer came within `timeout`.
    pub fn ask(&self, timeout: Duration) -> Option<Scrape> {
        let answer = self.leave()?;
        answer.recv_timeout(timeout).ok()
    }

    fn leave(&self) -> Option<Receiver<Scrape>> {
        let (tx, rx) = sync_channel(1);
        let mut state = self.lock();
        if state.closed || state.waiting.len() >= WAITING_MAX {
            return None;
        }
        state.waiting.push_back(tx);
        if let Some(waker) = state.taker.take() {
            // The runtime's cross-thread wake-up: a parked shard 0 wakes on it.
            waker.wake();
        }
        Some(rx)
    }

    /// On shard 0: the next waiting scrape's answer channel. Answer with `try_send`: the
    /// channel holds one answer, so that never blocks.
    pub fn next(&self) -> Next<'_> {
        Next { door: self }
    }

    /// Shard 0 is closing: waiting scrapes are dropped (their endpoint answers 503) and no
    /// more are taken.
    pub fn close(&self) {
        let mut state = self.lock();
        state.closed = true;
        state.waiting.clear();
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The queue is valid whatever a panicking holder left in it.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The future of [`Door::next`].
pub(crate) struct Next<'a> {
    door: &'a Door,
}

impl Future for Next<'_> {
    type Output = SyncSender<Scrape>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut state = self.door.lock();
        match state.waiting.pop_front() {
            Some(answer) => Poll::Ready(answer),
            None => {
                state.taker = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn a_scrape_left_at_the_door_is_answered_by_its_taker() {
        let door = Arc::new(Door::default());
        let taker = door.clone();
        let shard = std::thread::spawn(move || {
            let answer = futures_lite::future::block_on(taker.next());
            let mut scrape = Scrape::default();
            scrape.gauge("g", "G.", &[], 1);
            answer.try_send(scrape).unwrap();
        });
        let text = door.ask(Duration::from_secs(10)).unwrap().render_classic();
        assert!(text.ends_with("g 1\n"), "{text}");
        shard.join().unwrap();
    }

    #[test]
    fn a_closed_door_answers_nothing() {
        let door = Door::default();
        door.close();
        assert!(door.ask(Duration::from_secs(10)).is_none());
    }
}
