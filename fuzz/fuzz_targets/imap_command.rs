//! The IMAP command reader and parser: never panic on any input; the events do not depend
//! on how the input is split; memory stays within the limits plus one fed chunk; every
//! error answer is one line; mailbox names survive a modified UTF-7 round trip; the
//! ENVELOPE of any input taken as a message is one parenthesised value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vouchmail_proto::imap::command::{parse_command, CommandBody, CommandReader, Limits, ReadEvent};
use vouchmail_proto::imap::envelope::Envelope;
use vouchmail_proto::imap::types::{decode_modified_utf7, encode_modified_utf7, MailboxName, NameEncoding};

const LIMITS: Limits = Limits { max_line: 200, max_literal: 2000, max_command: 600 };

/// Feeds `input` in chunks of the given sizes (cycled; empty: whole), answering IDLE and
/// AUTHENTICATE the way a driver would; returns the events.
fn run(input: &[u8], splits: &[u8]) -> Vec<ReadEvent> {
    let mut reader = CommandReader::new(LIMITS);
    let mut events = Vec::new();
    let mut pos = 0;
    let mut k = 0;
    while pos < input.len() {
        let step = splits.get(k % splits.len().max(1)).map_or(input.len(), |&s| usize::from(s) + 1);
        k += 1;
        let n = step.min(input.len() - pos);
        reader.feed(&input[pos..pos + n]);
        pos += n;
        while let Some(event) = reader.next_event() {
            match &event {
                ReadEvent::Command(command) => match &command.body {
                    CommandBody::Idle => reader.expect_idle_done(),
                    CommandBody::Authenticate { initial_response: None, .. } => reader.expect_authenticate_response(),
                    // ENABLE IMAP4rev2 switches names to UTF-8 from the next command on.
                    CommandBody::Enable(names) if names.iter().any(|n| n.eq_ignore_ascii_case("IMAP4rev2")) => {
                        reader.set_encoding(NameEncoding::Utf8)
                    }
                    _ => {}
                },
                ReadEvent::Error(error) => {
                    let wire = error.response().to_wire();
                    assert!(wire.ends_with(b"\r\n"));
                    assert_eq!(wire.iter().filter(|&&b| b == b'\n').count(), 1, "one line");
                }
                _ => {}
            }
            events.push(event);
        }
        if !splits.is_empty() {
            assert!(reader.buffered() <= 2000 + 600 + 256 + 64, "buffered {}", reader.buffered());
        }
    }
    events
}

fuzz_target!(|data: &[u8]| {
    // The parser alone, on the input as one command.
    for encoding in [NameEncoding::ModifiedUtf7, NameEncoding::Utf8] {
        let _ = parse_command(data, encoding);
    }

    // The ENVELOPE of the input taken as a message.
    let envelope = Envelope::from_message(data).to_wire(NameEncoding::ModifiedUtf7);
    assert!(envelope.starts_with(b"(") && envelope.ends_with(b")"));

    // Modified UTF-7 round trip of any name without control characters.
    if let Ok(text) = std::str::from_utf8(data) {
        if !text.chars().any(char::is_control) {
            assert_eq!(decode_modified_utf7(&encode_modified_utf7(text)).as_deref(), Ok(text));
            let name = MailboxName::new(text);
            let wire = name.to_wire(NameEncoding::ModifiedUtf7);
            assert_eq!(MailboxName::from_wire(wire.as_bytes(), NameEncoding::ModifiedUtf7), Ok(name));
        }
    }

    // The reader, with the first byte choosing the split pattern.
    let Some((&nsplits, rest)) = data.split_first() else { return };
    let (splits, input) = rest.split_at(usize::from(nsplits % 8).min(rest.len()));
    let whole = run(input, &[]);
    assert_eq!(run(input, &[0]), whole, "byte by byte");
    if !splits.is_empty() {
        assert_eq!(run(input, splits), whole, "split");
    }
});
