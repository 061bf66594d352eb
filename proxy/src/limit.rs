//! The rate limit of publishes and requests: a token bucket per caller (`governor`'s GCRA,
//! which is a token bucket kept as one timestamp).
//!
//! HTTP callers are keyed by what the proxy knows of them, never by what they declare (a fresh
//! `identity` per request must not get a fresh bucket): their authenticated principal with
//! `[security]` on, else their peer IP address (`crate::caller::Caller::rate_key`). A
//! WebSocket session takes from its principal's bucket with security on, else from a bucket
//! of its own. A batch takes one token per message. A refusal says how long until the tokens asked for are back, which
//! HTTP sends as `Retry-After` and the WebSocket as `retry_after_ms`.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::config::ProxyConfig;
use crate::error::ApiError;

/// The limit in force, for messages: `rate` per second, `burst` at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Limit {
    rate: NonZeroU32,
    burst: NonZeroU32,
}

impl Limit {
    fn of(config: &ProxyConfig) -> Option<Self> {
        let (rate, burst) = config.rate_limit()?;
        Some(Self {
            rate: NonZeroU32::new(rate)?,
            burst: NonZeroU32::new(burst)?,
        })
    }

    fn quota(self) -> Quota {
        Quota::per_second(self.rate).allow_burst(self.burst)
    }

    /// The answer when `n` messages do not fit: 400 when they never can (a batch over the
    /// burst), else 429 with the wait.
    fn refusal(self, who: &str, n: u32, outcome: Refused) -> ApiError {
        match outcome {
            Refused::Never => ApiError::bad_request(format!(
                "{n} messages at once are over the rate limit's burst of {}; send smaller \
                 batches",
                self.burst
            )),
            Refused::Wait(wait) => ApiError::rate_limited(
                format!(
                    "rate limit of {} messages/s (burst {}) per {who} reached; retry in {} ms",
                    self.rate,
                    self.burst,
                    crate::error::retry_after_ms(wait)
                ),
                wait,
            ),
        }
    }
}

enum Refused {
    Never,
    Wait(Duration),
}

/// The buckets of the HTTP callers (and of principals), and the limit new WebSocket sessions
/// get.
pub struct RateLimits {
    limit: Option<Limit>,
    http: Option<Arc<DefaultKeyedRateLimiter<String>>>,
}

impl RateLimits {
    /// No buckets at all when the limit is off (`rate_limit_messages_per_s = 0`).
    pub fn new(config: &ProxyConfig) -> Self {
        let limit = Limit::of(config);
        Self {
            limit,
            http: limit.map(|l| Arc::new(RateLimiter::keyed(l.quota()))),
        }
    }

    /// Takes `n` tokens from the HTTP caller `key`'s bucket, or says why not.
    pub fn check_http(&self, key: &str, n: usize) -> Result<(), ApiError> {
        let (Some(limit), Some(buckets)) = (self.limit, &self.http) else {
            return Ok(());
        };
        check_keyed(limit, buckets, key, n, "caller")
    }

    /// The bucket of a new WebSocket session: the caller's keyed bucket (`shared_key`, its
    /// principal's with security on), so sessions opened one after another share it, or a
    /// bucket of the session's own.
    pub fn session(&self, shared_key: Option<String>) -> SessionLimit {
        let bucket = match (self.limit, &self.http, shared_key) {
            (Some(_), Some(buckets), Some(key)) => Bucket::Shared(buckets.clone(), key),
            (Some(limit), _, _) => Bucket::Own(RateLimiter::direct(limit.quota())),
            (None, _, _) => Bucket::Unlimited,
        };
        SessionLimit {
            limit: self.limit,
            bucket,
        }
    }

    /// Drops the buckets of HTTP callers that are full again (idle callers).
    pub fn sweep(&self) {
        if let Some(buckets) = &self.http {
            buckets.retain_recent();
            buckets.shrink_to_fit();
        }
    }
}

