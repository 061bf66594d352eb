//! Test support shared by every DeFiBus test crate.
//!
//! Tests never sleep to synchronise: they poll a condition until a deadline and fail naming
//! what they waited for. [`wait_until`] waits for a condition to hold, [`wait_for`] for a value
//! to appear, and [`retry_until`] for a fallible call to succeed (for example while a
//! restarted server becomes reachable again). All three check at once, then back off from
//! [`FIRST_PAUSE`] doubling to [`LONGEST_PAUSE`] between checks, and panic once `timeout` has
//! passed since the call.

use std::fmt::Display;
use std::time::{Duration, Instant};

/// The pause after the first failed check: short, so a condition that is nearly true costs a
/// test almost nothing.
pub const FIRST_PAUSE: Duration = Duration::from_millis(1);

/// The longest pause between two checks: short enough that a test sees a change within a
/// fraction of any timeout, long enough that polling a server does not load it.
pub const LONGEST_PAUSE: Duration = Duration::from_millis(20);

const _: () =
    assert!(FIRST_PAUSE.as_nanos() > 0 && FIRST_PAUSE.as_nanos() <= LONGEST_PAUSE.as_nanos());

/// Polls `condition` until it holds; panics naming `what` and `timeout` once `timeout` has
/// passed.
#[track_caller]
pub fn wait_until(what: &str, timeout: Duration, mut condition: impl FnMut() -> bool) {
    wait_for(what, timeout, || condition().then_some(()))
}

/// Polls `f` until it returns `Some`, and returns that value; panics naming `what` and
/// `timeout` once `timeout` has passed.
#[track_caller]
pub fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let mut waiting = Backoff::until(timeout);
    loop {
        if let Some(value) = f() {
            return value;
        }
        if !waiting.pause() {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
    }
}

/// Calls `attempt` until it returns `Ok`, and returns that value; panics naming `what`,
/// `timeout` and the last error once `timeout` has passed.
#[track_caller]
pub fn retry_until<T, E: Display>(
    what: &str,
    timeout: Duration,
    mut attempt: impl FnMut() -> Result<T, E>,
) -> T {
    let mut waiting = Backoff::until(timeout);
    loop {
        match attempt() {
            Ok(value) => return value,
            Err(e) => {
                if !waiting.pause() {
                    panic!("{what}: still failing after {timeout:?}: {e}");
                }
            }
        }
    }
}

/// A deadline and the growing pause between checks before it.
struct Backoff {
    deadline: Instant,
    next_pause: Duration,
}

impl Backoff {
    fn until(timeout: Duration) -> Self {
        Self {
            deadline: Instant::now() + timeout,
            next_pause: FIRST_PAUSE,
        }
    }

    /// Sleeps before the next check, never past the deadline; false once the deadline has
    /// passed, when there is to be no next check.
    fn pause(&mut self) -> bool {
        let now = Instant::now();
        if now >= self.deadline {
            return false;
        }
        std::thread::sleep(self.next_pause.min(self.deadline - now));
        self.next_pause = (self.next_pause * 2).min(LONGEST_PAUSE);
        true
    }
}

/// `GET path` from the HTTP server at `address` (one request, `Connection: close`): the
/// status code and the body. For scraping `/metrics` in tests; std only, like the rest here.
pub fn http_get(address: std::net::SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect_timeout(&address, Duration::from_secs(10))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n"
    )?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer)?;
    let bad = || std::io::Error::new(std::io::ErrorKind::InvalidData, "not an HTTP answer");
    let (head, body) = answer.split_once("\r\n\r\n").ok_or_else(bad)?;
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(bad)?;
    Ok((status, body.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    #[test]
    fn a_condition_already_true_returns_without_pausing() {
        let started = Instant::now();
        wait_until("nothing", Duration::ZERO, || true);
        assert!(started.elapsed() < LONGEST_PAUSE);
    }

    #[test]
    fn wait_for_returns_the_first_value() {
        let calls = Cell::new(0);
        let value = wait_for("the third call", Duration::from_secs(10), || {
            calls.set(calls.get() + 1);
            (calls.get() == 3).then_some(calls.get() * 10)
        });
        assert_eq!(value, 30);
        assert_eq!(calls.get(), 3);
    }

    #[test]
    #[should_panic(expected = "timed out after 30ms waiting for the impossible")]
    fn a_condition_never_true_panics_naming_what_and_the_timeout() {
        wait_until("the impossible", Duration::from_millis(30), || false);
    }

    #[test]
    #[should_panic(expected = "a server: still failing after 30ms: refused")]
    fn retry_until_panics_with_the_last_error() {
        retry_until::<(), _>("a server", Duration::from_millis(30), || Err("refused"));
    }

    #[test]
    fn the_condition_is_checked_once_more_after_the_deadline_has_passed() {
        // The last pause ends at the deadline, and a check follows it: a condition that became
        // true during that pause is seen rather than reported as timed out.
        let started = Instant::now();
        let timeout = Duration::from_millis(30);
        wait_until("the deadline", timeout, || started.elapsed() >= timeout);
    }
}
