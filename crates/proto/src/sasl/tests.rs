//! RFC vectors, failure paths and client/server round trips.

use super::*;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;

const RFC2195_CHALLENGE: &str = "<1896.697170952@postoffice.reston.mci.net>";
const RFC7677_SALT: &str = "W22ZaJ0SNY7soEsUEjb6gQ==";
const RFC7677_SNONCE: &str = "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
/// A fixed clock and seed: the exchanges are deterministic.
const FRESH: Fresh = Fresh { unix_time: 697170952, seed: [7; SEED_LEN] };
/// The random octets of the tests' SCRAM client nonces.
const CLIENT_RANDOM: [u8; NONCE_RANDOM_LEN] = [9; NONCE_RANDOM_LEN];

/// Fast secrets for tests (no Argon2id; PLAIN/LOGIN fall back to the SCRAM keys).
fn quick_secrets(password: &str) -> Secrets {
    Secrets {
        argon2: None,
        scram_sha256: Some(ScramSecret::derive(password, b"test-salt", 4096)),
        cram_md5: Some(CramMd5Secret::from_password(password)),
    }
}

fn lookup(user: &str) -> Option<Secrets> {
    match user {
        "tim" => Some(quick_secrets("tanstaaftanstaaf")),
        "user" => Some(quick_secrets("pencil")),
        "Kurt" => Some(quick_secrets("xipj3plmq")),
        "nocram" => Some(Secrets { cram_md5: None, ..quick_secrets("pw") }),
        "noscram" => Some(Secrets { scram_sha256: None, ..quick_secrets("pw") }),
        "empty" => Some(Secrets::default()),
        _ => None,
    }
}

type Outcome = Result<(String, Option<String>), SaslError>;

/// Drives a client and a server against each other through the base64 line coding.
fn exchange(mut client: ClientSession, options: &ServerOptions) -> Outcome {
    let mut server = ServerSession::new(client.mechanism(), options, FRESH);
    let initial = client.initial_response()?;
    let mut step = match initial {
        Some(ir) => {
            let line = encode_initial_response(&ir);
            server.start(Some(&decode_response(line.as_bytes())?))
        }
        None => server.start(None),
    };
    for _ in 0..10 {
        step = match step {
            ServerStep::Challenge(c) => {
                let raw = decode_challenge(encode_challenge(&c).as_bytes())?;
                let response = client.step(&raw)?;
                server.step(&decode_response(encode_response(&response).as_bytes())?)
            }
            ServerStep::NeedSecrets { authcid } => {
                assert_eq!(server.authcid(), Some(authcid.as_str()));
                server.provide_secrets(lookup(&authcid).as_ref())
            }
            ServerStep::Success { authcid, authzid } => {
                client.finish(None)?;
                return Ok((authcid, authzid));
            }
            ServerStep::Failure(e) => return Err(e),
        };
    }
    panic!("exchange did not finish");
}

fn client(mechanism: Mechanism, user: &str, password: &str) -> ClientSession {
    ClientSession::new(mechanism, Credentials::new(user, password)).with_random_nonce(&CLIENT_RANDOM)
}

fn ok(user: &str) -> Outcome {
    Ok((user.to_owned(), None))
}

// ---- Mechanism and line coding ----

#[test]
fn mechanism_names() {
    for m in Mechanism::ALL {
        assert_eq!(Mechanism::from_name(m.name()), Some(m));
        assert_eq!(Mechanism::from_name(&m.name().to_lowercase()), Some(m));
    }
    assert_eq!(Mechanism::from_name("Scram-Sha-256-Plus"), Some(Mechanism::ScramSha256Plus));
    assert_eq!(Mechanism::from_name("DIGEST-MD5"), None);
    assert!(Mechanism::Plain.needs_tls_for_clear() && Mechanism::Login.needs_tls_for_clear());
    assert!(!Mechanism::CramMd5.needs_tls_for_clear());
    assert!(!Mechanism::ScramSha256.needs_tls_for_clear());
    assert!(!Mechanism::CramMd5.client_first() && !Mechanism::Login.client_first());
    assert!(Mechanism::ScramSha256Plus.needs_channel_binding());
}

