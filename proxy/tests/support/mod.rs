//! A bus (nameserver + one broker, in-process on port 0) with a proxy in front of it, and a
//! small blocking HTTP client for the scenarios.

#![allow(dead_code)]

use std::time::Duration;

use defibus_tests::{Cluster, WAIT};
use protocol::control::FlushMode;
use proxy::{ProxyConfig, ProxyHandle};

pub struct Bus {
    pub proxy: ProxyHandle,
    pub cluster: Cluster,
}

impl Bus {
    /// A one-broker, one-shard cluster with `topics` created, and a proxy on port 0.
    pub fn start(topics: &[&str], adjust: impl FnOnce(&mut ProxyConfig)) -> Self {
        let cluster = Cluster::start(1, 1);
        for topic in topics {
            cluster.create_topic(topic, 2, FlushMode::Async);
        }
        let mut config = ProxyConfig {
            listen_addr: "127.0.0.1:0".parse().unwrap(),
            nameservers: vec![cluster.nameserver.local_addr().to_string()],
            ..ProxyConfig::default()
        };
        adjust(&mut config);
        let proxy = proxy::start(config).expect("proxy starts");
        Self { proxy, cluster }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.proxy.local_addr())
    }

    /// POSTs `body` (raw text) and returns (status, parsed JSON body or Null).
    pub fn post(&self, path: &str, body: &str) -> (u16, serde_json::Value) {
        answer(
            agent()
                .post(&self.url(path))
                .set("content-type", "application/json")
                .send_string(body),
        )
    }

    pub fn get(&self, path: &str) -> (u16, serde_json::Value) {
        answer(agent().get(&self.url(path)).call())
    }

    pub fn delete(&self, path: &str) -> (u16, serde_json::Value) {
        answer(agent().delete(&self.url(path)).call())
    }
}

fn agent() -> ureq::Agent {
    ureq::AgentBuilder::new().timeout(WAIT).build()
}

fn answer(result: Result<ureq::Response, ureq::Error>) -> (u16, serde_json::Value) {
    let response = match result {
        Ok(response) => response,
        Err(ureq::Error::Status(_, response)) => response,
        Err(e) => panic!("HTTP call failed: {e}"),
    };
    let status = response.status();
    let text = response.into_string().unwrap_or_default();
    let json = serde_json::from_str(&text).unwrap_or(serde_json::Value::Null);
    (status, json)
}

pub fn identity(instance: &str) -> serde_json::Value {
    serde_json::json!({"system": "it", "area": "A10", "group": "g", "instance": instance})
}

pub const SHORT: Duration = Duration::from_millis(300);
