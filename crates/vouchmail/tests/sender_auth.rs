//! SPEC 13 on the MX: SPF, DKIM, DMARC and iprev of internet mail, against the test's own
//! DNS, with messages signed by an independent signer (dkimpy) and our Authentication-Results
//! read back by an independent RFC 8601 parser (Python's authres).

mod common;

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use common::{env_number, SmtpConn, TestServer};
use std::io::Write;
use vouchmail_store::{Folder, SenderPolicy};
use vouchmail_testkit::dns::{TestDns, ZoneBuilder};

/// Debian's Python, where python3-dkim and python3-authres are installed (the README's
/// test command installs them); the pyenv one on PATH may lack them.
const PYTHON: &str = "/usr/bin/python3";

/// Runs a Python script with `input` on stdin; its stdout.
async fn python(script: &str, input: &[u8]) -> String {
    python_with(script, &[], input).await
}

/// Runs a Python script with arguments (`sys.argv[1:]`) and `input` on stdin; its stdout.
async fn python_with(script: &str, args: &[&str], input: &[u8]) -> String {
    let (script, input) = (script.to_string(), input.to_vec());
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let mut child = std::process::Command::new(PYTHON)
            .arg("-c")
            .arg(&script)
            .args(&args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("python3");
        let mut stdin = child.stdin.take().unwrap();
        let writer = std::thread::spawn(move || stdin.write_all(&input));
        let out = child.wait_with_output().unwrap();
        writer.join().unwrap().unwrap();
        assert!(out.status.success(), "python: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    })
    .await
    .unwrap()
}

/// The sending domain's keys, made by Python: an RSA-2048 key (PKCS#1 PEM, and its
/// SubjectPublicKeyInfo for the TXT record) and an Ed25519 one (RFC 8463: the seed, and
/// the raw public key).
struct Keys {
    rsa_pem: String,
    rsa_public: String,
    ed_seed: String,
    ed_public: String,
}

async fn keys() -> Keys {
    let script = r#"
import base64, json, subprocess, nacl.signing
pem = subprocess.run(["openssl", "genrsa", "-traditional", "2048"], capture_output=True, check=True).stdout
der = subprocess.run(["openssl", "rsa", "-pubout", "-outform", "DER"], input=pem, capture_output=True, check=True).stdout
key = nacl.signing.SigningKey.generate()
print(json.dumps({"rsa_pem": pem.decode(), "rsa_public": base64.b64encode(der).decode(),
                  "ed_seed": base64.b64encode(bytes(key)).decode(),
                  "ed_public": base64.b64encode(bytes(key.verify_key)).decode()}))
"#;
    let v: serde_json::Value = serde_json::from_str(&python(script, b"").await).unwrap();
    let field = |name: &str| v[name].as_str().unwrap().to_string();
    Keys {
        rsa_pem: field("rsa_pem"),
        rsa_public: field("rsa_public"),
        ed_seed: field("ed_seed"),
        ed_public: field("ed_public"),
    }
}

/// Signs `message` for sender.test with dkimpy's rsa-sha1 (selector `rsa`), which RFC 8301
/// retired.
async fn signed_sha1(keys: &Keys, message: &str) -> String {
    let script = format!(
        r#"
import sys, dkim
msg = sys.stdin.buffer.read()
sig = dkim.sign(msg, b"rsa", b"sender.test", {rsa:?}.encode(), signature_algorithm=b"rsa-sha1",
                include_headers=[b"from", b"to", b"subject", b"date"])
sys.stdout.buffer.write(sig + msg)
"#,
        rsa = keys.rsa_pem
    );
    python(&script, message.as_bytes()).await
}

/// Signs `message` for sender.test with dkimpy: Ed25519 (selector `ed`) and RSA (`rsa`).
async fn signed(keys: &Keys, message: &str) -> String {
    let script = format!(
        r#"
import sys, dkim
msg = sys.stdin.buffer.read()
headers = [b"from", b"to", b"subject", b"date"]
rsa = dkim.sign(msg, b"rsa", b"sender.test", {rsa:?}.encode(), include_headers=headers)
ed = dkim.sign(msg, b"ed", b"sender.test", {ed:?}.encode(), signature_algorithm=b"ed25519-sha256", include_headers=headers)
sys.stdout.buffer.write(ed + rsa + msg)
"#,
        rsa = keys.rsa_pem,
        ed = keys.ed_seed
    );
    python(&script, message.as_bytes()).await
}

/// Our Authentication-Results of a stored message, parsed by authres: (method, result,
/// {ptype.property: value}) for each resinfo.
async fn parsed_results(stored: &[u8]) -> Vec<(String, String, serde_json::Map<String, serde_json::Value>)> {
    parsed_results_of(stored, "mx.local.test").await
}

/// As [`parsed_results`], for the server named `authserv_id`.
async fn parsed_results_of(
    stored: &[u8],
    authserv_id: &str,
) -> Vec<(String, String, serde_json::Map<String, serde_json::Value>)> {
    let script = r#"
import sys, json, email, authres
msg = email.message_from_bytes(sys.stdin.buffer.read())
header = msg["Authentication-Results"]
parsed = authres.AuthenticationResultsHeader.parse("Authentication-Results: " + str(header))
assert parsed.authserv_id == sys.argv[1], parsed.authserv_id
print(json.dumps([[r.method, r.result, {p.type + "." + p.name: p.value for p in r.properties}] for r in parsed.results]))
"#;
    let v: serde_json::Value = serde_json::from_str(&python_with(script, &[authserv_id], stored).await).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (r[0].as_str().unwrap().to_string(), r[1].as_str().unwrap().to_string(), r[2].as_object().unwrap().clone())
        })
        .collect()
}

