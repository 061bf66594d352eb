//! Dark launch (DESIGN §6) on the two-area topology, brokers of two shards: instances of one
//! group subscribe to different topic sets and each topic's queues are balanced over its own
//! subscribers only; a redirect rule sends messages tagged `gray` only to the queues held by
//! the canary instance, across shards when it holds none on the addressed one; with the
//! canary offline such a message is refused with a clear error, and untagged traffic goes on.

use std::collections::BTreeSet;
use std::sync::Arc;

use client::{Client, ConsumeMode, Consumer, ConsumerOptions, Message, Producer, StartFrom};
use defibus_tests::areas::TwoAreas;
use defibus_tests::{Seen, WAIT, record_seen, topic_config};
use protocol::codes::Status;
use protocol::control::{FlushMode, RedirectRule};
use testkit::wait_until;

const TOPIC: &str = "A10-7003";
/// Only the canary subscribes to this one.
const CANARY_ONLY: &str = "A10-7004";
const GROUP: &str = "svc";
const CANARY: &str = "canary-1#A10";
const STABLE: [&str; 2] = ["v1-a#A10", "v1-b#A10"];

fn consumer(
    topology: &TwoAreas,
    id: &str,
    topics: &[&str],
    seen: &Seen,
) -> (Client, Vec<Consumer>) {
    let client = topology.client("A10", |c| c.with_client_id(id).unwrap());
    let consumers = topics
        .iter()
        .map(|topic| {
            Consumer::start_with(
                &client,
                ConsumerOptions::new(*topic, GROUP, ConsumeMode::Clustering)
                    .start_from(StartFrom::Earliest),
                record_seen(seen, id),
            )
            .unwrap_or_else(|e| panic!("{id} on {topic}: {e}"))
        })
        .collect();
    (client, consumers)
}

#[test]
fn flagged_messages_reach_only_the_canary_and_fail_clearly_without_it() {
    let topology = TwoAreas::start(2, 2);
    // Three queues per broker: the canary (first by client id) holds queue 0, on shard 0;
    // queue 1 lives on shard 1, so its flagged batches cross shards.
    topology.create_topic(TOPIC, 3, |_| {});
    topology.create_topic(CANARY_ONLY, 2, |_| {});
    let seen: Seen = Arc::default();
    let (canary_client, canary) = consumer(&topology, CANARY, &[TOPIC, CANARY_ONLY], &seen);
    let _stable: Vec<(Client, Vec<Consumer>)> = STABLE
        .iter()
        .map(|id| consumer(&topology, id, &[TOPIC], &seen))
        .collect();

    // Different topic sets: each topic is balanced over its own subscribers only.
    topology.wait_for_assignment("over all three", TOPIC, GROUP, |a| {
        a.len() == 12
            && [CANARY, STABLE[0], STABLE[1]]
                .iter()
                .all(|m| a.values().any(|v| v == m))
    });
    topology.wait_for_assignment("all the canary's", CANARY_ONLY, GROUP, |a| {
        a.len() == 8 && a.values().all(|m| m == CANARY)
    });

    // The rule: tagged `gray` → the canary instances.
    let mut config = topic_config(TOPIC, 3, FlushMode::Async);
    config.redirects.push(RedirectRule {
        group: GROUP.into(),
        flag: "gray".into(),
        instances: vec!["canary-*".into()],
    });
    let admin = topology.admin();
    for endpoint in topology.endpoints(None) {
        admin.update_topic(&endpoint, &config).unwrap();
    }
    let canary_queues: BTreeSet<(String, u32)> = topology
        .assignment(TOPIC, GROUP)
        .into_iter()
        .filter(|(_, member)| member == CANARY)
        .map(|(queue, _)| queue)
        .collect();

    let producer_client = topology.client("A10", |c| c.with_retries(6));
    let producer = Producer::new(&producer_client).unwrap();
    let mut gray = BTreeSet::new();
    let mut plain = BTreeSet::new();
    for i in 0..80 {
        let value = format!("gray-{i}");
        let sent = producer
            .send(Message::new(TOPIC, value.clone()).with_tag("gray"))
            .unwrap_or_else(|e| panic!("{value}: {e}"));
        assert!(
            canary_queues.contains(&(sent.broker_id.clone(), sent.queue_id)),
            "{value} stored on {sent:?}, not a canary queue {canary_queues:?}"
        );
        gray.insert(value);
        let value = format!("plain-{i}");
        producer.send(Message::new(TOPIC, value.clone())).unwrap();
        plain.insert(value);
    }
    wait_until("every message consumed", WAIT, || {
        let seen = seen.lock().unwrap();
        gray.iter().chain(&plain).all(|v| seen.contains_key(v))
    });
    {
        let seen = seen.lock().unwrap();
        for value in &gray {
            assert_eq!(
                seen[value],
                BTreeSet::from([CANARY.to_owned()]),
                "{value} reached a stable instance"
            );
        }
        let plain_consumers: BTreeSet<&String> = plain.iter().flat_map(|v| &seen[v]).collect();
        assert!(
            plain_consumers.len() > 1,
            "untagged traffic is shared: {plain_consumers:?}"
        );
    }

    // The canary goes offline: tagged messages are refused, untagged ones still flow.
    canary_client.close();
    drop(canary);
    topology.wait_for_assignment("without the canary", TOPIC, GROUP, |a| {
        a.len() == 12 && a.values().all(|m| STABLE.contains(&m.as_str()))
    });
    let err = producer
        .send(Message::new(TOPIC, "gray-orphan").with_tag("gray"))
        .expect_err("no canary is online");
    assert_eq!(err.status(), Some(Status::NoRedirectTarget), "{err}");
    assert!(
        err.to_string().contains("gray"),
        "the error names the flag: {err}"
    );
    producer
        .send(Message::new(TOPIC, "plain-after"))
        .expect("untagged traffic is unaffected");
}
