//! A secured nameserver and broker (`[security] enabled`): connections without a valid token
//! are refused at connect, principals without a grant are denied with a message naming
//! principal, action and resource, a grant made at runtime lets the next call through, a
//! rogue broker cannot register, and every denial reaches the audit log.

use std::path::{Path, PathBuf};
use std::time::Duration;

use auth::{Grant, Policy};
use client::{Admin, Client, ClientConfig, ClientError, ConsumeMode, Consumer, Message, Producer};
use defibus_tests::{AREA, RawConnection, WAIT, broker_config, start_broker, start_nameserver};
use engine::Broker;
use nameserver::NameserverHandle;
use protocol::codes::{Command, Status};
use protocol::control::FlushMode;
use protocol::frame::{FrameMeta, encode_frame};
use testkit::{retry_until, wait_until};

const TOPIC: &str = "A10-3701";

/// Tokens of the scenario's principals.
struct Tokens {
    nameserver: String,
    admin: String,
    app: String,
    carol: String,
    expired: String,
    sgs: String,
    ops: String,
}

/// The first policy: `admin` may do everything, `broker` may act as a broker, `app` may
/// produce to `A10-*` and consume it as groups `app-*`, `carol` may do nothing.
fn policy() -> (Policy, Tokens, String) {
    let now = auth::now_ms();
    let day = 86_400_000;
    let mut policy = Policy {
        version: 1,
        ..Policy::default()
    };
    let grant = |principal: &str, action: &str, resource: &str, group: &str| {
        Grant::parse(principal, action, resource, group).unwrap()
    };
    policy.grant(grant("admin", "*", "*", "*"));
    policy.grant(grant("broker", "broker", "*", "*"));
    policy.grant(grant("nameserver", "broker", "*", "*"));
    policy.grant(grant("app", "produce", "A10-*", "*"));
    policy.grant(grant("app", "consume", "A10-*", "app-*"));
    policy.grant(grant("sgs", "admin_topic", "*", "*"));
    policy.grant(grant("sgs", "admin_service", "*", "*"));
    policy.grant(grant("ops", "admin_service", "3702", "*"));
    let mut issue = |principal: &str, created: u64, ttl: u64| {
        policy
            .issue_token(principal, created, ttl)
            .unwrap()
            .reveal()
    };
    let tokens = Tokens {
        nameserver: issue("nameserver", now, day),
        admin: issue("admin", now, day),
        app: issue("app", now, day),
        carol: issue("carol", now, day),
        expired: issue("app", now - day, 1_000),
        sgs: issue("sgs", now, day),
        ops: issue("ops", now, day),
    };
    let broker = issue("broker", now, day);
    (policy, tokens, broker)
}

struct Secured {
    _dir: tempfile::TempDir,
    nameserver: NameserverHandle,
    broker: Option<Broker>,
    tokens: Tokens,
    audit_log: PathBuf,
}

