//! Keeping GSL current: a service's deployments as GSL holds them, and pushing updates to
//! every GSL (each holds the whole directory). Blocking; the server runs it on tokio's
//! blocking pool.

use client::Backoff;
use log::warn;
use protocol::codes::Command;
use protocol::control::{self, Deployment, GslUpdate, ServiceRecord, ServiceState};
use protocol::names::Topic;

use crate::config::SgsConfig;
use crate::rpc::Connection;

/// What GSL should resolve `record` to: a deployment per area when it is deployed, nothing
/// otherwise. Areas no longer configured are left out (and logged).
pub(crate) fn update_for(record: &ServiceRecord, config: &SgsConfig) -> GslUpdate {
    let mut deployments = Vec::new();
    if record.state == ServiceState::Deployed {
        for area in &record.deployed_areas {
            let Some(area_config) = config.areas.get(area) else {
                warn!(
                    "service {}: area {area} is no longer configured; GSL will not resolve it there",
                    record.service_id
                );
                continue;
            };
            let Ok(topic) = area
                .parse()
                .and_then(|a| Ok(Topic::new(a, record.service_id.parse()?)))
            else {
                continue;
            };
            deployments.push(Deployment {
                area: area.clone(),
                topic: topic.to_string(),
                cluster: area_config.cluster.clone(),
                nameservers: area_config.nameservers.clone(),
            });
        }
    }
    GslUpdate {
        service_id: record.service_id.clone(),
        deployments,
    }
}

/// Sends `updates` to every GSL, each over one connection, retrying a GSL up to `attempts`
/// times; the error names every GSL that did not take them all.
pub(crate) fn push(config: &SgsConfig, updates: &[GslUpdate], attempts: u32) -> Result<(), String> {
    let bodies = updates
        .iter()
        .map(control::encode)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;
    let mut failures = Vec::new();
    for endpoint in &config.gsl_endpoints {
        let mut backoff = Backoff::new(
            SgsConfig::ms(config.retry_backoff_min_ms),
            SgsConfig::ms(config.retry_backoff_max_ms),
        );
        let mut attempt = 1;
        loop {
            match push_one(config, endpoint, &bodies) {
                Ok(()) => break,
                // A refusal is GSL's answer to a bad update; sending it again changes nothing.
                Err((e, retryable)) if retryable && attempt < attempts => {
                    let delay = backoff.next_delay();
                    warn!("GSL {endpoint}: push failed (attempt {attempt} of {attempts}): {e}");
                    std::thread::sleep(delay);
                    attempt += 1;
                }
                Err((e, _)) => {
                    failures.push(e);
                    break;
                }
            }
        }
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(failures.join("; "))
    }
}

fn push_one(config: &SgsConfig, endpoint: &str, bodies: &[Vec<u8>]) -> Result<(), (String, bool)> {
    let timeout = config.request_timeout();
    let token = config
        .security
        .token()
        .map_err(|e| (e.to_string(), false))?;
    // Built at each push, like the token, so replaced certificate files take effect.
    let tls = config
        .tls
        .as_ref()
        .map(svc::rpc::TlsClient::new)
        .transpose()
        .map_err(|e| (svc::server::Chain(&e).to_string(), false))?;
    let mut connection =
        Connection::connect_with(endpoint, token.as_deref(), tls.as_ref(), timeout)
            .map_err(|e| (svc::server::Chain(&e).to_string(), true))?;
    for body in bodies {
        connection
            .call(Command::GslUpdate, body, timeout)
            .map_err(|e| {
                let retryable = e.status().is_none_or(|s| s.is_retryable());
                (e.to_string(), retryable)
            })?;
    }
    Ok(())
}
