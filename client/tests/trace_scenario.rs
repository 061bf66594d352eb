//! Message tracing against a real broker: W3C trace context from producer to every consumer
//! and from request to reply, and `Admin::trace` telling what happened to a message.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use client::{
    Admin, Answer, CommitTime, ConsumeMode, Consumer, ConsumerOptions, Message, Producer,
    QueueSelector, ReplySearch, Requester, Responder, StartFrom, TraceContext, TraceLookup,
    TraceReply,
};

use support::{Cluster, client, client_with};
use testkit::wait_for;

const WAIT: Duration = Duration::from_secs(30);
const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

fn context() -> TraceContext {
    TraceContext::parse(
        Some(TRACEPARENT),
        Some("rojo=00f067aa0ba902b7,congo=t61rcWkgMzE"),
    )
    .unwrap()
    .unwrap()
}

fn consumer(client: &client::Client, topic: &str, group: &str, mode: ConsumeMode) -> Consumer {
    Consumer::subscribe_with(
        client,
        ConsumerOptions::new(topic, group, mode).start_from(StartFrom::Earliest),
    )
    .unwrap()
}

#[test]
fn a_traceparent_arrives_unchanged_at_two_groups_and_a_broadcast_consumer() {
    let topic = "A10-3001";
    let cluster = Cluster::start(topic, 2);
    let client = client(&cluster.nameserver);
    let consumers = [
        consumer(&client, topic, "group-a", ConsumeMode::Clustering),
        consumer(&client, topic, "group-b", ConsumeMode::Clustering),
        consumer(&client, topic, "everyone", ConsumeMode::Broadcast),
    ];
    let producer = Producer::new(&client).unwrap();
    producer
        .send(Message::new(topic, b"traced".to_vec()).with_trace(context()))
        .unwrap();
    producer
        .send(Message::new(topic, b"untraced".to_vec()))
        .unwrap();
    let generated = Message::new(topic, b"generated".to_vec()).with_new_trace();
    let generated_context = generated.trace().cloned().unwrap();
    assert_ne!(
        generated_context.parent.trace_id(),
        context().parent.trace_id()
    );
    producer.send(generated).unwrap();
    for consumer in &consumers {
        let mut got = Vec::new();
        while got.len() < 3 {
            let message = consumer.recv(WAIT).unwrap().expect("three messages arrive");
            got.push((String::from_utf8(message.value).unwrap(), message.trace));
        }
        got.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(
            got,
            [
                ("generated".to_owned(), Some(generated_context.clone())),
                ("traced".to_owned(), Some(context())),
                ("untraced".to_owned(), None),
            ]
        );
        assert_eq!(got[1].1.as_ref().unwrap().traceparent(), TRACEPARENT);
    }
}

#[test]
fn a_requests_trace_reaches_its_responder_and_comes_back_on_the_reply() {
    let topic = "A10-3002";
    let cluster = Cluster::start(topic, 1);
    let responder_client = client(&cluster.nameserver);
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = seen.clone();
    // "own-span" answers with a span of its own in the request's trace; anything else
    // answers without a context, so the reply carries the request's.
    let _responder = Responder::start(&responder_client, topic, "svc", move |request| {
        sink.lock().unwrap().push(request.trace.clone());
        let answer = Answer::new(request.value.clone());
        match (&request.value[..], &request.trace) {
            (b"own-span", Some(trace)) => answer.with_trace(client::trace::child_of(trace)),
            _ => answer,
        }
    })
    .unwrap();
    let requester_client = client(&cluster.nameserver);
    let requester = Requester::new(&requester_client);
    let request = |value: &str, trace: Option<TraceContext>| {
        let mut message = Message::new(topic, value.as_bytes().to_vec());
        if let Some(trace) = trace {
            message = message.with_trace(trace);
        }
        requester.request(message, WAIT).unwrap()
    };
    let passed_on = request("pass-on", Some(context()));
    assert_eq!(passed_on.trace, Some(context()));
    let own = request("own-span", Some(context()));
    let own_trace = own.trace.expect("the responder's context");
    assert_eq!(own_trace.parent.trace_id(), context().parent.trace_id());
    assert_ne!(own_trace.parent.parent_id(), context().parent.parent_id());
    assert_eq!(own_trace.state, context().state, "tracestate is passed on");
    let none = request("none", None);
    assert_eq!(
        none.trace, None,
        "no context is made up for a request without one"
    );
    assert_eq!(
        *seen.lock().unwrap(),
        [Some(context()), Some(context()), None],
        "the responder saw each request's context unchanged"
    );
}

