//! A lease in the store (SPEC 11: state every node shares) that the code holding it gives
//! back when it lets go: a POP3 maildrop, an RCRAM challenge's place.

use std::sync::Arc;

use vouchmail_store::Store;

/// A lease `holder` took on `name`: given back by `release`, which waits for the store,
/// or else when dropped, in a task of its own. Outside a runtime (a test's end) a dropped
/// lease is not released but expires.
pub struct HeldLease {
    store: Arc<dyn Store>,
    name: String,
    holder: String,
}

impl HeldLease {
    /// A lease already taken (`try_lease` said so).
    pub fn new(store: Arc<dyn Store>, name: String, holder: String) -> HeldLease {
        HeldLease { store, name, holder }
    }

    /// Gives the lease back and waits until the store has it: code that answers or stops
    /// next (a POP3 QUIT, a server's shutdown closing the store) runs with it free.
    pub async fn release(&mut self) {
        let (name, holder) = (std::mem::take(&mut self.name), std::mem::take(&mut self.holder));
        if name.is_empty() {
            return;
        }
        if let Err(e) = self.store.release_lease(&name, &holder).await {
            tracing::warn!(lease = %name, error = %e, "cannot release a lease; it expires");
        }
    }
}

impl std::fmt::Debug for HeldLease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HeldLease").field("name", &self.name).field("holder", &self.holder).finish()
    }
}

impl Drop for HeldLease {
    fn drop(&mut self) {
        if self.name.is_empty() {
            return; // released already
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        let (store, name, holder) =
            (Arc::clone(&self.store), std::mem::take(&mut self.name), std::mem::take(&mut self.holder));
        runtime.spawn(async move {
            if let Err(e) = store.release_lease(&name, &holder).await {
                tracing::warn!(lease = %name, error = %e, "cannot release a lease; it expires");
            }
        });
    }
}
