//! A two-hop relay echo on blocking loopback sockets with TCP_NODELAY: client → relay → echo
//! server → relay → client, one message at a time per connection. The same path as a
//! request-reply through a broker (requester → broker → responder → broker → requester)
//! minus everything the broker and client do: the floor for request-reply latency.
//!
//! It runs at the concurrency of the `rr` it stands beside: `rr --requesters N` gets N
//! closed-loop requesters here too, each on its own connection, with its own relay thread
//! and its own connection to the echo server (one thread per connection there). Its threads
//! are named so that the CPU split ([`crate::cpu`]) counts the relay (`bench-relay`) as the
//! broker and the echo server (`bench-echo`) as a client, as `rr`'s echo Responder is.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};

use anyhow::Context;

use crate::cli::Window;
use crate::measure;
use crate::report::{Baseline, Measured};

pub const NAME: &str = "tcp-relay";

/// Measures `clients` concurrent closed-loop clients sending `message_bytes` through the relay.
pub fn run(window: Window, clients: usize, message_bytes: usize) -> anyhow::Result<Baseline> {
    anyhow::ensure!(clients > 0, "the relay needs at least one client");
    let echo = super::loopback_listener()?;
    let echo_addr = echo.local_addr()?;
    serve(echo, clients, "bench-echo", move |peer| {
        echo_connection(peer, message_bytes)
    })?;
    let relay = super::loopback_listener()?;
    let relay_addr = relay.local_addr()?;
    serve(relay, clients, "bench-relay", move |peer| {
        relay_connection(peer, echo_addr, message_bytes)
    })?;
    let latency = measure::run_latency_window(NAME, window, clients, |_, shared| {
        let mut stream = connect(relay_addr)?;
        let request = vec![0xA5u8; message_bytes];
        let mut reply = vec![0u8; message_bytes];
        measure::closed_loop(shared, message_bytes as u64, || {
            stream.write_all(&request)?;
            stream.read_exact(&mut reply)?;
            Ok(())
        })
    })?;
    Ok(Baseline {
        name: NAME.into(),
        setup: format!(
            "{clients} requester(s), one request at a time each, {message_bytes} B, \
             client → relay → echo → relay → client, a relay and an echo thread per requester, \
             blocking sockets, TCP_NODELAY"
        ),
        measured: Measured::Latency(latency),
    })
}

fn connect(addr: SocketAddr) -> anyhow::Result<TcpStream> {
    let stream = TcpStream::connect(addr).with_context(|| format!("connecting to {addr}"))?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Accepts `connections` connections on `listener`, one thread each; a connection's thread
/// ends when its peer closes, so nothing outlives the run.
fn serve(
    listener: TcpListener,
    connections: usize,
    name: &str,
    handle: impl Fn(TcpStream) -> anyhow::Result<()> + Send + Sync + Clone + 'static,
) -> anyhow::Result<()> {
    let thread_name = name.to_owned();
    std::thread::Builder::new()
        .name(format!("{name}-accept"))
        .spawn(move || {
            for peer in listener.incoming().take(connections).flatten() {
                let handle = handle.clone();
                let spawned =
                    std::thread::Builder::new()
                        .name(thread_name.clone())
                        .spawn(move || {
                            // A peer closing its end is how every connection ends.
                            let _ = peer
                                .set_nodelay(true)
                                .map_err(anyhow::Error::from)
                                .and_then(|()| handle(peer));
                        });
                if spawned.is_err() {
                    break;
                }
            }
        })
        .with_context(|| format!("starting the {name} accept thread"))?;
    Ok(())
}

fn echo_connection(mut peer: TcpStream, message_bytes: usize) -> anyhow::Result<()> {
    let mut message = vec![0u8; message_bytes];
    loop {
        peer.read_exact(&mut message)?;
        peer.write_all(&message)?;
    }
}

fn relay_connection(
    mut client: TcpStream,
    echo: SocketAddr,
    message_bytes: usize,
) -> anyhow::Result<()> {
    let mut upstream = connect(echo)?;
    let mut message = vec![0u8; message_bytes];
    loop {
        client.read_exact(&mut message)?;
        upstream.write_all(&message)?;
        upstream.read_exact(&mut message)?;
        client.write_all(&message)?;
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn concurrent_requesters_all_get_replies_and_the_relay_counts_as_the_broker() {
        let window = Window {
            warmup: Duration::from_millis(20),
            duration: Duration::from_millis(300),
        };
        let baseline = run(window, 4, 64).unwrap();
        let Measured::Latency(latency) = &baseline.measured else {
            panic!("a latency baseline: {baseline:?}");
        };
        assert!(latency.samples >= 4, "{latency:?}");
        assert_eq!(latency.throughput.errors, 0, "{latency:?}");
        assert!(
            baseline.setup.starts_with("4 requester(s)"),
            "{}",
            baseline.setup
        );
        let cpu = latency.throughput.cpu.expect("CPU measured");
        assert!(cpu.broker_us.is_some_and(|us| us > 0.0), "{cpu:?}");
        assert!(cpu.client_us.is_some_and(|us| us > 0.0), "{cpu:?}");
    }
}
