//! One thread per client that fires deadlines: it completes async calls with a timeout when
//! no answer came in time (sync calls time out on their own thread).

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Instant;

/// What to do when a deadline passes.
pub(crate) type TimerAction = Box<dyn FnOnce() + Send>;

struct Entry {
    deadline: Instant,
    seq: u64,
    action: TimerAction,
}

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        (self.deadline, self.seq) == (other.deadline, other.seq)
    }
}
impl Eq for Entry {}
impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Entry {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.deadline, self.seq).cmp(&(other.deadline, other.seq))
    }
}

#[derive(Default)]
struct State {
    heap: BinaryHeap<Reverse<Entry>>,
    seq: u64,
    stopped: bool,
}

#[derive(Default)]
struct Shared {
    state: Mutex<State>,
    changed: Condvar,
}

/// Runs actions at their deadlines on one background thread.
pub(crate) struct Timer {
    shared: Arc<Shared>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Timer {
    /// Starts the timer thread.
    pub(crate) fn start(name: &str) -> std::io::Result<Self> {
        let shared = Arc::new(Shared::default());
        let run = shared.clone();
        let thread = std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || run_timer(&run))?;
        Ok(Self {
            shared,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Runs `action` at `deadline` (at once if it passed). Actions run on the timer thread
    /// and must not block; completing a slot is what they are for. Ignored after `stop`.
    pub(crate) fn schedule(&self, deadline: Instant, action: TimerAction) {
        let mut state = self
            .shared
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if state.stopped {
            return;
        }
        state.seq += 1;
        let seq = state.seq;
        let earliest = state
            .heap
            .peek()
            .is_none_or(|Reverse(head)| deadline < head.deadline);
        state.heap.push(Reverse(Entry {
            deadline,
            seq,
            action,
        }));
        drop(state);
        if earliest {
            self.shared.changed.notify_one();
        }
    }

    /// Stops the thread; pending actions are dropped unrun (their slots close).
    pub(crate) fn stop(&self) {
        let dropped = {
            let mut state = self
                .shared
                .state
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            state.stopped = true;
            std::mem::take(&mut state.heap)
        };
        drop(dropped);
        self.shared.changed.notify_one();
        let handle = self
            .thread
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(handle) = handle {
            if handle.thread().id() != std::thread::current().id() {
                let _ = handle.join();
            }
        }
    }
}

impl Drop for Timer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn run_timer(shared: &Shared) {
    let mut state = shared.state.lock().unwrap_or_else(PoisonError::into_inner);
    loop {
        if state.stopped {
            return;
        }
        let now = Instant::now();
        let mut due = Vec::new();
        while state
            .heap
            .peek()
            .is_some_and(|Reverse(head)| head.deadline <= now)
        {
            if let Some(Reverse(entry)) = state.heap.pop() {
                due.push(entry.action);
            }
        }
        if !due.is_empty() {
            drop(state);
            for action in due {
                action();
            }
            state = shared.state.lock().unwrap_or_else(PoisonError::into_inner);
            continue;
        }
        state = match state.heap.peek() {
            Some(Reverse(head)) => {
                let wait = head.deadline.saturating_duration_since(now);
                shared
                    .changed
                    .wait_timeout(state, wait)
                    .unwrap_or_else(PoisonError::into_inner)
                    .0
            }
            None => shared
                .changed
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::time::Duration;

    #[test]
    fn actions_fire_in_deadline_order() {
        let timer = Timer::start("test-timer").unwrap();
        let (tx, rx) = mpsc::channel();
        let now = Instant::now();
        for (i, ms) in [30u64, 10, 20].into_iter().enumerate() {
            let tx = tx.clone();
            timer.schedule(
                now + Duration::from_millis(ms),
                Box::new(move || tx.send(i).unwrap()),
            );
        }
        let order: Vec<_> = (0..3)
            .map(|_| rx.recv_timeout(Duration::from_secs(10)).unwrap())
            .collect();
        assert_eq!(order, [1, 2, 0]);
        assert!(now.elapsed() >= Duration::from_millis(30));
        timer.stop();
        timer.schedule(now, Box::new(move || tx.send(9).unwrap()));
        assert!(rx.recv_timeout(Duration::from_millis(20)).is_err());
    }
}
