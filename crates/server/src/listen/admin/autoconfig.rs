//! Client autoconfiguration (issue 24 item 6): Thunderbird's autoconfig XML
//! (`/.well-known/autoconfig/mail/config-v1.1.xml` and `/mail/config-v1.1.xml`, the
//! clientConfig 1.1 format of the Mozilla wiki "Thunderbird:Autoconfiguration:ConfigFileFormat")
//! and Microsoft's POX autodiscover (`POST /autodiscover/autodiscover.xml`, [MS-OXDSCLI]
//! with the Outlook response schema 2006a), with this server's IMAP, POP3 and submission
//! settings for the asked address.
//!
//! Only an address of one of our domains gets an answer (404 otherwise), so the answers
//! tell a stranger nothing about other domains; a missing or malformed address is a 400.
//! The ports are the ones the listeners are bound to (SPEC 12: what is configured, never a
//! guess at the standard ports), and the server name is `hostname`, the name the TLS
//! certificate is for. Everything put into the XML is escaped.

use std::fmt::Write;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::Deserialize;
use vouchmail_proto::smtp::address::Address;

use super::state::{AdminState, ClientPorts};

/// Each offered way in, implicit TLS before STARTTLS (RFC 8314 3: preferred).
fn servers(ports: &ClientPorts) -> Vec<ClientServer> {
    let mut servers = Vec::new();
    let mut add = |protocol, port: Option<u16>, tls| {
        if let Some(port) = port {
            servers.push(ClientServer { protocol, port, tls });
        }
    };
    add(Protocol::Imap, ports.imaps, Security::Implicit);
    add(Protocol::Imap, ports.imap, Security::StartTls);
    add(Protocol::Pop3, ports.pop3s, Security::Implicit);
    add(Protocol::Pop3, ports.pop3, Security::StartTls);
    add(Protocol::Smtp, ports.submissions, Security::Implicit);
    add(Protocol::Smtp, ports.submission, Security::StartTls);
    servers
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Protocol {
    Imap,
    Pop3,
    Smtp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Security {
    Implicit,
    StartTls,
}

#[derive(Debug, Clone, Copy)]
struct ClientServer {
    protocol: Protocol,
    port: u16,
    tls: Security,
}

pub fn routes() -> Router<Arc<AdminState>> {
    Router::new()
        .route("/.well-known/autoconfig/mail/config-v1.1.xml", get(thunderbird))
        .route("/mail/config-v1.1.xml", get(thunderbird))
        // Outlook asks with either case.
        .route("/autodiscover/autodiscover.xml", post(autodiscover))
        .route("/Autodiscover/Autodiscover.xml", post(autodiscover))
}

#[derive(Debug, Deserialize)]
pub struct AutoconfigQuery {
    emailaddress: Option<String>,
}

/// Thunderbird: `?emailaddress=user@domain`.
async fn thunderbird(State(state): State<Arc<AdminState>>, Query(query): Query<AutoconfigQuery>) -> Response {
    let address = match local_address(&state, query.emailaddress.as_deref()).await {
        Ok(address) => address,
        Err(response) => return response,
    };
    xml(thunderbird_xml(&state.hostname, address.domain(), &state.client_ports))
}

/// Outlook's POX request: the address is the text of its `EMailAddress` element.
async fn autodiscover(State(state): State<Arc<AdminState>>, body: String) -> Response {
    let asked = element_text(&body, "EMailAddress");
    let address = match local_address(&state, asked.as_deref()).await {
        Ok(address) => address,
        Err(response) => return response,
    };
    xml(autodiscover_xml(&state.hostname, &address.to_string(), &state.client_ports))
}

/// The asked address, when it is one of one of our domains; else the answer to give.
async fn local_address(state: &AdminState, asked: Option<&str>) -> Result<Address, Response> {
    let Some(asked) = asked.map(str::trim).filter(|a| !a.is_empty()) else {
        return Err(plain(StatusCode::BAD_REQUEST, "an email address is needed (emailaddress=user@domain)"));
    };
    let Ok(address) = Address::parse(asked) else {
        return Err(plain(StatusCode::BAD_REQUEST, "not an email address"));
    };
    match state.store.get_domain(&address.domain().to_lowercase()).await {
        Ok(Some(_)) => Ok(address),
        Ok(None) => Err(plain(StatusCode::NOT_FOUND, "not a domain of this server")),
        Err(e) => {
            tracing::error!(error = %e, "autoconfig: cannot read the domain");
            Err(plain(StatusCode::SERVICE_UNAVAILABLE, "the store is unavailable"))
        }
    }
}

fn plain(status: StatusCode, text: &'static str) -> Response {
    (status, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], text).into_response()
}

fn xml(body: String) -> Response {
    ([(header::CONTENT_TYPE, "application/xml; charset=utf-8")], body).into_response()
}

/// The clientConfig 1.1 document: one incomingServer per IMAP and POP3 way in, one
/// outgoingServer per submission way in; the user name is the whole address
/// (`%EMAILADDRESS%`, which Thunderbird fills in), the password sent inside TLS.
pub fn thunderbird_xml(hostname: &str, domain: &str, ports: &ClientPorts) -> String {
    let (hostname, domain) = (escape(hostname), escape(&domain.to_lowercase()));
    let mut out = String::new();
    out.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<clientConfig version=\"1.1\">\n");
    let _ = writeln!(out, "  <emailProvider id=\"{domain}\">");
    let _ = writeln!(out, "    <domain>{domain}</domain>");
    let _ = writeln!(out, "    <displayName>{domain}</displayName>");
    let _ = writeln!(out, "    <displayShortName>{domain}</displayShortName>");
    for server in servers(ports) {
        let (element, kind) = match server.protocol {
            Protocol::Imap => ("incomingServer", "imap"),
            Protocol::Pop3 => ("incomingServer", "pop3"),
            Protocol::Smtp => ("outgoingServer", "smtp"),
        };
        let socket = match server.tls {
            Security::Implicit => "SSL",
            Security::StartTls => "STARTTLS",
        };
        let _ = writeln!(out, "    <{element} type=\"{kind}\">");
        let _ = writeln!(out, "      <hostname>{hostname}</hostname>");
        let _ = writeln!(out, "      <port>{}</port>", server.port);
        let _ = writeln!(out, "      <socketType>{socket}</socketType>");
        out.push_str("      <authentication>password-cleartext</authentication>\n");
        out.push_str("      <username>%EMAILADDRESS%</username>\n");
        let _ = writeln!(out, "    </{element}>");
    }
    out.push_str("  </emailProvider>\n</clientConfig>\n");
    out
}

