//! Envelope address parsing: never panics, and whatever parses has a canonical form that
//! parses back to the same address and respects the RFC 5321 4.5.3.1 limits.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vouchmail_proto::smtp::address::{parse_forward_path, parse_reverse_path, Address, ForwardPath, ReversePath};

fn check(a: &Address) {
    let canonical = a.to_string();
    let again = Address::parse(&canonical).expect("canonical form must parse");
    assert_eq!(&again, a);
    assert_eq!(again.to_string(), canonical);
    assert!(!a.local().is_empty());
    assert!(a.domain().len() <= 255);
    if !a.is_address_literal() {
        assert_eq!(a.domain(), a.domain().to_ascii_lowercase());
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(a) = Address::parse(s) {
        check(&a);
    }
    if let Ok((path, rest)) = parse_reverse_path(s) {
        assert!(!rest.starts_with(' '));
        if let ReversePath::Mailbox(a) = &path {
            check(a);
        }
        let shown = path.to_string();
        assert_eq!(parse_reverse_path(&shown).map(|(p, _)| p).ok(), Some(path));
    }
    if let Ok((path, rest)) = parse_forward_path(s) {
        assert!(!rest.starts_with(' '));
        if let ForwardPath::Mailbox(a) = &path {
            check(a);
        }
        let shown = path.to_string();
        assert_eq!(parse_forward_path(&shown).map(|(p, _)| p).ok(), Some(path));
    }
});
