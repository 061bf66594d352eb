//! What the nameserver answers to each request: decoding, the registry call, the reply.
//!
//! No IO here: [`handle`] turns one parsed request into one [`Answer`], and the connection
//! decides what to write and whether to go on (see [`svc::connection`]).

use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use auth::{Action, Authority, Outcome, Policy};
use log::{debug, info, warn};
use protocol::codes::{Command, Status};
use protocol::control::{
    self, BrokerId, BrokerRegistration, ControlError, PolicyDocument, PolicyGet, RegisterAck,
    TopicName,
};
use protocol::frame::Framer;
use svc::connection::{Answer, Caller, Handler};

use svc::rpc::TlsClient;
use svc::stream::TlsServer;

use crate::config::NameserverConfig;
use crate::registry::{Registered, Registry, Timestamp};

/// State every connection shares.
pub(crate) struct Shared {
    registry: Mutex<Registry>,
    pub(crate) config: NameserverConfig,
    pub(crate) framer: Framer,
    /// The replication controller this nameserver runs, if configured.
    pub(crate) controller: Option<Arc<controller::Controller>>,
    /// The security policy this nameserver keeps and serves.
    authority: Authority,
    /// Held while a `PolicyPut` compares, stores and installs, so two writers are ordered.
    policy_write: Mutex<()>,
    /// This nameserver's own token (`security.token_file`), for the `QueueRole`s its
    /// controller sends to brokers.
    token: Option<String>,
    tls: Tls,
    /// Registry events, for metrics.
    pub(crate) counters: crate::metrics::Counters,
}

/// The nameserver's TLS sides, when `[tls]` is set.
#[derive(Default)]
pub(crate) struct Tls {
    /// On the listener.
    pub(crate) server: Option<TlsServer>,
    /// On the queue roles the controller sends brokers.
    pub(crate) client: Option<TlsClient>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("config", &self.config)
            .field("controller", &self.controller.as_ref().map(|c| c.node_id()))
            .finish_non_exhaustive()
    }
}

impl Shared {
    pub(crate) fn new(
        config: NameserverConfig,
        controller: Option<Arc<controller::Controller>>,
        authority: Authority,
        token: Option<String>,
        tls: Tls,
    ) -> Arc<Self> {
        Arc::new(Self {
            registry: Mutex::new(Registry::new(config.broker_expiry())),
            framer: Framer::new(config.frame_limits()),
            config,
            controller,
            authority,
            policy_write: Mutex::new(()),
            token,
            tls,
            counters: Default::default(),
        })
    }

    /// TLS for the nameserver's own connections (to brokers), when `[tls]` is set.
    pub(crate) fn tls_client(&self) -> Option<TlsClient> {
        self.tls.client.clone()
    }

    /// This nameserver's own token, if it has one.
    pub(crate) fn token(&self) -> Option<String> {
        self.token.clone()
    }

    /// The registry. A panic while it was held cannot leave it half-updated (every update is
    /// one map insert or removal), so a poisoned lock is used as is rather than spreading
    /// the panic to every connection.
    pub(crate) fn registry(&self) -> MutexGuard<'_, Registry> {
        self.registry.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Handler for Shared {
    const NAME: &'static str = "nameserver";

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
        self.tls.server.as_ref()
    }

    fn preauth_frame_bytes_max(&self) -> usize {
        self.config.security.preauth_frame_bytes_max as usize
    }

    /// A nameserver answer needs no waiting (it is computed before the future is returned),
    /// except a proposal to the controller, which waits for the Raft group.
    fn handle(
        self: &Arc<Self>,
        caller: &Caller,
        command: Command,
        body: &[u8],
    ) -> impl Future<Output = Answer> + Send {
        let proposal = (command == Command::ControllerPropose).then(|| {
            caller
                .check(&self.authority, Action::AdminTopic, "*", None)
                .map(|()| body.to_vec())
        });
        let (ready, proposal) = match proposal {
            None => (Some(handle(self, caller, command, body)), None),
            Some(Err(denied)) => (Some(denied), None),
            Some(Ok(body)) => (None, Some(body)),
        };
        let shared = Arc::clone(self);
        let caller = caller.clone();
        async move {
            match (ready, proposal) {
                (Some(answer), _) => answer,
                (None, Some(body)) => {
                    let answer = propose(&shared, &body).await;
                    caller.audit_answer(&shared.authority, "controller_propose", "*", &answer);
                    answer
                }
                (None, None) => Answer::refused(Status::Internal, "no answer"),
            }
        }
    }
}

