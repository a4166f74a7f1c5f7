//! The threads that run TCP sessions (issue 25): one single-threaded tokio runtime per
//! core. Each accepts from every listener and runs the sessions it accepted, so a session's
//! wake-ups, reads and replies stay on one thread instead of moving between the shared
//! runtime's workers, which woke each other for every task they could steal. Measured with
//! `bench/inbound.sh`'s load against the shared runtime: +5% messages a second (median of
//! six interleaved rounds) and a third of the spread between rounds (docs/bench.md).
//!
//! Jobs, the outbound engine and everything else stay on the shared runtime. A session's
//! `spawn_blocking` (AUTH's hashing, store reads) goes to its own thread's blocking pool.

use std::sync::mpsc;
use std::thread::JoinHandle;

use tokio::runtime::Handle;
use tokio::sync::oneshot;

use crate::support::error::{Error, ErrorKind};

/// The session threads of one server. Dropping it stops them: each thread's runtime is
/// dropped on that thread, which ends the sessions still running there.
pub struct SessionThreads {
    handles: Vec<Handle>,
    stops: Vec<oneshot::Sender<()>>,
    threads: Vec<JoinHandle<()>>,
}

impl SessionThreads {
    /// One thread per core the process may use (at least one).
    pub fn per_core() -> Result<SessionThreads, Error> {
        let cores = std::thread::available_parallelism().map(usize::from).unwrap_or(1);
        SessionThreads::start(cores)
    }

    /// `count` threads, each running its own runtime until the value is dropped.
    pub fn start(count: usize) -> Result<SessionThreads, Error> {
        let mut threads = SessionThreads { handles: Vec::new(), stops: Vec::new(), threads: Vec::new() };
        for n in 0..count.max(1) {
            let (handle_tx, handle_rx) = mpsc::sync_channel(1);
            let (stop, stopped) = oneshot::channel::<()>();
            let thread = std::thread::Builder::new()
                .name(format!("session-{n}"))
                .spawn(move || {
                    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                        Ok(runtime) => runtime,
                        Err(e) => {
                            let _ = handle_tx.send(Err(e.to_string()));
                            return;
                        }
                    };
                    let _ = handle_tx.send(Ok(runtime.handle().clone()));
                    // Runs the spawned sessions until stopped (or the sender is dropped).
                    let _ = runtime.block_on(stopped);
                })
                .map_err(|e| Error::new(ErrorKind::Config, format!("cannot start a session thread: {e}")))?;
            let handle = handle_rx
                .recv()
                .map_err(|_| "the thread ended before its runtime was built".to_string())
                .and_then(|built| built)
                .map_err(|e| Error::new(ErrorKind::Config, format!("cannot start a session runtime: {e}")))?;
            threads.handles.push(handle);
            threads.stops.push(stop);
            threads.threads.push(thread);
        }
        Ok(threads)
    }

    /// The runtimes' handles, one per thread.
    pub fn handles(&self) -> &[Handle] {
        &self.handles
    }
}

impl Drop for SessionThreads {
    /// Stops every thread. Does not wait for them: a server dropped inside an async runtime
    /// must not block a worker, and each thread ends on its own once its runtime is dropped.
    fn drop(&mut self) {
        for stop in self.stops.drain(..) {
            let _ = stop.send(());
        }
        self.threads.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_thread_runs_what_is_spawned_on_it_and_stops_when_dropped() {
        let threads = SessionThreads::start(2).expect("start");
        assert_eq!(threads.handles().len(), 2);
        let names: Vec<String> = threads
            .handles()
            .iter()
            .map(|handle| {
                let (tx, rx) = mpsc::channel();
                handle.spawn(async move {
                    let _ = tx.send(std::thread::current().name().unwrap_or_default().to_string());
                });
                rx.recv_timeout(std::time::Duration::from_secs(5)).expect("the task ran")
            })
            .collect();
        assert_eq!(names, ["session-0", "session-1"]);
        let handle = threads.handles()[0].clone();
        drop(threads);
        // A stopped runtime runs nothing more: the task is dropped unrun.
        let (tx, rx) = mpsc::channel::<()>();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            let tx = tx.clone();
            drop(handle.spawn(async move {
                let _ = tx.send(());
            }));
            if rx.recv_timeout(std::time::Duration::from_millis(50)).is_err() {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "the session thread still runs tasks");
        }
    }
}
