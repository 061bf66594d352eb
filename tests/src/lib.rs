//! Shared helpers of the end-to-end scenarios in `tests/*_scenario.rs`: real nameservers and
//! brokers on loopback port 0 with data in temporary directories, clients pointed at them,
//! waiting on conditions with deadlines, brokers in child processes for a real `kill -9`, and
//! a raw frame connection for feeding servers bad input.
//!
//! Nothing here sleeps to synchronise: every wait polls a condition until a deadline and
//! fails naming what it waited for, through `defibus-testkit`'s `wait_until`, `wait_for` and
//! `retry_until`, which every test crate shares.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command as Process, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use client::{Admin, Client, ClientConfig, ReceivedMessage, TopicConfig};
use engine::{Broker, BrokerConfig};
use nameserver::{NameserverConfig, NameserverHandle};
use protocol::control::{ErrorReply, FlushMode};
use protocol::frame::{FrameBytes, FrameLimits, Framer};

pub mod areas;
pub mod child_nameserver;
pub mod disk;
pub mod netns;
pub mod replica;

/// The longest any single wait of a scenario may take before it fails. Generous: two cores
/// are shared with other builds, and a debug build is slow.
pub const WAIT: Duration = Duration::from_secs(30);

/// How often brokers started here register with their nameservers, ms: short, so routes
/// appear and change within a fraction of a second.
pub const REGISTER_INTERVAL_MS: u64 = 200;

/// Area of every broker and client started here.
pub const AREA: &str = "A10";

/// Routes test logs through the test harness's capture; idempotent.
pub fn init_logs() {
    let _ = env_logger::builder().is_test(true).try_init();
}

/// Who consumed what: a message's value → the client ids that got it.
pub type Seen = Arc<Mutex<BTreeMap<String, BTreeSet<String>>>>;

/// A consumer handler that records in `seen` that `client_id` got each message (by its value,
/// as UTF-8).
pub fn record_seen(seen: &Seen, client_id: &str) -> impl FnMut(&ReceivedMessage) + Send + 'static {
    let seen = seen.clone();
    let client_id = client_id.to_owned();
    move |message: &ReceivedMessage| {
        let value = String::from_utf8(message.value.clone()).unwrap();
        seen.lock()
            .unwrap()
            .entry(value)
            .or_default()
            .insert(client_id.clone());
    }
}

/// Starts a nameserver on a free loopback port, with `adjust` applied to a configuration
/// that expires brokers after 3 s and sweeps every 200 ms.
pub fn start_nameserver(adjust: impl FnOnce(&mut NameserverConfig)) -> NameserverHandle {
    init_logs();
    let mut config = NameserverConfig {
        listen_addr: "127.0.0.1:0".parse().unwrap(),
        broker_expiry_ms: 3000,
        sweep_interval_ms: 200,
        ..NameserverConfig::default()
    };
    adjust(&mut config);
    nameserver::start(config).expect("nameserver starts")
}

/// A broker configuration for scenarios: `shards` shards on free loopback ports, data in
/// `data_dir`, registering with `nameserver` every [`REGISTER_INTERVAL_MS`], little IO memory
/// (several brokers share one process and two cores).
pub fn broker_config(
    broker_id: &str,
    shards: usize,
    data_dir: &Path,
    nameserver: &NameserverHandle,
) -> BrokerConfig {
    broker_config_for(
        broker_id,
        shards,
        data_dir,
        vec![nameserver.local_addr().to_string()],
    )
}

/// [`broker_config`] for nameservers known by their endpoints (in child processes, say).
pub fn broker_config_for(
    broker_id: &str,
    shards: usize,
    data_dir: &Path,
    nameservers: Vec<String>,
) -> BrokerConfig {
    BrokerConfig {
        broker_id: broker_id.into(),
        cluster: "itests".into(),
        area: AREA.into(),
        listen_address: "127.0.0.1".into(),
        port_base: 0,
        shards,
        data_dir: data_dir.to_path_buf(),
        nameservers,
        register_interval_ms: REGISTER_INTERVAL_MS,
        io_memory_bytes: 512 << 10,
        ..BrokerConfig::default()
    }
}

/// Starts a broker in this process.
pub fn start_broker(config: BrokerConfig) -> Broker {
    init_logs();
    let id = config.broker_id.clone();
    Broker::start(config).unwrap_or_else(|e| panic!("broker {id} starts: {e}"))
}