/// Takes `n` tokens from `key`'s bucket in `buckets`, or says why not (naming `who`).
fn check_keyed(
    limit: Limit,
    buckets: &DefaultKeyedRateLimiter<String>,
    key: &str,
    n: usize,
    who: &str,
) -> Result<(), ApiError> {
    let n = clamp(n);
    let outcome = match buckets.check_key_n(&key.to_owned(), n) {
        Ok(Ok(())) => return Ok(()),
        Ok(Err(not_until)) => {
            Refused::Wait(not_until.wait_time_from(DefaultClock::default().now()))
        }
        Err(_) => Refused::Never,
    };
    Err(limit.refusal(who, n.get(), outcome))
}

enum Bucket {
    Unlimited,
    Own(DefaultDirectRateLimiter),
    Shared(Arc<DefaultKeyedRateLimiter<String>>, String),
}

/// One WebSocket session's bucket.
pub struct SessionLimit {
    limit: Option<Limit>,
    bucket: Bucket,
}

impl SessionLimit {
    /// Takes `n` tokens, or says why not.
    pub fn check(&self, n: usize) -> Result<(), ApiError> {
        let Some(limit) = self.limit else {
            return Ok(());
        };
        let bucket = match &self.bucket {
            Bucket::Unlimited => return Ok(()),
            Bucket::Shared(buckets, key) => return check_keyed(limit, buckets, key, n, "caller"),
            Bucket::Own(bucket) => bucket,
        };
        let n = clamp(n);
        let outcome = match bucket.check_n(n) {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(not_until)) => {
                Refused::Wait(not_until.wait_time_from(DefaultClock::default().now()))
            }
            Err(_) => Refused::Never,
        };
        Err(limit.refusal("session", n.get(), outcome))
    }
}

/// `n` as a token count: at least 1, and a count past `u32` is over any burst anyway.
fn clamp(n: usize) -> NonZeroU32 {
    NonZeroU32::new(u32::try_from(n).unwrap_or(u32::MAX).max(1)).unwrap_or(NonZeroU32::MIN)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(rate: u32, burst: u32) -> RateLimits {
        RateLimits::new(&ProxyConfig {
            rate_limit_messages_per_s: rate,
            rate_limit_burst_messages: burst,
            ..ProxyConfig::default()
        })
    }

    #[test]
    fn unlimited_by_default() {
        let limits = RateLimits::new(&ProxyConfig::default());
        for _ in 0..10_000 {
            limits.check_http("a", 1_000).unwrap();
        }
        limits.session(None).check(1_000_000).unwrap();
    }

    #[test]
    fn callers_have_buckets_of_their_own() {
        // One token a second: refills take far longer than this test.
        let limits = limits(1, 3);
        limits.check_http("a", 2).unwrap();
        limits.check_http("a", 1).unwrap();
        let refused = limits.check_http("a", 1).unwrap_err();
        assert_eq!(refused.code, "rate_limited");
        let wait = refused.retry_after.expect("a wait");
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_secs(1),
            "{wait:?}"
        );
        assert!(
            refused.message.contains("1 messages/s (burst 3)"),
            "{}",
            refused.message
        );
        limits.check_http("b", 3).unwrap();
        let too_big = limits.check_http("c", 4).unwrap_err();
        assert_eq!(too_big.code, "bad_request");
        limits.sweep();
    }

    #[test]
    fn sessions_have_buckets_of_their_own() {
        let limits = limits(1, 0);
        let (one, two) = (limits.session(None), limits.session(None));
        one.check(1).unwrap();
        assert_eq!(one.check(1).unwrap_err().code, "rate_limited");
        two.check(1).unwrap();
        assert!(one.check(1).unwrap_err().message.contains("per session"));
    }

    #[test]
    fn sessions_of_one_principal_share_its_bucket_with_its_http_calls() {
        let limits = limits(1, 2);
        let key = || Some("principal app".to_owned());
        limits.session(key()).check(1).unwrap();
        limits.check_http("principal app", 1).unwrap();
        assert_eq!(
            limits.session(key()).check(1).unwrap_err().code,
            "rate_limited"
        );
        limits
            .session(Some("principal other".into()))
            .check(1)
            .unwrap();
    }
}
