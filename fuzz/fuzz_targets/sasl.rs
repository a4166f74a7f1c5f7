//! SASL server mechanisms on arbitrary client responses: never panic, never succeed for
//! an unknown user or without the right proof.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vouchmail_proto::sasl::{decode_response, Mechanism, ServerOptions, ServerSession, ServerStep};

fuzz_target!(|input: (u8, Vec<Vec<u8>>)| {
    let (which, responses) = input;
    let mechanism = Mechanism::ALL[usize::from(which) % Mechanism::ALL.len()];
    let options = ServerOptions { channel_binding: Some(vec![1; 32]), ..ServerOptions::default() };
    let fresh = vouchmail_proto::sasl::Fresh::new(1_700_000_000, [1; vouchmail_proto::sasl::SEED_LEN]);
    let mut server = ServerSession::new(mechanism, &options, fresh);
    let mut responses = responses.into_iter();
    let mut step = match responses.next() {
        Some(first) => match decode_response(&first) {
            Ok(ir) => server.start(Some(&ir)),
            Err(_) => server.start(None),
        },
        None => server.start(None),
    };
    for _ in 0..16 {
        step = match step {
            ServerStep::Challenge(_) => match responses.next() {
                Some(raw) => match decode_response(&raw) {
                    Ok(response) => server.step(&response),
                    Err(_) => return,
                },
                None => return,
            },
            // Nobody exists: success would be a bug.
            ServerStep::NeedSecrets { .. } => server.provide_secrets(None),
            ServerStep::Success { .. } => panic!("authenticated without an account"),
            ServerStep::Failure(_) => return,
        };
    }
});
