//! `standalone --config FILE`: the same TOML tables the servers take one by one, a table per
//! part (`[nameserver]`, `[broker]`, `[gsl]`, `[sgs]`, `[proxy]`), so segment sizes, limits
//! and storage settings can be set for a whole bus in one process.
//!
//! What ties the parts together stays standalone's: listen and metrics addresses, data
//! directories, broker ids, area, the addresses the parts give each other, `[security]` and
//! `[tls]` come from its flags. A file that sets one of them is refused, naming the key and the flag, so
//! no setting is silently ignored.

use std::path::Path;

use anyhow::{Context, bail};
use serde::de::DeserializeOwned;

/// The keys of each part's table that standalone sets itself, with the flag that does.
const OWNED: &[(&str, &[(&str, &str)])] = &[
    (
        "nameserver",
        &[
            ("listen_addr", "--nameserver-addr"),
            ("metrics_addr", "--metrics-port-base"),
            ("controller", "--brokers"),
            ("security", "--security"),
            ("tls", "--tls"),
        ],
    ),
    (
        "broker",
        &[
            ("broker_id", "--brokers"),
            ("area", "--area"),
            ("listen_address", "--broker-listen"),
            ("port_base", "--port-base"),
            ("metrics_address", "--metrics-port-base"),
            ("shards", "--shards"),
            ("data_dir", "--data-dir"),
            ("nameservers", "--nameserver-addr"),
            ("security", "--security"),
            ("tls", "--tls"),
        ],
    ),
    (
        "gsl",
        &[
            ("listen_addr", "--gsl-addr"),
            ("metrics_addr", "--metrics-port-base"),
            ("data_dir", "--data-dir"),
            ("security", "--security"),
            ("tls", "--tls"),
        ],
    ),
    (
        "sgs",
        &[
            ("listen_addr", "--sgs-addr"),
            ("metrics_addr", "--metrics-port-base"),
            ("data_dir", "--data-dir"),
            ("gsl_endpoints", "--gsl-addr"),
            ("areas", "--area"),
            ("security", "--security"),
            ("tls", "--tls"),
        ],
    ),
    (
        "proxy",
        &[
            ("listen_addr", "--proxy-addr"),
            ("metrics_addr", "--metrics-port-base"),
            ("nameservers", "--nameserver-addr"),
            ("gsl_endpoints", "--gsl-addr"),
            ("sgs_endpoint", "--sgs-addr"),
            ("area", "--area"),
            ("data_dir", "--data-dir"),
            ("security", "--security"),
            ("tls", "--tls"),
        ],
    ),
];

/// Each part's settings from the file, defaults where it says nothing.
#[derive(Debug, Default)]
pub struct PartsConfig {
    pub nameserver: nameserver::NameserverConfig,
    pub broker: engine::BrokerConfig,
    pub gsl: gsl::GslConfig,
    pub sgs: sgs::SgsConfig,
    pub proxy: proxy::ProxyConfig,
}

impl PartsConfig {
    /// Reads `path`; see the module docs for what it may hold.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("in {}", path.display()))
    }

    /// Parses the file's text.
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let mut file: toml::Table = toml::from_str(text).context("not valid TOML")?;
        for key in file.keys() {
            if !OWNED.iter().any(|(part, _)| part == key) {
                bail!(
                    "unknown table [{key}]: standalone --config takes [nameserver], [broker], \
                     [gsl], [sgs] and [proxy]"
                );
            }
        }
        for (part, owned) in OWNED {
            let Some(table) = file.get(*part) else {
                continue;
            };
            let Some(table) = table.as_table() else {
                bail!("{part} must be a table: [{part}]");
            };
            for (key, flag) in *owned {
                if table.contains_key(*key) {
                    bail!(
                        "[{part}] {key} is set by standalone itself: use {flag} (or run the \
                         parts one by one to set it per server)"
                    );
                }
            }
        }
        Ok(Self {
            nameserver: part(&mut file, "nameserver")?,
            broker: part(&mut file, "broker")?,
            gsl: part(&mut file, "gsl")?,
            sgs: part(&mut file, "sgs")?,
            proxy: part(&mut file, "proxy")?,
        })
    }
}

/// The `[name]` table as its server's settings (all defaults when absent).
fn part<T: DeserializeOwned + Default>(file: &mut toml::Table, name: &str) -> anyhow::Result<T> {
    match file.remove(name) {
        Some(table) => table
            .try_into()
            .with_context(|| format!("[{name}]: not valid {name} settings")),
        None => Ok(T::default()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_part_takes_its_servers_table_and_defaults_the_rest() {
        let parts = PartsConfig::parse("[broker]\nsegment_bytes_placeholder_never_valid = 1\n");
        // A key the broker does not know is refused by the broker's own parser.
        let err = format!("{:#}", parts.unwrap_err());
        assert!(err.contains("[broker]"), "{err}");

        let parts = PartsConfig::parse(
            "[broker]\nidle_timeout_ms = 1234\n\n[broker.storage]\nsegment_bytes_max = 8388608\n\n\
             [nameserver]\nbroker_expiry_ms = 9000\n",
        )
        .unwrap();
        assert_eq!(parts.broker.idle_timeout_ms, 1234);
        assert_eq!(parts.broker.storage.segment_bytes_max, 8 << 20);
        assert_eq!(parts.nameserver.broker_expiry_ms, 9000);
        assert_eq!(parts.gsl, gsl::GslConfig::default());
    }

    #[test]
    fn what_standalone_sets_itself_is_refused_naming_the_flag() {
        let err = PartsConfig::parse("[broker]\nport_base = 20000\n").unwrap_err();
        assert!(err.to_string().contains("--port-base"), "{err}");
        let err = PartsConfig::parse("[proxy]\n[proxy.tls]\ncert = \"x\"\n").unwrap_err();
        assert!(err.to_string().contains("--tls"), "{err}");
        let err = PartsConfig::parse("[gsl]\nmetrics_addr = \"\"\n").unwrap_err();
        assert!(err.to_string().contains("--metrics-port-base"), "{err}");
        let err = PartsConfig::parse("[brokers]\n").unwrap_err();
        assert!(err.to_string().contains("unknown table"), "{err}");
    }
}
