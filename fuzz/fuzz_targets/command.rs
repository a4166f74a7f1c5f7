//! SMTP command parsing: never panics; a parsed MAIL/RCPT address prints back to a form
//! that parses to the same address.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vouchmail_proto::smtp::address::Address;
use vouchmail_proto::smtp::command::{parse_command, Command};

fuzz_target!(|line: &[u8]| {
    if let Ok(Command::Rcpt { to, .. }) = parse_command(line) {
        if let Some(address) = to.address() {
            let printed = address.to_string();
            assert_eq!(Address::parse(&printed).as_ref(), Ok(address), "{printed}");
        }
    }
});
