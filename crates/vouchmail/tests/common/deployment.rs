//! `vouchmail` as an operator runs it: a config file and data folder of its own
//! (`Deployment`), the admin CLI, and `serve` as a child process (`ServerProcess`), killed
//! when a test ends early so no process outlives it.

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::binary;

pub struct Deployment {
    _dir: tempfile::TempDir,
    pub config: PathBuf,
}

impl Deployment {
    pub fn new() -> Deployment {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("vouchmail.toml");
        let text = format!(
            "hostname = \"mx.local.test\"\ndata_dir = \"{}\"\nshutdown_grace_secs = 2\n\
             [listeners]\nmx = [\"127.0.0.1:0\"]\nsubmission = []\nsubmissions = []\nodmr = []\npop3 = []\npop3s = []\nimap = []\nimaps = []\nadmin = []\nmessenger = []\n\
             [bootstrap]\ndomain = \"local.test\"\npolicy = \"accept\"\npostmaster = true\n\
             [outbound]\nenabled = false\n[dmarc]\nverify = false\n",
            dir.path().join("data").display()
        );
        std::fs::write(&config, text).unwrap();
        Deployment { _dir: dir, config }
    }

    /// A deployment whose store is the PostgreSQL database at `url` (SPEC 11): nodes of
    /// one cluster are deployments with their own data_dir on the same database.
    pub fn on_postgres(url: &str) -> Deployment {
        let d = Deployment::new();
        let mut text = std::fs::read_to_string(&d.config).unwrap();
        text =
            text.replacen("[listeners]", &format!("[store]\nbackend = \"postgres\"\nurl = \"{url}\"\n[listeners]"), 1);
        std::fs::write(&d.config, text).unwrap();
        d
    }

    /// Rewrites the config file (a test's own settings: listeners, sections to append).
    pub fn configure(&self, edit: impl FnOnce(String) -> String) {
        let text = std::fs::read_to_string(&self.config).unwrap();
        std::fs::write(&self.config, edit(text)).unwrap();
    }

    /// Runs an admin command; returns (success, stdout, stderr).
    pub fn cli(&self, args: &[&str], stdin: Option<&str>) -> (bool, String, String) {
        let mut child = Command::new(binary())
            .arg("--config")
            .arg(&self.config)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        if let Some(input) = stdin {
            child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
        }
        drop(child.stdin.take());
        let out = child.wait_with_output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// A list command with `--json`: its array of objects.
    pub fn list(&self, args: &[&str]) -> Vec<serde_json::Value> {
        let (ok, out, err) = self.cli(&[args, &["--json"]].concat(), None);
        assert!(ok, "{args:?}: {err}");
        match serde_json::from_str(&out) {
            Ok(serde_json::Value::Array(rows)) => rows,
            other => panic!("{args:?} --json: not an array: {other:?} in {out}"),
        }
    }

    /// The exit status of an admin command.
    pub fn status(&self, args: &[&str]) -> Option<i32> {
        let out = Command::new(binary()).arg("--config").arg(&self.config).args(args).output().unwrap();
        out.status.code()
    }

    /// Starts `vouchmail serve`; returns the process, its MX address and the first line it
    /// printed on stdout, if any.
    pub fn serve(&self) -> (ServerProcess, SocketAddr, String) {
        let (server, addr, stdout, _) = self.serve_logging();
        (server, addr, stdout)
    }

    /// `serve`, also returning what it logged on stderr until it was running.
    pub fn serve_logging(&self) -> (ServerProcess, SocketAddr, String, Vec<String>) {
        let mut child = Command::new(binary())
            .arg("--config")
            .arg(&self.config)
            .arg("serve")
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let (later_tx, later) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut sent = false;
            let mut addr = None;
            let mut log = Vec::new();
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if !sent {
                    if let Some(found) = line.split("service=Mx local=").nth(1) {
                        addr = Some(found.trim().to_string());
                    }
                    // Ready once it says so (after the first start's bootstrap).
                    if line.contains("vouchmail is running") {
                        let _ = tx.send((addr.clone().unwrap_or_default(), std::mem::take(&mut log)));
                        sent = true;
                    } else {
                        log.push(line);
                    }
                } else {
                    if line.contains("WARN") || line.contains("ERROR") {
                        // Shown with the test's output when it fails.
                        eprintln!("serve: {line}");
                    }
                    let _ = later_tx.send(line);
                }
            }
        });
        let (addr, log) = rx.recv_timeout(Duration::from_secs(60)).expect("server did not start");
        let addr: SocketAddr = addr.parse().unwrap();
        // What serve prints on stdout (the generated password on first start).
        let stdout = child.stdout.take().unwrap();
        let (out_tx, out_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = out_tx.send(line);
            }
        });
        let stdout = out_rx.recv_timeout(Duration::from_millis(200)).unwrap_or_default();
        (ServerProcess(child, later), addr, stdout, log)
    }

    /// Runs `serve` or `init` that must fail: (exit status, stdout, stderr).
    pub fn refused(&self, command: &str) -> (Option<i32>, String, String) {
        let out = Command::new(binary()).arg("--config").arg(&self.config).arg(command).output().unwrap();
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        (out.status.code(), text(&out.stdout), text(&out.stderr))
    }

    pub fn store_exists(&self) -> bool {
        self.config.parent().unwrap().join("data").join("vouchmail.db").exists()
    }
}

/// A running `vouchmail serve`, killed if a test ends early so no process outlives it; with
/// what it logs after it started.
pub struct ServerProcess(pub Child, pub std::sync::mpsc::Receiver<String>);

impl ServerProcess {
    /// The next log line containing `needle`, within `limit`.
    pub fn log_line(&self, needle: &str, limit: Duration) -> String {
        let end = std::time::Instant::now() + limit;
        loop {
            let left = end.saturating_duration_since(std::time::Instant::now());
            match self.1.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return line,
                Ok(_) => {}
                Err(_) => panic!("no log line with {needle:?} within {limit:?}"),
            }
        }
    }

    pub fn signal(&mut self, signal: &str) {
        let status = Command::new("kill").arg(format!("-{signal}")).arg(self.0.id().to_string()).status().unwrap();
        assert!(status.success());
    }

    /// SIGTERM, then the exit status must be success.
    pub fn stop(mut self) {
        self.signal("TERM");
        let status = self.0.wait().unwrap();
        assert!(status.success(), "{status:?}");
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn subjects_in_mailbox(deployment: &Deployment, address: &str) -> Vec<String> {
    let rows = deployment.list(&["mailbox", "list", address]);
    rows.iter().map(|row| row["subject"].as_str().unwrap_or_default().to_string()).collect()
}

/// The address a `serve` logged for `service` (`Mx`, `Submission`, `Odmr`, `pop3`, ...)
/// while starting: its first listener of that kind.
pub fn listener_address(log: &[String], service: &str) -> SocketAddr {
    let (bare, quoted) = (format!("service={service} "), format!("service=\"{service}\" "));
    let line = log
        .iter()
        .find(|l| l.contains("listening") && (l.contains(&bare) || l.contains(&quoted)))
        .unwrap_or_else(|| panic!("no {service} listener in the log: {log:#?}"));
    let local = line.split("local=").nth(1).expect("local=").split_whitespace().next().unwrap();
    local.parse().unwrap()
}
