//! `bulkhead init`: the first step of a production install. Writes a commented `bulkhead.toml`
//! (the example configuration with this install's values filled in) and a new platform master
//! key (mode 0600), refuses to overwrite either, and prints the next steps.

use std::io::Write;
use std::net::SocketAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::Context;

/// The commented example every setting is documented in; `init` fills in a few of them.
const EXAMPLE: &str = include_str!("../../../bulkhead.example.toml");

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Directory for local state (embedded vault, local files, search index copies). Written
    /// as `data_dir`.
    #[arg(long, default_value = "/var/lib/bulkhead")]
    data_dir: PathBuf,
    /// Address the server listens on. Written as `listen`.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// A file holding the PostgreSQL URL of the platform database (kept out of the config).
    /// Written as `database_url_file`; without it the setting is left for you to fill in.
    #[arg(long)]
    database_url_file: Option<PathBuf>,
    /// Where to write the new master key (it wraps app keys and realm signing keys; keep it
    /// off the data disk and back it up). Default: `master.key` next to the config file.
    #[arg(long)]
    master_key_file: Option<PathBuf>,
}

pub fn run(config_path: &Path, args: Args) -> anyhow::Result<()> {
    let key_path = args.master_key_file.clone().unwrap_or_else(|| {
        config_path
            .parent()
            .unwrap_or_else(|| Path::new(""))
            .join("master.key")
    });
    // Both checked before either is written: a refused run leaves nothing behind.
    for path in [config_path, key_path.as_path()] {
        anyhow::ensure!(
            !path.exists(),
            "{} exists; `bulkhead init` never overwrites (move it away or pass another --config / --master-key-file)",
            path.display()
        );
    }
    let text = config_text(&args, &key_path)?;
    let key: [u8; 32] = rand::random();
    let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
    create_new(&key_path, &format!("{hex}\n"))?;
    if let Err(e) = create_new(config_path, &text) {
        // Not one without the other.
        let _ = std::fs::remove_file(&key_path);
        return Err(e);
    }
    println!(
        "wrote {} and the master key {} (mode 0600: back it up; without it the vault and realm keys cannot be opened)\n\nnext:\n  1. {}\n  2. bulkhead app create -m examples/helpdesk/manifest.yaml\n  3. bulkhead tenant create acme --app helpdesk\n  4. bulkhead serve --config {}   (or the systemd unit in packaging/)",
        config_path.display(),
        key_path.display(),
        match &args.database_url_file {
            Some(f) => format!(
                "put the platform database's URL (postgres://user:password@host:5432/db) into {}",
                f.display()
            ),
            None => format!(
                "set database_url_file (or database_url) in {}",
                config_path.display()
            ),
        },
        config_path.display(),
    );
    Ok(())
}

/// Creates `path` (mode 0600, its directory if missing), failing if it exists.
fn create_new(path: &Path, text: &str) -> anyhow::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let mut f = std::fs::OpenOptions::new()
        .create_new(true)
        .write(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    f.write_all(text.as_bytes())
        .with_context(|| format!("writing {}", path.display()))
}

/// The example configuration with this install's values in place of its defaults.
fn config_text(args: &Args, key_path: &Path) -> anyhow::Result<String> {
    let quoted = |p: &Path| toml_string(&p.display().to_string());
    let mut text = format!(
        "# Written by `bulkhead init`. Every setting is explained below; see also\n# docs/operator-guide.md.\n\n{EXAMPLE}"
    );
    set(
        &mut text,
        "listen = \"127.0.0.1:8080\"",
        format!("listen = {}", toml_string(&args.listen.to_string())),
    )?;
    set(
        &mut text,
        "data_dir = \".bulkhead\"",
        format!("data_dir = {}", quoted(&args.data_dir)),
    )?;
    set(
        &mut text,
        "# master_key_file = \"/run/secrets/bulkhead-master-key\"",
        format!("master_key_file = {}", quoted(key_path)),
    )?;
    if let Some(f) = &args.database_url_file {
        set(
            &mut text,
            "# database_url_file = \"/run/secrets/bulkhead-database-url\"",
            format!("database_url_file = {}", quoted(f)),
        )?;
    }
    Ok(text)
}

/// Replaces the one line `from` of the example with `to`.
fn set(text: &mut String, from: &str, to: String) -> anyhow::Result<()> {
    let lines: Vec<&str> = text.lines().collect();
    let at: Vec<usize> = (0..lines.len()).filter(|&i| lines[i] == from).collect();
    let [i] = at.as_slice() else {
        anyhow::bail!(
            "bulkhead.example.toml has {} lines `{from}`, expected one",
            at.len()
        );
    };
    let mut out: Vec<String> = lines.iter().map(|l| (*l).to_owned()).collect();
    out[*i] = to;
    *text = out.join("\n") + "\n";
    Ok(())
}

/// A TOML basic string (quotes and backslashes escaped, control characters as `\u`).
fn toml_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(url_file: Option<&str>) -> Args {
        Args {
            data_dir: PathBuf::from("/srv/bh \"data\""),
            listen: "0.0.0.0:9000".parse().unwrap(),
            database_url_file: url_file.map(PathBuf::from),
            master_key_file: None,
        }
    }

    /// The file alone, as `Config::load` reads it (no environment layer).
    fn parse(text: &str) -> bulkhead_server::config::Config {
        use figment::providers::Format;
        figment::Figment::from(figment::providers::Toml::string(text))
            .extract()
            .unwrap()
    }

    #[test]
    fn the_written_config_is_the_example_with_this_installs_values_and_parses() {
        let text =
            config_text(&args(Some("/run/db.url")), Path::new("/etc/bh/master.key")).unwrap();
        let parsed = parse(&text);
        assert_eq!(parsed.listen.to_string(), "0.0.0.0:9000");
        assert_eq!(parsed.data_dir, PathBuf::from("/srv/bh \"data\""));
        assert_eq!(
            parsed.vault.master_key_file.as_deref(),
            Some(Path::new("/etc/bh/master.key"))
        );
        assert_eq!(
            parsed.database_url_file.as_deref(),
            Some(Path::new("/run/db.url"))
        );
        // Still the commented example.
        assert!(
            text.contains("# A tracing filter; RUST_LOG overrides it."),
            "{text}"
        );
        let without = config_text(&args(None), Path::new("k")).unwrap();
        let parsed = parse(&without);
        assert!(parsed.database_url_file.is_none());
    }

    #[test]
    fn a_setting_missing_from_the_example_is_an_error_not_a_silent_default() {
        let mut text = "a = 1\n".to_owned();
        assert!(set(&mut text, "b = 2", "b = 3".into()).is_err());
        assert_eq!(text, "a = 1\n");
    }
}
