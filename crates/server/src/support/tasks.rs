//! Tracks spawned session tasks so shutdown can wait for them.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

#[derive(Clone, Default)]
pub struct TaskTracker {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    running: AtomicUsize,
    idle: Notify,
}

struct Running(Arc<Inner>);

impl Drop for Running {
    fn drop(&mut self) {
        if self.0.running.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

impl TaskTracker {
    pub fn spawn<F>(&self, future: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        tokio::spawn(self.track(future));
    }

    /// `future`, counted as running from now until it ends or is dropped: for a task
    /// spawned elsewhere than on the current runtime (a session thread).
    pub fn track<F>(&self, future: F) -> impl Future<Output = ()> + Send + 'static
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.inner.running.fetch_add(1, Ordering::AcqRel);
        let guard = Running(Arc::clone(&self.inner));
        async move {
            let _guard = guard;
            future.await;
        }
    }

    pub fn running(&self) -> usize {
        self.inner.running.load(Ordering::Acquire)
    }

    /// Waits until every tracked task has ended, or the grace period is over; returns the
    /// number still running.
    pub async fn wait(&self, grace: Duration) -> usize {
        let deadline = tokio::time::Instant::now() + grace;
        loop {
            let idle = self.inner.idle.notified();
            if self.running() == 0 {
                return 0;
            }
            if tokio::time::timeout_at(deadline, idle).await.is_err() {
                return self.running();
            }
        }
    }
}

/// Runs `work` on each item in its own task, at most `limit` at once, and gives the
/// results of those that finished, in the order they finished. A task that panicked is
/// logged and left out (its caller's state, e.g. a lease, brings its work back later).
pub async fn run_bounded<I, F, Fut>(items: I, limit: usize, work: F) -> Vec<Fut::Output>
where
    I: IntoIterator,
    F: Fn(I::Item) -> Fut,
    Fut: Future + Send + 'static,
    Fut::Output: Send + 'static,
{
    let slots = Arc::new(tokio::sync::Semaphore::new(limit.max(1)));
    let mut running = tokio::task::JoinSet::new();
    for item in items {
        let (slots, task) = (Arc::clone(&slots), work(item));
        running.spawn(async move {
            let _slot = slots.acquire_owned().await;
            task.await
        });
    }
    let mut done = Vec::new();
    while let Some(joined) = running.join_next().await {
        match joined {
            Ok(output) => done.push(output),
            Err(e) => tracing::error!(error = %e, "a bounded task failed"),
        }
    }
    done
}
