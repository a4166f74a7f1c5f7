//! Background jobs: outbound delivery and its scheduler, held mail for ODMR customers
//! (RFC 2645) and its expiry, and the ODMR customer's scheduled fetch.

pub mod held;
pub mod keygen;
pub mod notify_outbox;
pub mod odmr_fetch;
pub mod outbound;
