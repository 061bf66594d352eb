//! `defibus request`: send one request to a service topic and print the reply's value.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use client::Requester;

use super::shared::{BusArgs, MessageArgs};

#[derive(Args, Debug)]
pub struct RequestArgs {
    #[command(flatten)]
    bus: BusArgs,
    #[command(flatten)]
    message: MessageArgs,
    /// How long to wait for the reply; also the request's deadline on the broker, past which
    /// no responder gets it. No reply in time exits with code 2.
    #[arg(long, value_name = "MS", default_value_t = 3000)]
    timeout_ms: u64,
    /// The request value (text).
    #[arg(value_name = "MESSAGE")]
    value: String,
}

pub fn run(args: RequestArgs) -> anyhow::Result<ExitCode> {
    let client = args.bus.connect()?;
    let requester = Requester::new(&client);
    let topic = &args.message.topic;
    let reply = requester
        .request(
            args.message.message(args.value.as_str()),
            Duration::from_millis(args.timeout_ms),
        )
        .with_context(|| {
            format!("no reply from {topic} (is a responder running? `defibus respond --topic {topic} --group <group> --echo`)")
        })?;
    println!("{}", String::from_utf8_lossy(&reply.value));
    Ok(ExitCode::SUCCESS)
}
