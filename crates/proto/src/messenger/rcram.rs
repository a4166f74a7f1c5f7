//! Remote authentication, RCRAM-MD5 (SPEC 8.2), with the challenge bound to the verifier.
//!
//! The seed's design relays a user's CRAM-MD5 exchange through the server the user logs in
//! to (the *verifier*) to the user's *home server*. As the seed describes it, a rogue
//! verifier could ask the home server for a challenge, hand it to the user, and use the
//! user's answer to log in as the user somewhere else. SPEC 8.2 closes that: the home server
//! issues the challenge `<random.unixtime.rcram.<verifier's name>@<home server's name>>`,
//! only to a caller whose IP is an address of that verifier name, and accepts an answer to
//! it once; the user's client answers only a challenge naming the host it dialed, issued
//! within 5 minutes. A rogue that asks for a challenge bound to another server is refused
//! by the home server (its IP is not that server's); one bound to itself is refused by the
//! client, which dialed someone else.
//!
//! Here, with no I/O:
//! - [`Challenge`]: building the bound challenge and parsing it back.
//! - [`check_binding`]: the client's check (step 4).
//! - [`answer`]: the CRAM-MD5 answer (RFC 2195), by the crate's CRAM-MD5 client.
//! - [`ChallengeRegistry`]: the home server's issued challenges, each accepted once.
//! - [`parse_rcram_argument`], [`parse_verify_arguments`]: the AUTH arguments of steps 1-2.
//! - [`RcramClient`]: the client side of `AUTH RCRAM-MD5 <address>` as a state machine.
//! - [`VerifierRelay`]: the verifier's relay between the client and the home server.
//! - [`decode_answer`], [`answer_is_for`]: the verifier's reading of a client's CRAM-MD5
//!   answer in the legacy mode (step 6).

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::time::Duration;

use crate::sasl::{self, ClientSession, Credentials, Mechanism, SaslError};
use crate::smtp::client::{ReplyParser, ServerReply};
use crate::smtp::reply::{EnhancedCode, Reply};

/// The mechanism name the client uses with the verifier (SPEC 8.2 step 1).
pub const MECHANISM: &str = "RCRAM-MD5";
/// The mechanism name the verifier uses with the home server (SPEC 8.2 step 2).
pub const VERIFY_MECHANISM: &str = "X-RCRAM-VERIFY";
/// SPEC 8.2 step 4: the client answers only a challenge issued within 5 minutes; the home
/// server forgets an unanswered challenge after as long.
pub const MAX_AGE_SECS: i64 = 300;
/// SPEC 8.2 step 3: at least 64 bits of randomness.
pub const MIN_RANDOM_BYTES: usize = 8;
/// The longest random part a client accepts (other servers may write it in another form
/// than hex, but not without bound).
pub const MAX_RANDOM_CHARS: usize = 128;

/// A challenge `<random.unixtime.rcram.<verifier>@<home>>` (SPEC 8.2 step 3).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Challenge {
    /// The random part, as written (this crate writes lower-case hex).
    pub random: String,
    /// Seconds since the Unix epoch when it was issued.
    pub unixtime: i64,
    /// The verifier's name: the server the client must have dialed.
    pub verifier: String,
    /// The home server's name.
    pub home: String,
}

/// Why a challenge (or an AUTH argument) is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChallengeError {
    /// Not of the form `<random.unixtime.rcram.<verifier>@<home>>`.
    Malformed(&'static str),
    /// Fewer than 64 random bits.
    TooLittleRandom,
}

impl fmt::Display for ChallengeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ChallengeError::Malformed(why) => write!(f, "malformed RCRAM challenge: {why}"),
            ChallengeError::TooLittleRandom => write!(f, "an RCRAM challenge needs at least 64 random bits"),
        }
    }
}

impl std::error::Error for ChallengeError {}

impl Challenge {
    /// The challenge a home server issues (SPEC 8.2 step 3). `random` comes from the OS
    /// source (at least [`MIN_RANDOM_BYTES`]); the caller passes it in so this stays pure.
    pub fn new(random: &[u8], unixtime: i64, verifier: &str, home: &str) -> Result<Challenge, ChallengeError> {
        if random.len() < MIN_RANDOM_BYTES {
            return Err(ChallengeError::TooLittleRandom);
        }
        if random.len() * 2 > MAX_RANDOM_CHARS {
            return Err(ChallengeError::Malformed("random part too long"));
        }
        if !valid_name(verifier) {
            return Err(ChallengeError::Malformed("verifier name"));
        }
        if !valid_name(home) {
            return Err(ChallengeError::Malformed("home server name"));
        }
        if unixtime < 0 {
            return Err(ChallengeError::Malformed("unixtime"));
        }
        Ok(Challenge {
            random: random.iter().map(|b| format!("{b:02x}")).collect(),
            unixtime,
            verifier: verifier.to_ascii_lowercase(),
            home: home.to_ascii_lowercase(),
        })
    }

    /// Parses the decoded text of a `334` challenge.
    pub fn parse(text: &[u8]) -> Result<Challenge, ChallengeError> {
        let text = std::str::from_utf8(text).map_err(|_| ChallengeError::Malformed("not UTF-8"))?;
        let inner = text
            .strip_prefix('<')
            .and_then(|t| t.strip_suffix('>'))
            .ok_or(ChallengeError::Malformed("not in angle brackets"))?;
        let (left, home) = inner.rsplit_once('@').ok_or(ChallengeError::Malformed("no '@'"))?;
        let (random, rest) = left.split_once('.').ok_or(ChallengeError::Malformed("no random part"))?;
        let (unixtime, rest) = rest.split_once('.').ok_or(ChallengeError::Malformed("no unixtime"))?;
        let verifier = rest
            .get(..6)
            .filter(|tag| tag.eq_ignore_ascii_case("rcram."))
            .and_then(|_| rest.get(6..))
            .ok_or(ChallengeError::Malformed("no 'rcram.'"))?;
        if random.is_empty()
            || random.len() > MAX_RANDOM_CHARS
            || !random.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(ChallengeError::Malformed("random part"));
        }
        if unixtime.is_empty() || unixtime.len() > 18 || !unixtime.bytes().all(|b| b.is_ascii_digit()) {
            return Err(ChallengeError::Malformed("unixtime"));
        }
        let unixtime = unixtime.parse::<i64>().map_err(|_| ChallengeError::Malformed("unixtime"))?;
        if !valid_name(verifier) {
            return Err(ChallengeError::Malformed("verifier name"));
        }
        if !valid_name(home) {
            return Err(ChallengeError::Malformed("home server name"));
        }
        Ok(Challenge { random: random.to_string(), unixtime, verifier: verifier.to_string(), home: home.to_string() })
    }

    /// The challenge text, as CRAM-MD5 signs it and the `334` line carries it (base64).
    pub fn text(&self) -> String {
        format!("<{}.{}.rcram.{}@{}>", self.random, self.unixtime, self.verifier, self.home)
    }
}

impl fmt::Display for Challenge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text())
    }
}

/// A host name (RFC 1123 2.1 letters, digits, hyphens, dots), one trailing dot allowed.
/// Not an address in dotted-decimal form (RFC 1123 2.1: the top-level label is never all
/// digits): a verifier must name itself, so that the home server's forward-DNS check of
/// its IP means something (SPEC 8.2 step 3).
fn valid_name(name: &str) -> bool {
    let name = name.strip_suffix('.').unwrap_or(name);
    !name.is_empty()
        && !name.rsplit('.').next().is_some_and(|top| top.bytes().all(|b| b.is_ascii_digit()))
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

/// Host names compare without case and without a trailing dot.
fn same_host(a: &str, b: &str) -> bool {
    a.strip_suffix('.').unwrap_or(a).eq_ignore_ascii_case(b.strip_suffix('.').unwrap_or(b))
}

/// Why the client will not answer a challenge (it sends `*`, SPEC 8.2 step 4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BindingError {
    /// Not an RCRAM challenge at all (a plain CRAM-MD5 one, say).
    Malformed(ChallengeError),
    /// Bound to another server than the one dialed: the relay attack of issue 12.
    WrongVerifier { named: String, dialed: String },
    /// Issued more than 5 minutes before (or after) now.
    Stale { age_secs: i64 },
}

