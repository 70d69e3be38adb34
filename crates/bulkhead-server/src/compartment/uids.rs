//! The uid each worker runs as: allocated once from `[compartments] uid_min..=uid_max` and kept
//! in `<data_dir>/compartments/uids.json`, so a worker's files keep their owner across restarts
//! and no two workers ever share a uid.

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::error::{Context, Error, Result};

#[derive(Debug)]
pub(super) struct Uids {
    file: PathBuf,
    min: u32,
    max: u32,
    map: BTreeMap<String, u32>,
}

impl Uids {
    pub(super) fn load(file: PathBuf, min: u32, max: u32) -> Result<Self> {
        if min == 0 || min > max {
            return Err(Error::Config(format!(
                "[compartments] uid_min {min} .. uid_max {max}: need 0 < uid_min <= uid_max"
            )));
        }
        let map = match std::fs::read(&file) {
            Ok(raw) => serde_json::from_slice(&raw)
                .with_context(|| format!("reading {}", file.display()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => return Err(e).with_context(|| format!("reading {}", file.display())),
        };
        Ok(Self {
            file,
            min,
            max,
            map,
        })
    }

    /// The uid of the worker named `key` (an app, or `app/tenant` for a tenant's own worker):
    /// the one it had, or the lowest free one in the range, recorded before it is used.
    pub(super) fn of(&mut self, key: &str) -> Result<u32> {
        if let Some(uid) = self.map.get(key)
            && (self.min..=self.max).contains(uid)
        {
            return Ok(*uid);
        }
        let taken: std::collections::BTreeSet<u32> = self.map.values().copied().collect();
        let uid = (self.min..=self.max)
            .find(|u| !taken.contains(u))
            .ok_or_else(|| {
                Error::Config(format!(
                    "[compartments] uid range {}..{} is used up ({} workers)",
                    self.min,
                    self.max,
                    self.map.len()
                ))
            })?;
        self.map.insert(key.to_owned(), uid);
        let dir = self.file.parent().unwrap_or(std::path::Path::new("."));
        std::fs::create_dir_all(dir)?;
        let tmp = self.file.with_extension("json.tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(&self.map)?)?;
        std::fs::rename(&tmp, &self.file)
            .with_context(|| format!("writing {}", self.file.display()))?;
        Ok(uid)
    }
}

#[cfg(test)]
mod tests {
    use super::Uids;

    #[test]
    fn uids_are_distinct_stable_and_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c/uids.json");
        let mut uids = Uids::load(file.clone(), 100, 102).unwrap();
        let a = uids.of("a").unwrap();
        let b = uids.of("b").unwrap();
        assert_ne!(a, b);
        assert_eq!(uids.of("a").unwrap(), a);
        let mut again = Uids::load(file, 100, 102).unwrap();
        assert_eq!(again.of("b").unwrap(), b);
        again.of("c").unwrap();
        assert!(again.of("d").is_err(), "the range holds three");
        assert!(Uids::load(dir.path().join("x"), 5, 4).is_err());
    }
}
