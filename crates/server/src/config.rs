//! The TOML configuration. Every key has a default (SPEC 1 dev defaults), so a file needs
//! only the keys it changes; `vouchmail.example.toml` documents each one.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Our host name: greeting, EHLO, Received and Authentication-Results.
    pub hostname: String,
    /// Where the store lives.
    pub data_dir: PathBuf,
    /// tracing filter, e.g. "info" or "vouchmail_server=debug".
    pub log: String,
    pub listeners: Listeners,
    pub smtp: Smtp,
    pub bootstrap: Bootstrap,
    /// How long sessions may run on after SIGTERM before they are cut off.
    pub shutdown_grace_secs: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            hostname: "localhost".into(),
            data_dir: PathBuf::from("./vouchmail-data"),
            log: "info".into(),
            listeners: Listeners::default(),
            smtp: Smtp::default(),
            bootstrap: Bootstrap::default(),
            shutdown_grace_secs: 10,
        }
    }
}

/// Listen addresses per role; an empty list turns the role off.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Listeners {
    /// SMTP MX: mail from other servers (standard port 25).
    pub mx: Vec<SocketAddr>,
    /// Submission with STARTTLS (standard port 587).
    pub submission: Vec<SocketAddr>,
}

impl Default for Listeners {
    fn default() -> Self {
        Listeners {
            mx: vec![([127, 0, 0, 1], 2525).into()],
            submission: vec![([127, 0, 0, 1], 2587).into()],
        }
    }
}

/// SMTP limits and timeouts (SPEC 3).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Smtp {
    /// Largest message accepted, in octets (advertised as SIZE, RFC 1870).
    pub max_message_size: usize,
    /// Recipients per message (RFC 5321 4.5.3.1.8: at least 100).
    pub max_recipients: usize,
    /// Received fields before a message counts as looping (RFC 5321 6.3).
    pub max_hops: usize,
    /// Negative replies before a session is closed with 421.
    pub max_errors: u32,
    /// Seconds to wait for a command (RFC 5321 4.5.3.2.7: at least 300).
    pub command_timeout_secs: u64,
    /// Seconds to wait for the next block of message data (RFC 5321 4.5.3.2.5: 180).
    pub data_timeout_secs: u64,
    /// Simultaneous connections over all SMTP listeners.
    pub max_connections: usize,
    /// Simultaneous connections from one IP address.
    pub max_connections_per_ip: usize,
}

impl Default for Smtp {
    fn default() -> Self {
        Smtp {
            max_message_size: 25 * 1024 * 1024,
            max_recipients: 100,
            max_hops: 50,
            max_errors: 20,
            command_timeout_secs: 300,
            data_timeout_secs: 180,
            max_connections: 2000,
            max_connections_per_ip: 50,
        }
    }
}

/// What the first start creates in an empty store.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Bootstrap {
    /// The first local domain; empty for none.
    pub domain: String,
    /// Its sender policy: "tag" in the dev default, so a first unauthenticated test
    /// message is delivered and marked `none`.
    pub policy: String,
    /// Create postmaster@<domain> with a generated password, printed once.
    pub postmaster: bool,
}

impl Default for Bootstrap {
    fn default() -> Self {
        Bootstrap {
            domain: "localhost".into(),
            policy: "tag".into(),
            postmaster: true,
        }
    }
}

impl Config {
    /// Reads a config file, or the defaults when `path` is None.
    pub fn load(path: Option<&Path>) -> Result<Config, String> {
        let Some(path) = path else {
            return Ok(Config::default());
        };
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        Config::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    pub fn parse(text: &str) -> Result<Config, String> {
        let config: Config = toml::from_str(text).map_err(|e| e.to_string())?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), String> {
        if self.hostname.is_empty() || self.hostname.contains(char::is_whitespace) {
            return Err("hostname must be a host name".into());
        }
        if self.smtp.max_recipients < 1 {
            return Err("smtp.max_recipients must be at least 1".into());
        }
        if self
            .bootstrap
            .policy
            .parse::<vouchmail_store::SenderPolicy>()
            .is_err()
        {
            return Err(format!(
                "bootstrap.policy '{}' must be require, tag or accept",
                self.bootstrap.policy
            ));
        }
        Ok(())
    }

    pub fn store_path(&self) -> PathBuf {
        self.data_dir.join("vouchmail.db")
    }

    pub fn command_timeout(&self) -> Duration {
        Duration::from_secs(self.smtp.command_timeout_secs)
    }

    pub fn data_timeout(&self) -> Duration {
        Duration::from_secs(self.smtp.data_timeout_secs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_is_the_defaults() {
        assert_eq!(Config::parse("").unwrap(), Config::default());
    }

    #[test]
    fn partial_file_keeps_other_defaults() {
        let config =
            Config::parse("hostname = \"mx.example.org\"\n[smtp]\nmax_recipients = 500\n").unwrap();
        assert_eq!(config.hostname, "mx.example.org");
        assert_eq!(config.smtp.max_recipients, 500);
        assert_eq!(config.smtp.max_hops, 50);
        assert_eq!(config.listeners, Listeners::default());
    }

    #[test]
    fn unknown_keys_and_bad_values_are_errors() {
        assert!(Config::parse("hostnme = \"x\"")
            .unwrap_err()
            .contains("hostnme"));
        assert!(Config::parse("[listeners]\nmx = [\"nonsense\"]").is_err());
        assert!(Config::parse("[bootstrap]\npolicy = \"maybe\"")
            .unwrap_err()
            .contains("maybe"));
    }

    #[test]
    fn example_file_parses() {
        let example = include_str!("../../../vouchmail.example.toml");
        Config::parse(example).unwrap();
    }
}
