//! Boundary checks: the deployment profile, each tenant's egress default and probes against its
//! allow-list, and (with a pid) the sockets of a running server and its workers.

use bulkhead_model::AppManifest;

use crate::Deployment;
use crate::data::TenantInfo;
use crate::report::Checks;

pub(crate) fn boundary_checks(
    checks: &mut Checks,
    d: &Deployment,
    apps: &[(AppManifest, Vec<TenantInfo>)],
    serve_pid: Option<u32>,
) {
    checks.add(
        "boundary.profile",
        "platform",
        d.profile.self_managed && d.profile.deny_by_default,
        d.profile.summary.clone(),
    );
    for (m, tenants) in apps {
        let app_list = d
            .app_egress
            .get(m.app.as_str())
            .cloned()
            .unwrap_or_default();
        let app_allow = bulkhead_egress::AllowList::parse(&app_list).unwrap_or_default();
        for t in tenants {
            let scope = format!("{}/{}", m.app, t.id);
            let spec = &t.record.network;
            checks.add(
                "boundary.egress_default",
                &scope,
                spec.default == "deny",
                format!(
                    "network default {}, {} allowed entries",
                    spec.default,
                    spec.allow.len()
                ),
            );
            let list = bulkhead_egress::AllowList::from_network(&spec.default, &spec.allow);
            let (ok, evidence) = match list {
                Err(e) => (false, format!("invalid allow-list: {e}")),
                Ok(list) => {
                    let probe = "bulkhead-verify-probe.example";
                    let name = list.allows_name(probe, 443) || app_allow.allows_name(probe, 443);
                    let metadata: std::net::IpAddr = [169, 254, 169, 254].into();
                    let meta =
                        list.allows_address(metadata, 80) || app_allow.allows_address(metadata, 80);
                    (
                        !name && !meta,
                        format!("{probe}:443 allowed {name}; 169.254.169.254:80 allowed {meta}"),
                    )
                }
            };
            checks.add("boundary.egress_probe", &scope, ok, evidence);
        }
    }
    match serve_pid {
        None => {
            checks.skip(
                "boundary.sockets",
                "platform",
                "pass --serve-pid to check the sockets of a running `bulkhead serve` on this host",
            );
            checks.skip(
                "boundary.compartments",
                "platform",
                "pass --serve-pid to check the compartments of a running server's workers",
            );
        }
        Some(pid) => {
            let (ok, evidence) = sockets_check(pid, d);
            checks.add("boundary.sockets", "platform", ok, evidence);
            let (ok, evidence) = crate::compartments::check(pid, d.master_key_file.as_deref());
            checks.add("boundary.compartments", "platform", ok, evidence);
        }
    }
}

/// Every outbound socket of `pid` and its `bulkhead` children goes to a configured peer or to
/// one of their own listeners.
fn sockets_check(pid: u32, d: &Deployment) -> (bool, String) {
    let mut peers: Vec<u16> = d.platform_db.get_ports().to_vec();
    for url in &d.peers {
        if let Ok(u) = reqwest::Url::parse(url)
            && let Some(port) = u.port_or_known_default()
        {
            peers.push(port);
        }
    }
    let mut pids = vec![pid];
    pids.extend(crate::sockets::children(pid));
    let sockets: Vec<(u32, crate::sockets::Socket)> = pids
        .iter()
        .flat_map(|p| {
            crate::sockets::sockets_of(*p)
                .into_iter()
                .map(move |s| (*p, s))
        })
        .collect();
    if sockets.is_empty() {
        return (
            false,
            format!("no sockets readable for pid {pid} (not running, or not ours)"),
        );
    }
    let listening: Vec<u16> = sockets
        .iter()
        .filter(|(_, s)| s.listening)
        .map(|(_, s)| s.local.port())
        .collect();
    let foreign: Vec<String> = sockets
        .iter()
        .filter(|(_, s)| s.remote.port() != 0 && !listening.contains(&s.local.port()))
        .filter(|(_, s)| !peers.contains(&s.remote.port()) && !listening.contains(&s.remote.port()))
        .map(|(p, s)| format!("pid {p} → {}", s.remote))
        .collect();
    (
        foreign.is_empty(),
        if foreign.is_empty() {
            format!(
                "{} sockets of {} processes: only configured peers and their own listeners",
                sockets.len(),
                pids.len()
            )
        } else {
            format!("connections to unconfigured peers: {}", foreign.join(", "))
        },
    )
}
