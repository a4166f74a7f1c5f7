//! The Messenger argument and line parsers (SPEC 8.1, 8.4) on arbitrary text: the CERT
//! argument, the ENTITIES argument and change lines (a whole reply's lines too), the BOOK
//! query and the BOOK CSV line. Checked: no panic; every error is 501 5.5.4; what parses
//! writes back to text that parses to the same value; a published ID never holds `@`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vouchmail_proto::messenger::entities::parse_entities_reply;
use vouchmail_proto::messenger::{
    parse_book_query, parse_cert_argument, parse_entities_argument, CertTarget, DirectoryEntry, EntityChange,
};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };

    match parse_cert_argument(text) {
        Ok(CertTarget::PublishedId(id)) => {
            assert!(!id.as_str().contains('@'));
            assert_eq!(parse_cert_argument(id.as_str()).unwrap(), CertTarget::PublishedId(id));
        }
        Ok(CertTarget::Address(address)) => {
            // A quoted local part may be written back with a space, which CERT does not
            // take; whatever reads back must be the same address.
            if let Ok(again) = parse_cert_argument(&address.to_string()) {
                assert_eq!(again, CertTarget::Address(address));
            }
        }
        Err(reply) => assert_eq!((reply.code, reply.enhanced.map(|e| e.to_string())), (501, Some("5.5.4".into()))),
    }

    match parse_entities_argument(text) {
        Ok(since) => assert_eq!(parse_entities_argument(&since.to_string()).unwrap(), since),
        Err(reply) => assert_eq!(reply.code, 501),
    }

    match parse_book_query(text) {
        Ok(query) => {
            assert!(!query.is_empty() && !query.chars().any(char::is_control));
            assert_eq!(parse_book_query(&query).unwrap(), query);
        }
        Err(reply) => assert_eq!(reply.code, 501),
    }

    if let Ok(change) = EntityChange::parse_line(text) {
        assert_eq!(EntityChange::parse_line(&change.to_line()).unwrap(), change);
    }
    let lines: Vec<String> = text.split('\n').map(str::to_string).collect();
    if let Ok((changes, highest)) = parse_entities_reply(&lines) {
        assert_eq!(changes.len() + 1, lines.len());
        assert!(changes.windows(2).all(|w| w[0].serial < w[1].serial));
        assert!(changes.iter().all(|c| c.serial <= highest));
    }

    if let Ok(entry) = DirectoryEntry::parse_book_line(text) {
        // IDs are joined with ';' and empty ones dropped, so the line it writes reads
        // back to the same entry.
        let again = DirectoryEntry::parse_book_line(&entry.book_line()).unwrap();
        assert_eq!(again, entry);
    }
});