#[test]
fn line_coding() {
    // RFC 4954 4: "*" cancels, "=" is an empty initial response.
    assert_eq!(decode_response(b"*"), Err(SaslError::Cancelled));
    assert_eq!(decode_response(b"*\r\n"), Err(SaslError::Cancelled));
    assert_eq!(decode_response(b"="), Ok(Vec::new()));
    assert_eq!(decode_response(b""), Ok(Vec::new()));
    assert_eq!(decode_response(b"Zm9v\r\n"), Ok(b"foo".to_vec()));
    for bad in [&b"Zm9"[..], b"Zm9v=", b"Zm 9v", b"Zm9v\r\nZm9v", b"Zh==", b"==", b"\xff"] {
        assert_eq!(decode_response(bad), Err(SaslError::Malformed), "{bad:?}");
    }
    assert_eq!(encode_challenge(b""), "");
    assert_eq!(encode_initial_response(b""), "=");
    assert_eq!(encode_response(b""), "");
    assert_eq!(decode_challenge(b"VXNlcm5hbWU6"), Ok(b"Username:".to_vec()));
}

#[test]
fn error_replies() {
    let reply = |e: SaslError| format!("{} {} {}", e.code(), e.enhanced(), e.text());
    assert_eq!(reply(SaslError::Cancelled), "501 5.0.0 Authentication cancelled");
    assert!(reply(SaslError::Malformed).starts_with("501 5.5.2 "));
    assert!(reply(SaslError::UnexpectedInitialResponse).starts_with("501 5.7.0 "));
    assert_eq!(reply(SaslError::BadCredentials), "535 5.7.8 Authentication credentials invalid");
    // Must not be told apart from bad credentials on the wire.
    assert_eq!(reply(SaslError::MechanismUnavailable), reply(SaslError::BadCredentials));
    assert!(reply(SaslError::AuthzDenied).starts_with("535 5.7.8 "));
    assert!(reply(SaslError::Temporary).starts_with("454 4.7.0 "));
    assert!(reply(SaslError::UnknownMechanism).starts_with("504 5.5.4 "));
    assert!(reply(SaslError::EncryptionRequired).starts_with("538 5.7.11 "));
    assert!(reply(SaslError::LineTooLong).starts_with("500 5.5.6 "));
}

// ---- RFC 2195 CRAM-MD5 ----

#[test]
fn rfc2195_server() {
    let options = ServerOptions {
        hostname: "postoffice.reston.mci.net".into(),
        nonce: Some("1896".into()),
        ..ServerOptions::default()
    };
    let mut server = ServerSession::new(Mechanism::CramMd5, &options, FRESH);
    let ServerStep::Challenge(challenge) = server.start(None) else { panic!() };
    assert_eq!(challenge, RFC2195_CHALLENGE.as_bytes());
    // RFC 2195 2, base64 as on the wire.
    assert_eq!(encode_challenge(&challenge), "PDE4OTYuNjk3MTcwOTUyQHBvc3RvZmZpY2UucmVzdG9uLm1jaS5uZXQ+");
    let response = decode_response(b"dGltIGI5MTNhNjAyYzdlZGE3YTQ5NWI0ZTZlNzMzNGQzODkw").unwrap();
    assert_eq!(response, b"tim b913a602c7eda7a495b4e6e7334d3890");
    assert_eq!(server.step(&response), ServerStep::NeedSecrets { authcid: "tim".into() });
    assert_eq!(
        server.provide_secrets(lookup("tim").as_ref()),
        ServerStep::Success { authcid: "tim".into(), authzid: None }
    );
}

#[test]
fn rfc2195_client() {
    let mut c = client(Mechanism::CramMd5, "tim", "tanstaaftanstaaf");
    assert_eq!(c.initial_response(), Ok(None));
    assert_eq!(c.step(RFC2195_CHALLENGE.as_bytes()).unwrap(), b"tim b913a602c7eda7a495b4e6e7334d3890");
    assert_eq!(c.finish(None), Ok(()));
}

