//! POP3 commands (RFC 1939 3, RFC 2449, RFC 2595, RFC 5034): parsing on the server side,
//! writing on the client side. One type serves both, so what the client writes is what the
//! server reads.

use std::fmt::Write as _;

use super::reply::Reply;

/// Longest argument of the commands that take message numbers and names (RFC 1939 3:
/// "each argument may be up to 40 characters long").
pub const MAX_ARGUMENT: usize = 40;

/// A POP3 command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// RFC 1939 7.
    User(String),
    /// RFC 1939 7: the rest of the line, spaces included.
    Pass(String),
    /// RFC 1939 7; never accepted here (see [`Reply::apop_unavailable`]).
    Apop {
        name: String,
        digest: String,
    },
    /// RFC 5034 4: `AUTH mechanism [initial-response]`. Without a mechanism it asks for
    /// the list of mechanisms (RFC 1734 practice, kept by most servers).
    Auth {
        mechanism: Option<String>,
        initial_response: Option<String>,
    },
    /// RFC 1939 5.
    Stat,
    List(Option<u32>),
    Retr(u32),
    Dele(u32),
    Noop,
    Rset,
    /// RFC 1939 5 and 6.
    Quit,
    /// RFC 1939 7: `TOP msg n`.
    Top {
        msg: u32,
        lines: u32,
    },
    /// RFC 1939 7.
    Uidl(Option<u32>),
    /// RFC 2449 5.
    Capa,
    /// RFC 2595 4.
    Stls,
}

impl Command {
    /// Whether the server answers with a multi-line response after `+OK` (RFC 1939 3).
    pub fn is_multiline(&self) -> bool {
        matches!(
            self,
            Command::List(None)
                | Command::Uidl(None)
                | Command::Retr(_)
                | Command::Top { .. }
                | Command::Capa
                | Command::Auth { mechanism: None, .. }
        )
    }

    /// The command line, CRLF included.
    pub fn to_line(&self) -> String {
        let mut line = String::new();
        // Writing to a String cannot fail.
        let _ = match self {
            Command::User(name) => write!(line, "USER {name}"),
            Command::Pass(password) => write!(line, "PASS {password}"),
            Command::Apop { name, digest } => write!(line, "APOP {name} {digest}"),
            Command::Auth { mechanism: None, .. } => write!(line, "AUTH"),
            Command::Auth { mechanism: Some(m), initial_response: None } => write!(line, "AUTH {m}"),
            Command::Auth { mechanism: Some(m), initial_response: Some(ir) } => write!(line, "AUTH {m} {ir}"),
            Command::Stat => write!(line, "STAT"),
            Command::List(None) => write!(line, "LIST"),
            Command::List(Some(n)) => write!(line, "LIST {n}"),
            Command::Retr(n) => write!(line, "RETR {n}"),
            Command::Dele(n) => write!(line, "DELE {n}"),
            Command::Noop => write!(line, "NOOP"),
            Command::Rset => write!(line, "RSET"),
            Command::Quit => write!(line, "QUIT"),
            Command::Top { msg, lines } => write!(line, "TOP {msg} {lines}"),
            Command::Uidl(None) => write!(line, "UIDL"),
            Command::Uidl(Some(n)) => write!(line, "UIDL {n}"),
            Command::Capa => write!(line, "CAPA"),
            Command::Stls => write!(line, "STLS"),
        };
        line.push_str("\r\n");
        line
    }
}

