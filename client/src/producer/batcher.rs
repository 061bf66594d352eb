//! The producer's batcher: coalesces concurrent sends into one record batch per queue, bounded
//! by size and linger, and acknowledges each send with its own offset.
//!
//! Sends are encoded into their destination's open batch on the caller's thread, under one
//! lock: no thread hop and no allocation per message. There is an open batch per topic for
//! round-robin sends (the queue is chosen when the batch goes out, so one batch is one
//! request), and per (topic, key-hash queue) for keyed sends. A batch goes out when it reaches
//! the size bound (sent by the caller that filled it) or when its first message has waited
//! `linger` (sent by a background thread that only wakes for such tails).
//!
//! Batches that are ready go through one FIFO, drained by one thread at a time (whichever
//! found it idle), so batches leave in the order they were closed: keyed sends stay in order,
//! and a send made from an acknowledgement callback never waits for a lock its caller holds.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError, Weak};
use std::time::{Duration, Instant};

use protocol::names::Area;
use protocol::record::{BatchBuilder, MessageType};

use super::{Acker, ProducerInner};
use crate::error::{ClientError, Result};
use crate::message::Message;
use crate::route::{FNV1A64_OFFSET, fnv1a64, fnv1a64_append};

/// Smallest buffer a new batch reserves.
const CAPACITY_MIN: usize = 4096;

/// A batch being filled.
pub(crate) struct OpenBatch {
    builder: BatchBuilder,
    ackers: Vec<Acker>,
    /// A key of the batch's messages (they share its queue), for the queue choice.
    key: Option<Vec<u8>>,
    opened: Instant,
    /// Keeps the producer alive while the batch waits, so a batch outlives a dropped handle.
    producer: Arc<ProducerInner>,
}

/// The open batches of one topic.
#[derive(Default)]
struct TopicBatches {
    round_robin: Option<OpenBatch>,
    keyed: HashMap<u64, OpenBatch>,
    /// Bytes of the last batch that went out full or by linger: the next one reserves as much,
    /// so a steady stream never grows its buffer by copying.
    last_len: usize,
}

impl TopicBatches {
    fn slot(&mut self, key_hash: Option<u64>) -> Option<&mut OpenBatch> {
        match key_hash {
            None => self.round_robin.as_mut(),
            Some(hash) => self.keyed.get_mut(&hash),
        }
    }

    fn take(&mut self, key_hash: Option<u64>) -> Option<OpenBatch> {
        let batch = match key_hash {
            None => self.round_robin.take(),
            Some(hash) => self.keyed.remove(&hash),
        };
        if let Some(batch) = &batch {
            self.last_len = batch.builder.len_bytes();
        }
        batch
    }

    fn put(&mut self, key_hash: Option<u64>, batch: OpenBatch) {
        match key_hash {
            None => self.round_robin = Some(batch),
            Some(hash) => {
                self.keyed.insert(hash, batch);
            }
        }
    }

    fn is_empty(&self) -> bool {
        self.round_robin.is_none() && self.keyed.is_empty()
    }
}

/// Hashes topic names with FNV-1a: every send looks its topic up, and SipHash's resistance to
/// chosen keys buys nothing for names this process itself sends to.
struct TopicHasher(u64);

impl Default for TopicHasher {
    fn default() -> Self {
        Self(FNV1A64_OFFSET)
    }
}

impl std::hash::Hasher for TopicHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        self.0 = fnv1a64_append(self.0, bytes);
    }
}

type TopicMap = HashMap<String, TopicBatches, std::hash::BuildHasherDefault<TopicHasher>>;

#[derive(Default)]
struct State {
    topics: TopicMap,
    /// Closed batches in the order they must go out.
    ready: VecDeque<(String, OpenBatch)>,
    /// A thread is draining `ready`.
    sending: bool,
    closed: bool,
}

struct Shared {
    state: Mutex<State>,
    /// Wakes the linger thread: a batch opened, or the batcher closed.
    wake: Condvar,
    linger: Duration,
    batch_bytes_max: usize,
    area: Area,
}

