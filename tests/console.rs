//! The operator console: its files are served, and in headless Chromium an
//! operator signs in, finds a contact whose HubSpot push failed and retries
//! it. Chromium is driven over the DevTools protocol by the small client at
//! the bottom of this file; it must be installed at `/usr/bin/chromium`
//! (`apt-get install -y chromium`), or at the path in `CHROMIUM`, else the
//! browser tests fail. Screenshots go to `target/test-artifacts/`.

mod common;

use std::time::Duration;

use common::{eventually, Options, TestApp, TOKEN};
use serde_json::json;

use chromium::{artifact, Browser};

#[tokio::test]
async fn console_files_are_served_without_a_token() {
    let app = TestApp::with(Options {
        workers: 0,
        ..Options::default()
    })
    .await;
    // path, content type, a text the body must contain
    let cases = [
        ("/console", "text/html; charset=utf-8", "/console/app.js"),
        (
            "/console/",
            "text/html; charset=utf-8",
            "/console/style.css",
        ),
        (
            "/console/app.js",
            "text/javascript; charset=utf-8",
            "sessionStorage",
        ),
        ("/console/style.css", "text/css; charset=utf-8", ".badge"),
    ];
    for (path, content_type, text) in cases {
        let resp = app
            .http
            .get(format!("{}{path}", app.api))
            .send()
            .await
            .expect("api reachable");
        assert_eq!(resp.status(), 200, "{path}: status");
        let header = |name: &str| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned()
        };
        assert_eq!(header("content-type"), content_type, "{path}: content type");
        assert_eq!(header("x-content-type-options"), "nosniff", "{path}");
        let csp = header("content-security-policy");
        for directive in [
            "default-src 'none'",
            "script-src 'self'",
            "connect-src 'self'",
        ] {
            assert!(
                csp.contains(directive),
                "{path}: CSP lacks {directive}: {csp}"
            );
        }
        assert!(
            !csp.contains("unsafe"),
            "{path}: CSP allows unsafe code: {csp}"
        );
        let body = resp.text().await.expect("body");
        assert!(body.contains(text), "{path}: body lacks {text:?}");
    }
    let resp = app
        .http
        .get(format!("{}/console/missing.js", app.api))
        .send()
        .await
        .expect("api reachable");
    assert_eq!(resp.status(), 404, "unknown console file");
}

#[tokio::test]
async fn operator_retries_a_failed_sync_from_the_console() {
    // arrange: a contact whose HubSpot push failed for good, then the CRM heals
    let app = TestApp::spawn().await;
    let id = failed_contact(&app, "browser@example.com").await;
    app.set_faults(json!({})).await;
    let mut browser = Browser::launch().await;

    // act: sign in, open Contacts, retry the failed link
    sign_in(&mut browser, &app, TOKEN).await;
    browser.click("a[data-nav=contacts]").await;
    let row = format!("tr[data-contact-id=\"{id}\"]");
    let badge =
        |status: &str| format!("{row} .badge[data-provider=\"hubspot\"][data-status=\"{status}\"]");
    browser
        .wait_for("the HubSpot badge in error", &exists(&badge("error")))
        .await;
    browser.screenshot(&artifact("console-error.png")).await;
    browser
        .click(&format!(
            "{row} button[data-action=retry][data-provider=hubspot]"
        ))
        .await;

    // assert: the page polls until the badge shows the pushed contact
    browser
        .wait_for("the HubSpot badge synced", &exists(&badge("synced")))
        .await;
    browser.screenshot(&artifact("console.png")).await;
    app.wait_link(&id, "hubspot", "synced", Duration::from_secs(5))
        .await;
    let status = browser
        .eval("document.getElementById('status').textContent")
        .await;
    assert!(
        status.as_str().unwrap_or_default().contains("Retry queued"),
        "the status line tells of the retry: {status}"
    );
    let stored = browser
        .eval("[sessionStorage.getItem('contact-sync.token'), localStorage.length]")
        .await;
    assert_eq!(
        stored,
        json!([TOKEN, 0]),
        "token kept in sessionStorage only"
    );
    assert!(
        browser.problems().is_empty(),
        "the page logged errors: {:#?}",
        browser.problems()
    );
}

