//! A secured proxy in front of a secured nameserver and broker: callers without a valid
//! token get 401 on HTTP and on the WebSocket upgrade, a principal without a grant gets 403
//! naming principal, action and topic until the grant is made at runtime, and the rate limit
//! holds per principal whatever identity a caller declares.

mod support;

use std::path::PathBuf;
use std::time::Duration;

use auth::{Grant, Policy};
use client::{Admin, Client, ClientConfig};
use defibus_tests::{AREA, WAIT, broker_config, start_broker, start_nameserver};
use engine::Broker;
use nameserver::NameserverHandle;
use protocol::control::FlushMode;
use proxy::{ProxyConfig, ProxyHandle};
use serde_json::json;
use testkit::{retry_until, wait_until};
use tungstenite::client::IntoClientRequest;

use support::identity;

const TOPIC: &str = "A10-7401";

struct Tokens {
    admin: String,
    app: String,
    carol: String,
    expired: String,
}

fn grant(principal: &str, action: &str, resource: &str, group: &str) -> Grant {
    Grant::parse(principal, action, resource, group).unwrap()
}

/// `admin` and the proxy may do everything, `broker` act as a broker; `app` may produce to
/// `A10-*` and consume it as groups `app-*`; `carol` may do nothing.
fn policy() -> (Policy, Tokens, String, String) {
    let now = auth::now_ms();
    let day = 86_400_000;
    let mut policy = Policy {
        version: 1,
        ..Policy::default()
    };
    policy.grant(grant("admin", "*", "*", "*"));
    policy.grant(grant("proxy", "*", "*", "*"));
    policy.grant(grant("broker", "broker", "*", "*"));
    policy.grant(grant("app", "produce", "A10-*", "*"));
    policy.grant(grant("app", "consume", "A10-*", "app-*"));
    let mut issue = |principal: &str, created: u64, ttl: u64| {
        policy
            .issue_token(principal, created, ttl)
            .unwrap()
            .reveal()
    };
    let tokens = Tokens {
        admin: issue("admin", now, day),
        app: issue("app", now, day),
        carol: issue("carol", now, day),
        expired: issue("app", now - day, 1_000),
    };
    let broker = issue("broker", now, day);
    let proxy = issue("proxy", now, day);
    (policy, tokens, broker, proxy)
}

struct Secured {
    proxy: Option<ProxyHandle>,
    broker: Option<Broker>,
    nameserver: NameserverHandle,
    tokens: Tokens,
    proxy_audit: PathBuf,
    _dir: tempfile::TempDir,
}

