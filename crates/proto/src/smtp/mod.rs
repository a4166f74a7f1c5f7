//! SMTP (RFC 5321) protocol logic.

pub mod address;
pub mod client;
pub mod command;
pub mod data;
pub mod reply;
pub mod session;
pub mod trace;
pub mod xtext;
