//! Baselines, measured in the same run as the workloads they bound.
//!
//! - [`tcp_stream`]: one loopback connection, large writes: the ceiling for produce throughput;
//! - [`tcp_relay`]: a two-hop relay echo on blocking sockets: the floor for request-reply;
//! - [`protocol_rr`]: request-reply through the broker written on the `protocol` crate alone
//!   (over [`wire`]): the floor for the client's own cost.
//!
//! Each is measured by the same loop as the workloads (`crate::measure`).

pub mod protocol_rr;
pub mod tcp_relay;
pub mod tcp_stream;
mod wire;

use std::net::{Ipv4Addr, TcpListener};

use anyhow::Context;

/// A listener on a free loopback port.
fn loopback_listener() -> anyhow::Result<TcpListener> {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("binding a loopback listener")
}