impl Secured {
    fn start(adjust: impl FnOnce(&mut ProxyConfig)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let (policy, tokens, broker_token, proxy_token) = policy();
        let policy_file = dir.path().join("policy.json");
        std::fs::write(&policy_file, policy.to_json()).unwrap();
        let write = |name: &str, token: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, token).unwrap();
            path
        };
        let broker_token_file = write("broker.token", &broker_token);
        let proxy_token_file = write("proxy.token", &proxy_token);
        let nameserver = start_nameserver(|c| {
            c.security.enabled = true;
            c.security.policy_file = Some(policy_file.clone());
            c.security.audit_log = Some(dir.path().join("nameserver-audit.log"));
        });
        let mut config = broker_config("broker-a", 1, &dir.path().join("broker"), &nameserver);
        config.security.enabled = true;
        config.security.token_file = Some(broker_token_file);
        config.security.audit_log = Some(dir.path().join("broker-audit.log"));
        config.security.policy_refresh_ms = 100;
        let broker = start_broker(config);
        let endpoint = defibus_tests::endpoint(broker.shard_ports()[0]);
        let admin = client(&nameserver, &tokens.admin);
        let topic = defibus_tests::topic_config(TOPIC, 2, FlushMode::Async);
        retry_until("the admin creates the topic", WAIT, || {
            Admin::new(&admin).create_topic(&endpoint, &topic)
        });
        wait_until("the topic is routed", WAIT, || {
            Admin::new(&admin).topic_route(TOPIC).is_ok()
        });
        let proxy_audit = dir.path().join("proxy-audit.log");
        let mut proxy_config = ProxyConfig {
            listen_addr: "127.0.0.1:0".parse().unwrap(),
            nameservers: vec![nameserver.local_addr().to_string()],
            data_dir: dir.path().join("proxy"),
            ..ProxyConfig::default()
        };
        proxy_config.security.enabled = true;
        proxy_config.security.token_file = Some(proxy_token_file);
        proxy_config.security.audit_log = Some(proxy_audit.clone());
        proxy_config.security.policy_refresh_ms = 100;
        adjust(&mut proxy_config);
        let proxy = proxy::start(proxy_config).expect("the secured proxy starts");
        Self {
            proxy: Some(proxy),
            broker: Some(broker),
            nameserver,
            tokens,
            proxy_audit,
            _dir: dir,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.proxy.as_ref().unwrap().local_addr())
    }

    /// POSTs `body` with `token` as the bearer (none: no Authorization header); returns
    /// (status, WWW-Authenticate, JSON body).
    fn post(
        &self,
        path: &str,
        token: Option<&str>,
        body: &serde_json::Value,
    ) -> (u16, Option<String>, serde_json::Value) {
        let agent = ureq::AgentBuilder::new().timeout(WAIT).build();
        let mut request = agent
            .post(&self.url(path))
            .set("content-type", "application/json");
        if let Some(token) = token {
            request = request.set("authorization", &format!("Bearer {token}"));
        }
        let response = match request.send_string(&body.to_string()) {
            Ok(response) => response,
            Err(ureq::Error::Status(_, response)) => response,
            Err(e) => panic!("HTTP call failed: {e}"),
        };
        let status = response.status();
        let challenge = response.header("www-authenticate").map(str::to_owned);
        let text = response.into_string().unwrap_or_default();
        let json = serde_json::from_str(&text).unwrap_or(serde_json::Value::Null);
        (status, challenge, json)
    }

    fn publish(
        &self,
        token: Option<&str>,
        value: &str,
    ) -> (u16, Option<String>, serde_json::Value) {
        self.post(
            "/v1/publish",
            token,
            &json!({"topic": TOPIC, "value": value}),
        )
    }

    /// The status of a WebSocket upgrade to `/v1/stream{query}` with `token` as the bearer
    /// header: 101 when upgraded.
    fn upgrade(&self, query: &str, token: Option<&str>) -> u16 {
        let url = format!(
            "ws://{}/v1/stream{query}",
            self.proxy.as_ref().unwrap().local_addr()
        );
        let mut request = url.into_client_request().unwrap();
        if let Some(token) = token {
            request
                .headers_mut()
                .insert("authorization", format!("Bearer {token}").parse().unwrap());
        }
        match tungstenite::connect(request) {
            Ok((_, response)) => response.status().as_u16(),
            Err(tungstenite::Error::Http(response)) => response.status().as_u16(),
            Err(e) => panic!("WebSocket upgrade failed: {e}"),
        }
    }

    /// A WebSocket session authenticated with `?access_token=`, hello sent and welcome read.
    fn stream(&self, token: &str, instance: &str) -> support::Stream {
        let url = format!(
            "ws://{}/v1/stream?access_token={token}",
            self.proxy.as_ref().unwrap().local_addr()
        );
        let (socket, _) = tungstenite::connect(url).expect("WebSocket connects");
        let mut stream = support::Stream::from_socket(socket);
        stream.send(json!({"type": "hello", "identity": identity(instance)}));
        let welcome = stream.recv();
        assert_eq!(welcome["type"], "welcome", "{welcome}");
        stream
    }

    /// Replaces the policy on the nameserver as `admin` would, with `edit` applied.
    fn change_policy(&self, edit: impl FnOnce(&mut Policy)) {
        let admin_client = client(&self.nameserver, &self.tokens.admin);
        let admin = Admin::new(&admin_client);
        let (_, answer) = admin.policies().remove(0);
        let (version, json) = answer.unwrap();
        let mut policy = Policy::from_json(&json).unwrap();
        edit(&mut policy);
        let (_, stored) = admin.put_policy(version, &policy.to_json()).remove(0);
        assert_eq!(stored.unwrap(), version + 1);
    }
}

impl Drop for Secured {
    fn drop(&mut self) {
        if let Some(proxy) = self.proxy.take() {
            proxy.shutdown().unwrap();
        }
        if let Some(broker) = self.broker.take() {
            broker.shutdown().unwrap();
        }
    }
}

fn client(nameserver: &NameserverHandle, token: &str) -> Client {
    let config = ClientConfig::new([nameserver.local_addr().to_string()], AREA)
        .unwrap()
        .with_request_timeout(Duration::from_secs(2))
        .with_token(token);
    Client::new(config).unwrap()
}

