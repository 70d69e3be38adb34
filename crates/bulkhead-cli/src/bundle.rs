//! `bulkhead app deploy|versions|rollback`: a bundle directory read, checked (every problem
//! at once, nothing stored when there is one), stored as an immutable version and activated.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, bail};
use bulkhead_model::bundle::{self, Bundle};

/// Reads `manifest.yaml`, `functions/` and `public/` of `dir` (nothing else of it). Symbolic
/// links are refused rather than followed, so a bundle holds only what is inside it.
pub fn read_dir(dir: &Path) -> anyhow::Result<(Bundle, Vec<String>)> {
    let mut files = BTreeMap::new();
    let mut problems = Vec::new();
    let manifest = dir.join(bundle::MANIFEST);
    match std::fs::read(&manifest) {
        Ok(b) => {
            files.insert(bundle::MANIFEST.to_owned(), b);
        }
        Err(e) => bail!("{}: {e}", manifest.display()),
    }
    for top in ["functions", "public"] {
        let root = dir.join(top);
        if root.exists() {
            walk(&root, top, &mut files, &mut problems)?;
        }
    }
    for path in files.keys() {
        if let Err(e) = bundle::check_path(path) {
            problems.push(format!("{path}:0:0: {e}"));
        }
    }
    if !problems.is_empty() {
        files.retain(|p, _| bundle::check_path(p).is_ok());
    }
    let b = Bundle::new(files).map_err(|e| anyhow::anyhow!("{}: {e}", dir.display()))?;
    Ok((b, problems))
}

fn walk(
    dir: &Path,
    prefix: &str,
    files: &mut BTreeMap<String, Vec<u8>>,
    problems: &mut Vec<String>,
) -> anyhow::Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let name = entry.file_name();
        let Some(name) = name.to_str() else {
            problems.push(format!(
                "{prefix}/{:?}:0:0: the name is not UTF-8",
                entry.file_name()
            ));
            continue;
        };
        let path = format!("{prefix}/{name}");
        let kind = entry.file_type()?;
        if kind.is_symlink() {
            problems.push(format!(
                "{path}:0:0: a symbolic link (bundles hold files only)"
            ));
        } else if kind.is_dir() {
            walk(&entry.path(), &path, files, problems)?;
        } else if kind.is_file() {
            files.insert(path, std::fs::read(entry.path())?);
        }
    }
    Ok(())
}

/// Reads and checks a bundle directory: the bundle and its manifest, or every problem.
pub fn load_checked(
    dir: &Path,
) -> anyhow::Result<Result<(Bundle, bulkhead_model::AppManifest), Vec<String>>> {
    let (bundle, mut problems) = read_dir(dir)?;
    match bulkhead_sandbox::check::check(&bundle) {
        Ok(manifest) if problems.is_empty() => Ok(Ok((bundle, manifest))),
        Ok(_) => Ok(Err(problems)),
        Err(found) => {
            problems.extend(found.iter().map(ToString::to_string));
            Ok(Err(problems))
        }
    }
}
