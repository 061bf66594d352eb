//! A tiny blocking client over `std::net` and the protocol crate, for broker scenario tests.
#![allow(dead_code)]

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use engine::{Broker, BrokerConfig};
use protocol::codes::{Command, Status};
use protocol::control::{
    self, ClientHeartbeat, CommitOffset, Credit, ErrorReply, FlushMode, ProduceAck, StartPosition,
    Subscribe, SubscribeAck, SubscriptionMode, TopicConfig,
};
use protocol::data::BatchAddress;
use protocol::frame::{FrameBytes, FrameMeta, Framer, encode_frame};
use protocol::record::{BATCH_LEN_MAX, BatchBuilder, BatchView, MessageType, Property, Record};

/// How long any single wait in a test may take before it fails.
pub const WAIT: Duration = Duration::from_secs(10);

pub fn init_logs() {
    let _ = env_logger::builder().is_test(true).try_init();
}

/// A broker configuration for tests: loopback, ephemeral ports, data in `dir`.
pub fn config(dir: &Path, shards: usize) -> BrokerConfig {
    BrokerConfig {
        broker_id: "test-broker".into(),
        listen_address: "127.0.0.1".into(),
        port_base: 0,
        // An ephemeral port: tests run side by side, and every test broker can be scraped.
        metrics_address: "127.0.0.1:0".into(),
        shards,
        data_dir: dir.to_path_buf(),
        revoke_timeout_ms: 500,
        io_memory_bytes: 1 << 20,
        ..BrokerConfig::default()
    }
}

pub fn start(dir: &Path, shards: usize) -> Broker {
    init_logs();
    Broker::start(config(dir, shards)).expect("broker starts")
}

pub fn topic_config(topic: &str, queues: u32, flush_mode: FlushMode) -> TopicConfig {
    let mut config = TopicConfig::new(&topic.parse().unwrap());
    config.queue_count = queues;
    config.read_queue_count = queues;
    config.write_queue_count = queues;
    config.flush_mode = flush_mode;
    config
}