#[track_caller]
fn assert_unauthenticated(answer: (u16, Option<String>, serde_json::Value)) {
    let (status, challenge, body) = answer;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["error"]["code"], "unauthenticated", "{body}");
    let challenge = challenge.expect("WWW-Authenticate on a 401");
    assert!(challenge.starts_with("Bearer"), "{challenge}");
}

#[test]
fn callers_without_a_valid_token_get_401_on_publish_and_on_the_stream_upgrade() {
    let bus = Secured::start(|_| {});
    let unknown = "dfb.0badc0de.0000000000000000000000000000000000000000000000000000000000000000";

    assert_unauthenticated(bus.publish(None, "no token"));
    assert_unauthenticated(bus.publish(Some(unknown), "unknown token"));
    assert_unauthenticated(bus.publish(Some(&bus.tokens.expired), "expired token"));
    let (status, _, body) = bus.publish(Some("not-a-token"), "garbage");
    assert_eq!(
        (status, &body["error"]["code"]),
        (401, &json!("unauthenticated"))
    );
    let (status, _, body) = bus.publish(Some(&bus.tokens.app), "valid");
    assert_eq!(status, 200, "{body}");

    assert_eq!(bus.upgrade("", None), 401);
    assert_eq!(bus.upgrade("", Some(unknown)), 401);
    assert_eq!(bus.upgrade("", Some(&bus.tokens.expired)), 401);
    assert_eq!(bus.upgrade(&format!("?access_token={unknown}"), None), 401);
    assert_eq!(bus.upgrade("", Some(&bus.tokens.app)), 101);
    assert_eq!(
        bus.upgrade(&format!("?access_token={}", bus.tokens.app), None),
        101
    );

    // The description of the API and the health check stay open.
    for path in ["/openapi.json", "/health"] {
        let response = ureq::get(&bus.url(path)).call().unwrap();
        assert_eq!(response.status(), 200, "{path}");
    }
    // The access token is taken on the upgrade only.
    let url = bus.url(&format!("/v1/publish?access_token={}", bus.tokens.app));
    let refused = ureq::post(&url).send_string(&json!({"topic": TOPIC, "value": "q"}).to_string());
    assert!(
        matches!(refused, Err(ureq::Error::Status(401, _))),
        "{refused:?}"
    );
}

#[test]
fn a_principal_without_the_grant_is_denied_naming_it_until_granted_at_runtime() {
    let bus = Secured::start(|_| {});
    let (status, _, body) = bus.publish(Some(&bus.tokens.carol), "denied");
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"]["code"], "permission_denied");
    let message = body["error"]["message"].as_str().unwrap();
    for part in ["carol", "produce", TOPIC] {
        assert!(message.contains(part), "{message} names {part}");
    }
    // Requests and replies need grants of their own, which `app` does not have.
    let (status, _, body) = bus.post(
        "/v1/request",
        Some(&bus.tokens.app),
        &json!({"topic": TOPIC, "value": "q", "timeout_ms": 500}),
    );
    assert_eq!(status, 403, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("request")
    );
    let (status, _, body) = bus.post(
        "/v1/subscriptions",
        Some(&bus.tokens.app),
        &json!({"identity": identity("hook"), "topic": TOPIC, "group": "other",
                "url": "http://127.0.0.1:9/hook"}),
    );
    assert_eq!(status, 403, "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("other"));

    // On the stream: consume only as the granted groups.
    let mut stream = bus.stream(&bus.tokens.app, "app-ws");
    stream.send(json!({"type": "subscribe", "ref": 1, "topic": TOPIC, "group": "other"}));
    let refused = stream.recv_type("error");
    assert_eq!(refused["code"], "permission_denied", "{refused}");
    stream.send(json!({"type": "subscribe", "ref": 2, "topic": TOPIC, "group": "app-1"}));
    assert_eq!(stream.recv_type("subscribed")["ref"], 2);

    // The denials are in the proxy's audit log, with the principal.
    let audit = std::fs::read_to_string(&bus.proxy_audit).unwrap_or_default();
    assert!(
        audit
            .lines()
            .any(|l| l.contains("carol") && l.contains("produce")),
        "{audit}"
    );

    bus.change_policy(|policy| {
        policy.grant(grant("carol", "produce", TOPIC, "*"));
    });
    // The proxy follows the policy within `policy_refresh_ms`; until then carol is denied.
    let mut attempts = 0;
    wait_until("the grant reaches the proxy", WAIT, || {
        attempts += 1;
        let (status, _, body) = bus.publish(Some(&bus.tokens.carol), "granted");
        assert!(status == 200 || status == 403, "{status} {body}");
        status == 200
    });
    eprintln!("carol's publish went through after {attempts} attempts");
}

#[test]
fn the_rate_limit_holds_for_a_principal_that_declares_a_fresh_identity_each_time() {
    let bus = Secured::start(|c| {
        c.rate_limit_messages_per_s = 1;
        c.rate_limit_burst_messages = 3;
    });
    let publish = |token: &str, instance: &str| {
        bus.post(
            "/v1/publish",
            Some(token),
            &json!({"identity": identity(instance), "topic": TOPIC, "value": "x"}),
        )
    };
    for n in 0..3 {
        let (status, _, body) = publish(&bus.tokens.app, &format!("fresh-{n}"));
        assert_eq!(status, 200, "{body}");
    }
    let (status, _, body) = publish(&bus.tokens.app, "fresh-3");
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["error"]["code"], "rate_limited");
    // A WebSocket session of the same principal takes from the same bucket.
    let mut stream = bus.stream(&bus.tokens.app, "fresh-ws");
    stream.send(json!({"type": "publish", "ref": 1, "topic": TOPIC, "value": "y"}));
    assert_eq!(stream.recv_type("error")["code"], "rate_limited");
    // Another principal has a bucket of its own.
    let (status, _, body) = publish(&bus.tokens.admin, "fresh-4");
    assert_eq!(status, 200, "{body}");
}