#[tokio::test]
async fn viewer_browses_dead_jobs_but_may_not_retry() {
    // arrange: a push that died, and a read-only token
    let app = TestApp::with(Options::default().env("VIEWER_TOKENS", VIEWER)).await;
    let id = failed_contact(&app, "viewer@example.com").await;
    let mut browser = Browser::launch().await;
    sign_in(&mut browser, &app, VIEWER).await;

    // the overview lists the link in error
    browser
        .wait_for(
            "the link in error on the overview",
            &exists(&format!("#view a[href=\"#/contact/{id}\"]")),
        )
        .await;
    browser.screenshot(&artifact("console-overview.png")).await;

    // the contact's sync log shows the failed pushes
    browser
        .click(&format!("#view a[href=\"#/contact/{id}\"]"))
        .await;
    browser
        .wait_for(
            "a failed push in the sync log",
            "[...document.querySelectorAll('#view td')].some((td) => td.textContent === 'failed')",
        )
        .await;
    browser.screenshot(&artifact("console-contact.png")).await;

    // the dead jobs of the outbound queue, then one job in detail
    browser.click("a[data-nav=dead]").await;
    browser
        .wait_for("a dead job", &exists("tr[data-job-id] a"))
        .await;
    browser.screenshot(&artifact("console-dead.png")).await;
    browser.click("tr[data-job-id] a").await;
    browser
        .wait_for(
            "the job's failed attempts",
            "document.getElementById('h-attempts')?.textContent === 'Failed attempts (3)'",
        )
        .await;

    // act: a viewer's retry is refused, and the page says why
    browser.click("#view button[data-action=retry]").await;
    browser
        .wait_for(
            "the refusal",
            "document.getElementById('alert').textContent.includes('need an operator token')",
        )
        .await;
    browser.screenshot(&artifact("console-job.png")).await;
    let (_, dead) = app
        .call(
            reqwest::Method::GET,
            "/api/queues/outbound-upsert/jobs?state=dead",
            None,
        )
        .await;
    assert_eq!(dead.as_array().map(Vec::len), Some(2), "still dead: {dead}");
    assert!(
        browser.problems().is_empty(),
        "the page logged errors: {:#?}",
        browser.problems()
    );
}

