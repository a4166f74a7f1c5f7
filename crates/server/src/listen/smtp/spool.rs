//! Message data in flight: the budget of memory all sessions share for it, and the spool
//! file a session writes a large body to while it arrives (issue 14: a session keeps at
//! most a small buffer in memory, whatever `max_message_size` is).

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use vouchmail_store::SpooledBody;

/// Memory for message data (input buffers and bodies being received) over all sessions.
#[derive(Debug)]
pub struct MemoryBudget {
    limit: usize,
    used: AtomicUsize,
}

impl MemoryBudget {
    pub fn new(limit: usize) -> Arc<MemoryBudget> {
        Arc::new(MemoryBudget { limit, used: AtomicUsize::new(0) })
    }

    /// Octets charged now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    /// True when nothing more may be charged: new message data is refused (452 4.3.1).
    pub fn is_exhausted(&self) -> bool {
        self.used() >= self.limit
    }
}

/// One session's share of the [`MemoryBudget`]; released when dropped.
#[derive(Debug)]
pub struct MemoryCharge {
    budget: Arc<MemoryBudget>,
    charged: usize,
}

impl MemoryCharge {
    pub fn new(budget: &Arc<MemoryBudget>) -> MemoryCharge {
        MemoryCharge { budget: Arc::clone(budget), charged: 0 }
    }

    /// Sets this session's charge to `bytes`. False when growing to it would pass the
    /// limit: the charge then stays as it was and the caller must shed the memory.
    pub fn set(&mut self, bytes: usize) -> bool {
        if bytes <= self.charged {
            self.budget.used.fetch_sub(self.charged - bytes, Ordering::Relaxed);
            self.charged = bytes;
            return true;
        }
        let grow = bytes - self.charged;
        let result = self.budget.used.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |used| {
            let next = used.checked_add(grow)?;
            (next <= self.budget.limit).then_some(next)
        });
        if result.is_ok() {
            self.charged = bytes;
        }
        result.is_ok()
    }
}

impl Drop for MemoryCharge {
    fn drop(&mut self) {
        self.budget.used.fetch_sub(self.charged, Ordering::Relaxed);
    }
}

/// The spool of one session's current message: an unlinked file in `<data_dir>/spool`, so
/// nothing is left behind by a crash, readable only by us (mode 600).
#[derive(Debug)]
pub struct Spool {
    dir: PathBuf,
    file: Option<Arc<std::fs::File>>,
    len: u64,
}

impl Spool {
    pub fn new(dir: &Path) -> Spool {
        Spool { dir: dir.to_path_buf(), file: None, len: 0 }
    }

    /// Writes `chunk` at `offset`; offset 0 starts the spool anew.
    pub async fn write(&mut self, offset: u64, chunk: Vec<u8>) -> io::Result<()> {
        if offset == 0 {
            self.file = None;
            self.len = 0;
        }
        if offset != self.len {
            return Err(io::Error::other(format!("spool chunk at {offset}, expected {}", self.len)));
        }
        let file = match &self.file {
            Some(file) => Arc::clone(file),
            None => {
                let dir = self.dir.clone();
                let file = Arc::new(run_blocking(move || create_unlinked(&dir)).await?);
                self.file = Some(Arc::clone(&file));
                file
            }
        };
        let written = chunk.len() as u64;
        run_blocking(move || {
            use std::os::unix::fs::FileExt;
            file.write_all_at(&chunk, offset)
        })
        .await?;
        self.len += written;
        Ok(())
    }

    /// The spooled content for the store, if `len` octets were spooled; the spool starts
    /// anew afterwards. None when the spool does not hold exactly that much.
    pub fn take(&mut self, len: u64) -> Option<SpooledBody> {
        let file = self.file.take()?;
        let spooled = std::mem::take(&mut self.len);
        (spooled == len).then_some(SpooledBody { file, len })
    }
}

async fn run_blocking<T: Send + 'static>(work: impl FnOnce() -> io::Result<T> + Send + 'static) -> io::Result<T> {
    tokio::task::spawn_blocking(work).await.map_err(io::Error::other)?
}

/// A new file in `dir`, unlinked at once: it lives as long as its handle.
fn create_unlinked(dir: &Path) -> io::Result<std::fs::File> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    for _ in 0..8 {
        let mut name = [0u8; 8];
        getrandom::getrandom(&mut name).map_err(|e| io::Error::other(e.to_string()))?;
        let path = dir.join(format!("{:016x}", u64::from_be_bytes(name)));
        match std::fs::OpenOptions::new().read(true).write(true).create_new(true).mode(0o600).open(&path) {
            Ok(file) => {
                std::fs::remove_file(&path)?;
                return Ok(file);
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::other("cannot create a spool file"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charges_stay_within_the_budget_and_free_on_drop() {
        let budget = MemoryBudget::new(100);
        let mut a = MemoryCharge::new(&budget);
        let mut b = MemoryCharge::new(&budget);
        assert!(a.set(60));
        assert!(!b.set(50), "60 + 50 is over 100");
        assert_eq!(budget.used(), 60);
        assert!(b.set(40));
        assert!(budget.is_exhausted());
        assert!(a.set(10));
        assert_eq!(budget.used(), 50);
        drop(b);
        assert_eq!(budget.used(), 10);
        drop(a);
        assert_eq!(budget.used(), 0);
    }

    #[tokio::test]
    async fn the_spool_holds_chunks_in_order_and_leaves_no_file() {
        use std::os::unix::fs::FileExt;
        let dir = tempfile::tempdir().unwrap();
        let spool_dir = dir.path().join("spool");
        let mut spool = Spool::new(&spool_dir);
        spool.write(0, b"hello ".to_vec()).await.unwrap();
        spool.write(6, b"world".to_vec()).await.unwrap();
        assert!(spool.write(3, b"x".to_vec()).await.is_err(), "out of order");
        assert_eq!(std::fs::read_dir(&spool_dir).unwrap().count(), 0, "unlinked at once");
        let body = spool.take(11).unwrap();
        let mut out = vec![0u8; 11];
        body.file.read_exact_at(&mut out, 0).unwrap();
        assert_eq!(out, b"hello world");
        // Starting again at 0 drops what was there.
        spool.write(0, b"new".to_vec()).await.unwrap();
        assert!(spool.take(11).is_none());
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&spool_dir).unwrap().permissions().mode() & 0o777, 0o700);
    }
}
