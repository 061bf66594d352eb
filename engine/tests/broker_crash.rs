//! The `defibus-broker` binary: acknowledged sync records and commits survive `kill -9`, and
//! SIGTERM shuts it down cleanly.

mod broker_common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command as Process, Stdio};

use broker_common::*;
use protocol::control::{FlushMode, SubscriptionMode};

const TOPIC: &str = "A10-6001";

/// Starts the binary on ephemeral ports and reads the port of its single shard.
fn spawn_broker(dir: &std::path::Path) -> (Child, u16) {
    let mut child = Process::new(env!("CARGO_BIN_EXE_defibus-broker"))
        .args([
            "--port-base",
            "0",
            "--shards",
            "1",
            "--listen",
            "127.0.0.1",
            "--data-dir",
        ])
        .arg(dir)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn defibus-broker");
    let stdout = child.stdout.take().unwrap();
    let line = BufReader::new(stdout)
        .lines()
        .next()
        .expect("a port line")
        .unwrap();
    let port = line
        .strip_prefix("shard 0 port ")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("unexpected line {line:?}"));
    (child, port)
}

#[test]
fn acknowledged_sync_records_and_commits_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, port) = spawn_broker(dir.path());
    let mut client = Client::connect(port, "c1");
    client.create_topic(&topic_config(TOPIC, 1, FlushMode::Sync));
    for i in 0..20 {
        client.produce(TOPIC, 0, &[format!("r{i}").as_bytes()]);
    }
    let sub = client.subscribe(TOPIC, "g", SubscriptionMode::Clustering, 1000);
    assert_eq!(client.collect(20).len(), 20);
    client.commit(sub.subscription_id, 0, 15);
    child.kill().unwrap(); // SIGKILL: no flush, no clean close.
    child.wait().unwrap();
    drop(client);

    let (mut child, port) = spawn_broker(dir.path());
    let mut client = Client::connect(port, "c1");
    client.subscribe(TOPIC, "g", SubscriptionMode::Clustering, 1000);
    let got = client.collect(5);
    let values: Vec<String> = got
        .iter()
        .map(|g| String::from_utf8(g.2.clone()).unwrap())
        .collect();
    assert_eq!(values, ["r15", "r16", "r17", "r18", "r19"]);
    let ack = client.produce(TOPIC, 0, &[b"after"]);
    assert_eq!(ack.base_offset, 20);
    drop(client);

    #[allow(unsafe_code)]
    // SAFETY: kill(2) on our own child's pid.
    let sent = unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    assert_eq!(sent, 0);
    let status = child.wait().unwrap();
    assert!(status.success(), "clean exit after SIGTERM: {status}");
}
