//! A private Postfix instance for interop tests (needs root, as CI has).
#![allow(dead_code)]

use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use super::tool;

/// A private Postfix instance in a temp dir (like bench/inbound.sh): smtpd on 127.0.0.1,
/// virtual maildirs for `domain` (one per local part in `mailboxes`), mail for local.test
/// relayed to `relay_port`.
pub struct Postfix {
    dir: tempfile::TempDir,
}

impl Postfix {
    pub fn start(port: u16, relay_port: u16, domain: &str, mailboxes: &[&str]) -> Option<Postfix> {
        // Postfix runs its daemons as the postfix user: it needs root.
        let uid = Command::new("id").arg("-u").output().ok()?;
        if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
            // Straight to stderr: the test harness captures eprintln! of a passing test, and a
            // skip must show. The test thread carries the test's name.
            let test = std::thread::current().name().unwrap_or("a test").to_string();
            let _ =
                writeln!(std::io::stderr(), "{test}: skipped: needs root (a private Postfix runs as the postfix user)");
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o755)).unwrap();
        for sub in ["etc", "queue", "data", "mail"] {
            std::fs::create_dir_all(root.join(sub)).unwrap();
        }
        let chown = |who: &str, path: &Path| {
            assert!(Command::new("chown").arg(who).arg(path).status().unwrap().success());
        };
        let id = |flag: &str| {
            String::from_utf8_lossy(&Command::new("id").args([flag, "nobody"]).output().unwrap().stdout)
                .trim()
                .to_string()
        };
        let (uid, gid) = (id("-u"), id("-g"));
        chown("postfix", &root.join("data"));
        chown(&format!("{uid}:{gid}"), &root.join("mail"));
        let r = root.display();
        let main_cf = format!(
            "compatibility_level = 3.6\nqueue_directory = {r}/queue\ndata_directory = {r}/data\n\
             command_directory = /usr/sbin\ndaemon_directory = /usr/lib/postfix/sbin\nshlib_directory = /usr/lib/postfix\n\
             meta_directory = /etc/postfix\nmail_owner = postfix\nsetgid_group = postdrop\n\
             maillog_file_prefixes = {r}\nmaillog_file = {r}/maillog\n\
             myhostname = postfix.remote.test\nmydomain = remote.test\nmyorigin = $myhostname\nmydestination =\n\
             inet_interfaces = 127.0.0.1\ninet_protocols = ipv4\nmynetworks = 127.0.0.0/8\nrelayhost =\n\
             alias_maps =\nalias_database =\nbiff = no\nsmtputf8_enable = no\n\
             virtual_mailbox_domains = {domain}\nvirtual_mailbox_base = {r}/mail\n\
             virtual_mailbox_maps = texthash:{r}/etc/vmailbox\nvirtual_uid_maps = static:{uid}\n\
             virtual_gid_maps = static:{gid}\nvirtual_minimum_uid = 1\n\
             transport_maps = texthash:{r}/etc/transport\nsmtp_tls_security_level = none\n"
        );
        std::fs::write(root.join("etc/main.cf"), main_cf).unwrap();
        let vmailbox: String = mailboxes.iter().map(|m| format!("{m}@{domain} {m}/\n")).collect();
        std::fs::write(root.join("etc/vmailbox"), vmailbox).unwrap();
        std::fs::write(root.join("etc/transport"), format!("local.test smtp:[127.0.0.1]:{relay_port}\n")).unwrap();
        let master_cf = format!(
            "127.0.0.1:{port} inet n - n - - smtpd\n\
             pickup unix n - n 60 1 pickup\ncleanup unix n - n - 0 cleanup\nqmgr unix n - n 300 1 qmgr\n\
             rewrite unix - - n - - trivial-rewrite\nbounce unix - - n - 0 bounce\ndefer unix - - n - 0 bounce\n\
             trace unix - - n - 0 bounce\nverify unix - - n - 1 verify\nflush unix n - n 1000? 0 flush\n\
             proxymap unix - - n - - proxymap\nproxywrite unix - - n - 1 proxymap\nsmtp unix - - n - - smtp\n\
             relay unix - - n - - smtp\nshowq unix n - n - - showq\nerror unix - - n - - error\n\
             retry unix - - n - - error\ndiscard unix - - n - - discard\nlocal unix - n n - - local\n\
             virtual unix - n n - - virtual\nlmtp unix - - n - - lmtp\nanvil unix - - n - 1 anvil\n\
             scache unix - - n - 1 scache\npostlog unix-dgram n - n - 1 postlogd\n"
        );
        std::fs::write(root.join("etc/master.cf"), master_cf).unwrap();
        let status = Command::new(tool("postfix")).arg("-c").arg(root.join("etc")).arg("start").status().unwrap();
        assert!(
            status.success(),
            "postfix start: {}",
            std::fs::read_to_string(root.join("maillog")).unwrap_or_default()
        );
        Some(Postfix { dir })
    }

    /// The messages in one mailbox's maildir.
    pub fn maildir_messages(&self, mailbox: &str) -> Vec<String> {
        let mut out = Vec::new();
        for sub in ["new", "cur"] {
            if let Ok(entries) = std::fs::read_dir(self.dir.path().join("mail").join(mailbox).join(sub)) {
                for e in entries.flatten() {
                    out.push(std::fs::read_to_string(e.path()).unwrap_or_default());
                }
            }
        }
        out
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("maillog")).unwrap_or_default()
    }
}

impl Drop for Postfix {
    fn drop(&mut self) {
        let _ = Command::new(tool("postfix")).arg("-c").arg(self.dir.path().join("etc")).args(["stop"]).status();
        std::thread::sleep(Duration::from_millis(300));
    }
}
