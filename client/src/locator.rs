//! Service location: calls and subscriptions by service id (DESIGN §6, GSL).
//!
//! A service is deployed as one topic per area, `[area]-[serviceId]`. GSL answers
//! `resolve(serviceId, callerArea)` with the deployments, the caller's area first. The client
//! caches each answer ([`ServiceCache`]) and refreshes it every `service_refresh_interval` (on
//! use, and in the background like routes). GSL is off the data path: when no GSL answers, a
//! cached resolution is used however old (and the failure logged), so a GSL outage stops only
//! services never resolved before.
//!
//! A call goes to the first deployment, nearest first, whose topic is routable and has a
//! healthy writable queue (one not isolated); when that fails, to the routable ones before it
//! (no healthy queue), then to those after it; a deployment whose topic is unknown or
//! unroutable is skipped. [`ServiceLocator`] is the public face.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use protocol::codes::Command;
use protocol::control::{self, Deployment, GslResolveReply, GslResolveRequest};
use protocol::names::{Area, ServiceId};

use crate::client::{Client, ClientInner};
use crate::config::CACHED_SERVICES_MAX;
use crate::error::{ClientError, Result};
use crate::net::{PeerKind, Pool};

/// A cached resolution.
struct Cached {
    deployments: Arc<[Deployment]>,
    fetched: Instant,
}

/// GSL resolutions by service id, fetched from any GSL that answers.
pub(crate) struct ServiceCache {
    gsl_endpoints: Vec<String>,
    area: Area,
    refresh_interval: Duration,
    request_timeout: Duration,
    cache: Mutex<HashMap<ServiceId, Cached>>,
    /// The GSL to ask first: the one that answered last.
    preferred: AtomicUsize,
}

impl ServiceCache {
    pub(crate) fn new(
        gsl_endpoints: Vec<String>,
        area: Area,
        refresh_interval: Duration,
        request_timeout: Duration,
    ) -> Self {
        Self {
            gsl_endpoints,
            area,
            refresh_interval,
            request_timeout,
            cache: Mutex::default(),
            preferred: AtomicUsize::new(0),
        }
    }

    /// The deployments of `service_id`, nearest first (empty when it is deployed nowhere):
    /// cached while fresh, else from GSL (a stale cached answer when no GSL answers).
    pub(crate) fn resolve(&self, pool: &Pool, service_id: &str) -> Result<Arc<[Deployment]>> {
        let service: ServiceId = service_id.parse()?;
        let cached = self.lock().get(&service).map(|c| {
            (
                Arc::clone(&c.deployments),
                c.fetched.elapsed() < self.refresh_interval,
            )
        });
        let deployments = match cached {
            Some((deployments, true)) => deployments,
            Some((stale, false)) => match self.refresh(pool, &service) {
                Ok(deployments) => deployments,
                Err(e) if e.status().is_none() => {
                    log::warn!("using a stale location of service {service}: {e}");
                    stale
                }
                Err(e) => return Err(e),
            },
            None => self.refresh(pool, &service)?,
        };
        Ok(deployments)
    }

    /// Asks GSL about `service` now and caches the answer (an empty one too: the service
    /// was taken offline).
    fn refresh(&self, pool: &Pool, service: &ServiceId) -> Result<Arc<[Deployment]>> {
        let deployments: Arc<[Deployment]> = self.fetch(pool, service)?.into();
        let mut cache = self.lock();
        if cache.len() >= CACHED_SERVICES_MAX && !cache.contains_key(service) {
            let oldest = cache
                .iter()
                .min_by_key(|(_, c)| c.fetched)
                .map(|(s, _)| s.clone());
            if let Some(oldest) = oldest {
                cache.remove(&oldest);
            }
        }
        cache.insert(
            service.clone(),
            Cached {
                deployments: Arc::clone(&deployments),
                fetched: Instant::now(),
            },
        );
        Ok(deployments)
    }

    /// Refreshes every cached service older than the refresh interval (the maintenance
    /// thread's job, so callers seldom wait for GSL); failures keep the cached answers.
    pub(crate) fn refresh_stale(&self, pool: &Pool) {
        let services: Vec<ServiceId> = self
            .lock()
            .iter()
            .filter(|(_, c)| c.fetched.elapsed() >= self.refresh_interval)
            .map(|(s, _)| s.clone())
            .collect();
        for service in services {
            if let Err(e) = self.refresh(pool, &service) {
                log::debug!("refresh of service {service}'s location failed: {e}");
            }
        }
    }