#[test]
fn invalid_trace_contexts_are_refused_before_anything_is_sent() {
    for (traceparent, tracestate, why) in [
        (
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            None,
            "all zeros",
        ),
        (
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            None,
            "all zeros",
        ),
        (
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            None,
            "55 characters",
        ),
        (
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            None,
            "ff",
        ),
        (TRACEPARENT, Some("a=1,a=2"), "twice"),
        (TRACEPARENT, Some("Key=1"), "key"),
    ] {
        let error = client::ClientError::from(
            TraceContext::parse(Some(traceparent), tracestate).unwrap_err(),
        );
        let text = error.to_string();
        assert!(text.contains(why), "{traceparent} {tracestate:?}: {text}");
        assert!(text.contains("trace"), "{text}");
    }
}

/// The trace of `offset` in queue `queue_id`, once `ready` holds of it.
fn trace_until(
    admin: &Admin,
    topic: &str,
    lookup: TraceLookup,
    what: &str,
    ready: impl Fn(&TraceReply) -> bool,
) -> TraceReply {
    wait_for(what, WAIT, || {
        let replies = admin.trace(topic, &lookup).unwrap();
        assert_eq!(replies.len(), 1, "one queue asked: {replies:?}");
        let reply = replies.into_iter().next().unwrap();
        ready(&reply).then_some(reply)
    })
}

#[test]
fn a_trace_tells_where_a_message_was_stored_who_got_it_and_who_committed_it() {
    let topic = "A10-3003";
    let cluster = Cluster::start(topic, 1);
    let client = client_with(&cluster.nameserver, |c| {
        c.with_batch_linger(Duration::from_millis(20))
    });
    let admin = Admin::new(&client);
    let producer = Producer::with_selector(&client, QueueSelector::KeyHash).unwrap();
    // Five messages with one key sent together: one batch, the traced one in its middle.
    let before_ms = now_ms();
    let sends: Vec<_> = (0..5)
        .map(|i| {
            let mut message = Message::new(topic, format!("m{i}")).with_key("order");
            if i == 2 {
                message = message.with_trace(context());
            }
            producer.send_async(message)
        })
        .collect();
    let sent: Vec<_> = sends.into_iter().map(|s| s.wait(WAIT).unwrap()).collect();
    let after_ms = now_ms();
    let traced = &sent[2];
    let committing = consumer(&client, topic, "committing", ConsumeMode::Clustering);
    let holding = Consumer::subscribe_with(
        &client,
        ConsumerOptions::new(topic, "holding", ConsumeMode::Clustering)
            .start_from(StartFrom::Earliest)
            .manual_commit(),
    )
    .unwrap();
    for consumer in [&committing, &holding] {
        for _ in 0..5 {
            consumer.recv(WAIT).unwrap().expect("five messages arrive");
        }
    }
    let lookup = TraceLookup::offset(traced.offset).queue(traced.queue_id);
    let reply = trace_until(
        &admin,
        topic,
        lookup,
        "the committing group's commit",
        |r| {
            r.messages.first().is_some_and(|m| {
                m.groups
                    .iter()
                    .any(|g| g.group == "committing" && matches!(g.committed, CommitTime::At(_)))
            })
        },
    );
    assert_eq!(reply.broker_id, "broker-a");
    assert_eq!(
        (reply.topic.as_str(), reply.queue_id),
        (topic, traced.queue_id)
    );
    let life = &reply.messages[0];
    assert_eq!(life.offset, traced.offset);
    assert_eq!(life.batch_records, 5, "the five messages share a batch");
    assert_eq!(life.batch_base_offset, sent[0].offset);
    assert!(life.batch_base_offset < life.offset);
    assert!((before_ms..=after_ms).contains(&life.stored_ms), "{life:?}");
    assert_eq!(life.key, b"order");
    assert_eq!(life.traceparent.as_deref(), Some(TRACEPARENT));
    assert_eq!(life.tracestate.as_deref(), context().tracestate());
    assert_eq!(life.request, None);
    let names: Vec<_> = life.groups.iter().map(|g| g.group.as_str()).collect();
    assert_eq!(names, ["committing", "holding"]);
    for group in &life.groups {
        assert_eq!(group.pushes.len(), 1, "{group:?}");
        let push = &group.pushes[0];
        assert_eq!(push.client_id, client.client_id());
        assert!(push.from_offset <= life.offset && life.offset < push.to_offset);
        assert!(push.at_ms >= life.stored_ms, "{push:?}");
        assert!(group.pushes_since_ms <= life.stored_ms);
        assert_eq!(group.client_id, client.client_id());
    }
    let [committing_life, holding_life] = &life.groups[..] else {
        unreachable!()
    };
    let CommitTime::At(committed_ms) = committing_life.committed else {
        unreachable!("waited for it")
    };
    assert!(committed_ms >= committing_life.pushes[0].at_ms);
    assert!(committing_life.committed_offset.unwrap() > life.offset);
    assert_eq!(holding_life.committed, CommitTime::NotCommitted);
    assert_eq!(holding_life.committed_offset, None);

    // By key: the newest four of the five, oldest first, the traced one among them.
    let by_key = admin
        .trace(topic, &TraceLookup::key("order", 100, 4))
        .unwrap();
    assert_eq!(by_key.len(), 1);
    let found = &by_key[0];
    let offsets: Vec<u64> = found.messages.iter().map(|m| m.offset).collect();
    let newest: Vec<u64> = sent[1..].iter().map(|s| s.offset).collect();
    assert_eq!(offsets, newest);
    assert_eq!(found.messages[1], reply.messages[0]);
    assert_eq!(
        (found.searched_from, found.searched_to),
        (0, found.next_offset)
    );
    // Only the newest two records searched: the traced one is older.
    let recent = admin
        .trace(topic, &TraceLookup::key("order", 2, 4))
        .unwrap();
    assert_eq!(recent[0].searched_from, 3);
    assert_eq!(recent[0].messages.len(), 2);
    // Past the end: an answer with no message, and the queue's range to say why.
    let past = admin
        .trace(topic, &TraceLookup::offset(1000).queue(traced.queue_id))
        .unwrap();
    assert!(past[0].messages.is_empty());
    assert_eq!(past[0].next_offset, 5);
    holding.close().unwrap();
    committing.close().unwrap();
}

