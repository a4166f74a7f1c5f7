//! The client's one error type: a thin wrapper that shows one line to the user.

/// A failure, as one line for the user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientError(pub String);

impl ClientError {
    pub fn new(text: impl Into<String>) -> ClientError {
        // One line, whatever a server put in its text.
        ClientError(text.into().replace(['\r', '\n'], " "))
    }
}

/// The server crate's errors (connections, protocol, refusals) as the user sees them.
impl From<vouchmail_server::support::error::Error> for ClientError {
    fn from(error: vouchmail_server::support::error::Error) -> ClientError {
        ClientError::new(error.to_string())
    }
}

impl std::fmt::Display for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ClientError {}