/// The test's DNS: sender.test with SPF for 127.0.0.1, both DKIM keys and DMARC p=reject
/// (with aggregate reports);
/// quarantine.test (p=quarantine, no SPF); and 127.0.0.1 named client.sender.test both ways
/// (iprev), its HELO name with SPF of its own.
async fn dns(keys: &Keys) -> TestDns {
    ZoneBuilder::default()
        .txt("sender.test", "v=spf1 ip4:127.0.0.1 -all")
        // RFC 7489 7.1: reports.test takes sender.test's reports; other.test does not.
        .txt(
            "_dmarc.sender.test",
            "v=DMARC1; p=reject; rua=mailto:dmarc@sender.test,mailto:agg@reports.test!10m,mailto:nope@other.test",
        )
        .txt("sender.test._report._dmarc.reports.test", "v=DMARC1")
        .txt("rsa._domainkey.sender.test", &format!("v=DKIM1; k=rsa; p={}", keys.rsa_public))
        .txt("ed._domainkey.sender.test", &format!("v=DKIM1; k=ed25519; p={}", keys.ed_public))
        .txt("_dmarc.quarantine.test", "v=DMARC1; p=quarantine")
        .txt("softfail.test", "v=spf1 ~all")
        .txt("neutral.test", "v=spf1 ?all")
        // RFC 7208 6.1: a redirect to a domain without an SPF record is a permerror.
        .txt("broken.test", "v=spf1 redirect=nowhere.test")
        .txt("client.sender.test", "v=spf1 a -all")
        .a("client.sender.test", "127.0.0.1")
        .ptr("127.0.0.1", "client.sender.test")
        .start()
        .await
}

/// A server whose local.test refuses unauthenticated mail (`policy`), checking SPEC 13
/// against `dns`.
async fn server(dns: SocketAddr, policy: SenderPolicy) -> TestServer {
    let server = TestServer::start_with(|c| {
        c.dns.nameservers = vec![dns];
        c.dmarc.verify = true;
        c.dmarc.timeout_secs = 3;
        c.dmarc.reports = std::env::var("REPORTS").map_or(true, |v| v != "0");
    })
    .await;
    server.store.set_domain_policy("local.test", policy).await.unwrap();
    server
}

/// Sends `message` on the MX as client.sender.test with MAIL FROM `from`; the reply to
/// the end of the data.
async fn send(server: &TestServer, from: &str, message: &str) -> common::Reply {
    let (mut c, _) = SmtpConn::connect(server.mx()).await;
    c.cmd("EHLO client.sender.test").await;
    c.send_message(from, &["user@local.test"], message).await
}

fn message(from: &str, subject: &str) -> String {
    format!(
        "From: {from}\r\nTo: user@local.test\r\nSubject: {subject}\r\nDate: Sun, 06 Dec 2026 12:00:00 +0000\r\n\r\n\
         Hello from the internet.\r\n"
    )
}

fn result<'a>(
    results: &'a [(String, String, serde_json::Map<String, serde_json::Value>)],
    method: &str,
) -> Vec<&'a (String, String, serde_json::Map<String, serde_json::Value>)> {
    results.iter().filter(|r| r.0 == method).collect()
}

/// SPEC 2, 13: mail signed by dkimpy with both algorithms, from an SPF-authorized host, to a
/// domain that refuses unauthenticated mail: DMARC passes, which authenticates it; the
/// stored copy's one Authentication-Results (parsed by authres) has iprev, both SPF
/// identities, one dkim per signature with header.d/s/b, and dmarc.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dkim_signed_message_of_a_dmarc_domain_is_authenticated() {
    let keys = keys().await;
    let dns = dns(&keys).await;
    let server = server(dns.addr(), SenderPolicy::REJECT).await;
    let text = signed(&keys, &message("alice@sender.test", "signed")).await;
    let reply = send(&server, "alice@sender.test", &text).await;
    assert_eq!(reply.code, 250, "{reply:?}");
    let stored = server.mailbox("user@local.test", Folder::Inbox).await;
    let results = parsed_results(&stored[0]).await;
    let iprev = result(&results, "iprev");
    assert_eq!(iprev[0].1, "pass", "{results:?}");
    assert_eq!(iprev[0].2["policy.iprev"], "127.0.0.1");
    let spf = result(&results, "spf");
    assert_eq!((spf[0].1.as_str(), spf[0].2["smtp.helo"].as_str()), ("pass", Some("client.sender.test")));
    assert_eq!((spf[1].1.as_str(), spf[1].2["smtp.mailfrom"].as_str()), ("pass", Some("alice@sender.test")));
    let dkim = result(&results, "dkim");
    assert_eq!(dkim.len(), 2, "{results:?}");
    let selectors: Vec<&str> = dkim.iter().map(|d| d.2["header.s"].as_str().unwrap()).collect();
    assert_eq!(selectors, ["ed", "rsa"]);
    for d in &dkim {
        assert_eq!((d.1.as_str(), d.2["header.d"].as_str()), ("pass", Some("sender.test")), "{d:?}");
        assert_eq!(d.2["header.b"].as_str().unwrap().len(), 8);
    }
    let dmarc = result(&results, "dmarc");
    assert_eq!((dmarc[0].1.as_str(), dmarc[0].2["header.from"].as_str()), ("pass", Some("sender.test")));
    // The store records how it was authenticated.
    let listed = server.store.list_mailbox("user@local.test", Some(Folder::Inbox)).await.unwrap();
    let stored = server.store.get_message(listed[0].message_id).await.unwrap().unwrap();
    assert_eq!(stored.envelope.auth_results, "dmarc=pass header.from=sender.test");
}

