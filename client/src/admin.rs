//! Administration: topics on brokers, routes and cluster state from nameservers, statistics.

use std::sync::Arc;

use protocol::codes::Command;
use protocol::control::{
    self, BrokerStats, ClusterInfo, DeadLetterReply, DeadLetterRequest, HeldStats,
    HeldStatsRequest, PolicyDocument, PolicyGet, QueueAssignment, ScrubReply, ScrubRequest,
    TopicConfig, TopicInfo, TopicList, TopicName, TopicRoute, TraceReply, TraceRequest,
    TraceTarget,
};
use protocol::names::Topic;

use crate::client::{Client, ClientInner};
use crate::error::{ClientError, Result};
use crate::net::PeerKind;

/// Admin calls. Broker calls take a broker endpoint (`host:port` of any shard: a shard
/// forwards what it does not own); cluster calls find the brokers through the nameservers.
#[derive(Clone)]
pub struct Admin {
    client: Arc<ClientInner>,
}

impl std::fmt::Debug for Admin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Admin")
    }
}

impl Admin {
    /// Admin calls through `client`'s connections.
    pub fn new(client: &Client) -> Self {
        Self {
            client: client.inner.clone(),
        }
    }

    /// Creates a topic on one broker.
    pub fn create_topic(&self, broker: &str, config: &TopicConfig) -> Result<()> {
        config.topic.parse::<Topic>()?;
        self.broker_call(
            broker,
            Command::CreateTopic,
            &control::encode(config).map_err(local)?,
        )
        .map(drop)
    }

    /// Tells one broker the roles of one queue of a replicated topic for an epoch (what the
    /// controller sends): `broker` is the endpoint of the shard owning the queue there, or
    /// any of its shards (which forwards it).
    pub fn assign_queue_role(&self, broker: &str, assignment: &QueueAssignment) -> Result<()> {
        assignment.topic.parse::<Topic>()?;
        self.broker_call(
            broker,
            Command::QueueRole,
            &control::encode(assignment).map_err(local)?,
        )
        .map(drop)
    }

    /// Changes a topic's configuration on one broker.
    pub fn update_topic(&self, broker: &str, config: &TopicConfig) -> Result<()> {
        config.topic.parse::<Topic>()?;
        self.broker_call(
            broker,
            Command::UpdateTopic,
            &control::encode(config).map_err(local)?,
        )
        .map(drop)
    }

    /// Deletes a topic and its data on one broker.
    pub fn delete_topic(&self, broker: &str, topic: &str) -> Result<()> {
        topic.parse::<Topic>()?;
        let body = control::encode(&TopicName {
            topic: topic.to_owned(),
        })
        .map_err(local)?;
        self.broker_call(broker, Command::DeleteTopic, &body)
            .map(drop)
    }

    /// The topics one broker holds.
    pub fn list_topics(&self, broker: &str) -> Result<Vec<TopicInfo>> {
        let frame = self.broker_call(broker, Command::ListTopics, &[])?;
        Ok(control::decode::<TopicList>(&frame.body)
            .map_err(|e| ClientError::control(broker, e))?
            .topics)
    }

    /// Shows, resends or purges the pending messages of one queue of a dead-letter topic
    /// (`command`: `DeadLetterShow`, `DeadLetterResend` or `DeadLetterPurge`; ARCHITECTURE
    /// §13.2), at `broker` (any shard: the owner answers). Every queue of the topic:
    /// [`Self::dead_letters_everywhere`].
    pub fn dead_letters(
        &self,
        broker: &str,
        command: Command,
        request: &DeadLetterRequest,
    ) -> Result<DeadLetterReply> {
        if !matches!(
            command,
            Command::DeadLetterShow | Command::DeadLetterResend | Command::DeadLetterPurge
        ) {
            return Err(ClientError::InvalidArgument(format!(
                "{command} is not a dead-letter command"
            )));
        }
        let body = control::encode(request).map_err(local)?;
        let frame = self.broker_call(broker, command, &body)?;
        control::decode::<DeadLetterReply>(&frame.body).map_err(|e| ClientError::control(broker, e))
    }

