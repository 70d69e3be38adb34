//! Certificate authorities and certificates for TLS tests, made with the `openssl` command
//! (Debian's): a CA per [`TestCa`], certificates it signs for the names a test chooses.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};

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

/// A CA in `dir`: `{name}.pem` (its certificate) and `{name}.key`.
#[derive(Debug)]
pub struct TestCa {
    dir: PathBuf,
    name: String,
}

impl TestCa {
    pub fn new(dir: &Path, name: &str) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)?;
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
        )?;
        Ok(Self {
            dir: dir.to_owned(),
            name: name.to_owned(),
        })
    }

    /// The CA's certificate (PEM file).
    pub fn pem(&self) -> PathBuf {
        self.dir.join(format!("{}.pem", self.name))
    }

    /// A server certificate for `san` (e.g. `DNS:localhost`) signed by this CA:
    /// `{name}.crt` and `{name}.key` in the CA's directory.
    pub fn issue(&self, name: &str, san: &str) -> anyhow::Result<(PathBuf, PathBuf)> {
        let (crt, key, csr, ext) = (
            format!("{name}.crt"),
            format!("{name}.key"),
            format!("{name}.csr"),
            format!("{name}.ext"),
        );
        openssl(
            &self.dir,
            &[
                "req",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-subj",
                &format!("/CN={name}"),
                "-keyout",
                &key,
                "-out",
                &csr,
            ],
        )?;
        std::fs::write(
            self.dir.join(&ext),
            format!("subjectAltName={san}\nextendedKeyUsage=serverAuth\n"),
        )?;
        openssl(
            &self.dir,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                &format!("{}.pem", self.name),
                "-CAkey",
                &format!("{}.key", self.name),
                "-CAcreateserial",
                "-days",
                "2",
                "-extfile",
                &ext,
                "-out",
                &crt,
            ],
        )?;
        Ok((self.dir.join(crt), self.dir.join(key)))
    }
}