impl fmt::Display for BindingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BindingError::Malformed(e) => write!(f, "{e}"),
            BindingError::WrongVerifier { named, dialed } => {
                write!(f, "the challenge is bound to {named}, not to {dialed} (the server dialed)")
            }
            BindingError::Stale { age_secs } => {
                write!(f, "the challenge is {age_secs} seconds from now, more than {MAX_AGE_SECS}")
            }
        }
    }
}

impl std::error::Error for BindingError {}

/// SPEC 8.2 step 4, the client's check: the name after `rcram.` is the host it dialed
/// (`dialed`: the name discovery or the profile gave it, never one the server said),
/// without case, and unixtime is within 5 minutes of `now`.
pub fn check_binding(challenge: &[u8], dialed: &str, now: i64) -> Result<Challenge, BindingError> {
    let parsed = Challenge::parse(challenge).map_err(BindingError::Malformed)?;
    if !same_host(&parsed.verifier, dialed) {
        return Err(BindingError::WrongVerifier { named: parsed.verifier, dialed: dialed.to_string() });
    }
    let age_secs = now.saturating_sub(parsed.unixtime);
    if age_secs.unsigned_abs() > MAX_AGE_SECS.unsigned_abs() {
        return Err(BindingError::Stale { age_secs });
    }
    Ok(parsed)
}

/// The CRAM-MD5 answer (RFC 2195 2): `<address> <hex HMAC-MD5(secret, challenge)>`, raw
/// (base64 it with [`sasl::encode_response`]). Computed by the crate's CRAM-MD5 client.
pub fn answer(address: &str, password: &str, challenge: &[u8]) -> Result<Vec<u8>, SaslError> {
    ClientSession::new(Mechanism::CramMd5, Credentials::new(address, password)).step(challenge)
}

/// Checks a raw RCRAM answer on the home server, against the account's CRAM-MD5 secret and
/// the challenge it issued: the address it names and whether the digest is right. The
/// server side is the crate's CRAM-MD5 server ([`crate::sasl::ServerSession`] with
/// `ServerOptions::cram_challenge`); this is the same check for a driver that holds the
/// challenge itself (as the [`ChallengeRegistry`] does).
pub fn check_answer(response: &[u8], challenge: &str, secret: &sasl::CramMd5Secret) -> Option<String> {
    let text = std::str::from_utf8(response).ok()?;
    let (user, hex) = text.rsplit_once(' ')?;
    let digest = sasl::secrets::decode_hex(hex).and_then(|d| <[u8; 16]>::try_from(d).ok())?;
    (!user.is_empty() && sasl::ct_eq(&secret.hmac(challenge.as_bytes()), &digest)).then(|| user.to_string())
}

/// A client's CRAM-MD5 answer (RFC 2195 2), decoded: the user name it names and its
/// digest. The verifier reads it only in the legacy mode (SPEC 8.2 step 6), where the home
/// server's plain CRAM-MD5 would log the client in as whichever user the answer names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CramAnswer {
    /// The user name before the last space, as sent.
    pub user: String,
    /// The 16 octets of the HMAC-MD5 digest (32 hex digits on the wire).
    pub digest: [u8; 16],
}

/// Why a client's answer line is not a CRAM-MD5 answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnswerError {
    /// `*` (RFC 4954 4).
    Cancelled,
    /// Not base64 (RFC 4954 4).
    NotBase64,
    /// Not UTF-8 text, or a control character in it.
    NotText,
    /// No `<user> <digest>` (RFC 2195 2): no space, or an empty user name.
    NoUser,
    /// The digest is not 32 hex digits.
    BadDigest,
}

impl fmt::Display for AnswerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AnswerError::Cancelled => "the client cancelled",
            AnswerError::NotBase64 => "the answer is not base64",
            AnswerError::NotText => "the answer is not text",
            AnswerError::NoUser => "the answer names no user",
            AnswerError::BadDigest => "the answer's digest is not 32 hex digits",
        })
    }
}

impl std::error::Error for AnswerError {}

/// Decodes a client's answer line (base64, CRLF already removed or not) into the user name
/// and digest of RFC 2195 2: `<user> <32 hex digits>`, split at the last space.
pub fn decode_answer(line: &[u8]) -> Result<CramAnswer, AnswerError> {
    let raw = sasl::decode_response(line).map_err(|e| match e {
        SaslError::Cancelled => AnswerError::Cancelled,
        _ => AnswerError::NotBase64,
    })?;
    let text = std::str::from_utf8(&raw).map_err(|_| AnswerError::NotText)?;
    if text.contains(char::is_control) {
        return Err(AnswerError::NotText);
    }
    let (user, hex) = text.rsplit_once(' ').ok_or(AnswerError::NoUser)?;
    if user.is_empty() {
        return Err(AnswerError::NoUser);
    }
    let digest = (hex.len() == 32)
        .then(|| sasl::secrets::decode_hex(hex))
        .flatten()
        .and_then(|d| <[u8; 16]>::try_from(d).ok())
        .ok_or(AnswerError::BadDigest)?;
    Ok(CramAnswer { user: user.to_string(), digest })
}

/// SPEC 8.2 step 6, legacy mode: the verifier relays the client's answer only when it
/// decodes and its user name is exactly `address`, the address of `AUTH RCRAM-MD5
/// <address>` (step 1). Any other answer would log the client in at the home server as
/// someone else while the verifier grants it `address`.
pub fn answer_is_for(line: &[u8], address: &str) -> bool {
    decode_answer(line).is_ok_and(|answer| answer.user == address)
}

/// SPEC 8.2 step 5 on the home server, after [`ChallengeRegistry::take`] gave `issued` for
/// `challenge`: the answer must name the address the challenge was issued for (without
/// case) and carry the right digest for that account's CRAM-MD5 secret (`None`: the
/// account has none, or is unknown). True: `235 2.7.0`; false: `535 5.7.8`.
pub fn verify_answer(issued: &Issued, challenge: &str, response: &[u8], secret: Option<&sasl::CramMd5Secret>) -> bool {
    let Some(secret) = secret else { return false };
    check_answer(response, challenge, secret).is_some_and(|user| user.eq_ignore_ascii_case(&issued.address))
}

/// One challenge the home server issued and has not yet seen answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issued {
    /// The address `AUTH X-RCRAM-VERIFY` named; the answer must be for it.
    pub address: String,
    /// The verifier the challenge is bound to.
    pub verifier: String,
    pub issued_at: i64,
}

/// SPEC 8.2 step 3: challenges one verifier may have outstanding at once.
pub const MAX_OUTSTANDING_PER_VERIFIER: usize = 32;

/// Why the registry refuses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegistryError {
    /// Too many challenges outstanding (a flood): answer 454 4.7.0.
    Full,
    /// This verifier has [`MAX_OUTSTANDING_PER_VERIFIER`] challenges outstanding
    /// (SPEC 8.2 step 3): answer 454 4.7.0.
    VerifierFull,
    /// The random part repeats a challenge still outstanding (a broken random source).
    Duplicate,
    /// The challenge could not be built.
    Challenge(ChallengeError),
}

