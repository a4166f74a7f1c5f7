//! The client's one error type.

/// A failure, as one line for the user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientError(pub String);

impl ClientError {
    pub fn new(text: impl Into<String>) -> ClientError {
        // One line, whatever a server put in its text.
        ClientError(text.into().replace(['\r', '\n'], " "))
    }
}

impl std::fmt::Display for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ClientError {}