    /// Forgets `service_id`'s cached resolution.
    pub(crate) fn invalidate(&self, service_id: &str) {
        if let Ok(service) = service_id.parse::<ServiceId>() {
            self.lock().remove(&service);
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<ServiceId, Cached>> {
        self.cache.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Asks the GSLs in turn, from the one that answered last. A refusal is GSL's answer,
    /// the same from every GSL, so it ends the search.
    fn fetch(&self, pool: &Pool, service: &ServiceId) -> Result<Vec<Deployment>> {
        let count = self.gsl_endpoints.len();
        if count == 0 {
            return Err(ClientError::InvalidArgument(format!(
                "service {service}: no GSL endpoint configured (ClientConfig::with_gsl)"
            )));
        }
        let body = control::encode(&GslResolveRequest {
            service_id: service.to_string(),
            caller_area: self.area.to_string(),
        })
        .map_err(|e| ClientError::control("(local)", e))?;
        let first = self.preferred.load(Ordering::Relaxed);
        let mut last_error = None;
        for index in (0..count).map(|i| (first + i) % count) {
            let endpoint = &self.gsl_endpoints[index];
            let answer = pool
                .get(endpoint, PeerKind::Control)
                .and_then(|conn| conn.call(Command::GslResolve, &[], &body, self.request_timeout))
                .and_then(|frame| {
                    control::decode::<GslResolveReply>(&frame.body)
                        .map_err(|e| ClientError::control(endpoint, e))
                });
            match answer {
                Ok(reply) => {
                    self.preferred.store(index, Ordering::Relaxed);
                    return Ok(reply.deployments);
                }
                Err(e @ ClientError::Status { .. }) => return Err(e),
                Err(e) => {
                    log::debug!("GSL {endpoint}: resolve of {service}: {e}");
                    last_error = Some(e);
                }
            }
        }
        let last = last_error.map_or_else(|| "no answer".to_owned(), |e| e.to_string());
        Err(ClientError::ServiceUnavailable {
            service: service.to_string(),
            reason: format!("no GSL answered ({last})"),
        })
    }
}

impl ClientInner {
    /// The topics to call `service_id` on, in order of preference: the first deployment
    /// (nearest first) whose route has a healthy writable queue, then the routable ones
    /// before it that have none, then every deployment after it, unchecked (a call only
    /// gets there when the first fails, so the common path asks no nameserver about other
    /// areas). The route cache learns each checked deployment's nameservers on the way.
    /// Fails when no deployment is routable, naming why for each.
    pub(crate) fn service_topics(&self, service_id: &str) -> Result<Vec<String>> {
        let deployments = self.services.resolve(&self.pool, service_id)?;
        if deployments.is_empty() {
            return Err(ClientError::NotDeployed {
                service: service_id.to_owned(),
            });
        }
        let mut degraded = Vec::new();
        let mut skipped = Vec::new();
        for (index, deployment) in deployments.iter().enumerate() {
            self.routes
                .set_topic_nameservers(&deployment.topic, &deployment.nameservers);
            match self.route(&deployment.topic) {
                Ok(route) if route.has_healthy_writable(&self.isolation) => {
                    let rest = deployments[index + 1..].iter().map(|d| {
                        self.routes.set_topic_nameservers(&d.topic, &d.nameservers);
                        d.topic.clone()
                    });
                    let mut topics = vec![deployment.topic.clone()];
                    topics.append(&mut degraded);
                    topics.extend(rest);
                    return Ok(topics);
                }
                Ok(route) if route.has_writable() => degraded.push(deployment.topic.clone()),
                Ok(_) => skipped.push(format!("{}: no writable queue", deployment.topic)),
                Err(ClientError::Closed) => return Err(ClientError::Closed),
                Err(e) => skipped.push(format!("{}: {e}", deployment.topic)),
            }
        }
        if degraded.is_empty() {
            return Err(ClientError::ServiceUnavailable {
                service: service_id.to_owned(),
                reason: format!("no deployment is routable: {}", skipped.join("; ")),
            });
        }
        log::debug!(
            "service {service_id}: no deployment has a healthy queue; skipped {}",
            skipped.join("; ")
        );
        Ok(degraded)
    }
}

/// Resolves service ids to their deployments through GSL, cached: a handle on a client's
/// resolution cache, from [`Client::locator`]. Cheap to clone.
#[derive(Clone)]
pub struct ServiceLocator {
    client: Arc<ClientInner>,
}

impl std::fmt::Debug for ServiceLocator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceLocator")
            .field("gsl_endpoints", &self.client.config.gsl_endpoints)
            .field("area", &self.client.config.area)
            .finish()
    }
}

impl ServiceLocator {
    pub(crate) fn new(client: &Client) -> Self {
        Self {
            client: client.inner.clone(),
        }
    }

    /// The deployments of `service_id`, the client's own area first, then the others by
    /// area code; empty when it is deployed nowhere (never deployed, or offline). Fresh from
    /// the cache, else from GSL (a stale cached answer when no GSL answers).
    pub fn resolve(&self, service_id: &str) -> Result<Arc<[Deployment]>> {
        self.client.services.resolve(&self.client.pool, service_id)
    }

    /// The nearest deployment of `service_id`: the client's own area's when there is one;
    /// [`ClientError::NotDeployed`] when there is none.
    pub fn nearest(&self, service_id: &str) -> Result<Deployment> {
        self.resolve(service_id)?
            .first()
            .cloned()
            .ok_or_else(|| ClientError::NotDeployed {
                service: service_id.to_owned(),
            })
    }

    /// The topics a call to `service_id` would try, in order: the nearest deployment with a
    /// healthy writable queue first (see the module docs).
    pub fn topics(&self, service_id: &str) -> Result<Vec<String>> {
        self.client.service_topics(service_id)
    }

    /// Forgets the cached resolution of `service_id`, so the next use asks GSL.
    pub fn invalidate(&self, service_id: &str) {
        self.client.services.invalidate(service_id);
    }
}