impl fmt::Display for RegistryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RegistryError::Full => f.write_str("too many RCRAM challenges outstanding"),
            RegistryError::VerifierFull => f.write_str("too many RCRAM challenges outstanding for this verifier"),
            RegistryError::Duplicate => f.write_str("the random part repeats an outstanding challenge"),
            RegistryError::Challenge(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for RegistryError {}

/// The home server's issued challenges (SPEC 8.2 steps 3 and 5): each is remembered until
/// it is answered or [`MAX_AGE_SECS`] pass, and accepted once. Taking a challenge removes
/// it whatever the answer, so a challenge is never answered twice; a challenge that was
/// never issued, or expired, is refused. Each verifier has at most
/// [`MAX_OUTSTANDING_PER_VERIFIER`] outstanding (SPEC 8.2 step 3); a cancelled exchange
/// gives its challenge back with [`ChallengeRegistry::forget`]. Plain data: the server
/// keeps one behind a mutex.
#[derive(Debug)]
pub struct ChallengeRegistry {
    outstanding: HashMap<String, Issued>,
    /// Issue order, for expiry.
    order: VecDeque<(i64, String)>,
    /// Outstanding challenges by verifier name (as in [`Issued::verifier`]).
    per_verifier: HashMap<String, usize>,
    lifetime_secs: i64,
    max_outstanding: usize,
    max_per_verifier: usize,
}

impl ChallengeRegistry {
    pub fn new(lifetime: Duration, max_outstanding: usize) -> ChallengeRegistry {
        ChallengeRegistry {
            outstanding: HashMap::new(),
            order: VecDeque::new(),
            per_verifier: HashMap::new(),
            lifetime_secs: i64::try_from(lifetime.as_secs()).unwrap_or(i64::MAX),
            max_outstanding,
            max_per_verifier: MAX_OUTSTANDING_PER_VERIFIER,
        }
    }

    /// As [`ChallengeRegistry::new`], with another cap per verifier.
    pub fn with_max_per_verifier(mut self, max_per_verifier: usize) -> ChallengeRegistry {
        self.max_per_verifier = max_per_verifier;
        self
    }

    /// Challenges outstanding for `verifier` (after the last purge).
    pub fn outstanding_for(&self, verifier: &str) -> usize {
        self.per_verifier.get(&verifier.to_ascii_lowercase()).copied().unwrap_or(0)
    }

    /// Removes an outstanding challenge and its verifier's count.
    fn remove(&mut self, challenge: &str) -> Option<Issued> {
        let issued = self.outstanding.remove(challenge)?;
        if let Some(count) = self.per_verifier.get_mut(&issued.verifier) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                self.per_verifier.remove(&issued.verifier);
            }
        }
        Some(issued)
    }

    /// Challenges outstanding (after the last purge).
    pub fn len(&self) -> usize {
        self.outstanding.len()
    }

    pub fn is_empty(&self) -> bool {
        self.outstanding.is_empty()
    }

    /// Issues a challenge bound to `verifier` for `address` (the caller has checked the
    /// verifier's IP and that the address is local, SPEC 8.2 step 3).
    pub fn issue(
        &mut self,
        random: &[u8],
        now: i64,
        verifier: &str,
        home: &str,
        address: &str,
    ) -> Result<Challenge, RegistryError> {
        self.purge(now);
        if self.outstanding.len() >= self.max_outstanding {
            return Err(RegistryError::Full);
        }
        let challenge = Challenge::new(random, now, verifier, home).map_err(RegistryError::Challenge)?;
        // SPEC 8.2 step 3: at most 32 outstanding per verifier.
        if self.outstanding_for(&challenge.verifier) >= self.max_per_verifier {
            return Err(RegistryError::VerifierFull);
        }
        let text = challenge.text();
        if self.outstanding.contains_key(&text) {
            return Err(RegistryError::Duplicate);
        }
        let issued = Issued { address: address.to_lowercase(), verifier: challenge.verifier.clone(), issued_at: now };
        *self.per_verifier.entry(issued.verifier.clone()).or_insert(0) += 1;
        self.outstanding.insert(text.clone(), issued);
        self.order.push_back((now, text));
        Ok(challenge)
    }

    /// Takes the challenge for checking its answer (SPEC 8.2 step 5): Some only once, and
    /// only while it is current. The caller then checks the digest against the account's
    /// secret and that the answer names `Issued::address`.
    pub fn take(&mut self, challenge: &str, now: i64) -> Option<Issued> {
        let issued = self.remove(challenge)?;
        let age = now.saturating_sub(issued.issued_at);
        (age <= self.lifetime_secs && age >= -self.lifetime_secs).then_some(issued)
    }

    /// Forgets every challenge older than the lifetime.
    pub fn purge(&mut self, now: i64) {
        while let Some((at, _)) = self.order.front() {
            if now.saturating_sub(*at) <= self.lifetime_secs {
                break;
            }
            if let Some((at, text)) = self.order.pop_front() {
                if self.outstanding.get(&text).is_some_and(|i| i.issued_at == at) {
                    self.remove(&text);
                }
            }
        }
        // Challenges taken early leave their slot in `order` behind: compact now and then.
        if self.order.len() > self.outstanding.len() * 2 + 16 {
            let outstanding = &self.outstanding;
            self.order.retain(|(at, text)| outstanding.get(text).is_some_and(|i| i.issued_at == *at));
        }
    }
}

impl ChallengeRegistry {
    /// Gives back a challenge whose exchange ended without an answer (a `*` cancel, SPEC
    /// 8.2 step 3, or the verifier's connection gone): it frees its verifier's slot and can
    /// never be answered. True when it was outstanding.
    pub fn forget(&mut self, challenge: &str) -> bool {
        self.remove(challenge).is_some()
    }
}

impl Default for ChallengeRegistry {
    fn default() -> Self {
        ChallengeRegistry::new(Duration::from_secs(MAX_AGE_SECS as u64), 10_000)
    }
}

/// `AUTH RCRAM-MD5 <address>` (SPEC 8.2 step 1): the argument after the mechanism name is
/// one address, `local@domain`.
pub fn parse_rcram_argument(argument: Option<&str>) -> Result<String, ChallengeError> {
    let mut words = argument.unwrap_or("").split(' ').filter(|w| !w.is_empty());
    match (words.next(), words.next()) {
        (Some(address), None) if valid_address(address) => Ok(address.to_string()),
        _ => Err(ChallengeError::Malformed("AUTH RCRAM-MD5 needs one address")),
    }
}

/// `AUTH X-RCRAM-VERIFY <address> <verifier's name>` (SPEC 8.2 step 2).
pub fn parse_verify_arguments(arguments: &str) -> Result<(String, String), ChallengeError> {
    let mut words = arguments.split(' ').filter(|w| !w.is_empty());
    match (words.next(), words.next(), words.next()) {
        (Some(address), Some(verifier), None) if valid_address(address) && valid_name(verifier) => {
            Ok((address.to_string(), verifier.to_string()))
        }
        _ => Err(ChallengeError::Malformed("AUTH X-RCRAM-VERIFY needs an address and a host name")),
    }
}

fn valid_address(address: &str) -> bool {
    match address.rsplit_once('@') {
        Some((local, domain)) => {
            !local.is_empty()
                && !local.contains(|c: char| c.is_control() || c.is_whitespace() || c == '<' || c == '>')
                && valid_name(domain)
        }
        None => false,
    }
}

/// How an RCRAM-MD5 login from the user's seat ended (SPEC 8.2 step 6).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RcramOutcome {
    /// `235 2.7.0 Authenticated as <address> (remote)`.
    Authenticated(Reply),
    /// The verifier or home server refused the credentials: `535`.
    Refused(Reply),
    /// The home server cannot be reached or does not offer X-RCRAM-VERIFY: `454 4.7.0`
    /// (any 4xx).
    Temporary(Reply),
    /// The challenge was not bound to the dialed host, or stale: we sent `*` and the server
    /// answered (usually 501).
    Cancelled { why: BindingError, reply: Reply },
    /// Anything else (another code, a broken reply, the connection lost).
    Failed(Reply),
}

/// What the driver must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RcramEvent {
    /// The exchange is over.
    Done(RcramOutcome),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Start,
    /// `AUTH RCRAM-MD5 <address>` sent; a 334 or a final reply is due.
    AwaitChallenge,
    /// The answer sent; the final reply is due.
    AwaitResult,
    /// `*` sent; the server's reply to it is due.
    AwaitCancel,
    Done,
}