#[tokio::test]
async fn operator_manages_each_customer_s_contacts_from_the_console() {
    // arrange: Acme (HubSpot + Pipedrive) and Globex (HubSpot only), each
    // on its own simulated CRM accounts; each connection starts its first
    // sync as it is made
    let app = TestApp::with(Options::default().env("FIRST_SYNC_ON_CONNECT", "true")).await;
    app.customers_on_own_accounts(
        &[("acme", "Acme Corp"), ("globex", "Globex")],
        &[
            ("acme", "hubspot", 72001),
            ("acme", "pipedrive", 82001),
            ("globex", "hubspot", 72002),
        ],
    )
    .await;
    let mut browser = Browser::launch().await;
    sign_in(&mut browser, &app, TOKEN).await;

    // the customers and their connections' health
    browser.click("a[data-nav=customers]").await;
    for (customer, provider) in [
        ("acme", "hubspot"),
        ("acme", "pipedrive"),
        ("globex", "hubspot"),
    ] {
        browser
            .wait_for(
                &format!("{customer}'s {provider} connection, healthy"),
                &exists(&format!(
                    "tr[data-customer-id={customer}][data-provider={provider}] [data-health=ok]"
                )),
            )
            .await;
    }
    // each connection's first sync is done (the column shows its bar
    // while it writes)
    browser
        .wait_for(
            "Acme's HubSpot first sync done",
            "document.querySelector('tr[data-customer-id=acme][data-provider=hubspot]')?.lastElementChild?.textContent.startsWith('done') === true",
        )
        .await;
    assert!(
        !browser
            .eval(&exists(
                "tr[data-customer-id=globex][data-provider=pipedrive]"
            ))
            .await
            .as_bool()
            .unwrap_or(true),
        "Globex has no Pipedrive connection"
    );
    browser.screenshot(&artifact("console-customers.png")).await;

    // act: pick Acme, create a contact; a bad email is refused beside its field
    browser.click("button[data-key=\"pick:acme\"]").await;
    browser
        .wait_for("Acme's contacts", &heading("Contacts of Acme Corp"))
        .await;
    browser.click("button[data-action=new]").await;
    fill(&mut browser, "firstName", "Ada").await;
    fill(&mut browser, "email", "ada-at-acme").await;
    browser
        .click("#contact-form button[data-action=save]")
        .await;
    browser
        .wait_for(
            "the email field marked invalid",
            "document.querySelector('#f-email[aria-invalid=true]') !== null \
             && document.getElementById('e-email').textContent.includes('email')",
        )
        .await;
    browser
        .screenshot(&artifact("console-validation.png"))
        .await;
    fill(&mut browser, "email", "ada@acme.example").await;
    browser
        .click("#contact-form button[data-action=save]")
        .await;
    let ada = "tr[data-email=\"ada@acme.example\"]";
    for provider in ["hubspot", "pipedrive"] {
        browser
            .wait_for(
                &format!("Ada's {provider} badge synced"),
                &exists(&format!(
                    "{ada} .badge[data-provider={provider}][data-status=synced]"
                )),
            )
            .await;
    }
    assert_eq!(
        crm_emails(&app, "acme", "hubspot").await,
        ["ada@acme.example"],
        "Ada is in Acme's HubSpot"
    );
    assert!(
        crm_emails(&app, "globex", "hubspot").await.is_empty(),
        "nothing in Globex's HubSpot"
    );

    // edit: the new last name reaches Acme's CRMs
    browser
        .click(&format!("{ada} button[data-action=edit]"))
        .await;
    fill(&mut browser, "lastName", "Lovelace").await;
    browser
        .click("#contact-form button[data-action=save]")
        .await;
    browser
        .wait_for(
            "the edited name in the list",
            &format!("document.querySelector('{ada} th')?.textContent === 'Ada Lovelace'"),
        )
        .await;
    eventually(
        Duration::from_secs(10),
        "the edit in Acme's HubSpot",
        || async {
            let records = app.sim_get("/hubspot/records?customer=acme").await;
            (records[0]["properties"]["lastname"] == "Lovelace").then_some(())
        },
    )
    .await;

    // switch to Globex with the picker: Acme's contact is not listed
    browser
        .eval(
            "(() => { const s = document.getElementById('customer'); s.value = 'globex'; \
             s.dispatchEvent(new Event('change')); })()",
        )
        .await;
    browser
        .wait_for("Globex's contacts", &heading("Contacts of Globex"))
        .await;
    browser
        .wait_for("Acme's contact gone", &format!("!({})", exists(ada)))
        .await;
    browser.click("button[data-action=new]").await;
    fill(&mut browser, "email", "grace@globex.example").await;
    browser
        .click("#contact-form button[data-action=save]")
        .await;
    let grace = "tr[data-email=\"grace@globex.example\"]";
    browser
        .wait_for(
            "Grace's HubSpot badge synced",
            &exists(&format!(
                "{grace} .badge[data-provider=hubspot][data-status=synced]"
            )),
        )
        .await;
    assert!(
        !browser
            .eval(&exists(&format!("{grace} .badge[data-provider=pipedrive]")))
            .await
            .as_bool()
            .unwrap_or(true),
        "Globex has no Pipedrive: no Pipedrive badge"
    );
    browser
        .screenshot(&artifact("console-customer-contacts.png"))
        .await;

    // delete, confirmed in the page's own dialog
    browser
        .click(&format!("{grace} button[data-action=delete]"))
        .await;
    browser.click("dialog button[data-action=confirm]").await;
    browser
        .wait_for("Grace gone from the list", &format!("!({})", exists(grace)))
        .await;
    eventually(
        Duration::from_secs(10),
        "Grace deleted in Globex's HubSpot",
        || async {
            crm_emails(&app, "globex", "hubspot")
                .await
                .is_empty()
                .then_some(())
        },
    )
    .await;
    assert_eq!(
        crm_emails(&app, "acme", "hubspot").await,
        ["ada@acme.example"],
        "Acme's record untouched"
    );

    // the overview draws the outbound queue's last hour
    browser.click("a[data-nav=overview]").await;
    browser
        .wait_for(
            "the outbound queue's graph with the pushes",
            "Number(document.querySelector('figure.graph[data-queue=\"outbound-upsert\"]')\
             ?.dataset.completed) >= 4",
        )
        .await;
    browser
        .screenshot(&artifact("console-overview-graph.png"))
        .await;
    assert!(
        browser.problems().is_empty(),
        "the page logged errors: {:#?}",
        browser.problems()
    );
}