impl Secured {
    fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let (policy, tokens, broker_token) = policy();
        let policy_file = dir.path().join("policy.json");
        std::fs::write(&policy_file, policy.to_json()).unwrap();
        let broker_token_file = dir.path().join("broker.token");
        std::fs::write(&broker_token_file, &broker_token).unwrap();
        let audit_log = dir.path().join("audit.log");
        let nameserver = start_nameserver(|c| {
            c.security.enabled = true;
            c.security.policy_file = Some(policy_file.clone());
            c.security.audit_log = Some(audit_log.clone());
        });
        let mut config = broker_config("broker-a", 2, &dir.path().join("broker"), &nameserver);
        config.security.enabled = true;
        config.security.token_file = Some(broker_token_file);
        config.security.audit_log = Some(dir.path().join("broker-audit.log"));
        config.security.policy_refresh_ms = 100;
        let broker = start_broker(config);
        let secured = Self {
            _dir: dir,
            nameserver,
            broker: Some(broker),
            tokens,
            audit_log,
        };
        let admin = secured.client(Some(&secured.tokens.admin));
        let mut topic = defibus_tests::topic_config(TOPIC, 2, FlushMode::Async);
        topic.max_queue_depth = 100_000;
        retry_until("the admin creates the topic", WAIT, || {
            Admin::new(&admin).create_topic(&secured.broker_endpoint(), &topic)
        });
        wait_until("the topic is routed", WAIT, || {
            Admin::new(&admin).topic_route(TOPIC).is_ok()
        });
        secured
    }

    fn client(&self, token: Option<&str>) -> Client {
        let mut config = ClientConfig::new([self.nameserver.local_addr().to_string()], AREA)
            .unwrap()
            .with_request_timeout(Duration::from_secs(2));
        if let Some(token) = token {
            config = config.with_token(token);
        }
        Client::new(config).unwrap()
    }

    fn broker_port(&self) -> u16 {
        self.broker.as_ref().unwrap().shard_ports()[0]
    }

    fn broker_endpoint(&self) -> String {
        defibus_tests::endpoint(self.broker_port())
    }

    /// Replaces the policy on the nameserver as `admin` would, with `edit` applied, and
    /// waits until the broker enforces it (as `defibus admin acl` does).
    fn change_policy(&self, edit: impl FnOnce(&mut Policy)) {
        let admin_client = self.client(Some(&self.tokens.admin));
        let admin = Admin::new(&admin_client);
        let (_, answer) = admin.policies().remove(0);
        let (version, json) = answer.unwrap();
        let mut policy = Policy::from_json(&json).unwrap();
        edit(&mut policy);
        let (_, stored) = admin.put_policy(version, &policy.to_json()).remove(0);
        assert_eq!(stored.unwrap(), version + 1);
        wait_until("the broker enforces the new policy", WAIT, || {
            admin
                .stats(&self.broker_endpoint())
                .is_ok_and(|stats| stats.policy_version > version)
        });
    }

    fn audit_lines(&self, path: &Path) -> Vec<serde_json::Value> {
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

impl Drop for Secured {
    fn drop(&mut self) {
        if let Some(broker) = self.broker.take() {
            broker.shutdown().unwrap();
        }
    }
}

fn send(client: &Client, value: &str) -> Result<(), ClientError> {
    let producer = Producer::new(client)?;
    producer.send(Message::new(TOPIC, value)).map(drop)
}

#[track_caller]
fn assert_denied(result: Result<(), ClientError>, principal: &str, action: &str, resource: &str) {
    match result {
        Err(ClientError::Denied { message }) => {
            for part in [principal, action, resource] {
                assert!(message.contains(part), "denial {message:?} names {part}");
            }
        }
        other => panic!("expected a denial of {action} on {resource}, got {other:?}"),
    }
}

#[test]
fn connections_without_a_valid_token_are_refused_at_connect() {
    let bus = Secured::start();

    // No token: the nameserver refuses the route lookup, the broker the first frame.
    let anonymous = bus.client(None);
    let err = Admin::new(&anonymous).cluster_info().unwrap_err();
    assert!(
        matches!(err, ClientError::Unauthenticated { .. }),
        "anonymous cluster info: {err:?}"
    );
    let mut raw = RawConnection::connect(bus.broker_port());
    let mut frame = Vec::new();
    encode_frame(
        &FrameMeta::request(Command::ListTopics, 5),
        &[],
        &[],
        &mut frame,
    )
    .unwrap();
    raw.send_raw(&frame);
    let (status, request_id, reply) = raw.expect_error_then_close("anonymous ListTopics");
    assert_eq!(
        (status, request_id),
        (Status::Unauthenticated.code(), 5),
        "{reply:?}"
    );

    // An anonymous peer may not make the broker hold a large frame.
    let mut big = RawConnection::connect(bus.broker_port());
    let mut frame = Vec::new();
    encode_frame(
        &FrameMeta::request(Command::Produce, 6),
        &[],
        &vec![0u8; 64 << 10],
        &mut frame,
    )
    .unwrap();
    big.send_raw(&frame[..32 << 10]);
    let (status, _, reply) = big.expect_error_then_close("anonymous 64 KiB frame");
    assert_eq!(status, Status::Unauthenticated.code(), "{reply:?}");
    assert!(
        reply.message.contains("preauth_frame_bytes_max"),
        "{}",
        reply.message
    );

    // The nameserver holds no large frame for an anonymous peer either.
    let mut big = RawConnection::connect(bus.nameserver.local_addr().port());
    let mut frame = Vec::new();
    encode_frame(
        &FrameMeta::request(Command::TopicRoute, 7),
        &[],
        &vec![0u8; 64 << 10],
        &mut frame,
    )
    .unwrap();
    big.send_raw(&frame[..32 << 10]);
    let (status, _, reply) = big.expect_error_then_close("anonymous 64 KiB nameserver frame");
    assert_eq!(status, Status::Unauthenticated.code(), "{reply:?}");

    // Unknown, expired and malformed tokens.
    let unknown = auth::Token::generate().reveal();
    for (what, token) in [
        ("unknown", unknown.as_str()),
        ("expired", bus.tokens.expired.as_str()),
        ("malformed", "dfb.not-a-token"),
    ] {
        let client = bus.client(Some(token));
        let err = send(&client, "x").unwrap_err();
        assert!(
            matches!(err, ClientError::Unauthenticated { .. }),
            "{what} token: {err:?}"
        );
        assert!(!err.is_retryable(), "{what}: {err}");
    }

    // A valid token works; once revoked, new connections with it are refused.
    let app = bus.client(Some(&bus.tokens.app));
    send(&app, "hello").unwrap();
    // A raw connection authenticated with the same token, to see it closed once revoked.
    let mut open = RawConnection::connect(bus.broker_port());
    let body = protocol::control::encode(&protocol::control::Authenticate {
        token: bus.tokens.app.clone(),
    })
    .unwrap();
    let mut frame = Vec::new();
    encode_frame(
        &FrameMeta::request(Command::Authenticate, 1),
        &[],
        &body,
        &mut frame,
    )
    .unwrap();
    open.send_raw(&frame);
    let answer = open.read_frame().expect("an answer to Authenticate");
    assert_eq!(answer.header.status, Status::Ok.code());
    let app_id = bus.tokens.app.split('.').nth(1).unwrap().to_owned();
    bus.change_policy(|p| assert!(p.revoke_token(&app_id)));
    wait_until("the broker refuses the revoked token", WAIT, || {
        let client = bus.client(Some(&bus.tokens.app));
        matches!(send(&client, "x"), Err(ClientError::Unauthenticated { .. }))
    });
    // The connections opened with it before are closed at their next request.
    let mut frame = Vec::new();
    encode_frame(
        &FrameMeta::request(Command::ListTopics, 2),
        &[],
        &[],
        &mut frame,
    )
    .unwrap();
    open.send_raw(&frame);
    let (status, request_id, reply) = open.expect_error_then_close("a request after revocation");
    assert_eq!(
        (status, request_id),
        (Status::Unauthenticated.code(), 2),
        "{reply:?}"
    );
    assert!(reply.message.contains("revoked"), "{}", reply.message);
    let producer = Producer::new(&app).unwrap();
    wait_until(
        "the open connection is refused after the revocation",
        WAIT,
        || {
            matches!(
                producer.send(Message::new(TOPIC, "after revoke")),
                Err(ClientError::Unauthenticated { .. })
            )
        },
    );

    let audit = bus.audit_lines(&bus.audit_log);
    assert!(
        audit
            .iter()
            .any(|r| r["action"] == "authenticate" && r["outcome"] == "denied"),
        "the nameserver audits failed authentications: {audit:?}"
    );
}

#[test]
fn a_principal_without_a_grant_is_denied_until_granted_at_runtime() {
    let bus = Secured::start();
    let carol = bus.client(Some(&bus.tokens.carol));
    assert_denied(send(&carol, "x"), "carol", "produce", TOPIC);
    let carol_admin = Admin::new(&carol);
    assert_denied(
        carol_admin.delete_topic(&bus.broker_endpoint(), TOPIC),
        "carol",
        "admin_topic",
        TOPIC,
    );
    let app = bus.client(Some(&bus.tokens.app));
    assert_denied(
        Admin::new(&app).delete_topic(&bus.broker_endpoint(), TOPIC),
        "app",
        "admin_topic",
        TOPIC,
    );

    bus.change_policy(|p| {
        p.grant(Grant::parse("carol", "produce", TOPIC, "*").unwrap());
    });
    // The same connection is let through as soon as the broker enforces the grant.
    send(&carol, "granted").unwrap();

    let audit = bus.audit_lines(&bus.audit_log);
    assert!(
        audit.iter().any(|r| r["action"] == "policy_put"
            && r["outcome"] == "ok"
            && r["principal"] == "admin"),
        "the policy change is audited: {audit:?}"
    );
    // The broker audits the topic admin it served and the denials.
    wait_until("the broker's audit records", WAIT, || {
        let audit = bus.audit_lines(&bus._dir.path().join("broker-audit.log"));
        let has = |principal: &str, action: &str, outcome: &str| {
            audit.iter().any(|r| {
                r["principal"] == principal
                    && r["action"] == action
                    && r["resource"] == TOPIC
                    && r["outcome"] == outcome
            })
        };
        has("admin", "CreateTopic", "ok")
            && has("carol", "admin_topic", "denied")
            && has("carol", "produce", "denied")
    });
}

#[test]
fn a_consumer_never_sees_messages_of_a_group_it_has_no_grant_for() {
    let bus = Secured::start();
    let app = bus.client(Some(&bus.tokens.app));
    for i in 0..10 {
        send(&app, &format!("m{i}")).unwrap();
    }
    let granted = Consumer::subscribe(&app, TOPIC, "app-1", ConsumeMode::Clustering).unwrap();
    let mut received = 0;
    while received < 10 {
        let message = granted.recv(WAIT).unwrap();
        assert!(message.is_some(), "app-1 received {received} of 10");
        received += 1;
    }
    match Consumer::subscribe(&app, TOPIC, "audit", ConsumeMode::Clustering) {
        Err(ClientError::Denied { message }) => {
            assert!(
                message.contains("audit") && message.contains("consume"),
                "{message}"
            )
        }
        Err(other) => panic!("subscribing as group audit: {other:?}"),
        Ok(consumer) => {
            // Subscriptions are made per queue in the background: each is refused.
            assert!(consumer.recv(Duration::from_secs(2)).unwrap().is_none());
            let broker_audit = bus._dir.path().join("broker-audit.log");
            wait_until("the broker audits the refused subscription", WAIT, || {
                bus.audit_lines(&broker_audit).iter().any(|r| {
                    r["action"] == "consume" && r["outcome"] == "denied" && r["principal"] == "app"
                })
            });
        }
    }
}

#[test]
fn a_broker_without_the_broker_grant_cannot_register() {
    let bus = Secured::start();
    let dir = tempfile::tempdir().unwrap();
    let app_token = dir.path().join("app.token");
    std::fs::write(&app_token, &bus.tokens.app).unwrap();
    // A rogue broker claiming the legitimate broker's id, with a token that is valid but
    // holds no `broker` grant.
    let mut rogue = broker_config("broker-a", 1, &dir.path().join("rogue"), &bus.nameserver);
    rogue.security.token_file = Some(app_token);
    let rogue = start_broker(rogue);
    wait_until("the nameserver audits the rogue registration", WAIT, || {
        bus.audit_lines(&bus.audit_log)
            .iter()
            .any(|r| r["action"] == "broker" && r["outcome"] == "denied" && r["principal"] == "app")
    });
    let admin = bus.client(Some(&bus.tokens.admin));
    let route = Admin::new(&admin).topic_route(TOPIC).unwrap();
    let rogue_port = rogue.shard_ports()[0];
    assert!(
        route.queues.iter().all(|q| q.shard_port != rogue_port),
        "the rogue broker is not routed to: {route:?}"
    );
    rogue.shutdown().unwrap();
}

#[test]
fn service_lifecycle_needs_admin_service_on_the_service() {
    let bus = Secured::start();
    let dir = tempfile::tempdir().unwrap();
    let sgs_token = dir.path().join("sgs.token");
    std::fs::write(&sgs_token, &bus.tokens.sgs).unwrap();
    let nameserver = bus.nameserver.local_addr().to_string();
    let mut security = auth::SecuritySettings {
        enabled: true,
        token_file: Some(sgs_token),
        policy_nameservers: vec![nameserver.clone()],
        policy_refresh_ms: 100,
        ..auth::SecuritySettings::default()
    };
    let gsl = gsl::start(gsl::GslConfig {
        listen_addr: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.path().join("gsl"),
        security: security.clone(),
        ..gsl::GslConfig::default()
    })
    .unwrap();
    security.policy_nameservers.clear();
    let sgs_audit = dir.path().join("sgs-audit.log");
    security.audit_log = Some(sgs_audit.clone());
    let areas = [(
        AREA.to_owned(),
        sgs::config::AreaConfig {
            cluster: "itests".into(),
            nameservers: vec![nameserver],
        },
    )];
    let sgs = sgs::start(sgs::SgsConfig {
        listen_addr: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.path().join("sgs"),
        gsl_endpoints: vec![gsl.local_addr().to_string()],
        retry_backoff_min_ms: 50,
        retry_backoff_max_ms: 500,
        areas: areas.into_iter().collect(),
        security,
        ..sgs::SgsConfig::default()
    })
    .unwrap();
    let endpoint = sgs.local_addr().to_string();
    let record = |service_id: &str| protocol::control::ServiceRecord {
        service_id: service_id.into(),
        name: format!("service {service_id}"),
        owner: "itests".into(),
        deployed_areas: vec![AREA.to_owned()],
        queue_count: 1,
        max_queue_depth: 1_000,
        flush_mode: FlushMode::Async,
        state: protocol::control::ServiceState::Applied,
    };

    // Without a token the SGS refuses at connect; app has no admin_service.
    let mut anonymous = sgs::client::SgsClient::connect(&endpoint, None).unwrap();
    let err = anonymous.list().unwrap_err();
    assert_eq!(err.status(), Some(Status::Unauthenticated), "{err}");
    let mut app = sgs::client::SgsClient::connect(&endpoint, Some(&bus.tokens.app)).unwrap();
    let err = app.apply(&record("3702")).unwrap_err();
    assert_eq!(err.status(), Some(Status::PermissionDenied), "{err}");
    assert!(
        err.to_string().contains("\"app\" may not admin_service"),
        "{err}"
    );

    // ops may run service 3702, and only it: the SGS creates the topic with its own token.
    let mut ops = sgs::client::SgsClient::connect(&endpoint, Some(&bus.tokens.ops)).unwrap();
    ops.apply(&record("3702")).unwrap();
    ops.deploy("3702").unwrap();
    let err = ops.apply(&record("3703")).unwrap_err();
    assert_eq!(err.status(), Some(Status::PermissionDenied), "{err}");
    let err = app.offline("3702").unwrap_err();
    assert_eq!(err.status(), Some(Status::PermissionDenied), "{err}");

    // GSL takes updates only from admin_service holders.
    let mut to_gsl = svc::rpc::Connection::connect_as(
        &gsl.local_addr().to_string(),
        Some(&bus.tokens.app),
        Duration::from_secs(2),
    )
    .unwrap();
    let update = protocol::control::GslUpdate {
        service_id: "3702".into(),
        deployments: Vec::new(),
    };
    let body = protocol::control::encode(&update).unwrap();
    let err = to_gsl
        .call(Command::GslUpdate, &body, Duration::from_secs(2))
        .unwrap_err();
    assert_eq!(err.status(), Some(Status::PermissionDenied), "{err}");

    ops.offline("3702").unwrap();
    wait_until("the SGS audit log has the lifecycle", WAIT, || {
        let audit = bus.audit_lines(&sgs_audit);
        let has = |principal: &str, action: &str, outcome: &str| {
            audit.iter().any(|r| {
                r["principal"] == principal && r["action"] == action && r["outcome"] == outcome
            })
        };
        has("ops", "service_deploy", "ok")
            && has("ops", "service_offline", "ok")
            && has("app", "admin_service", "denied")
    });
    drop((ops, app, anonymous, to_gsl));
    sgs.shutdown().unwrap();
    gsl.shutdown().unwrap();
}

/// A replicated topic (two brokers, acks=all) on a secured bus: the controller's Raft port
/// refuses anonymous callers, the nameserver's controller sends roles with its token, and
/// the follower fetches from the leader with the broker token.
#[test]
fn replication_and_the_controller_work_with_security_on() {
    let dir = tempfile::tempdir().unwrap();
    let (policy, tokens, broker_token) = policy();
    let policy_file = dir.path().join("policy.json");
    std::fs::write(&policy_file, policy.to_json()).unwrap();
    let write = |name: &str, token: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, token).unwrap();
        path
    };
    let broker_token_file = write("broker.token", &broker_token);
    let nameserver_token_file = write("nameserver.token", &tokens.nameserver);
    let raft_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let nameserver = start_nameserver(|c| {
        c.security.enabled = true;
        c.security.policy_file = Some(policy_file.clone());
        c.security.token_file = Some(nameserver_token_file.clone());
        c.controller = Some(nameserver::config::ControllerSettings {
            node_id: 1,
            listen_addr: format!("127.0.0.1:{raft_port}").parse().unwrap(),
            voters: vec![format!("1=127.0.0.1:{raft_port}")],
            data_dir: dir.path().join("controller"),
            broker_timeout_ms: 1_500,
            reconcile_interval_ms: 100,
        });
    });
    let brokers: Vec<Broker> = ["broker-a", "broker-b"]
        .iter()
        .map(|id| {
            let mut config = broker_config(id, 1, &dir.path().join(id), &nameserver);
            config.security.enabled = true;
            config.security.token_file = Some(broker_token_file.clone());
            config.security.policy_refresh_ms = 100;
            start_broker(config)
        })
        .collect();
    let endpoints: Vec<String> = brokers
        .iter()
        .map(|b| defibus_tests::endpoint(b.shard_ports()[0]))
        .collect();

    // The Raft port takes nothing from an anonymous peer.
    let mut raw = RawConnection::connect(raft_port);
    let mut frame = Vec::new();
    encode_frame(
        &FrameMeta::request(Command::ControllerState, 9),
        &[],
        &[],
        &mut frame,
    )
    .unwrap();
    raw.send_raw(&frame);
    let (status, _, reply) = raw.expect_error_then_close("anonymous ControllerState");
    assert_eq!(status, Status::Unauthenticated.code(), "{reply:?}");

    let admin_client = {
        let config = ClientConfig::new([nameserver.local_addr().to_string()], AREA)
            .unwrap()
            .with_token(&tokens.admin);
        Client::new(config).unwrap()
    };
    let admin = Admin::new(&admin_client);
    let mut topic = defibus_tests::topic_config(TOPIC, 1, FlushMode::Sync);
    topic.replicas = 2;
    topic.acks = protocol::control::Acks::All;
    for endpoint in &endpoints {
        retry_until("create the replicated topic", WAIT, || {
            admin.create_topic(endpoint, &topic)
        });
    }
    let proposal = controller::Command::CreateTopic {
        topic: TOPIC.into(),
        replicas: 2,
        acks: controller::Acks::All,
        assignment: vec![vec!["broker-a".into(), "broker-b".into()]],
    };
    retry_until("the controller takes the topic", WAIT, || {
        admin.controller_propose(&serde_json::to_vec(&proposal).unwrap())
    });
    let app = {
        let config = ClientConfig::new([nameserver.local_addr().to_string()], AREA)
            .unwrap()
            .with_token(&tokens.app)
            .with_request_timeout(Duration::from_secs(5));
        Client::new(config).unwrap()
    };
    let producer = Producer::new(&app).unwrap();
    for i in 0..20 {
        retry_until("an acks=all produce", WAIT, || {
            producer.send(Message::new(TOPIC, format!("r{i}")))
        });
    }
    // Both replicas hold all 20 records: the follower fetched them with its token.
    wait_until("both replicas hold the 20 records", WAIT, || {
        endpoints.iter().all(|endpoint| {
            admin.stats(endpoint).is_ok_and(|stats| {
                stats.queues.iter().any(|q| {
                    q.topic == TOPIC && q.replication.as_ref().is_some_and(|r| r.log_end >= 20)
                })
            })
        })
    });
    for broker in brokers {
        broker.shutdown().unwrap();
    }
}