/// `127.0.0.1:<port>`: the endpoint of a broker shard, for admin calls and raw connections.
pub fn endpoint(port: u16) -> String {
    format!("127.0.0.1:{port}")
}

/// A client of `nameserver` in [`AREA`], with a 2 s request timeout and 200 ms auto commits,
/// adjusted by `adjust`.
pub fn client_with(
    nameserver: &NameserverHandle,
    adjust: impl FnOnce(ClientConfig) -> ClientConfig,
) -> Client {
    let config = ClientConfig::new([nameserver.local_addr().to_string()], AREA)
        .unwrap()
        .with_request_timeout(Duration::from_secs(2))
        .with_auto_commit_interval(Duration::from_millis(200));
    Client::new(adjust(config)).expect("client starts")
}

/// [`client_with`] without adjustments.
pub fn client(nameserver: &NameserverHandle) -> Client {
    client_with(nameserver, |c| c)
}

/// A topic configuration with `queues` queues per broker, all readable and writable.
pub fn topic_config(topic: &str, queues: u32, flush_mode: FlushMode) -> TopicConfig {
    let mut config = TopicConfig::new(&topic.parse().expect("a valid topic name"));
    config.queue_count = queues;
    config.read_queue_count = queues;
    config.write_queue_count = queues;
    config.flush_mode = flush_mode;
    config.max_queue_depth = 1_000_000;
    config
}

/// Creates the topic `config` describes on every broker in `brokers` (any shard endpoint of
/// each), then waits until the nameserver routes every queue of every one of them.
pub fn create_topic(admin: &Admin, brokers: &[String], config: &TopicConfig) {
    for broker in brokers {
        admin
            .create_topic(broker, config)
            .unwrap_or_else(|e| panic!("create {} on {broker}: {e}", config.topic));
    }
    let want = config.queue_count as usize * brokers.len();
    testkit::wait_until(
        &format!("a route to all {want} queues of {}", config.topic),
        WAIT,
        || {
            admin
                .topic_route(&config.topic)
                .is_ok_and(|r| r.queues.len() == want)
        },
    );
}

/// A nameserver and in-process brokers, each with its own data directory under one
/// temporary directory, and a client for admin calls.
pub struct Cluster {
    /// The nameserver every broker registers with.
    pub nameserver: NameserverHandle,
    /// The brokers, `broker-0`, `broker-1`, …
    pub brokers: Vec<Broker>,
    /// The admin's client; also usable by scenarios for anything else.
    pub admin_client: Client,
    /// Holds every broker's data until the cluster is dropped.
    pub dir: tempfile::TempDir,
}

impl Cluster {
    /// Starts a nameserver and `brokers` brokers of `shards` shards each.
    pub fn start(brokers: usize, shards: usize) -> Self {
        Self::start_with(brokers, shards, |_| {})
    }

    /// Like [`Self::start`], with `adjust` applied to each broker's configuration.
    pub fn start_with(brokers: usize, shards: usize, adjust: impl Fn(&mut BrokerConfig)) -> Self {
        let nameserver = start_nameserver(|_| {});
        let dir = tempfile::tempdir().expect("a temporary directory");
        let brokers = (0..brokers)
            .map(|i| {
                let id = format!("broker-{i}");
                let mut config = broker_config(&id, shards, &dir.path().join(&id), &nameserver);
                adjust(&mut config);
                start_broker(config)
            })
            .collect();
        let admin_client = client(&nameserver);
        Self {
            nameserver,
            brokers,
            admin_client,
            dir,
        }
    }

    /// An admin over [`Self::admin_client`].
    pub fn admin(&self) -> Admin {
        Admin::new(&self.admin_client)
    }

    /// The first shard's endpoint of every broker, for admin calls.
    pub fn endpoints(&self) -> Vec<String> {
        self.brokers
            .iter()
            .map(|b| endpoint(b.shard_ports()[0]))
            .collect()
    }

    /// Creates `topic` with `queues` queues on every broker and waits until it is routed.
    pub fn create_topic(&self, topic: &str, queues: u32, flush_mode: FlushMode) {
        create_topic(
            &self.admin(),
            &self.endpoints(),
            &topic_config(topic, queues, flush_mode),
        );
    }

