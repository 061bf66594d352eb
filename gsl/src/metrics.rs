//! The GSL's Prometheus metrics: what resolves and updates found, and what the directory and
//! the server hold now.
//!
//! Events are counted in relaxed atomics beside the work (a resolve already takes the
//! store's lock; the count does not); the services held and open connections are read when
//! scraped. The `/metrics` endpoint runs on a thread of its own ([`telemetry::Endpoint`]),
//! off the runtime.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use svc::admission::Admission;
use telemetry::Scrape;

use crate::command::Shared;

/// How a resolve ended.
#[derive(Clone, Copy, Debug)]
pub(crate) enum ResolveOutcome {
    /// At least one deployment was answered.
    Found,
    /// The service is unknown or has no deployment.
    None,
    /// The request did not decode or named no valid service or area.
    Invalid,
}

/// How an update ended.
#[derive(Clone, Copy, Debug)]
pub(crate) enum UpdateOutcome {
    /// The service's deployments changed (and were persisted).
    Changed,
    /// The same deployments again (the SGS's periodic re-push).
    Unchanged,
    /// Refused: invalid, over a bound, or not persisted.
    Refused,
    /// The caller may not change the service.
    Denied,
}

/// Counts of requests since the GSL started.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    resolves: [AtomicU64; 3],
    updates: [AtomicU64; 4],
}

const RESOLVE_OUTCOMES: [&str; 3] = ["found", "none", "invalid"];
const UPDATE_OUTCOMES: [&str; 4] = ["changed", "unchanged", "refused", "denied"];

impl Counters {
    pub fn resolved(&self, outcome: ResolveOutcome) {
        self.resolves[outcome as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn updated(&self, outcome: UpdateOutcome) {
        self.updates[outcome as usize].fetch_add(1, Ordering::Relaxed);
    }
}

/// Serves `/metrics` on `listener` (none when `None`: metrics off, or the address could not
/// be bound, which [`telemetry::bind_or_warn`] logged). A GSL without one still resolves.
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
    for (outcome, counter) in RESOLVE_OUTCOMES.iter().zip(&counters.resolves) {
        scrape.counter(
            "defibus_gsl_resolves",
            "Service lookups, by outcome: found (deployments answered), none (unknown or \
             undeployed service), invalid (bad request).",
            &[("outcome", outcome)],
            counter.load(Ordering::Relaxed),
        );
    }
    for (outcome, counter) in UPDATE_OUTCOMES.iter().zip(&counters.updates) {
        scrape.counter(
            "defibus_gsl_updates",
            "Deployment updates from SGS, by outcome: changed, unchanged (a periodic re-push), \
             refused, denied.",
            &[("outcome", outcome)],
            counter.load(Ordering::Relaxed),
        );
    }
    scrape.gauge(
        "defibus_gsl_services",
        "Services the directory resolves or holds.",
        &[],
        shared.services() as u64,
    );
    scrape.gauge(
        "defibus_gsl_connections",
        "Open client connections.",
        &[],
        admission.connections() as u64,
    );
    scrape
}
