//! A throwaway PostgreSQL cluster for tests (issue 21 item 3): `initdb` as an unprivileged
//! user in a temporary folder, `pg_ctl` on a free port on 127.0.0.1, with the durability
//! settings the store relies on (`fsync=on`, `synchronous_commit=on`, SPEC 11) and TLS on
//! with a certificate from a [`TestCa`] for `localhost` and `127.0.0.1`.
//!
//! Starting a cluster takes about a second; a fresh database in it, about a tenth of one.
//! So a test process shares one cluster ([`TestPostgres::shared`]) and each test makes its
//! own database ([`TestPostgres::create_database`], or [`database_for`] which also prints
//! the skip note). Debian's binaries are found under `/usr/lib/postgresql/*/bin` (the
//! highest version), or in `$VOUCHMAIL_PG_BIN`; without them the helpers return None and a
//! test skips, unless `$VOUCHMAIL_REQUIRE_POSTGRES` is set (scripts/test.sh sets it after
//! installing PostgreSQL, so a broken install fails instead of skipping quietly).
//!
//! initdb and pg_ctl refuse to run as root (and CI runs as root): then they run as the
//! `postgres` user that Debian's package creates, through `runuser`, and the folder is
//! given to it. Every wait is bounded. A cluster is stopped (`pg_ctl stop -m immediate`)
//! and its folder removed on drop; the shared one, which as a static is never dropped, at
//! process exit; and a watchdog does the same when the test process dies without exiting
//! (killed, or a runner's timeout), so no postmaster outlives its tests.

use std::fs::File;
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::ca::TestCa;

/// The superuser the cluster is made with; tests connect as it, trusted on 127.0.0.1.
const SUPERUSER: &str = "postgres";
/// The system user initdb and pg_ctl run as when the tests run as root.
const SYSTEM_USER: &str = "postgres";
const INITDB_TIMEOUT: Duration = Duration::from_secs(120);
/// pg_ctl's own wait (`-t`), and ours around it a little longer.
const PG_CTL_WAIT_SECS: u64 = 60;
const CLIENT_TIMEOUT: Duration = Duration::from_secs(30);
/// Ports tried when another process takes the free port first.
const PORT_TRIES: usize = 5;

/// A running cluster; stopped and removed on drop.
pub struct TestPostgres {
    bin: PathBuf,
    /// The temporary folder: data/, sock/, tls/, logs.
    dir: PathBuf,
    port: u16,
    /// The user initdb and pg_ctl run as (when we are root).
    run_as: Option<String>,
    ca_file: PathBuf,
    stopped: AtomicBool,
}

/// The process's shared cluster (None: PostgreSQL is not installed).
static SHARED: OnceLock<Option<TestPostgres>> = OnceLock::new();
/// Makes database and folder names unique within the process.
static COUNTER: AtomicU64 = AtomicU64::new(0);

impl TestPostgres {
    /// Starts a cluster of its own (for a test that needs one alone); None when
    /// PostgreSQL is not installed. Panics, with the server's log, when it is installed but
    /// does not start.
    pub fn start() -> Option<TestPostgres> {
        let bin = match find_bin() {
            Some(bin) => bin,
            None if required() => panic!(
                "VOUCHMAIL_REQUIRE_POSTGRES is set but no PostgreSQL binaries were found under \
                 /usr/lib/postgresql/*/bin (apt-get install postgresql) or in $VOUCHMAIL_PG_BIN"
            ),
            None => return None,
        };
        let run_as = if is_root() {
            if user_ids(SYSTEM_USER).is_none() {
                panic!("running as root, and there is no '{SYSTEM_USER}' user to run initdb as (initdb refuses root)");
            }
            Some(SYSTEM_USER.to_string())
        } else {
            None
        };
        Some(TestPostgres::init(bin, run_as).unwrap_or_else(|e| panic!("test PostgreSQL: {e}")))
    }

