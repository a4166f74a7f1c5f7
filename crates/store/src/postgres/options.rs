//! Where the PostgreSQL store connects to and how: the URL of `[store] url`, read once
//! here, for the config check and for the connection alike.

use std::path::PathBuf;
use std::time::Duration;

use crate::error::{StoreError, StoreResult};

/// Connections the pool keeps at most unless told otherwise.
const DEFAULT_MAX_CONNECTIONS: usize = 16;
/// How long a new connection may take (TCP, TLS, authentication) unless the URL says
/// (`connect_timeout`).
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How to reach the database: `[store]` with `backend = "postgres"`.
#[derive(Clone)]
pub struct PostgresOptions {
    /// `postgres://user@host:port/database?sslmode=require`, without a password.
    pub url: String,
    /// The password (from `[store] password_file`, never the URL or a command line).
    pub password: Option<String>,
    /// Extra CA certificates (PEM) the server's certificate is verified against, beside
    /// the system's roots.
    pub ca_file: Option<PathBuf>,
    /// Connections kept at most.
    pub max_connections: usize,
}

impl std::fmt::Debug for PostgresOptions {
    /// Without the password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresOptions")
            .field("url", &self.url)
            .field("password", &self.password.as_ref().map(|_| "..."))
            .field("ca_file", &self.ca_file)
            .field("max_connections", &self.max_connections)
            .finish()
    }
}

impl PostgresOptions {
    pub fn new(url: impl Into<String>) -> PostgresOptions {
        PostgresOptions { url: url.into(), password: None, ca_file: None, max_connections: DEFAULT_MAX_CONNECTIONS }
    }

    /// Whether `url` is one the store can use, without connecting: the config's check of
    /// `[store] url`. The error says what is wrong, never repeating the URL (it might hold
    /// a password).
    pub fn check_url(url: &str) -> StoreResult<()> {
        parse_url(url).map(|_| ())
    }
}

/// The URL, parsed: tokio-postgres's settings, and whether TLS is asked for.
pub(super) struct Target {
    pub config: tokio_postgres::Config,
    pub tls: bool,
}

/// Reads a `postgres://` URL. `sslmode` is taken out before tokio-postgres reads the
/// rest, since tokio-postgres knows only disable, prefer and require:
/// - absent or `disable`: no TLS;
/// - `require` or `verify-full`: TLS, and the server's certificate verified for the host
///   name against the system's roots plus `ca_file` (stricter than libpq's `require`,
///   which checks nothing: a store holds every mailbox and the password hashes);
/// - `prefer`, `allow`, `verify-ca`: refused, as TLS that may silently not happen, or
///   a certificate not checked for the host.
///
/// A password in the URL is refused: it would show in `ps` and in logs (the password goes
/// in `[store] password_file`).
pub(super) fn parse_url(url: &str) -> StoreResult<Target> {
    let invalid = |what: String| StoreError::Invalid(what);
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        return Err(invalid("must be a URL of the form postgres://user@host:port/database".into()));
    }
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    let mut sslmode = None;
    let mut rest = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("sslmode", value)) => sslmode = Some(value),
            _ => rest.push(pair),
        }
    }
    let tls = match sslmode {
        None | Some("disable") => false,
        Some("require" | "verify-full") => true,
        Some(other) => {
            return Err(invalid(format!(
                "sslmode={other} is not supported: use require or verify-full (TLS, the server's certificate \
                 verified), or disable"
            )))
        }
    };
    let url = if rest.is_empty() { base.to_string() } else { format!("{base}?{}", rest.join("&")) };
    let mut config: tokio_postgres::Config = url.parse().map_err(|e| invalid(format!("not a PostgreSQL URL: {e}")))?;
    if config.get_password().is_some() {
        return Err(invalid("must not hold a password: put it in the file named by store.password_file".into()));
    }
    if config.get_hosts().is_empty() {
        return Err(invalid("names no host".into()));
    }
    if config.get_user().is_none() {
        return Err(invalid("names no user (postgres://user@host/database)".into()));
    }
    if config.get_dbname().is_none() {
        return Err(invalid("names no database (postgres://user@host/database)".into()));
    }
    config.ssl_mode(if tls {
        tokio_postgres::config::SslMode::Require
    } else {
        tokio_postgres::config::SslMode::Disable
    });
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(DEFAULT_CONNECT_TIMEOUT);
    }
    if config.get_application_name().is_none() {
        config.application_name("vouchmail");
    }
    // Every session commits durably (SPEC 11: a 250 only after the commit is on disk),
    // whatever the server's, the database's or the role's default: a startup option is
    // set before the first statement and holds for the whole session.
    let options = match config.get_options() {
        Some(given) => format!("{given} -c synchronous_commit=on"),
        None => "-c synchronous_commit=on".to_string(),
    };
    config.options(&options);
    Ok(Target { config, tls })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_read_with_their_tls_mode() {
        let target = parse_url("postgres://mail@db.example:5433/vouchmail").unwrap();
        assert!(!target.tls);
        assert_eq!(target.config.get_user(), Some("mail"));
        assert_eq!(target.config.get_ports(), [5433]);
        assert_eq!(target.config.get_dbname(), Some("vouchmail"));
        assert_eq!(target.config.get_options(), Some("-c synchronous_commit=on"));
        for mode in ["require", "verify-full"] {
            let target = parse_url(&format!("postgresql://mail@db.example/vouchmail?sslmode={mode}")).unwrap();
            assert!(target.tls, "{mode}");
            assert_eq!(target.config.get_ssl_mode(), tokio_postgres::config::SslMode::Require);
        }
        let target =
            parse_url("postgres://mail@db.example/v?sslmode=disable&options=-c%20statement_timeout%3D5000").unwrap();
        assert!(!target.tls);
        assert_eq!(target.config.get_options(), Some("-c statement_timeout=5000 -c synchronous_commit=on"));
    }

    #[test]
    fn bad_urls_are_refused_without_repeating_them() {
        for (url, expected) in [
            ("postgres://mail:s3cret@db.example/v", "must not hold a password"),
            ("postgres://mail@db.example/v?password=s3cret", "must not hold a password"),
            ("postgres://mail@db.example/v?sslmode=prefer", "sslmode=prefer is not supported"),
            ("postgres://mail@db.example/v?sslmode=verify-ca", "sslmode=verify-ca is not supported"),
            ("mysql://mail@db.example/v", "must be a URL"),
            ("host=db.example user=mail", "must be a URL"),
            ("postgres://db.example/v", "names no user"),
            ("postgres://mail@db.example", "names no database"),
            ("postgres://mail@db.example/v?nonsense=1", "not a PostgreSQL URL"),
        ] {
            let error = PostgresOptions::check_url(url).unwrap_err();
            assert!(matches!(&error, StoreError::Invalid(m) if m.contains(expected)), "{url}: {error}");
            assert!(!error.to_string().contains("s3cret"), "{url}: {error}");
        }
    }

    #[test]
    fn debug_hides_the_password() {
        let mut options = PostgresOptions::new("postgres://mail@db.example/v");
        options.password = Some("s3cret".into());
        assert!(!format!("{options:?}").contains("s3cret"));
    }
}
