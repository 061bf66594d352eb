//! The retry mark (property tag 12): what a broker adds to a copy of a message that a
//! consumer rejected (`Nack`), when it appends the copy to the group's retry or dead-letter
//! topic (ARCHITECTURE §13.2).
//!
//! Value layout, little-endian:
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0  | 1 | version, [`RETRY_MARK_VERSION`] |
//! | 1  | 2 | `attempt`: which redelivery this copy is (1 for the first retry) |
//! | 3  | 8 | `due_ms`: not delivered before this time, Unix ms (0 in a dead-letter topic) |
//! | 11 | 4 | `origin_queue`: the queue of the original message |
//! | 15 | 8 | `origin_offset`: its offset there |
//! | 23 | 1 | `topic_len`, then the origin topic (UTF-8) |
//! | .. | 1 | `group_len`, then the consumer group that rejected it (UTF-8) |
//! | .. | .. | the rest: the last rejection's reason (UTF-8, possibly empty) |

/// The only version written; another version is malformed (a newer writer would add a tag).
pub const RETRY_MARK_VERSION: u8 = 1;

/// Bytes before the origin topic.
const FIXED_LEN: usize = 23;

/// Longest reason kept; a longer one is cut at a character boundary by [`truncate_reason`].
pub const RETRY_REASON_LEN_MAX: usize = 512;

/// The retry mark of a redelivered copy; see the module docs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryMark<'a> {
    /// Which redelivery this copy is: 1 for the first retry.
    pub attempt: u16,
    /// Not pushed before this time (Unix ms); 0 for a dead letter.
    pub due_ms: u64,
    /// The original message's queue.
    pub origin_queue: u32,
    /// The original message's offset in that queue.
    pub origin_offset: u64,
    /// The original message's topic.
    pub origin_topic: &'a str,
    /// The consumer group that rejected it.
    pub group: &'a str,
    /// Why the last delivery was rejected, as the consumer said; may be empty.
    pub reason: &'a str,
}

impl<'a> RetryMark<'a> {
    /// Encoded size of the value.
    pub fn encoded_len(&self) -> usize {
        FIXED_LEN + 1 + self.origin_topic.len() + 1 + self.group.len() + self.reason.len()
    }

    /// Appends the value to `out`; `None` when the topic or group is longer than 255 bytes.
    pub(crate) fn encode(&self, out: &mut Vec<u8>) -> Option<()> {
        let topic_len = u8::try_from(self.origin_topic.len()).ok()?;
        let group_len = u8::try_from(self.group.len()).ok()?;
        out.push(RETRY_MARK_VERSION);
        out.extend_from_slice(&self.attempt.to_le_bytes());
        out.extend_from_slice(&self.due_ms.to_le_bytes());
        out.extend_from_slice(&self.origin_queue.to_le_bytes());
        out.extend_from_slice(&self.origin_offset.to_le_bytes());
        out.push(topic_len);
        out.extend_from_slice(self.origin_topic.as_bytes());
        out.push(group_len);
        out.extend_from_slice(self.group.as_bytes());
        out.extend_from_slice(self.reason.as_bytes());
        Some(())
    }

    /// Reads a value; `None` when it is malformed.
    pub(crate) fn decode(value: &'a [u8]) -> Option<Self> {
        let fixed = value.get(..FIXED_LEN)?;
        if fixed[0] != RETRY_MARK_VERSION {
            return None;
        }
        let attempt = u16::from_le_bytes(fixed[1..3].try_into().ok()?);
        let due_ms = u64::from_le_bytes(fixed[3..11].try_into().ok()?);
        let origin_queue = u32::from_le_bytes(fixed[11..15].try_into().ok()?);
        let origin_offset = u64::from_le_bytes(fixed[15..23].try_into().ok()?);
        let rest = &value[FIXED_LEN..];
        let (&topic_len, rest) = rest.split_first()?;
        let (topic, rest) = rest.split_at_checked(usize::from(topic_len))?;
        let (&group_len, rest) = rest.split_first()?;
        let (group, reason) = rest.split_at_checked(usize::from(group_len))?;
        Some(Self {
            attempt,
            due_ms,
            origin_queue,
            origin_offset,
            origin_topic: std::str::from_utf8(topic).ok()?,
            group: std::str::from_utf8(group).ok()?,
            reason: std::str::from_utf8(reason).ok()?,
        })
    }
}

/// `reason` cut to at most [`RETRY_REASON_LEN_MAX`] bytes, at a character boundary.
pub fn truncate_reason(reason: &str) -> &str {
    if reason.len() <= RETRY_REASON_LEN_MAX {
        return reason;
    }
    let mut end = RETRY_REASON_LEN_MAX;
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    &reason[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mark_round_trips_and_golden_bytes_hold() {
        let mark = RetryMark {
            attempt: 3,
            due_ms: 0x0102,
            origin_queue: 7,
            origin_offset: 9,
            origin_topic: "A10-1",
            group: "g",
            reason: "boom",
        };
        let mut out = Vec::new();
        mark.encode(&mut out).unwrap();
        assert_eq!(out.len(), mark.encoded_len());
        let golden: &[u8] = &[
            1, 3, 0, 2, 1, 0, 0, 0, 0, 0, 0, 7, 0, 0, 0, 9, 0, 0, 0, 0, 0, 0, 0, 5, b'A', b'1',
            b'0', b'-', b'1', 1, b'g', b'b', b'o', b'o', b'm',
        ];
        assert_eq!(out, golden);
        assert_eq!(RetryMark::decode(&out), Some(mark));
        for cut in 0..out.len() - 4 {
            assert_eq!(RetryMark::decode(&out[..cut]), None, "cut at {cut}");
        }
        let mut newer = out.clone();
        newer[0] = 2;
        assert_eq!(RetryMark::decode(&newer), None);
    }

    #[test]
    fn reasons_are_cut_at_a_character_boundary() {
        let long = "é".repeat(RETRY_REASON_LEN_MAX);
        let cut = truncate_reason(&long);
        assert!(cut.len() <= RETRY_REASON_LEN_MAX && cut.len() >= RETRY_REASON_LEN_MAX - 1);
        assert_eq!(truncate_reason("short"), "short");
    }
}
