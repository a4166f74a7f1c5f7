//! The CLI's one error type: one line for standard error and the exit status it means
//! (README "Exit status": 1 refused or failed, 2 usage: the command line or the
//! configuration is not understood).

use std::fmt;
use std::process::ExitCode;

use vouchmail_server::support::error::{Error, ErrorKind};
use vouchmail_store::StoreError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CliError {
    message: String,
    /// 1 or 2.
    status: u8,
}

impl CliError {
    /// Refused or failed: exit 1.
    pub fn failed(message: impl Into<String>) -> CliError {
        CliError { message: message.into().replace(['\r', '\n'], " "), status: 1 }
    }

    /// The configuration or the command is not understood: exit 2.
    pub fn usage(message: impl Into<String>) -> CliError {
        CliError { status: 2, ..CliError::failed(message) }
    }

    pub fn exit_code(&self) -> ExitCode {
        ExitCode::from(self.status)
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for CliError {}

/// A configuration that does not validate is a usage error; anything else failed.
impl From<Error> for CliError {
    fn from(error: Error) -> CliError {
        match error.kind() {
            ErrorKind::Config => CliError::usage(error.to_string()),
            _ => CliError::failed(error.to_string()),
        }
    }
}

impl From<StoreError> for CliError {
    fn from(error: StoreError) -> CliError {
        CliError::failed(error.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_configuration_exits_2_and_a_refusal_1() {
        assert_eq!(CliError::from(Error::config("tls.cert", "not PEM")).status, 2);
        assert_eq!(CliError::from(Error::invalid("no such domain")).status, 1);
        assert_eq!(CliError::from(StoreError::Unavailable("locked".into())).status, 1);
        assert_eq!(CliError::failed("a\nb").to_string(), "a b");
    }
}
