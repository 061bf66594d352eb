//! Request-reply latency and timeouts, recorded by the shard that stores each request.
//!
//! A request is stored on its queue's owner shard, and its reply, sent by the responder on
//! the connection the request was pushed on, normally reaches that same shard: so the shard
//! keeps, per request it stores, when it stored it and until when the requester waits
//! ([`PendingRequests`]), and when a reply names the request (by reply-to and correlation id)
//! it observes the time between the two stores in the queue's [`RequestStats`]. Nothing is
//! shared between shards and the wire format is unchanged. A reply that reaches another shard
//! (a replier offering it wherever the requester is connected) is told to the owner over the
//! mesh with the instant it was stored ([`crate::mesh::MeshMsg::RepliesStored`]), so the
//! latency is still measured store to store and the request is not counted as timed out.
//!
//! A request *times out* when its deadline passes with no reply stored: a reply that arrives
//! after the deadline counts as a timeout, not as a latency; a request never answered is
//! counted by the sweep ([`sweep_loop`], every second) once its deadline passed. So expired
//! requests (skipped at push) are timeouts too, and so are requests pushed but answered late.
//!
//! Requests are tracked only while fewer than [`TRACKED_MAX`] wait on the shard; beyond that
//! (a responder fleet down under load) they are counted as untracked rather than growing
//! memory without bound.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::rc::Rc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use protocol::record::{MessageType, Properties, Property, RECORD_HEADER_LEN};
use telemetry::Histogram;

use crate::shard::Shard;

/// Most requests one shard tracks at once (about 3 MiB of entries at the worst).
pub(crate) const TRACKED_MAX: usize = 65_536;
/// How often each shard counts the requests whose deadline passed unanswered.
const SWEEP_INTERVAL: Duration = Duration::from_secs(1);

/// One queue's request-reply figures, owned by its shard.
#[derive(Default)]
pub(crate) struct RequestStats {
    /// Microseconds from a request stored to its reply stored.
    latency_us: RefCell<Histogram>,
    /// Requests whose deadline passed before a reply was stored.
    timeouts: Cell<u64>,
}

impl RequestStats {
    fn answered(&self, latency: Duration) {
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.latency_us.borrow_mut().observe(micros);
    }

    fn timed_out(&self) {
        self.timeouts.set(self.timeouts.get() + 1);
    }

    /// The latency histogram (µs) and the timeouts so far.
    pub fn snapshot(&self) -> (Histogram, u64) {
        (self.latency_us.borrow().clone(), self.timeouts.get())
    }
}

/// A request stored here and not yet answered.
struct Pending {
    stored: Instant,
    deadline_ms: u64,
    stats: Rc<RequestStats>,
}

/// The requests a shard stored that wait for their replies.
pub(crate) struct PendingRequests {
    /// Hashes (reply-to, correlation id) into the key of `pending`, so an entry holds no
    /// copy of either.
    keys: RandomState,
    pending: RefCell<HashMap<u64, Pending>>,
    /// Requests not tracked because [`TRACKED_MAX`] were.
    untracked: Cell<u64>,
}

impl Default for PendingRequests {
    fn default() -> Self {
        Self {
            keys: RandomState::new(),
            pending: RefCell::new(HashMap::new()),
            untracked: Cell::new(0),
        }
    }
}

impl PendingRequests {
    fn key(&self, reply_to: &str, correlation_id: &[u8]) -> u64 {
        self.keys.hash_one((reply_to, correlation_id))
    }

    /// Before a request batch is appended: tracks each request record that carries a reply
    /// address and a deadline, stored as of `now` (the append may resolve after its reply
    /// was stored; [`Self::stored`] moves the time to when it resolved). Returns the keys,
    /// for [`Self::stored`] or [`Self::not_stored`].
    pub fn storing(&self, batch: &[u8], stats: &Rc<RequestStats>, now: Instant) -> Vec<u64> {
        let mut keys = Vec::new();
        let mut pending = self.pending.borrow_mut();
        for_each_request(batch, |reply_to, correlation_id, deadline_ms| {
            if pending.len() >= TRACKED_MAX {
                self.untracked.set(self.untracked.get() + 1);
                return;
            }
            let key = self.key(reply_to, correlation_id);
            let entry = Pending {
                stored: now,
                deadline_ms,
                stats: stats.clone(),
            };
            // A request sent again (a retry after a failover) replaces its first copy.
            pending.insert(key, entry);
            keys.push(key);
        });
        keys
    }