/// RFC 7489 6.3, SPEC 13: a message whose From domain publishes p=reject and that nothing
/// aligned authenticates is refused 550 5.7.1 even where the local action is junk; where it
/// is accept, it is delivered. A header changed after signing fails DKIM.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dmarc_reject_domain_without_a_valid_signature_is_refused() {
    let keys = keys().await;
    let dns = dns(&keys).await;
    let server = server(dns.addr(), SenderPolicy::JUNK).await;
    // The MAIL FROM domain is another one (not aligned); the signature no longer matches.
    let text = signed(&keys, &message("alice@sender.test", "original")).await.replace("original", "changed");
    let reply = send(&server, "bounces@neutral.test", &text).await;
    assert_eq!(reply.code, 550, "{reply:?}");
    assert!(reply.text().contains("5.7.1") && reply.text().contains("sender.test"), "{reply:?}");
    server.store.set_domain_policy("local.test", SenderPolicy::ACCEPT).await.unwrap();
    let reply = send(&server, "bounces@neutral.test", &text).await;
    assert_eq!(reply.code, 250, "{reply:?}");
    let stored = server.mailbox("user@local.test", Folder::Inbox).await;
    let results = parsed_results(&stored[0]).await;
    assert!(result(&results, "dkim").iter().all(|d| d.1 == "fail"), "{results:?}");
    let dmarc = result(&results, "dmarc");
    assert_eq!((dmarc[0].1.as_str(), dmarc[0].2["policy.dmarc"].as_str()), ("fail", Some("reject")));

    // RFC 8301 3.1: a valid rsa-sha1 signature is `policy`, and DMARC does not pass on it.
    server.store.set_domain_policy("local.test", SenderPolicy::JUNK).await.unwrap();
    let text = signed_sha1(&keys, &message("alice@sender.test", "sha1")).await;
    let reply = send(&server, "bounces@neutral.test", &text).await;
    assert_eq!(reply.code, 550, "{reply:?}");
}

/// SPEC 13: p=quarantine failures go to Junk where the local action delivers; a domain
/// that does not count DMARC (`dmarc_counts = false`) refuses even a DMARC pass.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quarantine_goes_to_junk_and_a_domain_may_not_count_dmarc() {
    let keys = keys().await;
    let dns = dns(&keys).await;
    let server = server(dns.addr(), SenderPolicy::ACCEPT).await;
    let reply = send(&server, "bob@quarantine.test", &message("bob@quarantine.test", "quarantined")).await;
    assert_eq!(reply.code, 250, "{reply:?}");
    assert_eq!(server.mailbox("user@local.test", Folder::Junk).await.len(), 1);
    assert!(server.mailbox("user@local.test", Folder::Inbox).await.is_empty());

    let strict = SenderPolicy { dmarc_counts: false, ..SenderPolicy::REJECT };
    server.store.set_domain_policy("local.test", strict).await.unwrap();
    let text = signed(&keys, &message("alice@sender.test", "strict")).await;
    let reply = send(&server, "alice@sender.test", &text).await;
    assert_eq!(reply.code, 550, "{reply:?}");
    server.store.set_domain_policy("local.test", SenderPolicy::REJECT).await.unwrap();
    assert_eq!(send(&server, "alice@sender.test", &text).await.code, 250);
}

/// pyspf's (RFC 7208, an independent implementation) result for each (ip, MAIL FROM,
/// HELO), asking the DNS server at `dns`.
async fn pyspf(dns: SocketAddr, cases: &[(&str, &str, &str)]) -> Vec<String> {
    let script = r#"
import sys, json, spf, dns.resolver
resolver = dns.resolver.Resolver(configure=False)
resolver.nameservers = [sys.argv[1]]
resolver.port = int(sys.argv[2])
dns.resolver.default_resolver = resolver
for ip, sender, helo in json.loads(sys.stdin.read()):
    print(spf.check2(i=ip, s=sender, h=helo, timeout=3)[0])
"#;
    let input = serde_json::to_vec(cases).unwrap();
    let (ip, port) = (dns.ip().to_string(), dns.port().to_string());
    python_with(script, &[&ip, &port], &input).await.lines().map(str::to_string).collect()
}

