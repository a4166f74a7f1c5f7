//! Background jobs: outbound delivery and its scheduler, held mail for ODMR customers
//! (RFC 2645) and its expiry, the ODMR customer's scheduled fetch, the NOTIFY outbox, the
//! Entity Index pulls, the AuthKey generator and the daily DMARC aggregate reports.

pub mod dmarc_reports;
pub mod entity_pulls;
pub mod held;
pub mod keygen;
pub mod notify_outbox;
pub mod odmr_fetch;
pub mod outbound;
