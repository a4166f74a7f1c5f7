//! The SMTP server session of the MX listener (port 25; ETRN on some inputs),
//! driven the way the server driver drives it; fuzz_targets/shared/smtp_session.rs says what is checked.
#![no_main]

#[path = "shared/script.rs"]
mod script;

use libfuzzer_sys::fuzz_target;
use vouchmail_proto::smtp::session::Service;

#[path = "shared/smtp_session.rs"]
mod smtp_session;

fuzz_target!(|data: &[u8]| smtp_session::fuzz(Service::Mx, data));