/// RFC 7208 2.6: the SPF results of MAIL FROM as the header shows them: pass, softfail,
/// neutral, permerror, none and fail, each the same as pyspf finds on the same records.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spf_results_reach_the_header() {
    let keys = keys().await;
    let dns = dns(&keys).await;
    let server = server(dns.addr(), SenderPolicy::ACCEPT).await;
    let cases = [
        ("a@sender.test", "pass"),
        ("a@softfail.test", "softfail"),
        ("a@neutral.test", "neutral"),
        ("a@broken.test", "permerror"),
        ("a@nothing.test", "none"),
    ];
    for (from, _) in &cases {
        assert_eq!(send(&server, from, &message(from, from)).await.code, 250);
    }
    // And SPF fail: sender.test authorizes only 127.0.0.1; from 127.0.0.2 it fails.
    let (mut c, _) = SmtpConn::connect_from(server.mx(), "127.0.0.2".parse().unwrap()).await;
    c.cmd("EHLO client.sender.test").await;
    let reply = c.send_message("a@sender.test", &["user@local.test"], &message("a@sender.test", "from .2")).await;
    // DMARC p=reject and nothing aligned passed, but the local action is accept, the one
    // that takes such mail (SPEC 13).
    assert_eq!(reply.code, 250, "{reply:?}");
    let mut checked: Vec<(&str, &str, &str)> =
        cases.iter().map(|(from, _)| ("127.0.0.1", *from, "client.sender.test")).collect();
    checked.push(("127.0.0.2", "a@sender.test", "client.sender.test"));
    let expected: Vec<&str> = cases.iter().map(|(_, result)| *result).chain(["fail"]).collect();
    let stored = server.mailbox("user@local.test", Folder::Inbox).await;
    assert_eq!(stored.len(), checked.len());
    let mut ours = Vec::new();
    for (message, (_, from, _)) in stored.iter().zip(&checked) {
        let results = parsed_results(message).await;
        let spf = result(&results, "spf");
        assert_eq!(spf[1].2["smtp.mailfrom"].as_str(), Some(*from), "{results:?}");
        ours.push(spf[1].1.clone());
    }
    assert_eq!(ours, expected);
    assert_eq!(pyspf(dns.addr(), &checked).await, expected, "pyspf disagrees");
    let results = parsed_results(stored.last().unwrap()).await;
    assert_eq!(result(&results, "iprev")[0].1, "fail", "{results:?}");
}

/// SPEC 2, 13: a resolver that does not answer gives temperror, and a refusing policy
/// answers 451 4.7.0 instead of 550, so the sender tries again later.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_resolver_gives_temperror_and_451() {
    // A UDP socket that reads nothing: every query times out.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let server = server(silent.local_addr().unwrap(), SenderPolicy::REJECT).await;
    let started = std::time::Instant::now();
    let reply = send(&server, "alice@sender.test", &message("alice@sender.test", "slow")).await;
    assert_eq!(reply.code, 451, "{reply:?}");
    assert!(reply.text().contains("4.7.0"), "{reply:?}");
    assert!(started.elapsed() < Duration::from_secs(30), "the check outlived its deadline");
    // Where the local action takes it, it is stored with spf=temperror, as pyspf finds too.
    server.store.set_domain_policy("local.test", SenderPolicy::ACCEPT).await.unwrap();
    assert_eq!(send(&server, "alice@sender.test", &message("alice@sender.test", "slow")).await.code, 250);
    let stored = server.mailbox("user@local.test", Folder::Inbox).await;
    let results = parsed_results(&stored[0]).await;
    assert_eq!(result(&results, "spf")[0].1, "temperror", "{results:?}");
    let checked = [("127.0.0.1", "alice@sender.test", "client.sender.test")];
    assert_eq!(pyspf(silent.local_addr().unwrap(), &checked).await, ["temperror"], "pyspf disagrees");
}

/// dkimpy's verdict on each of the first two signatures of `message`, with `keys`
/// published as `dkim list` and `domain dns` print them: "True True" when both verify.
async fn dkimpy_verdicts(keys: &[vouchmail_store::DkimKey], message: &[u8]) -> String {
    let records: serde_json::Map<String, serde_json::Value> = keys
        .iter()
        .map(|k| {
            let (name, value) = vouchmail_server::rules::dkim::txt_record(k);
            (format!("{name}."), serde_json::Value::String(value))
        })
        .collect();
    let script = format!(
        r#"
import sys, dkim
records = {records}
def dns(name, timeout=5):
    return records.get(name.decode(), "").encode()
d = dkim.DKIM(sys.stdin.buffer.read())
print(" ".join(str(d.verify(idx=i, dnsfunc=dns)) for i in range(2)))
"#,
        records = serde_json::Value::Object(records)
    );
    python(&script, message).await.trim().to_string()
}

/// alice@local.test, password "pencil", on `server`.
async fn add_alice(server: &TestServer) {
    let secrets = vouchmail_proto::sasl::Secrets::from_password("pencil", &[6; 32]).unwrap();
    let alice = vouchmail_store::NewAccount { address: "alice@local.test".into(), secrets, quota_bytes: 0 };
    server.store.add_account(alice).await.unwrap();
}

/// alice submits a message to `to` with swaks (AUTH PLAIN inside STARTTLS).
async fn swaks_as_alice(server: &TestServer, to: &str, subject: &str) {
    let mut swaks = std::process::Command::new(common::tool("swaks"));
    swaks.args(["-tls", "--server", &server.submission().to_string(), "--auth", "PLAIN"]);
    swaks.args(["--auth-user", "alice@local.test", "--auth-password", "pencil", "--from", "alice@local.test"]);
    let subject = format!("Subject: {subject}");
    swaks.args(["--to", to, "--helo", "swaks.test", "--header", &subject, "--body", "Hello, with a signature.\n"]);
    let out = common::run(swaks).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
}

/// Server C as the internet sees our mail: mx.other.test, whose other.test refuses
/// unauthenticated mail, with bob@other.test, checking SPEC 13 against a DNS that
/// publishes `keys` and local.test's DMARC p=reject. The DNS lives as long as the handle.
async fn checking_server(keys: &[vouchmail_store::DkimKey]) -> (TestDns, TestServer) {
    let mut zone = ZoneBuilder::default().txt("_dmarc.local.test", "v=DMARC1; p=reject");
    for key in keys {
        let (name, value) = vouchmail_server::rules::dkim::txt_record(key);
        zone = zone.txt(&name, &value);
    }
    let dns = zone.start().await;
    let c = TestServer::start_with(|c| {
        c.hostname = "mx.other.test".into();
        c.bootstrap.domain = "other.test".into();
        c.dns.nameservers = vec![dns.addr()];
        c.dmarc.verify = true;
        c.dmarc.timeout_secs = 3;
        c.dmarc.reports = std::env::var("REPORTS").map_or(true, |v| v != "0");
    })
    .await;
    c.store.set_domain_policy("other.test", SenderPolicy::REJECT).await.unwrap();
    let bob =
        vouchmail_store::NewAccount { address: "bob@other.test".into(), secrets: Default::default(), quota_bytes: 0 };
    c.store.add_account(bob).await.unwrap();
    (dns, c)
}

