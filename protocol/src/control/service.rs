//! Service governance (SGS) and service location (GSL) payloads.

use rkyv::{Archive, Deserialize, Serialize};

use super::{ControlError, FlushMode};
use crate::names::{Area, ServiceId, Topic};

/// Where a service is in its lifecycle.
#[derive(Archive, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[rkyv(derive(Debug, PartialEq, Eq))]
pub enum ServiceState {
    /// The id is granted; no topic exists yet.
    #[default]
    Applied,
    /// Topics exist in the deployed areas and GSL resolves the service.
    Deployed,
    /// Taken offline: GSL no longer resolves it; topics are kept until deleted.
    Offline,
}

/// SGS's durable record of one service: the body of `ServiceApply` and of `ServiceShow` replies.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct ServiceRecord {
    /// The service id (`20190001`).
    pub service_id: String,
    /// Human-readable name.
    pub name: String,
    /// Owning team or person, who is asked before changes.
    pub owner: String,
    /// Area codes where the service has a topic.
    pub deployed_areas: Vec<String>,
    /// Queues of each deployed topic.
    pub queue_count: u32,
    /// Unconsumed messages per queue before produces are refused.
    pub max_queue_depth: u64,
    /// How the service's appends are made durable.
    pub flush_mode: FlushMode,
    /// Lifecycle state.
    pub state: ServiceState,
}

impl ServiceRecord {
    /// The service id, parsed.
    pub fn service_id(&self) -> Result<ServiceId, ControlError> {
        Ok(self.service_id.parse()?)
    }

    /// The topic of each deployed area, parsed; the first bad name is the error.
    pub fn topics(&self) -> Result<Vec<Topic>, ControlError> {
        let service = self.service_id()?;
        self.deployed_areas
            .iter()
            .map(|area| Ok(Topic::new(area.parse()?, service.clone())))
            .collect()
    }

    /// Checks the id, the areas and the limits.
    pub fn validate(&self) -> Result<(), ControlError> {
        self.topics()?;
        if self.queue_count == 0 || self.max_queue_depth == 0 {
            return Err(ControlError::Invalid {
                field: "queue_count/max_queue_depth",
                reason: "must be at least 1",
            });
        }
        if self.state == ServiceState::Deployed && self.deployed_areas.is_empty() {
            return Err(ControlError::Invalid {
                field: "deployed_areas",
                reason: "a deployed service is deployed somewhere",
            });
        }
        Ok(())
    }
}

/// "Where is service S, seen from area A?": the body of `GslResolve`.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct GslResolveRequest {
    /// The service asked for.
    pub service_id: String,
    /// The caller's area; GSL orders deployments nearest first from it.
    pub caller_area: String,
}

impl GslResolveRequest {
    /// The request's names, parsed.
    pub fn parse(&self) -> Result<(ServiceId, Area), ControlError> {
        Ok((self.service_id.parse()?, self.caller_area.parse()?))
    }
}

/// One deployment of a service: its topic in one area and how to reach it.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct Deployment {
    /// Area code of the deployment.
    pub area: String,
    /// The topic, `[area]-[serviceId]`.
    pub topic: String,
    /// The broker cluster holding the topic.
    pub cluster: String,
    /// Nameserver addresses (`host:port`) that route the topic.
    pub nameservers: Vec<String>,
}

impl Deployment {
    /// The topic name, parsed.
    pub fn topic(&self) -> Result<Topic, ControlError> {
        Ok(self.topic.parse()?)
    }
}

/// The answer to `GslResolve`: deployments, nearest to the caller first.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct GslResolveReply {
    /// The deployments, in order of preference; empty when the service is nowhere online.
    pub deployments: Vec<Deployment>,
}

/// SGS → GSL: the complete set of a service's deployments, replacing what GSL held.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct GslUpdate {
    /// The service.
    pub service_id: String,
    /// Every deployment; empty takes the service out of resolution (offline).
    pub deployments: Vec<Deployment>,
}

/// A service named alone: the body of `ServiceDeploy`, `ServiceOffline` and `ServiceShow`.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct ServiceIdRequest {
    /// The service id (`20190001`).
    pub service_id: String,
}

impl ServiceIdRequest {
    /// The service id, parsed.
    pub fn service_id(&self) -> Result<ServiceId, ControlError> {
        Ok(self.service_id.parse()?)
    }
}

/// Every service SGS holds: the answer to `ServiceList` (whose request body is empty).
#[derive(Archive, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[rkyv(derive(Debug))]
pub struct ServiceList {
    /// The services, sorted by service id.
    pub services: Vec<ServiceRecord>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_record_yields_its_topics() {
        let record = ServiceRecord {
            service_id: "20190001".into(),
            deployed_areas: vec!["A10".into(), "B20".into()],
            queue_count: 4,
            max_queue_depth: 500,
            state: ServiceState::Deployed,
            ..ServiceRecord::default()
        };
        record.validate().unwrap();
        let topics: Vec<String> = record
            .topics()
            .unwrap()
            .iter()
            .map(Topic::to_string)
            .collect();
        assert_eq!(topics, ["A10-20190001", "B20-20190001"]);
        let bad = ServiceRecord {
            deployed_areas: vec!["a10".into()],
            ..record
        };
        assert!(matches!(bad.validate(), Err(ControlError::Name(_))));
        let request = GslResolveRequest {
            service_id: "20190001".into(),
            caller_area: "Z9".into(),
        };
        assert!(request.parse().is_err());
    }

    #[test]
    fn sgs_bodies_round_trip() {
        let record = ServiceRecord {
            service_id: "20190001".into(),
            name: "payments".into(),
            owner: "team-pay".into(),
            deployed_areas: vec!["A10".into(), "B20".into()],
            queue_count: 8,
            max_queue_depth: 500,
            flush_mode: FlushMode::Sync,
            state: ServiceState::Offline,
        };
        let list = ServiceList {
            services: vec![record.clone(), ServiceRecord::default()],
        };
        let bytes = super::super::encode(&list).unwrap();
        assert_eq!(super::super::decode::<ServiceList>(&bytes).unwrap(), list);
        let request = ServiceIdRequest {
            service_id: "20190001".into(),
        };
        let bytes = super::super::encode(&request).unwrap();
        let decoded: ServiceIdRequest = super::super::decode(&bytes).unwrap();
        assert_eq!(decoded.service_id().unwrap().as_str(), "20190001");
        let bad = ServiceIdRequest {
            service_id: "2019-0001".into(),
        };
        assert!(matches!(bad.service_id(), Err(ControlError::Name(_))));
        let update = GslUpdate {
            service_id: "20190001".into(),
            deployments: vec![Deployment {
                area: "A10".into(),
                topic: "A10-20190001".into(),
                cluster: "c1".into(),
                nameservers: vec!["127.0.0.1:9876".into()],
            }],
        };
        let bytes = super::super::encode(&update).unwrap();
        assert_eq!(super::super::decode::<GslUpdate>(&bytes).unwrap(), update);
    }
}
