//! The web console and the read API behind it (docs/ARCHITECTURE.md, "Console").
//!
//! - [`assets`]: the console's page, style sheet and script, compiled into the binary and
//!   served at `/console` under a strict Content-Security-Policy.
//! - [`view`]: the JSON answers of `GET /v1/cluster`, `/v1/topics`, `/v1/groups` and
//!   `/v1/services`, built from what the CLI reads (`admin broker list`, `admin topic
//!   list|stats`, `sgs service list`): no new broker command.
//! - [`sgs`]: the SGS calls (list, deploy, offline).
//! - [`Console`]: runs those reads for the routes, bounded: [`CONSOLE_READS_MAX`] at once,
//!   each within [`CONSOLE_READ_TIMEOUT`], every listing capped (brokers, queue rows,
//!   services, GSL lookups), lifecycle actions [`CONSOLE_ACTIONS_MAX`] at once.
//!
//! Rates are not computed here: every answer carries `read_at_ms`, and a rate is the
//! difference of two reads over the difference of their times. The proxy keeps no history
//! per caller that way, and each viewer gets the rate over its own refresh interval; the
//! metrics endpoint is the place for server-side rates.

pub mod assets;
pub mod sgs;
pub mod view;

use std::sync::Arc;
use std::time::Duration;

use client::{Admin, Client, ServiceLocator};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::config::{
    CONSOLE_ACTION_TIMEOUT, CONSOLE_ACTIONS_MAX, CONSOLE_BROKERS_MAX, CONSOLE_GSL_LOOKUPS_MAX,
    CONSOLE_READ_TIMEOUT, CONSOLE_READS_MAX, CONSOLE_SERVICES_MAX, ProxyConfig,
};
use crate::error::{ApiError, ProxyError};
use sgs::{Lifecycle, Sgs};
use view::{ClusterView, GroupsView, NameserverView, ServiceView, ServicesView, TopicsView};

/// What the read and lifecycle routes share: the bus and SGS to ask, and the bounds.
pub struct Console {
    sources: Arc<Sources>,
    reads: Arc<Semaphore>,
    actions: Arc<Semaphore>,
}

/// Where the answers come from.
struct Sources {
    /// Admin calls over the proxy's shared client (brokers, nameservers).
    admin: Admin,
    /// GSL resolution through the shared client's cache, when GSL endpoints are configured.
    locator: Option<ServiceLocator>,
    /// The SGS, when `sgs_endpoint` is configured.
    sgs: Option<Sgs>,
}

impl Console {
    /// The console of a proxy with `config`, reading through its shared `client` and
    /// presenting `token` (the proxy's own) to the SGS.
    pub fn new(
        config: &ProxyConfig,
        client: &Client,
        token: Option<String>,
    ) -> Result<Self, ProxyError> {
        let sgs = match &config.sgs_endpoint {
            Some(endpoint) => {
                let tls = config
                    .tls
                    .as_ref()
                    .map(svc::rpc::TlsClient::new)
                    .transpose()
                    .map_err(ProxyError::Tls)?;
                Some(Sgs::new(endpoint.clone(), token, tls))
            }
            None => None,
        };
        Ok(Self {
            sources: Arc::new(Sources {
                admin: Admin::new(client),
                locator: (!config.gsl_endpoints.is_empty()).then(|| client.locator()),
                sgs,
            }),
            reads: Arc::new(Semaphore::new(CONSOLE_READS_MAX)),
            actions: Arc::new(Semaphore::new(CONSOLE_ACTIONS_MAX)),
        })
    }

