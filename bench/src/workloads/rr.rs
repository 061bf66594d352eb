//! Request-reply round trips against an echo Responder (its own client), from `requesters`
//! threads, each its own client:
//!
//! - closed loop (`rr`): each requester sends a request and waits for the reply before the
//!   next; the DESIGN §8 figures;
//! - open loop (`rr-open`, `--rate`): requests start on a fixed schedule whatever the replies
//!   do, each timed from its intended start (corrected for coordinated omission).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::Context;
use client::{Message, Requester, Responder, ResponderOptions};

use crate::cli::{GlobalArgs, RrArgs};
use crate::latency::{Latency, new_histogram, record_ns};
use crate::measure::{self, InFlight, thousands};
use crate::report::{Baseline, Comparison, Measured};
use crate::target::Target;

pub const NAME: &str = "rr";
pub const NAME_OPEN: &str = "rr-open";
/// The echo responders' consumer group.
const RESPONDER_GROUP: &str = "bench-echo";
/// How much longer than the request timeout the open loop waits for its last replies (the
/// timer that ends a wait fires at the deadline, not before).
const DRAIN_SLACK: Duration = Duration::from_secs(1);

/// The name goals and the report use for this run.
pub fn name(args: &RrArgs) -> &'static str {
    if args.rate.is_some() { NAME_OPEN } else { NAME }
}

pub fn run(
    target: &Target,
    global: &GlobalArgs,
    args: &RrArgs,
    baseline: Option<Baseline>,
) -> anyhow::Result<Comparison> {
    let name = name(args);
    anyhow::ensure!(args.requesters > 0, "--requesters must be at least 1");
    let topic = target.create_topic(global, name, args.queues, args.flush)?;
    let responder_client = target.client(global, |c| c)?;
    let mut options = ResponderOptions::new(topic.as_str(), RESPONDER_GROUP);
    if args.inline_responder {
        options = options.inline();
    }
    let responder =
        Responder::start_with(&responder_client, options, |request| request.value.clone())
            .context("starting the echo responder")?;
    let latency = match args.rate {
        None => closed_loop(target, global, args, &topic),
        Some(rate) => open_loop(target, global, args, &topic, rate),
    };
    responder.close().context("closing the echo responder")?;
    responder_client.close();
    let (pattern, baseline) = match args.rate {
        None => ("one request at a time each".to_owned(), baseline),
        // A closed-loop baseline times something else: an open loop stands alone.
        Some(rate) => (
            format!(
                "open loop at {} req/s in total, timed from each request's intended start",
                thousands(rate)
            ),
            None,
        ),
    };
    let echo = if args.inline_responder {
        "echo (inline responder)"
    } else {
        "echo"
    };
    Ok(Comparison {
        workload: name.into(),
        setup: format!(
            "{} requester(s), {} B {echo}, {} queue(s), {} flush, {pattern}",
            args.requesters,
            args.message_bytes,
            args.queues,
            args.flush.name()
        ),
        message_bytes: args.message_bytes,
        concurrency: args.requesters,
        ours: Measured::Latency(latency?),
        baseline,
    })
}

fn closed_loop(
    target: &Target,
    global: &GlobalArgs,
    args: &RrArgs,
    topic: &str,
) -> anyhow::Result<Latency> {
    let message_bytes = args.message_bytes;
    measure::run_latency_window(
        NAME,
        global.window(args.duration),
        args.requesters,
        |_, shared| {
            let client = target.client(global, |c| c)?;
            let requester = Requester::new(&client);
            let payload = vec![0xA5u8; message_bytes];
            let histogram = measure::closed_loop(shared, message_bytes as u64, || {
                let reply =
                    requester.request(Message::new(topic, payload.clone()), args.timeout)?;
                anyhow::ensure!(
                    reply.value.len() == message_bytes,
                    "a reply of {} B to a request of {message_bytes} B",
                    reply.value.len()
                );
                Ok(())
            });
            client.close();
            histogram
        },
    )
}

/// Requests on a schedule through the client's callback form; a reply (or the timeout that
/// ends the wait) is timed from the request's intended start. Failures are counted, not
/// fatal: under overload they are part of what is measured.
fn open_loop(
    target: &Target,
    global: &GlobalArgs,
    args: &RrArgs,
    topic: &str,
    rate: f64,
) -> anyhow::Result<Latency> {
    let message_bytes = args.message_bytes as u64;
    let per_requester = rate / args.requesters.max(1) as f64;
    measure::run_latency_window(
        NAME_OPEN,
        global.window(args.duration),
        args.requesters,
        |_, shared| {
            let client = target.client(global, |c| c)?;
            let requester = Requester::new(&client);
            let payload = vec![0xA5u8; args.message_bytes];
            let histogram = Arc::new(Mutex::new(new_histogram()));
            let in_flight = Arc::new(InFlight::default());
            // Every request is awaited at the end, not only the window's: closing the client
            // under a reply on its way would only make the broker drop it.
            measure::open_loop(shared, per_requester, |intended, in_window| {
                in_flight.add();
                let (histogram, in_flight) = (histogram.clone(), in_flight.clone());
                let meter = shared.meter.clone();
                // A send that fails may or may not have run the callback already (the client
                // ends the wait when it can), so each request completes at most once.
                let completed = Arc::new(AtomicBool::new(false));
                let done = move |ok: bool| {
                    if completed.swap(true, Ordering::AcqRel) {
                        return;
                    }
                    if ok {
                        meter.record(1, message_bytes);
                    } else {
                        meter.error();
                    }
                    if in_window {
                        let ns = intended.elapsed().as_nanos() as u64;
                        record_ns(
                            &mut histogram.lock().unwrap_or_else(PoisonError::into_inner),
                            ns,
                        );
                    }
                    in_flight.done();
                };
                let message = Message::new(topic, payload.clone());
                let done_on_error = done.clone();
                if let Err(e) = requester.request_with_callback(message, args.timeout, move |r| {
                    if let Err(e) = &r {
                        log::debug!("request failed: {e}");
                    }
                    done(r.is_ok());
                }) {
                    log::debug!("request not sent: {e}");
                    done_on_error(false);
                }
                Ok(())
            })?;
            let missing = in_flight.wait_drained(args.timeout + DRAIN_SLACK);
            client.close();
            anyhow::ensure!(
                missing == 0,
                "{missing} requests neither answered nor timed out after their deadline"
            );
            let histogram = histogram
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone();
            Ok(histogram)
        },
    )
}