    /// For every queue of `topic` on every broker, the member of `group` it is assigned to
    /// (empty when none), keyed by (broker id, queue id).
    pub fn assignment(&self, topic: &str, group: &str) -> BTreeMap<(String, u32), String> {
        assignment_on(&self.admin(), &self.endpoints(), topic, group)
    }

    /// Waits until every queue of `topic` (`queues_total` across brokers) is assigned to one
    /// of `members` and each of them holds at least one queue: the group has settled, so no
    /// rebalance will move a queue while the scenario runs. The statistics show a new owner at
    /// once; pushes of a queue it took from a live member may still wait for the revoke pause.
    pub fn wait_for_assignment(
        &self,
        topic: &str,
        group: &str,
        queues_total: usize,
        members: &[&str],
    ) {
        wait_for_assignment_on(
            &self.admin(),
            &self.endpoints(),
            &format!("settled on members {members:?}"),
            topic,
            group,
            |last| {
                last.len() == queues_total
                    && last.values().all(|m| members.contains(&m.as_str()))
                    && members.iter().all(|m| last.values().any(|v| v == m))
            },
        );
    }
}

/// For every queue of `topic` on the brokers behind `endpoints`, the member of `group` it is
/// assigned to (empty when none), keyed by (broker id, queue id), from the brokers' statistics.
pub fn assignment_on(
    admin: &Admin,
    endpoints: &[String],
    topic: &str,
    group: &str,
) -> BTreeMap<(String, u32), String> {
    let mut assignment = BTreeMap::new();
    for endpoint in endpoints {
        let stats = admin
            .stats(endpoint)
            .unwrap_or_else(|e| panic!("stats of {endpoint}: {e}"));
        for queue in stats.queues.iter().filter(|q| q.topic == topic) {
            let member = queue
                .groups
                .iter()
                .find(|g| g.group == group)
                .map(|g| g.client_id.clone())
                .unwrap_or_default();
            assignment.insert((stats.broker_id.clone(), queue.queue_id), member);
        }
    }
    assignment
}

/// Polls [`assignment_on`] until `settled` holds of it; panics naming `what` with the last
/// assignment after [`WAIT`].
pub fn wait_for_assignment_on(
    admin: &Admin,
    endpoints: &[String],
    what: &str,
    topic: &str,
    group: &str,
    mut settled: impl FnMut(&BTreeMap<(String, u32), String>) -> bool,
) {
    testkit::retry_until(
        &format!("group {group} of {topic} assigned {what}"),
        WAIT,
        || {
            let last = assignment_on(admin, endpoints, topic, group);
            if settled(&last) {
                Ok(())
            } else {
                Err(format!("last assignment: {last:?}"))
            }
        },
    );
}

/// The environment variable carrying a child broker's configuration file.
const CHILD_BROKER_CONFIG_ENV: &str = "DEFIBUS_TESTS_CHILD_BROKER_CONFIG";

/// A broker running in a child process, so that it can be killed with SIGKILL: no flush, no
/// unregistration, no clean close of anything.
///
/// The child is this very test binary re-run on one test, the scenario's entry point, which
/// calls [`child_broker_main`]. Cargo only builds binaries (and sets `CARGO_BIN_EXE_*`) for
/// the package under test, so `defibus-broker` is not guaranteed to exist here; the test
/// binary always does, and `child_broker_main` runs the same `engine::cli::cli_main` as
/// `defibus-broker`'s `main`, from a configuration file as an operator would.
///
/// Dropping it kills the child.
pub struct ChildBroker {
    child: Child,
    ports: Vec<u16>,
}

impl ChildBroker {
    /// Writes `config` to `<data_dir>/../<broker_id>.toml`, starts the child through the test
    /// `entry_test` of the current test binary, and waits for the ports it prints.
    ///
    /// The entry test must be `#[ignore]`d and call [`child_broker_main`]; the child runs it
    /// with `--ignored --exact`.
    pub fn spawn(entry_test: &str, config: &BrokerConfig) -> Self {
        Self::spawn_in(None, entry_test, config)
    }