/// The client side of `AUTH RCRAM-MD5 <address>` (SPEC 8.2 steps 1, 4 and 6), on a session
/// that is past EHLO (and STARTTLS). Drive it like [`crate::smtp::client::Client`]: call
/// [`RcramClient::start`], write [`RcramClient::take_output`], [`RcramClient::feed`] what
/// the server sends, until [`RcramClient::poll_event`] gives the outcome.
#[derive(Debug)]
pub struct RcramClient {
    address: String,
    password: String,
    dialed: String,
    now: i64,
    parser: ReplyParser,
    phase: Phase,
    output: Vec<u8>,
    events: VecDeque<RcramEvent>,
    cancelled: Option<BindingError>,
}

impl RcramClient {
    /// `dialed`: the host name the connection was made to (from discovery or the profile,
    /// SPEC 8.2 step 4); `now`: Unix seconds, for the age check.
    pub fn new(address: &str, password: &str, dialed: &str, now: i64) -> RcramClient {
        RcramClient {
            address: address.to_string(),
            password: password.to_string(),
            dialed: dialed.to_string(),
            now,
            parser: ReplyParser::default(),
            phase: Phase::Start,
            output: Vec::new(),
            events: VecDeque::new(),
            cancelled: None,
        }
    }

    /// Sends `AUTH RCRAM-MD5 <address>`.
    pub fn start(&mut self) {
        if self.phase != Phase::Start {
            return;
        }
        self.output.extend_from_slice(format!("AUTH {MECHANISM} {}\r\n", self.address).as_bytes());
        self.phase = Phase::AwaitChallenge;
    }

    pub fn take_output(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.output)
    }

    pub fn poll_event(&mut self) -> Option<RcramEvent> {
        self.events.pop_front()
    }

    pub fn is_done(&self) -> bool {
        self.phase == Phase::Done
    }

    /// Bytes from the server.
    pub fn feed(&mut self, bytes: &[u8]) {
        if self.phase == Phase::Done {
            return;
        }
        self.parser.feed(bytes);
        while self.phase != Phase::Done {
            match self.parser.next_reply() {
                Ok(Some(reply)) => self.on_reply(reply),
                Ok(None) => return,
                Err(e) => {
                    let reply = Reply::new(421, EnhancedCode(4, 5, 0), format!("Protocol error: {}", e.0));
                    self.finish(RcramOutcome::Failed(reply));
                }
            }
        }
    }

    /// The connection closed or timed out before the exchange ended.
    pub fn on_closed(&mut self) {
        if self.phase != Phase::Done {
            let reply = crate::smtp::client::connection_lost("Connection lost during RCRAM-MD5");
            self.finish(RcramOutcome::Failed(reply));
        }
    }

    fn finish(&mut self, outcome: RcramOutcome) {
        self.phase = Phase::Done;
        self.events.push_back(RcramEvent::Done(outcome));
    }

    fn on_reply(&mut self, server: ServerReply) {
        let reply = server.to_reply();
        match (self.phase, reply.code) {
            (Phase::AwaitChallenge, 334) => self.on_challenge(&server),
            (Phase::AwaitCancel, _) => {
                let why = self.cancelled.take().unwrap_or(BindingError::Malformed(ChallengeError::Malformed("")));
                self.finish(RcramOutcome::Cancelled { why, reply });
            }
            (Phase::AwaitResult, 235) => {
                self.finish(RcramOutcome::Authenticated(reply));
            }
            (Phase::AwaitChallenge | Phase::AwaitResult, 535) => self.finish(RcramOutcome::Refused(reply)),
            (Phase::AwaitChallenge | Phase::AwaitResult, 400..=499) => self.finish(RcramOutcome::Temporary(reply)),
            // A 235 before we answered anything proves nothing; a 334 after the answer is
            // not part of CRAM-MD5.
            _ => self.finish(RcramOutcome::Failed(reply)),
        }
    }

    fn on_challenge(&mut self, server: &ServerReply) {
        let text = server.lines.first().map_or("", |l| l.trim());
        let decoded = match sasl::decode_challenge(text.as_bytes()) {
            Ok(d) => d,
            Err(_) => return self.cancel(BindingError::Malformed(ChallengeError::Malformed("not base64"))),
        };
        if let Err(why) = check_binding(&decoded, &self.dialed, self.now) {
            return self.cancel(why);
        }
        match answer(&self.address, &self.password, &decoded) {
            Ok(response) => {
                self.output.extend_from_slice(sasl::encode_response(&response).as_bytes());
                self.output.extend_from_slice(b"\r\n");
                self.phase = Phase::AwaitResult;
            }
            Err(_) => self.cancel(BindingError::Malformed(ChallengeError::Malformed("cannot answer"))),
        }
    }

    /// RFC 4954 4: `*` cancels the exchange.
    fn cancel(&mut self, why: BindingError) {
        self.output.extend_from_slice(b"*\r\n");
        self.cancelled = Some(why);
        self.phase = Phase::AwaitCancel;
    }
}

/// True when a home server's EHLO lines (as [`ServerReply::lines`] keeps them) offer
/// `AUTH X-RCRAM-VERIFY` (SPEC 8: among the AUTH mechanisms).
pub fn offers_verify(ehlo_lines: &[String]) -> bool {
    ehlo_lines.iter().skip(1).any(|line| {
        let mut words = line.split([' ', '=']).filter(|w| !w.is_empty());
        words.next().is_some_and(|k| k.eq_ignore_ascii_case("AUTH"))
            && words.any(|m| m.eq_ignore_ascii_case(VERIFY_MECHANISM))
    })
}

/// How a relayed RCRAM-MD5 exchange ended on the verifier (SPEC 8.2 step 6).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RelayOutcome {
    /// `235 2.7.0 Authenticated as <address> (remote)`: the session may now send as it
    /// (MAIL FROM that address only, RCPT local mailboxes only).
    Authenticated(String),
    /// `535 5.7.8` (counts towards the AUTH limits of the IP and the address).
    Refused,
    /// `454 4.7.0`: the home server is unreachable, does not offer X-RCRAM-VERIFY, or
    /// failed (also counted).
    Temporary,
    /// The client sent `*`: `501 5.0.0`.
    Cancelled,
    /// The client's answer was not base64: `501 5.5.2`.
    Malformed,
}

/// What the verifier's driver must do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RelayEvent {
    /// Write these bytes to the client (a `334` line exactly as the home server sent it,
    /// or the final reply).
    ToClient(Vec<u8>),
    /// Write these bytes to the home server.
    ToHome(Vec<u8>),
    /// Read the client's next line and give it to [`VerifierRelay::client_line`].
    ReadClient,
    /// The exchange is over; the home server connection may be reused or closed.
    Done(RelayOutcome),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RelayPhase {
    Connecting,
    AwaitChallenge,
    AwaitClient,
    AwaitResult,
    AwaitCancel,
    Done,
}

/// The verifier's side of `AUTH RCRAM-MD5 <address>` (SPEC 8.2 steps 2, 4, 5, 6): it speaks
/// `AUTH X-RCRAM-VERIFY <address> <verifier's name>` to the address domain's home server
/// (found by discovery, on a session past EHLO), relays the home server's `334` line to the
/// client unchanged and the client's answer to the home server, and gives the client the
/// result. No I/O: the driver calls [`VerifierRelay::home_ready`] (or
/// [`VerifierRelay::home_unreachable`]), then feeds both sides and acts on
/// [`VerifierRelay::poll_event`].
#[derive(Debug)]
pub struct VerifierRelay {
    address: String,
    verifier: String,
    phase: RelayPhase,
    home: ReplyParser,
    events: VecDeque<RelayEvent>,
}

