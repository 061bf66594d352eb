//! TLS beside plaintext, in one run: request-reply round trips and produce throughput on an
//! embedded cluster whose brokers speak mutual TLS, each with the same workload on the
//! plaintext cluster as its baseline (ratio = TLS / plaintext).
//!
//! The TLS cluster is a second embedded nameserver + broker, started with certificates from
//! `tls::dev` (a fresh CA, a loopback server certificate and a client certificate for
//! `bench`) and stopped after its runs; the plaintext runs use the target every workload
//! uses. The negotiated cipher suite is reported with the figures: rustls picks an AES-GCM
//! suite when the CPU has AES instructions, else ChaCha20-Poly1305.
//!
//! The flags live here rather than in `cli.rs`, so this workload is one file plus its wiring.

use std::time::Duration;

use anyhow::Context;
use clap::Args;
use client::{Message, Producer};

use crate::cli::{
    DURATION_DEFAULT, Flush, GlobalArgs, ProduceArgs, RrArgs, defaults, parse_duration,
};
use crate::report::{Baseline, Comparison};
use crate::target::{TLS_CLIENT_PRINCIPAL, Target};
use crate::workloads::{produce, rr};

#[derive(Args, Debug, Clone)]
pub struct TlsArgs {
    /// Payload bytes of each request-reply round trip.
    #[arg(long, default_value_t = 256)]
    pub rr_message_bytes: usize,
    /// Payload bytes of each produced record.
    #[arg(long, default_value_t = 1024)]
    pub message_bytes: usize,
    /// Producers of the throughput runs, each its own client.
    #[arg(long, default_value_t = 1)]
    pub producers: usize,
    /// Measured time of each of the four runs, after the warm-up.
    #[arg(long, default_value = DURATION_DEFAULT, value_parser = parse_duration)]
    pub duration: Duration,
}

/// Runs rr and produce on `plain` and on a TLS twin of it; returns the TLS figures, each
/// with its plaintext figure as the baseline.
pub fn run(plain: &Target, global: &GlobalArgs, args: &TlsArgs) -> anyhow::Result<Vec<Comparison>> {
    let mut rr_args = defaults::<RrArgs>();
    rr_args.message_bytes = args.rr_message_bytes;
    rr_args.duration = args.duration;
    let mut produce_args = defaults::<ProduceArgs>();
    produce_args.message_bytes = args.message_bytes;
    produce_args.producers = args.producers;
    produce_args.flush = Flush::Async;
    produce_args.duration = args.duration;

    let plain_rr = rr::run(plain, global, &rr_args, None)?;
    let plain_produce = produce::run(plain, global, &produce_args, None)?;

    let certs_dir = tempfile::Builder::new()
        .prefix("defibus-bench-tls-")
        .tempdir()
        .context("creating a directory for the TLS certificates")?;
    let certs = tls::dev::generate(certs_dir.path(), &[TLS_CLIENT_PRINCIPAL])
        .context("making development certificates")?;
    // Its own data directory: `--data-dir` belongs to the plaintext cluster.
    let tls_global = GlobalArgs {
        data_dir: None,
        ..global.clone()
    };
    let secured = Target::start_tls(&tls_global, &certs)?;
    let suite = cipher_suite(&secured, &tls_global)?;
    let tls_rr = rr::run(&secured, &tls_global, &rr_args, None);
    let tls_produce = produce::run(&secured, &tls_global, &produce_args, None);
    secured.shutdown()?;
    let (tls_rr, tls_produce) = (tls_rr?, tls_produce?);

    let beside = |workload: &str, tls: Comparison, plain: Comparison| Comparison {
        workload: workload.into(),
        setup: format!("{}; mutual TLS 1.3, {suite}", tls.setup),
        message_bytes: tls.message_bytes,
        concurrency: tls.concurrency,
        ours: tls.ours,
        baseline: Some(Baseline {
            name: format!("plaintext-{}", plain.workload),
            setup: plain.setup,
            measured: plain.ours,
        }),
    };
    Ok(vec![
        beside("tls-rr", tls_rr, plain_rr),
        beside("tls-produce", tls_produce, plain_produce),
    ])
}

/// The cipher suite a client of `target` negotiates with its broker.
fn cipher_suite(target: &Target, global: &GlobalArgs) -> anyhow::Result<String> {
    let topic = target.create_topic(global, "tls-handshake", 1, Flush::Async)?;
    let client = target.client(global, |c| c)?;
    Producer::new(&client)
        .context("starting a producer")?
        .send(Message::new(topic.as_str(), "hello"))
        .context("a first produce over TLS")?;
    let suite = client
        .tls_cipher_suite()
        .context("the client reports no TLS connection")?;
    client.close();
    Ok(suite)
}