    /// [`Self::spawn`] inside network namespace `netns` (through `ip netns exec`, which
    /// execs the test binary in place, so signals reach the broker itself).
    pub fn spawn_in(netns: Option<&str>, entry_test: &str, config: &BrokerConfig) -> Self {
        let toml = broker_toml(config);
        let parsed = BrokerConfig::from_toml(&toml).expect("the generated TOML parses");
        assert_eq!(
            &parsed, config,
            "broker_toml carries only some fields; extend it for this configuration"
        );
        let parent = config.data_dir.parent().expect("data_dir has a parent");
        let config_path = parent.join(format!("{}.toml", config.broker_id));
        std::fs::write(&config_path, toml).expect("write the child's config");
        let mut child = child_process(netns, entry_test)
            .args(["--test-threads", "1"])
            .env(CHILD_BROKER_CONFIG_ENV, &config_path)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn the child broker");
        let shards = config.shard_count();
        let ports = read_ports(&mut child, shards);
        Self { child, ports }
    }

    /// The port of each shard, by shard id.
    pub fn shard_ports(&self) -> &[u16] {
        &self.ports
    }

    /// Stops the child with SIGSTOP: a stalled broker. The kernel still accepts connections
    /// on its ports and keeps established ones open, but nothing is answered, until
    /// [`Self::resume`].
    pub fn pause(&self) {
        self.signal("STOP");
    }

    /// Lets a paused child run again (SIGCONT).
    pub fn resume(&self) {
        self.signal("CONT");
    }

    fn signal(&self, signal: &str) {
        let status = Process::new("kill")
            .args([&format!("-{signal}"), &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(
            status.success(),
            "kill -{signal} of the child broker failed"
        );
    }

    /// Sends SIGKILL and reaps the child.
    pub fn kill_9(mut self) {
        self.child.kill().expect("SIGKILL the child broker");
        self.child.wait().expect("reap the child broker");
    }
}

impl Drop for ChildBroker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// This test binary, run on its test `entry_test` (an `#[ignore]`d entry point), inside
/// `netns` if given.
pub(crate) fn child_process(netns: Option<&str>, entry_test: &str) -> Process {
    let exe = std::env::current_exe().expect("the test binary's path");
    let mut command = match netns {
        Some(ns) => {
            let mut ip = Process::new("ip");
            ip.args(["netns", "exec", ns]).arg(exe);
            ip
        }
        None => Process::new(exe),
    };
    command.args([entry_test, "--exact", "--ignored", "--nocapture"]);
    command
}

/// Reads the child's stdout until every shard's `shard <id> port <port>` line was seen
/// (the test harness prints its own text around them, on the same line too), failing after
/// [`WAIT`]. A thread keeps draining stdout afterwards, so the child never blocks on a full
/// pipe.
fn read_ports(child: &mut Child, shards: usize) -> Vec<u16> {
    let stdout = child.stdout.take().expect("piped stdout");
    let (lines_tx, lines_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            // Once the ports are known nobody listens: keep draining regardless.
            let _ = lines_tx.send(line);
        }
    });
    let deadline = Instant::now() + WAIT;
    let mut ports = vec![None; shards];
    let mut seen = Vec::new();
    while ports.iter().any(Option::is_none) {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = match lines_rx.recv_timeout(left) {
            Ok(line) => line,
            Err(e) => panic!(
                "the child broker printed no port for every one of its {shards} shards \
                 ({e}); its output: {seen:?}"
            ),
        };
        let parsed = line
            .rfind("shard ")
            .and_then(|at| line[at + "shard ".len()..].split_once(" port "))
            .and_then(|(id, port)| Some((id.parse::<usize>().ok()?, port.trim().parse().ok()?)));
        if let Some((id, port)) = parsed {
            assert!(
                id < shards,
                "port line for shard {id} of {shards}: {line:?}"
            );
            ports[id] = Some(port);
        }
        seen.push(line);
    }
    ports.into_iter().map(Option::unwrap).collect()
}

/// The TOML of the fields of `config` the scenarios set. [`ChildBroker::spawn`] parses it
/// back and compares, so a field set here but not carried fails loudly.
fn broker_toml(config: &BrokerConfig) -> String {
    let nameservers: Vec<String> = config
        .nameservers
        .iter()
        .map(|n| format!("{n:?}"))
        .collect();
    format!(
        "broker_id = {:?}\ncluster = {:?}\narea = {:?}\nlisten_address = {:?}\nport_base = {}\n\
         shards = {}\ndata_dir = {:?}\nnameservers = [{}]\nregister_interval_ms = {}\n\
         consumer_timeout_ms = {}\nrevoke_timeout_ms = {}\nio_memory_bytes = {}\n",
        config.broker_id,
        config.cluster,
        config.area,
        config.listen_address,
        config.port_base,
        config.shards,
        config.data_dir.display().to_string(),
        nameservers.join(", "),
        config.register_interval_ms,
        config.consumer_timeout_ms,
        config.revoke_timeout_ms,
        config.io_memory_bytes,
    )
}

