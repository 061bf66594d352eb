//! What SGS does on an area's brokers, through the client SDK's `Admin`: create a service's
//! topic, wait for it to be routed, check that its queues are drained, delete it.
//!
//! Blocking (the SDK is), so the server runs these on tokio's blocking pool. Each operation
//! is retried with jittered exponential backoff; "already exists" on create and "unknown
//! topic" on delete count as done, so every operation is idempotent and a deploy or offline
//! that failed half-way is finished by running it again.

use std::time::{Duration, Instant};

use client::{Admin, Backoff, Client, ClientConfig, ClientError, TopicConfig};
use log::{info, warn};
use protocol::codes::Status;
use protocol::control::ServiceRecord;
use protocol::names::Topic;

use crate::config::{AreaConfig, SgsConfig};

/// One area's brokers, reached through its nameservers.
pub(crate) struct AreaBrokers<'a> {
    area: &'a str,
    cluster: &'a str,
    admin: Admin,
    client: Client,
    config: &'a SgsConfig,
}

impl Drop for AreaBrokers<'_> {
    fn drop(&mut self) {
        self.client.close();
    }
}

impl<'a> AreaBrokers<'a> {
    /// A client of `area`'s nameservers.
    pub(crate) fn connect(
        area: &'a str,
        area_config: &'a AreaConfig,
        config: &'a SgsConfig,
    ) -> Result<Self, String> {
        let mut client_config = ClientConfig::new(area_config.nameservers.iter().cloned(), area)
            .map_err(|e| e.to_string())?
            .with_request_timeout(config.request_timeout());
        // Read at each connect, so a replaced token file takes effect without a restart.
        if let Some(token) = config.security.token().map_err(|e| e.to_string())? {
            client_config = client_config.with_token(token);
        }
        if let Some(tls) = &config.tls {
            client_config = client_config.with_tls(tls.clone());
        }
        let client = Client::new(client_config).map_err(|e| format!("area {area}: {e}"))?;
        Ok(Self {
            area,
            cluster: &area_config.cluster,
            admin: Admin::new(&client),
            client,
            config,
        })
    }

