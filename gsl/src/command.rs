//! What the GSL answers to each request: decoding, the directory call, the reply.
//!
//! No network IO here: [`handle`] turns one parsed request into one [`Answer`], and the
//! connection decides what to write and whether to go on. An update writes the snapshot
//! inline, under the store's lock: updates are rare (operator actions via SGS), the lock keeps
//! the file's order that of memory, and resolves are not slowed beyond that one write.

use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use auth::{Action, Authority, Outcome};
use log::{debug, info};
use protocol::codes::Command;
use protocol::control::{self, ControlError, GslResolveReply, GslResolveRequest, GslUpdate};
use protocol::frame::Framer;
use svc::connection::{Answer, Caller, Handler};

use crate::config::GslConfig;
use crate::metrics::{ResolveOutcome, UpdateOutcome};
use crate::store::{Store, Updated};
use svc::stream::TlsServer;

/// State every connection shares.
#[derive(Debug)]
pub(crate) struct Shared {
    store: Mutex<Store>,
    pub(crate) config: GslConfig,
    pub(crate) framer: Framer,
    authority: Authority,
    /// TLS on the listener, when `[tls]` is set.
    tls: Option<TlsServer>,
    /// Requests counted for metrics.
    pub(crate) counters: crate::metrics::Counters,
}

impl Shared {
    pub(crate) fn new(
        config: GslConfig,
        store: Store,
        authority: Authority,
        tls: Option<TlsServer>,
    ) -> Arc<Self> {
        Arc::new(Self {
            authority,
            tls,
            store: Mutex::new(store),
            framer: Framer::new(config.frame_limits()),
            config,
            counters: Default::default(),
        })
    }

    /// Services the directory holds now (read at scrape).
    pub(crate) fn services(&self) -> usize {
        self.store().directory().len()
    }

    /// The store. A panic while it was held cannot leave the directory half-updated (an
    /// update is undone unless it was persisted), so a poisoned lock is used as is.
    fn store(&self) -> MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Handler for Shared {
    const NAME: &'static str = "GSL";

    fn framer(&self) -> &Framer {
        &self.framer
    }

    fn idle_timeout(&self) -> Duration {
        self.config.idle_timeout()
    }

    fn authority(&self) -> &Authority {
        &self.authority
    }

    fn tls(&self) -> Option<&TlsServer> {
        self.tls.as_ref()
    }

    fn preauth_frame_bytes_max(&self) -> usize {
        self.config.security.preauth_frame_bytes_max as usize
    }

    /// A GSL answer needs no waiting: it is computed before the future is returned.
    fn handle(
        self: &Arc<Self>,
        caller: &Caller,
        command: Command,
        body: &[u8],
    ) -> impl Future<Output = Answer> + Send {
        std::future::ready(handle(self, caller, command, body))
    }
}

/// Answers one request.
/// Resolving is for every authenticated caller; an update needs `admin_service` on the
/// service id.
pub(crate) fn handle(shared: &Shared, caller: &Caller, command: Command, body: &[u8]) -> Answer {
    let result = match command {
        Command::GslResolve => resolve(shared, body),
        Command::GslUpdate => update(shared, caller, body),
        other => return Answer::not_served::<Shared>(other),
    };
    result.unwrap_or_else(|e| Answer::from_control_error(&e))
}

fn resolve(shared: &Shared, body: &[u8]) -> Result<Answer, ControlError> {
    let parsed = control::decode::<GslResolveRequest>(body).and_then(|request| {
        let (service, caller) = request.parse()?;
        Ok((service, caller))
    });
    let (service, caller) =
        parsed.inspect_err(|_| shared.counters.resolved(ResolveOutcome::Invalid))?;
    let deployments = shared.store().directory().resolve(&service, caller);
    shared.counters.resolved(if deployments.is_empty() {
        ResolveOutcome::None
    } else {
        ResolveOutcome::Found
    });
    debug!(
        "resolve {service} from {caller}: {} deployments",
        deployments.len()
    );
    Ok(Answer::ok(control::encode(&GslResolveReply {
        deployments,
    })?))
}

fn update(shared: &Shared, caller: &Caller, body: &[u8]) -> Result<Answer, ControlError> {
    let update: GslUpdate =
        control::decode(body).inspect_err(|_| shared.counters.updated(UpdateOutcome::Refused))?;
    if let Err(denied) = caller.check(
        &shared.authority,
        Action::AdminService,
        &update.service_id,
        None,
    ) {
        shared.counters.updated(UpdateOutcome::Denied);
        return Ok(denied);
    }
    let service = update.service_id.clone();
    let areas: Vec<String> = update.deployments.iter().map(|d| d.area.clone()).collect();
    // Changes are audited; the SGS's periodic re-push of what GSL already holds is not.
    let audit = |outcome, detail: &str| {
        caller.audit(&shared.authority, "gsl_update", &service, outcome, detail);
    };
    match shared.store().update(update) {
        Ok(Updated::Changed) if areas.is_empty() => {
            shared.counters.updated(UpdateOutcome::Changed);
            info!("service {service} no longer resolves");
            audit(Outcome::Ok, "no areas");
        }
        Ok(Updated::Changed) => {
            shared.counters.updated(UpdateOutcome::Changed);
            info!("service {service} resolves to areas {areas:?}");
            audit(Outcome::Ok, &format!("areas {}", areas.join(",")));
        }
        Ok(Updated::Unchanged) => {
            shared.counters.updated(UpdateOutcome::Unchanged);
            debug!("service {service} unchanged");
        }
        Err(refusal) => {
            shared.counters.updated(UpdateOutcome::Refused);
            info!("update of service {service:?} refused: {refusal}");
            audit(Outcome::Failed, &refusal.message);
            return Ok(Answer::refused(refusal.status, refusal.message));
        }
    }
    Ok(Answer::ok(Vec::new()))
}
