//! Client side of every mechanism.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;

use super::scram::{self, ServerFinal};
use super::secrets::{CramMd5Secret, MIN_SCRAM_ITERATIONS};
use super::{ct_eq, nonce_from, Mechanism, SaslError, NONCE_RANDOM_LEN};

/// Largest SCRAM iteration count the client will compute, so a hostile server cannot
/// make it spin.
const MAX_SCRAM_ITERATIONS: u32 = 10_000_000;

/// What the client authenticates with.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Credentials {
    /// Authentication identity (user name); unused by EXTERNAL.
    pub authcid: String,
    /// Unused by EXTERNAL.
    pub password: String,
    /// Identity to act as, if different from `authcid`.
    pub authzid: Option<String>,
}

impl Credentials {
    pub fn new(authcid: impl Into<String>, password: impl Into<String>) -> Credentials {
        Credentials { authcid: authcid.into(), password: password.into(), authzid: None }
    }

    pub fn with_authzid(mut self, authzid: impl Into<String>) -> Credentials {
        self.authzid = Some(authzid.into());
        self
    }
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("authcid", &self.authcid)
            .field("authzid", &self.authzid)
            .finish_non_exhaustive()
    }
}

/// One client-side authentication exchange.
pub struct ClientSession {
    mechanism: Mechanism,
    credentials: Credentials,
    nonce: Option<String>,
    channel_binding: Option<Vec<u8>>,
    state: State,
}

enum State {
    Start,
    LoginPassword,
    /// Sent the one response this mechanism has; only the outcome is left.
    Sent,
    ScramFirstSent {
        gs2_header: String,
        bare: String,
        nonce: String,
    },
    ScramFinalSent {
        server_signature: [u8; 32],
    },
    /// SCRAM server signature checked.
    Verified,
    Failed,
}

impl ClientSession {
    pub fn new(mechanism: Mechanism, credentials: Credentials) -> ClientSession {
        ClientSession { mechanism, credentials, nonce: None, channel_binding: None, state: State::Start }
    }

    /// Uses exactly this SCRAM client nonce (tests, RFC examples).
    pub fn with_nonce(mut self, nonce: impl Into<String>) -> ClientSession {
        self.nonce = Some(nonce.into());
        self
    }

    /// The SCRAM client nonce, made of octets from the OS random source that the driver
    /// read (RFC 5802 5.1 `r`: fresh for every exchange). SCRAM needs one: without it the
    /// first message fails with [`SaslError::Temporary`]. Other mechanisms ignore it.
    pub fn with_random_nonce(self, random: &[u8; NONCE_RANDOM_LEN]) -> ClientSession {
        self.with_nonce(nonce_from(random))
    }

    /// tls-exporter channel-binding data of the TLS connection (RFC 9266). Required by
    /// SCRAM-SHA-256-PLUS. With plain SCRAM-SHA-256 it sends the `y` flag (RFC 5802 6:
    /// "I could bind but you did not offer -PLUS"), so give it only when the server did not
    /// advertise SCRAM-SHA-256-PLUS.
    pub fn with_channel_binding(mut self, data: Vec<u8>) -> ClientSession {
        self.channel_binding = Some(data);
        self
    }

    pub fn mechanism(&self) -> Mechanism {
        self.mechanism
    }

    /// The initial response to send with AUTH (encode with `encode_initial_response`), or
    /// None for mechanisms where the server speaks first (LOGIN, CRAM-MD5).
    pub fn initial_response(&mut self) -> Result<Option<Vec<u8>>, SaslError> {
        if !matches!(self.state, State::Start) {
            return Err(SaslError::Malformed);
        }
        if !self.mechanism.client_first() {
            return Ok(None);
        }
        let result = self.first_message();
        if result.is_err() {
            self.state = State::Failed;
        }
        result.map(Some)
    }

    /// Answers one decoded server challenge.
    pub fn step(&mut self, challenge: &[u8]) -> Result<Vec<u8>, SaslError> {
        let result = self.step_inner(challenge);
        if result.is_err() {
            self.state = State::Failed;
        }
        result
    }

    /// Call when the server reports success, with any additional data it sent along
    /// (RFC 4422 3.6). For SCRAM this fails unless the server signature was verified.
    pub fn finish(&mut self, additional: Option<&[u8]>) -> Result<(), SaslError> {
        match (std::mem::replace(&mut self.state, State::Failed), additional) {
            (State::Verified, _) => {}
            (State::ScramFinalSent { server_signature }, Some(data)) => {
                self.verify_server_final(&server_signature, data)?;
            }
            (State::ScramFirstSent { .. } | State::ScramFinalSent { .. }, _) => {
                return Err(SaslError::BadServerSignature)
            }
            (State::Failed, _) => return Err(SaslError::Malformed),
            _ => {}
        }
        self.state = State::Verified;
        Ok(())
    }

