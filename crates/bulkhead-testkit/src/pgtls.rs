//! A PostgreSQL cluster that accepts only TLS (`hostssl`, plaintext rejected), with a CA made
//! for it: its server certificate names `localhost` only, so `verify-full` to `localhost`
//! holds and to `127.0.0.1` fails on the name. Certificates are made with the `openssl`
//! command (Debian's). A second, unrelated CA is there to be refused.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};
use bulkhead_pgcluster::{Cluster, Durability, Reaper};

/// The running cluster and its certificates.
#[derive(Debug)]
pub struct TlsCluster {
    cluster: Cluster,
    _reaper: Reaper,
    certs: PathBuf,
}

fn openssl(dir: &Path, args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .context("running openssl (Debian package openssl)")?;
    if !out.status.success() {
        bail!("openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

/// A CA (`{name}.pem`, `{name}.key`) in `dir`.
fn make_ca(dir: &Path, name: &str) -> anyhow::Result<()> {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-days",
            "2",
            "-subj",
            &format!("/CN={name}"),
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.pem"),
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
    )
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
        std::fs::create_dir_all(&certs)?;
        make_ca(&certs, "ca")?;
        make_ca(&certs, "other-ca")?;
        openssl(
            &certs,
            &[
                "req",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-subj",
                "/CN=localhost",
                "-keyout",
                "server.key",
                "-out",
                "server.csr",
            ],
        )?;
        std::fs::write(
            certs.join("server.ext"),
            "subjectAltName=DNS:localhost\nextendedKeyUsage=serverAuth\n",
        )?;
        openssl(
            &certs,
            &[
                "x509",
                "-req",
                "-in",
                "server.csr",
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "2",
                "-extfile",
                "server.ext",
                "-out",
                "server.crt",
            ],
        )?;
        // The server's copies, owned by the server's OS user, the key private.
        let data = cluster.data_dir();
        let owner = std::fs::metadata(&data)?;
        for file in ["server.crt", "server.key"] {
            let to = data.join(file);
            std::fs::copy(certs.join(file), &to)?;
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
            certs,
        })
    }

    pub fn port(&self) -> u16 {
        self.cluster.port()
    }

    /// The cluster's CA certificate (PEM file).
    pub fn ca_file(&self) -> PathBuf {
        self.certs.join("ca.pem")
    }

    /// A CA certificate that signed nothing of this cluster's.
    pub fn other_ca_file(&self) -> PathBuf {
        self.certs.join("other-ca.pem")
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
