//! What the SGS answers to each request: apply, deploy, offline, list, show.
//!
//! Changes (apply, deploy, offline) run one at a time, under `operations`, so two operators
//! never interleave broker operations of one service and GSL receives updates in the order
//! the registry changed; the periodic GSL sync takes the same lock. Broker and GSL calls are
//! blocking (the client SDK) and run on tokio's blocking pool.
//!
//! Ordering, so that no caller is ever sent to a topic that does not exist:
//! - deploy: create the topics in every area, then record `Deployed`, then push to GSL;
//! - offline: record `Offline`, push to GSL (callers stop resolving it), then drain every
//!   area, then delete the topics. A drain that times out keeps every topic.

use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use auth::{Action, Authority};
use log::info;
use protocol::codes::{Command, Status};
use protocol::control::{
    self, ControlError, ServiceIdRequest, ServiceList, ServiceRecord, ServiceState,
};
use protocol::frame::Framer;
use protocol::names::{ServiceId, Topic};
use svc::connection::{Answer, Caller, Handler};
use svc::stream::TlsServer;

use crate::brokers::AreaBrokers;
use crate::config::{QUEUE_COUNT_MAX, SgsConfig};
use crate::gsl_push;
use crate::store::Store;

/// Longest service name or owner accepted, in bytes.
pub const TEXT_LEN_MAX: usize = 256;

/// State every connection shares.
#[derive(Debug)]
pub(crate) struct Shared {
    store: Mutex<Store>,
    /// Held by every change and by the GSL sync, for their whole duration.
    pub(crate) operations: tokio::sync::Mutex<()>,
    pub(crate) config: Arc<SgsConfig>,
    pub(crate) framer: Framer,
    authority: Authority,
    /// TLS on the listener, when `[tls]` is set.
    tls: Option<TlsServer>,
    /// Actions and syncs counted for metrics.
    pub(crate) counters: crate::metrics::Counters,
}

impl Shared {
    pub(crate) fn new(
        config: SgsConfig,
        store: Store,
        authority: Authority,
        tls: Option<TlsServer>,
    ) -> Arc<Self> {
        Arc::new(Self {
            authority,
            tls,
            store: Mutex::new(store),
            operations: tokio::sync::Mutex::new(()),
            framer: Framer::new(config.frame_limits()),
            config: Arc::new(config),
            counters: Default::default(),
        })
    }

