//! Names and defaults of retries and dead letters (ARCHITECTURE §13.2).
//!
//! A consumer group `G` that rejects a message of topic `T` gets its copy redelivered from
//! the retry topic `T.RETRY.G`, one queue per backoff level, and after its last redelivery
//! stored in the dead-letter topic `T.DLQ.G`. Both keep the `[area]-[serviceId]` rule: the
//! suffix extends the service id, so a group whose name has a `-` (allowed in groups, not in
//! service ids) or would make the id longer than 64 characters is named by a stable hash
//! instead, `T.RETRY.h<16 hex digits>` ([`group_token`]). When even that does not fit (a
//! service id over 40 characters), the group cannot have retries: a nack is refused with
//! `RetryUnavailable`, never silently dropped. Service ids containing `.RETRY.` or `.DLQ.`
//! are hence reserved.

use crate::names::{NameError, Topic};

/// What marks a retry topic's name.
pub const RETRY_MARKER: &str = ".RETRY.";
/// What marks a dead-letter topic's name.
pub const DEAD_LETTER_MARKER: &str = ".DLQ.";

/// RocketMQ's backoff schedule: the delay before redelivery `k` is entry `k - 1` (the last
/// entry for later ones), in milliseconds: 1 s 5 s 10 s 30 s 1 m 2 m 3 m 4 m 5 m 6 m 7 m 8 m
/// 9 m 10 m 20 m 30 m 1 h 2 h.
pub const SCHEDULE_MS_DEFAULT: [u64; 18] = [
    1_000, 5_000, 10_000, 30_000, 60_000, 120_000, 180_000, 240_000, 300_000, 360_000, 420_000,
    480_000, 540_000, 600_000, 1_200_000, 1_800_000, 3_600_000, 7_200_000,
];

/// Redeliveries before a message is dead-lettered (RocketMQ's 16).
pub const MAX_REDELIVERIES_DEFAULT: u32 = 16;

/// Most backoff levels a schedule may have (queues of a retry topic).
pub const SCHEDULE_LEVELS_MAX: usize = 64;

/// What kind of topic a name is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TopicKind {
    /// A topic producers write.
    Plain,
    /// A group's retry topic.
    Retry,
    /// A group's dead-letter topic.
    DeadLetter,
}

/// The kind of `topic`, from its name.
pub fn kind(topic: &str) -> TopicKind {
    if topic.contains(RETRY_MARKER) {
        TopicKind::Retry
    } else if topic.contains(DEAD_LETTER_MARKER) {
        TopicKind::DeadLetter
    } else {
        TopicKind::Plain
    }
}

/// The retry topic of `group` on `topic`.
pub fn retry_topic(topic: &str, group: &str) -> Result<String, NameError> {
    named(topic, RETRY_MARKER, group)
}

/// The dead-letter topic of `group` on `topic`.
pub fn dead_letter_topic(topic: &str, group: &str) -> Result<String, NameError> {
    named(topic, DEAD_LETTER_MARKER, group)
}

/// The topic and group token a retry or dead-letter topic's name is made of, split at its
/// marker; `None` for a plain topic.
pub fn split(topic: &str) -> Option<(&str, &str)> {
    let marker = match kind(topic) {
        TopicKind::Plain => return None,
        TopicKind::Retry => RETRY_MARKER,
        TopicKind::DeadLetter => DEAD_LETTER_MARKER,
    };
    topic.split_once(marker)
}

fn named(topic: &str, marker: &str, group: &str) -> Result<String, NameError> {
    topic.parse::<Topic>()?;
    let plain = format!("{topic}{marker}{group}");
    if plain.parse::<Topic>().is_ok() {
        return Ok(plain);
    }
    let hashed = format!("{topic}{marker}{}", group_token(group));
    hashed.parse::<Topic>()?;
    Ok(hashed)
}

/// The stable stand-in for a group whose name does not fit a service id: `h` and the
/// FNV-1a 64 hash of the name in hex.
pub fn group_token(group: &str) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in group.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("h{hash:016x}")
}

/// The backoff level (queue of the retry topic) of redelivery `attempt` (1-based) when the
/// schedule has `levels` entries: the last level takes every later attempt.
pub fn level_of(attempt: u32, levels: u32) -> u32 {
    attempt.clamp(1, levels.max(1)) - 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_keep_the_topic_rule_or_fall_back_to_a_hash() {
        assert_eq!(
            retry_topic("A10-20190001", "orders").unwrap(),
            "A10-20190001.RETRY.orders"
        );
        assert_eq!(
            dead_letter_topic("A10-20190001", "orders").unwrap(),
            "A10-20190001.DLQ.orders"
        );
        let dashed = retry_topic("A10-20190001", "order-svc").unwrap();
        assert_eq!(
            dashed,
            format!("A10-20190001.RETRY.{}", group_token("order-svc"))
        );
        assert!(dashed.parse::<Topic>().is_ok());
        let long_group = "g".repeat(100);
        assert!(
            retry_topic("A10-1", &long_group)
                .unwrap()
                .parse::<Topic>()
                .is_ok()
        );
        let long_service = format!("A10-{}", "s".repeat(50));
        assert!(retry_topic(&long_service, "g-1").is_err());
        assert!(retry_topic("nope", "g").is_err());
        assert_eq!(kind("A10-1.RETRY.g"), TopicKind::Retry);
        assert_eq!(kind("A10-1.DLQ.g"), TopicKind::DeadLetter);
        assert_eq!(kind("A10-1"), TopicKind::Plain);
        assert_eq!(split("A10-1.DLQ.g"), Some(("A10-1", "g")));
        assert_eq!(split("A10-1"), None);
    }

    #[test]
    fn levels_clamp_to_the_schedule() {
        assert_eq!(level_of(1, 18), 0);
        assert_eq!(level_of(18, 18), 17);
        assert_eq!(level_of(40, 18), 17);
        assert_eq!(level_of(0, 3), 0);
        assert_eq!(level_of(5, 0), 0);
    }
}