/// A webhook subscription pushes with the proxy's credentials, so its owner's grant is
/// checked before each delivery: revoked, nothing more is posted (and nothing is lost);
/// granted again, the held messages go out.
#[test]
fn a_webhook_stops_pushing_when_its_owners_grant_is_revoked_and_resumes_when_granted() {
    let bus = Secured::start(|_| {});
    let (url, pushes) = support::webhook_server(0);
    let (status, _, created) = bus.post(
        "/v1/subscriptions",
        Some(&bus.tokens.app),
        &json!({"identity": identity("hook"), "topic": TOPIC, "group": "app-hook",
                "start": "latest", "url": url}),
    );
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().unwrap().to_owned();
    let show =
        |bus: &Secured, token: &str| match ureq::get(&bus.url(&format!("/v1/subscriptions/{id}")))
            .set("authorization", &format!("Bearer {token}"))
            .call()
        {
            Ok(response) => (200, response.into_json::<serde_json::Value>().unwrap()),
            Err(ureq::Error::Status(status, response)) => {
                (status, response.into_json().unwrap_or_default())
            }
            Err(e) => panic!("GET failed: {e}"),
        };
    let state = |bus: &Secured| {
        let (status, info) = show(bus, &bus.tokens.admin);
        assert_eq!(status, 200, "{info}");
        info["state"].as_str().unwrap_or_default().to_owned()
    };
    assert_eq!(bus.publish(Some(&bus.tokens.app), "before").0, 200);
    let pushed = pushes.recv_timeout(WAIT).expect("pushed while granted");
    assert_eq!(pushed["message"]["value"], "before");

    bus.change_policy(|policy| {
        policy.revoke(&grant("app", "consume", "A10-*", "app-*"));
    });
    // Once the proxy enforces the revocation (app may no longer even look at it), the next
    // message finds the owner without the grant: the subscription is suspended.
    wait_until("the revocation reaches the proxy", WAIT, || {
        show(&bus, &bus.tokens.app).0 == 403
    });
    assert_eq!(bus.publish(Some(&bus.tokens.admin), "while revoked").0, 200);
    wait_until("the subscription is suspended", WAIT, || {
        state(&bus) == "suspended"
    });
    // A bounded window in which nothing may arrive (the message is held, not posted).
    assert!(
        pushes.recv_timeout(Duration::from_millis(500)).is_err(),
        "a message was pushed for an owner without the grant"
    );
    let audit = std::fs::read_to_string(&bus.proxy_audit).unwrap_or_default();
    assert!(
        audit
            .lines()
            .any(|l| l.contains("\"app\"") && l.contains("consume") && l.contains("webhook")),
        "the suspension is audited as app's denial: {audit}"
    );

    bus.change_policy(|policy| {
        policy.grant(grant("app", "consume", "A10-*", "app-*"));
    });
    let held = pushes
        .recv_timeout(WAIT)
        .expect("the held message goes out once granted");
    assert_eq!(held["message"]["value"], "while revoked");
    wait_until("the subscription is active again", WAIT, || {
        state(&bus) == "active"
    });
}