#[test]
fn cram_failures() {
    let options = ServerOptions { cram_challenge: Some(RFC2195_CHALLENGE.into()), ..Default::default() };
    let run = |response: &[u8], secrets: Option<Secrets>| {
        let mut server = ServerSession::new(Mechanism::CramMd5, &options, FRESH);
        assert!(matches!(server.start(None), ServerStep::Challenge(_)));
        match server.step(response) {
            ServerStep::NeedSecrets { .. } => server.provide_secrets(secrets.as_ref()),
            other => other,
        }
    };
    let wrong = b"tim b913a602c7eda7a495b4e6e7334d3891";
    assert_eq!(run(wrong, lookup("tim")), ServerStep::Failure(SaslError::BadCredentials));
    // Uppercase hex is accepted.
    let upper = b"tim B913A602C7EDA7A495B4E6E7334D3890";
    assert!(matches!(run(upper, lookup("tim")), ServerStep::Success { .. }));
    let right = b"tim b913a602c7eda7a495b4e6e7334d3890";
    assert_eq!(run(right, None), ServerStep::Failure(SaslError::BadCredentials));
    assert_eq!(run(right, lookup("nocram")), ServerStep::Failure(SaslError::MechanismUnavailable));
    for bad in [
        &b"tim"[..],
        b"tim b913",
        b" b913a602c7eda7a495b4e6e7334d3890",
        b"tim zz13a602c7eda7a495b4e6e7334d3890",
        b"\xff b913a602c7eda7a495b4e6e7334d3890",
    ] {
        assert_eq!(run(bad, lookup("tim")), ServerStep::Failure(SaslError::Malformed));
    }
    // RFC 4954 4: no initial response for a server-first mechanism.
    let mut server = ServerSession::new(Mechanism::CramMd5, &options, FRESH);
    assert_eq!(server.start(Some(b"")), ServerStep::Failure(SaslError::UnexpectedInitialResponse));
}

#[test]
fn cram_random_challenge_is_a_msg_id() {
    let options = ServerOptions { hostname: "mx.example".into(), ..Default::default() };
    let mut server = ServerSession::new(Mechanism::CramMd5, &options, FRESH);
    let ServerStep::Challenge(c) = server.start(None) else { panic!() };
    let c = String::from_utf8(c).unwrap();
    assert!(c.starts_with('<') && c.ends_with("@mx.example>"), "{c}");
    assert_eq!(c.matches('.').count(), 2, "{c}");
    // RFC 2195 2: <random.timestamp@hostname>, the time and randomness the driver's.
    let (random, rest) = c[1..].split_once('.').unwrap();
    assert!(random.parse::<u64>().is_ok(), "{c}");
    assert_eq!(rest, "697170952@mx.example>");
    let challenge = |fresh: Fresh| {
        let mut server = ServerSession::new(Mechanism::CramMd5, &options, fresh);
        let ServerStep::Challenge(c) = server.start(None) else { panic!() };
        String::from_utf8(c).unwrap()
    };
    assert_eq!(challenge(FRESH), c, "deterministic");
    assert_ne!(challenge(Fresh::new(697170952, [8; SEED_LEN])), c, "another seed, another challenge");
    // A session's exchanges each get their own values, at the session's clock.
    let seed = Fresh::new(1, [7; SEED_LEN]);
    assert_ne!(challenge(seed.nth(1, 50)), challenge(seed.nth(2, 50)));
    assert!(challenge(seed.nth(1, 50)).ends_with(".50@mx.example>"));
}

