//! Request-reply round trips, closed loop: `requesters` threads, each its own client, send a
//! request and wait for the reply of an echo Responder (its own client) before the next.

use anyhow::Context;
use client::{Message, Requester, Responder};

use crate::cli::{GlobalArgs, RrArgs};
use crate::measure;
use crate::report::{Baseline, Comparison, Measured};
use crate::target::Target;

pub const NAME: &str = "rr";
/// The echo responders' consumer group.
const RESPONDER_GROUP: &str = "bench-echo";

pub fn run(
    target: &Target,
    global: &GlobalArgs,
    args: &RrArgs,
    baseline: Option<Baseline>,
) -> anyhow::Result<Comparison> {
    let topic = target.create_topic(global, NAME, args.queues, args.flush)?;
    let responder_client = target.client(global, |c| c)?;
    let responder = Responder::start(&responder_client, &topic, RESPONDER_GROUP, |request| {
        request.value.clone()
    })
    .context("starting the echo responder")?;
    let message_bytes = args.message_bytes;
    let latency = measure::run_latency_window(
        NAME,
        global.window(args.duration),
        args.requesters,
        |_, shared| {
            let client = target.client(global, |c| c)?;
            let requester = Requester::new(&client);
            let payload = vec![0xA5u8; message_bytes];
            let histogram = measure::closed_loop(shared, message_bytes as u64, || {
                let reply = requester
                    .request(Message::new(topic.as_str(), payload.clone()), args.timeout)?;
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
    );
    responder.close().context("closing the echo responder")?;
    responder_client.close();
    Ok(Comparison {
        workload: NAME.into(),
        setup: format!(
            "{} requester(s), {} B echo, {} queue(s), {} flush, one request at a time each",
            args.requesters,
            args.message_bytes,
            args.queues,
            args.flush.name()
        ),
        message_bytes,
        concurrency: args.requesters,
        ours: Measured::Latency(latency?),
        baseline,
    })
}