impl VerifierRelay {
    /// `address`: from [`parse_rcram_argument`]; `verifier`: this server's configured name.
    pub fn new(address: &str, verifier: &str) -> VerifierRelay {
        VerifierRelay {
            address: address.to_string(),
            verifier: verifier.to_string(),
            phase: RelayPhase::Connecting,
            home: ReplyParser::default(),
            events: VecDeque::new(),
        }
    }

    pub fn poll_event(&mut self) -> Option<RelayEvent> {
        self.events.pop_front()
    }

    pub fn is_done(&self) -> bool {
        self.phase == RelayPhase::Done
    }

    /// The home server's session is past EHLO; `ehlo_lines` are its EHLO reply's lines.
    pub fn home_ready(&mut self, ehlo_lines: &[String]) {
        if self.phase != RelayPhase::Connecting {
            return;
        }
        if !offers_verify(ehlo_lines) {
            // SPEC 8.2 step 6: no X-RCRAM-VERIFY (the legacy CRAM-MD5 proxy is opt-in and
            // not done here).
            return self.finish(RelayOutcome::Temporary);
        }
        let line = format!("AUTH {VERIFY_MECHANISM} {} {}\r\n", self.address, self.verifier);
        self.events.push_back(RelayEvent::ToHome(line.into_bytes()));
        self.phase = RelayPhase::AwaitChallenge;
    }

    /// The home server cannot be reached, or its connection broke or timed out.
    pub fn home_unreachable(&mut self) {
        if self.phase != RelayPhase::Done {
            self.finish(RelayOutcome::Temporary);
        }
    }

    /// Bytes from the home server.
    pub fn feed_home(&mut self, bytes: &[u8]) {
        if self.phase == RelayPhase::Done {
            return;
        }
        self.home.feed(bytes);
        while self.phase != RelayPhase::Done {
            match self.home.next_reply() {
                Ok(Some(reply)) => self.on_home_reply(reply),
                Ok(None) => return,
                Err(_) => return self.finish(RelayOutcome::Temporary),
            }
        }
    }

    fn on_home_reply(&mut self, reply: ServerReply) {
        match (self.phase, reply.code) {
            // No control characters (a bare CR) go on to the client.
            (RelayPhase::AwaitChallenge, 334)
                if reply.lines.len() == 1 && !reply.lines.iter().any(|l| l.contains(char::is_control)) =>
            {
                // SPEC 8.2 step 4: relayed unchanged (a 334 line carries no enhanced code).
                let text = reply.lines.first().map_or("", String::as_str);
                self.events.push_back(RelayEvent::ToClient(format!("334 {text}\r\n").into_bytes()));
                self.events.push_back(RelayEvent::ReadClient);
                self.phase = RelayPhase::AwaitClient;
            }
            (RelayPhase::AwaitResult, 235) => self.finish(RelayOutcome::Authenticated(self.address.clone())),
            // 535 5.7.0 (our IP is not the verifier name's) or 5.7.8: to the client, the
            // credentials could not be verified.
            (RelayPhase::AwaitChallenge | RelayPhase::AwaitResult, 535) => self.finish(RelayOutcome::Refused),
            (RelayPhase::AwaitCancel, _) => self.finish(RelayOutcome::Cancelled),
            _ => self.finish(RelayOutcome::Temporary),
        }
    }

    /// The client's line answering the relayed `334` (without CRLF).
    pub fn client_line(&mut self, line: &[u8]) {
        if self.phase != RelayPhase::AwaitClient {
            return;
        }
        match sasl::decode_response(line) {
            Ok(_) => {
                let line = line.strip_suffix(b"\n").unwrap_or(line);
                let mut out = line.strip_suffix(b"\r").unwrap_or(line).to_vec();
                out.extend_from_slice(b"\r\n");
                self.events.push_back(RelayEvent::ToHome(out));
                self.phase = RelayPhase::AwaitResult;
            }
            // RFC 4954 4: "*" cancels; the home server is told too.
            Err(SaslError::Cancelled) => {
                self.events.push_back(RelayEvent::ToHome(b"*\r\n".to_vec()));
                self.phase = RelayPhase::AwaitCancel;
            }
            Err(_) => {
                self.events.push_back(RelayEvent::ToHome(b"*\r\n".to_vec()));
                self.finish(RelayOutcome::Malformed);
            }
        }
    }

    fn finish(&mut self, outcome: RelayOutcome) {
        let reply = match &outcome {
            RelayOutcome::Authenticated(address) => Reply::rcram_authenticated(address),
            RelayOutcome::Refused => Reply::rcram_bad_credentials(),
            RelayOutcome::Temporary => Reply::rcram_home_unavailable(domain_of(&self.address)),
            RelayOutcome::Cancelled => {
                let e = SaslError::Cancelled;
                Reply::new(e.code(), EnhancedCode(5, 0, 0), e.text())
            }
            RelayOutcome::Malformed => {
                let e = SaslError::Malformed;
                Reply::new(e.code(), EnhancedCode(5, 5, 2), e.text())
            }
        };
        self.events.push_back(RelayEvent::ToClient(reply.to_wire()));
        self.events.push_back(RelayEvent::Done(outcome));
        self.phase = RelayPhase::Done;
    }
}

fn domain_of(address: &str) -> &str {
    address.rsplit_once('@').map_or(address, |(_, d)| d)
}

/// RCRAM-MD5 runs over the SMTP client's session ([`crate::smtp::client::Client::pump`]).
impl crate::smtp::client::Exchange for RcramClient {
    fn feed(&mut self, bytes: &[u8]) {
        RcramClient::feed(self, bytes);
    }

    fn take_output(&mut self) -> Vec<u8> {
        RcramClient::take_output(self)
    }

    fn is_done(&self) -> bool {
        RcramClient::is_done(self)
    }