    /// The store; a change is undone unless persisted, so a poisoned lock is used as is.
    pub(crate) fn store(&self) -> MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Handler for Shared {
    const NAME: &'static str = "SGS";

    fn framer(&self) -> &Framer {
        &self.framer
    }

    fn idle_timeout(&self) -> Duration {
        self.config.idle_timeout()
    }

    /// A deploy or offline is answered when it is done (broker round trips, retries,
    /// draining): the connection reads its next request only then. Shutdown waits for it
    /// too, so an operation is never cut off half-way by a clean stop.
    fn authority(&self) -> &Authority {
        &self.authority
    }

    fn tls(&self) -> Option<&TlsServer> {
        self.tls.as_ref()
    }

    fn preauth_frame_bytes_max(&self) -> usize {
        self.config.security.preauth_frame_bytes_max as usize
    }

    fn handle(
        self: &Arc<Self>,
        caller: &Caller,
        command: Command,
        body: &[u8],
    ) -> impl Future<Output = Answer> + Send {
        let caller = caller.clone();
        let shared = Arc::clone(self);
        let body = body.to_vec();
        async move {
            if let Err(denied) = authorize(&shared, &caller, command, &body) {
                shared.counters.acted(command, denied.status);
                return denied;
            }
            let answer = handle(&shared, command, &body).await;
            audit(&shared, &caller, command, &body, &answer);
            shared.counters.acted(command, answer.status);
            answer
        }
    }
}

/// Answers one request.
pub(crate) async fn handle(shared: &Arc<Shared>, command: Command, body: &[u8]) -> Answer {
    let result = match command {
        Command::ServiceApply => apply(shared, body).await,
        Command::ServiceDeploy => deploy(shared, body).await,
        Command::ServiceOffline => offline(shared, body).await,
        Command::ServiceList => list(shared),
        Command::ServiceShow => show(shared, body),
        other => return Answer::not_served::<Shared>(other),
    };
    result.unwrap_or_else(|e| Answer::from_control_error(&e))
}

type Handled = Result<Answer, ControlError>;

fn unknown_service(service: &ServiceId) -> Answer {
    Answer::refused(
        Status::InvalidArgument,
        format!("unknown service {service}: apply for it first"),
    )
}

/// Refuses areas SGS has no brokers for, naming them and the configured ones.
fn check_areas(record: &ServiceRecord, config: &SgsConfig) -> Result<(), Answer> {
    let unknown: Vec<&str> = record
        .deployed_areas
        .iter()
        .filter(|a| !config.areas.contains_key(*a))
        .map(String::as_str)
        .collect();
    if unknown.is_empty() {
        return Ok(());
    }
    let known: Vec<&str> = config.areas.keys().map(String::as_str).collect();
    Err(Answer::refused(
        Status::InvalidArgument,
        format!(
            "service {}: area {} not configured in SGS (configured: {})",
            record.service_id,
            unknown.join(", "),
            if known.is_empty() {
                "none".into()
            } else {
                known.join(", ")
            }
        ),
    ))
}

async fn apply(shared: &Arc<Shared>, body: &[u8]) -> Handled {
    let mut record: ServiceRecord = control::decode(body)?;
    let service = record.service_id()?;
    record.state = ServiceState::Applied;
    record.validate()?;
    let config = &shared.config;
    let refuse = |message: String| Ok(Answer::refused(Status::InvalidArgument, message));
    if record.deployed_areas.is_empty() {
        return refuse(format!(
            "service {service}: name at least one area to deploy to"
        ));
    }
    let mut areas = record.deployed_areas.clone();
    areas.sort();
    areas.dedup();
    if areas.len() != record.deployed_areas.len() {
        return refuse(format!("service {service}: an area is listed twice"));
    }
    record.deployed_areas = areas;
    if let Err(answer) = check_areas(&record, config) {
        return Ok(answer);
    }
    if record.queue_count > QUEUE_COUNT_MAX {
        return refuse(format!(
            "service {service}: {} queues, at most {QUEUE_COUNT_MAX}",
            record.queue_count
        ));
    }
    if record.name.len() > TEXT_LEN_MAX || record.owner.len() > TEXT_LEN_MAX {
        return refuse(format!(
            "service {service}: name and owner are at most {TEXT_LEN_MAX} bytes"
        ));
    }
    let _operation = shared.operations.lock().await;
    let mut store = shared.store();
    match store.get(&service) {
        Some(existing) if existing.state == ServiceState::Deployed => {
            return refuse(format!(
                "service {service} is deployed in {}; take it offline before changing it",
                existing.deployed_areas.join(", ")
            ));
        }
        Some(_) => {}
        None if store.len() >= config.services_max => {
            return Ok(Answer::refused(
                Status::SystemBusy,
                format!("{} services registered (services_max)", store.len()),
            ));
        }
        None => {}
    }
    if let Err(e) = store.put(service.clone(), record.clone()) {
        return Ok(Answer::refused(e.status(), e.0));
    }
    info!(
        "service {service} applied: {:?} by {:?}, areas {:?}, {} queues, depth {}",
        record.name,
        record.owner,
        record.deployed_areas,
        record.queue_count,
        record.max_queue_depth
    );
    Ok(Answer::ok(control::encode(&record)?))
}

/// The record of the service named in `body`, or the answer refusing it.
fn existing(shared: &Shared, body: &[u8]) -> Result<Result<ServiceRecord, Answer>, ControlError> {
    let request: ServiceIdRequest = control::decode(body)?;
    let service = request.service_id()?;
    Ok(shared
        .store()
        .get(&service)
        .cloned()
        .ok_or_else(|| unknown_service(&service)))
}

/// Runs blocking broker or GSL work on the blocking pool.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, String> + Send + 'static,
) -> Result<T, String> {
    tokio::task::spawn_blocking(work)
        .await
        .unwrap_or_else(|e| Err(format!("the operation panicked: {e}")))
}

/// Stores `record`, answering `StorageError` when that fails.
fn record_state(shared: &Shared, record: &ServiceRecord) -> Result<(), Answer> {
    let service = record
        .service_id()
        .map_err(|e| Answer::from_control_error(&e))?;
    shared
        .store()
        .put(service, record.clone())
        .map_err(|e| Answer::refused(e.status(), e.0))
}

/// Pushes `record`'s current deployments to every GSL.
async fn push_to_gsl(shared: &Shared, record: &ServiceRecord) -> Result<(), String> {
    let config = Arc::clone(&shared.config);
    let update = gsl_push::update_for(record, &config);
    blocking(move || gsl_push::push(&config, &[update], config.attempts)).await
}

fn area_topics(record: &ServiceRecord) -> Result<Vec<(String, Topic)>, ControlError> {
    Ok(record
        .deployed_areas
        .iter()
        .cloned()
        .zip(record.topics()?)
        .collect())
}