#[test]
fn a_trace_tells_a_requests_reply_or_that_it_expired() {
    let topic = "A10-3004";
    let cluster = Cluster::start(topic, 1);
    cluster.create_topic("A10-3005", 1);
    let responder_client = client(&cluster.nameserver);
    let _responder = Responder::start(&responder_client, topic, "svc", |request| {
        Answer::new(request.value.clone())
            .with_trace(client::trace::child_of(request.trace.as_ref().unwrap()))
    })
    .unwrap();
    let client = client(&cluster.nameserver);
    let admin = Admin::new(&client);
    let requester = Requester::new(&client);
    let reply = requester
        .request(
            Message::new(topic, b"answered".to_vec())
                .with_key("req-1")
                .with_trace(context()),
            WAIT,
        )
        .unwrap();
    let replies = admin
        .trace(topic, &TraceLookup::key("req-1", 100, 1))
        .unwrap();
    let life = &replies[0].messages[0];
    let request = life.request.as_ref().expect("a request");
    assert_eq!(request.reply_to, client.client_id());
    assert!(request.deadline_ms as i64 > life.stored_ms);
    let ReplySearch::Found(found) = &request.reply else {
        panic!("the reply is found: {request:?}");
    };
    assert!(found.stored_ms >= life.stored_ms);
    assert_eq!(found.shard_id, replies[0].shard_id);
    assert_eq!(
        found.traceparent.as_deref(),
        reply.trace.as_ref().map(|t| t.traceparent()).as_deref(),
        "the stored reply carries the responder's context"
    );
    let svc = life.groups.iter().find(|g| g.group == "svc").unwrap();
    assert_eq!(svc.pushes.len(), 1);

    // Nobody answers A10-3005: the request expires, and the trace says no reply was stored.
    let unanswered = requester.request(
        Message::new("A10-3005", b"lost".to_vec()).with_key("req-2"),
        Duration::from_millis(200),
    );
    assert!(unanswered.is_err());
    // The requester gave up by its own timer; the broker's clock (ms) may still read the
    // deadline's millisecond: ask again until the broker's answer is past it.
    let replies = wait_for("a trace answered after the deadline", WAIT, || {
        let replies = admin
            .trace("A10-3005", &TraceLookup::key("req-2", 100, 1))
            .unwrap();
        let deadline = replies[0].messages[0].request.as_ref().unwrap().deadline_ms;
        (replies[0].now_ms > deadline as i64).then_some(replies)
    });
    let life = &replies[0].messages[0];
    let request = life.request.as_ref().unwrap();
    assert_eq!(request.reply, ReplySearch::NotFound);
    assert!(life.groups.is_empty(), "no group consumes A10-3005");
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}