/// The Outlook response (schema 2006a): an `email` account with a Protocol per way in,
/// `Encryption` SSL for implicit TLS and TLS for STARTTLS.
pub fn autodiscover_xml(hostname: &str, address: &str, ports: &ClientPorts) -> String {
    let (hostname, address) = (escape(hostname), escape(address));
    let mut out = String::new();
    out.push_str("<?xml version=\"1.0\" encoding=\"utf-8\"?>\n");
    out.push_str("<Autodiscover xmlns=\"http://schemas.microsoft.com/exchange/autodiscover/responseschema/2006\">\n");
    out.push_str(
        "  <Response xmlns=\"http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a\">\n",
    );
    let _ = writeln!(out, "    <User>\n      <DisplayName>{address}</DisplayName>\n    </User>");
    out.push_str("    <Account>\n      <AccountType>email</AccountType>\n      <Action>settings</Action>\n");
    for server in servers(ports) {
        let kind = match server.protocol {
            Protocol::Imap => "IMAP",
            Protocol::Pop3 => "POP3",
            Protocol::Smtp => "SMTP",
        };
        let (ssl, encryption) = match server.tls {
            Security::Implicit => ("on", "SSL"),
            Security::StartTls => ("on", "TLS"),
        };
        out.push_str("      <Protocol>\n");
        let _ = writeln!(out, "        <Type>{kind}</Type>");
        let _ = writeln!(out, "        <Server>{hostname}</Server>");
        let _ = writeln!(out, "        <Port>{}</Port>", server.port);
        out.push_str("        <DomainRequired>off</DomainRequired>\n");
        let _ = writeln!(out, "        <LoginName>{address}</LoginName>");
        out.push_str("        <SPA>off</SPA>\n");
        let _ = writeln!(out, "        <SSL>{ssl}</SSL>");
        let _ = writeln!(out, "        <Encryption>{encryption}</Encryption>");
        out.push_str("        <AuthRequired>on</AuthRequired>\n");
        if server.protocol == Protocol::Smtp {
            out.push_str("        <UsePOPAuth>off</UsePOPAuth>\n        <SMTPLast>off</SMTPLast>\n");
        }
        out.push_str("      </Protocol>\n");
    }
    out.push_str("    </Account>\n  </Response>\n</Autodiscover>\n");
    out
}

