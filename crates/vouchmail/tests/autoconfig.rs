//! Client autoconfiguration on the admin listener (issue 24 item 6): Thunderbird's
//! autoconfig XML and Microsoft's autodiscover answer, each parsed with Python's XML parser
//! (xml.etree) and read the way the clients read them: Thunderbird's clientConfig 1.1
//! (incomingServer imap and pop3, outgoingServer smtp, hostname, port, socketType,
//! authentication, username) and Outlook's response schema 2006a (a Protocol per way in).

mod common;

use std::process::Stdio;

use common::http::{get, request, HttpResponse};
use common::TestServer;
use serde_json::Value;

/// What Thunderbird reads of a clientConfig document, as JSON: the provider's domains and
/// each server's fields, in document order.
const READ_THUNDERBIRD: &str = r#"
import json, sys
import xml.etree.ElementTree as ET
root = ET.fromstring(sys.stdin.buffer.read())
assert root.tag == "clientConfig" and root.get("version") == "1.1", root.tag
provider = root.find("emailProvider")
servers = []
for element in provider:
    if element.tag in ("incomingServer", "outgoingServer"):
        server = {"element": element.tag, "type": element.get("type")}
        for field in ("hostname", "port", "socketType", "authentication", "username"):
            server[field] = element.findtext(field)
        servers.append(server)
print(json.dumps({
    "id": provider.get("id"),
    "domains": [d.text for d in provider.findall("domain")],
    "servers": servers,
}))
"#;

/// What Outlook reads of an autodiscover response, as JSON.
const READ_AUTODISCOVER: &str = r#"
import json, sys
import xml.etree.ElementTree as ET
root = ET.fromstring(sys.stdin.buffer.read())
R = "{http://schemas.microsoft.com/exchange/autodiscover/responseschema/2006}"
A = "{http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a}"
assert root.tag == R + "Autodiscover", root.tag
account = root.find(A + "Response/" + A + "Account")
protocols = []
for p in account.findall(A + "Protocol"):
    protocols.append({f: p.findtext(A + f) for f in ("Type", "Server", "Port", "LoginName", "SSL", "Encryption")})
print(json.dumps({
    "type": account.findtext(A + "AccountType"),
    "action": account.findtext(A + "Action"),
    "protocols": protocols,
}))
"#;