/// Parses one command line (without its CRLF). Keywords are case-insensitive (RFC 1939 3).
/// The error is the reply to send.
pub fn parse_command(line: &[u8]) -> Result<Command, Reply> {
    let (keyword, rest) = match line.iter().position(|&b| b == b' ') {
        Some(space) => (&line[..space], Some(&line[space + 1..])),
        None => (line, None),
    };
    // RFC 1939 3: keywords are three or four printable ASCII characters.
    if !(3..=4).contains(&keyword.len()) || !keyword.iter().all(u8::is_ascii_alphabetic) {
        return Err(Reply::unknown_command());
    }
    let mut upper = [0u8; 4];
    upper[..keyword.len()].copy_from_slice(keyword);
    upper.make_ascii_uppercase();
    let keyword = &upper[..keyword.len()];
    // PASS takes the rest of the line: RFC 1939 7 lets a password contain spaces.
    if keyword == b"PASS" {
        let password = rest.filter(|r| !r.is_empty()).ok_or_else(|| Reply::syntax("PASS needs a password"))?;
        let password = std::str::from_utf8(password).map_err(|_| Reply::syntax("Password is not UTF-8"))?;
        return Ok(Command::Pass(password.to_owned()));
    }
    let args = match rest {
        None => Vec::new(),
        Some(rest) => {
            let rest = std::str::from_utf8(rest).map_err(|_| Reply::syntax("Arguments are not UTF-8"))?;
            // Tolerate a trailing space and doubled separators; arguments have no spaces.
            rest.split(' ').filter(|a| !a.is_empty()).collect()
        }
    };
    let command = match keyword {
        b"USER" => match args.as_slice() {
            [name] => Command::User((*name).to_owned()),
            _ => return Err(Reply::syntax("USER needs exactly one argument")),
        },
        b"APOP" => match args.as_slice() {
            [name, digest] => Command::Apop { name: (*name).to_owned(), digest: (*digest).to_owned() },
            _ => return Err(Reply::syntax("APOP needs a name and a digest")),
        },
        b"AUTH" => match args.as_slice() {
            [] => Command::Auth { mechanism: None, initial_response: None },
            [mechanism] => Command::Auth { mechanism: Some((*mechanism).to_owned()), initial_response: None },
            [mechanism, ir] => {
                Command::Auth { mechanism: Some((*mechanism).to_owned()), initial_response: Some((*ir).to_owned()) }
            }
            _ => return Err(Reply::syntax("AUTH takes a mechanism and an optional initial response")),
        },
        b"STAT" => no_args(Command::Stat, &args)?,
        b"NOOP" => no_args(Command::Noop, &args)?,
        b"RSET" => no_args(Command::Rset, &args)?,
        b"QUIT" => no_args(Command::Quit, &args)?,
        b"CAPA" => no_args(Command::Capa, &args)?,
        b"STLS" => no_args(Command::Stls, &args)?,
        b"LIST" => Command::List(optional_number(&args)?),
        b"UIDL" => Command::Uidl(optional_number(&args)?),
        b"RETR" => Command::Retr(one_number(&args)?),
        b"DELE" => Command::Dele(one_number(&args)?),
        b"TOP" => match args.as_slice() {
            [msg, lines] => Command::Top { msg: number(msg)?, lines: number(lines)? },
            _ => return Err(Reply::syntax("TOP needs a message number and a line count")),
        },
        _ => return Err(Reply::unknown_command()),
    };
    Ok(command)
}

fn no_args(command: Command, args: &[&str]) -> Result<Command, Reply> {
    if args.is_empty() {
        Ok(command)
    } else {
        Err(Reply::syntax("This command takes no arguments"))
    }
}

fn optional_number(args: &[&str]) -> Result<Option<u32>, Reply> {
    match args {
        [] => Ok(None),
        [n] => number(n).map(Some),
        _ => Err(Reply::syntax("Too many arguments")),
    }
}

fn one_number(args: &[&str]) -> Result<u32, Reply> {
    match args {
        [n] => number(n),
        _ => Err(Reply::syntax("A message number is needed")),
    }
}

