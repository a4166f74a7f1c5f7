//! The POP3 client (status lines, multi-line responses, SASL continuations) against an
//! arbitrary server, with commands sent one by one or pipelined: never panics, every
//! response is of a kind the command it answers allows, the responses (and the protocol
//! error, if any) do not depend on how the input is split, status lines and multi-line
//! bodies survive being written back out and read again, and the listing helpers never
//! panic.
#![no_main]

#[path = "shared/script.rs"]
mod script;

use std::collections::VecDeque;

use libfuzzer_sys::fuzz_target;
use vouchmail_proto::pop3::client::{
    parse_list, parse_stat, parse_status, parse_uidl, Capabilities, Client, ClientError, Response,
};
use vouchmail_proto::pop3::multiline::{join_lines, write_lines, write_stuffed};
use vouchmail_proto::pop3::Command;

/// Canned server lines (see `expand`).
const LINES: &[&str] = &[
    "+OK POP3 server ready <1896.697170952@dbc.mtview.ca.us>\r\n",
    "+OK\r\n",
    "+OK 2 320\r\n",
    "-ERR [IN-USE] Mailbox is locked\r\n",
    "-ERR [AUTH] Authentication failed\r\n",
    "-ERR [SYS/TEMP] try later\r\n",
    "1 120\r\n2 200\r\n",
    "1 uid-a\r\n2 uid-b\r\n",
    ".\r\n",
    "..\r\n",
    "Subject: x\r\n\r\nbody\r\n",
    "+ \r\n",
    "+ PDE4OTYuNjk3MTcwOTUyQHBvc3RvZmZpY2UucmVzdG9uLm1jaS5uZXQ+\r\n",
    "TOP\r\nUSER\r\nSASL PLAIN CRAM-MD5\r\nSTLS\r\nUIDL\r\n",
];

const COMMANDS: usize = 16;

fn command(k: u8) -> Command {
    match usize::from(k) % COMMANDS {
        0 => Command::Stat,
        1 => Command::List(None),
        2 => Command::List(Some(1)),
        3 => Command::Retr(1),
        4 => Command::Top { msg: 1, lines: 0 },
        5 => Command::Uidl(None),
        6 => Command::Uidl(Some(2)),
        7 => Command::Capa,
        8 => Command::Noop,
        9 => Command::Dele(1),
        10 => Command::Rset,
        11 => Command::User("u".into()),
        12 => Command::Pass("secret".into()),
        13 => Command::Auth { mechanism: Some("PLAIN".into()), initial_response: None },
        14 => Command::Auth { mechanism: None, initial_response: None },
        _ => Command::Quit,
    }
}

/// What the driver expects the next response to answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Greeting,
    Single,
    Multi,
    Auth,
}

fn kind(c: &Command) -> Kind {
    match c {
        Command::Auth { mechanism: Some(_), .. } => Kind::Auth,
        c if c.is_multiline() => Kind::Multi,
        _ => Kind::Single,
    }
}

fn check_status_round_trip(line: &[u8]) {
    if let Ok(status) = parse_status(line) {
        if !status.text.chars().any(char::is_control) {
            let wire = status.to_wire();
            let again = parse_status(wire.strip_suffix(b"\r\n").expect("CRLF")).expect("our own status line parses");
            assert_eq!(again, status, "{}", String::from_utf8_lossy(&wire));
        }
    }
}

/// Whatever lines a multi-line response had, stuffing them again gives the same lines.
fn check_multi_round_trip(lines: &[Vec<u8>]) {
    let mut wire = b"+OK\r\n".to_vec();
    write_stuffed(&join_lines(lines), &mut wire);
    let mut c = Client::after_greeting();
    c.send(&Command::Retr(1));
    c.feed(&wire);
    match c.poll_response() {
        Ok(Some(Response::Multi { lines: again, .. })) => assert_eq!(again, lines),
        other => panic!("restuffed body read back as {other:?}"),
    }
    assert_eq!(c.poll_response(), Ok(None));
    assert!(!c.is_waiting());

    // CAPA-style listings too.
    let caps = Capabilities::parse(lines);
    let mut wire = b"+OK\r\n".to_vec();
    write_lines(&caps.lines, &mut wire);
    let mut c = Client::after_greeting();
    c.send(&Command::Capa);
    c.feed(&wire);
    match c.poll_response() {
        Ok(Some(response @ Response::Multi { .. })) => {
            let Response::Multi { lines: again, .. } = &response else { unreachable!() };
            assert_eq!(Capabilities::parse(again), caps);
        }
        other => panic!("rewritten listing read back as {other:?}"),
    }
}

