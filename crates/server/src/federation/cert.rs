//! CERT (SPEC 8.1): a local mailbox is answered from the store; a remote one is relayed to
//! its domain's home server and that reply returned unchanged; a published ID is looked up
//! in the local directory, then in the Entity Index, and handled as the mailbox it names.
//! PUBCERT stores a checked certificate for the authenticated user.

use vouchmail_proto::messenger::bindings::first_learnt;
use vouchmail_proto::messenger::{replies, CertTarget};
use vouchmail_proto::smtp::address::Address;
use vouchmail_proto::smtp::reply::Reply;
use vouchmail_proto::smtp::session::MessengerAnswer;
use vouchmail_store::{StoreError, StoredCertificate};

use super::{now, x509, Messenger};
use crate::net::federation::SMALL_REPLY;
use crate::rules::recipient::store_reply;
use crate::support::error::ErrorKind;

fn local_error() -> Reply {
    Reply::local_error("Local error in processing, try again later")
}

fn store_failed(what: &str, e: &StoreError) -> MessengerAnswer {
    tracing::error!(error = %e, "CERT: cannot read {what}");
    MessengerAnswer::Reply(store_reply(e))
}

impl Messenger {
    pub(super) async fn cert(&self, target: &CertTarget, authenticated: Option<&str>) -> MessengerAnswer {
        let address = match target {
            CertTarget::Address(address) => address.clone(),
            CertTarget::PublishedId(id) => match self.store.directory_mailbox_for_id(id.as_str()).await {
                Ok(Some(mailbox)) => match Address::parse(&mailbox) {
                    Ok(address) => address,
                    Err(e) => {
                        tracing::error!(%mailbox, error = %e, "CERT: a directory entry holds a bad address");
                        return MessengerAnswer::Reply(local_error());
                    }
                },
                Ok(None) => {
                    // SPEC 8.1: the Entity Index is a remote lookup.
                    if authenticated.is_none() {
                        return MessengerAnswer::Reply(replies::remote_lookup_needs_auth());
                    }
                    // SPEC 8.4: the first mailbox it was learnt for, whatever came later.
                    match self.store.learnt_entities_for_id(id.as_str()).await {
                        Ok(entries) => match first_learnt(&entries).and_then(|e| Address::parse(&e.mailbox).ok()) {
                            Some(address) => address,
                            None => return MessengerAnswer::Reply(replies::cert_unknown(id.as_str())),
                        },
                        Err(e) => return store_failed("the Entity Index", &e),
                    }
                }
                Err(e) => return store_failed("the directory", &e),
            },
        };
        match self.store.get_domain(address.domain()).await {
            Ok(Some(_)) => self.local_cert(&address).await,
            Ok(None) if authenticated.is_none() => MessengerAnswer::Reply(replies::remote_lookup_needs_auth()),
            Ok(None) => self.relay_cert(&address).await,
            Err(e) => store_failed("the domain", &e),
        }
    }

    /// A local mailbox's certificate from the store, when it is current.
    async fn local_cert(&self, address: &Address) -> MessengerAnswer {
        let text = address.to_string().to_lowercase();
        match self.store.get_account(&text).await {
            Ok(Some(_)) => {}
            Ok(None) => return MessengerAnswer::Reply(replies::cert_unknown(&text)),
            Err(e) => return store_failed("the account", &e),
        }
        match self.store.get_certificate(&text).await {
            Ok(Some(cert)) if (cert.not_before..=cert.not_after).contains(&now()) => {
                MessengerAnswer::Reply(replies::cert_found(&text, &cert.der))
            }
            // An expired certificate is as good as none: nobody should encrypt to it.
            Ok(_) => MessengerAnswer::Reply(replies::cert_none(&text)),
            Err(e) => store_failed("the certificate", &e),
        }
    }

    /// SPEC 8.1: connect to the mailbox domain's home server, send `CERT <address>`, and
    /// return that reply unchanged.
    async fn relay_cert(&self, address: &Address) -> MessengerAnswer {
        let domain = address.domain().to_string();
        let line = format!("CERT {address}");
        match self.client.call(&domain, &line, SMALL_REPLY).await {
            Ok((reply, ip)) => {
                self.note_peer(&domain).await;
                tracing::debug!(%address, home = %ip, code = reply.code, "CERT relayed");
                MessengerAnswer::Relayed { code: reply.code, wire: reply.wire }
            }
            Err(e) => {
                let level_unreachable = matches!(e.kind(), ErrorKind::Network | ErrorKind::Dns | ErrorKind::Tls);
                tracing::warn!(%address, error = %e, unreachable = level_unreachable, "CERT relay failed");
                MessengerAnswer::Reply(replies::home_unreachable(&domain))
            }
        }
    }

    /// PUBCERT (SPEC 8.1) by the authenticated local user `user`.
    pub(super) async fn pubcert(&self, user: &str, pem: &str) -> Reply {
        let user = user.to_lowercase();
        let checked = match x509::check_pem_for(pem, &user, now()) {
            Ok(checked) => checked,
            Err(reason) => return replies::pubcert_refused(reason.message()),
        };
        let cert = StoredCertificate {
            address: user.clone(),
            der: checked.der,
            not_before: checked.not_before,
            not_after: checked.not_after,
            fingerprint: checked.fingerprint,
            stored_at: now(),
        };
        match self.store.put_certificate(cert).await {
            Ok(()) => replies::pubcert_stored(&user),
            Err(StoreError::NotFound(_)) => replies::pubcert_needs_local_auth(),
            Err(e) => {
                tracing::error!(error = %e, %user, "PUBCERT: cannot store the certificate");
                store_reply(&e)
            }
        }
    }
}