async fn python(script: &str, input: &[u8]) -> Value {
    use std::io::Write;
    let mut child = std::process::Command::new("/usr/bin/python3")
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3");
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_vec();
    let output = tokio::task::spawn_blocking(move || {
        stdin.write_all(&input).unwrap();
        drop(stdin);
        child.wait_with_output().unwrap()
    })
    .await
    .unwrap();
    assert!(output.status.success(), "python: {}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_slice(&output.stdout).unwrap()
}

fn is_xml(response: &HttpResponse) {
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(response.header("content-type"), Some("application/xml; charset=utf-8"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thunderbird_gets_every_incoming_and_outgoing_server_as_bound() {
    let server = TestServer::start().await;
    let port = |addr: std::net::SocketAddr| addr.port().to_string();
    for path in ["/.well-known/autoconfig/mail/config-v1.1.xml", "/mail/config-v1.1.xml"] {
        let response = get(server.admin(), &format!("{path}?emailaddress=user%40local.test"), None).await;
        is_xml(&response);
        let config = python(READ_THUNDERBIRD, &response.body).await;
        assert_eq!(config["id"], "local.test");
        assert_eq!(config["domains"], serde_json::json!(["local.test"]));
        let expected = [
            ("incomingServer", "imap", port(server.imaps()), "SSL"),
            ("incomingServer", "imap", port(server.imap()), "STARTTLS"),
            ("incomingServer", "pop3", port(server.pop3s()), "SSL"),
            ("incomingServer", "pop3", port(server.pop3()), "STARTTLS"),
            ("outgoingServer", "smtp", port(server.submissions()), "SSL"),
            ("outgoingServer", "smtp", port(server.submission()), "STARTTLS"),
        ];
        let servers = config["servers"].as_array().unwrap();
        assert_eq!(servers.len(), expected.len(), "{config:#}");
        for (server, (element, kind, port, socket)) in servers.iter().zip(expected) {
            let want = serde_json::json!({
                "element": element,
                "type": kind,
                "hostname": "mx.local.test",
                "port": port,
                "socketType": socket,
                "authentication": "password-cleartext",
                "username": "%EMAILADDRESS%",
            });
            assert_eq!(server, &want);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_good_addresses_of_local_domains_get_an_answer() {
    let server = TestServer::start().await;
    let path = "/.well-known/autoconfig/mail/config-v1.1.xml";
    let status = |query: &'static str| {
        let admin = server.admin();
        async move { get(admin, &format!("{path}{query}"), None).await.status }
    };
    assert_eq!(status("").await, 400, "no address");
    assert_eq!(status("?emailaddress=").await, 400, "an empty address");
    assert_eq!(status("?emailaddress=not-an-address").await, 400);
    assert_eq!(status("?emailaddress=user%40elsewhere.test").await, 404, "not our domain");
    // The domain decides, whatever the case; the account need not exist.
    assert_eq!(status("?emailaddress=someone%40LOCAL.test").await, 200);
    let autodiscover = |body: &'static str| {
        let admin = server.admin();
        async move { request(admin, "POST", "/autodiscover/autodiscover.xml", None, Some(body)).await.status }
    };
    assert_eq!(autodiscover("").await, 400);
    assert_eq!(autodiscover("<Autodiscover><Request></Request></Autodiscover>").await, 400);
    assert_eq!(autodiscover("<Request><EMailAddress>x@elsewhere.test</EMailAddress></Request>").await, 404);
    // Client autoconfiguration is for anyone: no token is asked.
    assert_eq!(get(server.admin(), "/mail/config-v1.1.xml?emailaddress=user%40local.test", None).await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outlook_autodiscover_names_the_ports_and_escapes_the_address() {
    let server = TestServer::start().await;
    // `&` is an atext character (RFC 5322 3.2.3): it must come back escaped, and parse.
    let body = "<?xml version=\"1.0\" encoding=\"utf-8\"?>\r\n\
        <Autodiscover xmlns=\"http://schemas.microsoft.com/exchange/autodiscover/outlook/requestschema/2006\">\
        <Request><EMailAddress>a&amp;b@local.test</EMailAddress>\
        <AcceptableResponseSchema>http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a\
        </AcceptableResponseSchema></Request></Autodiscover>";
    for path in ["/autodiscover/autodiscover.xml", "/Autodiscover/Autodiscover.xml"] {
        let response = request(server.admin(), "POST", path, None, Some(body)).await;
        is_xml(&response);
        assert!(response.text().contains("a&amp;b@local.test"), "{}", response.text());
        let answer = python(READ_AUTODISCOVER, &response.body).await;
        assert_eq!((answer["type"].as_str(), answer["action"].as_str()), (Some("email"), Some("settings")));
        let port = |addr: std::net::SocketAddr| addr.port().to_string();
        let expected = [
            ("IMAP", port(server.imaps()), "SSL"),
            ("IMAP", port(server.imap()), "TLS"),
            ("POP3", port(server.pop3s()), "SSL"),
            ("POP3", port(server.pop3()), "TLS"),
            ("SMTP", port(server.submissions()), "SSL"),
            ("SMTP", port(server.submission()), "TLS"),
        ];
        let protocols = answer["protocols"].as_array().unwrap();
        assert_eq!(protocols.len(), expected.len(), "{answer:#}");
        for (protocol, (kind, port, encryption)) in protocols.iter().zip(expected) {
            let want = serde_json::json!({
                "Type": kind,
                "Server": "mx.local.test",
                "Port": port,
                "LoginName": "a&b@local.test",
                "SSL": "on",
                "Encryption": encryption,
            });
            assert_eq!(protocol, &want);
        }
    }
}