    /// [`Self::dead_letters`] on every queue of dead-letter topic `topic`, as the route
    /// lists them: (broker endpoint, queue id, answer), sorted. `limit` and `offset` as in
    /// [`DeadLetterRequest`]; an `offset` needs `queue` (and a single broker's route) to
    /// say which queue it is in.
    pub fn dead_letters_everywhere(
        &self,
        topic: &str,
        command: Command,
        queue: Option<u32>,
        limit: u32,
        offset: Option<u64>,
    ) -> Result<Vec<(String, u32, DeadLetterReply)>> {
        let route = self.topic_route(topic)?;
        let mut queues: Vec<(String, u32)> = route
            .queues
            .iter()
            .filter(|q| queue.is_none_or(|id| id == q.queue_id))
            .map(|q| (format!("{}:{}", q.address, q.shard_port), q.queue_id))
            .collect();
        queues.sort();
        queues.dedup();
        if offset.is_some() && queues.len() != 1 {
            return Err(ClientError::InvalidArgument(format!(
                "an offset names one queue, and {topic} has {} here: say which with a queue id",
                queues.len()
            )));
        }
        let mut answers = Vec::new();
        for (endpoint, queue_id) in queues {
            let request = DeadLetterRequest {
                topic: topic.to_owned(),
                queue_id,
                limit,
                offset,
            };
            let reply = self.dead_letters(&endpoint, command, &request)?;
            answers.push((endpoint, queue_id, reply));
        }
        Ok(answers)
    }

    /// The held (delayed and half) messages of every queue of `topic` (ARCHITECTURE §13.3):
    /// (broker endpoint, queue id, figures), sorted. A queue that never held anything
    /// answers zeros.
    pub fn held_stats(&self, topic: &str) -> Result<Vec<(String, u32, HeldStats)>> {
        let route = self.topic_route(topic)?;
        let mut queues: Vec<(String, u32)> = route
            .queues
            .iter()
            .map(|q| (format!("{}:{}", q.address, q.shard_port), q.queue_id))
            .collect();
        queues.sort();
        queues.dedup();
        let mut answers = Vec::with_capacity(queues.len());
        for (endpoint, queue_id) in queues {
            let body = control::encode(&HeldStatsRequest {
                topic: topic.to_owned(),
                queue_id,
            })
            .map_err(local)?;
            let frame = self.broker_call(&endpoint, Command::HeldStats, &body)?;
            let stats = control::decode::<HeldStats>(&frame.body)
                .map_err(|e| ClientError::control(&endpoint, e))?;
            answers.push((endpoint, queue_id, stats));
        }
        Ok(answers)
    }

    /// One broker's runtime statistics.
    pub fn stats(&self, broker: &str) -> Result<BrokerStats> {
        let frame = self.broker_call(broker, Command::Stats, &[])?;
        control::decode::<BrokerStats>(&frame.body).map_err(|e| ClientError::control(broker, e))
    }

    /// Scrubs one broker's stored data now (only `topic`'s queues when given): every batch of
    /// every written segment is read and verified. Waits up to `timeout`, since the broker
    /// reads everything it holds.
    pub fn scrub(
        &self,
        broker: &str,
        topic: Option<&str>,
        timeout: std::time::Duration,
    ) -> Result<ScrubReply> {
        let request = ScrubRequest {
            topic: topic.map(str::to_owned),
        };
        let body = control::encode(&request).map_err(local)?;
        let conn = self.client.broker(broker)?;
        let frame = conn.call(Command::ScrubLogs, &[], &body, timeout)?;
        control::decode::<ScrubReply>(&frame.body).map_err(|e| ClientError::control(broker, e))
    }

    /// One message's life (`defibus trace`): when and where it was stored, which groups were
    /// pushed it and when, when each committed past it, and for a request its deadline and
    /// reply. `lookup` names the message by offset, by key or as the newest; each queue of
    /// `topic` it selects (every queue of the route unless it names a queue id or a broker)
    /// is asked at the broker shard owning it, and its answer returned, sorted by broker and
    /// queue: none when the route has no such queue, and an answer with no message when the
    /// queue has none there (see its offsets). Needs `consume` on the topic for every group (a
    /// grant with group `*`) where the bus checks grants.
    pub fn trace(&self, topic: &str, lookup: &TraceLookup) -> Result<Vec<TraceReply>> {
        topic.parse::<Topic>()?;
        let route = self.client.routes.refresh(&self.client.pool, topic)?;
        let mut queues: Vec<(String, u32, String)> = route
            .route
            .queues
            .iter()
            .filter(|q| lookup.queue_id.is_none_or(|id| id == q.queue_id))
            .filter(|q| lookup.broker_id.as_deref().is_none_or(|b| b == q.broker_id))
            .map(|q| {
                (
                    q.broker_id.clone(),
                    q.queue_id,
                    crate::route::endpoint_of(q),
                )
            })
            .collect();
        queues.sort();
        queues.dedup_by(|a, b| (&a.0, a.1) == (&b.0, b.1));
        let mut replies = Vec::with_capacity(queues.len());
        for (_, queue_id, endpoint) in queues {
            let request = TraceRequest {
                topic: topic.to_owned(),
                queue_id,
                target: lookup.target.clone(),
            };
            request.validate().map_err(local)?;
            let body = control::encode(&request).map_err(local)?;
            let conn = self.client.broker(&endpoint)?;
            let frame = conn.call(Command::TraceMessage, &[], &body, lookup.timeout)?;
            replies.push(
                control::decode::<TraceReply>(&frame.body)
                    .map_err(|e| ClientError::control(&endpoint, e))?,
            );
        }
        Ok(replies)
    }