#[test]
fn scram_nonces_come_from_the_drivers_random_octets() {
    // Server: 18 derived octets, 24 base64 characters after the client's nonce.
    let mut server = ServerSession::new(Mechanism::ScramSha256, &ServerOptions::default(), FRESH);
    server.start(Some(b"n,,n=user,r=abc"));
    let ServerStep::Challenge(first) = server.provide_secrets(lookup("user").as_ref()) else { panic!() };
    let first = String::from_utf8(first).unwrap();
    let nonce = first.strip_prefix("r=abc").unwrap().split(',').next().unwrap();
    assert_eq!(nonce.len(), 24, "{first}");
    // Client: base64 of the octets given; none given is a local failure, not a weak nonce.
    let mut c = client(Mechanism::ScramSha256, "user", "pencil");
    let first = String::from_utf8(c.initial_response().unwrap().unwrap()).unwrap();
    assert_eq!(first, format!("n,,n=user,r={}", STANDARD.encode(CLIENT_RANDOM)));
    let mut c = ClientSession::new(Mechanism::ScramSha256, Credentials::new("user", "pencil"));
    assert_eq!(c.initial_response(), Err(SaslError::Temporary));
}

// ---- RFC 4616 PLAIN ----

#[test]
fn rfc4616_examples() {
    // RFC 4616 4, first example: empty challenge, then the message.
    let mut server = ServerSession::new(Mechanism::Plain, &ServerOptions::default(), FRESH);
    assert_eq!(server.start(None), ServerStep::Challenge(Vec::new()));
    assert_eq!(server.step(b"\0tim\0tanstaaftanstaaf"), ServerStep::NeedSecrets { authcid: "tim".into() });
    assert_eq!(
        server.provide_secrets(lookup("tim").as_ref()),
        ServerStep::Success { authcid: "tim".into(), authzid: None }
    );
    // Second example: Kurt asks to act as Ursel; the caller decides (the RFC's server says no).
    let mut server = ServerSession::new(Mechanism::Plain, &ServerOptions::default(), FRESH);
    assert_eq!(server.start(Some(b"Ursel\0Kurt\0xipj3plmq")), ServerStep::NeedSecrets { authcid: "Kurt".into() });
    assert_eq!(
        server.provide_secrets(lookup("Kurt").as_ref()),
        ServerStep::Success { authcid: "Kurt".into(), authzid: Some("Ursel".into()) }
    );
    // An authzid equal to the authcid asks for nothing more.
    let mut server = ServerSession::new(Mechanism::Plain, &ServerOptions::default(), FRESH);
    server.start(Some(b"tim\0tim\0tanstaaftanstaaf"));
    assert_eq!(
        server.provide_secrets(lookup("tim").as_ref()),
        ServerStep::Success { authcid: "tim".into(), authzid: None }
    );
}

#[test]
fn plain_client_message() {
    let mut c = ClientSession::new(Mechanism::Plain, Credentials::new("Kurt", "xipj3plmq").with_authzid("Ursel"));
    assert_eq!(c.initial_response().unwrap().unwrap(), b"Ursel\0Kurt\0xipj3plmq");
    let mut c = client(Mechanism::Plain, "tim", "tanstaaftanstaaf");
    // Without an initial response the client answers the empty challenge.
    assert_eq!(c.step(b"").unwrap(), b"\0tim\0tanstaaftanstaaf");
}

#[test]
fn plain_failures() {
    let run = |message: &[u8], secrets: Option<Secrets>| {
        let mut server = ServerSession::new(Mechanism::Plain, &ServerOptions::default(), FRESH);
        match server.start(Some(message)) {
            ServerStep::NeedSecrets { .. } => server.provide_secrets(secrets.as_ref()),
            other => other,
        }
    };
    assert_eq!(run(b"\0tim\0wrong", lookup("tim")), ServerStep::Failure(SaslError::BadCredentials));
    assert_eq!(run(b"\0ghost\0pw", None), ServerStep::Failure(SaslError::BadCredentials));
    assert_eq!(run(b"\0empty\0pw", lookup("empty")), ServerStep::Failure(SaslError::MechanismUnavailable));
    for bad in [&b""[..], b"tim\0pw", b"\0\0pw", b"\0tim\0", b"\0tim\0pw\0", b"\0t\xffm\0pw"] {
        assert_eq!(run(bad, lookup("tim")), ServerStep::Failure(SaslError::Malformed), "{bad:?}");
    }
}