    /// The process's one cluster, started on first use and stopped at exit.
    pub fn shared() -> Option<&'static TestPostgres> {
        SHARED
            .get_or_init(|| {
                let started = TestPostgres::start();
                if started.is_some() {
                    // SAFETY: registers a plain `extern "C" fn` with no arguments; it runs
                    // once at exit, when no test uses the cluster any more.
                    unsafe { libc::atexit(stop_shared_at_exit) };
                }
                started
            })
            .as_ref()
    }

    fn init(bin: PathBuf, run_as: Option<String>) -> Result<TestPostgres, String> {
        let dir = make_folder()?;
        let mut pg = TestPostgres {
            bin,
            dir: dir.clone(),
            port: 0,
            run_as,
            ca_file: dir.join("tls").join("ca.pem"),
            stopped: AtomicBool::new(false),
        };
        // From here on, dropping `pg` stops what started and removes the folder.
        pg.watchdog()?;
        let ca = TestCa::new(&dir.join("tls"), "vouchmail test PostgreSQL CA");
        let issued = ca.issue(&["localhost", "127.0.0.1"]);
        // PostgreSQL refuses a key others can read.
        set_mode(&issued.key, 0o600)?;
        for sub in ["sock", "tls"] {
            std::fs::create_dir_all(dir.join(sub)).map_err(|e| format!("cannot create {sub}: {e}"))?;
        }
        if let Some(user) = &pg.run_as {
            let (uid, gid) = user_ids(user).ok_or_else(|| format!("no user {user}"))?;
            for path in [dir.clone(), dir.join("sock"), dir.join("tls"), issued.cert.clone(), issued.key.clone()] {
                std::os::unix::fs::chown(&path, Some(uid), Some(gid))
                    .map_err(|e| format!("cannot give {} to {user}: {e}", path.display()))?;
            }
        }
        let data = dir.join("data");
        // --no-sync: only initdb's final flush of the new files, irrelevant for a cluster
        // thrown away; the server itself runs with fsync=on.
        let mut initdb = pg.command("initdb");
        initdb.arg("-D").arg(&data).args(["-U", SUPERUSER, "-A", "trust", "-E", "UTF8", "--locale=C", "--no-sync"]);
        pg.run(&mut initdb, "initdb", INITDB_TIMEOUT)?;
        let mut last_error = String::new();
        for _ in 0..PORT_TRIES {
            pg.port = free_port()?;
            let options = format!(
                "-c listen_addresses=127.0.0.1 -c port={port} -c unix_socket_directories='{sock}' \
                 -c fsync=on -c synchronous_commit=on -c max_connections=200 \
                 -c ssl=on -c ssl_cert_file='{cert}' -c ssl_key_file='{key}'",
                port = pg.port,
                sock = dir.join("sock").display(),
                cert = issued.cert.display(),
                key = issued.key.display(),
            );
            let mut start = pg.command("pg_ctl");
            start.arg("-D").arg(&data).arg("-l").arg(dir.join("server.log")).args([
                "-w",
                "-t",
                &PG_CTL_WAIT_SECS.to_string(),
                "-o",
                &options,
                "start",
            ]);
            match pg.run(&mut start, "pg_ctl start", Duration::from_secs(PG_CTL_WAIT_SECS + 10)) {
                Ok(()) => {
                    pg.wait_ready()?;
                    return Ok(pg);
                }
                // Another process may have taken the port between our look and the bind.
                Err(e) if pg.log().contains("could not bind") || pg.log().contains("already in use") => {
                    last_error = e;
                    let _ = std::fs::remove_file(dir.join("server.log"));
                }
                Err(e) => return Err(e),
            }
        }
        Err(format!("no free port after {PORT_TRIES} tries: {last_error}"))
    }

    /// `postgres://postgres@127.0.0.1:PORT/postgres`: the maintenance database.
    pub fn url(&self) -> String {
        self.database_url("postgres")
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The CA that issued the server's certificate (for `localhost` and `127.0.0.1`):
    /// what a client's `ca_file` names to verify it.
    pub fn ca_file(&self) -> &Path {
        &self.ca_file
    }

    /// The folder of `initdb`, `pg_ctl`, `psql` and the rest.
    pub fn bin_dir(&self) -> &Path {
        &self.bin
    }

    /// Makes a new empty database named after `name` (made unique in the process) and
    /// returns its URL.
    pub fn create_database(&self, name: &str) -> String {
        let mut db: String = name
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '_' })
            .take(40)
            .collect();
        db.push_str(&format!("_{}", COUNTER.fetch_add(1, Ordering::Relaxed)));
        let mut createdb = Command::new(self.bin.join("createdb"));
        createdb.args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-U", SUPERUSER, "-w", &db]);
        if let Err(e) = self.run(&mut createdb, "createdb", CLIENT_TIMEOUT) {
            panic!("test PostgreSQL: {e}");
        }
        self.database_url(&db)
    }

    fn database_url(&self, db: &str) -> String {
        format!("postgres://{SUPERUSER}@127.0.0.1:{}/{db}", self.port)
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
    }

    /// Stops the server at once (`-m immediate`: nothing to keep) and removes the folder.
    /// Later calls do nothing.
    pub fn stop(&self) {
        if self.stopped.swap(true, Ordering::SeqCst) {
            return;
        }
        let data = self.dir.join("data");
        if data.join("postmaster.pid").exists() {
            let mut stop = self.command("pg_ctl");
            stop.arg("-D").arg(&data).args(["-w", "-t", &PG_CTL_WAIT_SECS.to_string(), "-m", "immediate", "stop"]);
            if let Err(e) = self.run(&mut stop, "pg_ctl stop", Duration::from_secs(PG_CTL_WAIT_SECS + 10)) {
                eprintln!("test PostgreSQL: {e}");
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }

    /// A command for one of the cluster's binaries, as the unprivileged user when we are
    /// root.
    fn command(&self, program: &str) -> Command {
        let program = self.bin.join(program);
        let mut command = match &self.run_as {
            Some(user) => {
                let mut c = Command::new(runuser());
                c.args(["-u", user.as_str(), "--"]).arg(program);
                c
            }
            None => Command::new(program),
        };
        // The unprivileged user may not be allowed into our working directory.
        command.current_dir(&self.dir);
        command
    }

    /// Runs a command to its end within `timeout` (killed past it), its output kept in a
    /// file of the folder (not a pipe: pg_ctl's server child would hold a pipe open).
    fn run(&self, command: &mut Command, what: &str, timeout: Duration) -> Result<(), String> {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let out_path = self.dir.join(format!("{}-{n}.out", what.replace(' ', "-")));
        let out = File::create(&out_path).map_err(|e| format!("{what}: cannot create its output file: {e}"))?;
        let err = out.try_clone().map_err(|e| format!("{what}: {e}"))?;
        let mut child = command
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|e| format!("cannot run {what}: {e}"))?;
        let status = wait_bounded(&mut child, timeout).map_err(|e| format!("{what}: {e}"));
        let output = std::fs::read_to_string(&out_path).unwrap_or_default();
        let _ = std::fs::remove_file(&out_path);
        match status? {
            Some(status) if status.success() => Ok(()),
            Some(status) => Err(format!("{what} failed ({status}): {output}\nserver log:\n{}", self.log())),
            None => Err(format!("{what} did not finish within {timeout:?}: {output}\nserver log:\n{}", self.log())),
        }
    }

    /// pg_ctl -w has seen the server ready; this checks that it answers on its TCP port.
    fn wait_ready(&self) -> Result<(), String> {
        let deadline = Instant::now() + CLIENT_TIMEOUT;
        loop {
            let mut isready = Command::new(self.bin.join("pg_isready"));
            isready.args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-U", SUPERUSER, "-t", "2"]);
            match self.run(&mut isready, "pg_isready", Duration::from_secs(5)) {
                Ok(()) => return Ok(()),
                Err(e) if Instant::now() > deadline => return Err(e),
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }

    /// A detached shell that stops the cluster and removes the folder once this process
    /// is gone (it ends on its own when the folder goes first). Started twice-forked, so
    /// it is never our zombie, and in its own process group, so a Ctrl-C to the tests does
    /// not stop it before it has cleaned up.
    fn watchdog(&self) -> Result<(), String> {
        let as_user = match &self.run_as {
            Some(user) => format!("'{}' -u '{user}' --", runuser().display()),
            None => String::new(),
        };
        let script = format!(
            "( while kill -0 \"$1\" 2>/dev/null && [ -d \"$3\" ]; do sleep 1; done; \
               if [ -f \"$3/data/postmaster.pid\" ]; then {as_user} \"$2/pg_ctl\" -D \"$3/data\" -m immediate stop; fi; \
               rm -rf \"$3\" ) </dev/null >/dev/null 2>&1 &"
        );
        let mut command = Command::new("sh");
        command
            .arg("-c")
            .arg(script)
            .arg("watchdog")
            .arg(std::process::id().to_string())
            .arg(&self.bin)
            .arg(&self.dir)
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let mut child = command.spawn().map_err(|e| format!("cannot start the watchdog: {e}"))?;
        match wait_bounded(&mut child, CLIENT_TIMEOUT) {
            Ok(Some(status)) if status.success() => Ok(()),
            other => Err(format!("the watchdog did not start: {other:?}")),
        }
    }
}

impl Drop for TestPostgres {
    fn drop(&mut self) {
        self.stop();
    }
}

extern "C" fn stop_shared_at_exit() {
    if let Some(Some(pg)) = SHARED.get() {
        pg.stop();
    }
}

/// A fresh database in the shared cluster for the test `name`, or None, with a note on
/// standard error, when PostgreSQL is not installed (the test then passes as skipped).
pub fn database_for(name: &str) -> Option<String> {
    match TestPostgres::shared() {
        Some(pg) => Some(pg.create_database(name)),
        None => {
            eprintln!("{name}: skipped on PostgreSQL: not installed (apt-get install postgresql)");
            None
        }
    }
}

/// `$VOUCHMAIL_PG_BIN`, else the bin folder of the highest version under
/// /usr/lib/postgresql that has initdb and pg_ctl.
fn find_bin() -> Option<PathBuf> {
    let usable = |bin: &Path| bin.join("initdb").is_file() && bin.join("pg_ctl").is_file();
    if let Some(bin) = std::env::var_os("VOUCHMAIL_PG_BIN").map(PathBuf::from) {
        return usable(&bin).then_some(bin);
    }
    let versions = std::fs::read_dir("/usr/lib/postgresql").ok()?;
    versions
        .filter_map(|entry| {
            let entry = entry.ok()?;
            // "15", "16", or "9.6" on old systems.
            let name = entry.file_name().into_string().ok()?;
            let version: Vec<u32> = name.split('.').map(str::parse).collect::<Result<_, _>>().ok()?;
            let bin = entry.path().join("bin");
            usable(&bin).then_some((version, bin))
        })
        .max()
        .map(|(_, bin)| bin)
}

fn required() -> bool {
    std::env::var("VOUCHMAIL_REQUIRE_POSTGRES").is_ok_and(|v| !v.is_empty() && v != "0")
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// The uid and gid of a system user, from `id` (no unsafe passwd lookups).
fn user_ids(user: &str) -> Option<(u32, u32)> {
    let id = |flag: &str| -> Option<u32> {
        let out = Command::new("id").args([flag, user]).stderr(Stdio::null()).output().ok()?;
        out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().parse().ok())?
    };
    Some((id("-u")?, id("-g")?))
}

/// Debian keeps runuser in /usr/sbin, which a root shell's PATH may lack.
fn runuser() -> PathBuf {
    ["/usr/sbin/runuser", "/sbin/runuser"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from("runuser"))
}

/// A new private folder under the system's temporary folder.
fn make_folder() -> Result<PathBuf, String> {
    use std::os::unix::fs::DirBuilderExt;
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos());
    let name = format!(
        "vouchmail-pg-{}-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed),
        nanos.unwrap_or(0)
    );
    let dir = std::env::temp_dir().join(name);
    std::fs::DirBuilder::new().mode(0o700).create(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    Ok(dir)
}

fn set_mode(path: &Path, mode: u32) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| format!("cannot chmod {}: {e}", path.display()))
}

/// A port free on 127.0.0.1 a moment ago.
fn free_port() -> Result<u16, String> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("cannot find a free port: {e}"))?;
    listener.local_addr().map(|a| a.port()).map_err(|e| format!("cannot find a free port: {e}"))
}

/// Waits for `child` at most `timeout`: its status, or None when it was killed for taking
/// longer.
fn wait_bounded(child: &mut std::process::Child, timeout: Duration) -> Result<Option<ExitStatus>, String> {
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(1);
    loop {
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            return Ok(Some(status));
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Ok(None);
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(20));
    }
}