    /// The live brokers, from the first nameserver that answers.
    pub fn cluster_info(&self) -> Result<ClusterInfo> {
        let mut last_error = None;
        for nameserver in &self.client.config.nameservers {
            match self.cluster_info_from(nameserver) {
                Ok(info) => return Ok(info),
                Err(e) => last_error = Some(e),
            }
        }
        Err(last_error
            .unwrap_or_else(|| ClientError::InvalidArgument("no nameserver configured".into())))
    }

    /// The live brokers as one nameserver (`host:port`) knows them: a console shows each
    /// nameserver's view, so one that lost its brokers (or cannot be reached) stands out.
    pub fn cluster_info_from(&self, nameserver: &str) -> Result<ClusterInfo> {
        let frame = self.control_call(nameserver, Command::ClusterInfo, &[])?;
        control::decode::<ClusterInfo>(&frame.body).map_err(|e| ClientError::control(nameserver, e))
    }

    /// The nameservers this client was configured with, in order.
    pub fn nameservers(&self) -> &[String] {
        &self.client.config.nameservers
    }

    /// The route of `topic`, fetched now from the nameservers (and cached for producers).
    pub fn topic_route(&self, topic: &str) -> Result<TopicRoute> {
        topic.parse::<Topic>()?;
        Ok(self
            .client
            .routes
            .refresh(&self.client.pool, topic)?
            .route
            .clone())
    }

    /// Creates a topic on every live broker of `cluster` (every broker when `None`), as the
    /// nameservers list them; returns the broker ids it was created on. A broker that already
    /// has the topic counts as done.
    pub fn create_topic_on_cluster(
        &self,
        cluster: Option<&str>,
        config: &TopicConfig,
    ) -> Result<Vec<String>> {
        let info = self.cluster_info()?;
        let mut created = Vec::new();
        for broker in info
            .brokers
            .iter()
            .filter(|b| cluster.is_none_or(|c| b.cluster == c))
        {
            let Some(port) = broker.shard_ports.first() else {
                continue;
            };
            let endpoint = format!("{}:{port}", broker.address);
            match self.create_topic(&endpoint, config) {
                Ok(())
                | Err(ClientError::Status {
                    status: protocol::codes::Status::TopicExists,
                    ..
                }) => created.push(broker.broker_id.clone()),
                Err(e) => return Err(e),
            }
        }
        if created.is_empty() {
            return Err(ClientError::NoRoute {
                topic: config.topic.clone(),
            });
        }
        Ok(created)
    }

    /// Sends `body` (a JSON controller command) to the nameservers' controller with
    /// `ControllerPropose`, trying each nameserver in turn; returns the JSON outcome.
    /// `Status::UnknownCommand` from every one means no nameserver runs a controller.
    pub fn controller_propose(&self, body: &[u8]) -> Result<Vec<u8>> {
        let mut last_error = None;
        for nameserver in &self.client.config.nameservers {
            let answer = self
                .client
                .pool
                .get(nameserver, PeerKind::Control)
                .and_then(|conn| {
                    conn.call(
                        Command::ControllerPropose,
                        &[],
                        body,
                        self.client.config.request_timeout,
                    )
                });
            match answer {
                Ok(frame) => return Ok(frame.body.to_vec()),
                Err(e) => last_error = Some(e),
            }
        }
        Err(last_error.unwrap_or(ClientError::NoRoute {
            topic: "(controller)".into(),
        }))
    }