/// The handle the producer holds.
pub(crate) struct Batcher {
    shared: Arc<Shared>,
    started: std::io::Result<()>,
}

impl Batcher {
    /// Starts the linger thread.
    pub(crate) fn start(linger: Duration, batch_bytes_max: usize, area: Area) -> Self {
        let shared = Arc::new(Shared {
            state: Mutex::default(),
            wake: Condvar::new(),
            linger,
            batch_bytes_max,
            area,
        });
        let weak = Arc::downgrade(&shared);
        let started = std::thread::Builder::new()
            .name("defibus-batcher".into())
            .spawn(move || run_linger(&weak))
            .map(drop);
        Self { shared, started }
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

    /// Encodes one message into its destination's open batch, sending the batch if this
    /// filled it; failures reach the acker.
    pub(crate) fn submit(
        &self,
        producer: &Arc<ProducerInner>,
        message: &Message,
        key: Option<Vec<u8>>,
        acker: Acker,
    ) {
        let shared = &*self.shared;
        let mut state = shared.lock();
        if state.closed {
            drop(state);
            return producer.ack(acker, Err(ClientError::Closed));
        }
        let key_hash = key.as_deref().map(fnv1a64);
        let mut opened = false;
        let outcome = {
            let topics = &mut state.topics;
            let batches = match topics.get_mut(message.topic()) {
                Some(batches) => batches,
                None => topics.entry(message.topic().to_owned()).or_default(),
            };
            add(
                batches,
                key_hash,
                message,
                key,
                acker,
                shared,
                producer,
                &mut opened,
            )
        };
        match outcome {
            Added::Open => {}
            Added::Ready(batch) => {
                state.ready.push_back((message.topic().to_owned(), batch));
                return shared.drain(state);
            }
            Added::Failed(acker, e) => {
                drop(state);
                return producer.ack(acker, Err(e));
            }
        }
        drop(state);
        if opened {
            shared.wake.notify_one();
        }
    }

    /// Sends every open batch now.
    pub(crate) fn flush_now(&self) {
        let shared = &*self.shared;
        let mut state = shared.lock();
        let State { topics, ready, .. } = &mut *state;
        for (topic, batches) in topics.iter_mut() {
            if let Some(batch) = batches.round_robin.take() {
                ready.push_back((topic.clone(), batch));
            }
            for (_, batch) in batches.keyed.drain() {
                ready.push_back((topic.clone(), batch));
            }
        }
        shared.drain(state);
    }
}

impl Drop for Batcher {
    fn drop(&mut self) {
        // Every open batch holds the producer, so none is left when the producer drops; the
        // linger thread only has to exit.
        self.shared.lock().closed = true;
        self.shared.wake.notify_all();
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Sends the ready batches in order, unless another thread already is: then it sends
    /// these too. Dispatch runs outside the lock.
    fn drain<'a>(&'a self, mut state: MutexGuard<'a, State>) {
        if state.sending {
            return;
        }
        state.sending = true;
        while let Some((topic, batch)) = state.ready.pop_front() {
            drop(state);
            send(topic, batch);
            state = self.lock();
        }
        state.sending = false;
    }
}

/// What became of a message offered to its open batch.
enum Added {
    /// In the open batch.
    Open,
    /// In a batch that must go out now: the one it filled, or the one it did not fit in
    /// (then the message starts a new one).
    Ready(OpenBatch),
    /// Can never be sent (too large even alone, or unencodable).
    Failed(Acker, ClientError),
}

/// Adds a message to its destination's open batch.
#[allow(clippy::too_many_arguments)]
fn add(
    batches: &mut TopicBatches,
    key_hash: Option<u64>,
    message: &Message,
    key: Option<Vec<u8>>,
    acker: Acker,
    shared: &Shared,
    producer: &Arc<ProducerInner>,
    opened: &mut bool,
) -> Added {
    let batch_bytes_max = shared.batch_bytes_max;
    let new_batch = |key, last_len: usize| OpenBatch {
        builder: BatchBuilder::with_capacity(
            batch_bytes_max,
            last_len.clamp(CAPACITY_MIN, batch_bytes_max.max(CAPACITY_MIN)),
        ),
        ackers: Vec::new(),
        key,
        opened: Instant::now(),
        producer: producer.clone(),
    };
    let last_len = batches.last_len;
    let batch = match batches.slot(key_hash) {
        Some(batch) => batch,
        None => {
            *opened = true;
            batches.put(key_hash, new_batch(key.clone(), last_len));
            batches.slot(key_hash).expect("just put")
        }
    };
    match message.append_to(&mut batch.builder, MessageType::Event, shared.area, &[]) {
        Ok(()) => {
            batch.ackers.push(acker);
            if batch.builder.len_bytes() * 10 >= batch_bytes_max * 9 {
                let full = batches.take(key_hash).expect("open");
                return Added::Ready(full);
            }
            Added::Open
        }
        Err(e) if batch.builder.is_empty() => {
            // Too large even alone: this message can never be sent.
            if batch.ackers.is_empty() {
                batches.take(key_hash);
            }
            Added::Failed(acker, e)
        }
        Err(_) => {
            let mut fresh = new_batch(key, last_len);
            match message.append_to(&mut fresh.builder, MessageType::Event, shared.area, &[]) {
                Ok(()) => {
                    fresh.ackers.push(acker);
                    *opened = true;
                    let full = batches.take(key_hash).expect("open");
                    batches.put(key_hash, fresh);
                    Added::Ready(full)
                }
                Err(e) => Added::Failed(acker, e),
            }
        }
    }
}

/// The linger thread: sends each batch whose first message has waited `linger`.
fn run_linger(shared: &Weak<Shared>) {
    loop {
        let Some(shared) = shared.upgrade() else {
            return;
        };
        let mut state = shared.lock();
        if state.closed {
            return;
        }
        let now = Instant::now();
        let mut next_due: Option<Instant> = None;
        let State { topics, ready, .. } = &mut *state;
        topics.retain(|topic, batches| {
            let due = |b: &OpenBatch| b.opened + shared.linger;
            if batches.round_robin.as_ref().is_some_and(|b| due(b) <= now) {
                let batch = batches.take(None).expect("open");
                ready.push_back((topic.clone(), batch));
            }
            let expired: Vec<u64> = batches
                .keyed
                .iter()
                .filter(|(_, b)| due(b) <= now)
                .map(|(hash, _)| *hash)
                .collect();
            for hash in expired {
                let batch = batches.take(Some(hash)).expect("open");
                ready.push_back((topic.clone(), batch));
            }
            for batch in batches.round_robin.iter().chain(batches.keyed.values()) {
                next_due = Some(next_due.map_or(due(batch), |d| d.min(due(batch))));
            }
            // An idle topic keeps its entry (and size hint) unless it holds nothing at all.
            !batches.is_empty() || batches.last_len > 0
        });
        if !state.ready.is_empty() {
            shared.drain(state);
            continue;
        }
        match next_due {
            Some(due) => {
                let wait = due.saturating_duration_since(Instant::now());
                drop(
                    shared
                        .wake
                        .wait_timeout(state, wait)
                        .unwrap_or_else(PoisonError::into_inner),
                );
            }
            None => drop(
                shared
                    .wake
                    .wait(state)
                    .unwrap_or_else(PoisonError::into_inner),
            ),
        }
    }
}

fn send(topic: String, batch: OpenBatch) {
    let OpenBatch {
        builder,
        ackers,
        key,
        producer,
        ..
    } = batch;
    let Some(sealed) = builder.seal() else {
        return;
    };
    ProducerInner::dispatch(producer, topic, sealed, key, ackers);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::Client;
    use crate::config::ClientConfig;
    use crate::producer::Producer;
    use protocol::record::{BATCH_LEN_MAX, BatchView};
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A producer of a client whose nameserver nobody listens on: nothing here connects.
    fn producer() -> (Client, Producer) {
        let config = ClientConfig::new(["127.0.0.1:1"], "A10").unwrap();
        let client = Client::new(config).unwrap();
        let producer = Producer::new(&client).unwrap();
        (client, producer)
    }

    fn shared(bound: usize) -> Shared {
        Shared {
            state: Mutex::default(),
            wake: Condvar::new(),
            linger: Duration::from_millis(1),
            batch_bytes_max: bound,
            area: "A10".parse().unwrap(),
        }
    }

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
        let (client, producer) = producer();
        let failures = Arc::new(AtomicUsize::new(0));
        let bound = 1024;
        let shared = shared(bound);
        let mut batches = TopicBatches::default();
        let mut sent = Vec::new();
        for i in 0..40u32 {
            let message = Message::new("A10-1", vec![i as u8; 100]);
            let mut opened = false;
            match add(
                &mut batches,
                None,
                &message,
                None,
                counting_acker(&failures),
                &shared,
                &producer.inner,
                &mut opened,
            ) {
                Added::Open => {}
                Added::Ready(batch) => sent.push(batch),
                Added::Failed(..) => panic!("a small message failed"),
            }
        }
        assert!(!sent.is_empty());
        assert!(
            batches.last_len > 0,
            "a full batch leaves its size as a hint"
        );
        let mut total = 0;
        for batch in sent.into_iter().chain(batches.round_robin.take()) {
            let acks = batch.ackers.len();
            let bytes = batch.builder.finish().unwrap();
            assert!(bytes.len() <= bound);
            let view = BatchView::parse(&bytes, BATCH_LEN_MAX).unwrap();
            assert_eq!(view.record_count() as usize, acks, "one acker per record");
            total += acks;
        }
        assert_eq!(total, 40);
        assert_eq!(failures.load(Ordering::SeqCst), 0);
        client.close();
    }

