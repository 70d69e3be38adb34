//! Runs this test binary again as a child that starts a cluster and then ends (normally or by
//! panic), and checks that the cluster's directory and server are gone afterwards.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use bulkhead_pgcluster::{process_alive, wait_until};
use bulkhead_testkit::pg;

const HELPER_ENV: &str = "BULKHEAD_TESTKIT_HELPER";

/// Run only as a child of the tests below.
#[tokio::test]
#[ignore = "helper: started by cleanup tests in a child process"]
async fn helper_starts_a_cluster_then_ends() {
    let cluster = pg().unwrap();
    let db = cluster.fresh_db().await.unwrap();
    let pid = cluster.cluster().postmaster_pid().unwrap();
    db.superuser().await.unwrap();
    println!("CLUSTER_DIR={}", cluster.dir().display());
    println!("CLUSTER_PID={pid}");
    if std::env::var(HELPER_ENV).as_deref() == Ok("panic") {
        panic!("helper panics on purpose");
    }
}

fn run_helper(mode: &str) -> (bool, PathBuf, u32) {
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "cleanup::helper_starts_a_cluster_then_ends",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(HELPER_ENV, mode)
        .env_remove("KEEP_TEST_DB")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let field = |key: &str| {
        stdout
            .lines()
            .find_map(|l| l.split_once(key).map(|(_, v)| v.trim()))
            .unwrap_or_else(|| {
                panic!(
                    "helper printed no {key}; stdout:\n{stdout}\nstderr:\n{}",
                    String::from_utf8_lossy(&out.stderr)
                )
            })
            .to_owned()
    };
    let dir = PathBuf::from(field("CLUSTER_DIR="));
    let pid = field("CLUSTER_PID=").parse().unwrap();
    (out.status.success(), dir, pid)
}

fn assert_gone(dir: &std::path::Path, pid: u32) {
    assert!(
        wait_until(Duration::from_secs(30), || !dir.exists()
            && !process_alive(pid)),
        "cluster left behind: dir exists={}, postmaster {pid} alive={}",
        dir.exists(),
        process_alive(pid)
    );
}

#[test]
fn the_cluster_is_gone_after_the_test_process_exits() {
    let (ok, dir, pid) = run_helper("normal");
    assert!(ok, "the helper should have passed");
    assert_gone(&dir, pid);
}

#[test]
fn the_cluster_is_gone_after_a_panicking_test() {
    let (ok, dir, pid) = run_helper("panic");
    assert!(!ok, "the helper should have failed by panic");
    assert_gone(&dir, pid);
}
