//! The threads that run TCP sessions (issue 25): one single-threaded tokio runtime per
//! core. Every thread accepts from every listener and keeps the sessions it accepted, so a
//! session's wake-ups, reads and replies stay on one thread instead of moving between the
//! shared runtime's workers, which woke each other for every task they could steal. A
//! thread with more sessions open than another hands what it accepts to the least busy
//! one, so long sessions (IMAP, Messenger, SMTP with reuse) stay spread evenly: accepting
//! alone left eight Messenger sessions unevenly spread, 15% slower. Measured in
//! docs/bench.md.
//!
//! Jobs, the outbound engine and everything else stay on the shared runtime. A session's
//! `spawn_blocking` (AUTH's hashing, store reads) goes to its own thread's blocking pool.

use std::cell::Cell;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use tokio::runtime::Handle;
use tokio::sync::oneshot;

use crate::support::error::{Error, ErrorKind};

thread_local! {
    /// The index of the session thread this is, on a session thread.
    static THIS_THREAD: Cell<Option<usize>> = const { Cell::new(None) };
}

/// Which session thread the caller runs on (None off them): what a socket opened now is
/// registered with, so that a connection kept for reuse (Messenger peers) is reused on the
/// thread whose reactor serves it rather than woken through another thread.
pub fn current() -> Option<usize> {
    THIS_THREAD.with(Cell::get)
}

/// How long a stopped thread lets the tasks its sessions left behind finish (a failed AUTH
/// shared with the other nodes, a DMARC count: store writes nobody waits for) before its
/// runtime drops them.
const DRAIN: Duration = Duration::from_secs(2);

/// The session threads of one server. `stop` stops them and waits; dropping it stops them
/// without waiting. Either way each thread's runtime is dropped on that thread, which ends
/// the sessions still running there.
pub struct SessionThreads {
    dispatch: Dispatch,
    stops: Vec<oneshot::Sender<()>>,
    ended: Vec<oneshot::Receiver<()>>,
}

/// Hands sessions to the session threads (cheap to clone, one per listener). Without
/// threads it spawns on the current runtime.
#[derive(Clone, Default)]
pub struct Dispatch {
    threads: Arc<[Slot]>,
}

struct Slot {
    handle: Handle,
    open: AtomicUsize,
}

/// One session fewer on its thread once it ends (or is dropped with its runtime).
struct Open {
    threads: Arc<[Slot]>,
    index: usize,
}