async fn deploy(shared: &Arc<Shared>, body: &[u8]) -> Handled {
    let _operation = shared.operations.lock().await;
    let mut record = match existing(shared, body)? {
        Ok(record) => record,
        Err(answer) => return Ok(answer),
    };
    if let Err(answer) = check_areas(&record, &shared.config) {
        return Ok(answer);
    }
    let service = record.service_id.clone();
    let areas = area_topics(&record)?;
    let config = Arc::clone(&shared.config);
    let for_brokers = record.clone();
    let created = blocking(move || {
        for (area, topic) in &areas {
            let area_config = &config.areas[area];
            AreaBrokers::connect(area, area_config, &config)?.create_topic(topic, &for_brokers)?;
        }
        Ok(())
    })
    .await;
    if let Err(e) = created {
        info!("deploy of service {service} failed: {e}");
        return Ok(Answer::refused(
            Status::SystemBusy,
            format!("deploy of service {service} failed (deploy again to finish it): {e}"),
        ));
    }
    record.state = ServiceState::Deployed;
    if let Err(answer) = record_state(shared, &record) {
        return Ok(answer);
    }
    if let Err(e) = push_to_gsl(shared, &record).await {
        return Ok(Answer::refused(
            Status::SystemBusy,
            format!(
                "service {service} is deployed but GSL was not updated: {e}; SGS pushes again \
                 every {} ms, or deploy again",
                shared.config.gsl_sync_interval_ms
            ),
        ));
    }
    info!("service {service} deployed in {:?}", record.deployed_areas);
    Ok(Answer::ok(control::encode(&record)?))
}

async fn offline(shared: &Arc<Shared>, body: &[u8]) -> Handled {
    let _operation = shared.operations.lock().await;
    let mut record = match existing(shared, body)? {
        Ok(record) => record,
        Err(answer) => return Ok(answer),
    };
    if let Err(answer) = check_areas(&record, &shared.config) {
        return Ok(answer);
    }
    let service = record.service_id.clone();
    record.state = ServiceState::Offline;
    if let Err(answer) = record_state(shared, &record) {
        return Ok(answer);
    }
    if let Err(e) = push_to_gsl(shared, &record).await {
        return Ok(Answer::refused(
            Status::SystemBusy,
            format!(
                "service {service} is offline but GSL still resolves it: {e}; its topics are \
                 kept; take it offline again"
            ),
        ));
    }
    info!("service {service} no longer resolves; draining its topics");
    // Even a service never deployed is cleaned up: a deploy that failed half-way may have
    // created some of its topics. Both steps are idempotent.
    let areas = area_topics(&record)?;
    let config = Arc::clone(&shared.config);
    let removed = blocking(move || {
        let mut brokers = Vec::new();
        for (area, topic) in &areas {
            let area_brokers = AreaBrokers::connect(area, &config.areas[area], &config)?;
            area_brokers.drain(topic)?;
            brokers.push((area_brokers, topic));
        }
        for (area_brokers, topic) in &brokers {
            area_brokers.delete_topic(topic)?;
        }
        Ok(())
    })
    .await;
    if let Err(e) = removed {
        info!("offline of service {service} incomplete: {e}");
        return Ok(Answer::refused(
            Status::SystemBusy,
            format!("service {service} is offline but its topics remain: {e}"),
        ));
    }
    info!("service {service} is offline; its topics are deleted");
    Ok(Answer::ok(control::encode(&record)?))
}

fn list(shared: &Shared) -> Handled {
    let services = shared.store().records();
    Ok(Answer::ok(control::encode(&ServiceList { services })?))
}

fn show(shared: &Shared, body: &[u8]) -> Handled {
    match existing(shared, body)? {
        Ok(record) => Ok(Answer::ok(control::encode(&record)?)),
        Err(answer) => Ok(answer),
    }
}

/// The service a lifecycle command acts on, if `command` is one (apply, deploy, offline).
fn service_of(command: Command, body: &[u8]) -> Option<String> {
    match command {
        Command::ServiceApply => control::decode::<ServiceRecord>(body)
            .ok()
            .map(|r| r.service_id),
        Command::ServiceDeploy | Command::ServiceOffline => {
            control::decode::<ServiceIdRequest>(body)
                .ok()
                .map(|r| r.service_id)
        }
        _ => None,
    }
}

/// Lifecycle commands need `admin_service` on the service id; listing and showing are for
/// every authenticated caller. A body that does not decode is left to the handler to refuse.
fn authorize(
    shared: &Shared,
    caller: &Caller,
    command: Command,
    body: &[u8],
) -> Result<(), Answer> {
    match service_of(command, body) {
        Some(service) => caller.check(&shared.authority, Action::AdminService, &service, None),
        None => Ok(()),
    }
}

/// Records a lifecycle command and how it ended in the audit log.
fn audit(shared: &Shared, caller: &Caller, command: Command, body: &[u8], answer: &Answer) {
    let Some(service) = service_of(command, body) else {
        return;
    };
    let action = match command {
        Command::ServiceApply => "service_apply",
        Command::ServiceDeploy => "service_deploy",
        _ => "service_offline",
    };
    caller.audit_answer(&shared.authority, action, &service, answer);
}
