//! A small network of Linux network namespaces for partition scenarios.
//!
//! Every node gets its own namespace with one address, `10.77.<net>.<host>/24`, on a veth
//! pair whose other end sits on a bridge inside a hub namespace that the test creates; the
//! test process itself (its clients and in-process servers) joins the same bridge as
//! `10.77.<net>.1`. Nothing touches the machine's own interfaces or routes but the one veth
//! end of the test process.
//!
//! A partition between two nodes is a pair of `blackhole` routes, one in each node's
//! namespace: packets between them vanish silently, as on a broken link, while both still
//! reach every other node. [`Net::heal`] removes the routes.
//!
//! Making namespaces needs root and the `ip` tool (iproute2); [`Net::create`] returns `None`
//! with the reason where they cannot be made, so a scenario can skip with a clear message.

use std::net::Ipv4Addr;
use std::process::Command;

/// The namespaces of one scenario; dropping it deletes them (and so their interfaces).
pub struct Net {
    prefix: String,
    net: u8,
    hub: String,
    host_veth: String,
    nodes: Vec<String>,
}

/// Runs `ip` with `args`; the error names the command and what `ip` said.
fn ip(args: &[&str]) -> Result<(), String> {
    let output = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("`ip` cannot be run ({e}); install iproute2"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`ip {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

impl Net {
    /// A hub namespace with a bridge, and the test process on it as `10.77.<net>.1`. The
    /// subnet comes from the process id, so scenarios running at once do not collide.
    pub fn create() -> Result<Self, String> {
        let pid = std::process::id();
        // Interface names are at most 15 bytes: "d" + 6 digits + a role suffix.
        let prefix = format!("d{:06}", pid % 1_000_000);
        let net = (pid % 200 + 20) as u8;
        let hub = format!("{prefix}hub");
        let host_veth = format!("{prefix}h");
        ip(&["netns", "add", &hub])?;
        let created = Self {
            prefix,
            net,
            hub,
            host_veth,
            nodes: Vec::new(),
        };
        let hub = created.hub.clone();
        let host_veth = created.host_veth.clone();
        let host_peer = format!("{}hp", created.prefix);
        ip(&["-n", &hub, "link", "add", "br0", "type", "bridge"])?;
        ip(&["-n", &hub, "link", "set", "br0", "up"])?;
        ip(&[
            "link", "add", &host_veth, "type", "veth", "peer", "name", &host_peer,
        ])?;
        ip(&["link", "set", &host_peer, "netns", &hub])?;
        ip(&["-n", &hub, "link", "set", &host_peer, "master", "br0", "up"])?;
        let address = format!("{}/24", created.address(1));
        ip(&["addr", "add", &address, "dev", &host_veth])?;
        ip(&["link", "set", &host_veth, "up"])?;
        Ok(created)
    }

    /// `10.77.<net>.<host>`.
    pub fn address(&self, host: u8) -> Ipv4Addr {
        Ipv4Addr::new(10, 77, self.net, host)
    }

    /// The address of the test process on the bridge.
    pub fn host_address(&self) -> Ipv4Addr {
        self.address(1)
    }

    /// Adds a namespace for node `host` (2..=254) on the bridge, as `10.77.<net>.<host>`;
    /// returns the namespace's name, for `ip netns exec`.
    pub fn add_node(&mut self, host: u8) -> Result<String, String> {
        assert!(
            (2..=254).contains(&host),
            "host {host} is not a node address"
        );
        let ns = format!("{}n{host}", self.prefix);
        let inside = format!("{}i{host}", self.prefix);
        let outside = format!("{}o{host}", self.prefix);
        ip(&["netns", "add", &ns])?;
        self.nodes.push(ns.clone());
        ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        ip(&[
            "link", "add", &inside, "type", "veth", "peer", "name", &outside,
        ])?;
        ip(&["link", "set", &inside, "netns", &ns])?;
        ip(&["link", "set", &outside, "netns", &self.hub])?;
        ip(&[
            "-n", &self.hub, "link", "set", &outside, "master", "br0", "up",
        ])?;
        let address = format!("{}/24", self.address(host));
        ip(&["-n", &ns, "addr", "add", &address, "dev", &inside])?;
        ip(&["-n", &ns, "link", "set", &inside, "up"])?;
        Ok(ns)
    }

    /// Cuts nodes `a` and `b` off from each other (both directions); each still reaches
    /// everyone else.
    pub fn partition(&self, a: u8, b: u8) {
        self.blackhole(a, b, "add");
    }

    /// Undoes [`Self::partition`].
    pub fn heal(&self, a: u8, b: u8) {
        self.blackhole(a, b, "del");
    }

    /// Adds or deletes (`op`) the blackhole routes between `a` and `b`, one in each.
    fn blackhole(&self, a: u8, b: u8, op: &str) {
        for (from, to) in [(a, b), (b, a)] {
            let route = format!("{}/32", self.address(to));
            ip(&["-n", &self.node_ns(from), "route", op, "blackhole", &route])
                .unwrap_or_else(|e| panic!("{op} the partition's blackhole route: {e}"));
        }
    }

    fn node_ns(&self, host: u8) -> String {
        format!("{}n{host}", self.prefix)
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        // Deleting a namespace deletes the interfaces in it, and a veth pair goes with
        // either end; the test process's end is removed explicitly in case the hub is gone.
        let _ = ip(&["link", "del", &self.host_veth]);
        for ns in self.nodes.iter().chain(std::iter::once(&self.hub)) {
            let _ = ip(&["netns", "del", ns]);
        }
    }
}