#[test]
fn plain_with_argon2() {
    let secrets = Secrets::from_password("correct horse", &[1; SALTS_LEN]).unwrap();
    let mut server = ServerSession::new(Mechanism::Plain, &ServerOptions::default(), FRESH);
    server.start(Some(b"\0al\0correct horse"));
    assert!(matches!(server.provide_secrets(Some(&secrets)), ServerStep::Success { .. }));
    let mut server = ServerSession::new(Mechanism::Plain, &ServerOptions::default(), FRESH);
    server.start(Some(b"\0al\0wrong horse"));
    assert_eq!(server.provide_secrets(Some(&secrets)), ServerStep::Failure(SaslError::BadCredentials));
}

// ---- LOGIN ----

#[test]
fn login_flows() {
    let mut server = ServerSession::new(Mechanism::Login, &ServerOptions::default(), FRESH);
    assert_eq!(server.start(None), ServerStep::Challenge(b"Username:".to_vec()));
    assert_eq!(server.step(b"tim"), ServerStep::Challenge(b"Password:".to_vec()));
    assert_eq!(server.step(b"tanstaaftanstaaf"), ServerStep::NeedSecrets { authcid: "tim".into() });
    assert!(matches!(server.provide_secrets(lookup("tim").as_ref()), ServerStep::Success { .. }));
    // Initial response carrying the user name.
    let mut server = ServerSession::new(Mechanism::Login, &ServerOptions::default(), FRESH);
    assert_eq!(server.start(Some(b"tim")), ServerStep::Challenge(b"Password:".to_vec()));
    assert_eq!(server.step(b"nope"), ServerStep::NeedSecrets { authcid: "tim".into() });
    assert_eq!(server.provide_secrets(lookup("tim").as_ref()), ServerStep::Failure(SaslError::BadCredentials));
    let mut server = ServerSession::new(Mechanism::Login, &ServerOptions::default(), FRESH);
    server.start(None);
    assert_eq!(server.step(b""), ServerStep::Failure(SaslError::Malformed));
}

// ---- RFC 7677 SCRAM-SHA-256 ----

const C_FIRST: &str = "n,,n=user,r=rOprNGfwEbeRWgbNEkqO";
const S_FIRST: &str = "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
const C_FINAL: &str =
    "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
const S_FINAL: &str = "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=";

fn rfc7677_secrets() -> Secrets {
    let salt = STANDARD.decode(RFC7677_SALT).unwrap();
    Secrets { scram_sha256: Some(ScramSecret::derive("pencil", &salt, 4096)), ..Secrets::default() }
}

fn rfc7677_options() -> ServerOptions {
    ServerOptions { nonce: Some(RFC7677_SNONCE.into()), ..ServerOptions::default() }
}

#[test]
fn rfc7677_server() {
    let mut server = ServerSession::new(Mechanism::ScramSha256, &rfc7677_options(), FRESH);
    assert_eq!(server.start(Some(C_FIRST.as_bytes())), ServerStep::NeedSecrets { authcid: "user".into() });
    assert_eq!(server.provide_secrets(Some(&rfc7677_secrets())), ServerStep::Challenge(S_FIRST.into()));
    assert_eq!(server.step(C_FINAL.as_bytes()), ServerStep::Challenge(S_FINAL.into()));
    assert_eq!(server.step(b""), ServerStep::Success { authcid: "user".into(), authzid: None });
}

#[test]
fn rfc7677_client() {
    let mut c = client(Mechanism::ScramSha256, "user", "pencil").with_nonce("rOprNGfwEbeRWgbNEkqO");
    assert_eq!(c.initial_response().unwrap().unwrap(), C_FIRST.as_bytes());
    assert_eq!(c.step(S_FIRST.as_bytes()).unwrap(), C_FINAL.as_bytes());
    assert_eq!(c.step(S_FINAL.as_bytes()).unwrap(), b"");
    assert_eq!(c.finish(None), Ok(()));
}

