//! HELO and EHLO (RFC 5321 4.1.1.1) and the extensions we advertise.

use super::{Greeting, Service, Session};
use crate::smtp::reply::Reply;

impl<R> Session<R> {
    pub(super) fn handle_helo(&mut self, name: String, extended: bool) {
        // RFC 5321 4.1.4: HELO/EHLO resets any transaction in progress.
        self.transaction = None;
        self.greeting = Some(Greeting { name, extended });
        let mut text = self.config.hostname.clone();
        if extended {
            for extension in self.extensions() {
                text.push('\n');
                text.push_str(&extension);
            }
        }
        self.reply(Reply::plain(250, text));
    }

    /// The EHLO keywords, in the order Postfix lists them.
    fn extensions(&self) -> Vec<String> {
        let mut extensions = Vec::new();
        let odmr = self.config.service == Service::Odmr;
        if !odmr {
            extensions.push("PIPELINING".to_string()); // RFC 2920
            extensions.push(format!("SIZE {}", self.config.max_message_size)); // RFC 1870
            if self.config.etrn {
                extensions.push("ETRN".to_string()); // RFC 1985
            }
        }
        // RFC 3207: offered only while the connection is still in the clear.
        if self.config.starttls && self.tls.is_none() {
            extensions.push("STARTTLS".to_string());
        }
        // RFC 4954 3, and never after a successful AUTH (RFC 4954 4).
        let mechanisms = self.offered_mechanisms();
        let mut names: Vec<&str> = mechanisms.iter().map(|m| m.name()).collect();
        if self.config.service == Service::Messenger {
            // SPEC 8: RCRAM-MD5 and X-RCRAM-VERIFY among the AUTH mechanisms.
            names.extend([crate::messenger::rcram::MECHANISM, crate::messenger::rcram::VERIFY_MECHANISM]);
        }
        if !names.is_empty() && self.authenticated.is_none() && !self.verified_only {
            extensions.push(format!("AUTH {}", names.join(" ")));
        }
        // RFC 2034: every listener, ODMR included, gives RFC 3463 codes in its replies.
        extensions.push("ENHANCEDSTATUSCODES".to_string());
        if odmr {
            // RFC 2645 5.1.1: the EHLO response MUST include AUTH and ATRN.
            extensions.push("ATRN".to_string());
            return extensions;
        }
        extensions.extend([
            "8BITMIME".to_string(), // RFC 6152
            "DSN".to_string(),      // RFC 3461
            "SMTPUTF8".to_string(), // RFC 6531
            "CHUNKING".to_string(), // RFC 3030
        ]);
        if self.config.service == Service::Messenger {
            // SPEC 8: the Messenger verbs this server answers.
            extensions.extend(["CERT", "PUBCERT", "NOTIFY", "RECEIPT", "TRACK", "ENTITIES", "BOOK"].map(String::from));
        }
        extensions
    }
}
