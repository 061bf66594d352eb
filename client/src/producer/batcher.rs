//! The producer's batcher: coalesces concurrent sends into one record batch per queue, bounded
//! by size and linger, and acknowledges each send with its own offset.
//!
//! One background thread per producer keeps an open batch per destination: per topic for
//! round-robin sends (the queue is chosen when the batch goes out, so one batch is one
//! request), per (topic, key-hash queue) for keyed sends. A batch goes out when it reaches
//! the size bound or its first message has waited `linger`.

use std::collections::HashMap;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Mutex, PoisonError, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use protocol::names::Area;
use protocol::record::{BatchBuilder, MessageType};

use super::{Acker, ProducerInner, SendJob};
use crate::error::{ClientError, Result};
use crate::message::Message;
use crate::route::fnv1a64;

enum Command {
    Send {
        message: Message,
        key: Option<Vec<u8>>,
        acker: Acker,
    },
    Flush,
}

/// Where an open batch goes: a topic, and for keyed sends the key's hash bucket.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Destination {
    topic: String,
    key_hash: Option<u64>,
}

/// A batch being filled.
pub(crate) struct OpenBatch {
    builder: BatchBuilder,
    ackers: Vec<Acker>,
    /// A key of the batch's messages (they share its queue), for the queue choice.
    key: Option<Vec<u8>>,
    opened: Instant,
}

/// The handle the producer holds.
pub(crate) struct Batcher {
    commands: Mutex<Option<Sender<Command>>>,
    started: std::io::Result<()>,
}

impl Batcher {
    /// Starts the batcher thread for `producer`.
    pub(crate) fn start(
        producer: Weak<ProducerInner>,
        linger: Duration,
        batch_bytes_max: usize,
        area: Area,
    ) -> Self {
        let (tx, rx) = mpsc::channel();
        let started = std::thread::Builder::new()
            .name("defibus-batcher".into())
            .spawn(move || run(&producer, &rx, linger, batch_bytes_max, area))
            .map(drop);
        Self {
            commands: Mutex::new(Some(tx)),
            started,
        }
    }

    /// Whether the thread could be started.
    pub(crate) fn check_started(&self) -> Result<()> {
        match &self.started {
            Ok(()) => Ok(()),
            Err(e) => Err(ClientError::Io {
                endpoint: "(local)".into(),
                source: std::io::Error::new(e.kind(), e.to_string()),
            }),
        }
    }

    /// Queues one message; failures reach the acker.
    pub(crate) fn submit(&self, message: Message, key: Option<Vec<u8>>, acker: Acker) {
        let commands = self.commands.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(sender) = commands.as_ref() else {
            return acker(Err(ClientError::Closed));
        };
        if let Err(mpsc::SendError(Command::Send { acker, .. })) = sender.send(Command::Send {
            message,
            key,
            acker,
        }) {
            acker(Err(ClientError::Closed));
        }
    }

    /// Sends every open batch now.
    pub(crate) fn flush_now(&self) {
        let commands = self.commands.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(sender) = commands.as_ref() {
            let _ = sender.send(Command::Flush);
        }
    }
}

impl Drop for Batcher {
    fn drop(&mut self) {
        // Closing the channel makes the thread send what it holds and exit.
        self.commands
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
    }
}

