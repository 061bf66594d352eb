//! `defibus request`: send one request to a service topic (or a service, by id) and print the
//! reply's value.

use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use client::{ClientError, Requester};

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
    let target = &args.message.target;
    let message = args.message.message(args.value.as_str());
    let timeout = Duration::from_millis(args.timeout_ms);
    let reply = match &target.service {
        None => requester.request(message, timeout),
        Some(service) => requester.request_service(service.as_str(), message, timeout),
    };
    let flag = match (&target.topic, &target.service) {
        (Some(topic), _) => format!("--topic {topic}"),
        (None, Some(service)) => format!("--service {service}"),
        (None, None) => String::new(),
    };
    let reply = reply.map_err(|e| {
        // Only a timeout means nobody answered; anything else failed before that.
        let context = if matches!(e, ClientError::Timeout { .. }) {
            format!("no reply from {target} (is a responder running? `defibus respond {flag} --group <group> --echo`)")
        } else {
            format!("request to {target} failed")
        };
        anyhow::Error::new(e).context(context)
    })?;
    println!("{}", super::shared::printable(&reply.value));
    Ok(ExitCode::SUCCESS)
}