    #[test]
    fn a_message_larger_than_the_bound_fails_alone() {
        let (client, producer) = producer();
        let failures = Arc::new(AtomicUsize::new(0));
        let shared = shared(1024);
        let mut batches = TopicBatches::default();
        let small = Message::new("A10-1", vec![0; 10]);
        let huge = Message::new("A10-1", vec![0; 4096]);
        let mut opened = false;
        let added = add(
            &mut batches,
            None,
            &small,
            None,
            counting_acker(&failures),
            &shared,
            &producer.inner,
            &mut opened,
        );
        assert!(matches!(added, Added::Open) && opened);
        let mut opened = false;
        let added = add(
            &mut batches,
            None,
            &huge,
            None,
            counting_acker(&failures),
            &shared,
            &producer.inner,
            &mut opened,
        );
        let Added::Failed(acker, e) = added else {
            panic!("the huge message was accepted");
        };
        acker(Err(e));
        assert!(!opened, "the open batch keeps the small message");
        assert_eq!(failures.load(Ordering::SeqCst), 1);
        assert_eq!(batches.round_robin.as_ref().unwrap().ackers.len(), 1);
        let huge_alone = add(
            &mut TopicBatches::default(),
            None,
            &huge,
            None,
            counting_acker(&failures),
            &shared,
            &producer.inner,
            &mut false,
        );
        assert!(matches!(huge_alone, Added::Failed(..)));
        client.close();
    }

    #[test]
    fn keyed_sends_get_a_batch_per_key_bucket() {
        let (client, producer) = producer();
        let failures = Arc::new(AtomicUsize::new(0));
        let shared = shared(BATCH_LEN_MAX);
        let mut batches = TopicBatches::default();
        for key in [&b"a"[..], b"b", b"a"] {
            let message = Message::new("A10-1", vec![1; 10]).with_key(key.to_vec());
            let added = add(
                &mut batches,
                Some(fnv1a64(key)),
                &message,
                Some(key.to_vec()),
                counting_acker(&failures),
                &shared,
                &producer.inner,
                &mut false,
            );
            assert!(matches!(added, Added::Open));
        }
        assert!(batches.round_robin.is_none());
        assert_eq!(batches.keyed.len(), 2);
        assert_eq!(batches.keyed[&fnv1a64(b"a")].ackers.len(), 2);
        client.close();
    }
}
