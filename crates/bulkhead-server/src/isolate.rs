//! `serve --isolate-network` (Linux, root): each app's worker runs in its own network
//! namespace whose only link is a veth pair to the gateway. On the gateway's side of that link
//! listen only: the egress proxy (the worker's one way out, enforcing the allow-lists) and
//! relays to the worker's own infrastructure (its PostgreSQL, its vault). There is no default
//! route: code in the worker that opens sockets itself reaches nothing else — not the host's
//! loopback services, not the internet, not other workers.

use std::net::{Ipv4Addr, SocketAddr};
use std::process::Command;
use std::sync::Arc;

use crate::error::Context;
use bulkhead_model::AppId;
use tokio::net::{TcpListener, TcpStream};

/// Port of the egress proxy on the gateway's side of each namespace.
pub const PROXY_PORT: u16 = 3128;

/// One app's namespace: its name and the two ends of its link.
#[derive(Debug, Clone)]
pub struct Sandbox {
    pub netns: String,
    pub gateway_ip: Ipv4Addr,
    pub worker_ip: Ipv4Addr,
}

/// Refuses to start unless isolation can actually be set up here.
pub fn preflight() -> crate::error::Result<()> {
    if !cfg!(target_os = "linux") {
        return Err(crate::error::Error::msg(
            "--isolate-network needs Linux network namespaces",
        ));
    }
    // SAFETY-free check of the effective user: root owns /proc/self/status's Uid line 0.
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let euid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap_or_default();
    if euid != "0" {
        return Err(crate::error::Error::msg(
            "--isolate-network needs root (to create network namespaces)",
        ));
    }
    let ok = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        return Err(crate::error::Error::msg(
            "--isolate-network needs iproute2 (`ip netns`)",
        ));
    }
    Ok(())
}

fn ip(args: &[&str]) -> crate::error::Result<()> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .with_context(|| format!("running ip {}", args.join(" ")))?;
    if !out.status.success() {
        return Err(crate::error::Error::msg(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

impl Sandbox {
    /// Creates (or re-creates) the namespace of the `index`th app: `10.254.<index>.1/30` on the
    /// gateway's side, `.2` in the namespace, loopback up, no route beyond the link.
    pub fn create(index: u8, app: &AppId) -> crate::error::Result<Self> {
        let netns = format!("bulkhead-{app}");
        let host_if = format!("bh{index}g");
        let ns_if = format!("bh{index}w");
        let gateway_ip = Ipv4Addr::new(10, 254, index, 1);
        let worker_ip = Ipv4Addr::new(10, 254, index, 2);
        // Leftovers of an earlier run go first.
        let _ = ip(&["netns", "del", &netns]);
        let _ = ip(&["link", "del", &host_if]);
        ip(&["netns", "add", &netns])?;
        ip(&[
            "link", "add", &host_if, "type", "veth", "peer", "name", &ns_if,
        ])?;
        ip(&["link", "set", &ns_if, "netns", &netns])?;
        ip(&["addr", "add", &format!("{gateway_ip}/30"), "dev", &host_if])?;
        ip(&["link", "set", &host_if, "up"])?;
        let in_ns = |args: &[&str]| {
            let mut all = vec!["netns", "exec", netns.as_str(), "ip"];
            all.extend_from_slice(args);
            ip(&all)
        };
        in_ns(&["addr", "add", &format!("{worker_ip}/30"), "dev", &ns_if])?;
        in_ns(&["link", "set", &ns_if, "up"])?;
        in_ns(&["link", "set", "lo", "up"])?;
        tracing::info!(%app, %netns, %gateway_ip, %worker_ip, "network namespace ready");
        Ok(Self {
            netns,
            gateway_ip,
            worker_ip,
        })
    }

    /// Relays `gateway_ip:<port>` to `upstream` (same port), for the worker's own
    /// infrastructure.
    pub async fn relay(&self, upstream: SocketAddr) -> crate::error::Result<()> {
        let listen = SocketAddr::new(self.gateway_ip.into(), upstream.port());
        let listener = TcpListener::bind(listen)
            .await
            .with_context(|| format!("relay {listen} → {upstream}"))?;
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                tokio::spawn(async move {
                    if let Ok(mut out) = TcpStream::connect(upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut out).await;
                    }
                });
            }
        });
        Ok(())
    }

    /// Serves the egress proxy on the gateway's side of the link.
    pub async fn proxy(
        &self,
        policy: Arc<dyn bulkhead_egress::proxy::ProxyPolicy>,
    ) -> crate::error::Result<SocketAddr> {
        let listen = SocketAddr::new(self.gateway_ip.into(), PROXY_PORT);
        let listener = TcpListener::bind(listen)
            .await
            .with_context(|| format!("egress proxy on {listen}"))?;
        tokio::spawn(bulkhead_egress::proxy::serve(listener, policy));
        Ok(listen)
    }

    /// Removes an app's namespace (and with it the link), when the gateway stops.
    pub fn remove(app: &str) {
        let _ = ip(&["netns", "del", &format!("bulkhead-{app}")]);
    }
}