#[test]
fn scram_client_rejects_bad_server() {
    let fresh = || {
        let mut c = client(Mechanism::ScramSha256, "user", "pencil").with_nonce("rOprNGfwEbeRWgbNEkqO");
        c.initial_response().unwrap();
        c
    };
    // Tampered server signature.
    let mut c = fresh();
    c.step(S_FIRST.as_bytes()).unwrap();
    assert_eq!(c.step(b"v=7rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="), Err(SaslError::BadServerSignature));
    // Success reported without server-final.
    let mut c = fresh();
    c.step(S_FIRST.as_bytes()).unwrap();
    assert_eq!(c.finish(None), Err(SaslError::BadServerSignature));
    // Server-final delivered as success data (RFC 4422 3.6).
    let mut c = fresh();
    c.step(S_FIRST.as_bytes()).unwrap();
    assert_eq!(c.finish(Some(S_FINAL.as_bytes())), Ok(()));
    // Server error.
    let mut c = fresh();
    c.step(S_FIRST.as_bytes()).unwrap();
    assert_eq!(c.step(b"e=invalid-proof"), Err(SaslError::BadCredentials));
    // Nonce not extending ours, too few iterations, reserved extension.
    for bad in [
        "r=other%hvYD,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",
        "r=rOprNGfwEbeRWgbNEkqO,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",
        "r=rOprNGfwEbeRWgbNEkqO%hvYD,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=1",
        "m=x,r=rOprNGfwEbeRWgbNEkqO%hvYD,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",
        "r=rOprNGfwEbeRWgbNEkqO%hvYD,s=,i=4096",
    ] {
        assert_eq!(fresh().step(bad.as_bytes()), Err(SaslError::Malformed), "{bad}");
    }
}

#[test]
fn scram_server_failures() {
    let start = |first: &str| {
        let mut server = ServerSession::new(Mechanism::ScramSha256, &rfc7677_options(), FRESH);
        let step = server.start(Some(first.as_bytes()));
        (server, step)
    };
    // Wrong proof.
    let (mut server, _) = start(C_FIRST);
    server.provide_secrets(Some(&rfc7677_secrets()));
    let tampered = C_FINAL.replace("p=dHzb", "p=dHzc");
    assert_eq!(server.step(tampered.as_bytes()), ServerStep::Failure(SaslError::BadCredentials));
    // Wrong nonce.
    let (mut server, _) = start(C_FIRST);
    server.provide_secrets(Some(&rfc7677_secrets()));
    let other_nonce = C_FINAL.replace("k0,p=", "k1,p=");
    assert_eq!(server.step(other_nonce.as_bytes()), ServerStep::Failure(SaslError::Malformed));
    // Channel-binding header that does not match the first message's gs2-header.
    let (mut server, _) = start(C_FIRST);
    server.provide_secrets(Some(&rfc7677_secrets()));
    let other_cb = C_FINAL.replace("c=biws", "c=eSws");
    assert_eq!(server.step(other_cb.as_bytes()), ServerStep::Failure(SaslError::BadCredentials));
    // Reserved extension, PLUS flag on the non-PLUS mechanism.
    assert_eq!(start("n,,m=x,n=user,r=abc").1, ServerStep::Failure(SaslError::Malformed));
    assert_eq!(start("p=tls-exporter,,n=user,r=abc").1, ServerStep::Failure(SaslError::Malformed));
    // Non-empty reply to server-final.
    let (mut server, _) = start(C_FIRST);
    server.provide_secrets(Some(&rfc7677_secrets()));
    server.step(C_FINAL.as_bytes());
    assert_eq!(server.step(b"x"), ServerStep::Failure(SaslError::Malformed));
}

