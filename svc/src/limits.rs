//! The limits that hold off hostile and broken clients, shared by every server on
//! [`crate::server::serve`]: how long a frame may take to arrive, how much memory partial
//! frames may hold, and how many connections one address may keep open. Each server exposes
//! them as settings with the defaults here, so a slowloris, a flood of half-sent large frames
//! or one greedy host cannot take a server's memory or lock other clients out.

use std::time::Duration;

use crate::config::ConfigError;

/// Default time a frame has to arrive whole once its first byte is in (and a new connection
/// to send its first frame): a control request is small and sent in one write, so 10 s is
/// generous for a slow network yet ends a slowloris long before the 60 s idle timeout would.
pub const FRAME_TIMEOUT_MS_DEFAULT: u64 = 10_000;
/// Default memory, per server, that partial frames above [`PARTIAL_FRAME_ALLOWANCE`] may hold
/// at once: 16 nameserver frames of the largest size (4 MiB), far more than honest clients
/// send at once, while 100 connections holding half-sent 4 MiB frames no longer cost 400 MB.
pub const PARTIAL_FRAME_BYTES_MAX_DEFAULT: usize = 64 << 20;
/// Default number of connections one peer address may hold open: more than a host of
/// brokers and tools needs, and few enough that one address cannot take every slot of
/// `max_connections` (1,024 by default) and lock everyone else out.
pub const CONNECTIONS_PER_IP_MAX_DEFAULT: usize = 128;
/// A frame up to this size is buffered without reserving from the partial-frame budget: the
/// control requests that matter are small, so they are never held up behind large ones. With
/// `max_connections` connections this bounds the unreserved memory (64 MiB at 1,024).
pub const PARTIAL_FRAME_ALLOWANCE: usize = 64 << 10;

/// The connection limits of one server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Most connections open at once; one more is closed at once.
    pub max_connections: usize,
    /// Most connections open at once from one peer address; one more is closed at once.
    pub connections_per_ip_max: usize,
    /// Bytes that frames larger than [`PARTIAL_FRAME_ALLOWANCE`] may hold while they arrive,
    /// over all connections; a connection waits, reading nothing, until its frame fits.
    pub partial_frame_bytes_max: usize,
    /// How long a frame may take to arrive once its first byte has (and a new connection to
    /// send a first frame), and how long an answer may take to be written.
    pub frame_timeout: Duration,
}

impl Limits {
    /// The default limits with `max_connections`, which every server sets itself.
    pub fn new(max_connections: usize) -> Self {
        Self {
            max_connections,
            connections_per_ip_max: CONNECTIONS_PER_IP_MAX_DEFAULT,
            partial_frame_bytes_max: PARTIAL_FRAME_BYTES_MAX_DEFAULT,
            frame_timeout: Duration::from_millis(FRAME_TIMEOUT_MS_DEFAULT),
        }
    }
}

/// The budget's largest value: what the semaphore behind it can count.
pub const PARTIAL_FRAME_BYTES_MAX_LIMIT: usize = tokio::sync::Semaphore::MAX_PERMITS;

/// Checks a server's frame and connection settings by their keys: `frame_len_max` in its
/// range ([`crate::config::check_frame_len_max`]), the others at least 1, and a budget that
/// holds at least one largest frame, else such a frame could never arrive.
pub fn check_limits<E: ConfigError>(
    frame_len_max: usize,
    frame_timeout_ms: u64,
    partial_frame_bytes_max: usize,
    connections_per_ip_max: usize,
) -> Result<(), E> {
    crate::config::check_frame_len_max(frame_len_max)?;
    crate::config::check_at_least_one(&[
        ("frame_timeout_ms", frame_timeout_ms),
        ("connections_per_ip_max", connections_per_ip_max as u64),
    ])?;
    if !(frame_len_max..=PARTIAL_FRAME_BYTES_MAX_LIMIT).contains(&partial_frame_bytes_max) {
        return Err(E::invalid(
            "partial_frame_bytes_max",
            format!(
                "{partial_frame_bytes_max} must hold one largest frame (frame_len_max \
                 {frame_len_max}) and be at most {PARTIAL_FRAME_BYTES_MAX_LIMIT}"
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::Invalid;

    #[test]
    fn limits_are_refused_by_key() {
        assert_eq!(check_limits::<Invalid>(4 << 20, 1, 4 << 20, 1), Ok(()));
        assert_eq!(
            check_limits::<Invalid>(4 << 20, 0, 64 << 20, 1),
            Err(Invalid("frame_timeout_ms"))
        );
        assert_eq!(
            check_limits::<Invalid>(4 << 20, 1, 64 << 20, 0),
            Err(Invalid("connections_per_ip_max"))
        );
        assert_eq!(
            check_limits::<Invalid>(4 << 20, 1, (4 << 20) - 1, 1),
            Err(Invalid("partial_frame_bytes_max"))
        );
    }
}