/// Makes local.test's DKIM keys (both algorithms) on `server`, as `vouchmail dkim new` does.
async fn local_keys(server: &TestServer) -> Vec<vouchmail_store::DkimKey> {
    use vouchmail_server::rules::dkim::{new_key, Algorithm};
    let store = server.store.as_ref();
    new_key(store, "local.test", Algorithm::Ed25519Sha256, Some("ed")).await.unwrap();
    new_key(store, "local.test", Algorithm::RsaSha256, Some("rsa")).await.unwrap();
    server.store.list_dkim_keys().await.unwrap()
}

/// SPEC 13: mail a local user submits (swaks, AUTH PLAIN inside STARTTLS) is signed for its
/// From domain with both keys, Ed25519 first; dkimpy verifies both signatures against the
/// published records; and another vouchmail, whose DNS publishes them with DMARC p=reject,
/// takes the message as `dmarc=pass` into a domain that refuses unauthenticated mail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_users_mail_is_signed_and_passes_dmarc_elsewhere() {
    let a = TestServer::start().await;
    add_alice(&a).await;
    let keys = local_keys(&a).await;
    swaks_as_alice(&a, "bob@other.test", "signed by us").await;
    let queue = a.store.list_queue().await.unwrap();
    let (_, data) = a.store.get_queued_message(&queue[0].queue_id).await.unwrap().unwrap();
    let text = String::from_utf8_lossy(&data).into_owned();
    let signatures: Vec<&str> = text.lines().filter(|l| l.starts_with("DKIM-Signature:")).collect();
    assert_eq!(signatures.len(), 2, "{text}");
    assert!(signatures[0].contains("a=ed25519-sha256") && signatures[1].contains("a=rsa-sha256"), "{text}");

    // dkimpy verifies each signature with the TXT records `dkim list`/`domain dns` print.
    assert_eq!(dkimpy_verdicts(&keys, &data).await, "True True", "{text}");

    // Another server checks it as the internet would: DMARC passes by DKIM alignment.
    let (_dns, c) = checking_server(&keys).await;
    let (mut conn, _) = SmtpConn::connect(c.mx()).await;
    conn.cmd("EHLO mx.local.test").await;
    let reply = conn.send_message("alice@local.test", &["bob@other.test"], &text).await;
    assert_eq!(reply.code, 250, "{reply:?}");
    let stored = c.mailbox("bob@other.test", Folder::Inbox).await;
    let results = parsed_results_of(&stored[0], "mx.other.test").await;
    assert!(result(&results, "dkim").iter().all(|d| d.1 == "pass"), "{results:?}");
    assert_eq!(result(&results, "dmarc")[0].1, "pass", "{results:?}");
}

/// SPEC 3 (issue 22 item 7): a user sends only as itself. A submission as alice with
/// `From: ceo@bank.test` is refused 550 5.7.1 naming the address; her own address, an
/// alias of hers and a `send-as` address are accepted and signed for the From domain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_sends_only_as_an_address_it_owns() {
    use base64::Engine;
    let server = TestServer::start_with(|c| c.auth.allow_plaintext_passwords = true).await;
    add_alice(&server).await;
    server.store.add_alias("sales@local.test", &["alice@local.test".to_string()]).await.unwrap();
    local_keys(&server).await;
    let (mut c, _) = SmtpConn::connect(server.submission()).await;
    c.cmd("EHLO alice.test").await;
    let token = base64::engine::general_purpose::STANDARD.encode("\0alice@local.test\0pencil");
    assert_eq!(c.cmd(&format!("AUTH PLAIN {token}")).await.code, 235);
    let reply = c.send_message("alice@local.test", &["bob@remote.test"], &message("ceo@bank.test", "forged")).await;
    assert_eq!(reply.code, 550, "{reply:?}");
    assert!(reply.text().contains("5.7.1") && reply.text().contains("ceo@bank.test"), "{reply:?}");
    let two = "From: alice@local.test, ceo@bank.test\r\nSubject: two\r\n\r\nx\r\n";
    assert_eq!(c.send_message("alice@local.test", &["bob@remote.test"], two).await.code, 550);
    for from in ["alice@local.test", "sales@local.test"] {
        let reply = c.send_message("alice@local.test", &["bob@remote.test"], &message(from, from)).await;
        assert_eq!(reply.code, 250, "{from}: {reply:?}");
    }
    let reply = c.send_message("alice@local.test", &["bob@remote.test"], &message("news@local.test", "news")).await;
    assert_eq!(reply.code, 550, "{reply:?}");
    server.store.set_send_as("alice@local.test", &["news@local.test".to_string()]).await.unwrap();
    let reply = c.send_message("alice@local.test", &["bob@remote.test"], &message("news@local.test", "news")).await;
    assert_eq!(reply.code, 250, "{reply:?}");
    // Each accepted message carries our signatures, d= the From domain (aligned).
    let queue = server.store.list_queue().await.unwrap();
    assert_eq!(queue.len(), 3);
    for entry in &queue {
        let (_, data) = server.store.get_queued_message(&entry.queue_id).await.unwrap().unwrap();
        let text = String::from_utf8_lossy(&data);
        assert_eq!(text.matches("DKIM-Signature:").count(), 2, "{text}");
        assert!(text.contains("d=local.test"), "{text}");
    }
}