/// Replaces the text of the contact form's field `name` by typing `text`.
async fn fill(browser: &mut Browser, name: &str, text: &str) {
    let field = format!("#contact-form #f-{name}");
    browser.click(&field).await;
    browser
        .eval(&format!(
            "document.querySelector({}).select()",
            json!(field)
        ))
        .await;
    browser.type_text(text).await;
}

/// A JS expression: whether the view's heading reads `text`.
fn heading(text: &str) -> String {
    format!(
        "document.querySelector('#view h1')?.textContent === {}",
        json!(text)
    )
}

/// The emails of a customer's records in one of its simulated CRMs.
async fn crm_emails(app: &TestApp, customer: &str, connection: &str) -> Vec<String> {
    let records = app
        .sim_get(&format!("/{connection}/records?customer={customer}"))
        .await;
    records
        .as_array()
        .unwrap_or_else(|| panic!("{customer}'s {connection} records: {records}"))
        .iter()
        .filter_map(|r| common::record_email(connection, r))
        .collect()
}

/// Creates a contact whose pushes to both CRMs fail for good; returns its id.
/// Both links must be in `error` before a test lifts the fault: a push still
/// retrying would then succeed, and a CRM's change event re-queues the
/// pushes to the other CRMs, healing the HubSpot link behind the test's back.
async fn failed_contact(app: &TestApp, email: &str) -> String {
    app.set_faults(json!({ "failRecords": [email] })).await;
    let id = app.create_ok(email).await;
    for provider in ["hubspot", "pipedrive"] {
        app.wait_link(&id, provider, "error", Duration::from_secs(20))
            .await;
    }
    id
}

