//! Trace context and `TraceMessage` at the broker, on raw frames: a stored context comes back
//! byte for byte, a malformed one is refused naming it, and a trace answers from any shard
//! with what the bounded push memory holds.

mod broker_common;

use broker_common::*;
use protocol::codes::{Command, Status};
use protocol::control::{
    self, CommitTime, FlushMode, SubscriptionMode, TraceReply, TraceRequest, TraceTarget,
};
use protocol::record::{BATCH_LEN_MAX, BatchView, MessageType, Property};
use protocol::trace::TraceParent;

const TOPIC: &str = "A10-5001";
const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

fn trace(client: &mut Client, queue_id: u32, offset: u64) -> TraceReply {
    let request = TraceRequest {
        topic: TOPIC.into(),
        queue_id,
        target: TraceTarget::Offset(offset),
    };
    let body = client.call_ok(
        Command::TraceMessage,
        &[],
        &control::encode(&request).unwrap(),
    );
    control::decode(&body).unwrap()
}

#[test]
fn a_stored_trace_context_is_pushed_back_unchanged_and_a_malformed_one_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start(dir.path(), 1);
    let mut client = Client::connect(broker.shard_ports()[0], "tracer");
    client.create_topic(&topic_config(TOPIC, 1, FlushMode::Async));
    let parent: TraceParent = TRACEPARENT.parse().unwrap();
    let traced = batch(
        &[b"traced"],
        MessageType::Event,
        &[
            Property::TraceParent(parent),
            Property::TraceState("rojo=1"),
        ],
    );
    let ack = client.produce_batch(Command::Produce, TOPIC, 0, &traced);
    assert_eq!(ack.header.status, 0, "{:?}", error_of(&ack));
    for (tag, value, name) in [
        (6u8, vec![0u8; 25], "traceparent"),
        (6, vec![1; 26], "traceparent"),
        (7, b"rojo=1, congo=2".to_vec(), "tracestate"),
    ] {
        let bad = batch(
            &[b"bad"],
            MessageType::Event,
            &[Property::Unknown { tag, value: &value }],
        );
        let refused = client.produce_batch(Command::Produce, TOPIC, 0, &bad);
        let (status, message) = error_of(&refused).expect("refused");
        assert_eq!(status, Status::InvalidArgument, "{message}");
        assert!(message.contains(name), "{message}");
    }
    let sub = client.subscribe(TOPIC, "g", SubscriptionMode::Clustering, 10);
    let push = client.next_push(WAIT).expect("pushed");
    // The records are the bytes produced; only the header was stamped.
    let header = protocol::record::BATCH_HEADER_LEN_V3;
    assert_eq!(&push.body[header..], &traced[header..]);
    let view = BatchView::parse(&push.body, BATCH_LEN_MAX).unwrap();
    let record = view.records().next().unwrap();
    assert_eq!(record.trace_parent(), Some(parent));
    assert_eq!(record.trace_state(), Some("rojo=1"));
    assert_eq!(
        trace(&mut client, 0, 0).messages[0].traceparent.as_deref(),
        Some(TRACEPARENT)
    );
    drop(sub);
    broker.shutdown().unwrap();
}

#[test]
fn any_shard_answers_a_trace_and_says_from_when_it_remembers_pushes() {
    let dir = tempfile::tempdir().unwrap();
    init_logs();
    let mut config = config(dir.path(), 2);
    config.trace.pushes_remembered = 2;
    let broker = engine::Broker::start(config).unwrap();
    let ports = broker.shard_ports();
    let owner = engine::topic::owner_shard(TOPIC, 0, 2);
    let mut producer = Client::connect(ports[owner], "producer");
    producer.create_topic(&topic_config(TOPIC, 1, FlushMode::Async));
    producer.produce(TOPIC, 0, &[b"first"]);
    let mut consumer = Client::connect(ports[owner], "consumer");
    let sub = consumer.subscribe(TOPIC, "g", SubscriptionMode::Broadcast, 100);
    consumer.collect(1);
    consumer.commit(sub.subscription_id, 0, 1);
    // The shard that does not own the queue forwards the trace to the one that does.
    let mut other = Client::connect(ports[1 - owner], "tracer");
    let first = trace(&mut other, 0, 0);
    assert_eq!(first.shard_id, owner as u32);
    let life = &first.messages[0];
    assert_eq!(life.groups.len(), 1);
    let group = &life.groups[0];
    assert_eq!(
        group.group, "g/consumer",
        "a broadcast member is a group of its own"
    );
    assert_eq!(group.pushes.len(), 1);
    assert!(matches!(group.committed, CommitTime::At(at) if at >= life.stored_ms));
    // Three more pushes, one at a time and each in a millisecond of its own (pushes in one
    // millisecond share an entry), overflow a memory of two: the first push is let go, and
    // the answer says from when the memory is complete instead of inventing a push.
    for value in [&b"a"[..], b"b", b"c"] {
        let before = now_ms();
        testkit::wait_until("the next millisecond", WAIT, || now_ms() > before);
        let ack = producer.produce(TOPIC, 0, &[value]);
        let mut seen = 0;
        while seen == 0 {
            let push = consumer.next_push(WAIT).expect("pushed");
            seen = records(&push)
                .iter()
                .filter(|(offset, _)| *offset == ack.base_offset)
                .count();
        }
    }
    let again = trace(&mut other, 0, 0);
    let group = &again.messages[0].groups[0];
    assert!(group.pushes.is_empty(), "{group:?}");
    assert!(
        group.pushes_since_ms >= again.messages[0].stored_ms,
        "{group:?}"
    );
    let newest = trace(&mut other, 0, 3);
    assert_eq!(newest.messages[0].groups[0].pushes.len(), 1);
    assert_eq!(
        newest.messages[0].groups[0].committed,
        CommitTime::NotCommitted
    );
    // A queue the topic does not have is refused; a gap past the end is an empty answer.
    let request = TraceRequest {
        topic: TOPIC.into(),
        queue_id: 9,
        target: TraceTarget::Offset(0),
    };
    let refused = other.call(
        Command::TraceMessage,
        &[],
        &control::encode(&request).unwrap(),
    );
    assert_eq!(error_of(&refused).unwrap().0, Status::InvalidArgument);
    assert!(trace(&mut other, 0, 99).messages.is_empty());
    broker.shutdown().unwrap();
}