/// SPEC 13: our own notices that go out are signed too: a success DSN (RFC 3461 NOTIFY=
/// SUCCESS) to a remote sender, From MAILER-DAEMON@mx.local.test, is signed by local.test
/// (relaxed alignment, RFC 7489 3.1.1), and dkimpy verifies it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notice_to_a_remote_sender_is_signed() {
    let server = TestServer::start().await;
    let keys = local_keys(&server).await;
    let (mut c, _) = SmtpConn::connect(server.mx()).await;
    c.cmd("EHLO sender.test").await;
    assert_eq!(c.cmd("MAIL FROM:<s@remote.test>").await.code, 250);
    assert_eq!(c.cmd("RCPT TO:<user@local.test> NOTIFY=SUCCESS").await.code, 250);
    assert_eq!(c.cmd("DATA").await.code, 354);
    c.send_raw(message("s@remote.test", "tell me").as_bytes()).await;
    c.send_raw(b".\r\n").await;
    assert_eq!(c.read_reply().await.unwrap().code, 250);
    let queue = server.store.list_queue().await.unwrap();
    assert_eq!(queue.len(), 1, "the success notice waits for delivery: {queue:?}");
    let (_, data) = server.store.get_queued_message(&queue[0].queue_id).await.unwrap().unwrap();
    let text = String::from_utf8_lossy(&data).into_owned();
    assert!(text.contains("MAILER-DAEMON@mx.local.test") && text.matches("DKIM-Signature:").count() == 2, "{text}");
    assert_eq!(dkimpy_verdicts(&keys, &data).await, "True True", "{text}");
}

/// The first queued message of `server`, as it would go out.
async fn first_queued(server: &TestServer) -> (String, String) {
    let queue = server.store.list_queue().await.unwrap();
    let entry = queue.first().expect("a queued message");
    let (_, data) = server.store.get_queued_message(&entry.queue_id).await.unwrap().unwrap();
    (entry.recipient.clone(), String::from_utf8(data).unwrap())
}

/// Issue 22 ("how it is checked"): a message from a local user on server A, forwarded by
/// an alias on server B to server C, passes DMARC at C: A's signature arrives intact, and
/// B adds its own for its domain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mail_forwarded_by_an_alias_still_passes_dmarc() {
    use vouchmail_server::rules::dkim::{new_key, Algorithm};
    let a = TestServer::start().await;
    add_alice(&a).await;
    let mut keys = local_keys(&a).await;
    let b = TestServer::start_with(|c| {
        c.hostname = "mx.fwd.test".into();
        c.bootstrap.domain = "fwd.test".into();
    })
    .await;
    b.store.add_alias("team@fwd.test", &["bob@other.test".to_string()]).await.unwrap();
    keys.push(new_key(b.store.as_ref(), "fwd.test", Algorithm::Ed25519Sha256, Some("fwd")).await.unwrap());
    let (_dns, c) = checking_server(&keys).await;

    // A: alice submits to the alias; the message waits in A's queue.
    swaks_as_alice(&a, "team@fwd.test", "via an alias").await;
    // A -> B, as A's delivery would; B's alias sends it on, signed for fwd.test as well.
    let (to, text) = first_queued(&a).await;
    assert_eq!(to, "team@fwd.test");
    let (mut conn, _) = SmtpConn::connect(b.mx()).await;
    conn.cmd("EHLO mx.local.test").await;
    assert_eq!(conn.send_message("alice@local.test", &[&to], &text).await.code, 250);
    let (to, text) = first_queued(&b).await;
    assert_eq!(to, "bob@other.test");
    assert!(text.contains("d=fwd.test") && text.contains("d=local.test"), "{text}");
    // B -> C: DMARC passes on A's aligned signature.
    let (mut conn, _) = SmtpConn::connect(c.mx()).await;
    conn.cmd("EHLO mx.fwd.test").await;
    let reply = conn.send_message("alice@local.test", &[&to], &text).await;
    assert_eq!(reply.code, 250, "{reply:?}");
    let stored = c.mailbox("bob@other.test", Folder::Inbox).await;
    let results = parsed_results_of(&stored[0], "mx.other.test").await;
    let dkim = result(&results, "dkim");
    assert_eq!(dkim.len(), 3, "{results:?}");
    assert!(dkim.iter().all(|d| d.1 == "pass"), "{results:?}");
    assert_eq!(result(&results, "dmarc")[0].1, "pass", "{results:?}");
}

