//! `ServiceLocator`: a blocking client-side cache of GSL resolutions, so applications call
//! and subscribe by service id.
//!
//! A resolution is cached per service and refetched once older than `refresh_interval`. GSL
//! is off the data path: when no GSL answers, a cached resolution is used however old (and
//! the failure logged), so a GSL outage stops only services never resolved before.
//!
//! (It belongs in the client SDK as `client::ServiceLocator`, beside the route cache; it lives
//! here until the client crate takes it.)

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use log::warn;
use protocol::codes::Command;
use protocol::control::{self, Deployment, GslResolveReply, GslResolveRequest};
use protocol::names::{Area, NameError, ServiceId};

use crate::rpc::{Connection, RpcError};

/// Default age past which a cached resolution is refetched: 30 s, the client's route refresh
/// period, so a service's locations and its routes go stale together.
pub const REFRESH_INTERVAL_DEFAULT: Duration = Duration::from_secs(30);
/// Default timeout of connecting to GSL and of one resolve.
pub const REQUEST_TIMEOUT_DEFAULT: Duration = Duration::from_secs(3);
/// Most services cached; past it the oldest resolution is dropped.
pub const CACHED_SERVICES_MAX: usize = 10_000;

/// Why a service could not be located.
#[derive(Debug, thiserror::Error)]
pub enum LocatorError {
    /// The service id or the area is not well formed.
    #[error(transparent)]
    InvalidName(#[from] NameError),
    /// GSL knows no deployment of the service: it was never deployed or is offline.
    #[error("service {service} is not deployed in any area")]
    NotDeployed {
        /// The service.
        service: String,
    },
    /// No GSL answered and nothing is cached; the last GSL's error.
    #[error("no GSL answered: {0}")]
    Unreachable(#[source] RpcError),
    /// GSL refused the request.
    #[error("GSL refused: {0}")]
    Refused(#[source] RpcError),
    /// No GSL endpoint is configured.
    #[error("no GSL endpoint configured")]
    NoEndpoint,
}

/// How a [`ServiceLocator`] finds GSL and paces refreshes.
#[derive(Clone, Debug)]
pub struct LocatorConfig {
    /// GSL endpoints, `host:port`, tried in turn until one answers.
    pub gsl_endpoints: Vec<String>,
    /// The caller's area: its own deployment comes first.
    pub area: Area,
    /// Age past which a cached resolution is refetched.
    pub refresh_interval: Duration,
    /// Timeout of connecting and of one resolve.
    pub request_timeout: Duration,
}

impl LocatorConfig {
    /// A configuration for a caller in `area`, every other field at its default.
    pub fn new<S: Into<String>>(
        gsl_endpoints: impl IntoIterator<Item = S>,
        area: &str,
    ) -> Result<Self, NameError> {
        Ok(Self {
            gsl_endpoints: gsl_endpoints.into_iter().map(Into::into).collect(),
            area: area.parse()?,
            refresh_interval: REFRESH_INTERVAL_DEFAULT,
            request_timeout: REQUEST_TIMEOUT_DEFAULT,
        })
    }
}

struct Cached {
    deployments: Arc<[Deployment]>,
    fetched: Instant,
}

/// Resolves service ids to deployments, nearest first, through a cache.
pub struct ServiceLocator {
    config: LocatorConfig,
    cache: Mutex<HashMap<ServiceId, Cached>>,
    /// The connection to the GSL that answered last, and that GSL's index.
    connection: Mutex<Option<(usize, Connection)>>,
}

impl std::fmt::Debug for ServiceLocator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceLocator")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl ServiceLocator {
    /// A locator with an empty cache; it connects on first use.
    pub fn new(config: LocatorConfig) -> Self {
        Self {
            config,
            cache: Mutex::default(),
            connection: Mutex::default(),
        }
    }

    /// The deployments of `service_id`, the caller's area first; empty when it is deployed
    /// nowhere. From the cache when fresh, else from GSL (falling back to a stale cached
    /// answer when no GSL answers).
    pub fn resolve(&self, service_id: &str) -> Result<Arc<[Deployment]>, LocatorError> {
        let service: ServiceId = service_id.parse()?;
        let now = Instant::now();
        if let Some(cached) = self.cache().get(&service) {
            if now.duration_since(cached.fetched) < self.config.refresh_interval {
                return Ok(Arc::clone(&cached.deployments));
            }
        }
        match self.fetch(&service) {
            Ok(deployments) => {
                let deployments: Arc<[Deployment]> = deployments.into();
                self.remember(service, Arc::clone(&deployments), now);
                Ok(deployments)
            }
            Err(e) => match self.cache().get(&service) {
                Some(cached) => {
                    warn!("using a stale location of service {service}: {e}");
                    Ok(Arc::clone(&cached.deployments))
                }
                None => Err(e),
            },
        }
    }

    /// The nearest deployment of `service_id`: in the caller's area when there is one.
    pub fn nearest(&self, service_id: &str) -> Result<Deployment, LocatorError> {
        self.resolve(service_id)?
            .first()
            .cloned()
            .ok_or_else(|| LocatorError::NotDeployed {
                service: service_id.to_owned(),
            })
    }

    /// Forgets the cached resolution of `service_id`, so the next call asks GSL (after a send
    /// to its topic failed with an unknown topic, say).
    pub fn invalidate(&self, service_id: &str) {
        if let Ok(service) = service_id.parse::<ServiceId>() {
            self.cache().remove(&service);
        }
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, HashMap<ServiceId, Cached>> {
        self.cache.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn remember(&self, service: ServiceId, deployments: Arc<[Deployment]>, fetched: Instant) {
        let mut cache = self.cache();
        if cache.len() >= CACHED_SERVICES_MAX && !cache.contains_key(&service) {
            let oldest = cache
                .iter()
                .min_by_key(|(_, c)| c.fetched)
                .map(|(s, _)| s.clone());
            if let Some(oldest) = oldest {
                cache.remove(&oldest);
            }
        }
        cache.insert(
            service,
            Cached {
                deployments,
                fetched,
            },
        );
    }

    /// Asks the GSLs in turn, starting with the one that answered last.
    fn fetch(&self, service: &ServiceId) -> Result<Vec<Deployment>, LocatorError> {
        let endpoints = &self.config.gsl_endpoints;
        if endpoints.is_empty() {
            return Err(LocatorError::NoEndpoint);
        }
        let request = GslResolveRequest {
            service_id: service.to_string(),
            caller_area: self.config.area.to_string(),
        };
        let body = control::encode(&request).map_err(|e| {
            LocatorError::Unreachable(RpcError::Protocol {
                endpoint: "(local)".into(),
                reason: e.to_string(),
            })
        })?;
        let mut slot = self
            .connection
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let first = slot.as_ref().map_or(0, |(index, _)| *index);
        let mut last_error = None;
        for index in (0..endpoints.len()).map(|i| (first + i) % endpoints.len()) {
            let mut connection = match slot.take() {
                Some((i, connection)) if i == index => connection,
                _ => match Connection::connect(&endpoints[index], self.config.request_timeout) {
                    Ok(connection) => connection,
                    Err(e) => {
                        last_error = Some(e);
                        continue;
                    }
                },
            };
            let answer = connection
                .call(Command::GslResolve, &body, self.config.request_timeout)
                .and_then(|frame| {
                    control::decode::<GslResolveReply>(&frame.body).map_err(|e| {
                        RpcError::Protocol {
                            endpoint: connection.endpoint().to_owned(),
                            reason: e.to_string(),
                        }
                    })
                });
            match answer {
                Ok(reply) => {
                    *slot = Some((index, connection));
                    return Ok(reply.deployments);
                }
                // A refusal is GSL's answer, the same from every GSL, and leaves the
                // connection usable.
                Err(e) if e.status().is_some() => {
                    *slot = Some((index, connection));
                    return Err(LocatorError::Refused(e));
                }
                Err(e) => last_error = Some(e),
            }
        }
        Err(LocatorError::Unreachable(
            last_error.expect("at least one endpoint was tried"),
        ))
    }
}