/// A batch of `values`, each a record of `message_type` with `properties`.
pub fn batch(values: &[&[u8]], message_type: MessageType, properties: &[Property<'_>]) -> Vec<u8> {
    let mut builder = BatchBuilder::new(BATCH_LEN_MAX);
    for value in values {
        builder
            .push(&Record {
                timestamp_ms: 1,
                message_type,
                key: b"",
                properties,
                value,
            })
            .unwrap();
    }
    builder.finish().unwrap()
}

/// (offset, value) of every record of a pushed batch.
pub fn records(frame: &FrameBytes) -> Vec<(u64, Vec<u8>)> {
    let view = BatchView::parse(&frame.body, BATCH_LEN_MAX).expect("valid pushed batch");
    view.records()
        .map(|r| (r.offset(), r.value().to_vec()))
        .collect()
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// A blocking connection to one shard.
pub struct Client {
    pub stream: TcpStream,
    buf: BytesMut,
    next_id: u64,
    /// Frames that arrived while waiting for a response: pushes and reply pushes.
    pub pushes: VecDeque<FrameBytes>,
    pub client_id: String,
}

impl Client {
    pub fn connect(port: u16, client_id: &str) -> Self {
        let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        stream.set_nodelay(true).unwrap();
        let mut client = Self {
            stream,
            buf: BytesMut::new(),
            next_id: 0,
            pushes: VecDeque::new(),
            client_id: client_id.to_owned(),
        };
        let heartbeat = ClientHeartbeat {
            client_id: client_id.into(),
            area: "A10".into(),
        };
        let ack = client.call(
            Command::Heartbeat,
            &[],
            &control::encode(&heartbeat).unwrap(),
        );
        assert_eq!(ack.header.status, 0, "heartbeat refused");
        client
    }

    pub fn send(&mut self, meta: FrameMeta, ext: &[u8], body: &[u8]) {
        let mut out = Vec::new();
        encode_frame(&meta, ext, body, &mut out).unwrap();
        self.stream.write_all(&out).unwrap();
    }

    /// Reads one frame, or `None` at end of stream or when `timeout` passes.
    pub fn read_frame(&mut self, timeout: Duration) -> Option<FrameBytes> {
        let deadline = Instant::now() + timeout;
        let framer = Framer::default();
        loop {
            if let Some(frame) = framer
                .split_frame(&mut self.buf)
                .expect("valid frame from broker")
            {
                return Some(frame);
            }
            let left = deadline.checked_duration_since(Instant::now())?;
            self.stream
                .set_read_timeout(Some(left.max(Duration::from_millis(1))))
                .unwrap();
            let mut chunk = [0u8; 65536];
            match self.stream.read(&mut chunk) {
                Ok(0) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    return None;
                }
                Err(_) => return None,
            }
        }
    }

    /// Sends a request and waits for its response, keeping pushes that arrive meanwhile.
    pub fn call(&mut self, command: Command, ext: &[u8], body: &[u8]) -> FrameBytes {
        self.next_id += 1;
        let id = self.next_id;
        let mut meta = FrameMeta::request(command, id);
        if command.carries_record_batch() {
            meta = meta.without_body_crc();
        }
        self.send(meta, ext, body);
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let frame = self
                .read_frame(left)
                .unwrap_or_else(|| panic!("no response to {command}"));
            if frame.header.request_id == id
                && frame.header.flags & protocol::frame::flag::RESPONSE != 0
            {
                return frame;
            }
            self.pushes.push_back(frame);
        }
    }

    pub fn oneway(&mut self, command: Command, body: &[u8]) {
        self.next_id += 1;
        self.send(FrameMeta::oneway(command, self.next_id), &[], body);
    }

    /// Calls and asserts success; returns the body.
    pub fn call_ok(&mut self, command: Command, ext: &[u8], body: &[u8]) -> bytes::Bytes {
        let frame = self.call(command, ext, body);
        assert_eq!(
            frame.header.status,
            0,
            "{command} failed: {:?}",
            error_of(&frame)
        );
        frame.body
    }

    pub fn create_topic(&mut self, config: &TopicConfig) {
        self.call_ok(Command::CreateTopic, &[], &control::encode(config).unwrap());
    }

    pub fn produce_batch(
        &mut self,
        command: Command,
        topic: &str,
        queue_id: u32,
        batch: &[u8],
    ) -> FrameBytes {
        let mut ext = Vec::new();
        BatchAddress::new(topic, queue_id).encode(&mut ext).unwrap();
        self.call(command, &ext, batch)
    }

    pub fn produce(&mut self, topic: &str, queue_id: u32, values: &[&[u8]]) -> ProduceAck {
        let frame = self.produce_batch(
            Command::Produce,
            topic,
            queue_id,
            &batch(values, MessageType::Event, &[]),
        );
        assert_eq!(
            frame.header.status,
            0,
            "produce failed: {:?}",
            error_of(&frame)
        );
        control::decode(&frame.body).unwrap()
    }

    pub fn subscribe(
        &mut self,
        topic: &str,
        group: &str,
        mode: SubscriptionMode,
        credit: u32,
    ) -> SubscribeAck {
        let subscribe = Subscribe {
            topic: topic.into(),
            group: group.into(),
            client_id: self.client_id.clone(),
            area: "A10".into(),
            mode,
            start: StartPosition::Committed,
            credit_messages: credit,
        };
        let body = self.call_ok(
            Command::Subscribe,
            &[],
            &control::encode(&subscribe).unwrap(),
        );
        control::decode(&body).unwrap()
    }

    pub fn credit(&mut self, subscription_id: u64, messages: u32) {
        let body = control::encode(&Credit {
            subscription_id,
            messages,
        })
        .unwrap();
        self.oneway(Command::Credit, &body);
    }

    pub fn commit(&mut self, subscription_id: u64, queue_id: u32, offset: u64) {
        let body = control::encode(&CommitOffset {
            subscription_id,
            queue_id,
            offset,
        })
        .unwrap();
        self.call_ok(Command::CommitOffset, &[], &body);
    }

    /// The next push (or reply push), waiting up to `timeout`.
    pub fn next_push(&mut self, timeout: Duration) -> Option<FrameBytes> {
        if let Some(frame) = self.pushes.pop_front() {
            return Some(frame);
        }
        self.read_frame(timeout)
    }

    /// Collects pushed (queue, offset, value) until `want` distinct records arrived.
    pub fn collect(&mut self, want: usize) -> Vec<(u32, u64, Vec<u8>)> {
        let mut got: Vec<(u32, u64, Vec<u8>)> = Vec::new();
        let deadline = Instant::now() + WAIT;
        while got.len() < want {
            let left = deadline.saturating_duration_since(Instant::now());
            let Some(frame) = self.next_push(left) else {
                panic!(
                    "{}: only {} of {want} records arrived: {got:?}",
                    self.client_id,
                    got.len()
                );
            };
            assert_eq!(
                frame.header.command,
                Command::Push.code(),
                "unexpected frame"
            );
            let queue = BatchAddress::decode(&frame.ext).unwrap().queue_id;
            for (offset, value) in records(&frame) {
                if !got.iter().any(|(q, o, _)| *q == queue && *o == offset) {
                    got.push((queue, offset, value));
                }
            }
        }
        got
    }
}

pub fn error_of(frame: &FrameBytes) -> Option<(Status, String)> {
    let reply = control::decode::<ErrorReply>(&frame.body).ok()?;
    Some((reply.status().ok()?, reply.message))
}
