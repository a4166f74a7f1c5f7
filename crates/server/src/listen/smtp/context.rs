//! What every session of one SMTP listener shares (MX, submission, submissions, ODMR,
//! Messenger), and what one connection holds while its session runs.

use std::net::SocketAddr;
use std::sync::Arc;

use vouchmail_proto::smtp::address::Address;
use vouchmail_proto::smtp::session::{Session, SessionConfig};
use vouchmail_store::Store;

use super::spool::{MemoryBudget, MemoryCharge, Spool};
use crate::auth::authkey::AuthKeys;
use crate::auth::dkim_sign::DkimSigning;
use crate::auth::guard::AuthGuard;
use crate::auth::limits::AuthLimiter;
use crate::auth::sending_domain::DomainVerifier;
use crate::federation::rcram::RcramLink;
use crate::federation::Messenger;
use crate::jobs::held::Odmr;
use crate::listen::limits::ConnectionLimiter;
use crate::net::tls::{MaybeTls, Tls};
use crate::rules::dmarc_report::DmarcReports;
use crate::rules::recipient::Resolved;
use crate::support::metrics::ListenerMetrics;

/// What every session of one listener shares.
pub struct SmtpContext {
    pub session_config: Arc<SessionConfig>,
    pub store: Arc<dyn Store>,
    pub limiter: Arc<ConnectionLimiter>,
    pub auth_limiter: Arc<AuthLimiter>,
    /// Where `RCPT TO:<postmaster>` goes.
    pub postmaster: Address,
    pub tls: Option<Tls>,
    /// Port 465: TLS from the first byte (RFC 8314).
    pub implicit_tls: bool,
    /// ATRN and ETRN decisions and the reversed session.
    pub odmr: Arc<Odmr>,
    /// Where large message bodies are spooled while they arrive (`<data_dir>/spool`).
    pub spool_dir: std::path::PathBuf,
    /// In-flight message memory, shared by every SMTP listener (`smtp.max_inflight_bytes`).
    pub memory: Arc<MemoryBudget>,
    /// AuthKeys: stamping on the sender side, verification on the recipient side.
    pub authkeys: Arc<AuthKeys>,
    /// The sending domain's SPF, DKIM, DMARC and iprev (SPEC 13): on the MX when
    /// `dmarc.verify` is on.
    pub domain_verifier: Option<Arc<DomainVerifier>>,
    /// Counts MX results for the DMARC aggregate reports: when `dmarc.reports` is on.
    pub dmarc_reports: Option<Arc<DmarcReports>>,
    /// DKIM signing of what our users send and our aliases forward (SPEC 13).
    pub dkim: Arc<DkimSigning>,
    /// The Messenger verbs' answers (SPEC 8); None where the listener is not a Messenger one.
    pub messenger: Option<Arc<Messenger>>,
    /// This listener's counters in the server's registry (SPEC 12).
    pub metrics: ListenerMetrics,
}

/// The session state machine with the recipients' resolutions it carries.
pub type SmtpSession = Session<Resolved>;

/// One connection's driver: what the stages (a file each) act on besides the session.
pub struct Connection<'a> {
    pub stream: MaybeTls,
    pub peer: SocketAddr,
    pub context: &'a SmtpContext,
    /// AUTH failure accounting of this connection (SPEC 3).
    pub auth: AuthGuard,
    /// The large body being received, on disk.
    pub spool: Spool,
    /// What this session holds of the shared message memory (issue 14).
    pub memory: MemoryCharge,
    /// The RCRAM exchange relayed to a home server (SPEC 8.2), if any; boxed on first use
    /// (only Messenger sessions have one), as it is larger than the rest of a session.
    pub rcram_link: Option<Box<RcramLink>>,
    /// ATRN granted (RFC 2645): the account and its domains, for the role reversal.
    pub reversed: Option<(String, Vec<String>)>,
}

impl<'a> Connection<'a> {
    pub fn new(stream: MaybeTls, peer: SocketAddr, context: &'a SmtpContext) -> Connection<'a> {
        Connection {
            stream,
            peer,
            context,
            auth: AuthGuard::default(),
            spool: Spool::new(&context.spool_dir),
            memory: MemoryCharge::new(&context.memory),
            rcram_link: None,
            reversed: None,
        }
    }

    pub fn store(&self) -> &'a dyn Store {
        self.context.store.as_ref()
    }
}

crate::listen::session_shell!(SmtpSession, vouchmail_proto::smtp::session::Event<Resolved>);
