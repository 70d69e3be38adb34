//! Name resolution for egress: hickory's resolver, asking `[egress] nameserver` when set (UDP)
//! or the system's resolvers (`/etc/resolv.conf`, the hosts file). Nothing is cached: every
//! request resolves afresh, and every address returned is checked by the policy before
//! anything connects, so a wrong or rebinding answer can only be refused.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{
    ConnectionConfig, LookupIpStrategy, NameServerConfig, ResolverConfig,
};
use hickory_resolver::net::runtime::TokioRuntimeProvider;

/// One app's resolver.
#[derive(Debug, Clone)]
pub(crate) struct Resolver(TokioResolver);

impl Resolver {
    pub(crate) fn new(nameserver: Option<SocketAddr>, timeout: Duration) -> std::io::Result<Self> {
        let mut builder = match nameserver {
            Some(ns) => {
                let mut udp = ConnectionConfig::udp();
                udp.port = ns.port();
                let server = NameServerConfig::new(ns.ip(), true, vec![udp]);
                TokioResolver::builder_with_config(
                    ResolverConfig::from_parts(None, Vec::new(), vec![server]),
                    TokioRuntimeProvider::default(),
                )
            }
            None => TokioResolver::builder_tokio().map_err(std::io::Error::other)?,
        };
        let opts = builder.options_mut();
        opts.timeout = timeout;
        opts.attempts = 1;
        opts.cache_size = 0;
        opts.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
        builder.build().map(Self).map_err(std::io::Error::other)
    }

    /// Every address of `host`.
    pub(crate) async fn lookup(&self, host: &str) -> std::io::Result<Vec<IpAddr>> {
        let found = self
            .0
            .lookup_ip(host)
            .await
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::NotFound, e.to_string()))?;
        Ok(found.iter().collect())
    }
}
