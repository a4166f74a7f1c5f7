//! Delivery notifications (SPEC 8.3): the tracking record's CSV codec, the arguments of
//! NOTIFY, RECEIPT and TRACK, and the TRACK answer. Never panic on any input; whatever
//! parses writes a line that parses back to itself and holds no CR or LF (so a record can
//! never inject an SMTP line); the TRACK reply built from parsed records reads back as
//! those records.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vouchmail_proto::messenger::tracking::{
    parse_notify_argument, parse_receipt_argument, parse_track_answer, parse_track_argument, track_command_line,
    track_reply, NotifyClient, Record, MAX_RECORD_LEN,
};
use vouchmail_proto::smtp::client::ReplyParser;

const EXAMPLE: &str =
    "2026-12-01T10:00:00Z,<id@galkam.test>,glen@galkam.test,abc555@lrsupport.test,downloaded,mx.lrsupport.test";

/// The NOTIFY client against any server bytes: every line it sends is one valid record's
/// command, and it ends with one outcome per record.
fn check_notify_client(server: &[u8]) {
    let mut client = NotifyClient::new(vec![EXAMPLE.to_string(); 3]);
    client.start();
    let mut sent = client.take_output();
    client.feed(server);
    sent.extend(client.take_output());
    client.on_closed();
    assert!(client.is_done());
    assert_eq!(client.outcomes().len(), 3);
    for line in sent.split_inclusive(|&b| b == b'\n') {
        assert_eq!(line, format!("NOTIFY {EXAMPLE}\r\n").as_bytes());
    }
}

fn check_record(record: &Record) {
    let line = record.to_line().expect("a parsed record writes");
    assert!(line.len() <= MAX_RECORD_LEN);
    assert!(!line.contains(['\r', '\n']));
    assert_eq!(Record::parse(&line).as_ref(), Ok(record));
}

fuzz_target!(|data: &[u8]| {
    check_notify_client(data);
    let Ok(text) = std::str::from_utf8(data) else {
        // The TRACK answer parser sees what the reply reader makes of any bytes.
        let mut parser = ReplyParser::default();
        parser.feed(data);
        while let Ok(Some(reply)) = parser.next_reply() {
            let _ = parse_track_answer(reply.code, &reply.lines);
        }
        return;
    };
    if let Ok(record) = Record::parse(text) {
        check_record(&record);
    }
    if let Ok(record) = parse_notify_argument(text) {
        check_record(&record);
    }
    if let Ok(receipt) = parse_receipt_argument(text) {
        let line = receipt.command_line();
        assert!(!line.contains(['\r', '\n']));
        let argument = line.strip_prefix("RECEIPT ").expect("the verb");
        assert_eq!(parse_receipt_argument(argument).as_ref(), Ok(&receipt));
    }
    if let Ok(since) = parse_track_argument(text) {
        let line = track_command_line(since);
        let argument = line.strip_prefix("TRACK").expect("the verb");
        // Times before 1970 or after 9999 are sent as "all".
        if let (Some(_), Ok(Some(back))) = (since, parse_track_argument(argument)) {
            assert_eq!(Some(back), since);
        }
    }

    // Lines as a TRACK answer: the records that parse, answered and read back.
    let lines: Vec<String> = text.split('\n').map(str::to_string).collect();
    let _ = parse_track_answer(250, &lines);
    // At most 255 (the reply reader's limit is 256 lines).
    let records: Vec<Record> = lines.iter().filter_map(|l| Record::parse(l).ok()).take(255).collect();
    let wire = track_reply(&records).to_wire();
    let mut parser = ReplyParser::default();
    parser.feed(&wire);
    let reply = parser.next_reply().expect("a reply").expect("complete");
    assert_eq!(parse_track_answer(reply.code, &reply.lines), Ok(records));
    assert_eq!(parser.pending(), 0);

    let mut parser = ReplyParser::default();
    parser.feed(data);
    while let Ok(Some(reply)) = parser.next_reply() {
        if let Ok(records) = parse_track_answer(reply.code, &reply.lines) {
            records.iter().for_each(check_record);
        }
    }
});
