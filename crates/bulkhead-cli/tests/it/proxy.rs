//! Behind a reverse proxy: `[serve] trusted_proxies`. Observed through login throttling, which
//! counts failures per client address (20 a minute).

use crate::support::{Running, request, workdir};

/// A failed password login at acme's realm from `forwarded_for` (as a client or proxy claims
/// it), as user `user`; the status.
fn failed_login(addr: std::net::SocketAddr, forwarded_for: &str, user: &str) -> u16 {
    let form = format!("grant_type=password&client_id=helpdesk&username={user}&password=wrong");
    request(
        addr,
        "POST",
        "/realms/acme/protocol/openid-connect/token",
        &[("X-Forwarded-For", forwarded_for)],
        Some(("application/x-www-form-urlencoded", &form)),
    )
    .0
}

#[test]
fn behind_a_trusted_proxy_the_client_address_comes_from_it_and_from_nobody_else() {
    // No proxy trusted (the default): a client that names a new address on every attempt is
    // still one address, and is throttled after 20 failures.
    let cwd = workdir();
    let mut up = Running::spawn(cwd.path(), &["up", "--listen", "127.0.0.1:0"]);
    let addr = up.wait_listening();
    for i in 0..20 {
        let status = failed_login(addr, &format!("198.51.100.{i}"), &format!("nobody-{i}"));
        assert_eq!(status, 400, "attempt {i}");
    }
    assert_eq!(failed_login(addr, "198.51.100.200", "nobody-x"), 429);
    up.signal("TERM");
    assert!(up.wait().success());

    // The loopback proxy trusted: the addresses it names are counted apart.
    std::fs::write(
        cwd.path().join("bulkhead.toml"),
        "[serve]\ntrusted_proxies = [\"127.0.0.0/8\"]\n",
    )
    .unwrap();
    let mut up = Running::spawn(cwd.path(), &["up", "--listen", "127.0.0.1:0"]);
    let addr = up.wait_listening();
    for i in 0..20 {
        assert_eq!(
            failed_login(addr, "203.0.113.1", &format!("someone-{i}")),
            400
        );
    }
    assert_eq!(failed_login(addr, "203.0.113.1", "someone-x"), 429);
    // Another client behind the same proxy is not held back by the first one's failures, and
    // a forged entry left of the proxy's own does not change who is counted.
    assert_eq!(failed_login(addr, "203.0.113.2", "other"), 400);
    assert_eq!(
        failed_login(addr, "203.0.113.9, 203.0.113.1", "forger"),
        429
    );
}
