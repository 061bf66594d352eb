//! Client overhead: request-reply through the Rust client (`rr`, closed loop) beside the same
//! exchange written on the `protocol` crate alone ([`crate::baselines::protocol_rr`]), each
//! on its own topic of the same broker, in one run. Their ratio is what the client's threads,
//! pools, callbacks and copies cost on top of the wire.
//!
//! The raw responder answers on the thread that read the push, so the client's echo
//! responder is an inline one (`ResponderOptions::inline`): the same exchange, not the
//! default threaded responder's extra handoff, which `rr` measures.

use crate::baselines::protocol_rr;
use crate::cli::{GlobalArgs, OverheadArgs, RrArgs, defaults};
use crate::report::{Comparison, Measured};
use crate::target::Target;

pub const NAME: &str = "client-overhead";

/// Measures the raw-protocol exchange, then the client's.
pub fn run(
    target: &Target,
    global: &GlobalArgs,
    args: &OverheadArgs,
) -> anyhow::Result<Comparison> {
    anyhow::ensure!(args.requesters > 0, "--requesters must be at least 1");
    let raw = raw(target, global, args)?;
    let client_rr = super::rr::run(target, global, &rr_args(args), None)?;
    Ok(compare(args, client_rr.ours, raw))
}

/// The closed-loop `rr` these settings stand for.
pub fn rr_args(args: &OverheadArgs) -> RrArgs {
    let mut rr = defaults::<RrArgs>();
    rr.message_bytes = args.message_bytes;
    rr.requesters = args.requesters;
    rr.queues = args.queues;
    rr.flush = args.flush;
    rr.duration = args.duration;
    rr.timeout = args.timeout;
    rr.inline_responder = true;
    rr
}

fn raw(
    target: &Target,
    global: &GlobalArgs,
    args: &OverheadArgs,
) -> anyhow::Result<crate::report::Baseline> {
    let topic = target.create_topic(global, "overhead-raw", args.queues, args.flush)?;
    protocol_rr::run(
        target,
        global,
        global.window(args.duration),
        &protocol_rr::Setup {
            topic: &topic,
            requesters: args.requesters,
            message_bytes: args.message_bytes,
            timeout: args.timeout,
        },
    )
}

fn compare(args: &OverheadArgs, ours: Measured, raw: crate::report::Baseline) -> Comparison {
    Comparison {
        workload: NAME.into(),
        setup: format!(
            "Rust client rr ({} requester(s), {} B echo through an inline client Responder, \
             {} queue(s), {} flush) vs the same exchange in raw frames",
            args.requesters,
            args.message_bytes,
            args.queues,
            args.flush.name()
        ),
        message_bytes: args.message_bytes,
        concurrency: args.requesters,
        ours,
        baseline: Some(raw),
    }
}