/// RFC 7489 7.2, issue 22 item 5: a day of sender.test's passing and failing mail makes one
/// aggregate report. Its XML (gzipped, in a MIME part) is valid against Appendix C's schema
/// (lxml) and counts what happened; the message is DKIM-signed (dkimpy) and queued to the
/// `rua` destinations that may receive it (7.1), not to the one that did not agree.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_days_results_make_one_aggregate_report() {
    use vouchmail_server::rules::dmarc_report::{period_of, send_reports, Reporter};
    let keys = keys().await;
    let dns = dns(&keys).await;
    let server = server(dns.addr(), SenderPolicy::JUNK).await;
    let local = local_keys(&server).await;
    let text = signed(&keys, &message("alice@sender.test", "signed")).await;
    for _ in 0..2 {
        assert_eq!(send(&server, "alice@sender.test", &text).await.code, 250);
    }
    // From 127.0.0.2, unsigned: SPF fails, and p=reject refuses it.
    let (mut c, _) = SmtpConn::connect_from(server.mx(), "127.0.0.2".parse().unwrap()).await;
    c.cmd("EHLO client.sender.test").await;
    let reply = c.send_message("a@sender.test", &["user@local.test"], &message("a@sender.test", "forged")).await;
    assert_eq!(reply.code, 550, "{reply:?}");
    // The counts are written off the path of the reply.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let verifier = vouchmail_server::dmarc_verifier(&server.config).unwrap();
    let reporter = Reporter { hostname: server.config.hostname.clone() };
    let now = vouchmail_proto::time::unix_seconds(std::time::SystemTime::now());
    let queued = send_reports(server.store.as_ref(), &verifier, &reporter, period_of(now), now).await.unwrap();
    assert_eq!(queued.len(), 1, "{queued:?}");
    assert_eq!(queued[0].to, ["dmarc@sender.test", "agg@reports.test"]);
    let queue = server.store.list_queue().await.unwrap();
    let mut recipients: Vec<&str> = queue.iter().map(|e| e.recipient.as_str()).collect();
    recipients.sort();
    assert_eq!(recipients, ["agg@reports.test", "dmarc@sender.test"]);
    let (_, data) = server.store.get_queued_message(&queue[0].queue_id).await.unwrap().unwrap();
    assert_eq!(dkimpy_verdicts(&local, &data).await, "True True");
    let schema = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/rfc7489-appendix-c.xsd");
    let script = r#"
import sys, gzip, email, email.policy
from lxml import etree
message = email.message_from_bytes(sys.stdin.buffer.read(), policy=email.policy.default)
print(message["Subject"])
part = next(p for p in message.walk() if p.get_content_type() == "application/gzip")
print(part.get_filename())
document = etree.fromstring(gzip.decompress(part.get_payload(decode=True)))
etree.XMLSchema(etree.parse(sys.argv[1])).assertValid(document)
print(document.findtext("policy_published/domain"), document.findtext("policy_published/p"))
for r in document.iter("record"):
    e = r.find("row/policy_evaluated")
    print(r.findtext("row/source_ip"), r.findtext("row/count"), e.findtext("disposition"), e.findtext("dkim"),
          e.findtext("spf"), r.findtext("identifiers/header_from"), len(r.findall("auth_results/dkim")),
          ",".join(s.findtext("scope") + "=" + s.findtext("result") for s in r.findall("auth_results/spf")))
"#;
    let out = python_with(script, &[schema], &data).await;
    let lines: Vec<&str> = out.lines().collect();
    let id = queued[0].queue_id.to_ascii_lowercase();
    assert_eq!(lines[0], format!("Report Domain: sender.test Submitter: mx.local.test Report-ID: <{id}>"));
    assert!(lines[1].starts_with("mx.local.test!sender.test!") && lines[1].ends_with(".xml.gz"), "{out}");
    assert_eq!(lines[2], "sender.test reject");
    assert_eq!(
        &lines[3..],
        [
            "127.0.0.1 2 none pass pass sender.test 2 helo=pass,mfrom=pass",
            "127.0.0.2 1 reject fail fail sender.test 0 helo=fail,mfrom=fail",
        ],
        "{out}"
    );
    // Taken once: nothing is left to report.
    assert!(send_reports(server.store.as_ref(), &verifier, &reporter, period_of(now), now).await.unwrap().is_empty());
}

// ---------------------------------------------------------------------------------------
// Benchmark (bench/sender_auth.sh): what SPEC 13 costs. Ignored in the suite; run in a
// release build.

/// A message of about `size` octets from `from`: headers and lines of text.
fn sized_message(from: &str, to: &str, size: usize) -> String {
    let mut text = format!(
        "From: {from}\r\nTo: {to}\r\nSubject: load\r\nDate: Sun, 06 Dec 2026 12:00:00 +0000\r\n\
         Message-ID: <load@client.sender.test>\r\n\r\n"
    );
    while text.len() < size {
        text.push_str("The quick brown fox jumps over the lazy dog, again and again and again.\r\n");
    }
    text
}

