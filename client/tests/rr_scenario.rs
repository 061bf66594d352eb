//! Request-reply against a real broker: an echo responder, timeouts, async use from tokio,
//! inline responders, and handlers that panic.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use client::{ClientError, Message, Producer, Requester, Responder, ResponderOptions};

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

#[test]
fn inline_responders_answer_concurrent_requesters_on_their_reader_threads() {
    let cluster = Cluster::start("A10-2004", 4);
    // Two members of one group, so requests come in on several connections of each.
    let handled_off_reader = Arc::new(AtomicUsize::new(0));
    let responders: Vec<_> = (0..2)
        .map(|member| {
            let client = client(&cluster.nameserver);
            let handled_off_reader = handled_off_reader.clone();
            let responder = Responder::start_with(
                &client,
                ResponderOptions::new("A10-2004", "echo").inline(),
                move |request| {
                    let thread = std::thread::current();
                    if !thread
                        .name()
                        .is_some_and(|n| n.starts_with("defibus-read-"))
                    {
                        handled_off_reader.fetch_add(1, Ordering::SeqCst);
                    }
                    let mut reply = format!("{member}:").into_bytes();
                    reply.extend_from_slice(&request.value);
                    reply
                },
            )
            .unwrap();
            (client, responder)
        })
        .collect();
    std::thread::scope(|scope| {
        for thread in 0..4 {
            let nameserver = &cluster.nameserver;
            scope.spawn(move || {
                let requester_client = client(nameserver);
                let requester = Requester::new(&requester_client);
                for i in 0..150 {
                    let body = format!("{thread}-{i}");
                    let reply = requester
                        .request(
                            Message::new("A10-2004", body.clone()),
                            Duration::from_secs(10),
                        )
                        .unwrap_or_else(|e| panic!("request {body}: {e}"));
                    let value = String::from_utf8(reply.value).unwrap();
                    let (member, echoed) = value.split_once(':').unwrap();
                    assert!(member == "0" || member == "1", "{value}");
                    assert_eq!(echoed, body);
                }
                assert_eq!(requester_client.pending_replies(), 0);
            });
        }
    });
    assert_eq!(
        handled_off_reader.load(Ordering::SeqCst),
        0,
        "every request was handled on a connection's reader thread"
    );
    for (client, responder) in responders {
        responder.close().unwrap();
        client.close();
    }
}

#[test]
fn an_inline_responder_commits_what_it_answered() {
    let cluster = Cluster::start("A10-2005", 1);
    let requester_client = client(&cluster.nameserver);
    let requester = Requester::new(&requester_client);
    let first_client = client(&cluster.nameserver);
    let first = Responder::start_with(
        &first_client,
        ResponderOptions::new("A10-2005", "echo").inline(),
        |request| request.value.clone(),
    )
    .unwrap();
    for i in 0..20 {
        let body = format!("first-{i}");
        let reply = requester
            .request(
                Message::new("A10-2005", body.clone()),
                Duration::from_secs(10),
            )
            .unwrap();
        assert_eq!(reply.value, body.into_bytes());
    }
    first.close().unwrap();
    // The group's next member starts at the committed offset: had the close not committed
    // the 20 answered requests, they would come to it again (their deadlines are still on).
    let second_client = client(&cluster.nameserver);
    let seen = Arc::new(AtomicUsize::new(0));
    let counted = seen.clone();
    let second = Responder::start(&second_client, "A10-2005", "echo", move |request| {
        counted.fetch_add(1, Ordering::SeqCst);
        request.value.clone()
    })
    .unwrap();
    let reply = requester
        .request(
            Message::new("A10-2005", b"second".to_vec()),
            Duration::from_secs(10),
        )
        .unwrap();
    assert_eq!(reply.value, b"second");
    assert_eq!(
        seen.load(Ordering::SeqCst),
        1,
        "only the new request was handled"
    );
    second.close().unwrap();
}

/// A handler that panics on one request: that request gets no reply (its requester times
/// out), the next ones are answered; the same whether the handler is inline or threaded.
fn a_panicking_handler_costs_only_its_reply(topic: &str, options: ResponderOptions) {
    let cluster = Cluster::start(topic, 1);
    let responder_client = client(&cluster.nameserver);
    let responder = Responder::start_with(&responder_client, options, |request| {
        assert_ne!(request.value, b"boom", "the handler fails on this request");
        request.value.clone()
    })
    .unwrap();
    let requester_client = client(&cluster.nameserver);
    let requester = Requester::new(&requester_client);
    let reply = requester
        .request(
            Message::new(topic, b"before".to_vec()),
            Duration::from_secs(10),
        )
        .unwrap();
    assert_eq!(reply.value, b"before");
    let timeout = Duration::from_millis(500);
    let err = requester
        .request(Message::new(topic, b"boom".to_vec()), timeout)
        .unwrap_err();
    assert!(
        matches!(err, ClientError::Timeout { after } if after == timeout),
        "{err}"
    );
    for i in 0..10 {
        let body = format!("after-{i}");
        let reply = requester
            .request(Message::new(topic, body.clone()), Duration::from_secs(10))
            .unwrap_or_else(|e| panic!("request {body} after the panic: {e}"));
        assert_eq!(reply.value, body.into_bytes());
    }
    responder.close().unwrap();
    assert_eq!(requester_client.pending_replies(), 0);
}

#[test]
fn a_panicking_inline_handler_costs_only_its_reply() {
    a_panicking_handler_costs_only_its_reply(
        "A10-2006",
        ResponderOptions::new("A10-2006", "echo").inline(),
    );
}

#[test]
fn a_panicking_threaded_handler_costs_only_its_reply() {
    a_panicking_handler_costs_only_its_reply("A10-2007", ResponderOptions::new("A10-2007", "echo"));
}
