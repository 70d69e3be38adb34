//! A PostgreSQL cluster that accepts only TLS (`hostssl`, plaintext rejected), with a CA made
//! for it ([`crate::certs`]): its server certificate names `localhost` only, so `verify-full`
//! to `localhost` holds and to `127.0.0.1` fails on the name. A second, unrelated CA is there
//! to be refused.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::PathBuf;

use bulkhead_pgcluster::{Cluster, Durability, Reaper};

use crate::certs::TestCa;

/// The running cluster and its certificates.
#[derive(Debug)]
pub struct TlsCluster {
    cluster: Cluster,
    _reaper: Reaper,
    ca: TestCa,
    other_ca: TestCa,
}

impl TlsCluster {
    /// Creates and starts the cluster; `database` is created before plaintext is turned off.
    pub async fn start(database: &str) -> anyhow::Result<Self> {
        let dir = std::env::temp_dir().join(format!(
            "bulkhead-tls-test-{}-{:08x}",
            std::process::id(),
            crate::rand_u32()
        ));
        let (mut cluster, _) = Cluster::open_or_init(&dir.join("pg"), Durability::Ephemeral)?;
        let reaper = cluster.reap_on_exit(true)?;
        cluster.start()?;
        // The platform database, while password logins over plaintext are still allowed.
        let (client, conn) = cluster
            .superuser_url("postgres")
            .parse::<tokio_postgres::Config>()?
            .connect(tokio_postgres::NoTls)
            .await?;
        tokio::spawn(conn);
        client
            .batch_execute(&format!("CREATE DATABASE \"{database}\""))
            .await?;
        // Certificates: the cluster's CA and server certificate, and a stranger's CA.
        let certs = dir.join("certs");
        let ca = TestCa::new(&certs, "ca")?;
        let other_ca = TestCa::new(&certs, "other-ca")?;
        let (crt, key) = ca.issue("server", "DNS:localhost")?;
        // The server's copies, owned by the server's OS user, the key private.
        let data = cluster.data_dir();
        let owner = std::fs::metadata(&data)?;
        for (from, file) in [(crt, "server.crt"), (key, "server.key")] {
            let to = data.join(file);
            std::fs::copy(from, &to)?;
            std::os::unix::fs::chown(&to, Some(owner.uid()), Some(owner.gid()))?;
            std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o600))?;
        }
        let conf = data.join("postgresql.conf");
        let mut text = std::fs::read_to_string(&conf)?;
        text.push_str("\n# TLS only (bulkhead-testkit)\nssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n");
        std::fs::write(&conf, text)?;
        std::fs::write(
            data.join("pg_hba.conf"),
            "local all all peer\nhostssl all all 127.0.0.1/32 scram-sha-256\nhostnossl all all 0.0.0.0/0 reject\n",
        )?;
        client.batch_execute("SELECT pg_reload_conf()").await?;
        Ok(Self {
            cluster,
            _reaper: reaper,
            ca,
            other_ca,
        })
    }

    pub fn port(&self) -> u16 {
        self.cluster.port()
    }

    /// The cluster's CA certificate (PEM file).
    pub fn ca_file(&self) -> PathBuf {
        self.ca.pem()
    }

    /// A CA certificate that signed nothing of this cluster's.
    pub fn other_ca_file(&self) -> PathBuf {
        self.other_ca.pem()
    }

    /// The superuser's URL to `database` on `host` (`localhost` or `127.0.0.1`), with `params`
    /// (`sslmode=…&sslrootcert=…`).
    pub fn url(&self, host: &str, database: &str, params: &str) -> String {
        format!(
            "postgres://{}:{}@{host}:{}/{database}?{params}",
            self.cluster.superuser(),
            self.cluster.password().expose(),
            self.cluster.port()
        )
    }
}
