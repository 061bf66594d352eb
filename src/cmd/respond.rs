//! `defibus respond`: answer a service topic's requests (or, by service id, those of the
//! service's nearest deployment) with a built-in handler until
//! SIGINT/SIGTERM; a stand-in service for demos and smoke tests.

use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::Context;
use clap::{ArgGroup, Args};
use client::{ReceivedMessage, Responder};
use protocol::names::GroupName;

use super::shared::{BusArgs, TargetArgs, message_line, stop_on_signal};

/// How often the wait for a signal looks at the stop flag.
const STOP_POLL: Duration = Duration::from_millis(100);

#[derive(Args, Debug)]
#[command(group(ArgGroup::new("handler").required(true).args(["echo", "upper"])))]
pub struct RespondArgs {
    #[command(flatten)]
    bus: BusArgs,
    #[command(flatten)]
    target: TargetArgs,
    /// The responder group: each request goes to one member of it.
    #[arg(long)]
    group: GroupName,
    /// Reply with the request's value unchanged.
    #[arg(long)]
    echo: bool,
    /// Reply with the request's value in upper case.
    #[arg(long)]
    upper: bool,
}

pub fn run(args: RespondArgs) -> anyhow::Result<ExitCode> {
    let stop = stop_on_signal()?;
    let client = args.bus.connect()?;
    let upper = args.upper;
    let handler = move |request: &ReceivedMessage| {
        let reply = if upper {
            request.value.to_ascii_uppercase()
        } else {
            request.value.clone()
        };
        println!(
            "{} -> {}",
            message_line(request),
            super::shared::printable(&reply)
        );
        reply
    };
    let topic = args.target.topic(&client)?;
    let responder = Responder::start(&client, &topic, &args.group.to_string(), handler)
        .with_context(|| format!("subscribing to {topic} as group {}", args.group))?;
    println!(
        "responding to {topic} as group {}; stop with Ctrl-C",
        args.group
    );
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(STOP_POLL);
    }
    log::info!("signal received: closing");
    responder.close().context("closing the responder")?;
    Ok(ExitCode::SUCCESS)
}