    /// Creates `record`'s topic on every live broker of the area's cluster, then waits (up to
    /// `route_wait_ms`) until the nameservers route it.
    pub(crate) fn create_topic(&self, topic: &Topic, record: &ServiceRecord) -> Result<(), String> {
        let mut topic_config = TopicConfig::new(topic);
        topic_config.queue_count = record.queue_count;
        topic_config.read_queue_count = record.queue_count;
        topic_config.write_queue_count = record.queue_count;
        topic_config.max_queue_depth = record.max_queue_depth;
        topic_config.flush_mode = record.flush_mode;
        let brokers = self.retry(&format!("create topic {topic}"), || {
            self.admin
                .create_topic_on_cluster(Some(self.cluster), &topic_config)
        })?;
        info!(
            "topic {topic} is on brokers {brokers:?} of cluster {} (area {})",
            self.cluster, self.area
        );
        let deadline = Instant::now() + SgsConfig::ms(self.config.route_wait_ms);
        loop {
            match self.admin.topic_route(&topic.to_string()) {
                Ok(_) => return Ok(()),
                Err(e) if Instant::now() >= deadline => {
                    warn!(
                        "topic {topic} created in area {} but not routed yet after {} ms: {e}",
                        self.area, self.config.route_wait_ms
                    );
                    return Ok(());
                }
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }

    /// Waits until every consumer group of every queue of `topic` has committed the queue's
    /// end; fails naming a queue that is not, once `drain_timeout_ms` has passed.
    pub(crate) fn drain(&self, topic: &Topic) -> Result<(), String> {
        let deadline = Instant::now() + SgsConfig::ms(self.config.drain_timeout_ms);
        let topic_name = topic.to_string();
        loop {
            let behind = self.retry(&format!("read the statistics of {topic}"), || {
                self.first_undrained(&topic_name)
            })?;
            let Some(behind) = behind else {
                return Ok(());
            };
            if Instant::now() >= deadline {
                return Err(format!(
                    "topic {topic} is not drained after {} ms: {behind}; its topics are kept, \
                     take the service offline again once its consumers caught up",
                    self.config.drain_timeout_ms
                ));
            }
            std::thread::sleep(SgsConfig::ms(self.config.drain_poll_interval_ms));
        }
    }

    /// Deletes `topic` from every live broker of the area's cluster.
    pub(crate) fn delete_topic(&self, topic: &Topic) -> Result<(), String> {
        let topic_name = topic.to_string();
        self.retry(&format!("delete topic {topic}"), || {
            for endpoint in self.broker_endpoints()? {
                match self.admin.delete_topic(&endpoint, &topic_name) {
                    Ok(())
                    | Err(ClientError::Status {
                        status: Status::UnknownTopic,
                        ..
                    }) => {}
                    Err(e) => return Err(e),
                }
            }
            Ok(())
        })?;
        info!(
            "topic {topic} deleted from cluster {} (area {})",
            self.cluster, self.area
        );
        Ok(())
    }

    /// A queue of `topic` some group has not consumed to the end, described; `None` when
    /// every group is at the end of every queue (queues no group consumes have nobody to wait
    /// for).
    fn first_undrained(&self, topic: &str) -> Result<Option<String>, ClientError> {
        for endpoint in self.broker_endpoints()? {
            let stats = self.admin.stats(&endpoint)?;
            for queue in stats.queues.iter().filter(|q| q.topic == topic) {
                for group in &queue.groups {
                    let committed = group.committed_offset.unwrap_or(queue.start_offset);
                    if committed < queue.next_offset {
                        return Ok(Some(format!(
                            "group {} has committed {committed} of {} on queue {} of broker {}",
                            group.group, queue.next_offset, queue.queue_id, stats.broker_id
                        )));
                    }
                }
            }
        }
        Ok(None)
    }

    /// `host:port` of the first shard of every live broker of the area's cluster.
    fn broker_endpoints(&self) -> Result<Vec<String>, ClientError> {
        let info = self.admin.cluster_info()?;
        Ok(info
            .brokers
            .iter()
            .filter(|b| b.cluster == self.cluster)
            .filter_map(|b| {
                b.shard_ports
                    .first()
                    .map(|port| format!("{}:{port}", b.address))
            })
            .collect())
    }

    /// Runs `operation` up to `attempts` times with backoff between; errors that retrying
    /// cannot fix (a refused name or argument) end it at once.
    fn retry<T>(
        &self,
        what: &str,
        mut operation: impl FnMut() -> Result<T, ClientError>,
    ) -> Result<T, String> {
        let mut backoff = Backoff::new(
            SgsConfig::ms(self.config.retry_backoff_min_ms),
            SgsConfig::ms(self.config.retry_backoff_max_ms),
        );
        let attempts = self.config.attempts;
        let mut attempt = 1;
        loop {
            match operation() {
                Ok(value) => return Ok(value),
                Err(e) if attempt < attempts && worth_retrying(&e) => {
                    let delay = backoff.next_delay();
                    warn!(
                        "area {}: {what} failed (attempt {attempt} of {attempts}), retrying in \
                         {delay:?}: {e}",
                        self.area
                    );
                    std::thread::sleep(delay);
                    attempt += 1;
                }
                Err(e) => {
                    return Err(format!(
                        "area {} (cluster {}): {what} failed after {attempt} attempts: {e}",
                        self.area, self.cluster
                    ));
                }
            }
        }
    }
}

/// Failures a later attempt may not repeat: the network, a broker busy or restarting, and
/// no broker of the cluster registered yet.
fn worth_retrying(error: &ClientError) -> bool {
    error.is_retryable() || matches!(error.status(), Some(Status::Internal))
}