/// The text of the first element named `local` (any namespace prefix), its entities
/// decoded. Enough for the one-field POX request; None when it is not there.
fn element_text(document: &str, local: &str) -> Option<String> {
    let mut rest = document;
    while let Some(at) = rest.find('<') {
        rest = &rest[at + 1..];
        let end = rest.find('>')?;
        let tag = &rest[..end];
        let name = tag.split(|c: char| c.is_whitespace() || c == '/').next().unwrap_or_default();
        let name = name.rsplit(':').next().unwrap_or_default();
        if name == local && !tag.starts_with('/') && !tag.ends_with('/') {
            let content = &rest[end + 1..];
            let close = content.find('<')?;
            return Some(unescape(&content[..close]));
        }
        rest = &rest[end + 1..];
    }
    None
}

/// XML 1.0 2.4: the five predefined entities decoded (character references are not
/// expected in an address and are left as they are, which makes it invalid).
fn unescape(text: &str) -> String {
    text.replace("&lt;", "<").replace("&gt;", ">").replace("&quot;", "\"").replace("&apos;", "'").replace("&amp;", "&")
}

/// Text for XML character data and attribute values (XML 1.0 2.4, 3.3.3).
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // Not allowed in XML 1.0 at all (2.2): dropped.
            c if c.is_control() && !matches!(c, '\t' | '\n' | '\r') => {}
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ports() -> ClientPorts {
        ClientPorts {
            imaps: Some(993),
            imap: Some(143),
            pop3s: None,
            pop3: Some(110),
            submissions: None,
            submission: Some(587),
        }
    }

    #[test]
    fn thunderbird_lists_each_listener_with_its_security() {
        let xml = thunderbird_xml("mail.example.test", "Example.TEST", &ports());
        assert!(xml.contains("<emailProvider id=\"example.test\">"), "{xml}");
        assert!(xml.contains("<incomingServer type=\"imap\">\n      <hostname>mail.example.test</hostname>\n      <port>993</port>\n      <socketType>SSL</socketType>"), "{xml}");
        assert!(xml.contains("<port>110</port>\n      <socketType>STARTTLS</socketType>"), "{xml}");
        assert!(!xml.contains("995"), "pop3s is off: {xml}");
        assert_eq!(xml.matches("<outgoingServer type=\"smtp\">").count(), 1);
    }

    #[test]
    fn everything_interpolated_is_escaped() {
        let xml = autodiscover_xml("a<b>&\"c'", "x&y@example.test", &ports());
        assert!(xml.contains("<Server>a&lt;b&gt;&amp;&quot;c&apos;</Server>"), "{xml}");
        assert!(xml.contains("<LoginName>x&amp;y@example.test</LoginName>"), "{xml}");
    }

    #[test]
    fn the_address_is_read_from_the_pox_request() {
        let request = "<?xml version=\"1.0\"?><a:Autodiscover xmlns:a=\"x\"><a:Request>\
                       <a:EMailAddress> user@example.test </a:EMailAddress></a:Request></a:Autodiscover>";
        assert_eq!(element_text(request, "EMailAddress").as_deref(), Some(" user@example.test "));
        assert_eq!(element_text("<EMailAddress>a&amp;b@c</EMailAddress>", "EMailAddress").as_deref(), Some("a&b@c"));
        assert_eq!(element_text("<Request><EMailAddress/></Request>", "EMailAddress"), None);
        assert_eq!(element_text("<Request>", "EMailAddress"), None);
        assert_eq!(element_text("not xml at all", "EMailAddress"), None);
    }
}
