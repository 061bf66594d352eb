//! Calls by service id (DESIGN §6, GSL): SGS applies and deploys a service in A10 and B20
//! (topic `A10-<id>` on A10's cluster, `B20-<id>` on B20's), GSL resolves it nearest first,
//! and clients name only the service id:
//!
//! - a responder in each area subscribes by service id and serves its area's deployment;
//!   a requester in each area is served by its own area's deployment; when A10's deployment
//!   is down (its broker stopped), A10's requester falls back to B20's, and goes home again
//!   when A10 is back;
//! - events sent by service id reach the nearest deployment, and move to the other one the
//!   same way.

use std::time::Duration;

use client::{Client, ClientError, ConsumeMode, Consumer, Message, Producer, Requester, Responder};
use defibus_tests::WAIT;
use defibus_tests::areas::{AREAS, ServicePlane, TwoAreas};
use testkit::{retry_until, wait_until};

const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// A client in `area` that locates services through `plane`'s GSL.
fn service_client(topology: &TwoAreas, plane: &ServicePlane, area: &str) -> Client {
    topology.client(area, |c| c.with_gsl([plane.gsl_endpoint()]))
}

/// The reply's value to `value` sent to `service` from `requester`.
fn call(requester: &Requester, service: &str, value: &str) -> Result<String, ClientError> {
    requester
        .request_service(service, Message::for_service(value), REQUEST_TIMEOUT)
        .map(|reply| String::from_utf8(reply.value).unwrap())
}

#[test]
fn requesters_are_served_nearby_first_and_fall_back_when_their_area_is_down() {
    let service = "20190101";
    let mut topology = TwoAreas::start_with_area_clusters(1, 1);
    let plane = topology.start_service_plane();
    let deployed = plane.apply_and_deploy(service, &AREAS, 2);
    assert_eq!(deployed.deployed_areas, AREAS);

    // One responder per area, subscribed by service id; each reply says who answered.
    let responder_clients: Vec<Client> = AREAS
        .iter()
        .map(|area| service_client(&topology, &plane, area))
        .collect();
    let _responders: Vec<Responder> = AREAS
        .iter()
        .zip(&responder_clients)
        .map(|(&area, client)| {
            let responder = Responder::start_service(client, service, "svc", move |request| {
                format!("{area}:{}", String::from_utf8_lossy(&request.value)).into_bytes()
            })
            .unwrap();
            assert_eq!(
                responder.topic(),
                format!("{area}-{service}"),
                "a responder serves its own area's deployment"
            );
            responder
        })
        .collect();

    let requester_clients: Vec<Client> = AREAS
        .iter()
        .map(|area| service_client(&topology, &plane, area))
        .collect();
    let requesters: Vec<Requester> = requester_clients.iter().map(Requester::new).collect();
    for ((area, requester), client) in AREAS.iter().zip(&requesters).zip(&requester_clients) {
        assert_eq!(client.locator().nearest(service).unwrap().area, *area);
        let reply = retry_until(&format!("{area}'s first call"), WAIT, || {
            call(requester, service, "hello")
        });
        assert_eq!(reply, format!("{area}:hello"), "served in its own area");
    }

    // A10's deployment goes down with its broker; A10's requester is served by B20.
    let config = topology.stop_broker("A10", 0);
    assert_eq!(
        call(&requesters[0], service, "fallback").unwrap(),
        "B20:fallback"
    );
    assert_eq!(call(&requesters[1], service, "still").unwrap(), "B20:still");

    // A10 is back (new ports, same data): A10's requester goes home once its deployment is
    // routable again and its responder has subscribed to it.
    topology.restart_broker("A10", 0, config);
    wait_until("A10's requester served in A10 again", WAIT, || {
        call(&requesters[0], service, "home").is_ok_and(|reply| reply == "A10:home")
    });
}

#[test]
fn events_sent_by_service_id_reach_the_nearest_deployment() {
    let service = "20190102";
    let mut topology = TwoAreas::start_with_area_clusters(1, 1);
    let plane = topology.start_service_plane();
    plane.apply_and_deploy(service, &AREAS, 2);

    let b20 = service_client(&topology, &plane, "B20");
    let consumer =
        Consumer::subscribe_service(&b20, service, "events", ConsumeMode::Clustering).unwrap();
    assert_eq!(consumer.topic(), format!("B20-{service}"));
    let producer = Producer::new(&b20).unwrap();
    let sent = producer
        .send_to_service(service, Message::for_service("to B20"))
        .unwrap();
    assert_eq!(sent.topic, format!("B20-{service}"));
    let got = consumer.recv(WAIT).unwrap().expect("the event");
    assert_eq!(got.value, b"to B20");

    // B20's deployment down: the same call lands on A10's.
    topology.stop_broker("B20", 0);
    let sent = producer
        .send_to_service(service, Message::for_service("to A10"))
        .unwrap();
    assert_eq!(sent.topic, format!("A10-{service}"));

    // Unknown and undeployed services are told apart.
    let err = producer
        .send_to_service("20190199", Message::for_service("x"))
        .unwrap_err();
    assert!(matches!(err, ClientError::NotDeployed { .. }), "{err}");
}
