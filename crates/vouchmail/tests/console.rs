//! The web console (SPEC 12, issue 24 item 5) in a real browser: headless Chromium driven
//! over WebDriver by Python's selenium, against a server of the test's own on loopback.
//! The test signs in with a token, sees a queued message, retries and deletes it, changes a
//! domain's policy, adds and removes a user, and after each step checks the store itself,
//! so what the page claims is what happened. The browser never reaches beyond loopback (the
//! console loads nothing from elsewhere, and Chromium is told to use no proxy).
//!
//! The browser runs in one Python process for the whole test, which takes one JSON command
//! a line on stdin and answers one JSON line on stdout: the test decides each step and
//! checks the store in between. Closing its stdin (also when the test fails and unwinds)
//! makes it quit the driver, which ends Chromium.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::http::get;
use common::{raw_sql, tool, SmtpConn, TestServer};
use serde_json::{json, Value};
use vouchmail_store::{PolicyAction, SenderPolicy};

const PYTHON: &str = "/usr/bin/python3";

/// The browser side: each command's bounded waits are at most 10 s (WebDriverWait).
const DRIVER: &str = r##"
import json, sys, tempfile, traceback
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select, WebDriverWait
from selenium.webdriver.support import expected_conditions as EC

chromium, chromedriver, base = sys.argv[1], sys.argv[2], sys.argv[3]
profile = tempfile.TemporaryDirectory(prefix="vouchmail-console-")
options = webdriver.ChromeOptions()
options.binary_location = chromium
for arg in ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
            "--user-data-dir=" + profile.name, "--window-size=1360,820", "--no-first-run",
            "--no-default-browser-check", "--disable-extensions", "--disable-background-networking",
            "--disable-sync", "--disable-component-update", "--no-proxy-server", "--lang=en-US"]:
    options.add_argument(arg)
# The browser's console (CSP violations, script errors) is read back by the test.
options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
driver = webdriver.Chrome(service=Service(executable_path=chromedriver), options=options)
driver.set_page_load_timeout(10)
driver.set_script_timeout(10)
wait = WebDriverWait(driver, 10)

def view(name):
    driver.find_element(By.CSS_SELECTOR, '.tabs a[data-view="%s"]' % name).click()
    wait.until(EC.visibility_of_element_located((By.ID, "view-" + name)))
    if name in ("queue", "domains", "users"):
        loaded(name)

def loaded(name):
    """The view's latest listing is on the page (console.js marks it so)."""
    wait.until(lambda d: d.find_element(By.ID, "view-" + name).get_attribute("data-state") == "ready")

def status_says(words):
    wait.until(lambda d: words in d.find_element(By.ID, "status").text)
    return driver.find_element(By.ID, "status").text

def confirm():
    dialog = wait.until(EC.visibility_of_element_located((By.ID, "confirm")))
    question = dialog.find_element(By.ID, "confirm-text").text
    dialog.find_element(By.ID, "confirm-ok").click()
    wait.until(EC.invisibility_of_element_located((By.ID, "confirm")))
    return question

def queue_rows():
    # Read in one script, so a listing replaced meanwhile cannot leave half a row.
    return driver.execute_script("""
        return Array.from(document.querySelectorAll('#queue-table tbody tr'), (tr) => ({
            queue_id: tr.dataset.queueId,
            state: tr.cells[1].textContent,
            recipient: tr.cells[6].textContent,
        }));""")

def domain_row(domain):
    return wait.until(EC.presence_of_element_located(
        (By.CSS_SELECTOR, '#domains-table tbody tr[data-domain="%s"]' % domain)))