/// `sessions` sessions at once, each sending `n` copies of `text` one transaction after
/// another (after AUTH PLAIN as `auth` when given); every reply must be 250.
async fn timed_load(
    addr: SocketAddr,
    auth: Option<&'static str>,
    from: &'static str,
    to: &'static str,
    text: std::sync::Arc<String>,
    n: usize,
    sessions: usize,
) -> Duration {
    let start = std::time::Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..sessions {
        let text = std::sync::Arc::clone(&text);
        tasks.push(tokio::spawn(async move {
            let (mut c, _) = SmtpConn::connect(addr).await;
            c.cmd("EHLO client.sender.test").await;
            if let Some(user) = auth {
                use base64::Engine;
                let token = base64::engine::general_purpose::STANDARD.encode(format!("\0{user}\0pencil"));
                assert_eq!(c.cmd(&format!("AUTH PLAIN {token}")).await.code, 235);
            }
            for _ in 0..n {
                let reply = c.send_message(from, &[to], &text).await;
                assert_eq!(reply.code, 250, "{reply:?}");
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    start.elapsed()
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// Issue 22's benchmark, both pairs interleaved REPEAT times, medians printed:
/// - MX acceptance of DKIM-signed (Ed25519 and RSA) 4 KiB messages from an SPF-authorized
///   host, with the checks of SPEC 13 on (iprev, SPF twice, both signatures, DMARC, the
///   aggregate report's count) and off, DNS answers cached; target: on at least 0.70 of off.
/// - Submission of 4 KiB messages by a local user to a remote address (queued for delivery),
///   with the domain's two keys signing (Ed25519 and RSA-2048) and without keys; target:
///   signing at least 0.80 of not signing.
///
/// The load runs in the same process as the servers, on the same cores, so the figures are
/// below what separate machines would show; the ratios are the result.
#[tokio::test(flavor = "multi_thread")]
#[ignore]
async fn bench_sender_authentication() {
    let n = env_number("N", 1000);
    let sessions = env_number("SESSIONS", 8);
    let repeat = env_number("REPEAT", 3);
    let size = env_number("MSG_LEN", 4096);
    let keys = keys().await;
    let dns = dns(&keys).await;
    let checking = server(dns.addr(), SenderPolicy::ACCEPT).await;
    let plain = TestServer::start_with(|c| c.dns.nameservers = vec![dns.addr()]).await;
    plain.store.set_domain_policy("local.test", SenderPolicy::ACCEPT).await.unwrap();
    let signed_text =
        std::sync::Arc::new(signed(&keys, &sized_message("alice@sender.test", "user@local.test", size)).await);
    let submitting = |with_keys: bool| async move {
        let server = TestServer::start_with(|c| c.auth.allow_plaintext_passwords = true).await;
        add_alice(&server).await;
        if with_keys {
            local_keys(&server).await;
        }
        server
    };
    let signing = submitting(true).await;
    let unsigned = submitting(false).await;
    let submission_text = std::sync::Arc::new(sized_message("alice@local.test", "bob@remote.test", size));
    let mx = |server: &TestServer, n| {
        timed_load(server.mx(), None, "alice@sender.test", "user@local.test", signed_text.clone(), n, sessions)
    };
    let submit = |server: &TestServer, n| {
        let text = submission_text.clone();
        timed_load(
            server.submission(),
            Some("alice@local.test"),
            "alice@local.test",
            "bob@remote.test",
            text,
            n,
            sessions,
        )
    };
    // Warm-up: connections, caches, the DNS answers.
    for server in [&checking, &plain] {
        mx(server, 20).await;
    }
    for server in [&signing, &unsigned] {
        submit(server, 20).await;
    }
    let (mut on, mut off, mut with, mut without) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let rate = |elapsed: Duration| (n * sessions) as f64 / elapsed.as_secs_f64();
    for round in 0..repeat {
        // The order alternates, so neither side always runs on a warmer machine.
        if round % 2 == 0 {
            on.push(rate(mx(&checking, n).await));
            off.push(rate(mx(&plain, n).await));
            with.push(rate(submit(&signing, n).await));
            without.push(rate(submit(&unsigned, n).await));
        } else {
            off.push(rate(mx(&plain, n).await));
            on.push(rate(mx(&checking, n).await));
            without.push(rate(submit(&unsigned, n).await));
            with.push(rate(submit(&signing, n).await));
        }
    }
    // Delivery checks: every message is in the mailbox or the queue, and says what it is.
    let total = 20 * sessions + repeat * n * sessions;
    for server in [&checking, &plain] {
        assert_eq!(server.store.list_mailbox("user@local.test", Some(Folder::Inbox)).await.unwrap().len(), total);
    }
    let inbox = checking.store.list_mailbox("user@local.test", Some(Folder::Inbox)).await.unwrap();
    let first = checking.store.get_message(inbox[0].message_id).await.unwrap().unwrap();
    assert_eq!(first.envelope.auth_results, "dmarc=pass header.from=sender.test");
    for server in [&signing, &unsigned] {
        assert_eq!(server.store.list_queue().await.unwrap().len(), total);
    }
    let (_, queued) = first_queued(&signing).await;
    assert_eq!(queued.matches("DKIM-Signature:").count(), 2);
    let (_, queued) = first_queued(&unsigned).await;
    assert_eq!(queued.matches("DKIM-Signature:").count(), 0);

    // What one signature costs here, one thread, the store's keys loaded once.
    let signer = vouchmail_server::auth::dkim_sign::DkimSigning::new(std::sync::Arc::clone(&signing.store));
    let text = submission_text.as_bytes();
    assert!(signer.sign("local.test", text).await.contains("a=rsa-sha256"));
    let signatures = 500;
    let started = std::time::Instant::now();
    for _ in 0..signatures {
        assert!(!signer.sign("local.test", text).await.is_empty());
    }
    let per_message = started.elapsed().as_secs_f64() * 1e6 / signatures as f64;

    let (on, off, with, without) = (median(on), median(off), median(with), median(without));
    let verdict = |ratio: f64, target: f64| if ratio >= target { "met" } else { "MISSED" };
    println!("BENCH {} rounds of {sessions} sessions x {n} messages of {size} octets, medians", repeat);
    println!("BENCH MX acceptance, SPEC 13 checks on:  {on:.0} msg/s");
    println!("BENCH MX acceptance, SPEC 13 checks off: {off:.0} msg/s");
    println!("BENCH ratio on/off {:.2} (target 0.70: {})", on / off, verdict(on / off, 0.70));
    println!("BENCH submission, DKIM-signed (Ed25519 + RSA-2048): {with:.0} msg/s");
    println!("BENCH submission, not signed:                       {without:.0} msg/s");
    println!("BENCH ratio signed/unsigned {:.2} (target 0.80: {})", with / without, verdict(with / without, 0.80));
    println!("BENCH DKIM signing alone (Ed25519 + RSA-2048, one thread): {per_message:.0} us per message");
}
