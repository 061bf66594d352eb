//! The service directory: service id → deployments, and nearby-first resolution.
//!
//! Pure data, no IO: [`crate::store`] makes it durable. Deployments are kept sorted by area
//! code, which is the stable order of the areas after the caller's own.

use std::collections::BTreeMap;

use protocol::codes::Status;
use protocol::control::{Deployment, GslUpdate};
use protocol::names::{Area, ServiceId, Topic};

/// Longest cluster name or nameserver address accepted in a deployment, in bytes.
pub const FIELD_LEN_MAX: usize = 256;
/// Most nameservers listed in one deployment.
pub const NAMESERVERS_PER_DEPLOYMENT_MAX: usize = 16;

/// Why an update was refused: the status to answer with and a message naming the field.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Refusal {
    /// `InvalidName` or `InvalidArgument`.
    pub status: Status,
    /// What is wrong, naming the service, area or field.
    pub message: String,
}

impl Refusal {
    fn name(error: impl std::fmt::Display) -> Self {
        Self {
            status: Status::InvalidName,
            message: error.to_string(),
        }
    }

    fn argument(message: String) -> Self {
        Self {
            status: Status::InvalidArgument,
            message,
        }
    }
}

/// Every service GSL resolves, with its deployments sorted by area.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Directory {
    services: BTreeMap<ServiceId, Vec<Deployment>>,
}

/// Bounds on what one directory may hold (from [`crate::GslConfig`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Most services held.
    pub services_max: usize,
    /// Most deployments (areas) per service.
    pub deployments_per_service_max: usize,
}

/// An update, checked: the service and its deployments sorted by area.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckedUpdate {
    /// The service.
    pub service: ServiceId,
    /// Its deployments, sorted by area; empty takes it out of resolution.
    pub deployments: Vec<Deployment>,
}

impl Directory {
    /// Number of services that resolve to at least one deployment.
    pub fn len(&self) -> usize {
        self.services.len()
    }

    /// True when no service resolves.
    pub fn is_empty(&self) -> bool {
        self.services.is_empty()
    }

    /// The deployments of `service`, the caller's area first, then the others by area code;
    /// empty when the service is unknown or offline.
    pub fn resolve(&self, service: &ServiceId, caller: Area) -> Vec<Deployment> {
        let Some(deployments) = self.services.get(service) else {
            return Vec::new();
        };
        let caller = caller.as_str();
        let own = deployments.iter().filter(|d| d.area == caller);
        let others = deployments.iter().filter(|d| d.area != caller);
        own.chain(others).cloned().collect()
    }

    /// Checks `update` against the name rules and `limits` without changing anything.
    pub fn check(&self, update: GslUpdate, limits: Limits) -> Result<CheckedUpdate, Refusal> {
        let service: ServiceId = update.service_id.parse().map_err(Refusal::name)?;
        let mut deployments = update.deployments;
        if deployments.len() > limits.deployments_per_service_max {
            return Err(Refusal::argument(format!(
                "service {service}: {} deployments, at most {} allowed",
                deployments.len(),
                limits.deployments_per_service_max
            )));
        }
        for deployment in &deployments {
            check_deployment(&service, deployment)?;
        }
        deployments.sort_by(|a, b| a.area.cmp(&b.area));
        if let Some(pair) = deployments.windows(2).find(|w| w[0].area == w[1].area) {
            return Err(Refusal::argument(format!(
                "service {service}: area {} is deployed twice",
                pair[0].area
            )));
        }
        let is_new = !self.services.contains_key(&service);
        if is_new && !deployments.is_empty() && self.services.len() >= limits.services_max {
            return Err(Refusal {
                status: Status::SystemBusy,
                message: format!(
                    "cannot add service {service}: {} services held (services_max)",
                    self.services.len()
                ),
            });
        }
        Ok(CheckedUpdate {
            service,
            deployments,
        })
    }

    /// Applies a checked update; returns what the service resolved to before.
    pub fn apply(&mut self, update: CheckedUpdate) -> Option<Vec<Deployment>> {
        if update.deployments.is_empty() {
            self.services.remove(&update.service)
        } else {
            self.services.insert(update.service, update.deployments)
        }
    }

    /// Puts back what [`Self::apply`] returned, undoing it.
    pub fn restore(&mut self, service: ServiceId, previous: Option<Vec<Deployment>>) {
        match previous {
            Some(deployments) => self.services.insert(service, deployments),
            None => self.services.remove(&service),
        };
    }

    /// Every service as the updates that rebuild the directory, sorted by service id.
    pub fn to_updates(&self) -> Vec<GslUpdate> {
        self.services
            .iter()
            .map(|(service, deployments)| GslUpdate {
                service_id: service.to_string(),
                deployments: deployments.clone(),
            })
            .collect()
    }

    /// Rebuilds a directory from [`Self::to_updates`]' output, checking every update.
    pub fn from_updates(updates: Vec<GslUpdate>, limits: Limits) -> Result<Self, Refusal> {
        let mut directory = Self::default();
        for update in updates {
            let checked = directory.check(update, limits)?;
            directory.apply(checked);
        }
        Ok(directory)
    }
}