/// Over mutual TLS the client certificate is the credential: the broker takes its principal
/// for the ACL without a token, and a certificate whose principal has no grant is denied.
#[test]
fn a_client_certificate_names_the_principal_the_acl_checks() {
    let dir = tempfile::tempdir().unwrap();
    let certs = tls::dev::generate(
        &dir.path().join("certs"),
        &["admin", "app", "carol", "broker"],
    )
    .unwrap();
    let (policy, tokens, broker_token) = policy();
    let policy_file = dir.path().join("policy.json");
    std::fs::write(&policy_file, policy.to_json()).unwrap();
    let broker_token_file = dir.path().join("broker.token");
    std::fs::write(&broker_token_file, &broker_token).unwrap();
    let nameserver = start_nameserver(|c| {
        c.security.enabled = true;
        c.security.policy_file = Some(policy_file.clone());
        c.tls = Some(certs.server_settings());
    });
    let mut config = broker_config("broker-a", 1, &dir.path().join("broker"), &nameserver);
    config.security.enabled = true;
    config.security.token_file = Some(broker_token_file);
    config.security.audit_log = Some(dir.path().join("broker-audit.log"));
    // The broker presents its `broker` certificate to the nameserver.
    config.tls = Some(certs.server_settings_as("broker"));
    let broker = start_broker(config);
    let endpoint = defibus_tests::endpoint(broker.shard_ports()[0]);

    // Every client presents its certificate to the nameserver and the broker; the token it
    // also holds is not sent where a certificate names it.
    let client_for = |principal: &str, token: &str| {
        let config = ClientConfig::new([nameserver.local_addr().to_string()], AREA)
            .unwrap()
            .with_request_timeout(Duration::from_secs(3))
            .with_token(token)
            .with_tls(certs.client_settings(principal));
        Client::new(config).unwrap()
    };
    let admin = client_for("admin", &tokens.admin);
    let topic = defibus_tests::topic_config(TOPIC, 1, FlushMode::Async);
    retry_until("the admin creates the topic over TLS", WAIT, || {
        Admin::new(&admin).create_topic(&endpoint, &topic)
    });
    wait_until("the topic is routed", WAIT, || {
        Admin::new(&admin).topic_route(TOPIC).is_ok()
    });

    // app's certificate produces: the broker took the certificate's principal.
    let app = client_for("app", &tokens.app);
    retry_until("app produces over mutual TLS", WAIT, || {
        send(&app, "by certificate")
    });
    assert!(
        app.tls_cipher_suite()
            .is_some_and(|suite| suite.starts_with("TLS13_")),
        "a TLS 1.3 suite: {:?}",
        app.tls_cipher_suite()
    );
    // carol's certificate: authenticated, and denied by name.
    let carol = client_for("carol", &tokens.carol);
    assert_denied(send(&carol, "x"), "carol", "produce", TOPIC);
    broker.shutdown().unwrap();
}