/// Answers one request of `caller` (authenticated when security is on). Routes and the
/// cluster view are for every authenticated caller; registering, heartbeating and
/// unregistering a broker id need the `broker` grant on that id; changing the policy needs
/// `admin_acl`.
pub(crate) fn handle(shared: &Shared, caller: &Caller, command: Command, body: &[u8]) -> Answer {
    let result = match command {
        Command::BrokerRegister => register(shared, caller, body),
        Command::BrokerUnregister => unregister(shared, caller, body),
        Command::BrokerHeartbeat => heartbeat(shared, caller, body),
        Command::TopicRoute => topic_route(shared, body),
        Command::ClusterInfo => cluster_info(shared),
        Command::PolicyGet => policy_get(shared, body),
        Command::PolicyPut => policy_put(shared, caller, body),
        other => return Answer::not_served::<Shared>(other),
    };
    result.unwrap_or_else(|e| Answer::from_control_error(&e))
}

/// Checks `caller` may act as broker `broker_id`.
fn as_broker(shared: &Shared, caller: &Caller, broker_id: &str) -> Result<(), Answer> {
    caller.check(&shared.authority, Action::Broker, broker_id, None)
}

fn register(shared: &Shared, caller: &Caller, body: &[u8]) -> Result<Answer, ControlError> {
    let registration: BrokerRegistration = control::decode(body)?;
    if let Err(denied) = as_broker(shared, caller, &registration.broker_id) {
        return Ok(denied);
    }
    if let Some(ctl) = &shared.controller {
        registration.validate()?;
        crate::replication::on_register(ctl, &registration);
    }
    let broker_id = registration.broker_id.clone();
    let cluster = registration.cluster.clone();
    let address = registration.address.clone();
    let shard_count = registration.shard_ports.len();
    let topic_count = registration.topics.len();
    let outcome = shared
        .registry()
        .register(registration, Timestamp::now())
        .inspect_err(|e| {
            shared.counters.refused();
            info!("registration of broker {broker_id:?} refused: {e}")
        })?;
    shared.counters.registered(&outcome);
    match outcome {
        Registered::New => info!(
            "broker {broker_id} registered: cluster {cluster}, {address}, \
             {shard_count} shards, {topic_count} topics"
        ),
        Registered::Changed => info!(
            "broker {broker_id} changed its registration: cluster {cluster}, {address}, \
             {shard_count} shards, {topic_count} topics"
        ),
        Registered::Refreshed => debug!("broker {broker_id} refreshed its registration"),
    }
    let ack = RegisterAck {
        expiry_ms: shared.config.broker_expiry_ms,
    };
    Ok(Answer::ok(control::encode(&ack)?))
}

/// `ControllerPropose`: a JSON `controller::Command` proposed to this nameserver's controller
/// (a follower forwards it to the Raft leader); answered with the JSON `Outcome`.
async fn propose(shared: &Shared, body: &[u8]) -> Answer {
    let Some(ctl) = &shared.controller else {
        return Answer::refused(
            Status::UnknownCommand,
            "this nameserver runs no controller (see [controller] in nameserver.toml)",
        );
    };
    let command: controller::Command = match serde_json::from_slice(body) {
        Ok(command) => command,
        Err(e) => {
            return Answer::refused(
                Status::InvalidArgument,
                format!("not a controller command: {e}"),
            );
        }
    };
    match ctl.propose(command).await {
        Ok(outcome) => match serde_json::to_vec(&outcome) {
            Ok(body) => Answer::ok(body),
            Err(e) => Answer::refused(Status::Internal, e.to_string()),
        },
        Err(controller::ControllerError::Rejected(rejected)) => {
            Answer::refused(Status::InvalidArgument, rejected.to_string())
        }
        Err(e) => Answer::refused(Status::SystemBusy, e.to_string()),
    }
}

/// `BrokerHeartbeat`: passed on to the controller's failure detector (a follower node
/// forwards it to the Raft leader), without waiting. A nameserver without a controller has
/// no use for it and says all is well: heartbeats go to every nameserver a broker knows.
fn heartbeat(shared: &Shared, caller: &Caller, body: &[u8]) -> Result<Answer, ControlError> {
    let BrokerId { broker_id } = control::decode(body)?;
    if let Err(denied) = as_broker(shared, caller, &broker_id) {
        return Ok(denied);
    }
    if let Some(ctl) = &shared.controller {
        crate::replication::on_heartbeat(ctl, broker_id);
    }
    Ok(Answer::ok(Vec::new()))
}

fn unregister(shared: &Shared, caller: &Caller, body: &[u8]) -> Result<Answer, ControlError> {
    let BrokerId { broker_id } = control::decode(body)?;
    if let Err(denied) = as_broker(shared, caller, &broker_id) {
        return Ok(denied);
    }
    if shared.registry().unregister(&broker_id) {
        shared.counters.unregistered();
        info!("broker {broker_id} unregistered");
    } else {
        // Unregistering is idempotent: a broker retrying after a lost response, or one that
        // had already expired, is told all is well.
        debug!("unregister of unknown broker {broker_id:?}");
    }
    Ok(Answer::ok(Vec::new()))
}