#[test]
fn scram_unknown_user_continues_with_fake_salt() {
    let options = ServerOptions { fake_salt_key: Some(SiteSecret::new(b"site secret".to_vec())), ..Default::default() };
    let server_first = |user: &str| {
        let mut server = ServerSession::new(Mechanism::ScramSha256, &options, FRESH);
        server.start(Some(format!("n,,n={user},r=abc").as_bytes()));
        let ServerStep::Challenge(sf) = server.provide_secrets(lookup(user).as_ref()) else { panic!() };
        String::from_utf8(sf).unwrap()
    };
    let a = server_first("ghost");
    let salt = |sf: &str| sf.split(',').nth(1).unwrap().to_owned();
    assert!(a.starts_with("r=abc") && a.ends_with(",i=4096"), "{a}");
    assert_eq!(salt(&a), salt(&server_first("ghost")), "stable fake salt");
    // Accounts are found whatever the case of their name: so are fake salts.
    assert_eq!(salt(&a), salt(&server_first("GHost")));
    assert_ne!(salt(&a), salt(&server_first("phantom")));
    // Full run: fails only at the end, like a wrong password.
    let c = client(Mechanism::ScramSha256, "ghost", "pw");
    assert_eq!(exchange(c, &options), Err(SaslError::BadCredentials));
    let c = client(Mechanism::ScramSha256, "noscram", "pw");
    assert_eq!(exchange(c, &options), Err(SaslError::MechanismUnavailable));
}

#[test]
fn scram_plus_channel_binding() {
    let cb = vec![7u8; 32];
    let options = ServerOptions { channel_binding: Some(cb.clone()), ..Default::default() };
    let plus = |data: Vec<u8>| client(Mechanism::ScramSha256Plus, "user", "pencil").with_channel_binding(data);
    assert_eq!(exchange(plus(cb.clone()), &options), ok("user"));
    // Different TLS connection (e.g. a man in the middle).
    assert_eq!(exchange(plus(vec![8u8; 32]), &options), Err(SaslError::BadCredentials));
    // Server without binding data cannot run -PLUS.
    assert_eq!(exchange(plus(cb.clone()), &ServerOptions::default()), Err(SaslError::MechanismUnavailable));
    // Client without binding data cannot either.
    let mut c = client(Mechanism::ScramSha256Plus, "user", "pencil");
    assert_eq!(c.initial_response(), Err(SaslError::MechanismUnavailable));
    // RFC 5802 6: "y" while the server offers -PLUS is a downgrade.
    let y = client(Mechanism::ScramSha256, "user", "pencil").with_channel_binding(cb.clone());
    assert_eq!(exchange(y, &options), Err(SaslError::BadCredentials));
    // "y" to a server without binding is fine.
    let y = client(Mechanism::ScramSha256, "user", "pencil").with_channel_binding(cb);
    assert_eq!(exchange(y, &ServerOptions::default()), ok("user"));
    // Unsupported binding type.
    let mut server = ServerSession::new(Mechanism::ScramSha256Plus, &options, FRESH);
    assert_eq!(server.start(Some(b"p=tls-unique,,n=user,r=abc")), ServerStep::Failure(SaslError::MechanismUnavailable));
    let mut server = ServerSession::new(Mechanism::ScramSha256Plus, &options, FRESH);
    assert_eq!(server.start(Some(b"n,,n=user,r=abc")), ServerStep::Failure(SaslError::Malformed));
}

#[test]
fn scram_authzid_and_escaped_names() {
    let creds = Credentials::new("user", "pencil").with_authzid("ad,min=");
    let c = ClientSession::new(Mechanism::ScramSha256, creds).with_random_nonce(&CLIENT_RANDOM);
    assert_eq!(exchange(c, &ServerOptions::default()), Ok(("user".into(), Some("ad,min=".into()))));
    let creds = Credentials::new("user", "pencil").with_authzid("user");
    let c = ClientSession::new(Mechanism::ScramSha256, creds).with_random_nonce(&CLIENT_RANDOM);
    assert_eq!(exchange(c, &ServerOptions::default()), ok("user"));
}

// ---- EXTERNAL ----

