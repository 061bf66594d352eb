//! A minimal blocking client speaking raw frames, and helpers the scenarios share.

#![allow(dead_code)] // Each scenario binary uses a different subset.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::Duration;

use bytes::BytesMut;
use nameserver::{NameserverConfig, NameserverHandle};
use protocol::codes::{Command, Status};
use protocol::control::{
    self, BrokerId, BrokerRegistration, ClusterInfo, ErrorReply, FlushMode, RegisterAck, TopicInfo,
    TopicName, TopicRoute,
};
use protocol::frame::{FrameBytes, FrameLimits, FrameMeta, Framer, encode_frame};

/// How long a test waits for anything before failing: generous, since CI machines stall.
pub const PATIENCE: Duration = Duration::from_secs(10);

/// A nameserver on 127.0.0.1 port 0 with `tweak` applied to the defaults.
pub fn start_nameserver(tweak: impl FnOnce(&mut NameserverConfig)) -> NameserverHandle {
    let _ = env_logger::builder().is_test(true).try_init();
    let mut config = NameserverConfig {
        listen_addr: "127.0.0.1:0".parse().unwrap(),
        // Tests run side by side: none serves metrics unless it asks for an address.
        metrics_addr: String::new(),
        ..NameserverConfig::default()
    };
    tweak(&mut config);
    nameserver::start(config).expect("nameserver starts")
}

/// A topic with `queues` queues, the first `read` readable and the first `write` writable.
pub fn topic(name: &str, queues: u32, read: u32, write: u32) -> TopicInfo {
    TopicInfo {
        topic: name.into(),
        queue_count: queues,
        read_queue_count: read,
        write_queue_count: write,
        flush_mode: FlushMode::Async,
        max_queue_depth: 500,
        queue_depths: vec![0; queues as usize],
        ..TopicInfo::default()
    }
}

/// A registration of broker `id` in cluster `c1`, area `A10`, at 127.0.0.1.
pub fn broker(id: &str, shard_ports: &[u16], topics: Vec<TopicInfo>) -> BrokerRegistration {
    BrokerRegistration {
        broker_id: id.into(),
        cluster: "c1".into(),
        area: "A10".into(),
        address: "127.0.0.1".into(),
        shard_ports: shard_ports.to_vec(),
        topics,
    }
}

/// One connection to a nameserver.
pub struct Client {
    stream: TcpStream,
    buf: BytesMut,
    framer: Framer,
    next_request_id: u64,
}

impl Client {
    pub fn connect(addr: SocketAddr) -> Self {
        let stream = TcpStream::connect(addr).expect("connect to the nameserver");
        stream.set_read_timeout(Some(PATIENCE)).unwrap();
        Self {
            stream,
            buf: BytesMut::new(),
            framer: Framer::new(FrameLimits::default()),
            next_request_id: 1,
        }
    }

    /// Sends bytes as they are.
    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap();
    }

    /// Closes the sending side; the nameserver sees end of stream.
    pub fn shutdown_write(&mut self) {
        self.stream.shutdown(Shutdown::Write).unwrap();
    }

    /// Encodes a request frame with a fresh request id; returns the id and the bytes.
    pub fn request_bytes(&mut self, command: u16, body: &[u8]) -> (u64, Vec<u8>) {
        let request_id = self.next_request_id;
        self.next_request_id += 1;
        let meta = FrameMeta {
            command,
            ..FrameMeta::request(Command::ClusterInfo, request_id)
        };
        let mut out = Vec::new();
        encode_frame(&meta, &[], body, &mut out).unwrap();
        (request_id, out)
    }

    /// The next frame, or `None` once the nameserver has closed the connection.
    pub fn read_frame(&mut self) -> Option<FrameBytes> {
        loop {
            if let Some(frame) = self.framer.split_frame(&mut self.buf).unwrap() {
                return Some(frame);
            }
            let mut chunk = [0u8; 4096];
            match self.stream.read(&mut chunk) {
                Ok(0) => {
                    assert!(self.buf.is_empty(), "connection closed mid-frame");
                    return None;
                }
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == ErrorKind::ConnectionReset => return None,
                Err(e) => panic!("reading from the nameserver: {e}"),
            }
        }
    }

    /// The next frame, which must be there.
    pub fn expect_frame(&mut self) -> FrameBytes {
        self.read_frame()
            .expect("a response before the connection closed")
    }

    /// Asserts that the nameserver closes the connection without sending more.
    pub fn expect_closed(&mut self) {
        if let Some(frame) = self.read_frame() {
            panic!("expected the connection to close, got {:?}", frame.header);
        }
    }

    /// Sends a request and returns its response's status and body.
    pub fn call(&mut self, command: Command, body: &[u8]) -> (Status, FrameBytes) {
        let (request_id, bytes) = self.request_bytes(command.code(), body);
        self.send_raw(&bytes);
        let frame = self.expect_frame();
        assert_eq!(frame.header.request_id, request_id);
        assert_eq!(frame.header.command, command.code());
        (frame.header.status().unwrap(), frame)
    }

    pub fn register(&mut self, registration: &BrokerRegistration) -> RegisterAck {
        let (status, frame) = self.call(
            Command::BrokerRegister,
            &control::encode(registration).unwrap(),
        );
        assert_eq!(status, Status::Ok, "{:?}", error_reply(&frame));
        control::decode(&frame.body).unwrap()
    }

    pub fn unregister(&mut self, broker_id: &str) {
        let body = control::encode(&BrokerId {
            broker_id: broker_id.into(),
        })
        .unwrap();
        let (status, frame) = self.call(Command::BrokerUnregister, &body);
        assert_eq!(status, Status::Ok);
        assert!(frame.body.is_empty());
    }

    /// The route of `topic`, or the error reply.
    pub fn route(&mut self, topic: &str) -> Result<TopicRoute, ErrorReply> {
        let body = control::encode(&TopicName {
            topic: topic.into(),
        })
        .unwrap();
        let (status, frame) = self.call(Command::TopicRoute, &body);
        if status == Status::Ok {
            Ok(control::decode(&frame.body).unwrap())
        } else {
            Err(error_reply(&frame))
        }
    }

    pub fn cluster_info(&mut self) -> ClusterInfo {
        let (status, frame) = self.call(Command::ClusterInfo, &[]);
        assert_eq!(status, Status::Ok);
        control::decode(&frame.body).unwrap()
    }

    /// Ids of the brokers in `ClusterInfo`, in the order given.
    pub fn broker_ids(&mut self) -> Vec<String> {
        self.cluster_info()
            .brokers
            .into_iter()
            .map(|b| b.broker_id)
            .collect()
    }
}

/// Decodes an error response's body, checking it repeats the header's status.
pub fn error_reply(frame: &FrameBytes) -> ErrorReply {
    let reply: ErrorReply = control::decode(&frame.body).expect("an ErrorReply body");
    assert_eq!(reply.status, frame.header.status);
    reply
}