/// Sends commands: one at a time, or as many as may be pipelined (not past AUTH, whose
/// continuations must be answered before anything else goes out).
fn send_commands(
    c: &mut Client,
    cmds: &mut impl Iterator<Item = Command>,
    expected: &mut VecDeque<Kind>,
    pipelined: bool,
) {
    while expected.is_empty() || (pipelined && !expected.contains(&Kind::Auth)) {
        let Some(command) = cmds.next() else { break };
        c.send(&command);
        expected.push_back(kind(&command));
    }
    assert_eq!(c.is_waiting(), !expected.is_empty());
}

/// Runs the client over `input` in chunks; returns the responses and how it ended.
fn run(cmds: &[u8], pipelined: bool, input: &[u8], splits: &[u8]) -> (Vec<Response>, Option<ClientError>) {
    let mut c = Client::new();
    let mut expected = VecDeque::from([Kind::Greeting]);
    let mut cmds = cmds.iter().map(|&k| command(k));
    let mut responses = Vec::new();
    let mut sasl_steps = 0;
    let mut pos = 0;
    let mut k = 0;
    loop {
        loop {
            send_commands(&mut c, &mut cmds, &mut expected, pipelined);
            let response = match c.poll_response() {
                Ok(Some(response)) => response,
                Ok(None) => break,
                Err(e) => return (responses, Some(e)),
            };
            let kind = expected.pop_front().expect("a response nobody asked for");
            match (&response, kind) {
                (Response::Status(status), Kind::Multi) => assert!(!status.positive, "+OK without its lines"),
                (Response::Status(_), _) => {}
                (Response::Multi { status, .. }, Kind::Multi) => assert!(status.positive),
                (Response::Continuation(_), Kind::Auth) => {
                    sasl_steps += 1;
                    if sasl_steps % 3 == 0 {
                        c.cancel_sasl();
                    } else {
                        c.send_sasl_response(b"\0u\0secret");
                    }
                    expected.push_back(Kind::Auth);
                }
                (r, kind) => panic!("{r:?} in answer to a {kind:?} command"),
            }
            responses.push(response);
        }
        if pos >= input.len() {
            return (responses, None);
        }
        let step = splits.get(k % splits.len().max(1)).map_or(input.len(), |&s| usize::from(s) + 1);
        k += 1;
        let n = step.min(input.len() - pos);
        c.feed(&input[pos..pos + n]);
        pos += n;
    }
}

fuzz_target!(|data: &[u8]| {
    // Status line parsing alone, line by line.
    for line in data.split(|&b| b == b'\n') {
        check_status_round_trip(line.strip_suffix(b"\r").unwrap_or(line));
    }

    // Then a session: [split pattern, mode and command count, commands..., server bytes].
    if data.len() < 2 {
        return;
    }
    let nsplits = usize::from(data[0] % 8);
    let pipelined = data[1] & 0x80 != 0;
    let ncmds = usize::from(data[1] & 0x1F);
    let rest = &data[2..];
    let (cmds, rest) = rest.split_at(ncmds.min(rest.len()));
    let (splits, script) = rest.split_at(nsplits.min(rest.len()));
    let input = script::expand(script, LINES, b"");

    let whole = run(cmds, pipelined, &input, &[]);
    assert_eq!(run(cmds, pipelined, &input, splits), whole);
    assert_eq!(run(cmds, pipelined, &input, &[0]), whole);

    for response in &whole.0 {
        if let Some(status) = response.status() {
            let _ = parse_stat(status);
        }
        if let Response::Multi { lines, .. } = response {
            assert!(lines.iter().all(|l| !l.contains(&b'\n')));
            let _ = parse_list(lines);
            let _ = parse_uidl(lines);
            let caps = Capabilities::parse(lines);
            let _ = caps.args("SASL");
            check_multi_round_trip(lines);
        }
    }
});
