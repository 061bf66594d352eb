//! What the replication scenarios share: a raw framed connection that produces to one
//! chosen broker (no routes, no retries: the scenario decides where every write goes), a
//! reader of a stopped replica's log, and the history check.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::Path;
use std::sync::Mutex;
use std::thread;

use bytes::{Bytes, BytesMut};
use engine::{FlushMode as LogFlushMode, Log, LogConfig};
use protocol::codes::Command;
use protocol::control::{self, BrokerStats, ErrorReply, ProduceAck, ReplicaRole};
use protocol::data::BatchAddress;
use protocol::frame::{FrameBytes, FrameLimits, FrameMeta, Framer, encode_frame};
use protocol::record::{BATCH_LEN_MAX, BatchBuilder, BatchView, MessageType, Record};

use crate::WAIT;

/// A blocking framed connection to one broker shard.
pub struct Conn {
    stream: TcpStream,
    buf: BytesMut,
    next_id: u64,
}

impl Conn {
    /// Connects; an answer slower than [`WAIT`] fails the call that waits for it.
    pub fn connect(addr: impl ToSocketAddrs) -> std::io::Result<Self> {
        let stream = TcpStream::connect(addr)?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(WAIT))?;
        Ok(Self {
            stream,
            buf: BytesMut::new(),
            next_id: 0,
        })
    }

    /// The answer to one request; `Err` when the connection failed (the broker died) or no
    /// answer came within [`WAIT`].
    pub fn call(
        &mut self,
        command: Command,
        ext: &[u8],
        body: &[u8],
    ) -> std::io::Result<FrameBytes> {
        self.next_id += 1;
        let mut meta = FrameMeta::request(command, self.next_id);
        if command.carries_record_batch() {
            meta = meta.without_body_crc();
        }
        let mut out = Vec::new();
        encode_frame(&meta, ext, body, &mut out).expect("encode");
        self.stream.write_all(&out)?;
        let framer = Framer::new(FrameLimits::UNLIMITED);
        loop {
            if let Some(frame) = framer.split_frame(&mut self.buf).expect("valid frame") {
                if frame.header.request_id == self.next_id {
                    return Ok(frame);
                }
                continue;
            }
            let mut chunk = [0u8; 16 << 10];
            let n = self.stream.read(&mut chunk)?;
            if n == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// Calls and asserts success.
    pub fn call_ok(&mut self, command: Command, body: &[u8]) -> Bytes {
        let frame = self.call(command, &[], body).expect("the broker answers");
        assert_eq!(
            frame.header.status,
            0,
            "{command} refused: {:?}",
            control::decode::<ErrorReply>(&frame.body).map(|e| e.message)
        );
        frame.body
    }

    /// Produces one record holding `value` to queue `queue_id` of `topic`.
    ///
    /// `Ok(Ok(()))`: acknowledged. `Ok(Err((status, message)))`: refused. `Err`: the
    /// connection failed or the answer did not come in time (not acknowledged either).
    pub fn produce(
        &mut self,
        topic: &str,
        queue_id: u32,
        value: &str,
    ) -> std::io::Result<Result<(), (u16, String)>> {
        let mut ext = Vec::new();
        BatchAddress::new(topic, queue_id).encode(&mut ext).unwrap();
        let mut builder = BatchBuilder::new(BATCH_LEN_MAX);
        builder
            .push(&Record {
                timestamp_ms: 1,
                message_type: MessageType::Event,
                key: b"",
                properties: &[],
                value: value.as_bytes(),
            })
            .unwrap();
        let frame = self.call(Command::Produce, &ext, &builder.finish().unwrap())?;
        if frame.header.status == 0 {
            let ack: ProduceAck = control::decode(&frame.body).unwrap();
            assert_eq!(ack.next_offset - ack.base_offset, 1);
            return Ok(Ok(()));
        }
        let message = control::decode::<ErrorReply>(&frame.body)
            .map(|e| e.message)
            .unwrap_or_default();
        Ok(Err((frame.header.status, message)))
    }

    /// The broker's statistics.
    pub fn stats(&mut self) -> BrokerStats {
        control::decode(&self.call_ok(Command::Stats, &[])).unwrap()
    }
}

/// Produces `<prefix>-<n>` values to queue 0 of `topic` at `addr`, one at a time, until a
/// produce is not acknowledged; records each acknowledged value in order. Returns the
/// refusal that ended it (`None`: the connection failed or an answer did not come).
pub fn produce_until_refused(
    addr: impl ToSocketAddrs,
    topic: &str,
    prefix: &str,
    acked: &Mutex<Vec<String>>,
) -> Option<(u16, String)> {
    let Ok(mut conn) = Conn::connect(addr) else {
        return None;
    };
    for n in 0.. {
        let value = format!("{prefix}-{n}");
        match conn.produce(topic, 0, &value) {
            Ok(Ok(())) => acked.lock().unwrap().push(value),
            // Refused (the leader is deposed or stopping): this value is not acknowledged,
            // and is never sent again.
            Ok(Err(refusal)) => return Some(refusal),
            Err(_) => return None,
        }
    }
    None
}

/// What the broker at `conn` knows of `follower` when it leads queue 0 of `topic` in
/// `epoch`: the follower's durable end and the leader's log end.
pub fn follower_end(
    conn: &mut Conn,
    topic: &str,
    follower: &str,
    epoch: u64,
) -> Option<(u64, u64)> {
    let stats = conn.stats();
    let queue = stats
        .queues
        .iter()
        .find(|q| q.topic == topic && q.queue_id == 0)?;
    let replication = queue.replication.as_ref()?;
    if replication.role != ReplicaRole::Leader || replication.epoch != epoch {
        return None;
    }
    let f = replication
        .followers
        .iter()
        .find(|f| f.broker_id == follower)?;
    Some((f.durable_end, queue.next_offset))
}

/// The values stored in queue 0 of `topic` under the data directory `dir` of a stopped
/// broker, in log order, and its batches as bytes.
pub fn stored(dir: &Path, topic: &str) -> (Vec<String>, Vec<Bytes>) {
    let dir = engine::topic::queue_dir(dir, topic, 0);
    thread::spawn(move || {
        glommio::LocalExecutorBuilder::default()
            .spawn(move || async move {
                let mut config = LogConfig::new(&dir);
                config.flush = LogFlushMode::Sync;
                config.offset_reservation = false;
                let log = Log::open(config).await.unwrap();
                let mut batches = Vec::new();
                let mut offset = log.start_offset();
                while offset < log.next_offset() {
                    let got = log.read(offset, 1 << 20).await.unwrap();
                    let last = BatchView::parse(got.last().unwrap(), BATCH_LEN_MAX).unwrap();
                    offset = last.next_offset();
                    batches.extend(got);
                }
                log.close().await.unwrap();
                let values = batches
                    .iter()
                    .flat_map(|b| {
                        BatchView::parse(b, BATCH_LEN_MAX)
                            .unwrap()
                            .records()
                            .map(|r| String::from_utf8(r.value().to_vec()).unwrap())
                            .collect::<Vec<_>>()
                    })
                    .collect();
                (values, batches)
            })
            .unwrap()
            .join()
            .unwrap()
    })
    .join()
    .unwrap()
}

/// The history check: no value is stored twice, every acknowledged value is stored, and
/// values acknowledged one after another (in `acked` order, one producer at a time) are
/// stored in that order. `context` goes into every failure (a seed, a scenario step).
pub fn check_history(acked: &[String], stored: &[String], context: &str) {
    let mut position: HashMap<&str, usize> = HashMap::new();
    for (at, value) in stored.iter().enumerate() {
        let earlier = position.insert(value, at);
        assert!(
            earlier.is_none(),
            "{value} is stored twice (at {earlier:?} and {at}; {context})"
        );
    }
    let mut last = None;
    for value in acked {
        let at = *position
            .get(value.as_str())
            .unwrap_or_else(|| panic!("acknowledged {value} is lost ({context})"));
        assert!(
            last.is_none_or(|l| at > l),
            "acknowledged {value} is stored out of order ({context})"
        );
        last = Some(at);
    }
}