/// The body of a scenario's child-broker entry test: runs the broker whose configuration
/// file [`ChildBroker::spawn`] named, printing its ports, until killed. Does nothing when the
/// test is run by hand without that environment.
pub fn child_broker_main() {
    let Some(config) = std::env::var_os(CHILD_BROKER_CONFIG_ENV).map(PathBuf::from) else {
        eprintln!("not started by ChildBroker::spawn: nothing to do");
        return;
    };
    init_logs();
    // The parent holds our stdin open; if it dies without killing us, end with it.
    std::thread::spawn(|| {
        let _ = std::io::copy(&mut std::io::stdin(), &mut std::io::sink());
        eprintln!("child broker: the test process is gone; exiting");
        std::process::exit(1);
    });
    let args = engine::cli::BrokerArgs {
        config: Some(config),
        broker_id: None,
        cluster: None,
        area: None,
        listen: None,
        port_base: None,
        metrics_address: None,
        shards: None,
        data_dir: None,
        nameservers: Vec::new(),
        min_free_percent: None,
        trace_pushes_remembered: None,
        trace_scan_bytes_max: None,
        retry_schedule_ms: None,
        max_redeliveries: None,
        held_check_interval_ms: None,
        held_checks_max: None,
        secure: false,
        token_file: None,
        audit_log: None,
        // Children in a test's network namespace listen on its private 10.77.x addresses.
        insecure: true,
        tls_cert: None,
        tls_key: None,
        tls_ca: None,
    };
    engine::cli::cli_main(&args).expect("the child broker runs");
}

/// A raw TCP connection speaking frames, for sending servers what no client would.
pub struct RawConnection {
    stream: TcpStream,
    buf: BytesMut,
}

impl RawConnection {
    /// Connects to `127.0.0.1:<port>`.
    pub fn connect(port: u16) -> Self {
        let stream = TcpStream::connect(("127.0.0.1", port))
            .unwrap_or_else(|e| panic!("connect to port {port}: {e}"));
        stream.set_nodelay(true).unwrap();
        Self {
            stream,
            buf: BytesMut::new(),
        }
    }

    /// Writes `bytes` as they are.
    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("write to the server");
    }

    /// Closes the sending half: the server sees the end of the stream.
    pub fn shutdown_write(&mut self) {
        self.stream
            .shutdown(Shutdown::Write)
            .expect("shutdown write");
    }

    /// The next frame; `None` when the server closed the connection first. Panics when
    /// nothing happens within [`WAIT`].
    pub fn read_frame(&mut self) -> Option<FrameBytes> {
        let framer = Framer::new(FrameLimits::UNLIMITED);
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(frame) = framer
                .split_frame(&mut self.buf)
                .expect("a well-formed frame from the server")
            {
                return Some(frame);
            }
            let left = deadline
                .checked_duration_since(Instant::now())
                .expect("the server answers or closes within WAIT");
            self.stream
                .set_read_timeout(Some(left.max(Duration::from_millis(1))))
                .unwrap();
            let mut chunk = [0u8; 16 << 10];
            match self.stream.read(&mut chunk) {
                Ok(0) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return None,
                Err(e) => panic!("reading from the server: {e}"),
            }
        }
    }

    /// Reads the error answer to bad input and asserts the connection then closes; returns
    /// the answer's header status and `ErrorReply`.
    pub fn expect_error_then_close(&mut self, what: &str) -> (u16, u64, ErrorReply) {
        let frame = self
            .read_frame()
            .unwrap_or_else(|| panic!("{what}: closed without an error answer"));
        assert_ne!(
            frame.header.status, 0,
            "{what}: answered with status Ok: {:?}",
            frame.header
        );
        let reply: ErrorReply = protocol::control::decode(&frame.body)
            .unwrap_or_else(|e| panic!("{what}: the answer's body is no ErrorReply: {e}"));
        if let Some(frame) = self.read_frame() {
            panic!(
                "{what}: expected the connection to close after the error, got {:?}",
                frame.header
            );
        }
        (frame.header.status, frame.header.request_id, reply)
    }
}