#[test]
fn the_read_api_needs_a_token_and_service_actions_need_admin_service() {
    let bus = Secured::start(|_| {});
    let get = |path: &str, token: Option<&str>| {
        let mut request = ureq::get(&bus.url(path));
        if let Some(token) = token {
            request = request.set("authorization", &format!("Bearer {token}"));
        }
        let response = match request.call() {
            Ok(response) | Err(ureq::Error::Status(_, response)) => response,
            Err(e) => panic!("GET {path}: {e}"),
        };
        let status = response.status();
        let challenge = response.header("www-authenticate").map(str::to_owned);
        let body = serde_json::from_str(&response.into_string().unwrap()).unwrap_or_default();
        (status, challenge, body)
    };
    for path in ["/v1/cluster", "/v1/topics", "/v1/groups", "/v1/services"] {
        assert_unauthenticated(get(path, None));
    }
    // Reading needs no grant, as the CLI's reads of the brokers and nameservers: carol, who
    // may do nothing, sees the topics.
    let (status, _, topics) = get("/v1/topics", Some(&bus.tokens.carol));
    assert_eq!(status, 200, "{topics}");
    assert_eq!(topics["topics"][0]["topic"], TOPIC);
    // A lifecycle action needs admin_service on the service, checked before the SGS is asked.
    let (status, _, body) = bus.post(
        "/v1/services/7401/deploy",
        Some(&bus.tokens.carol),
        &json!({}),
    );
    assert_eq!(status, 403, "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    for part in ["carol", "admin_service", "7401"] {
        assert!(message.contains(part), "{message} names {part}");
    }
    assert_unauthenticated(bus.post("/v1/services/7401/deploy", None, &json!({})));
    let (status, _, body) = bus.post(
        "/v1/services/7401/deploy",
        Some(&bus.tokens.admin),
        &json!({}),
    );
    assert_eq!(status, 503, "granted, but this proxy has no SGS: {body}");
    // The console's page itself is open: it asks for the token.
    let response = ureq::get(&bus.url("/console")).call().unwrap();
    assert_eq!(response.status(), 200);
}

/// A trace shows every group's progress: it needs `consume` on the topic for every group,
/// at the proxy (the caller's grant) and at the broker (a bus client's own).
#[test]
fn a_trace_needs_consume_on_the_topic_for_every_group() {
    let bus = Secured::start(|_| {});
    let (status, _, body) = bus.publish(Some(&bus.tokens.admin), "traced");
    assert_eq!(status, 200, "{body}");
    let get = |token: &str| {
        let path = format!("/v1/trace?topic={TOPIC}&queue={}", body["queue_id"]);
        match ureq::get(&bus.url(&path))
            .set("authorization", &format!("Bearer {token}"))
            .call()
        {
            Ok(response) => (
                response.status(),
                response.into_json::<serde_json::Value>().unwrap(),
            ),
            Err(ureq::Error::Status(status, response)) => {
                (status, response.into_json::<serde_json::Value>().unwrap())
            }
            Err(e) => panic!("HTTP call failed: {e}"),
        }
    };
    // `app` may consume A10-* only as groups app-*: not every group.
    let (status, denied) = get(&bus.tokens.app);
    assert_eq!(status, 403, "{denied}");
    let message = denied["error"]["message"].as_str().unwrap();
    for part in ["app", "consume", TOPIC] {
        assert!(message.contains(part), "{message} names {part}");
    }
    let (status, answer) = get(&bus.tokens.admin);
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["queues"][0]["messages"][0]["offset"], body["offset"]);
    // The broker checks the same for a client calling it directly.
    let app = client(&bus.nameserver, &bus.tokens.app);
    let refused = Admin::new(&app)
        .trace(TOPIC, &client::TraceLookup::newest())
        .unwrap_err();
    assert!(
        matches!(refused, client::ClientError::Denied { .. }),
        "{refused}"
    );
}