    fn on_closed(&mut self) {
        RcramClient::on_closed(self);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sasl::{CramMd5Secret, ServerOptions, ServerSession, ServerStep};

    const NOW: i64 = 1_796_119_200; // 2026-12-01T10:00:00Z
    const RANDOM: [u8; 8] = [0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef];

    #[test]
    fn builds_and_parses_the_bound_challenge() {
        let c = Challenge::new(&RANDOM, NOW, "mx.lrsupport.test", "mx.galkam.test").unwrap();
        assert_eq!(c.text(), "<0123456789abcdef.1796119200.rcram.mx.lrsupport.test@mx.galkam.test>");
        assert_eq!(Challenge::parse(c.text().as_bytes()).unwrap(), c);
        assert_eq!(Challenge::new(&RANDOM[..7], NOW, "a.test", "b.test"), Err(ChallengeError::TooLittleRandom));
        assert!(Challenge::new(&RANDOM, NOW, "a test", "b.test").is_err());
        assert!(Challenge::new(&RANDOM, NOW, "a.test", "").is_err());
        for bad in [
            "",
            "<1896.697170952@postoffice.reston.mci.net>",
            "<1.2.rcram.@home.test>",
            "<1.2.rcram.v.test@>",
            "<1.2.cram.v.test@home.test>",
            "<.2.rcram.v.test@home.test>",
            "<1..rcram.v.test@home.test>",
            "<1.x.rcram.v.test@home.test>",
            "1.2.rcram.v.test@home.test",
            "<1.2.rcram.v.test@home.test",
            "<1.2.rcram.v_x.test@home.test>",
            "<1.99999999999999999999.rcram.v.test@home.test>",
        ] {
            assert!(Challenge::parse(bad.as_bytes()).is_err(), "{bad}");
        }
        assert!(Challenge::parse(&[0xff, 0xfe]).is_err());
    }

    #[test]
    fn client_checks_the_binding_and_the_age() {
        let c = Challenge::new(&RANDOM, NOW, "mx.lrsupport.test", "mx.galkam.test").unwrap().text();
        assert!(check_binding(c.as_bytes(), "mx.lrsupport.test", NOW).is_ok());
        assert!(check_binding(c.as_bytes(), "MX.LRSupport.test.", NOW + MAX_AGE_SECS).is_ok());
        assert!(check_binding(c.as_bytes(), "mx.lrsupport.test", NOW - MAX_AGE_SECS).is_ok());
        assert_eq!(
            check_binding(c.as_bytes(), "mx.lrsupport.test", NOW + MAX_AGE_SECS + 1),
            Err(BindingError::Stale { age_secs: MAX_AGE_SECS + 1 })
        );
        assert!(matches!(
            check_binding(c.as_bytes(), "mx.lrsupport.test", NOW - MAX_AGE_SECS - 1),
            Err(BindingError::Stale { .. })
        ));
        // The relay attack: the rogue got a challenge bound to itself (or to lrsupport) and
        // hands it to a client that dialed someone else.
        assert!(matches!(check_binding(c.as_bytes(), "rogue.test", NOW), Err(BindingError::WrongVerifier { .. })));
        assert!(matches!(check_binding(c.as_bytes(), "lrsupport.test", NOW), Err(BindingError::WrongVerifier { .. })));
        // A plain CRAM-MD5 challenge is not answered.
        assert!(matches!(
            check_binding(b"<1896.697170952@postoffice.reston.mci.net>", "postoffice.reston.mci.net", NOW),
            Err(BindingError::Malformed(_))
        ));
    }

    #[test]
    fn answer_is_rfc2195_cram_md5() {
        // RFC 2195 2's example.
        let response = answer("tim", "tanstaaftanstaaf", b"<1896.697170952@postoffice.reston.mci.net>").unwrap();
        assert_eq!(response, b"tim b913a602c7eda7a495b4e6e7334d3890");
        let secret = CramMd5Secret::from_password("tanstaaftanstaaf");
        assert_eq!(
            check_answer(&response, "<1896.697170952@postoffice.reston.mci.net>", &secret).as_deref(),
            Some("tim")
        );
        assert_eq!(check_answer(&response, "<1897.697170952@postoffice.reston.mci.net>", &secret), None);
        assert_eq!(check_answer(b"tim zz", "<x>", &secret), None);
    }

    #[test]
    fn answer_verifies_at_the_home_server_through_the_sasl_server() {
        let challenge = Challenge::new(&RANDOM, NOW, "mx.lrsupport.test", "mx.galkam.test").unwrap().text();
        let options = ServerOptions { cram_challenge: Some(challenge.clone()), ..ServerOptions::default() };
        let mut server = ServerSession::new(Mechanism::CramMd5, &options, sasl::Fresh::new(0, [0; sasl::SEED_LEN]));
        assert_eq!(server.start(None), ServerStep::Challenge(challenge.clone().into_bytes()));
        let response = answer("glen@galkam.test", "s3cret", challenge.as_bytes()).unwrap();
        assert_eq!(server.step(&response), ServerStep::NeedSecrets { authcid: "glen@galkam.test".into() });
        let secrets = sasl::Secrets { cram_md5: Some(CramMd5Secret::from_password("s3cret")), ..Default::default() };
        assert!(matches!(server.provide_secrets(Some(&secrets)), ServerStep::Success { .. }));
    }

    #[test]
    fn registry_accepts_each_challenge_once_and_only_while_current() {
        let mut registry = ChallengeRegistry::new(Duration::from_secs(300), 3);
        let c = registry.issue(&RANDOM, NOW, "mx.lrsupport.test", "mx.galkam.test", "Glen@galkam.test").unwrap();
        assert_eq!(registry.len(), 1);
        // The same random part again (a broken source) is refused while it is outstanding.
        assert_eq!(
            registry.issue(&RANDOM, NOW, "mx.lrsupport.test", "mx.galkam.test", "glen@galkam.test"),
            Err(RegistryError::Duplicate)
        );
        let issued = registry.take(&c.text(), NOW + 10).unwrap();
        assert_eq!(issued.address, "glen@galkam.test");
        assert_eq!(issued.verifier, "mx.lrsupport.test");
        // Answered twice: refused the second time.
        assert_eq!(registry.take(&c.text(), NOW + 11), None);
        // Never issued.
        assert_eq!(registry.take("<1.2.rcram.a.test@b.test>", NOW), None);
        // Expired.
        let c = registry.issue(&[7; 8], NOW, "a.test", "b.test", "x@b.test").unwrap();
        assert_eq!(registry.take(&c.text(), NOW + 301), None);
        // Full, and purged as time passes.
        for i in 0..3u8 {
            registry.issue(&[i; 8], NOW, "a.test", "b.test", "x@b.test").unwrap();
        }
        assert_eq!(registry.issue(&[9; 8], NOW, "a.test", "b.test", "x@b.test"), Err(RegistryError::Full));
        assert!(registry.issue(&[9; 8], NOW + 301, "a.test", "b.test", "x@b.test").is_ok());
        assert_eq!(registry.len(), 1);
    }

    #[test]
    fn a_verifier_has_at_most_32_challenges_outstanding_and_a_cancel_frees_one() {
        let mut registry = ChallengeRegistry::default();
        let mut issued = Vec::new();
        for i in 0..MAX_OUTSTANDING_PER_VERIFIER as u64 {
            let c = registry.issue(&i.to_be_bytes(), NOW, "Mx.Lrsupport.test", "mx.galkam.test", "g@galkam.test");
            issued.push(c.unwrap().text());
        }
        assert_eq!(registry.outstanding_for("mx.lrsupport.test"), MAX_OUTSTANDING_PER_VERIFIER);
        let next = |r: &mut ChallengeRegistry, verifier: &str, n: u64| {
            r.issue(&(1000 + n).to_be_bytes(), NOW, verifier, "mx.galkam.test", "g@galkam.test")
        };
        assert_eq!(next(&mut registry, "mx.lrsupport.test", 0), Err(RegistryError::VerifierFull));
        // Another verifier is not held up.
        assert!(next(&mut registry, "mx.other.test", 1).is_ok());
        // A cancel gives one back, and the cancelled challenge can no longer be answered.
        assert!(registry.forget(&issued[0]));
        assert!(!registry.forget(&issued[0]));
        assert_eq!(registry.take(&issued[0], NOW), None);
        assert!(next(&mut registry, "mx.lrsupport.test", 2).is_ok());
        assert_eq!(next(&mut registry, "mx.lrsupport.test", 3), Err(RegistryError::VerifierFull));
        // So does an answer, and expiry frees them all.
        assert!(registry.take(&issued[1], NOW).is_some());
        assert!(next(&mut registry, "mx.lrsupport.test", 4).is_ok());
        assert_eq!(next(&mut registry, "mx.lrsupport.test", 5), Err(RegistryError::VerifierFull));
        registry.purge(NOW + MAX_AGE_SECS + 1);
        assert_eq!((registry.len(), registry.outstanding_for("mx.lrsupport.test")), (0, 0));
    }

    #[test]
    fn home_server_verifies_the_answer_for_the_issued_address_only() {
        let mut registry = ChallengeRegistry::default();
        let c = registry.issue(&RANDOM, NOW, "mx.lrsupport.test", "mx.galkam.test", "glen@galkam.test").unwrap();
        let secret = CramMd5Secret::from_password("s3cret");
        let issued = registry.take(&c.text(), NOW + 1).unwrap();
        let good = answer("Glen@galkam.test", "s3cret", c.text().as_bytes()).unwrap();
        assert!(verify_answer(&issued, &c.text(), &good, Some(&secret)));
        assert!(!verify_answer(&issued, &c.text(), &good, None));
        let wrong_password = answer("glen@galkam.test", "guess", c.text().as_bytes()).unwrap();
        assert!(!verify_answer(&issued, &c.text(), &wrong_password, Some(&secret)));
        // Another account's right answer to this challenge does not log in as glen.
        let other = answer("ann@galkam.test", "s3cret", c.text().as_bytes()).unwrap();
        assert!(!verify_answer(&issued, &c.text(), &other, Some(&secret)));
        // An answer to another challenge does not fit this one.
        let elsewhere = answer("glen@galkam.test", "s3cret", b"<1.2.rcram.rogue.test@mx.galkam.test>").unwrap();
        assert!(!verify_answer(&issued, &c.text(), &elsewhere, Some(&secret)));
    }

    #[test]
    fn a_legacy_answer_decodes_to_its_user_and_digest() {
        // RFC 2195 2's example.
        let line = b"dGltIGI5MTNhNjAyYzdlZGE3YTQ5NWI0ZTZlNzMzNGQzODkw";
        let decoded = decode_answer(line).unwrap();
        assert_eq!(decoded.user, "tim");
        assert_eq!(decoded.digest[..2], [0xb9, 0x13]);
        assert_eq!(decode_answer(b"dGltIGI5MTNhNjAyYzdlZGE3YTQ5NWI0ZTZlNzMzNGQzODkw\r\n"), Ok(decoded));
        // The user is everything before the last space.
        let spaced = sasl::encode_response(b"a b@h.test 00112233445566778899aabbccddeeff");
        assert_eq!(decode_answer(spaced.as_bytes()).unwrap().user, "a b@h.test");
        let b64 = |t: &[u8]| sasl::encode_response(t);
        for (line, error) in [
            (b"*".to_vec(), AnswerError::Cancelled),
            (b"not base64!".to_vec(), AnswerError::NotBase64),
            (b64(b"\xff\xfe 00112233445566778899aabbccddeeff").into_bytes(), AnswerError::NotText),
            (b64(b"tim\r\n 00112233445566778899aabbccddeeff").into_bytes(), AnswerError::NotText),
            (b64(b"00112233445566778899aabbccddeeff").into_bytes(), AnswerError::NoUser),
            (b64(b" 00112233445566778899aabbccddeeff").into_bytes(), AnswerError::NoUser),
            (b64(b"tim 0011").into_bytes(), AnswerError::BadDigest),
            (b64(b"tim 00112233445566778899aabbccddeezz").into_bytes(), AnswerError::BadDigest),
            (b64(b"tim \xc3\xa900112233445566778899aabbccddee").into_bytes(), AnswerError::BadDigest),
            (b"".to_vec(), AnswerError::NoUser),
        ] {
            assert_eq!(decode_answer(&line), Err(error), "{}", String::from_utf8_lossy(&line));
        }
    }

    #[test]
    fn a_legacy_answer_is_relayed_only_for_the_address_claimed() {
        let challenge = b"<1896.697170952@postoffice.reston.mci.net>";
        let ceo = sasl::encode_response(&answer("ceo@h.test", "s3cret", challenge).unwrap());
        let mallory = sasl::encode_response(&answer("mallory@h.test", "mine", challenge).unwrap());
        assert!(answer_is_for(ceo.as_bytes(), "ceo@h.test"));
        // Mallory's own answer to `AUTH RCRAM-MD5 ceo@h.test` (issue 19, item 3).
        assert!(!answer_is_for(mallory.as_bytes(), "ceo@h.test"));
        // Exact: no case folding, no trailing text.
        assert!(!answer_is_for(ceo.as_bytes(), "CEO@h.test"));
        assert!(!answer_is_for(ceo.as_bytes(), "ceo@h.test.evil"));
        assert!(!answer_is_for(b"*", "ceo@h.test"));
        assert!(!answer_is_for(b"!!", "ceo@h.test"));
    }

    #[test]
    fn auth_arguments() {
        assert_eq!(parse_rcram_argument(Some("glen@galkam.test")).unwrap(), "glen@galkam.test");
        assert!(parse_rcram_argument(None).is_err());
        assert!(parse_rcram_argument(Some("glen")).is_err());
        assert!(parse_rcram_argument(Some("glen@galkam.test extra")).is_err());
        assert_eq!(
            parse_verify_arguments("glen@galkam.test mx.lrsupport.test").unwrap(),
            ("glen@galkam.test".to_string(), "mx.lrsupport.test".to_string())
        );
        assert!(parse_verify_arguments("glen@galkam.test").is_err());
        assert!(parse_verify_arguments("glen@galkam.test mx lrsupport").is_err());
        assert!(parse_verify_arguments("glen@galkam.test mx_lrsupport").is_err());
    }

    fn b64(text: &str) -> String {
        sasl::encode_challenge(text.as_bytes())
    }

    fn run(client: &mut RcramClient, server_lines: &[&str]) -> (Vec<String>, Option<RcramOutcome>) {
        client.start();
        let mut sent = vec![String::from_utf8(client.take_output()).unwrap()];
        for line in server_lines {
            client.feed(format!("{line}\r\n").as_bytes());
            let out = client.take_output();
            if !out.is_empty() {
                sent.push(String::from_utf8(out).unwrap());
            }
        }
        let outcome = client.poll_event().map(|RcramEvent::Done(o)| o);
        (sent, outcome)
    }

    #[test]
    fn client_logs_in_with_a_bound_challenge() {
        let challenge = Challenge::new(&RANDOM, NOW, "mx.lrsupport.test", "mx.galkam.test").unwrap().text();
        let mut client = RcramClient::new("glen@galkam.test", "s3cret", "mx.lrsupport.test", NOW + 5);
        let (sent, outcome) = run(
            &mut client,
            &[&format!("334 {}", b64(&challenge)), "235 2.7.0 Authenticated as glen@galkam.test (remote)"],
        );
        assert_eq!(sent[0], "AUTH RCRAM-MD5 glen@galkam.test\r\n");
        let expected = answer("glen@galkam.test", "s3cret", challenge.as_bytes()).unwrap();
        assert_eq!(sent[1], format!("{}\r\n", sasl::encode_response(&expected)));
        assert!(matches!(outcome, Some(RcramOutcome::Authenticated(r)) if r.code == 235));
        assert!(client.is_done());
    }

    #[test]
    fn client_refuses_a_challenge_bound_elsewhere_or_stale() {
        let rogue = Challenge::new(&RANDOM, NOW, "rogue.test", "mx.galkam.test").unwrap().text();
        let mut client = RcramClient::new("glen@galkam.test", "s3cret", "mx.lrsupport.test", NOW);
        let (sent, outcome) =
            run(&mut client, &[&format!("334 {}", b64(&rogue)), "501 5.0.0 Authentication cancelled"]);
        assert_eq!(sent[1], "*\r\n");
        assert!(matches!(
            outcome,
            Some(RcramOutcome::Cancelled { why: BindingError::WrongVerifier { .. }, reply }) if reply.code == 501
        ));
        let old = Challenge::new(&RANDOM, NOW - 600, "mx.lrsupport.test", "mx.galkam.test").unwrap().text();
        let mut client = RcramClient::new("glen@galkam.test", "s3cret", "mx.lrsupport.test", NOW);
        let (sent, outcome) = run(&mut client, &[&format!("334 {}", b64(&old)), "501 5.0.0 cancelled"]);
        assert_eq!(sent[1], "*\r\n");
        assert!(matches!(outcome, Some(RcramOutcome::Cancelled { why: BindingError::Stale { .. }, .. })));
        // A plain CRAM-MD5 challenge (the legacy proxy) and garbage are refused too.
        for line in [format!("334 {}", b64("<1896.697170952@postoffice.reston.mci.net>")), "334 !!!".to_string()] {
            let mut client = RcramClient::new("glen@galkam.test", "s3cret", "mx.lrsupport.test", NOW);
            let (sent, outcome) = run(&mut client, &[&line, "501 5.0.0 cancelled"]);
            assert_eq!(sent[1], "*\r\n");
            assert!(matches!(outcome, Some(RcramOutcome::Cancelled { .. })));
        }
    }

    #[test]
    fn client_reports_refusals_and_temporary_failures() {
        let challenge = Challenge::new(&RANDOM, NOW, "mx.lrsupport.test", "mx.galkam.test").unwrap().text();
        type Case<'a> = (&'a [&'a str], fn(&RcramOutcome) -> bool);
        let cases: [Case; 5] = [
            (&["454 4.7.0 Home server unreachable"], |o| matches!(o, RcramOutcome::Temporary(r) if r.code == 454)),
            (&["535 5.7.8 Authentication credentials invalid"], |o| matches!(o, RcramOutcome::Refused(_))),
            (&["334 CHALLENGE_PLACEHOLDER", "535 5.7.8 Authentication credentials invalid"], |o| {
                matches!(o, RcramOutcome::Refused(_))
            }),
            // A 235 before any answer proves nothing.
            (&["235 2.7.0 ok"], |o| matches!(o, RcramOutcome::Failed(_))),
            (&["504 5.5.4 Unrecognized authentication type"], |o| matches!(o, RcramOutcome::Failed(_))),
        ];
        for (lines, check) in cases {
            let lines: Vec<String> =
                lines.iter().map(|l| l.replace("CHALLENGE_PLACEHOLDER", &b64(&challenge))).collect();
            let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
            let mut client = RcramClient::new("glen@galkam.test", "s3cret", "mx.lrsupport.test", NOW);
            let (_, outcome) = run(&mut client, &lines);
            assert!(check(outcome.as_ref().unwrap()), "{lines:?}: {outcome:?}");
        }
        let mut client = RcramClient::new("glen@galkam.test", "s3cret", "mx.lrsupport.test", NOW);
        client.start();
        client.on_closed();
        assert!(matches!(client.poll_event(), Some(RcramEvent::Done(RcramOutcome::Failed(r))) if r.code == 421));
    }

    fn drain(relay: &mut VerifierRelay) -> Vec<RelayEvent> {
        std::iter::from_fn(|| relay.poll_event()).collect()
    }

    fn ehlo(lines: &[&str]) -> Vec<String> {
        lines.iter().map(|l| l.to_string()).collect()
    }

    fn last_to_client(events: &[RelayEvent]) -> String {
        events
            .iter()
            .rev()
            .find_map(|e| match e {
                RelayEvent::ToClient(b) => Some(String::from_utf8_lossy(b).into_owned()),
                _ => None,
            })
            .unwrap_or_default()
    }

    #[test]
    fn verifier_relays_the_bound_challenge_and_the_answer() {
        let home_ehlo = ehlo(&["mx.galkam.test", "PIPELINING", "AUTH CRAM-MD5 X-RCRAM-VERIFY"]);
        assert!(offers_verify(&home_ehlo));
        assert!(!offers_verify(&ehlo(&["mx.galkam.test", "AUTH CRAM-MD5 PLAIN"])));
        let mut relay = VerifierRelay::new("glen@galkam.test", "mx.lrsupport.test");
        relay.home_ready(&home_ehlo);
        assert_eq!(
            drain(&mut relay),
            [RelayEvent::ToHome(b"AUTH X-RCRAM-VERIFY glen@galkam.test mx.lrsupport.test\r\n".to_vec())]
        );
        let challenge = Challenge::new(&RANDOM, NOW, "mx.lrsupport.test", "mx.galkam.test").unwrap().text();
        let line = format!("334 {}\r\n", b64(&challenge));
        relay.feed_home(line.as_bytes());
        assert_eq!(drain(&mut relay), [RelayEvent::ToClient(line.into_bytes()), RelayEvent::ReadClient]);
        // The client (which dialed mx.lrsupport.test) answers; the answer goes on unchanged.
        let response = sasl::encode_response(&answer("glen@galkam.test", "s3cret", challenge.as_bytes()).unwrap());
        relay.client_line(response.as_bytes());
        assert_eq!(drain(&mut relay), [RelayEvent::ToHome(format!("{response}\r\n").into_bytes())]);
        relay.feed_home(b"235 2.7.0 Authentication successful (verification only)\r\n");
        assert_eq!(
            drain(&mut relay),
            [
                RelayEvent::ToClient(b"235 2.7.0 Authenticated as glen@galkam.test (remote)\r\n".to_vec()),
                RelayEvent::Done(RelayOutcome::Authenticated("glen@galkam.test".into())),
            ]
        );
        assert!(relay.is_done());
    }

    #[test]
    fn verifier_gives_the_client_the_spec_replies_for_every_failure() {
        let home_ehlo = ehlo(&["mx.galkam.test", "AUTH X-RCRAM-VERIFY"]);
        // No X-RCRAM-VERIFY, or unreachable: 454 4.7.0.
        let mut relay = VerifierRelay::new("glen@galkam.test", "mx.lrsupport.test");
        relay.home_ready(&ehlo(&["mx.galkam.test", "AUTH CRAM-MD5"]));
        let events = drain(&mut relay);
        assert!(last_to_client(&events).starts_with("454 4.7.0 "));
        assert_eq!(events.last(), Some(&RelayEvent::Done(RelayOutcome::Temporary)));
        let mut relay = VerifierRelay::new("glen@galkam.test", "mx.lrsupport.test");
        relay.home_unreachable();
        assert!(last_to_client(&drain(&mut relay)).starts_with("454 4.7.0 "));
        // The home server refuses at once (535 5.7.0: we are not who we say; 5.7.8 unknown).
        for refusal in ["535 5.7.0 not an address of mx.lrsupport.test", "535 5.7.8 invalid"] {
            let mut relay = VerifierRelay::new("glen@galkam.test", "mx.lrsupport.test");
            relay.home_ready(&home_ehlo);
            relay.feed_home(format!("{refusal}\r\n").as_bytes());
            let events = drain(&mut relay);
            assert!(last_to_client(&events).starts_with("535 5.7.8 "), "{refusal}");
            assert_eq!(events.last(), Some(&RelayEvent::Done(RelayOutcome::Refused)));
        }
        // A wrong answer; a cancel; garbage; a broken home server.
        let challenge = format!("334 {}\r\n", b64("<1.2.rcram.mx.lrsupport.test@mx.galkam.test>"));
        let cases: [(&[u8], &str, &str, RelayOutcome); 4] = [
            (b"Z2xlbiBiYWQ=", "535 5.7.8 invalid\r\n", "535 5.7.8 ", RelayOutcome::Refused),
            (b"*", "501 5.0.0 cancelled\r\n", "501 5.0.0 ", RelayOutcome::Cancelled),
            (b"not base64!", "", "501 5.5.2 ", RelayOutcome::Malformed),
            (b"Z2xlbiBiYWQ=", "garbage\r\n", "454 4.7.0 ", RelayOutcome::Temporary),
        ];
        for (client, home, expected, outcome) in cases {
            let mut relay = VerifierRelay::new("glen@galkam.test", "mx.lrsupport.test");
            relay.home_ready(&home_ehlo);
            relay.feed_home(challenge.as_bytes());
            drain(&mut relay);
            relay.client_line(client);
            relay.feed_home(home.as_bytes());
            let events = drain(&mut relay);
            assert!(last_to_client(&events).starts_with(expected), "{events:?}");
            assert_eq!(events.last(), Some(&RelayEvent::Done(outcome)));
        }
        // A 235 before any answer was relayed proves nothing.
        let mut relay = VerifierRelay::new("glen@galkam.test", "mx.lrsupport.test");
        relay.home_ready(&home_ehlo);
        relay.feed_home(b"235 2.7.0 ok\r\n");
        assert_eq!(drain(&mut relay).last(), Some(&RelayEvent::Done(RelayOutcome::Temporary)));
        // A challenge line with a bare CR is not passed on.
        let mut relay = VerifierRelay::new("glen@galkam.test", "mx.lrsupport.test");
        relay.home_ready(&home_ehlo);
        relay.feed_home(b"334 abc\rdef\r\n");
        assert_eq!(drain(&mut relay).last(), Some(&RelayEvent::Done(RelayOutcome::Temporary)));
    }
}
