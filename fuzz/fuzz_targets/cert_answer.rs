//! `vouchmail client`'s reading of a CERT answer (SPEC 8.1) from arbitrary server bytes:
//! the Messenger reply reader, then `parse_cert_answer`. Checked: no panic; an accepted
//! answer names an address (one `@`-separated word, no whitespace or control characters)
//! and a PEM certificate whose lines hold no CR, LF inside or other control character.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vouchmail_proto::messenger::replies::parse_cert_answer;
use vouchmail_proto::messenger::{ReplyLimits, ReplyParser};

fuzz_target!(|data: &[u8]| {
    let mut parser = ReplyParser::strict(ReplyLimits::new(20_000, 1 << 20));
    parser.feed(data);
    while let Ok(Some(reply)) = parser.next_reply() {
        match parse_cert_answer(reply.code, &reply.texts()) {
            Ok((address, pem)) => {
                assert_eq!(reply.code, 250);
                assert!(address.contains('@') && !address.contains(|c: char| c.is_whitespace() || c.is_control()));
                assert!(pem.starts_with("-----BEGIN CERTIFICATE-----\n"));
                assert!(pem.ends_with("-----END CERTIFICATE-----\n"));
                assert!(pem.lines().all(|l| !l.contains(|c: char| c.is_control())));
            }
            Err(why) => assert!(!why.to_string().contains(['\r', '\n']), "one line: {why:?}"),
        }
    }
});
