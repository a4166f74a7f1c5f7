//! Sender authentication: the AUTH failure limits (SPEC 3), AuthKeys (SPEC 7.4, 7.5), the
//! stamping of our users' mail and the check of another domain's, and the sending
//! domain's SPF, DKIM, DMARC and iprev (SPEC 13).

pub mod authkey;
pub mod dkim_sign;
pub mod guard;
pub mod limits;
pub mod sending_domain;