/// A decimal number (RFC 1939 3: message numbers and counts are decimal).
fn number(arg: &str) -> Result<u32, Reply> {
    if arg.is_empty() || arg.len() > MAX_ARGUMENT || !arg.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Reply::invalid_number());
    }
    // Larger than any maildrop: a valid number that names no message.
    Ok(arg.parse::<u32>().unwrap_or(u32::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(line: &str) -> Result<Command, Reply> {
        parse_command(line.as_bytes())
    }

    #[test]
    fn rfc1939_commands_parse_case_insensitively() {
        assert_eq!(parse("user mrose").unwrap(), Command::User("mrose".into()));
        assert_eq!(parse("PASS secret with spaces").unwrap(), Command::Pass("secret with spaces".into()));
        assert_eq!(parse("Stat").unwrap(), Command::Stat);
        assert_eq!(parse("LIST").unwrap(), Command::List(None));
        assert_eq!(parse("LIST 2").unwrap(), Command::List(Some(2)));
        assert_eq!(parse("RETR 1").unwrap(), Command::Retr(1));
        assert_eq!(parse("DELE 1").unwrap(), Command::Dele(1));
        assert_eq!(parse("TOP 1 10").unwrap(), Command::Top { msg: 1, lines: 10 });
        assert_eq!(parse("UIDL").unwrap(), Command::Uidl(None));
        assert_eq!(parse("uidl 3").unwrap(), Command::Uidl(Some(3)));
        assert_eq!(
            parse("APOP mrose c4c9334bac560ecc979e58001b3e22fb").unwrap().to_line(),
            "APOP mrose c4c9334bac560ecc979e58001b3e22fb\r\n"
        );
        for (line, command) in [
            ("NOOP", Command::Noop),
            ("RSET", Command::Rset),
            ("QUIT", Command::Quit),
            ("CAPA", Command::Capa),
            ("STLS", Command::Stls),
        ] {
            assert_eq!(parse(line).unwrap(), command);
        }
    }

    #[test]
    fn auth_forms() {
        assert_eq!(parse("AUTH").unwrap(), Command::Auth { mechanism: None, initial_response: None });
        assert_eq!(
            parse("AUTH PLAIN =").unwrap(),
            Command::Auth { mechanism: Some("PLAIN".into()), initial_response: Some("=".into()) }
        );
        assert!(parse("AUTH PLAIN a b").is_err());
    }

    #[test]
    fn bad_lines_get_the_right_error() {
        assert_eq!(parse("").unwrap_err(), Reply::unknown_command());
        assert_eq!(parse("XYZZY").unwrap_err(), Reply::unknown_command());
        assert_eq!(parse("RE1R 1").unwrap_err(), Reply::unknown_command());
        assert_eq!(parse("LIST x").unwrap_err(), Reply::invalid_number());
        assert_eq!(parse("RETR -1").unwrap_err(), Reply::invalid_number());
        assert!(parse("RETR").is_err());
        assert!(parse("STAT 1").is_err());
        assert!(parse("TOP 1").is_err());
        assert!(parse("USER").is_err());
        assert!(parse("PASS").is_err());
        assert!(parse("PASS ").is_err());
        assert!(parse("USER \u{ff}").is_ok());
        assert!(parse_command(b"USER \xff").is_err());
        // A huge but well-formed number names no message rather than failing to parse.
        assert_eq!(parse("RETR 99999999999").unwrap(), Command::Retr(u32::MAX));
    }

    #[test]
    fn lines_round_trip() {
        for command in [
            Command::User("a@b".into()),
            Command::Pass("p w".into()),
            Command::Auth { mechanism: Some("SCRAM-SHA-256".into()), initial_response: Some("=".into()) },
            Command::Auth { mechanism: Some("CRAM-MD5".into()), initial_response: None },
            Command::List(Some(7)),
            Command::Top { msg: 1, lines: 0 },
            Command::Uidl(None),
            Command::Stls,
        ] {
            let line = command.to_line();
            let parsed = parse_command(line.trim_end_matches("\r\n").as_bytes()).unwrap();
            assert_eq!(parsed, command);
        }
    }

    #[test]
    fn multiline_commands() {
        assert!(Command::List(None).is_multiline());
        assert!(!Command::List(Some(1)).is_multiline());
        assert!(Command::Retr(1).is_multiline());
        assert!(Command::Capa.is_multiline());
        assert!(!Command::Stat.is_multiline());
    }
}