def run(c):
    op = c["op"]
    if op == "open":
        driver.get(base + c.get("path", "/"))
        wait.until(lambda d: d.find_element(By.ID, "login").is_displayed() or d.find_element(By.ID, "app").is_displayed())
        return {"title": driver.title}
    if op == "login":
        field = wait.until(EC.visibility_of_element_located((By.ID, "token")))
        field.clear()
        field.send_keys(c["token"])
        driver.find_element(By.ID, "login-button").click()
        if c.get("refused"):
            wait.until(lambda d: d.find_element(By.ID, "login-message").text)
            return {"message": driver.find_element(By.ID, "login-message").text,
                    "stored": driver.execute_script("return sessionStorage.length")}
        wait.until(EC.visibility_of_element_located((By.ID, "app")))
        wait.until(lambda d: d.find_element(By.ID, "who").text)
        return {"who": driver.find_element(By.ID, "who").text}
    if op == "queue":
        view("queue")
        Select(driver.find_element(By.ID, "queue-state")).select_by_value(c.get("state", ""))
        domain = driver.find_element(By.ID, "queue-domain")
        domain.clear()
        domain.send_keys(c.get("domain", ""))
        driver.find_element(By.CSS_SELECTOR, "#queue-filter button[type=submit]").click()
        query = "&".join("%s=%s" % (k, c[k]) for k in ("state", "domain") if c.get(k))
        wait.until(lambda d: d.find_element(By.ID, "queue-table").get_attribute("data-query") == query)
        loaded("queue")
        want = c.get("expect")
        if want is not None:
            wait.until(lambda d: len(queue_rows()) == want)
        return {"rows": queue_rows()}
    if op in ("retry", "delete"):
        row = '#queue-table tbody tr[data-queue-id="%s"]' % c["id"]
        driver.find_element(By.CSS_SELECTOR, row + " button." + op).click()
        question = confirm()
        said = status_says("is due now" if op == "retry" else "deleted")
        if op == "delete":
            wait.until(lambda d: not d.find_elements(By.CSS_SELECTOR, row))
        return {"question": question, "status": said, "rows": queue_rows()}
    if op == "policy":
        view("domains")
        row = domain_row(c["domain"])
        Select(row.find_element(By.NAME, "unauthenticated")).select_by_value(c["unauthenticated"])
        Select(row.find_element(By.NAME, "forged")).select_by_value(c["forged"])
        box = row.find_element(By.NAME, "dmarc_counts")
        if box.is_selected() != c["dmarc_counts"]:
            box.click()
        row.find_element(By.CSS_SELECTOR, "button.save").click()
        said = status_says("saved")
        # The table is read again from the server after saving.
        row = domain_row(c["domain"])
        return {"status": said,
                "unauthenticated": Select(row.find_element(By.NAME, "unauthenticated")).first_selected_option.get_attribute("value"),
                "forged": Select(row.find_element(By.NAME, "forged")).first_selected_option.get_attribute("value"),
                "dmarc_counts": row.find_element(By.NAME, "dmarc_counts").is_selected()}
    if op == "dns":
        view("domains")
        domain_row(c["domain"]).find_element(By.CSS_SELECTOR, "button.dns-button").click()
        wait.until(lambda d: d.find_element(By.ID, "dns-zone").text)
        return {"zone": driver.find_element(By.ID, "dns-zone").text}
    if op == "users":
        view("users")
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#users-table tbody tr"))
        return {"addresses": [tr.get_attribute("data-address")
                              for tr in driver.find_elements(By.CSS_SELECTOR, "#users-table tbody tr")]}
    if op == "add_user":
        view("users")
        driver.find_element(By.ID, "user-address").send_keys(c["address"])
        driver.find_element(By.CSS_SELECTOR, "#user-add button[type=submit]").click()
        wait.until(EC.visibility_of_element_located((By.ID, "user-added")))
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, '#users-table tbody tr[data-address="%s"]' % c["address"]))
        return {"said": driver.find_element(By.ID, "user-added").text}
    if op == "remove_user":
        view("users")
        row = '#users-table tbody tr[data-address="%s"]' % c["address"]
        driver.find_element(By.CSS_SELECTOR, row + " button.delete").click()
        question = confirm()
        status_says("Removed")
        wait.until(lambda d: not d.find_elements(By.CSS_SELECTOR, row))
        return {"question": question}
    if op == "authkeys":
        view("authkeys")
        field = driver.find_element(By.ID, "authkeys-target")
        field.clear()
        field.send_keys(c["target"])
        driver.find_element(By.CSS_SELECTOR, "#authkeys-form button[type=submit]").click()
        wait.until(lambda d: d.find_element(By.ID, "authkeys-result").text)
        return {"text": driver.find_element(By.ID, "authkeys-result").text}
    if op == "tracking":
        view("tracking")
        wait.until(lambda d: d.find_element(By.ID, "tracking-result").text)
        return {"text": driver.find_element(By.ID, "tracking-result").text}
    if op == "live":
        view("live")
        # Rates need two scrapes (5 s apart): the queue size shows at the first.
        wait.until(lambda d: d.find_element(By.ID, "live-queue").text not in ("", "\u2013"))
        return {"queue": driver.find_element(By.ID, "live-queue").text,
                "states": driver.find_element(By.ID, "live-queue-states").text}
    if op == "screenshot":
        return {"saved": driver.save_screenshot(c["path"])}
    if op == "signout":
        driver.find_element(By.ID, "logout").click()
        wait.until(EC.visibility_of_element_located((By.ID, "login")))
        return {"stored": driver.execute_script("return sessionStorage.length")}
    if op == "logs":
        return {"logs": [e.get("message", "") for e in driver.get_log("browser")]}
    raise ValueError("unknown op " + op)

