//! What a server lets in: a connection slot (overall and per peer address) and the memory a
//! large partial frame may hold. One [`Admission`] per server, shared by its accept loop and
//! every connection; it also rate-limits their log lines about bad and refused connections.

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use log::Level;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::limits::Limits;
use crate::loglimit::LogLimit;

/// A server's admission state.
pub struct Admission {
    name: &'static str,
    limits: Limits,
    connections: Arc<Semaphore>,
    per_ip: Mutex<HashMap<IpAddr, usize>>,
    budget: Arc<Semaphore>,
    waiters: AtomicUsize,
    /// Bytes of granted reservations: the budget's semaphore also counts permits handed to
    /// a waiter before it has them all, which no frame holds yet.
    reserved: Arc<AtomicUsize>,
    faults: LogLimit,
    refusals: LogLimit,
}

/// Why a connection was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// `max_connections` are open.
    Full(usize),
    /// `connections_per_ip_max` are open from the peer's address.
    PerIp(usize),
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Full(n) => write!(f, "{n} connections open (max_connections)"),
            Self::PerIp(n) => write!(
                f,
                "{n} connections open from its address (connections_per_ip_max)"
            ),
        }
    }
}

/// A connection's slot; dropping it frees the slot.
pub struct Admitted {
    admission: Arc<Admission>,
    ip: IpAddr,
    _slot: OwnedSemaphorePermit,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let mut per_ip = self.admission.per_ip();
        if let Some(open) = per_ip.get_mut(&self.ip) {
            *open -= 1;
            if *open == 0 {
                // Forget the address, so the map holds only peers with open connections.
                per_ip.remove(&self.ip);
            }
        }
    }
}

/// Partial-frame memory reserved by one connection; dropping it returns it to the budget.
pub struct Reservation {
    reserved: Arc<AtomicUsize>,
    bytes: usize,
    _permit: Option<OwnedSemaphorePermit>,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        // The frame's buffer is gone by now (the connection frees it first); once no large
        // frame is held, give the allocator's freed pages back to the kernel, else the RSS
        // a flood of large frames raised stays raised after it.
        if self.reserved.fetch_sub(self.bytes, Ordering::Relaxed) == self.bytes {
            release_free_memory();
        }
    }
}

impl Admission {
    /// The admission state of server `name` under `limits`.
    pub fn new(name: &'static str, limits: Limits) -> Self {
        Self {
            name,
            limits,
            connections: Arc::new(Semaphore::new(limits.max_connections)),
            per_ip: Mutex::new(HashMap::new()),
            budget: Arc::new(Semaphore::new(limits.partial_frame_bytes_max)),
            waiters: AtomicUsize::new(0),
            reserved: Arc::new(AtomicUsize::new(0)),
            faults: LogLimit::new("lines about closed connections"),
            refusals: LogLimit::new("lines about refused connections"),
        }
    }

    /// The limits.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// The server's name, for log lines.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// A slot for a connection from `ip`, unless the server or the address is full.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Admitted, Refusal> {
        // An IPv4 peer on a dual-stack socket is one address, however it is spelt.
        let ip = ip.to_canonical();
        let slot = Arc::clone(&self.connections)
            .try_acquire_owned()
            .map_err(|_| Refusal::Full(self.limits.max_connections))?;
        let mut per_ip = self.per_ip();
        let open = per_ip.entry(ip).or_insert(0);
        if *open >= self.limits.connections_per_ip_max {
            return Err(Refusal::PerIp(*open));
        }
        *open += 1;
        drop(per_ip);
        Ok(Admitted {
            admission: Arc::clone(self),
            ip,
            _slot: slot,
        })
    }

    /// Connections open now.
    pub fn connections(&self) -> usize {
        self.limits
            .max_connections
            .saturating_sub(self.connections.available_permits())
    }

    /// Connections open from `ip`.
    pub fn connections_from(&self, ip: IpAddr) -> usize {
        self.per_ip().get(&ip.to_canonical()).copied().unwrap_or(0)
    }

    /// Bytes reserved by partial frames now: what a flood of large half-sent frames holds.
    pub fn partial_frame_bytes(&self) -> usize {
        self.reserved.load(Ordering::Relaxed)
    }

    /// Connections waiting for the partial-frame budget now.
    pub fn partial_frame_waiters(&self) -> usize {
        self.waiters.load(Ordering::Relaxed)
    }

    /// Reserves `bytes` of the partial-frame budget, waiting (first come, first served) until
    /// they are free. `bytes` is at most `frame_len_max`, which the settings keep within both
    /// the budget and `u32`; anything larger waits for the caller's deadline.
    pub async fn reserve(&self, bytes: usize) -> Reservation {
        let permits = u32::try_from(bytes).unwrap_or(u32::MAX);
        let _waiting = Waiting::new(&self.waiters);
        let permit = Arc::clone(&self.budget).acquire_many_owned(permits).await;
        self.reserved.fetch_add(bytes, Ordering::Relaxed);
        Reservation {
            reserved: Arc::clone(&self.reserved),
            bytes,
            // The semaphore is never closed, so this is always a permit.
            _permit: permit.ok(),
        }
    }

    /// Logs a line about a connection closed for a fault, rate-limited.
    pub fn log_fault(&self, level: Level, args: fmt::Arguments<'_>) {
        self.faults.log(level, args);
    }

    /// Logs a line about a refused connection, rate-limited.
    pub fn log_refusal(&self, args: fmt::Arguments<'_>) {
        self.refusals.log(Level::Warn, args);
    }

    /// Logs the summaries of lines suppressed in ended windows.
    pub fn flush_logs(&self) {
        self.faults.flush(Level::Info);
        self.refusals.flush(Level::Warn);
    }

    /// The per-address counts; consistent after any panic, so a poisoned lock is used as is.
    fn per_ip(&self) -> MutexGuard<'_, HashMap<IpAddr, usize>> {
        self.per_ip.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Counts a waiter while it waits, cancelled or not.
struct Waiting<'a>(&'a AtomicUsize);

impl<'a> Waiting<'a> {
    fn new(waiters: &'a AtomicUsize) -> Self {
        waiters.fetch_add(1, Ordering::Relaxed);
        Self(waiters)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Returns free heap pages to the kernel. glibc keeps freed large buffers in its arenas once
/// its mmap threshold has risen past them, which is what kept 57.6 MB after a flood closed;
/// other allocators (jemalloc, in the `defibus` binary) return them on their own.
fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim takes no pointers and only walks the allocator's own arenas.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn admission(max: usize, per_ip: usize) -> Arc<Admission> {
        Arc::new(Admission::new(
            "test",
            Limits {
                max_connections: max,
                connections_per_ip_max: per_ip,
                partial_frame_bytes_max: 1 << 20,
                frame_timeout: Duration::from_secs(1),
            },
        ))
    }

    #[test]
    fn one_address_cannot_take_every_slot() {
        let admission = admission(4, 2);
        let a: IpAddr = "127.0.0.1".parse().unwrap();
        let b: IpAddr = "::ffff:127.0.0.2".parse().unwrap();
        let first = admission.admit(a).unwrap();
        let _second = admission.admit(a).unwrap();
        assert_eq!(admission.admit(a).err(), Some(Refusal::PerIp(2)));
        let _other = admission.admit(b).unwrap();
        assert_eq!(admission.connections_from("127.0.0.2".parse().unwrap()), 1);
        drop(first);
        assert_eq!(admission.connections_from(a), 1);
        let _again = admission.admit(a).unwrap();
        let _b2 = admission.admit(b).unwrap();
        assert_eq!(admission.admit(b).err(), Some(Refusal::Full(4)));
    }
}
