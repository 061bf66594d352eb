//! One loopback TCP connection, a writer thread sending `write_bytes` per `write()` and a
//! reader counting what arrives: the most bytes per second one stream moves here.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context;

use crate::cli::Window;
use crate::measure;
use crate::report::{Baseline, Measured};

pub const NAME: &str = "tcp-stream";

/// Measures one stream for `window`.
pub fn run(window: Window, write_bytes: usize) -> anyhow::Result<Baseline> {
    let listener = super::loopback_listener()?;
    let addr = listener.local_addr()?;
    let stop_writer = Arc::new(AtomicBool::new(false));
    let writer = {
        let stop = stop_writer.clone();
        std::thread::Builder::new()
            .name("bench-stream-writer".into())
            .spawn(move || -> std::io::Result<()> {
                let mut stream = TcpStream::connect(addr)?;
                let chunk = vec![0xA5u8; write_bytes.max(1)];
                while !stop.load(Ordering::Relaxed) {
                    stream.write_all(&chunk)?;
                }
                Ok(())
            })
            .context("starting the stream writer")?
    };
    let (stream, _) = listener.accept().context("accepting the stream")?;
    let measured = measure::run_window(NAME, window, 1, |_, shared| {
        let mut buffer = vec![0u8; write_bytes.max(1)];
        let mut stream = &stream;
        while !shared.stopped() {
            let n = stream.read(&mut buffer).context("reading the stream")?;
            anyhow::ensure!(n > 0, "the stream writer closed early");
            shared.meter.record(0, n as u64);
        }
        Ok(())
    });
    stop_writer.store(true, Ordering::Relaxed);
    // Closing our end ends a writer blocked in write().
    drop(stream);
    let _ = writer.join();
    let (throughput, _) = measured?;
    Ok(Baseline {
        name: NAME.into(),
        setup: format!("one loopback connection, {write_bytes} B writes, blocking sockets"),
        measured: Measured::Bandwidth(throughput),
    })
}
