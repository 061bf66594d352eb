//! Request-reply through a real broker, across shards.

mod broker_common;

use std::time::Duration;

use broker_common::*;
use protocol::codes::{Command, Status};
use protocol::control::{self, BrokerStats, FlushMode, ProduceAck, SubscriptionMode};
use protocol::data::BatchAddress;
use protocol::record::{BATCH_LEN_MAX, BatchView, MessageType, Property};

const TOPIC: &str = "A10-3001";

#[test]
fn a_reply_reaches_the_requester_on_another_shard() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start(dir.path(), 2);
    let ports = broker.shard_ports();
    // The topic's single queue lives on one shard; the requester talks to the other one.
    let owner = engine::topic::owner_shard(TOPIC, 0, 2);
    let mut requester = Client::connect(ports[1 - owner], "requester-1");
    requester.create_topic(&topic_config(TOPIC, 1, FlushMode::Async));
    let mut responder = Client::connect(ports[owner], "responder-1");
    let sub = responder.subscribe(TOPIC, "service", SubscriptionMode::Clustering, 100);

    let deadline = now_ms() + 60_000;
    let request = batch(
        &[b"ping"],
        MessageType::Request,
        &[
            Property::ReplyTo("requester-1"),
            Property::CorrelationId(b"corr-7"),
            Property::DeadlineMs(deadline),
        ],
    );
    let ack = requester.produce_batch(Command::Request, TOPIC, 0, &request);
    assert_eq!(ack.header.status, 0, "{:?}", error_of(&ack));

    let push = responder
        .next_push(WAIT)
        .expect("request pushed to the responder");
    assert_eq!(push.header.command, Command::Push.code());
    let address = BatchAddress::decode(&push.ext).unwrap();
    assert_eq!(address.subscription_id, Some(sub.subscription_id));
    let view = BatchView::parse(&push.body, BATCH_LEN_MAX).unwrap();
    let record = view.records().next().unwrap();
    assert_eq!(record.reply_to(), Some("requester-1"));
    let correlation = record.correlation_id().unwrap().to_vec();

    let reply = batch(
        &[b"pong"],
        MessageType::Reply,
        &[
            Property::ReplyTo("requester-1"),
            Property::CorrelationId(&correlation),
        ],
    );
    let ack = responder.produce_batch(Command::Reply, TOPIC, 0, &reply);
    assert_eq!(ack.header.status, 0, "{:?}", error_of(&ack));
    let ack: ProduceAck = control::decode(&ack.body).unwrap();
    assert_eq!(
        ack.queue_id as usize, owner,
        "kept in the receiving shard's reply queue"
    );

    let pushed = requester
        .next_push(WAIT)
        .expect("reply pushed to the requester");
    assert_eq!(pushed.header.command, Command::ReplyPush.code());
    assert_eq!(BatchAddress::decode(&pushed.ext).unwrap().topic, TOPIC);
    let view = BatchView::parse(&pushed.body, BATCH_LEN_MAX).unwrap();
    let record = view.records().next().unwrap();
    assert_eq!(record.value(), b"pong");
    assert_eq!(record.correlation_id(), Some(&b"corr-7"[..]));

    // A reply to nobody is refused, not lost silently.
    let orphan = batch(&[b"x"], MessageType::Reply, &[Property::ReplyTo("nobody")]);
    let refused = responder.produce_batch(Command::Reply, TOPIC, 0, &orphan);
    assert_eq!(error_of(&refused).unwrap().0, Status::NoResponder);
    drop((requester, responder));
    broker.shutdown().unwrap();
}

#[test]
fn expired_requests_are_never_pushed_and_are_counted() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start(dir.path(), 1);
    let port = broker.shard_ports()[0];
    let mut requester = Client::connect(port, "requester-2");
    requester.create_topic(&topic_config(TOPIC, 1, FlushMode::Async));
    let expired = batch(
        &[b"late"],
        MessageType::Request,
        &[
            Property::ReplyTo("requester-2"),
            Property::DeadlineMs(now_ms() - 1),
        ],
    );
    let fresh = batch(
        &[b"fresh"],
        MessageType::Request,
        &[
            Property::ReplyTo("requester-2"),
            Property::DeadlineMs(now_ms() + 60_000),
        ],
    );
    for request in [&expired, &fresh] {
        let ack = requester.produce_batch(Command::Request, TOPIC, 0, request);
        assert_eq!(ack.header.status, 0);
    }
    let mut responder = Client::connect(port, "responder-2");
    responder.subscribe(TOPIC, "service", SubscriptionMode::Clustering, 100);
    let got = responder.collect(1);
    assert_eq!(got, [(0, 1, b"fresh".to_vec())]);
    assert!(responder.next_push(Duration::from_millis(100)).is_none());
    let stats: BrokerStats = control::decode(&requester.call_ok(Command::Stats, &[], &[])).unwrap();
    let queue = stats.queues.iter().find(|q| q.topic == TOPIC).unwrap();
    assert_eq!(queue.expired_requests, 1);
    assert_eq!(queue.next_offset, 2);
    assert_eq!(stats.shards.len(), 1);
    drop((requester, responder));
    broker.shutdown().unwrap();
}