fn topic_route(shared: &Shared, body: &[u8]) -> Result<Answer, ControlError> {
    let request: TopicName = control::decode(body)?;
    request.topic()?;
    let route = shared
        .registry()
        .topic_route(&request.topic, Instant::now());
    match route {
        Some(route) => Ok(Answer::ok(control::encode(&route)?)),
        None => Ok(Answer::refused(
            Status::UnknownTopic,
            format!("no live broker holds topic {}", request.topic),
        )),
    }
}

fn cluster_info(shared: &Shared) -> Result<Answer, ControlError> {
    let info = shared.registry().cluster_info(Instant::now());
    Ok(Answer::ok(control::encode(&info)?))
}

/// `PolicyGet`: the policy, when newer than the caller's. Every authenticated caller may read
/// it: tokens are stored as hashes of 256-bit secrets, which cannot be turned back into
/// tokens, and every process needs the grants to enforce them.
fn policy_get(shared: &Shared, body: &[u8]) -> Result<Answer, ControlError> {
    let request: PolicyGet = control::decode(body)?;
    if !shared.authority.is_enabled() {
        return Ok(Answer::refused(
            Status::InvalidArgument,
            "security is off on this nameserver: there is no policy ([security] enabled)",
        ));
    }
    let policy = shared.authority.policy();
    let json = if policy.version > request.known_version {
        policy.to_json()
    } else {
        String::new()
    };
    let reply = PolicyDocument {
        version: policy.version,
        json,
    };
    Ok(Answer::ok(control::encode(&reply)?))
}

/// `PolicyPut`: stores a new policy when the caller read the current version, as that
/// version + 1: written to `policy_file` atomically (and synced) before it is in force, so
/// a change acknowledged is never lost to a crash.
fn policy_put(shared: &Shared, caller: &Caller, body: &[u8]) -> Result<Answer, ControlError> {
    let request: PolicyDocument = control::decode(body)?;
    let authority = &shared.authority;
    if !authority.is_enabled() {
        return Ok(Answer::refused(
            Status::InvalidArgument,
            "security is off on this nameserver: there is no policy ([security] enabled)",
        ));
    }
    if let Err(denied) = caller.check(authority, Action::AdminAcl, "*", None) {
        return Ok(denied);
    }
    let _write = shared
        .policy_write
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    // `request.version` is the newest version the writer read (from any nameserver): a
    // nameserver that missed changes (it was down) is behind it and catches up here, so
    // every nameserver ends at the same version; one that moved past it since was changed by
    // another writer, whose change this one must not undo.
    let held = authority.policy().version;
    if held > request.version {
        return Ok(Answer::refused(
            Status::InvalidArgument,
            format!(
                "the policy changed since it was read (version {} read, {held} now): read it \
                 again and reapply the change",
                request.version
            ),
        ));
    }
    let mut policy = match Policy::from_json(&request.json) {
        Ok(policy) => policy,
        Err(e) => return Ok(Answer::refused(Status::InvalidArgument, e.to_string())),
    };
    policy.version = request.version + 1;
    let json = policy.to_json();
    let Some(path) = &shared.config.security.policy_file else {
        return Ok(Answer::refused(Status::Internal, "no security.policy_file"));
    };
    if let Err(e) = svc::file::write_atomically(path, json.as_bytes()) {
        warn!(
            "cannot store policy version {}: {}: {e}",
            policy.version,
            path.display()
        );
        caller.audit(
            authority,
            "policy_put",
            "policy",
            Outcome::Failed,
            &e.to_string(),
        );
        return Ok(Answer::refused(
            Status::StorageError,
            format!("cannot store the policy in {}: {e}", path.display()),
        ));
    }
    let version = policy.version;
    let summary = format!(
        "version {version}: {}",
        changes(&authority.policy(), &policy)
    );
    authority.install(policy);
    caller.audit(authority, "policy_put", "policy", Outcome::Ok, &summary);
    let reply = PolicyDocument {
        version,
        json: String::new(),
    };
    Ok(Answer::ok(control::encode(&reply)?))
}

/// What a new policy changes, for the audit log: grants and tokens added and removed (tokens
/// by id and principal; never a secret or its hash).
fn changes(old: &Policy, new: &Policy) -> String {
    let mut parts = Vec::new();
    for grant in new.grants.iter().filter(|g| !old.grants.contains(g)) {
        parts.push(format!("+grant {grant}"));
    }
    for grant in old.grants.iter().filter(|g| !new.grants.contains(g)) {
        parts.push(format!("-grant {grant}"));
    }
    let has = |policy: &Policy, id: &str| policy.tokens.iter().any(|t| t.id == id);
    for token in new.tokens.iter().filter(|t| !has(old, &t.id)) {
        parts.push(format!("+token {} of {}", token.id, token.principal));
    }
    for token in old.tokens.iter().filter(|t| !has(new, &t.id)) {
        parts.push(format!("-token {} of {}", token.id, token.principal));
    }
    if parts.is_empty() {
        "no change".to_owned()
    } else {
        parts.join(", ")
    }
}
