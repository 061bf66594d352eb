//! The idempotent producer's numbering (`docs/ARCHITECTURE.md` §13.1): one producer id per
//! client, asked of a broker on the first send, and per queue a stream of batch sequence
//! numbers in an epoch.
//!
//! A stream is *broken* when one of its numbers may have left a hole: a batch refused as not
//! stored, or given up on. Its next number would then be refused as a gap, so once every batch
//! of the stream in flight has settled, the stream moves to a new epoch that starts at 0 (the
//! broker takes a new epoch only from 0). Sends that want a number from a broken stream with
//! batches still in flight are parked and dispatched again when it settles: no batch of an
//! old epoch is ever sent after the first of a new one, so a copy of an old batch can only
//! meet a window that still knows its epoch.
//!
//! At most [`IN_FLIGHT_PER_QUEUE_MAX`] batches of a stream are in flight; more are parked
//! too. So while a batch is unsettled at most that many newer ones can be stored after it,
//! and a copy of it finds it among the broker window's last `producers.window_batches`
//! (default the same number): it is answered with its offsets, never refused as too old.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use protocol::codes::{Command, Status};
use protocol::control::{self, InitProducerReply};
use protocol::record::ProducerFields;

use crate::error::{ClientError, Result};
use crate::net::Connection;
use crate::route::QueueTarget;

/// Batches of one stream in flight at once: at most the brokers' default duplicate window
/// (`producers.window_batches`), so a copy of any batch in flight is still in it.
pub(crate) const IN_FLIGHT_PER_QUEUE_MAX: u32 = 8;

/// A queue of a topic, as a numbering stream.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct StreamKey {
    pub(crate) topic: String,
    pub(crate) broker_id: String,
    pub(crate) queue_id: u32,
}

impl StreamKey {
    pub(crate) fn new(topic: &str, queue: &QueueTarget) -> Self {
        Self {
            topic: topic.to_owned(),
            broker_id: queue.broker_id.clone(),
            queue_id: queue.queue_id,
        }
    }
}

/// The numbers one batch carries, and whether an attempt with them may have stored it.
#[derive(Debug)]
pub(crate) struct Ticket {
    pub(crate) key: StreamKey,
    pub(crate) fields: ProducerFields,
    /// An attempt failed without saying whether the batch was stored: from now on only the
    /// broker's window may say it was not (`OutOfOrderSequence`).
    pub(crate) ambiguous: bool,
}

#[derive(Default)]
struct Stream {
    epoch: u32,
    next: u32,
    in_flight: u32,
    broken: bool,
    /// Sends waiting for the stream to settle.
    parked: Vec<Box<dyn FnOnce() + Send>>,
}

/// What [`Sequencer::number`] did.
pub(crate) enum Numbered {
    Ticket(Ticket),
    /// The stream is broken with batches in flight: the send was parked.
    Parked,
}

/// The client's producer id and streams.
#[derive(Default)]
pub(crate) struct Sequencer {
    producer_id: Mutex<Option<u64>>,
    streams: Mutex<HashMap<StreamKey, Stream>>,
}

impl Sequencer {
    /// The client's producer id, asked of the broker behind `conn` the first time. `None`
    /// when that broker predates idempotence (it does not know `InitProducer`).
    pub(crate) fn producer_id(&self, conn: &Connection, timeout: Duration) -> Result<Option<u64>> {
        let mut id = self
            .producer_id
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(id) = *id {
            return Ok(Some(id));
        }
        let frame = match conn.call(Command::InitProducer, &[], &[], timeout) {
            Ok(frame) => frame,
            Err(e) if e.status() == Some(Status::UnknownCommand) => return Ok(None),
            Err(e) => return Err(e),
        };
        let reply: InitProducerReply =
            control::decode(&frame.body).map_err(|e| ClientError::control(conn.endpoint(), e))?;
        if reply.producer_id == 0 {
            return Err(ClientError::protocol(
                conn.endpoint(),
                "InitProducer answered producer id 0",
            ));
        }
        log::debug!("idempotent producer id {}", reply.producer_id);
        *id = Some(reply.producer_id);
        Ok(*id)
    }

