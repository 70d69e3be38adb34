//! The platform's side of the vault: creates an app's secret space, writes its secrets, hands
//! out the app's boot credential. Only the server (and the control plane it runs) links this
//! crate; a worker has only `bulkhead-vault`'s reader.
//!
//! - [`embedded`]: the master key and each app's wrapped key, sealed writes.
//! - [`openbao`]: KV v2 + AppRole, one policy per app.

pub mod embedded;
pub mod openbao;

use bulkhead_model::AppId;
use bulkhead_vault::{BootCredential, BoxFuture, Result, Secret};

/// The platform's side of a vault.
pub trait VaultAdmin: Send + Sync {
    /// Creates the app's secret space (idempotent) and returns its boot credential. Calling it
    /// again issues a fresh credential for the same space.
    fn create_app<'a>(&'a self, app: &'a AppId) -> BoxFuture<'a, Result<BootCredential>>;
    /// A boot credential for an existing app's space, for starting one of its workers; changes
    /// nothing else (no policy or role is rewritten). `NotFound` when the app has no space.
    fn boot_credential<'a>(&'a self, app: &'a AppId) -> BoxFuture<'a, Result<BootCredential>>;
    fn put<'a>(
        &'a self,
        app: &'a AppId,
        name: &'a str,
        value: &'a Secret,
    ) -> BoxFuture<'a, Result<()>>;
    fn get<'a>(&'a self, app: &'a AppId, name: &'a str) -> BoxFuture<'a, Result<Secret>>;
    /// Removes one secret (absent is fine).
    fn delete<'a>(&'a self, app: &'a AppId, name: &'a str) -> BoxFuture<'a, Result<()>>;
    /// Removes the app's secrets and credentials.
    fn delete_app<'a>(&'a self, app: &'a AppId) -> BoxFuture<'a, Result<()>>;
    /// Ends a replaced worker's vault session (its `Ready::vault_session`), so what it held
    /// cannot be used after it. Nothing to do for a vault without sessions.
    fn revoke_session<'a>(&'a self, accessor: &'a str) -> BoxFuture<'a, Result<()>> {
        let _ = accessor;
        Box::pin(async { Ok(()) })
    }
}