/// The self-check panel runs `contact-sync check` through the api when
/// asked, and shows a disconnected connection as needing a reconnect.
#[tokio::test]
async fn operator_runs_the_self_check_from_the_console() {
    let app = TestApp::spawn().await;
    let mut browser = Browser::launch().await;
    sign_in(&mut browser, &app, common::TOKEN).await;
    browser.click("a[data-nav=check]").await;
    browser
        .wait_for(
            "the check's button",
            &exists("#view button[data-action=check]"),
        )
        .await;
    browser.click("#view button[data-action=check]").await;
    browser
        .wait_for(
            "both connections ready",
            "document.querySelectorAll('tr[data-ok=true]').length === 2",
        )
        .await;

    // Pipedrive disconnected in the workspace: the next check names it
    let (status, body) = app
        .sim_send(
            reqwest::Method::PUT,
            "/accounts/contact-sync/pipedrive",
            Some(json!({ "connected": false })),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    browser.click("#view button[data-action=check]").await;
    browser
        .wait_for(
            "Pipedrive needs reconnecting",
            "document.querySelector('tr[data-provider=pipedrive][data-ok=false]')?.textContent.includes('needs reconnecting') === true",
        )
        .await;
    browser.screenshot(&artifact("console-check.png")).await;
    assert!(
        browser.problems().is_empty(),
        "the page logged errors: {:#?}",
        browser.problems()
    );
}

/// A read-only token of the viewer test.
const VIEWER: &str = "viewer-token";

/// Opens the console and signs in with `token`; returns on the overview.
async fn sign_in(browser: &mut Browser, app: &TestApp, token: &str) {
    browser.open(&format!("{}/console", app.api)).await;
    browser.click("#token").await;
    browser.type_text(token).await;
    browser.click("#login button[type=submit]").await;
    browser
        .wait_for(
            "the overview",
            "document.querySelector('#view h1')?.textContent === 'Overview'",
        )
        .await;
}

/// A JS expression: whether `selector` matches an element.
fn exists(selector: &str) -> String {
    format!("document.querySelector({}) !== null", json!(selector))
}

/// Headless Chromium with one page, driven over the DevTools protocol.
mod chromium {
    use std::fs;
    use std::os::unix::process::CommandExt;
    use std::path::{Path, PathBuf};
    use std::process::{Child, Command, Stdio};
    use std::time::{Duration, Instant};

    use base64::Engine;
    use futures::{SinkExt, StreamExt};
    use serde_json::{json, Value};
    use tokio::net::TcpStream;
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

    /// Where CI installs Chromium (`apt-get install -y chromium`).
    const CHROMIUM: &str = "/usr/bin/chromium";
    /// Longest wait for Chromium to start, or for one protocol answer.
    const START: Duration = Duration::from_secs(30);
    /// Longest wait for a condition on the page.
    const WAIT: Duration = Duration::from_secs(30);
    /// Width and height of the page, CSS pixels.
    const VIEWPORT: (u32, u32) = (1280, 860);

    /// A file under `target/test-artifacts/` (the folder is created).
    pub fn artifact(name: &str) -> PathBuf {
        let target = option_env!("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
        let dir = target.join("test-artifacts");
        fs::create_dir_all(&dir).expect("creating target/test-artifacts");
        dir.join(name)
    }

    /// A Chromium process. Dropping it kills the browser's whole process
    /// group and deletes its temp folder.
    struct Process {
        child: Child,
        /// Temp folder holding the fresh profile and Chromium's log.
        root: PathBuf,
    }

    impl Drop for Process {
        fn drop(&mut self) {
            // Chromium's helpers share its process group (set at spawn).
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{}", self.child.id())])
                .stderr(Stdio::null())
                .status();
            let _ = self.child.kill();
            let _ = self.child.wait();
            let _ = fs::remove_dir_all(&self.root);
        }
    }

    impl Process {
        /// Reads the port Chromium chose from `DevToolsActivePort`.
        async fn devtools_port(&mut self) -> u16 {
            let file = self.root.join("profile").join("DevToolsActivePort");
            let until = Instant::now() + START;
            loop {
                // the port line is complete once the socket path follows it
                let port = fs::read_to_string(&file).ok().and_then(|s| {
                    let mut lines = s.lines();
                    let port = lines.next()?.trim().parse().ok()?;
                    lines.next()?.starts_with("/devtools/").then_some(port)
                });
                if let Some(port) = port {
                    return port;
                }
                if let Ok(Some(status)) = self.child.try_wait() {
                    panic!("Chromium exited with {status} on start:\n{}", self.log());
                }
                assert!(
                    Instant::now() < until,
                    "Chromium did not open its DevTools port within {START:?}:\n{}",
                    self.log()
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }

        fn log(&self) -> String {
            fs::read_to_string(self.root.join("chromium.log")).unwrap_or_default()
        }
    }

    /// Headless Chromium and a connection to its first page.
    pub struct Browser {
        ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
        next_id: u64,
        /// Exceptions, `console.error`s and blocked loads (such as a CSP
        /// violation) the page reported. HTTP error statuses are not here.
        problems: Vec<String>,
        /// Last, so the connection closes before the process is killed.
        _process: Process,
    }

    impl Browser {
        /// Starts Chromium with a fresh profile and connects to its page.
        ///
        /// # Panics
        /// When Chromium is not installed or does not start in time.
        pub async fn launch() -> Self {
            let bin = std::env::var("CHROMIUM").unwrap_or_else(|_| CHROMIUM.into());
            assert!(
                Path::new(&bin).is_file(),
                "Chromium is not installed at {bin}; the console test needs it. \
                 Install it with: apt-get update && apt-get install -y chromium"
            );
            let root = std::env::temp_dir().join(format!(
                "contact-sync-console-{}",
                uuid::Uuid::new_v4().simple()
            ));
            let profile = root.join("profile");
            fs::create_dir_all(&profile).expect("creating the Chromium profile folder");
            let log = fs::File::create(root.join("chromium.log")).expect("Chromium log file");
            let child = Command::new(&bin)
                .args([
                    "--headless",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-background-networking",
                    "--no-first-run",
                    "--disable-component-update",
                    "--disable-sync",
                    "--disable-dev-shm-usage",
                    "--no-default-browser-check",
                    "--remote-debugging-port=0",
                    &format!("--window-size={},{}", VIEWPORT.0, VIEWPORT.1),
                ])
                .arg(format!("--user-data-dir={}", profile.display()))
                .arg("about:blank")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log)
                .process_group(0)
                .spawn()
                .unwrap_or_else(|e| panic!("starting {bin}: {e}"));
            let mut process = Process { child, root };
            let port = process.devtools_port().await;
            let url = page_socket(port).await;
            let (ws, _) = tokio::time::timeout(START, tokio_tungstenite::connect_async(&url))
                .await
                .unwrap_or_else(|_| panic!("connecting to {url}: timed out"))
                .unwrap_or_else(|e| panic!("connecting to {url}: {e}"));
            let mut browser = Browser {
                ws,
                next_id: 1,
                problems: Vec::new(),
                _process: process,
            };
            for method in ["Page.enable", "Runtime.enable", "Log.enable"] {
                browser.call(method, json!({})).await;
            }
            let (width, height) = VIEWPORT;
            browser
                .call(
                    "Emulation.setDeviceMetricsOverride",
                    json!({ "width": width, "height": height, "deviceScaleFactor": 1, "mobile": false }),
                )
                .await;
            browser
        }

        /// What the page reported as going wrong so far.
        pub fn problems(&self) -> &[String] {
            &self.problems
        }

        /// Loads `url` and waits until it has loaded.
        pub async fn open(&mut self, url: &str) {
            let r = self.call("Page.navigate", json!({ "url": url })).await;
            if let Some(e) = r.get("errorText") {
                panic!("opening {url}: {e}");
            }
            let loaded = format!(
                "location.href.startsWith({}) && document.readyState === 'complete'",
                json!(url)
            );
            self.wait_for(&format!("{url} loaded"), &loaded).await;
        }

        /// Evaluates a JS expression (promises awaited) and returns its value.
        pub async fn eval(&mut self, expression: &str) -> Value {
            let r = self
                .call(
                    "Runtime.evaluate",
                    json!({ "expression": expression, "returnByValue": true, "awaitPromise": true }),
                )
                .await;
            if let Some(e) = r.get("exceptionDetails") {
                panic!("evaluating `{expression}` threw: {e}");
            }
            r["result"]["value"].clone()
        }

        /// Polls the JS `condition` until it is `true`.
        pub async fn wait_for(&mut self, what: &str, condition: &str) {
            let until = Instant::now() + WAIT;
            while self.eval(condition).await != Value::Bool(true) {
                if Instant::now() > until {
                    self.fail(&format!("timed out waiting for {what}")).await;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }

        /// Clicks the element `selector` names, as a mouse would, once it
        /// is shown: in the middle of its first box (a link that wraps has
        /// one box per line, and the middle of all may be between them).
        pub async fn click(&mut self, selector: &str) {
            let centre = format!(
                "(() => {{ const e = document.querySelector({}); if (!e) return null; \
                 e.scrollIntoView({{ block: 'center' }}); const r = e.getClientRects()[0]; \
                 return r && r.width && r.height ? [r.x + r.width / 2, r.y + r.height / 2] : null; }})()",
                json!(selector)
            );
            let until = Instant::now() + WAIT;
            let (x, y) = loop {
                if let Some([x, y]) =
                    serde_json::from_value::<Option<[f64; 2]>>(self.eval(&centre).await)
                        .ok()
                        .flatten()
                {
                    break (x, y);
                }
                if Instant::now() > until {
                    self.fail(&format!("timed out waiting for {selector} to show"))
                        .await;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            };
            for kind in ["mouseMoved", "mousePressed", "mouseReleased"] {
                self.call(
                    "Input.dispatchMouseEvent",
                    json!({ "type": kind, "x": x, "y": y, "button": "left", "clickCount": 1 }),
                )
                .await;
            }
        }

        /// Types `text` into the focused element.
        pub async fn type_text(&mut self, text: &str) {
            self.call("Input.insertText", json!({ "text": text })).await;
        }

        /// Saves a PNG of the viewport.
        pub async fn screenshot(&mut self, path: &Path) {
            let r = self
                .call("Page.captureScreenshot", json!({ "format": "png" }))
                .await;
            let png = base64::engine::general_purpose::STANDARD
                .decode(r["data"].as_str().expect("screenshot data"))
                .expect("screenshot is base64");
            fs::write(path, png).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
        }

        /// Panics with `message`, what the page shows and what it reported,
        /// after saving a screenshot next to the others.
        async fn fail(&mut self, message: &str) -> ! {
            let shot = artifact("console-failure.png");
            self.screenshot(&shot).await;
            let text = self.eval("document.body.innerText").await;
            panic!(
                "{message}\npage text: {}\npage problems: {:#?}\nscreenshot: {}",
                text.as_str().unwrap_or_default(),
                self.problems,
                shot.display()
            );
        }

        /// Sends one protocol command and returns its result, keeping note
        /// of the events that arrive meanwhile.
        async fn call(&mut self, method: &str, params: Value) -> Value {
            let id = self.next_id;
            self.next_id += 1;
            let msg = json!({ "id": id, "method": method, "params": params }).to_string();
            self.ws
                .send(Message::Text(msg.into()))
                .await
                .unwrap_or_else(|e| panic!("sending {method}: {e}"));
            let answer = tokio::time::timeout(START, async {
                loop {
                    let msg = self.ws.next().await?.ok()?;
                    let Message::Text(text) = msg else { continue };
                    let Ok(v) = serde_json::from_str::<Value>(text.as_str()) else {
                        continue;
                    };
                    if v["id"] == id {
                        return Some(v);
                    }
                    self.note(&v);
                }
            })
            .await;
            match answer {
                Ok(Some(v)) if v.get("error").is_none() => v["result"].clone(),
                Ok(Some(v)) => panic!("{method} failed: {}", v["error"]),
                Ok(None) => panic!("{method}: the browser closed the connection"),
                Err(_) => panic!("{method}: no answer within {START:?}"),
            }
        }

        fn note(&mut self, event: &Value) {
            let p = &event["params"];
            let problem = match event["method"].as_str() {
                Some("Runtime.exceptionThrown") => {
                    let d = &p["exceptionDetails"];
                    Some(
                        d["exception"]["description"]
                            .as_str()
                            .map_or_else(|| d["text"].to_string(), str::to_owned),
                    )
                }
                Some("Runtime.consoleAPICalled") if p["type"] == "error" => {
                    Some(format!("console.error: {}", p["args"]))
                }
                // HTTP error statuses are the page's to handle, and the
                // tests check what it shows of them.
                Some("Log.entryAdded")
                    if p["entry"]["level"] == "error" && p["entry"]["source"] != "network" =>
                {
                    Some(format!(
                        "{} ({})",
                        p["entry"]["text"],
                        p["entry"]["url"].as_str().unwrap_or_default()
                    ))
                }
                _ => None,
            };
            self.problems.extend(problem);
        }
    }

    /// The DevTools WebSocket of Chromium's first page.
    async fn page_socket(port: u16) -> String {
        let list = format!("http://127.0.0.1:{port}/json/list");
        let until = Instant::now() + START;
        loop {
            let pages: Vec<Value> = match reqwest::get(&list).await {
                Ok(r) => r.json().await.unwrap_or_default(),
                Err(_) => Vec::new(),
            };
            if let Some(url) = pages
                .iter()
                .find(|t| t["type"] == "page")
                .and_then(|t| t["webSocketDebuggerUrl"].as_str())
            {
                return url.to_owned();
            }
            assert!(Instant::now() < until, "Chromium listed no page at {list}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
