//! Request-reply against a real broker: an echo responder, timeouts, async use from tokio.

mod support;

use std::time::{Duration, Instant};

use client::{ClientError, Message, Producer, Requester, Responder};

use support::{Cluster, client};

#[test]
fn a_thousand_requests_from_four_threads_each_get_their_own_reply() {
    let cluster = Cluster::start("A10-2001", 4);
    let responder_client = client(&cluster.nameserver);
    let _responder = Responder::start(&responder_client, "A10-2001", "echo", |request| {
        let mut reply = b"echo:".to_vec();
        reply.extend_from_slice(&request.value);
        reply
    })
    .unwrap();
    let requester_client = client(&cluster.nameserver);
    let requester = Requester::new(&requester_client);
    std::thread::scope(|scope| {
        for thread in 0..4 {
            let requester = requester.clone();
            scope.spawn(move || {
                for i in 0..250 {
                    let body = format!("{thread}-{i}");
                    let reply = requester
                        .request(
                            Message::new("A10-2001", body.clone()),
                            Duration::from_secs(10),
                        )
                        .unwrap_or_else(|e| panic!("request {body}: {e}"));
                    assert_eq!(reply.value, format!("echo:{body}").into_bytes());
                    assert_eq!(reply.message_type, client::MessageType::Reply);
                }
            });
        }
    });
    assert_eq!(requester_client.pending_replies(), 0);
}

#[test]
fn a_request_nobody_answers_times_out_at_its_deadline() {
    let cluster = Cluster::start("A10-2002", 1);
    let client = client(&cluster.nameserver);
    let requester = Requester::new(&client);
    let timeout = Duration::from_millis(300);
    let started = Instant::now();
    let err = requester
        .request(Message::new("A10-2002", b"anyone?".to_vec()), timeout)
        .unwrap_err();
    let waited = started.elapsed();
    assert!(
        matches!(err, ClientError::Timeout { after } if after == timeout),
        "{err}"
    );
    assert!(waited >= timeout && waited < timeout * 10, "{waited:?}");
    let (tx, rx) = std::sync::mpsc::channel();
    requester
        .request_with_callback(
            Message::new("A10-2002", b"cb".to_vec()),
            timeout,
            move |r| {
                tx.send(r.is_err_and(|e| matches!(e, ClientError::Timeout { .. })))
                    .unwrap();
            },
        )
        .unwrap();
    assert!(rx.recv_timeout(Duration::from_secs(10)).unwrap());
    assert_eq!(client.pending_replies(), 0);
}

#[test]
fn async_forms_work_inside_tokio() {
    let cluster = Cluster::start("A10-2003", 2);
    let client = client(&cluster.nameserver);
    let _responder = Responder::start(&client, "A10-2003", "upper", |request| {
        request.value.to_ascii_uppercase()
    })
    .unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let producer = Producer::new(&client).unwrap();
        let requester = Requester::new(&client);
        let sent = producer
            .send_async(Message::new("A10-2003", b"event".to_vec()))
            .await
            .unwrap();
        assert_eq!(sent.topic, "A10-2003");
        let tasks: Vec<_> = (0..50)
            .map(|i| {
                let requester = requester.clone();
                tokio::spawn(async move {
                    requester
                        .request_async(
                            Message::new("A10-2003", format!("hi-{i}")),
                            Duration::from_secs(10),
                        )
                        .await
                })
            })
            .collect();
        for (i, task) in tasks.into_iter().enumerate() {
            let reply = task.await.unwrap().unwrap();
            assert_eq!(reply.value, format!("HI-{i}").into_bytes());
        }
        let err = requester
            .request_async(
                Message::new("A10-404", b"x".to_vec()),
                Duration::from_millis(200),
            )
            .await
            .unwrap_err();
        assert!(matches!(err, ClientError::NoRoute { .. }), "{err}");
    });
}