    /// Brokers with their shards, and what each nameserver knows.
    pub async fn cluster(&self) -> Result<ClusterView, ApiError> {
        self.read(|sources| {
            let info = sources.admin.cluster_info().map_err(ApiError::from)?;
            let mut brokers = info.brokers.clone();
            brokers.sort_by(|a, b| a.broker_id.cmp(&b.broker_id));
            brokers.truncate(CONSOLE_BROKERS_MAX);
            let stats: Vec<_> = brokers
                .iter()
                .map(|b| {
                    let stats = match b.shard_ports.first() {
                        Some(port) => sources
                            .admin
                            .stats(&format!("{}:{port}", b.address))
                            .map_err(|e| e.to_string()),
                        None => Err("registered no shard port".to_owned()),
                    };
                    (b.broker_id.clone(), stats)
                })
                .collect();
            let nameservers = sources
                .admin
                .nameservers()
                .iter()
                .map(|address| match sources.admin.cluster_info_from(address) {
                    Ok(info) => NameserverView {
                        address: address.clone(),
                        reachable: true,
                        brokers: Some(info.brokers.len() as u32),
                        error: None,
                    },
                    Err(e) => NameserverView {
                        address: address.clone(),
                        reachable: false,
                        brokers: None,
                        error: Some(e.to_string()),
                    },
                })
                .collect();
            Ok(view::cluster(
                auth::now_ms(),
                &info,
                &stats,
                nameservers,
                CONSOLE_BROKERS_MAX,
            ))
        })
        .await
    }

    /// Every topic's queues (`only` one topic when given).
    pub async fn topics(&self, only: Option<String>) -> Result<TopicsView, ApiError> {
        self.read(move |sources| {
            let reads = broker_reads(&sources.admin)?;
            Ok(view::topics(auth::now_ms(), &reads, only.as_deref()))
        })
        .await
    }

    /// Every consumer group's progress (`only` on one topic when given).
    pub async fn groups(&self, only: Option<String>) -> Result<GroupsView, ApiError> {
        self.read(move |sources| {
            let reads = broker_reads(&sources.admin)?;
            Ok(view::groups(auth::now_ms(), &reads, only.as_deref()))
        })
        .await
    }

    /// Every service the SGS holds, with where GSL resolves the deployed ones.
    pub async fn services(&self) -> Result<ServicesView, ApiError> {
        self.read(|sources| {
            let sgs = sources.sgs()?;
            let mut records = sgs.list(CONSOLE_READ_TIMEOUT)?;
            records.sort_by(|a, b| a.service_id.cmp(&b.service_id));
            let truncated = records.len() > CONSOLE_SERVICES_MAX;
            records.truncate(CONSOLE_SERVICES_MAX);
            let mut lookups = 0;
            let services = records
                .iter()
                .map(|record| {
                    let deployed = record.state == protocol::control::ServiceState::Deployed;
                    let resolution = match &sources.locator {
                        Some(locator) if deployed && lookups < CONSOLE_GSL_LOOKUPS_MAX => {
                            lookups += 1;
                            Some(resolve(locator, &record.service_id))
                        }
                        _ => None,
                    };
                    view::service(record, resolution)
                })
                .collect();
            Ok(ServicesView {
                read_at_ms: auth::now_ms(),
                sgs: sgs.endpoint().to_owned(),
                services,
                truncated,
            })
        })
        .await
    }

    /// Runs `action` on `service_id` through the SGS; the service as it now stands. 404 when
    /// the SGS holds no such service, 429 when [`CONSOLE_ACTIONS_MAX`] actions are running.
    pub async fn act(
        &self,
        action: Lifecycle,
        service_id: String,
    ) -> Result<ServiceView, ApiError> {
        let permit = self.actions.clone().try_acquire_owned().map_err(|_| {
            ApiError::too_many(format!(
                "{CONSOLE_ACTIONS_MAX} service actions are running; try again when one ends"
            ))
        })?;
        let sources = self.sources.clone();
        let work = move || {
            let _permit = permit;
            let sgs = sources.sgs()?;
            let known = sgs
                .list(CONSOLE_READ_TIMEOUT)?
                .iter()
                .any(|r| r.service_id == service_id);
            if !known {
                return Err(ApiError::not_found(format!(
                    "SGS {} holds no service {service_id:?}: apply for it first \
                     (`defibus sgs service apply`)",
                    sgs.endpoint()
                )));
            }
            let record = sgs.act(action, &service_id, CONSOLE_ACTION_TIMEOUT)?;
            log::info!(
                "service {service_id}: {} through the console, now {}",
                action.name(),
                view::state_name(record.state)
            );
            // GSL changed with the action: the cached resolution is stale.
            let resolution = sources.locator.as_ref().map(|locator| {
                locator.invalidate(&service_id);
                resolve(locator, &service_id)
            });
            Ok(view::service(&record, resolution))
        };
        // The SGS call has its own timeout; this one only catches a stuck thread.
        run_blocking(work, CONSOLE_ACTION_TIMEOUT + Duration::from_secs(5)).await
    }

