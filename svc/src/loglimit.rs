//! A rate limit on log lines: a flood of bad connections must not become a flood of log
//! lines, which would fill disks and bury the lines that matter. A few lines per window are
//! logged; the rest are counted, and the count is logged as one summary line.

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use log::Level;

/// Lines logged per window before the rest are only counted.
pub const LINES_PER_WINDOW: u32 = 5;
/// The window: a few lines a second at most.
pub const WINDOW: Duration = Duration::from_secs(1);

/// What to do with one line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Log it, after a summary of the `suppressed` lines before it when not 0.
    Log {
        /// Lines suppressed since the last summary.
        suppressed: u64,
    },
    /// Count it only.
    Suppress,
}

/// Rate-limits one kind of log line (`what` names it in the summary).
pub struct LogLimit {
    what: &'static str,
    lines_per_window: u32,
    window: Duration,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    window_start: Option<Instant>,
    logged: u32,
    suppressed: u64,
}

impl LogLimit {
    /// [`LINES_PER_WINDOW`] lines per [`WINDOW`] of the kind `what`.
    pub fn new(what: &'static str) -> Self {
        Self::with_rate(what, LINES_PER_WINDOW, WINDOW)
    }

    /// `lines_per_window` lines per `window`.
    pub fn with_rate(what: &'static str, lines_per_window: u32, window: Duration) -> Self {
        Self {
            what,
            lines_per_window,
            window,
            state: Mutex::new(State::default()),
        }
    }

    /// Whether a line at `now` is logged. A count is always consistent, so a lock poisoned by
    /// a panic elsewhere is used as is.
    pub fn check(&self, now: Instant) -> Verdict {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let in_window = state
            .window_start
            .is_some_and(|start| now.saturating_duration_since(start) < self.window);
        if !in_window {
            let suppressed = std::mem::take(&mut state.suppressed);
            state.window_start = Some(now);
            state.logged = 1;
            return Verdict::Log { suppressed };
        }
        if state.logged < self.lines_per_window {
            state.logged += 1;
            return Verdict::Log { suppressed: 0 };
        }
        state.suppressed += 1;
        Verdict::Suppress
    }

    /// The lines suppressed in a window that has ended, to be summarised now (called
    /// periodically, so a flood that stops is still summarised).
    pub fn take_suppressed(&self, now: Instant) -> u64 {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let ended = state
            .window_start
            .is_none_or(|start| now.saturating_duration_since(start) >= self.window);
        if ended {
            std::mem::take(&mut state.suppressed)
        } else {
            0
        }
    }

    /// Logs `args` at `level` if the limit allows, after a summary of what it suppressed.
    pub fn log(&self, level: Level, args: std::fmt::Arguments<'_>) {
        match self.check(Instant::now()) {
            Verdict::Log { suppressed } => {
                self.summarise(level, suppressed);
                log::log!(level, "{args}");
            }
            Verdict::Suppress => {}
        }
    }

    /// Logs the summary of lines suppressed in an ended window, if any.
    pub fn flush(&self, level: Level) {
        self.summarise(level, self.take_suppressed(Instant::now()));
    }

    fn summarise(&self, level: Level, suppressed: u64) {
        if suppressed > 0 {
            log::log!(level, "{}: {suppressed} more suppressed", self.what);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_few_lines_per_window_then_one_summary() {
        let limit = LogLimit::with_rate("faults", 3, Duration::from_secs(1));
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let verdicts: Vec<_> = (0..10).map(|i| limit.check(at(i * 10))).collect();
        let logged = verdicts.iter().filter(|v| **v != Verdict::Suppress).count();
        assert_eq!(logged, 3);
        assert!(
            verdicts[..3]
                .iter()
                .all(|v| *v == Verdict::Log { suppressed: 0 })
        );
        // Not summarised before the window ends.
        assert_eq!(limit.take_suppressed(at(500)), 0);
        // The first line of the next window carries the count of the previous one.
        assert_eq!(limit.check(at(1_000)), Verdict::Log { suppressed: 7 });
        assert_eq!(limit.check(at(1_001)), Verdict::Log { suppressed: 0 });
    }

    #[test]
    fn a_flood_that_stops_is_summarised_by_the_flush() {
        let limit = LogLimit::with_rate("refusals", 1, Duration::from_secs(1));
        let t0 = Instant::now();
        assert_eq!(limit.check(t0), Verdict::Log { suppressed: 0 });
        for _ in 0..1_000 {
            assert_eq!(limit.check(t0), Verdict::Suppress);
        }
        assert_eq!(limit.take_suppressed(t0 + Duration::from_millis(999)), 0);
        assert_eq!(limit.take_suppressed(t0 + Duration::from_secs(1)), 1_000);
        // Taken once: the next line starts afresh.
        assert_eq!(limit.take_suppressed(t0 + Duration::from_secs(2)), 0);
        assert_eq!(
            limit.check(t0 + Duration::from_secs(2)),
            Verdict::Log { suppressed: 0 }
        );
    }
}
