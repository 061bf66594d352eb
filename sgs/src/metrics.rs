//! The SGS's Prometheus metrics: services by lifecycle state, lifecycle actions by how they
//! ended, the periodic GSL sync, and open connections.
//!
//! Actions and syncs are counted in relaxed atomics as they end; services per state and
//! connections are read when scraped (the registry's lock, once per scrape). The `/metrics`
//! endpoint runs on a thread of its own ([`telemetry::Endpoint`]), off the runtime.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use protocol::codes::{Command, Status};
use protocol::control::ServiceState;
use svc::admission::Admission;
use telemetry::Scrape;

use crate::command::Shared;

const ACTIONS: [&str; 3] = ["apply", "deploy", "offline"];
const OUTCOMES: [&str; 4] = ["ok", "refused", "denied", "failed"];
const STATES: [(ServiceState, &str); 3] = [
    (ServiceState::Applied, "applied"),
    (ServiceState::Deployed, "deployed"),
    (ServiceState::Offline, "offline"),
];

/// Counts since the SGS started.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    /// By action, then outcome (the orders of [`ACTIONS`] and [`OUTCOMES`]).
    actions: [[AtomicU64; 4]; 3],
    /// GSL syncs that pushed every service, and those that failed.
    syncs: [AtomicU64; 2],
}

impl Counters {
    /// A lifecycle command ended with `status`; other commands are not counted.
    pub fn acted(&self, command: Command, status: Status) {
        let action = match command {
            Command::ServiceApply => 0,
            Command::ServiceDeploy => 1,
            Command::ServiceOffline => 2,
            _ => return,
        };
        self.actions[action][outcome_of(status)].fetch_add(1, Ordering::Relaxed);
    }

    /// A periodic GSL sync ended.
    pub fn synced(&self, ok: bool) {
        self.syncs[usize::from(!ok)].fetch_add(1, Ordering::Relaxed);
    }
}

/// The outcome label of an answer's status: `ok`; `denied` (not authenticated or not
/// allowed); `failed` (the work itself did not complete: brokers, GSL or the registry's disk;
/// worth retrying); `refused` (anything the request got wrong).
fn outcome_of(status: Status) -> usize {
    match status {
        Status::Ok => 0,
        Status::PermissionDenied | Status::Unauthenticated => 2,
        Status::SystemBusy | Status::StorageError | Status::Internal | Status::ShuttingDown => 3,
        _ => 1,
    }
}

/// Serves `/metrics` on `listener` (none when `None`: metrics off, or the address could not
/// be bound, which [`telemetry::bind_or_warn`] logged). An SGS without one still serves.
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
    let records = shared.store().records();
    for (state, label) in STATES {
        let count = records.iter().filter(|r| r.state == state).count();
        scrape.gauge(
            "defibus_sgs_services",
            "Services registered, by lifecycle state.",
            &[("state", label)],
            count as u64,
        );
    }
    for (action, outcomes) in ACTIONS.iter().zip(&counters.actions) {
        for (outcome, counter) in OUTCOMES.iter().zip(outcomes) {
            scrape.counter(
                "defibus_sgs_actions",
                "Lifecycle actions (apply, deploy, offline), by outcome: ok, refused (a bad \
                 request), denied (no grant), failed (brokers, GSL or storage did not complete \
                 it).",
                &[("action", action), ("outcome", outcome)],
                counter.load(Ordering::Relaxed),
            );
        }
    }
    for (outcome, counter) in ["ok", "failed"].iter().zip(&counters.syncs) {
        scrape.counter(
            "defibus_sgs_gsl_syncs",
            "Periodic pushes of every service to GSL, by outcome.",
            &[("outcome", outcome)],
            counter.load(Ordering::Relaxed),
        );
    }
    scrape.gauge(
        "defibus_sgs_connections",
        "Open client connections.",
        &[],
        admission.connections() as u64,
    );
    scrape
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_map_to_the_outcomes_an_operator_acts_on() {
        assert_eq!(OUTCOMES[outcome_of(Status::Ok)], "ok");
        assert_eq!(OUTCOMES[outcome_of(Status::InvalidArgument)], "refused");
        assert_eq!(OUTCOMES[outcome_of(Status::PermissionDenied)], "denied");
        assert_eq!(OUTCOMES[outcome_of(Status::SystemBusy)], "failed");
        assert_eq!(OUTCOMES[outcome_of(Status::StorageError)], "failed");
    }
}