    /// Runs `work` on a blocking thread once a read slot is free, all within
    /// [`CONSOLE_READ_TIMEOUT`]; the slot is held until the work ends, even past the
    /// deadline, so the bound on reads in flight holds.
    async fn read<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Sources) -> Result<T, ApiError> + Send + 'static,
    ) -> Result<T, ApiError> {
        let deadline = tokio::time::Instant::now() + CONSOLE_READ_TIMEOUT;
        let permit: OwnedSemaphorePermit =
            tokio::time::timeout_at(deadline, self.reads.clone().acquire_owned())
                .await
                .map_err(|_| {
                    ApiError::too_many(format!(
                        "{CONSOLE_READS_MAX} console reads are running; try again"
                    ))
                })?
                .map_err(|_| ApiError::internal("the console's read slots are closed"))?;
        let sources = self.sources.clone();
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        run_blocking(
            move || {
                let _permit = permit;
                work(&sources)
            },
            left,
        )
        .await
    }
}

impl Sources {
    fn sgs(&self) -> Result<&Sgs, ApiError> {
        self.sgs.as_ref().ok_or_else(|| {
            ApiError::unavailable(
                "no SGS configured: start the proxy with --sgs HOST:PORT (sgs_endpoint)",
            )
        })
    }
}

/// Runs blocking `work` off the async workers; 504 when it has not ended within `timeout`.
async fn run_blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
    timeout: Duration,
) -> Result<T, ApiError> {
    match tokio::time::timeout(timeout, tokio::task::spawn_blocking(work)).await {
        Ok(Ok(answer)) => answer,
        Ok(Err(e)) => Err(ApiError::internal(format!("the console read failed: {e}"))),
        Err(_) => Err(ApiError::gateway_timeout(format!(
            "the bus did not answer within {} ms",
            timeout.as_millis()
        ))),
    }
}

/// Each live broker's topic list and statistics (or why they could not be read), by id,
/// at most [`CONSOLE_BROKERS_MAX`]. Blocking.
fn broker_reads(admin: &Admin) -> Result<Vec<(String, view::BrokerRead)>, ApiError> {
    let info = admin.cluster_info().map_err(ApiError::from)?;
    let mut brokers = info.brokers;
    brokers.sort_by(|a, b| a.broker_id.cmp(&b.broker_id));
    brokers.truncate(CONSOLE_BROKERS_MAX);
    Ok(brokers
        .into_iter()
        .map(|b| {
            let read = match b.shard_ports.first() {
                Some(port) => {
                    let endpoint = format!("{}:{port}", b.address);
                    admin
                        .list_topics(&endpoint)
                        .and_then(|topics| Ok((topics, admin.stats(&endpoint)?)))
                        .map_err(|e| e.to_string())
                }
                None => Err("registered no shard port".to_owned()),
            };
            (b.broker_id, read)
        })
        .collect())
}

/// Where GSL resolves `service_id` from the proxy's area: its areas, nearest first.
fn resolve(locator: &ServiceLocator, service_id: &str) -> view::Resolution {
    locator
        .resolve(service_id)
        .map(|deployments| deployments.iter().map(|d| d.area.clone()).collect())
        .map_err(|e| e.to_string())
}
