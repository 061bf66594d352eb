//! A nameserver (and the controller it embeds) in a child process, so that a scenario can
//! `kill -9` it or run it inside a network namespace. Like [`crate::ChildBroker`], the child
//! is this test binary re-run on an `#[ignore]`d entry test, which calls
//! [`child_nameserver_main`].

use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Stdio};
use std::time::Duration;

use nameserver::NameserverConfig;
use testkit::wait_until;

use crate::{WAIT, child_process};

/// The environment variable carrying the child's configuration, as JSON.
const CHILD_NAMESERVER_CONFIG_ENV: &str = "DEFIBUS_TESTS_CHILD_NAMESERVER_CONFIG";

/// A nameserver in a child process; dropping it kills the child.
pub struct ChildNameserver {
    child: Child,
    addr: SocketAddr,
}

impl ChildNameserver {
    /// Starts the child, in `netns` if given, and waits until it accepts connections on
    /// `config.listen_addr`, which must name a port (the parent cannot learn a port the
    /// child picks).
    pub fn spawn(netns: Option<&str>, entry_test: &str, config: &NameserverConfig) -> Self {
        let addr = config.listen_addr;
        assert_ne!(addr.port(), 0, "a child nameserver needs a fixed port");
        let json = serde_json::to_string(config).expect("the configuration serialises");
        let child = child_process(netns, entry_test)
            .env(CHILD_NAMESERVER_CONFIG_ENV, json)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("spawn the child nameserver");
        let mut spawned = Self { child, addr };
        wait_until("the child nameserver to listen", WAIT, || {
            TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
                || spawned.exited()
        });
        assert!(!spawned.exited(), "the child nameserver exited at start");
        spawned
    }

    /// The `host:port` clients and brokers use.
    pub fn endpoint(&self) -> String {
        self.addr.to_string()
    }

    fn exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }

    /// Sends SIGKILL and reaps the child.
    pub fn kill_9(mut self) {
        self.child.kill().expect("SIGKILL the child nameserver");
        self.child.wait().expect("reap the child nameserver");
    }
}

impl Drop for ChildNameserver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The body of a scenario's child-nameserver entry test: runs the nameserver from the
/// configuration [`ChildNameserver::spawn`] passed until the parent closes our stdin (or
/// kills us). Does nothing when run other than by `spawn`.
pub fn child_nameserver_main() {
    let Ok(json) = std::env::var(CHILD_NAMESERVER_CONFIG_ENV) else {
        eprintln!("not started by ChildNameserver::spawn: nothing to do");
        return;
    };
    crate::init_logs();
    let config: NameserverConfig = serde_json::from_str(&json).expect("the parent's config");
    let handle = nameserver::start(config).expect("the child nameserver starts");
    // The parent holds our stdin open; when it is gone, so are we.
    let _ = std::io::copy(&mut std::io::stdin(), &mut std::io::sink());
    eprintln!("child nameserver: the test process is gone; exiting");
    drop(handle);
    std::process::exit(1);
}