fn run(
    producer: &Weak<ProducerInner>,
    commands: &Receiver<Command>,
    linger: Duration,
    batch_bytes_max: usize,
    area: Area,
) {
    let mut open: HashMap<Destination, OpenBatch> = HashMap::new();
    loop {
        let next_due = open.values().map(|b| b.opened + linger).min();
        let command = match next_due {
            Some(due) => commands.recv_timeout(due.saturating_duration_since(Instant::now())),
            None => commands.recv().map_err(|_| RecvTimeoutError::Disconnected),
        };
        match command {
            Ok(Command::Send {
                message,
                key,
                acker,
            }) => {
                let destination = Destination {
                    topic: message.topic().to_owned(),
                    key_hash: key.as_deref().map(fnv1a64),
                };
                let full = add(
                    &mut open,
                    &destination,
                    &message,
                    key,
                    acker,
                    batch_bytes_max,
                    area,
                );
                if let Some(batch) = full {
                    send(producer, destination.topic, batch);
                }
            }
            Ok(Command::Flush) => {
                for (destination, batch) in open.drain() {
                    send(producer, destination.topic, batch);
                }
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => {
                for (destination, batch) in open.drain() {
                    send(producer, destination.topic, batch);
                }
                return;
            }
        }
        let now = Instant::now();
        let due: Vec<Destination> = open
            .iter()
            .filter(|(_, b)| b.opened + linger <= now)
            .map(|(d, _)| d.clone())
            .collect();
        for destination in due {
            if let Some(batch) = open.remove(&destination) {
                send(producer, destination.topic, batch);
            }
        }
    }
}

/// Adds a message to its destination's open batch. Returns a batch to send now: the one the
/// message did not fit in (the message then starts a new one), or the one it filled.
fn add(
    open: &mut HashMap<Destination, OpenBatch>,
    destination: &Destination,
    message: &Message,
    key: Option<Vec<u8>>,
    acker: Acker,
    batch_bytes_max: usize,
    area: Area,
) -> Option<OpenBatch> {
    let new_batch = |key| OpenBatch {
        builder: BatchBuilder::new(batch_bytes_max),
        ackers: Vec::new(),
        key,
        opened: Instant::now(),
    };
    let batch = open
        .entry(destination.clone())
        .or_insert_with(|| new_batch(key.clone()));
    match message.append_to(&mut batch.builder, MessageType::Event, area, &[]) {
        Ok(()) => {
            batch.ackers.push(acker);
            if batch.builder.len_bytes() * 10 >= batch_bytes_max * 9 {
                return open.remove(destination);
            }
            None
        }
        Err(e) if batch.builder.is_empty() => {
            // Too large even alone: this message can never be sent.
            acker(Err(e));
            None
        }
        Err(_) => {
            let mut fresh = new_batch(key);
            match message.append_to(&mut fresh.builder, MessageType::Event, area, &[]) {
                Ok(()) => {
                    fresh.ackers.push(acker);
                    open.insert(destination.clone(), fresh)
                }
                Err(e) => {
                    acker(Err(e));
                    None
                }
            }
        }
    }
}

fn send(producer: &Weak<ProducerInner>, topic: String, batch: OpenBatch) {
    let OpenBatch {
        builder,
        ackers,
        key,
        ..
    } = batch;
    let Some(bytes) = builder.finish() else {
        return;
    };
    let Some(producer) = producer.upgrade() else {
        for acker in ackers {
            acker(Err(ClientError::Closed));
        }
        return;
    };
    ProducerInner::dispatch(
        &producer,
        SendJob {
            topic,
            bytes: Bytes::from(bytes),
            ackers,
            key,
            attempt: 0,
            avoid_broker: None,
        },
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::record::{BATCH_LEN_MAX, BatchView};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn counting_acker(failures: &Arc<AtomicUsize>) -> Acker {
        let failures = failures.clone();
        Box::new(move |r| {
            if r.is_err() {
                failures.fetch_add(1, Ordering::SeqCst);
            }
        })
    }

    #[test]
    fn sends_coalesce_until_the_size_bound() {
        let area: Area = "A10".parse().unwrap();
        let failures = Arc::new(AtomicUsize::new(0));
        let mut open = HashMap::new();
        let destination = Destination {
            topic: "A10-1".into(),
            key_hash: None,
        };
        let bound = 1024;
        let mut sent = Vec::new();
        for i in 0..40u32 {
            let message = Message::new("A10-1", vec![i as u8; 100]);
            if let Some(batch) = add(
                &mut open,
                &destination,
                &message,
                None,
                counting_acker(&failures),
                bound,
                area,
            ) {
                sent.push(batch);
            }
        }
        assert!(!sent.is_empty());
        let mut total = 0;
        for batch in sent.into_iter().chain(open.into_values()) {
            let acks = batch.ackers.len();
            let bytes = batch.builder.finish().unwrap();
            assert!(bytes.len() <= bound);
            let view = BatchView::parse(&bytes, BATCH_LEN_MAX).unwrap();
            assert_eq!(view.record_count() as usize, acks, "one acker per record");
            total += acks;
        }
        assert_eq!(total, 40);
        assert_eq!(failures.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn a_message_larger_than_the_bound_fails_alone() {
        let area: Area = "A10".parse().unwrap();
        let failures = Arc::new(AtomicUsize::new(0));
        let mut open = HashMap::new();
        let destination = Destination {
            topic: "A10-1".into(),
            key_hash: None,
        };
        let small = Message::new("A10-1", vec![0; 10]);
        let huge = Message::new("A10-1", vec![0; 4096]);
        assert!(
            add(
                &mut open,
                &destination,
                &small,
                None,
                counting_acker(&failures),
                1024,
                area
            )
            .is_none()
        );
        let flushed = add(
            &mut open,
            &destination,
            &huge,
            None,
            counting_acker(&failures),
            1024,
            area,
        );
        assert!(flushed.is_none(), "the open batch keeps the small message");
        assert_eq!(failures.load(Ordering::SeqCst), 1);
        assert_eq!(open[&destination].ackers.len(), 1);
    }
}