fn check_deployment(service: &ServiceId, deployment: &Deployment) -> Result<(), Refusal> {
    let area: Area = deployment.area.parse().map_err(Refusal::name)?;
    let topic: Topic = deployment.topic.parse().map_err(Refusal::name)?;
    let expected = Topic::new(area, service.clone());
    if topic != expected {
        return Err(Refusal::argument(format!(
            "service {service} in area {area}: topic {topic} should be {expected}"
        )));
    }
    let field_ok = |s: &str| !s.is_empty() && s.len() <= FIELD_LEN_MAX;
    if !field_ok(&deployment.cluster) {
        return Err(Refusal::argument(format!(
            "service {service} in area {area}: the cluster name must be 1 to {FIELD_LEN_MAX} bytes"
        )));
    }
    let nameservers = &deployment.nameservers;
    if nameservers.is_empty()
        || nameservers.len() > NAMESERVERS_PER_DEPLOYMENT_MAX
        || !nameservers.iter().all(|n| field_ok(n))
    {
        return Err(Refusal::argument(format!(
            "service {service} in area {area}: 1 to {NAMESERVERS_PER_DEPLOYMENT_MAX} \
             nameserver addresses of 1 to {FIELD_LEN_MAX} bytes are needed"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        services_max: 2,
        deployments_per_service_max: 4,
    };

    fn deployment(area: &str, service: &str) -> Deployment {
        Deployment {
            area: area.into(),
            topic: format!("{area}-{service}"),
            cluster: format!("cluster-{area}"),
            nameservers: vec![format!("ns-{area}:9876")],
        }
    }

    fn update(service: &str, areas: &[&str]) -> GslUpdate {
        GslUpdate {
            service_id: service.into(),
            deployments: areas.iter().map(|a| deployment(a, service)).collect(),
        }
    }

    fn areas(deployments: &[Deployment]) -> Vec<&str> {
        deployments.iter().map(|d| d.area.as_str()).collect()
    }

    #[test]
    fn resolve_puts_the_callers_area_first_then_the_rest_by_code() {
        let mut dir = Directory::default();
        let checked = dir.check(update("1001", &["C30", "A10", "B20"]), LIMITS);
        dir.apply(checked.unwrap());
        let service: ServiceId = "1001".parse().unwrap();
        let from = |area: &str| dir.resolve(&service, area.parse().unwrap());
        assert_eq!(areas(&from("B20")), ["B20", "A10", "C30"]);
        assert_eq!(areas(&from("C30")), ["C30", "A10", "B20"]);
        assert_eq!(areas(&from("Z99")), ["A10", "B20", "C30"]);
        assert!(
            dir.resolve(&"1002".parse().unwrap(), "A10".parse().unwrap())
                .is_empty()
        );
    }

    #[test]
    fn an_empty_update_forgets_and_restore_undoes() {
        let mut dir = Directory::default();
        dir.apply(dir.check(update("1001", &["A10"]), LIMITS).unwrap());
        let before = dir.clone();
        let previous = dir.apply(dir.check(update("1001", &[]), LIMITS).unwrap());
        assert!(dir.is_empty());
        dir.restore("1001".parse().unwrap(), previous);
        assert_eq!(dir, before);
        let rebuilt = Directory::from_updates(dir.to_updates(), LIMITS).unwrap();
        assert_eq!(rebuilt, dir);
    }

    #[test]
    fn bad_updates_are_refused_naming_what_is_wrong() {
        let dir = Directory::default();
        let refused = |u: GslUpdate| dir.check(u, LIMITS).unwrap_err();
        let e = refused(update("10-01", &["A10"]));
        assert_eq!(e.status, Status::InvalidName);
        assert!(e.message.contains("service id"), "{e}");
        let e = refused(update("1001", &["a10"]));
        assert_eq!(e.status, Status::InvalidName);
        let mut u = update("1001", &["A10"]);
        u.deployments[0].topic = "B20-1001".into();
        assert!(refused(u).message.contains("should be A10-1001"));
        let mut u = update("1001", &["A10"]);
        u.deployments[0].nameservers.clear();
        assert!(refused(u).message.contains("nameserver"));
        let e = refused(update("1001", &["A10", "A10"]));
        assert!(e.message.contains("deployed twice"), "{e}");
        let e = refused(update("1001", &["A10", "B20", "C30", "D40", "E50"]));
        assert!(e.message.contains("at most 4"), "{e}");
    }

    #[test]
    fn the_service_limit_holds_for_new_services_only() {
        let mut dir = Directory::default();
        for s in ["1", "2"] {
            dir.apply(dir.check(update(s, &["A10"]), LIMITS).unwrap());
        }
        let e = dir.check(update("3", &["A10"]), LIMITS).unwrap_err();
        assert_eq!(e.status, Status::SystemBusy);
        dir.check(update("2", &["A10", "B20"]), LIMITS).unwrap();
        dir.check(update("3", &[]), LIMITS).unwrap();
    }
}