impl Drop for Open {
    fn drop(&mut self) {
        if let Some(slot) = self.threads.get(self.index) {
            slot.open.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

impl Dispatch {
    /// How many session threads there are (none: sessions run on the caller's runtime).
    pub fn threads(&self) -> usize {
        self.threads.len()
    }

    /// Runs `session` on the thread with the fewest sessions open (the first of those
    /// that tie). It starts there, so a socket it registers goes to that thread's reactor.
    pub fn spawn<F>(&self, session: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        match self.least_busy() {
            Some(index) => self.spawn_here(index, session),
            None => drop(tokio::spawn(session)),
        }
    }

    /// Whether thread `here` has more sessions open than the least busy one, so that a
    /// new session should go there instead.
    pub fn crowded(&self, here: usize) -> bool {
        let open = |slot: &Slot| slot.open.load(Ordering::Acquire);
        let least = self.threads.iter().map(open).min().unwrap_or(0);
        self.threads.get(here).map(open).is_some_and(|mine| mine > least)
    }

    /// Runs `task` on thread `index`, uncounted (an accept loop); None if there is none.
    pub fn spawn_on<F>(&self, index: usize, task: F) -> Option<tokio::task::JoinHandle<()>>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.threads.get(index).map(|slot| slot.handle.spawn(task))
    }

    fn least_busy(&self) -> Option<usize> {
        self.threads.iter().enumerate().min_by_key(|(_, slot)| slot.open.load(Ordering::Acquire)).map(|(i, _)| i)
    }

    /// Runs `session` on thread `index`, counted among its open sessions (the accept loop
    /// of thread `index` keeps what it accepted this way); on the current runtime if there
    /// is no such thread.
    pub fn spawn_here<F>(&self, index: usize, session: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let Some(slot) = self.threads.get(index) else {
            drop(tokio::spawn(session));
            return;
        };
        slot.open.fetch_add(1, Ordering::AcqRel);
        let open = Open { threads: Arc::clone(&self.threads), index };
        drop(slot.handle.spawn(async move {
            let _open = open;
            session.await;
        }));
    }

    /// Sessions open on each thread.
    pub fn open(&self) -> Vec<usize> {
        self.threads.iter().map(|slot| slot.open.load(Ordering::Acquire)).collect()
    }
}

impl SessionThreads {
    /// One thread per core the process may use (at least one).
    pub fn per_core() -> Result<SessionThreads, Error> {
        let cores = std::thread::available_parallelism().map(usize::from).unwrap_or(1);
        SessionThreads::start(cores)
    }

    /// `count` threads, each running its own runtime until the value is dropped.
    pub fn start(count: usize) -> Result<SessionThreads, Error> {
        let mut slots = Vec::new();
        let mut stops = Vec::new();
        let mut ended = Vec::new();
        for n in 0..count.max(1) {
            let (handle_tx, handle_rx) = mpsc::sync_channel(1);
            let (stop, stopped) = oneshot::channel::<()>();
            let (end, has_ended) = oneshot::channel::<()>();
            std::thread::Builder::new()
                .name(format!("session-{n}"))
                .spawn(move || {
                    THIS_THREAD.with(|this| this.set(Some(n)));
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
                    let metrics = runtime.metrics();
                    runtime.block_on(async move {
                        let deadline = tokio::time::Instant::now() + DRAIN;
                        while metrics.num_alive_tasks() > 0 {
                            if tokio::time::Instant::now() >= deadline {
                                let left = metrics.num_alive_tasks();
                                tracing::debug!(thread = n, left, "session thread stopped with tasks left; dropped");
                                break;
                            }
                            tokio::time::sleep(Duration::from_millis(5)).await;
                        }
                    });
                    drop(runtime);
                    let _ = end.send(());
                })
                .map_err(|e| Error::new(ErrorKind::Config, format!("cannot start a session thread: {e}")))?;
            let handle = handle_rx
                .recv()
                .map_err(|_| "the thread ended before its runtime was built".to_string())
                .and_then(|built| built)
                .map_err(|e| Error::new(ErrorKind::Config, format!("cannot start a session runtime: {e}")))?;
            slots.push(Slot { handle, open: AtomicUsize::new(0) });
            stops.push(stop);
            ended.push(has_ended);
        }
        Ok(SessionThreads { dispatch: Dispatch { threads: slots.into() }, stops, ended })
    }

    /// What hands sessions to these threads (one count of open sessions for every
    /// listener).
    pub fn dispatch(&self) -> Dispatch {
        self.dispatch.clone()
    }

    /// Stops every thread and waits until each has ended: its sessions and the tasks they
    /// left are finished or dropped (those after [`DRAIN`]), its runtime is gone, and with
    /// it every socket registered there (the listeners' copies included).
    pub async fn stop(&mut self) {
        for stop in self.stops.drain(..) {
            let _ = stop.send(());
        }
        for ended in self.ended.drain(..) {
            let _ = ended.await;
        }
    }
}

impl Drop for SessionThreads {
    /// Stops every thread. Does not wait for them: a server dropped inside an async runtime
    /// must not block a worker, and each thread ends on its own once its runtime is dropped.
    fn drop(&mut self) {
        for stop in self.stops.drain(..) {
            let _ = stop.send(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_go_to_the_thread_with_the_fewest_open_and_count_down_when_they_end() {
        let threads = SessionThreads::start(2).expect("start");
        let dispatch = threads.dispatch();
        let (end_tx, end_rx) = tokio::sync::watch::channel(false);
        let (ran_tx, ran_rx) = mpsc::channel();
        for _ in 0..4 {
            let mut end = end_rx.clone();
            let ran = ran_tx.clone();
            dispatch.spawn(async move {
                let _ = ran.send(std::thread::current().name().unwrap_or_default().to_string());
                let _ = end.wait_for(|e| *e).await;
            });
        }
        let mut names: Vec<String> =
            (0..4).map(|_| ran_rx.recv_timeout(std::time::Duration::from_secs(5)).expect("ran")).collect();
        names.sort();
        assert_eq!(names, ["session-0", "session-0", "session-1", "session-1"]);
        assert_eq!(dispatch.open(), [2, 2]);
        end_tx.send(true).expect("end");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while dispatch.open() != [0, 0] {
            assert!(std::time::Instant::now() < deadline, "still open: {:?}", dispatch.open());
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }

    #[test]
    fn each_thread_runs_what_is_spawned_on_it_and_stops_when_dropped() {
        let threads = SessionThreads::start(2).expect("start");
        let dispatch = threads.dispatch();
        assert_eq!(dispatch.threads(), 2);
        let names: Vec<String> = (0..dispatch.threads())
            .map(|index| {
                let (tx, rx) = mpsc::channel();
                dispatch.spawn_on(index, async move {
                    assert_eq!(current(), Some(index));
                    let _ = tx.send(std::thread::current().name().unwrap_or_default().to_string());
                });
                rx.recv_timeout(std::time::Duration::from_secs(5)).expect("the task ran")
            })
            .collect();
        assert_eq!(names, ["session-0", "session-1"]);
        assert_eq!(current(), None, "not a session thread");
        drop(threads);
        // A stopped runtime runs nothing more: the task is dropped unrun.
        let (tx, rx) = mpsc::channel::<()>();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            let tx = tx.clone();
            drop(dispatch.spawn_on(0, async move {
                let _ = tx.send(());
            }));
            if rx.recv_timeout(std::time::Duration::from_millis(50)).is_err() {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "the session thread still runs tasks");
        }
    }

    /// `stop` lets a task a session left behind finish, and returns once every thread has
    /// ended: nothing spawned there runs afterwards.
    #[test]
    fn stop_lets_left_tasks_finish_and_waits_for_the_threads() {
        let mut threads = SessionThreads::start(2).expect("start");
        let dispatch = threads.dispatch();
        let finished = Arc::new(AtomicUsize::new(0));
        for index in 0..2 {
            let finished = Arc::clone(&finished);
            dispatch.spawn_on(index, async move {
                tokio::time::sleep(Duration::from_millis(100)).await;
                finished.fetch_add(1, Ordering::AcqRel);
            });
        }
        let caller = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        caller.block_on(threads.stop());
        assert_eq!(finished.load(Ordering::Acquire), 2, "both tasks ran to their end before stop returned");
        let (tx, rx) = mpsc::channel::<()>();
        drop(dispatch.spawn_on(1, async move {
            let _ = tx.send(());
        }));
        assert!(rx.recv_timeout(Duration::from_millis(100)).is_err(), "a stopped thread runs nothing");
    }
}
