//! Header scanning and rewriting: never panics, fields tile the header section, removal
//! and prepending keep every other byte.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vouchmail_proto::headers;

fuzz_target!(|data: &[u8]| {
    let end = headers::header_end(data);
    assert!(end <= data.len());
    assert!(headers::body_start(data) >= end);
    assert!(headers::body_start(data) <= data.len());

    let mut next = 0;
    for f in headers::fields(data) {
        assert_eq!(f.range().start, next);
        next = f.range().end;
        let _ = f.unfolded_value();
        let _ = headers::authserv_id(f.raw_value());
    }
    assert_eq!(next, end);

    assert_eq!(headers::remove_fields(data, |_| false), data);
    let all_gone = headers::remove_fields(data, |_| true);
    assert_eq!(all_gone, &data[end..]);
    let stripped = headers::remove_authentication_results_for(data, "mx.example.org");
    assert!(headers::fields(&stripped).all(|f| !(f.name_is("Authentication-Results")
        && headers::authserv_id(f.raw_value()).is_some_and(|id| id.eq_ignore_ascii_case("mx.example.org")))));

    let _ = headers::count(data, "Received");
    let _ = headers::first_value(data, "Subject");
    // SPEC 7.5: the one From mailbox, when there is one, is a plain local@domain.
    if let Some(from) = headers::from_address(data) {
        let (local, domain) = from.rsplit_once('@').expect("an @");
        assert!(!local.is_empty() && !domain.is_empty(), "{from}");
        assert!(!from.chars().any(|c| c.is_whitespace() || c.is_control() || "<>,;:".contains(c)), "{from}");
    }

    let text = String::from_utf8_lossy(data);
    let decoded = headers::decode_encoded_words(&text);
    assert!(!decoded.chars().any(char::is_control));

    // A prepended field is found again with its value, and nothing it contains can
    // inject another field.
    let value: String = text.chars().take(300).collect();
    let out = headers::prepend(&[("X-Fuzz", &value)], data);
    assert!(out.ends_with(data));
    let first = headers::fields(&out).next().expect("prepended field");
    assert!(first.name_is("X-Fuzz"));
    assert_eq!(first.range().end, headers::prepend(&[("X-Fuzz", &value)], b"").len());
    assert_eq!(headers::count(&out, "X-Fuzz"), 1 + headers::count(data, "X-Fuzz"));
});