try:
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        command = json.loads(line)
        try:
            answer = {"ok": run(command)}
        except Exception as e:
            answer = {"error": "%s: %s" % (type(e).__name__, e), "trace": traceback.format_exc(),
                      "page": driver.find_element(By.TAG_NAME, "body").text[:2000]}
        print(json.dumps(answer), flush=True)
finally:
    driver.quit()
    profile.cleanup()
"##;

/// The Python process driving Chromium.
struct Browser {
    child: Child,
    input: Option<ChildStdin>,
    output: BufReader<ChildStdout>,
}

impl Browser {
    fn start(base: &str) -> Browser {
        let mut child = Command::new(PYTHON)
            .arg("-u")
            .arg("-c")
            .arg(DRIVER)
            .arg(tool("chromium"))
            .arg(tool("chromedriver"))
            .arg(base)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("python3 (run scripts/test.sh, which installs python3-selenium)");
        let input = child.stdin.take();
        let output = BufReader::new(child.stdout.take().expect("stdout"));
        let mut browser = Browser { child, input, output };
        let ready = browser.answer();
        assert_eq!(ready["ready"], true, "the browser did not start: {ready}");
        browser
    }

    /// One line of the driver's; every step it takes is bounded by its own waits.
    fn answer(&mut self) -> Value {
        let mut line = String::new();
        let read = tokio::task::block_in_place(|| self.output.read_line(&mut line)).expect("read the driver");
        assert!(read > 0, "the browser driver ended (its error is above)");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"))
    }

    /// Runs one command and returns its result; a failed step fails the test with the
    /// driver's trace and the page's text.
    fn step(&mut self, command: Value) -> Value {
        let input = self.input.as_mut().expect("driver running");
        writeln!(input, "{command}").and_then(|_| input.flush()).expect("write to the driver");
        let answer = self.answer();
        match answer.get("ok") {
            Some(ok) => ok.clone(),
            None => panic!(
                "browser step {command} failed: {}\n{}\npage:\n{}",
                answer["error"].as_str().unwrap_or_default(),
                answer["trace"].as_str().unwrap_or_default(),
                answer["page"].as_str().unwrap_or_default()
            ),
        }
    }
}