    /// The append of the requests `keys` resolved at `now`: that is when they were stored.
    pub fn stored(&self, keys: &[u64], now: Instant) {
        let mut pending = self.pending.borrow_mut();
        for key in keys {
            if let Some(entry) = pending.get_mut(key) {
                entry.stored = now;
            }
        }
    }

    /// The append of the requests `keys` failed: they were not stored.
    pub fn not_stored(&self, keys: &[u64]) {
        let mut pending = self.pending.borrow_mut();
        for key in keys {
            pending.remove(key);
        }
    }

    /// A reply to the request of `reply_to` and `correlation_id` was stored at `at`: its
    /// latency is observed, or, past the request's deadline, a timeout counted. A reply to a
    /// request this shard does not track (stored elsewhere, or untracked) changes nothing.
    pub fn answered(&self, reply_to: &str, correlation_id: &[u8], at: Instant, now_ms: u64) {
        let key = self.key(reply_to, correlation_id);
        let Some(entry) = self.pending.borrow_mut().remove(&key) else {
            return;
        };
        if entry.deadline_ms <= now_ms {
            entry.stats.timed_out();
        } else {
            entry
                .stats
                .answered(at.saturating_duration_since(entry.stored));
        }
    }

    /// Counts and forgets every request whose deadline passed unanswered by `now_ms`.
    pub fn sweep(&self, now_ms: u64) {
        self.pending.borrow_mut().retain(|_, entry| {
            let waiting = entry.deadline_ms > now_ms;
            if !waiting {
                entry.stats.timed_out();
            }
            waiting
        });
    }

    /// Requests not tracked since the broker started, because too many were.
    pub fn untracked(&self) -> u64 {
        self.untracked.get()
    }

    /// Requests tracked now.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.pending.borrow().len()
    }
}

/// The wall clock in Unix milliseconds, the unit of request deadlines.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Each shard's sweep: once a second, requests whose deadline passed unanswered are counted
/// as timeouts. Ends when the task is dropped at close.
pub(crate) async fn sweep_loop(shard: Rc<Shard>) {
    loop {
        crate::rt::sleep(SWEEP_INTERVAL).await;
        shard.pending_requests.sweep(now_ms());
    }
}