    /// The security policy of every nameserver: `(nameserver, Ok((version, json)))`, or why
    /// it could not be read.
    pub fn policies(&self) -> Vec<(String, Result<(u64, String)>)> {
        let body = control::encode(&PolicyGet { known_version: 0 }).map_err(local);
        self.policy_call(Command::PolicyGet, body, |d| (d.version, d.json))
    }

    /// Stores `json` as the policy after version `read` on every nameserver:
    /// `(nameserver, Ok(new version))`, or why that one refused.
    pub fn put_policy(&self, read: u64, json: &str) -> Vec<(String, Result<u64>)> {
        let body = control::encode(&PolicyDocument {
            version: read,
            json: json.to_owned(),
        })
        .map_err(local);
        self.policy_call(Command::PolicyPut, body, |d| d.version)
    }

    /// Sends `body` (encoded once) with `command` to every nameserver; each answer is a
    /// `PolicyDocument`, of which `take` keeps what the caller needs.
    fn policy_call<T>(
        &self,
        command: Command,
        body: Result<Vec<u8>>,
        take: impl Fn(PolicyDocument) -> T,
    ) -> Vec<(String, Result<T>)> {
        self.client
            .config
            .nameservers
            .iter()
            .map(|nameserver| {
                let answer = body
                    .as_ref()
                    .map_err(ClientError::duplicate)
                    .and_then(|body| self.control_call(nameserver, command, body))
                    .and_then(|frame| {
                        control::decode::<PolicyDocument>(&frame.body)
                            .map(&take)
                            .map_err(|e| ClientError::control(nameserver, e))
                    });
                (nameserver.clone(), answer)
            })
            .collect()
    }

    fn control_call(
        &self,
        endpoint: &str,
        command: Command,
        body: &[u8],
    ) -> Result<protocol::frame::FrameBytes> {
        let conn = self.client.pool.get(endpoint, PeerKind::Control)?;
        conn.call(command, &[], body, self.client.config.request_timeout)
    }

    fn broker_call(
        &self,
        broker: &str,
        command: Command,
        body: &[u8],
    ) -> Result<protocol::frame::FrameBytes> {
        let conn = self.client.broker(broker)?;
        conn.call(command, &[], body, self.client.config.request_timeout)
    }
}

/// Which message [`Admin::trace`] looks for, and where.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TraceLookup {
    /// By offset, or by key among the newest records of each queue.
    pub target: TraceTarget,
    /// Only this queue id (on every broker holding the topic, unless `broker_id` says).
    pub queue_id: Option<u32>,
    /// Only the queues of this broker.
    pub broker_id: Option<String>,
    /// How long each broker may take to answer (a trace reads stored data).
    pub timeout: std::time::Duration,
}

impl TraceLookup {
    /// How long a trace waits for each broker by default.
    pub const TIMEOUT_DEFAULT: std::time::Duration = std::time::Duration::from_secs(30);

    /// The message at `offset` of each queue (narrow with [`Self::queue`]).
    pub fn offset(offset: u64) -> Self {
        Self {
            target: TraceTarget::Offset(offset),
            queue_id: None,
            broker_id: None,
            timeout: Self::TIMEOUT_DEFAULT,
        }
    }

    /// The newest message of each queue.
    pub fn newest() -> Self {
        Self {
            target: TraceTarget::Newest,
            queue_id: None,
            broker_id: None,
            timeout: Self::TIMEOUT_DEFAULT,
        }
    }

    /// The newest `matches_max` messages with `key` among the newest `search_records` of each
    /// queue (bounds: [`protocol::control::TRACE_SEARCH_RECORDS_MAX`],
    /// [`protocol::control::TRACE_MATCHES_MAX`]).
    pub fn key(key: impl Into<Vec<u8>>, search_records: u64, matches_max: u32) -> Self {
        Self {
            target: TraceTarget::Key {
                key: key.into(),
                search_records,
                matches_max,
            },
            queue_id: None,
            broker_id: None,
            timeout: Self::TIMEOUT_DEFAULT,
        }
    }

    /// Only queue `queue_id`.
    pub fn queue(mut self, queue_id: u32) -> Self {
        self.queue_id = Some(queue_id);
        self
    }

    /// Only broker `broker_id`'s queues.
    pub fn broker(mut self, broker_id: impl Into<String>) -> Self {
        self.broker_id = Some(broker_id.into());
        self
    }
}

/// An encoding failure of our own payload.
fn local(error: control::ControlError) -> ClientError {
    ClientError::control("(local)", error)
}
