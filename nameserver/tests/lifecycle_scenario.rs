//! `run` in-process: shutdown stops accepting and closes open connections.

mod support;

use std::time::Duration;

use nameserver::NameserverConfig;
use support::{Client, broker};
use tokio::sync::oneshot;

#[test]
fn run_serves_until_its_shutdown_future_completes() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let config = NameserverConfig {
        listen_addr: addr,
        ..NameserverConfig::default()
    };
    let server = std::thread::spawn(move || {
        runtime.block_on(nameserver::run(listener, config, async {
            let _ = stopped.await;
        }))
    });

    let mut conn = Client::connect(addr);
    conn.register(&broker("a", &[1001], vec![]));
    assert_eq!(conn.broker_ids(), ["a"]);
    stop.send(()).unwrap();
    conn.expect_closed();
    server.join().unwrap().unwrap();
    assert!(
        std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_err(),
        "the listener is closed"
    );
}

#[test]
fn run_refuses_an_invalid_config() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let result = runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let config = NameserverConfig {
            max_connections: 0,
            ..NameserverConfig::default()
        };
        nameserver::run(listener, config, std::future::pending()).await
    });
    let err = result.unwrap_err();
    assert!(err.to_string().contains("max_connections"), "{err}");
}

#[test]
fn start_reports_an_address_in_use() {
    let ns = support::start_nameserver(|_| {});
    let config = NameserverConfig {
        listen_addr: ns.local_addr(),
        ..NameserverConfig::default()
    };
    let err = nameserver::start(config).unwrap_err();
    assert!(
        err.to_string().contains(&ns.local_addr().to_string()),
        "{err}"
    );
}