    /// The id, once known.
    pub(crate) fn known_producer_id(&self) -> Option<u64> {
        *self
            .producer_id
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The next numbers of stream `key` for a batch of producer `producer_id`; or, when the
    /// stream is broken with batches in flight, parks `park` (the send) until it settles.
    ///
    /// `woken`: the send was parked before and comes back in its turn, ahead of sends that
    /// were not (parked sends keep their order, so keyed messages stay in order).
    pub(crate) fn number(
        &self,
        key: StreamKey,
        producer_id: u64,
        woken: bool,
        park: impl FnOnce() -> Box<dyn FnOnce() + Send>,
    ) -> Numbered {
        let mut streams = self.streams.lock().unwrap_or_else(PoisonError::into_inner);
        let stream = streams.entry(key.clone()).or_default();
        if stream.in_flight >= IN_FLIGHT_PER_QUEUE_MAX {
            if woken {
                stream.parked.insert(0, park());
            } else {
                stream.parked.push(park());
            }
            return Numbered::Parked;
        }
        if !woken && !stream.parked.is_empty() {
            // Others wait before this send: it waits its turn.
            stream.parked.push(park());
            return Numbered::Parked;
        }
        if stream.broken || stream.next == u32::MAX {
            if stream.in_flight > 0 {
                stream.parked.push(park());
                return Numbered::Parked;
            }
            stream.epoch = stream.epoch.wrapping_add(1);
            stream.next = 0;
            stream.broken = false;
        }
        let fields = ProducerFields {
            producer_id,
            epoch: stream.epoch,
            sequence: stream.next,
        };
        stream.next += 1;
        stream.in_flight += 1;
        Numbered::Ticket(Ticket {
            key,
            fields,
            ambiguous: false,
        })
    }

    /// The batch of `ticket` is stored (or known stored): its number is used. Returns the
    /// sends parked on the stream, to dispatch again, once it settled.
    pub(crate) fn stored(&self, ticket: &Ticket) -> Vec<Box<dyn FnOnce() + Send>> {
        self.settle(ticket, false)
    }

    /// The batch of `ticket` will not be sent with these numbers again (not stored, or given
    /// up on): the stream is broken, and renumbers once nothing is in flight.
    pub(crate) fn released(&self, ticket: &Ticket) -> Vec<Box<dyn FnOnce() + Send>> {
        self.settle(ticket, true)
    }

    fn settle(&self, ticket: &Ticket, hole: bool) -> Vec<Box<dyn FnOnce() + Send>> {
        let mut streams = self.streams.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(stream) = streams.get_mut(&ticket.key) else {
            return Vec::new();
        };
        stream.in_flight = stream.in_flight.saturating_sub(1);
        if hole && ticket.fields.epoch == stream.epoch {
            stream.broken = true;
        }
        // A broken stream renumbers only once settled; a sound one takes sends as room frees.
        let room = if stream.broken {
            if stream.in_flight == 0 {
                IN_FLIGHT_PER_QUEUE_MAX
            } else {
                0
            }
        } else {
            IN_FLIGHT_PER_QUEUE_MAX - stream.in_flight.min(IN_FLIGHT_PER_QUEUE_MAX)
        };
        let woken = (room as usize).min(stream.parked.len());
        stream.parked.drain(..woken).collect()
    }
}

/// Whether `error` proves that the attempt did not store the batch: the broker refused it
/// before its log, or (the only proof once an earlier attempt was ambiguous) its window said
/// the sequence does not follow.
pub(crate) fn not_stored(error: &ClientError, earlier_ambiguous: bool) -> bool {
    let Some(status) = error.status() else {
        // Timeouts, lost connections, IO: the request may have been served.
        return false;
    };
    if status == Status::OutOfOrderSequence {
        return true;
    }
    if earlier_ambiguous {
        return false;
    }
    !matches!(
        status,
        // Failed in or after the append, or while it was being replicated.
        Status::StorageError | Status::NotLeader | Status::ShuttingDown | Status::Internal
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> StreamKey {
        StreamKey {
            topic: "A10-t".into(),
            broker_id: "b".into(),
            queue_id: 0,
        }
    }

    fn ticket(s: &Sequencer) -> Ticket {
        match s.number(key(), 9, false, || Box::new(|| {})) {
            Numbered::Ticket(t) => t,
            Numbered::Parked => panic!("parked"),
        }
    }

    #[test]
    fn a_hole_renumbers_in_a_new_epoch_once_the_stream_settles() {
        let s = Sequencer::default();
        let a = ticket(&s);
        let b = ticket(&s);
        assert_eq!((a.fields.sequence, b.fields.sequence), (0, 1));
        assert!(s.released(&a).is_empty());
        // Broken with `b` in flight: a new send waits.
        let parked = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = parked.clone();
        let numbered = s.number(key(), 9, false, || {
            Box::new(move || flag.store(true, std::sync::atomic::Ordering::SeqCst))
        });
        assert!(matches!(numbered, Numbered::Parked));
        let woken = s.released(&b);
        assert_eq!(woken.len(), 1);
        woken.into_iter().for_each(|send| send());
        assert!(parked.load(std::sync::atomic::Ordering::SeqCst));
        let c = ticket(&s);
        assert_eq!((c.fields.epoch, c.fields.sequence), (1, 0));
        s.stored(&c);
        let d = ticket(&s);
        assert_eq!((d.fields.epoch, d.fields.sequence), (1, 1));
    }

    #[test]
    fn only_the_window_proves_an_ambiguous_batch_was_not_stored() {
        let status = |status| ClientError::Status {
            status,
            message: String::new(),
        };
        assert!(not_stored(&status(Status::QueueDepthExceeded), false));
        assert!(!not_stored(&status(Status::QueueDepthExceeded), true));
        assert!(not_stored(&status(Status::OutOfOrderSequence), true));
        assert!(!not_stored(&status(Status::StorageError), false));
        let timeout = ClientError::Timeout {
            after: Duration::from_secs(1),
        };
        assert!(!not_stored(&timeout, false));
    }
}
