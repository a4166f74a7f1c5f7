//! Sender authentication: the AUTH failure limits (SPEC 3) and AuthKeys (SPEC 7.4, 7.5),
//! the stamping of our users' mail and the check of another domain's.

pub mod authkey;
pub mod guard;
pub mod limits;