    fn step_inner(&mut self, challenge: &[u8]) -> Result<Vec<u8>, SaslError> {
        match std::mem::replace(&mut self.state, State::Failed) {
            // RFC 4422 5: an empty challenge before the client-first message.
            State::Start if self.mechanism.client_first() => self.first_message(),
            State::Start if self.mechanism == Mechanism::Login => {
                self.state = State::LoginPassword;
                Ok(self.credentials.authcid.as_bytes().to_vec())
            }
            State::Start => {
                // RFC 2195 2: response = user SP hex(HMAC-MD5(password, challenge)).
                let digest = CramMd5Secret::from_password(&self.credentials.password).hmac(challenge);
                let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
                self.state = State::Sent;
                Ok(format!("{} {hex}", self.credentials.authcid).into_bytes())
            }
            State::LoginPassword => {
                self.state = State::Sent;
                Ok(self.credentials.password.as_bytes().to_vec())
            }
            State::ScramFirstSent { gs2_header, bare, nonce } => {
                self.scram_final(&gs2_header, &bare, &nonce, challenge)
            }
            State::ScramFinalSent { server_signature } => {
                self.verify_server_final(&server_signature, challenge)?;
                // RFC 4954 4: answer server-final with an empty response.
                self.state = State::Verified;
                Ok(Vec::new())
            }
            State::Sent | State::Verified | State::Failed => Err(SaslError::Malformed),
        }
    }

    fn first_message(&mut self) -> Result<Vec<u8>, SaslError> {
        let creds = &self.credentials;
        let authzid = creds.authzid.as_deref().unwrap_or("");
        match self.mechanism {
            Mechanism::Plain => {
                // RFC 4616 2: [authzid] NUL authcid NUL passwd.
                self.state = State::Sent;
                Ok(format!("{authzid}\0{}\0{}", creds.authcid, creds.password).into_bytes())
            }
            Mechanism::External => {
                // RFC 4422 A.1: the message is the authzid, possibly empty.
                self.state = State::Sent;
                Ok(authzid.as_bytes().to_vec())
            }
            Mechanism::ScramSha256 | Mechanism::ScramSha256Plus => {
                // RFC 5802 7: gs2-header, then n=<user>,r=<nonce>.
                let flag = match (self.mechanism, &self.channel_binding) {
                    (Mechanism::ScramSha256Plus, Some(_)) => format!("p={}", scram::CB_NAME),
                    (Mechanism::ScramSha256Plus, None) => return Err(SaslError::MechanismUnavailable),
                    (_, Some(_)) => "y".to_owned(),
                    (_, None) => "n".to_owned(),
                };
                let authz = match &creds.authzid {
                    Some(z) => format!("a={}", scram::encode_saslname(z)),
                    None => String::new(),
                };
                let nonce = match &self.nonce {
                    Some(n) if scram::valid_nonce(n) => n.clone(),
                    Some(_) => return Err(SaslError::Malformed),
                    // No random source given: a nonce of our own making would be guessable.
                    None => return Err(SaslError::Temporary),
                };
                let gs2_header = format!("{flag},{authz},");
                let bare = format!("n={},r={nonce}", scram::encode_saslname(&creds.authcid));
                let message = format!("{gs2_header}{bare}").into_bytes();
                self.state = State::ScramFirstSent { gs2_header, bare, nonce };
                Ok(message)
            }
            Mechanism::Login | Mechanism::CramMd5 => Err(SaslError::Malformed),
        }
    }

    /// RFC 5802 3: client-final-message with ClientProof.
    fn scram_final(
        &mut self,
        gs2_header: &str,
        bare: &str,
        client_nonce: &str,
        challenge: &[u8],
    ) -> Result<Vec<u8>, SaslError> {
        let first = scram::parse_server_first(challenge)?;
        // RFC 5802 5.1 `r`: the server extends the client's nonce.
        if !first.nonce.starts_with(client_nonce) || first.nonce.len() == client_nonce.len() {
            return Err(SaslError::Malformed);
        }
        // RFC 7677 4: at least 4096 iterations; and a cap against a hostile server.
        if !(MIN_SCRAM_ITERATIONS..=MAX_SCRAM_ITERATIONS).contains(&first.iterations) {
            return Err(SaslError::Malformed);
        }
        let mut cb = gs2_header.as_bytes().to_vec();
        if self.mechanism == Mechanism::ScramSha256Plus {
            cb.extend_from_slice(self.channel_binding.as_deref().unwrap_or(&[]));
        }
        let without_proof = format!("c={},r={}", STANDARD.encode(&cb), first.nonce);
        let server_first = std::str::from_utf8(challenge).map_err(|_| SaslError::Malformed)?;
        let auth_message = scram::auth_message(bare, server_first, &without_proof);
        let salted = scram::hi(self.credentials.password.as_bytes(), &first.salt, first.iterations);
        let client_key = scram::client_key(&salted);
        let stored_key = scram::h(&client_key);
        let client_signature = scram::hmac(&stored_key, auth_message.as_bytes());
        let proof = scram::xor(&client_key, &client_signature);
        let server_signature = scram::hmac(&scram::server_key(&salted), auth_message.as_bytes());
        self.state = State::ScramFinalSent { server_signature };
        Ok(format!("{without_proof},p={}", STANDARD.encode(proof)).into_bytes())
    }

    /// RFC 5802 3: the server proves it knows ServerKey.
    fn verify_server_final(&self, expected: &[u8; 32], message: &[u8]) -> Result<(), SaslError> {
        match scram::parse_server_final(message)? {
            ServerFinal::Verifier(v) if ct_eq(&v, expected) => Ok(()),
            ServerFinal::Verifier(_) => Err(SaslError::BadServerSignature),
            ServerFinal::Error => Err(SaslError::BadCredentials),
        }
    }
}

impl std::fmt::Debug for ClientSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientSession")
            .field("mechanism", &self.mechanism)
            .field("credentials", &self.credentials)
            .finish_non_exhaustive()
    }
}