impl Drop for Browser {
    /// End of input: the driver quits Chromium and exits; if it does not within its
    /// bounds, it is killed (it is our own child).
    fn drop(&mut self) {
        drop(self.input.take());
        let end = Instant::now() + Duration::from_secs(15);
        while Instant::now() < end {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_secs() as i64
}

/// Mail for a remote address through an alias stays queued: outbound delivery is off in
/// test servers. Returns the queue id.
async fn queue_remote_message(server: &TestServer) -> String {
    server.store.add_alias("relay@local.test", &["far@remote.test".into()]).await.expect("alias");
    let (mut c, _) = SmtpConn::connect(server.mx()).await;
    c.cmd("EHLO client.test").await;
    let body = "From: a@remote.test\r\nTo: relay@local.test\r\nSubject: for the console\r\n\r\nqueued\r\n";
    assert_eq!(c.send_message("a@remote.test", &["relay@local.test"], body).await.code, 250);
    c.cmd("QUIT").await;
    let queue = server.store.list_queue().await.expect("queue");
    assert_eq!(queue.len(), 1, "{queue:?}");
    assert_eq!(queue[0].recipient, "far@remote.test");
    queue[0].queue_id.clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_is_served_with_its_types_caching_and_a_strict_policy() {
    let server = TestServer::start().await;
    let page = get(server.admin(), "/", None).await;
    assert_eq!(page.status, 200);
    assert_eq!(page.header("content-type"), Some("text/html; charset=utf-8"));
    assert_eq!(page.header("cache-control"), Some("no-cache"));
    let csp = page.header("content-security-policy").expect("a CSP");
    assert!(csp.starts_with("default-src 'self'"), "{csp}");
    assert!(!csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"), "{csp}");
    assert_eq!(page.header("x-content-type-options"), Some("nosniff"));
    let html = page.text();
    assert!(html.contains("mx.local.test"), "the shell names the host");
    for (name, content_type) in
        [("console.js", "text/javascript; charset=utf-8"), ("console.css", "text/css; charset=utf-8")]
    {
        let address = html
            .split('"')
            .find(|s| s.starts_with("/assets/") && s.ends_with(name))
            .unwrap_or_else(|| panic!("{name} not in the page"));
        let asset = get(server.admin(), address, None).await;
        assert_eq!(asset.status, 200, "{address}");
        assert_eq!(asset.header("content-type"), Some(content_type), "{address}");
        assert_eq!(asset.header("cache-control"), Some("public, max-age=31536000, immutable"), "{address}");
        // Another version's address gets the file, but not to keep.
        let stale = get(server.admin(), &format!("/assets/0000/{name}"), None).await;
        assert_eq!((stale.status, stale.header("cache-control")), (200, Some("no-cache")));
    }
    assert_eq!(get(server.admin(), "/assets/0000/secret.txt", None).await.status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_manages_the_queue_and_a_policy_in_a_real_browser() {
    let server = TestServer::start().await;
    let queue_id = queue_remote_message(&server).await;
    let token = server.admin_token("console").await;
    let revoked = server.admin_token("old").await;
    vouchmail_server::rules::admin_tokens::revoke_token(server.store.as_ref(), "old").await.expect("revoke");
    let shots = tempfile::tempdir().expect("tempdir");

    let mut browser = Browser::start(&format!("http://{}", server.admin()));
    let opened = browser.step(json!({"op": "open"}));
    assert!(opened["title"].as_str().unwrap_or_default().contains("mx.local.test"), "{opened}");

    // Wrong tokens: back at the login screen with the server's reason, nothing kept.
    let unknown = browser.step(json!({"op": "login", "token": "vmat_nonsense", "refused": true}));
    assert_eq!(unknown["message"], "unknown token", "{unknown}");
    assert_eq!(unknown["stored"], 0);
    let old = browser.step(json!({"op": "login", "token": revoked, "refused": true}));
    assert!(old["message"].as_str().unwrap_or_default().contains("revoked"), "{old}");

    let signed_in = browser.step(json!({"op": "login", "token": token}));
    assert_eq!(signed_in["who"], "token console");

    // The queued message, found by its domain.
    let listed = browser.step(json!({"op": "queue", "domain": "remote.test", "expect": 1}));
    assert_eq!(listed["rows"][0]["queue_id"], queue_id.as_str(), "{listed}");
    assert_eq!(listed["rows"][0]["recipient"], "far@remote.test");
    let shot = shots.path().join("queue.png");
    assert_eq!(browser.step(json!({"op": "screenshot", "path": shot}))["saved"], true);
    assert!(std::fs::metadata(&shot).expect("screenshot").len() > 10_000, "an empty screenshot");
    // By hand, for the README: VOUCHMAIL_CONSOLE_SCREENSHOT=docs/console.png.
    if let Ok(path) = std::env::var("VOUCHMAIL_CONSOLE_SCREENSHOT") {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").join(path);
        browser.step(json!({"op": "screenshot", "path": path}));
    }

    // Retry: the message waits an hour, and is due now after the button.
    let later = now() + 3600;
    raw_sql(&server, &format!("UPDATE queue SET state = 'deferred', attempts = 1, next_attempt = {later}")).await;
    let deferred = browser.step(json!({"op": "queue", "state": "deferred", "expect": 1}));
    assert_eq!(deferred["rows"][0]["state"], "deferred", "{deferred}");
    let before = now();
    let retried = browser.step(json!({"op": "retry", "id": queue_id}));
    assert!(retried["question"].as_str().unwrap_or_default().contains(&queue_id), "{retried}");
    let entry = server.store.list_queue().await.expect("queue").into_iter().next().expect("still queued");
    assert!(entry.next_attempt >= before && entry.next_attempt <= now(), "next attempt {}", entry.next_attempt);

    // Delete: gone from the store.
    browser.step(json!({"op": "queue", "expect": 1}));
    let deleted = browser.step(json!({"op": "delete", "id": queue_id}));
    assert_eq!(deleted["rows"], json!([]), "{deleted}");
    assert!(server.store.list_queue().await.expect("queue").is_empty());
    assert!(server.store.get_queued_message(&queue_id).await.expect("store").is_none_or(|(entries, _)| entries
        .iter()
        .all(|e| !matches!(e.state.as_str(), "queued" | "deferred" | "inflight"))));

    // A domain's policy: junk what no method authenticated, refuse forgeries and tell the
    // sender, and no DMARC shortcut.
    let policy = browser.step(json!({
        "op": "policy", "domain": "local.test",
        "unauthenticated": "junk", "forged": "reject-notify-sender", "dmarc_counts": false,
    }));
    assert_eq!(
        (&policy["unauthenticated"], &policy["forged"], &policy["dmarc_counts"]),
        (&json!("junk"), &json!("reject-notify-sender"), &json!(false)),
        "{policy}"
    );
    let stored = server.store.get_domain("local.test").await.expect("store").expect("domain").policy;
    assert_eq!(
        stored,
        SenderPolicy {
            unauthenticated: PolicyAction::Junk,
            forged: PolicyAction::RejectNotifySender,
            dmarc_counts: false
        }
    );
    let dns = browser.step(json!({"op": "dns", "domain": "local.test"}));
    assert!(dns["zone"].as_str().unwrap_or_default().contains("v=spf1"), "{dns}");
    let shot = shots.path().join("domains.png");
    assert_eq!(browser.step(json!({"op": "screenshot", "path": shot}))["saved"], true);

    let users = browser.step(json!({"op": "users"}));
    assert!(users["addresses"].as_array().expect("addresses").contains(&json!("user@local.test")), "{users}");
    // A user added with a generated password, shown once, then removed.
    let added = browser.step(json!({"op": "add_user", "address": "carol@local.test"}));
    assert!(added["said"].as_str().unwrap_or_default().contains("password"), "{added}");
    assert!(server.store.get_account("carol@local.test").await.expect("store").is_some());
    browser.step(json!({"op": "remove_user", "address": "carol@local.test"}));
    assert!(server.store.get_account("carol@local.test").await.expect("store").is_none());
    let keys = browser.step(json!({"op": "authkeys", "target": "user@local.test"}));
    let keys = keys["text"].as_str().unwrap_or_default().to_string();
    assert!(keys.contains("user@local.test") && keys.contains("agi secs"), "{keys}");
    let tracking = browser.step(json!({"op": "tracking"}));
    assert!(tracking["text"].as_str().unwrap_or_default().contains("Every user"), "{tracking}");
    let live = browser.step(json!({"op": "live"}));
    assert_eq!(live["queue"], "0", "{live}");

    // Nothing the page did was refused by its own policy, and no script failed.
    let logs = browser.step(json!({"op": "logs"}));
    let problems: Vec<&Value> = logs["logs"]
        .as_array()
        .expect("logs")
        .iter()
        .filter(|l| {
            let l = l.as_str().unwrap_or_default();
            l.contains("Content Security Policy") || l.contains("Uncaught")
        })
        .collect();
    assert!(problems.is_empty(), "{problems:?}");

    // Signing out forgets the token.
    assert_eq!(browser.step(json!({"op": "signout"}))["stored"], 0);
}