#[test]
fn external() {
    let options = ServerOptions { external_identity: Some("relay.example".into()), ..Default::default() };
    let mut server = ServerSession::new(Mechanism::External, &options, FRESH);
    // AUTH EXTERNAL = (SPEC 3: empty initial response).
    assert_eq!(server.start(Some(b"")), ServerStep::Success { authcid: "relay.example".into(), authzid: None });
    let mut server = ServerSession::new(Mechanism::External, &options, FRESH);
    assert_eq!(server.start(None), ServerStep::Challenge(Vec::new()));
    assert_eq!(
        server.step(b"other@example"),
        ServerStep::Success { authcid: "relay.example".into(), authzid: Some("other@example".into()) }
    );
    let mut server = ServerSession::new(Mechanism::External, &ServerOptions::default(), FRESH);
    assert_eq!(server.start(Some(b"")), ServerStep::Failure(SaslError::MechanismUnavailable));
    let c = ClientSession::new(Mechanism::External, Credentials::default());
    assert_eq!(exchange(c, &options), ok("relay.example"));
    let c = ClientSession::new(Mechanism::External, Credentials::default().with_authzid("x"));
    assert_eq!(exchange(c, &options), Ok(("relay.example".into(), Some("x".into()))));
}

// ---- Round trips and misuse ----

#[test]
fn round_trips_every_mechanism() {
    let cb = vec![1u8; 32];
    let options = ServerOptions {
        channel_binding: Some(cb.clone()),
        external_identity: Some("user".into()),
        ..Default::default()
    };
    let client = |m: Mechanism, user: &str, password: &str| {
        let c = client(m, user, password);
        if m == Mechanism::ScramSha256Plus {
            c.with_channel_binding(cb.clone())
        } else {
            c
        }
    };
    for m in Mechanism::ALL {
        assert_eq!(exchange(client(m, "user", "pencil"), &options), ok("user"), "{m}");
        if m != Mechanism::External {
            let wrong = exchange(client(m, "user", "pencilx"), &options);
            assert_eq!(wrong, Err(SaslError::BadCredentials), "{m}");
            let unknown = exchange(client(m, "ghost", "pencil"), &options);
            assert_eq!(unknown, Err(SaslError::BadCredentials), "{m}");
        }
    }
}

#[test]
fn round_trip_without_initial_response() {
    // The driver may skip the initial response (e.g. POP3 without SASL-IR).
    for m in [Mechanism::Plain, Mechanism::ScramSha256] {
        let mut c = client(m, "user", "pencil");
        let mut server = ServerSession::new(m, &ServerOptions::default(), FRESH);
        let mut step = server.start(None);
        let result = loop {
            step = match step {
                ServerStep::Challenge(ch) => server.step(&c.step(&ch).unwrap()),
                ServerStep::NeedSecrets { authcid } => server.provide_secrets(lookup(&authcid).as_ref()),
                other => break other,
            };
        };
        assert_eq!(result, ServerStep::Success { authcid: "user".into(), authzid: None }, "{m}");
        assert_eq!(c.finish(None), Ok(()));
    }
}

#[test]
fn misuse_after_the_end_fails_cleanly() {
    let mut server = ServerSession::new(Mechanism::Plain, &ServerOptions::default(), FRESH);
    server.start(Some(b"\0tim\0tanstaaftanstaaf"));
    server.provide_secrets(lookup("tim").as_ref());
    assert_eq!(server.step(b"more"), ServerStep::Failure(SaslError::Malformed));
    assert_eq!(server.provide_secrets(None), ServerStep::Failure(SaslError::Malformed));
    assert_eq!(server.start(None), ServerStep::Failure(SaslError::Malformed));
    let mut server = ServerSession::new(Mechanism::Plain, &ServerOptions::default(), FRESH);
    assert_eq!(server.provide_secrets(None), ServerStep::Failure(SaslError::Malformed));
    let mut c = client(Mechanism::Plain, "a", "b");
    c.initial_response().unwrap();
    assert_eq!(c.step(b"unexpected"), Err(SaslError::Malformed));
    assert_eq!(c.initial_response(), Err(SaslError::Malformed));
}