/// Calls `f(reply_to, correlation_id, deadline_ms)` for each request record of `batch` that
/// carries all three.
///
/// The batch is not validated yet (the append validates it, and a failed append untracks
/// what this found), so every read is bounds-checked and a layout that does not add up ends
/// the walk. No checksum pass: only the records' heads and properties are read.
fn for_each_request(batch: &[u8], mut f: impl FnMut(&str, &[u8], u64)) {
    let u16_at = |b: &[u8], at: usize| -> Option<u16> {
        Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
    };
    let u32_at = |b: &[u8], at: usize| -> Option<usize> {
        Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?) as usize)
    };
    // Records start after the header of the batch's version (unvalidated: bounds-checked).
    let Some(&version) = batch.get(28) else {
        return;
    };
    let mut at = protocol::record::records_start(version);
    while at < batch.len() {
        let Some(record_len) = batch.get(at..).and_then(|r| u32_at(r, 0)) else {
            return;
        };
        let Some(record) = batch.get(at..at.saturating_add(record_len)) else {
            return;
        };
        if record_len < RECORD_HEADER_LEN {
            return;
        }
        at += record_len;
        if u16_at(record, 12) != Some(MessageType::Request as u16) {
            continue;
        }
        let (Some(key_len), Some(properties_len)) = (u16_at(record, 14), u32_at(record, 24)) else {
            return;
        };
        let start = RECORD_HEADER_LEN + usize::from(key_len);
        let Some(properties) = record.get(start..start.saturating_add(properties_len)) else {
            return;
        };
        let (mut reply_to, mut correlation_id, mut deadline_ms) = (None, None, None);
        for property in Properties::new(properties).map_while(Result::ok) {
            match property {
                Property::ReplyTo(r) => reply_to = Some(r),
                Property::CorrelationId(c) => correlation_id = Some(c),
                Property::DeadlineMs(d) => deadline_ms = Some(d),
                _ => {}
            }
        }
        if let (Some(r), Some(c), Some(d)) = (reply_to, correlation_id, deadline_ms) {
            f(r, c, d);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::record::{BATCH_LEN_MAX, BatchBuilder, Record};

    fn requests(ids: &[&str], deadline_ms: u64) -> Vec<u8> {
        let mut builder = BatchBuilder::new(BATCH_LEN_MAX);
        for id in ids {
            let properties = [
                Property::ReplyTo("requester"),
                Property::CorrelationId(id.as_bytes()),
                Property::DeadlineMs(deadline_ms),
            ];
            builder
                .push(&Record {
                    timestamp_ms: 1,
                    message_type: MessageType::Request,
                    key: b"",
                    properties: &properties,
                    value: b"ping",
                })
                .unwrap();
        }
        builder
            .push(&Record {
                timestamp_ms: 1,
                message_type: MessageType::Event,
                key: b"",
                properties: &[Property::ReplyTo("not a request")],
                value: b"event",
            })
            .unwrap();
        builder.finish().unwrap()
    }

    #[test]
    fn a_reply_before_the_deadline_is_a_latency_and_after_it_a_timeout() {
        let pending = PendingRequests::default();
        let stats = Rc::new(RequestStats::default());
        let t0 = Instant::now();
        let keys = pending.storing(&requests(&["a", "b", "c"], 1_000), &stats, t0);
        assert_eq!(keys.len(), 3, "the event record is not tracked");
        pending.stored(&keys, t0 + Duration::from_micros(100));
        pending.answered("requester", b"a", t0 + Duration::from_micros(600), 999);
        pending.answered("requester", b"b", t0 + Duration::from_micros(700), 1_000);
        pending.answered("requester", b"unknown", t0, 0);
        let (latency, timeouts) = stats.snapshot();
        assert_eq!((latency.count(), latency.sum(), timeouts), (1, 500, 1));
        // "c" was never answered: the sweep counts it once its deadline passed.
        pending.sweep(999);
        assert_eq!((stats.snapshot().1, pending.len()), (1, 1));
        pending.sweep(1_000);
        assert_eq!((stats.snapshot().1, pending.len()), (2, 0));
    }

    #[test]
    fn a_failed_append_untracks_and_a_full_table_counts_the_rest() {
        let pending = PendingRequests::default();
        let stats = Rc::new(RequestStats::default());
        let keys = pending.storing(&requests(&["a"], 1_000), &stats, Instant::now());
        pending.not_stored(&keys);
        assert_eq!(pending.len(), 0);
        let many: Vec<String> = (0..=TRACKED_MAX).map(|i| i.to_string()).collect();
        let ids: Vec<&str> = many.iter().map(String::as_str).collect();
        pending.storing(&requests(&ids, 1_000), &stats, Instant::now());
        assert_eq!((pending.len(), pending.untracked()), (TRACKED_MAX, 1));
    }

    #[test]
    fn a_cut_batch_is_walked_as_far_as_it_adds_up() {
        let batch = requests(&["a", "b"], 1_000);
        let mut seen = 0;
        for_each_request(&batch[..batch.len() - 1], |_, _, _| seen += 1);
        // The event record at the end is cut; both requests before it are whole.
        assert_eq!(seen, 2);
        for_each_request(
            &batch[..protocol::record::BATCH_HEADER_LEN_V3 + 3],
            |_, _, _| panic!("no record"),
        );
    }
}
