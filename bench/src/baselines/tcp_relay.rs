//! A two-hop relay echo on blocking loopback sockets with TCP_NODELAY: client → relay → echo
//! server → relay → client, one message at a time per connection. The same path as a
//! request-reply through a broker (requester → broker → responder → broker → requester)
//! minus everything the broker and client do: the floor for request-reply latency.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};

use anyhow::Context;

use crate::cli::Window;
use crate::measure;
use crate::report::{Baseline, Measured};

pub const NAME: &str = "tcp-relay";

/// Measures `clients` closed-loop clients sending `message_bytes` through the relay.
pub fn run(window: Window, clients: usize, message_bytes: usize) -> anyhow::Result<Baseline> {
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
            "{clients} client(s), {message_bytes} B, client → relay → echo → relay → client, \
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
