//! The server as a library: started in-process on a listener the test binds itself (the
//! address comes from the listener, not from a log line), serving the example app through a
//! worker process of the built binary, and stopped by a future rather than a signal.

use std::time::Duration;

use bulkhead_server::config::{Config, Overrides};
use bulkhead_server::{Hooks, Mode};

use crate::support::{BIN, request};

#[test]
fn the_server_runs_in_process_on_the_listener_it_is_given() {
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let config = Config::load(
        &dir.path().join("bulkhead.toml"),
        Overrides {
            listen: Some("127.0.0.1:0".parse().unwrap()),
            database_url: None,
            data_dir: Some(dir.path().join("data")),
        },
    )
    .unwrap();
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let hooks = Hooks {
        canary: None,
        worker_exe: Some(BIN.into()),
    };
    let server = rt.spawn(async move {
        bulkhead_server::launch_until(
            &config,
            listener,
            Mode::Up { example: true },
            hooks,
            async {
                let _ = stopped.await;
            },
        )
        .await
    });
    // The example app's worker comes up; a signed-in agent reads acme's tickets through it.
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let token = loop {
        let form = "grant_type=password&client_id=helpdesk&username=alice&password=alice-at-acme";
        let (status, body) = request(
            addr,
            "POST",
            "/realms/acme/protocol/openid-connect/token",
            &[],
            Some(("application/x-www-form-urlencoded", form)),
        );
        if status == 200 {
            let v: serde_json::Value = serde_json::from_str(&body).unwrap();
            break v["access_token"].as_str().unwrap().to_owned();
        }
        assert!(std::time::Instant::now() < deadline, "{status} {body}");
        std::thread::sleep(Duration::from_millis(200));
    };
    let auth = format!("Bearer {token}");
    let (status, body) = loop {
        let (status, body) = request(
            addr,
            "GET",
            "/t/acme/api/ticket",
            &[("Authorization", &auth)],
            None,
        );
        if status != 503 {
            break (status, body);
        }
        assert!(std::time::Instant::now() < deadline, "{body}");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(status, 200, "{body}");
    let (status, _) = request(addr, "GET", "/readyz", &[], None);
    assert_eq!(status, 200);
    stop.send(()).unwrap();
    rt.block_on(server).unwrap().unwrap();
    // The embedded cluster this run started is stopped again.
    let (cluster, _) = bulkhead_pgcluster::Cluster::open_or_init(
        &dir.path().join("data/postgres"),
        bulkhead_pgcluster::Durability::Durable,
    )
    .unwrap();
    assert!(!cluster.is_running());
}
