//! The nameserver's Prometheus metrics: what happened to registrations, and what the registry
//! and the server hold now.
//!
//! Events are counted in atomics as they are handled (a relaxed add beside a registry update
//! that already takes the registry's lock); the live brokers and open connections are read
//! when scraped. The `/metrics` endpoint runs on a thread of its own
//! ([`telemetry::Endpoint`]), off the runtime.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use svc::admission::Admission;
use telemetry::Scrape;

use crate::command::Shared;
use crate::registry::Registered;

/// Counts of registry events since the nameserver started.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    registered_new: AtomicU64,
    registered_changed: AtomicU64,
    registered_refreshed: AtomicU64,
    registrations_refused: AtomicU64,
    unregistrations: AtomicU64,
    expiries: AtomicU64,
}

impl Counters {
    /// A registration was accepted with `outcome`.
    pub fn registered(&self, outcome: &Registered) {
        let counter = match outcome {
            Registered::New => &self.registered_new,
            Registered::Changed => &self.registered_changed,
            Registered::Refreshed => &self.registered_refreshed,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// A registration was refused as invalid.
    pub fn refused(&self) {
        self.registrations_refused.fetch_add(1, Ordering::Relaxed);
    }

    /// A registered broker unregistered at its shutdown.
    pub fn unregistered(&self) {
        self.unregistrations.fetch_add(1, Ordering::Relaxed);
    }

    /// `n` brokers were swept for missing their registrations.
    pub fn expired(&self, n: usize) {
        self.expiries.fetch_add(n as u64, Ordering::Relaxed);
    }
}

/// Starts the `/metrics` endpoint on `listener` (none when `None`: metrics off, or the
/// address could not be bound, which [`telemetry::bind_or_warn`] logged). A nameserver without
/// one still serves routes.
pub(crate) fn start(
    listener: Option<std::net::TcpListener>,
    shared: Arc<Shared>,
    admission: Arc<Admission>,
) -> Option<telemetry::Endpoint> {
    let render = Box::new(move || Some(scrape(&shared, &admission)));
    telemetry::serve_or_warn(listener, render)
}

fn scrape(shared: &Shared, admission: &Admission) -> Scrape {
    let counters = &shared.counters;
    let mut scrape = Scrape::default();
    let help = "Registrations accepted, by outcome (new, changed, refreshed), and refused.";
    for (outcome, counter) in [
        ("new", &counters.registered_new),
        ("changed", &counters.registered_changed),
        ("refreshed", &counters.registered_refreshed),
        ("refused", &counters.registrations_refused),
    ] {
        let value = counter.load(Ordering::Relaxed);
        scrape.counter(
            "defibus_nameserver_registrations",
            help,
            &[("outcome", outcome)],
            value,
        );
    }
    scrape.counter(
        "defibus_nameserver_unregistrations",
        "Brokers that unregistered at their shutdown.",
        &[],
        counters.unregistrations.load(Ordering::Relaxed),
    );
    scrape.counter(
        "defibus_nameserver_expiries",
        "Brokers swept for missing their registrations.",
        &[],
        counters.expiries.load(Ordering::Relaxed),
    );
    let live = shared.registry().cluster_info(Instant::now()).brokers.len();
    scrape.gauge(
        "defibus_nameserver_live_brokers",
        "Brokers whose last registration has not expired.",
        &[],
        live as u64,
    );
    scrape.gauge(
        "defibus_nameserver_connections",
        "Open client and broker connections.",
        &[],
        admission.connections() as u64,
    );
    scrape
}
