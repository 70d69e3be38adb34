//! `bulkhead manifest check`: validates app manifests and reports every problem at once.

use std::path::PathBuf;

use anyhow::Context;
use bulkhead_model::{AppManifest, ErrorCode};
use serde_json::json;

#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// Manifest files (YAML) to validate.
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// Print the result as JSON (one object per file, one per line).
    #[arg(long)]
    json: bool,
}

/// Returns whether every manifest was valid.
pub fn check(args: &CheckArgs) -> anyhow::Result<bool> {
    let mut all_ok = true;
    for file in &args.files {
        let text =
            std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
        let name = file.display().to_string();
        match AppManifest::from_yaml(&text, &name) {
            Ok(m) => {
                if args.json {
                    println!(
                        "{}",
                        json!({"file": name, "ok": true, "app": m.app, "entities": m.entities.len()})
                    );
                } else {
                    println!("{name}: ok (app {}, {} entities)", m.app, m.entities.len());
                }
            }
            Err(e) => {
                all_ok = false;
                if args.json {
                    let problems: Vec<_> = e
                        .problems
                        .iter()
                        .map(|p| {
                            json!({"file": name, "line": p.pos.line, "col": p.pos.col,
                                   "path": p.path, "message": p.message})
                        })
                        .collect();
                    println!(
                        "{}",
                        json!({"file": name, "ok": false,
                               "error": {"code": ErrorCode::InvalidManifest, "problems": problems}})
                    );
                } else {
                    eprint!("{e}");
                }
            }
        }
    }
    Ok(all_ok)
}
