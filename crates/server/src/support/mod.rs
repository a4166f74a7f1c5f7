//! The bottom room: helpers that know no protocol, listener or store rule (files only we
//! may read, the task tracker shutdown waits on, the clock, queue ids).

pub mod error;
pub mod files;
pub mod live;
pub mod metrics;
pub mod queue_id;
pub mod session_threads;
pub mod tasks;
pub mod time;
