//! Each tenant's flag and setting overrides as a worker holds them ([`OptionsStore`], replaced
//! as its configuration changes), and the views app code and the handlers read:
//! [`Flags`] for one tenant and caller, [`Config`] for one tenant. The HTTP side (OFREP,
//! `GET /config`) is in [`crate::options`].

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};

use bulkhead_model::options::TenantOptions;
use bulkhead_model::options::{Evaluation, evaluate};
use bulkhead_model::{AppManifest, TenantId};
use serde_json::{Value, json};

/// One tenant's overrides and secret setting values.
#[derive(Debug, Clone, Default)]
pub struct LiveOptions {
    pub options: TenantOptions,
    /// Secret settings by name (from the vault); never listed.
    pub secrets: BTreeMap<String, Value>,
}

/// Every tenant's options, replaced as the worker's configuration changes.
#[derive(Debug, Default)]
pub struct OptionsStore(RwLock<HashMap<TenantId, Arc<LiveOptions>>>);

impl OptionsStore {
    pub fn set(&self, tenant: TenantId, options: LiveOptions) {
        if let Ok(mut map) = self.0.write() {
            map.insert(tenant, Arc::new(options));
        }
    }

    pub fn remove(&self, tenant: &TenantId) {
        if let Ok(mut map) = self.0.write() {
            map.remove(tenant);
        }
    }

    pub(crate) fn get(&self, tenant: &TenantId) -> Arc<LiveOptions> {
        self.0
            .read()
            .ok()
            .and_then(|m| m.get(tenant).cloned())
            .unwrap_or_default()
    }
}

/// The flags of one tenant for one caller.
#[derive(Debug)]
pub struct Flags<'a> {
    pub(crate) manifest: &'a AppManifest,
    pub(crate) live: Arc<LiveOptions>,
    pub(crate) tenant: TenantId,
    pub(crate) user: String,
    pub(crate) roles: Vec<String>,
}

impl Flags<'_> {
    /// The flag's value, why, and which branch; `None` for an undeclared flag.
    pub fn evaluate(&self, name: &str) -> Option<Evaluation> {
        let decl = self.manifest.flag(name)?;
        self.evaluate_decl(decl)
    }

    fn evaluate_decl(&self, decl: &bulkhead_model::FlagDecl) -> Option<Evaluation> {
        let name = decl.name.as_str();
        Some(evaluate(
            decl,
            self.live.options.flags.get(name),
            self.tenant.as_str(),
            &self.user,
            &self.roles,
        ))
    }

    /// A boolean flag (false when undeclared or not a boolean).
    pub fn enabled(&self, name: &str) -> bool {
        self.evaluate(name)
            .and_then(|e| e.value.as_bool())
            .unwrap_or(false)
    }

    /// Every flag `caller` may evaluate: all for a signed-in caller, only those the manifest
    /// marks `anonymous: true` for one without credentials.
    pub(crate) fn visible(&self, anonymous: bool) -> Vec<(String, Evaluation)> {
        self.manifest
            .flags
            .iter()
            .filter(|f| f.anonymous || !anonymous)
            .filter_map(|f| Some((f.name.to_string(), self.evaluate_decl(f)?)))
            .collect()
    }
}

/// The configuration of one tenant.
#[derive(Debug)]
pub struct Config<'a> {
    pub(crate) manifest: &'a AppManifest,
    pub(crate) live: Arc<LiveOptions>,
}

impl Config<'_> {
    /// The tenant's value of a setting, else the app's default; secret values included (for
    /// app code — never send them to clients).
    pub fn get(&self, name: &str) -> Option<Value> {
        let decl = self.manifest.setting(name)?;
        if decl.secret {
            return self.live.secrets.get(name).cloned();
        }
        self.live
            .options
            .settings
            .get(name)
            .cloned()
            .or_else(|| decl.default.clone())
    }

    /// Every setting, with secret ones redacted to `{"secret": true, "set": bool}`; for a
    /// caller without credentials only those the manifest marks `anonymous: true`.
    pub fn listing(&self, anonymous: bool) -> serde_json::Map<String, Value> {
        self.manifest
            .settings
            .iter()
            .filter(|d| d.anonymous || !anonymous)
            .map(|d| {
                let name = d.name.to_string();
                let value = if d.secret {
                    json!({"secret": true, "set": self.live.secrets.contains_key(&name)})
                } else {
                    self.get(&name).unwrap_or(Value::Null)
                };
                (name, value)
            })
            .collect()
    }
}
