//! Black-box test harness: starts the real `contact-sync` processes
//! (simulator, api, workers) against the Redis and MongoDB server that
//! `scripts/test.sh` started, with a fresh database and Redis namespace per
//! test, and talks to them over HTTP.
#![allow(dead_code)]

use std::collections::HashMap;
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use redis::AsyncCommands;
use serde_json::{json, Value};

pub const TOKEN: &str = "test-token";
pub const WS_KEY: &str = "test-workspace";
pub const WS_SECRET: &str = "test-secret";
pub const HS_SECRET: &str = "test-hubspot-client-secret";

/// The dev package's `contact-sync-dev` (the simulator): in the target
/// directory beside the product's binary. `cargo test --workspace` and
/// `scripts/test.sh` build it; `CONTACT_SYNC_DEV` names another.
pub fn dev_binary() -> std::path::PathBuf {
    if let Some(exe) = std::env::var_os("CONTACT_SYNC_DEV") {
        return exe.into();
    }
    let exe = std::path::Path::new(env!("CARGO_BIN_EXE_contact-sync"))
        .with_file_name(format!("contact-sync-dev{}", std::env::consts::EXE_SUFFIX));
    assert!(
        exe.exists(),
        "{} is missing: build it with `cargo build -p contact-sync-dev`",
        exe.display()
    );
    exe
}

pub fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6391".into())
}

pub fn mongodb_uri() -> String {
    std::env::var("MONGODB_URI")
        .unwrap_or_else(|_| "mongodb://127.0.0.1:27031/?directConnection=true".into())
}

#[path = "../../workers/tests/support/ports.rs"]
mod ports;
pub use ports::free_port;

/// Polls `check` until it returns `Some`, or panics with `what` at the deadline.
pub async fn eventually<T, F, Fut>(deadline: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let until = Instant::now() + deadline;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < until, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Options of one test deployment.
#[derive(Clone)]
pub struct Options {
    pub workers: usize,
    pub env: Vec<(String, String)>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            workers: 1,
            env: Vec::new(),
        }
    }
}

impl Options {
    pub fn env(mut self, k: &str, v: impl ToString) -> Self {
        self.env.push((k.into(), v.to_string()));
        self
    }
}

/// The running system of one test.
pub struct TestApp {
    pub api: String,
    pub sim: String,
    pub namespace: String,
    pub db: String,
    pub http: reqwest::Client,
    pub workers: Vec<Child>,
    /// `contact-sync scheduler` processes started with [`TestApp::add_scheduler`].
    pub schedulers: Vec<Child>,
    others: Vec<Child>,
    env: HashMap<String, String>,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        for c in self
            .workers
            .iter_mut()
            .chain(self.schedulers.iter_mut())
            .chain(self.others.iter_mut())
        {
            let _ = c.kill();
            let _ = c.wait();
        }
        forget_data(&self.db, &self.namespace);
    }
}

/// Drops a test's database and Redis keys, so a test server that stays up
/// between runs does not fill up (the in-memory MongoDB server slows down as
/// databases pile up). Runs on a thread of its own: `Drop` is not async.
fn forget_data(db: &str, namespace: &str) {
    let (uri, db, redis, pattern) = (
        mongodb_uri(),
        db.to_owned(),
        redis_url(),
        format!("{namespace}:*"),
    );
    let cleanup = std::thread::spawn(move || {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            return;
        };
        rt.block_on(async move {
            let within = Duration::from_secs(5);
            if let Ok(client) = mongodb::Client::with_uri_str(&uri).await {
                let _ = tokio::time::timeout(within, client.database(&db).drop()).await;
            }
            let Ok(client) = redis::Client::open(redis) else {
                return;
            };
            let Ok(Ok(mut conn)) =
                tokio::time::timeout(within, client.get_multiplexed_async_connection()).await
            else {
                return;
            };
            let keys: Vec<String> = match tokio::time::timeout(within, async {
                let mut iter: redis::AsyncIter<String> = conn.scan_match(&pattern).await?;
                let mut keys = Vec::new();
                while let Some(k) = iter.next_item().await {
                    keys.push(k?);
                }
                Ok::<_, redis::RedisError>(keys)
            })
            .await
            {
                Ok(Ok(keys)) => keys,
                _ => return,
            };
            for chunk in keys.chunks(500) {
                let _: Result<(), _> = redis::cmd("UNLINK").arg(chunk).query_async(&mut conn).await;
            }
        });
    });
    let _ = cleanup.join();
}

impl TestApp {
    pub async fn spawn() -> Self {
        Self::with(Options::default()).await
    }

    pub async fn with(opts: Options) -> Self {
        let tag = uuid::Uuid::new_v4().simple().to_string();
        let sim_port = free_port();
        let api_port = free_port();
        let mut env: HashMap<String, String> = [
            ("REDIS_URL", redis_url()),
            ("REDIS_NAMESPACE", format!("t-{tag}")),
            ("MONGODB_URI", mongodb_uri()),
            ("MONGODB_DB", format!("t_{tag}")),
            ("API_ADDR", format!("127.0.0.1:{api_port}")),
            ("API_TOKEN", TOKEN.into()),
            ("SIMULATOR_ADDR", format!("127.0.0.1:{sim_port}")),
            (
                "INTEGRATION_APP_URL",
                format!("http://127.0.0.1:{sim_port}"),
            ),
            ("INTEGRATION_APP_WORKSPACE_KEY", WS_KEY.into()),
            ("INTEGRATION_APP_WORKSPACE_SECRET", WS_SECRET.into()),
            (
                "INTEGRATION_APP_CONFIG_DIR",
                concat!(env!("CARGO_MANIFEST_DIR"), "/integration-app").into(),
            ),
            ("HUBSPOT_CLIENT_SECRET", HS_SECRET.into()),
            (
                "SIMULATOR_WEBHOOK_URL",
                format!("http://127.0.0.1:{api_port}/api/integration/webhook/hubspot"),
            ),
            (
                "SIMULATOR_EVENTS_URL",
                format!("http://127.0.0.1:{api_port}/api/integration/events"),
            ),
            // tests that start a first sync ask for it (tests/first_sync.rs
            // has the one that a new connection starts by itself)
            ("FIRST_SYNC_ON_CONNECT", "false".into()),
            ("RETRY_BASE_MS", "50".into()),
            ("RATE_LIMIT_HUBSPOT", "1000".into()),
            ("RATE_LIMIT_PIPEDRIVE", "1000".into()),
            ("WORKER_HEARTBEAT_MS", "200".into()),
            ("WORKER_DEAD_AFTER_MS", "1500".into()),
            ("WORKER_CONCURRENCY", "8".into()),
            ("RUST_LOG", "warn".into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        for (k, v) in opts.env {
            env.insert(k, v);
        }
        let mut app = Self {
            api: format!("http://127.0.0.1:{api_port}"),
            sim: format!("http://127.0.0.1:{sim_port}"),
            namespace: env["REDIS_NAMESPACE"].clone(),
            db: env["MONGODB_DB"].clone(),
            http: reqwest::Client::new(),
            workers: Vec::new(),
            schedulers: Vec::new(),
            others: Vec::new(),
            env,
        };
        let sim = app.process("simulator");
        app.others.push(sim);
        let api = app.process("api");
        app.others.push(api);
        for _ in 0..opts.workers {
            app.add_worker();
        }
        app.wait_ready().await;
        // Ready, but whose api answered? One that could not listen has
        // exited, and another test's would be answering in its place.
        for c in &mut app.others {
            if let Ok(Some(status)) = c.try_wait() {
                panic!("the test's simulator or api exited at start ({status}): see its stderr");
            }
        }
        app
    }

    fn process(&self, sub: &str) -> Child {
        // the simulator is a development tool, not part of the product: the
        // dev package's binary, built beside this one
        let exe = if sub == "simulator" {
            dev_binary()
        } else {
            std::path::PathBuf::from(env!("CARGO_BIN_EXE_contact-sync"))
        };
        Command::new(exe)
            .arg(sub)
            .envs(&self.env)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting contact-sync {sub}: {e}"))
    }

    /// Starts one more worker whose clock is `skew` seconds off (negative:
    /// behind), with libfaketime preloaded (Debian package faketime);
    /// returns its index.
    pub fn add_worker_with_clock_skew(&mut self, skew_secs: i64) -> usize {
        let lib = std::env::var("FAKETIME_LIB")
            .unwrap_or_else(|_| "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1".into());
        assert!(
            std::path::Path::new(&lib).exists(),
            "{lib} missing: scripts/test.sh installs the faketime package"
        );
        let w = Command::new(env!("CARGO_BIN_EXE_contact-sync"))
            .arg("worker")
            .envs(&self.env)
            .env("LD_PRELOAD", &lib)
            .env("FAKETIME", format!("{skew_secs:+}s"))
            // only the wall clock is off, as on a machine whose clock drifted
            .env("DONT_FAKE_MONOTONIC", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .expect("starting a worker under faketime (Debian package faketime)");
        self.workers.push(w);
        self.workers.len() - 1
    }

    /// Starts one more worker process; returns its index.
    pub fn add_worker(&mut self) -> usize {
        let w = self.process("worker");
        self.workers.push(w);
        self.workers.len() - 1
    }

    /// Starts one more worker process with extra environment, its log
    /// (stderr) written to `log`; returns its index.
    pub fn add_worker_logging(&mut self, env: &[(&str, &str)], log: &std::path::Path) -> usize {
        let w = self.process_logging("worker", env, log);
        self.workers.push(w);
        self.workers.len() - 1
    }

    /// Starts a `contact-sync scheduler` with extra environment, its log
    /// (stderr) written to `log`; returns its index in `schedulers`.
    pub fn add_scheduler(&mut self, env: &[(&str, &str)], log: &std::path::Path) -> usize {
        let s = self.process_logging("scheduler", env, log);
        self.schedulers.push(s);
        self.schedulers.len() - 1
    }

    /// Starts `contact-sync <sub>` with extra environment, its stderr
    /// written to `log`.
    fn process_logging(&self, sub: &str, env: &[(&str, &str)], log: &std::path::Path) -> Child {
        let file = std::fs::File::create(log).expect("process log file");
        Command::new(env!("CARGO_BIN_EXE_contact-sync"))
            .arg(sub)
            .envs(&self.env)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("starting contact-sync {sub}: {e}"))
    }

    /// `kill -9` of a worker.
    pub fn kill_worker(&mut self, i: usize) {
        let _ = self.workers[i].kill();
        let _ = self.workers[i].wait();
    }

    async fn wait_ready(&self) {
        let http = self.http.clone();
        let (api, sim) = (self.api.clone(), self.sim.clone());
        eventually(Duration::from_secs(20), "api and simulator ready", || {
            let (http, api, sim) = (http.clone(), api.clone(), sim.clone());
            async move {
                let a = http.get(format!("{api}/readyz")).send().await.ok()?;
                let s = http.get(format!("{sim}/_sim/health")).send().await.ok()?;
                (a.status().is_success() && s.status().is_success()).then_some(())
            }
        })
        .await;
    }

    pub async fn queue(&self) -> workers::Queue {
        workers::Queue::connect(&self.env["REDIS_URL"], &self.namespace)
            .await
            .expect("redis")
    }

    /// Waits until every link (HubSpot and Pipedrive) of every contact in
    /// `ids` has `status`, all within one deadline.
    pub async fn wait_links(&self, ids: &[&str], status: &str, within: Duration) {
        eventually(within, &format!("every link {status}"), || async {
            for id in ids {
                for p in ["hubspot", "pipedrive"] {
                    if self.link(id, p).await?["syncStatus"] != status {
                        return None;
                    }
                }
            }
            Some(())
        })
        .await;
    }

    /// Waits until no sync job of any kind is left to run (twice in a row,
    /// as a job may queue another as it finishes).
    pub async fn settle(&self, within: Duration) {
        let q = self.queue().await;
        eventually(within, "every queue idle", || async {
            for _ in 0..2 {
                for queue in ["outbound-upsert", "inbound-change", "provider-poll"] {
                    if q.counts(queue).await.ok()?.outstanding() > 0 {
                        return None;
                    }
                }
            }
            Some(())
        })
        .await;
    }

    /// Creates `n` contacts `{prefix}{i}@example.com`, 20 at a time; returns
    /// their ids.
    pub async fn create_many(&self, prefix: &str, n: usize) -> Vec<String> {
        let mut ids = Vec::with_capacity(n);
        for chunk in (0..n).collect::<Vec<_>>().chunks(20) {
            let creates = chunk.iter().map(|i| {
                let email = format!("{prefix}{i}@example.com");
                async move { self.create(json!({ "email": email })).await }
            });
            for (status, body) in futures::future::join_all(creates).await {
                assert_eq!(status, 202, "{body}");
                ids.push(body["contact"]["id"].as_str().unwrap().to_owned());
            }
        }
        ids
    }

    // ---- api ----

    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.api))
            .bearer_auth(TOKEN);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("api reachable");
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    pub async fn create(&self, body: Value) -> (u16, Value) {
        self.call(reqwest::Method::POST, "/api/contacts", Some(body))
            .await
    }

    /// Creates a contact that must be accepted; returns its id.
    pub async fn create_ok(&self, email: &str) -> String {
        let (status, body) = self
            .create(json!({ "firstName": "Ada", "lastName": "Lovelace", "email": email }))
            .await;
        assert_eq!(status, 202, "create {email}: {body}");
        body["contact"]["id"].as_str().expect("id").to_owned()
    }

    /// Creates customers (id, name), each connection on its own simulated
    /// CRM account: `accounts` lists (customer, connection, account id).
    pub async fn customers_on_own_accounts(
        &self,
        customers: &[(&str, &str)],
        accounts: &[(&str, &str, u64)],
    ) {
        for (customer, connection, account) in accounts {
            let (status, body) = self
                .sim_send(
                    reqwest::Method::PUT,
                    &format!("/accounts/{customer}/{connection}"),
                    Some(json!({ "accountId": account })),
                )
                .await;
            assert_eq!(
                status, 200,
                "simulated account {customer}/{connection}: {body}"
            );
        }
        for (id, name) in customers {
            let connections: serde_json::Map<String, Value> = accounts
                .iter()
                .filter(|(c, _, _)| c == id)
                .map(|(_, conn, account)| {
                    (
                        conn.to_string(),
                        json!({ "accountId": account.to_string() }),
                    )
                })
                .collect();
            let body = json!({ "id": id, "name": name, "connections": connections });
            let (status, created) = self
                .call(reqwest::Method::POST, "/api/customers", Some(body.clone()))
                .await;
            assert_eq!(status, 201, "create customer {body}: {created}");
        }
    }

    pub async fn contact(&self, id: &str) -> (u16, Value) {
        self.call(reqwest::Method::GET, &format!("/api/contacts/{id}"), None)
            .await
    }

    /// The link of a contact with a provider.
    pub async fn link(&self, id: &str, provider: &str) -> Option<Value> {
        let (_, c) = self.contact(id).await;
        c["links"]
            .as_array()?
            .iter()
            .find(|l| l["provider"] == provider)
            .cloned()
    }

    /// Waits until the link has `status`; returns it.
    pub async fn wait_link(
        &self,
        id: &str,
        provider: &str,
        status: &str,
        within: Duration,
    ) -> Value {
        eventually(
            within,
            &format!("{provider} link of {id} {status}"),
            || async {
                self.link(id, provider)
                    .await
                    .filter(|l| l["syncStatus"] == status)
            },
        )
        .await
    }

    // ---- simulator ----

    /// The api's `/metrics`, as text.
    pub async fn metrics_text(&self) -> String {
        self.http
            .get(format!("{}/metrics", self.api))
            .bearer_auth(TOKEN)
            .send()
            .await
            .expect("api reachable")
            .text()
            .await
            .expect("text")
    }

    pub async fn sim_get(&self, path: &str) -> Value {
        self.http
            .get(format!("{}/_sim{path}", self.sim))
            .send()
            .await
            .expect("simulator reachable")
            .json()
            .await
            .expect("json")
    }

    pub async fn records(&self, connection: &str) -> Vec<Value> {
        self.sim_get(&format!("/{connection}/records"))
            .await
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    pub async fn sim_send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut req = self
            .http
            .request(method, format!("{}/_sim{path}", self.sim));
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("simulator reachable");
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// Sends a HubSpot webhook batch signed with v1 and v3, as HubSpot does.
    pub async fn hubspot_webhook(&self, events: &Value) -> (u16, Value) {
        let body = events.to_string();
        let ts = chrono_ms().to_string();
        self.webhook_raw(
            body.as_bytes(),
            &signed_headers(HS_SECRET, &self.webhook_url(), body.as_bytes(), &ts),
        )
        .await
    }

    pub fn webhook_url(&self) -> String {
        format!("{}/api/integration/webhook/hubspot", self.api)
    }

    pub async fn webhook_raw(&self, body: &[u8], headers: &[(String, String)]) -> (u16, Value) {
        let mut req = self
            .http
            .post(self.webhook_url())
            .header("Content-Type", "application/json")
            .body(body.to_vec());
        for (k, v) in headers {
            req = req.header(k.as_str(), v.as_str());
        }
        let resp = req.send().await.expect("api reachable");
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// Live local contacts.
    pub async fn contacts(&self) -> Vec<Value> {
        let (status, body) = self
            .call(reqwest::Method::GET, "/api/contacts?perPage=200", None)
            .await;
        assert_eq!(status, 200, "{body}");
        body["items"].as_array().cloned().unwrap_or_default()
    }

    /// Every live local contact, page by page.
    pub async fn contacts_all(&self) -> Vec<Value> {
        let mut all = Vec::new();
        for page in 1.. {
            let (status, body) = self
                .call(
                    reqwest::Method::GET,
                    &format!("/api/contacts?perPage=200&page={page}"),
                    None,
                )
                .await;
            assert_eq!(status, 200, "{body}");
            let items = body["items"].as_array().cloned().unwrap_or_default();
            if items.is_empty() {
                break;
            }
            all.extend(items);
        }
        all
    }

    pub async fn contact_by_email(&self, email: &str) -> Option<Value> {
        self.contacts()
            .await
            .into_iter()
            .find(|c| c["email"] == email)
    }

    pub async fn set_faults(&self, faults: Value) {
        let r = self
            .http
            .put(format!("{}/_sim/faults", self.sim))
            .json(&faults)
            .send()
            .await
            .expect("simulator reachable");
        assert!(r.status().is_success(), "setting faults: {}", r.status());
    }

    pub async fn calls(&self, connection: &str, action: &str) -> Vec<Value> {
        self.sim_get(&format!("/calls?connection={connection}&action={action}"))
            .await
            .as_array()
            .cloned()
            .unwrap_or_default()
    }
}

/// Stops a process as an orchestrator would (SIGTERM) and waits for it to
/// exit; panics if it is still running after `within`.
pub async fn terminate(child: &mut Child, within: Duration) -> std::process::ExitStatus {
    let status = Command::new("kill")
        .arg(child.id().to_string())
        .status()
        .expect("running kill");
    assert!(status.success(), "kill {} failed", child.id());
    let pid = child.id();
    eventually(within, &format!("process {pid} exits on SIGTERM"), || {
        std::future::ready(child.try_wait().expect("waiting for a child"))
    })
    .await
}

/// The email of a native record of either CRM.
pub fn record_email(connection: &str, r: &Value) -> Option<String> {
    match connection {
        "hubspot" => r["properties"]["email"].as_str().map(str::to_owned),
        _ => r["emails"][0]["value"].as_str().map(str::to_owned),
    }
}

pub fn chrono_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// v1 and v3 signature headers for a POST of `body` to `uri`.
pub fn signed_headers(secret: &str, uri: &str, body: &[u8], ts: &str) -> Vec<(String, String)> {
    use sha2::Digest;
    let mut v1 = sha2::Sha256::new();
    v1.update(secret.as_bytes());
    v1.update(body);
    vec![
        ("X-HubSpot-Signature-Version".into(), "v1".into()),
        ("X-HubSpot-Signature".into(), hex::encode(v1.finalize())),
        (
            "X-HubSpot-Signature-v3".into(),
            contact_sync::api::hooks::signature::sign_v3(secret, "POST", uri, body, ts),
        ),
        ("X-HubSpot-Request-Timestamp".into(), ts.into()),
    ]
}

/// One HubSpot event.
pub fn hs_event(event_id: u64, kind: &str, object_id: &str, source: &str) -> Value {
    json!({
        "eventId": event_id, "subscriptionId": 1, "portalId": 62515, "appId": 54321,
        "occurredAt": chrono_ms(), "subscriptionType": kind, "attemptNumber": 0,
        "objectId": object_id.parse::<u64>().unwrap_or(0), "changeSource": source,
    })
}

/// What one run of a `contact-sync` operator command printed.
pub struct CliRun {
    pub success: bool,
    pub stdout: String,
    pub stderr: String,
}

impl CliRun {
    /// stdout parsed as JSON (for `--json` runs).
    pub fn json(&self) -> Value {
        assert!(self.success, "command failed: {}", self.stderr);
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {}", self.stdout))
    }
}

impl TestApp {
    /// Runs `contact-sync <args>` against this api with the operator token.
    pub async fn cli(&self, args: &[&str]) -> CliRun {
        self.cli_env(args, &[("CONTACT_SYNC_TOKEN", TOKEN)]).await
    }

    /// Runs `contact-sync <args>` against this api with only `env` for the
    /// token variables (`CONTACT_SYNC_TOKEN`, `API_TOKEN`).
    pub async fn cli_env(&self, args: &[&str], env: &[(&str, &str)]) -> CliRun {
        run_cli(args, &self.api, env).await
    }
}

/// Runs `contact-sync <args>` against the api at `url`.
pub async fn run_cli(args: &[&str], url: &str, env: &[(&str, &str)]) -> CliRun {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_contact-sync"))
        .args(args)
        .env_remove("CONTACT_SYNC_TOKEN")
        .env_remove("API_TOKEN")
        .env("CONTACT_SYNC_URL", url)
        .env("RUST_LOG", "warn")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .await
        .unwrap_or_else(|e| panic!("running contact-sync {args:?}: {e}"));
    CliRun {
        success: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A Redis or MongoDB server of one test's own, on a free port, that the
/// test may stop and start again (with its data: Redis with AOF on, the
/// MongoDB server on disk), as an outage would.
pub struct Service {
    kind: ServiceKind,
    pub port: u16,
    dir: std::path::PathBuf,
    child: Option<Child>,
}

#[derive(Clone, Copy)]
pub enum ServiceKind {
    Redis,
    Mongo,
}

impl Service {
    pub fn redis() -> Self {
        Self::start_new(ServiceKind::Redis)
    }

    /// A MongoDB wire server: `mongod` when installed, else SecantusDB from
    /// the virtualenv `scripts/services.sh` made.
    pub fn mongo() -> Self {
        Self::start_new(ServiceKind::Mongo)
    }

    fn start_new(kind: ServiceKind) -> Self {
        let dir = std::env::temp_dir().join(format!("cs-svc-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let mut s = Self {
            kind,
            port: free_port(),
            dir,
            child: None,
        };
        s.start();
        s
    }

    pub fn url(&self) -> String {
        match self.kind {
            ServiceKind::Redis => format!("redis://127.0.0.1:{}", self.port),
            ServiceKind::Mongo => {
                format!("mongodb://127.0.0.1:{}/?directConnection=true", self.port)
            }
        }
    }

    /// Starts the server (again) on the same port and data.
    pub fn start(&mut self) {
        let port = self.port.to_string();
        let mut cmd = match self.kind {
            ServiceKind::Redis => {
                let mut c = Command::new("redis-server");
                c.args(["--bind", "127.0.0.1", "--port", &port, "--save", ""])
                    .args(["--appendonly", "yes", "--appendfsync", "always"])
                    .arg("--dir")
                    .arg(&self.dir);
                c
            }
            ServiceKind::Mongo => {
                let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
                // what scripts/services.sh found: mongod or SecantusDB
                let bin = std::env::var_os("MONGO_SERVER_BIN")
                    .map(std::path::PathBuf::from)
                    .or_else(|| which("mongod"))
                    .unwrap_or_else(|| root.join(".dev/venv/bin/secantusd-py"));
                let is_mongod = bin.file_name().is_some_and(|n| n == "mongod");
                match is_mongod.then_some(bin.clone()) {
                    Some(bin) => {
                        let mut c = Command::new(bin);
                        c.args(["--bind_ip", "127.0.0.1", "--port", &port, "--dbpath"])
                            .arg(&self.dir);
                        c
                    }
                    None => {
                        let mut c = Command::new(&bin);
                        c.args(["--host", "127.0.0.1", "--port", &port, "--storage-path"])
                            .arg(&self.dir);
                        c
                    }
                }
            }
        };
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting a private server");
        self.child = Some(child);
        let until = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < until,
                "private server did not start on {}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops the server as an operator would (SIGTERM: Redis flushes its
    /// AOF), and waits until it is gone.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // `kill` sends SIGTERM: the server shuts down cleanly.
            let _ = Command::new("kill").arg(c.id().to_string()).status();
            let until = Instant::now() + Duration::from_secs(20);
            loop {
                if let Ok(Some(_)) = c.try_wait() {
                    break;
                }
                if Instant::now() > until {
                    let _ = c.kill();
                    let _ = c.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn which(bin: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(bin))
            .find(|p| p.is_file())
    })
}

/// A Redis Cluster of three masters (no replicas) from Debian's
/// `redis-server`, on free local ports, created with `redis-cli --cluster
/// create`, for the tests that run the system on a cluster. Stopped and
/// removed on drop.
pub struct RedisCluster {
    pub ports: Vec<u16>,
    dir: std::path::PathBuf,
    children: Vec<Child>,
}

impl RedisCluster {
    pub fn start() -> Self {
        let dir =
            std::env::temp_dir().join(format!("cs-cluster-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let mut ports = Vec::new();
        while ports.len() < 3 {
            // a node also listens on its port + 10000 (the cluster bus)
            let p = free_port();
            if p < 55_000
                && !ports.contains(&p)
                && TcpListener::bind(("127.0.0.1", p + 10_000)).is_ok()
            {
                ports.push(p);
            }
        }
        let mut children = Vec::new();
        for p in &ports {
            let node = dir.join(p.to_string());
            std::fs::create_dir_all(&node).expect("node dir");
            let child = Command::new("redis-server")
                .args(["--bind", "127.0.0.1", "--port", &p.to_string()])
                .args(["--cluster-enabled", "yes", "--cluster-node-timeout", "2000"])
                .args(["--save", "", "--appendonly", "no"])
                .arg("--dir")
                .arg(&node)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("starting a cluster node");
            children.push(child);
        }
        let cluster = Self {
            ports,
            dir,
            children,
        };
        let until = Instant::now() + Duration::from_secs(30);
        for p in &cluster.ports {
            while std::net::TcpStream::connect(("127.0.0.1", *p)).is_err() {
                assert!(Instant::now() < until, "cluster node {p} did not start");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        let addrs: Vec<String> = cluster
            .ports
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect();
        let out = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addrs)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .expect("redis-cli --cluster create");
        assert!(
            out.status.success(),
            "cluster create: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        // every node must agree the cluster is up before clients connect
        for p in &cluster.ports {
            loop {
                let info = Command::new("redis-cli")
                    .args(["-p", &p.to_string(), "cluster", "info"])
                    .output()
                    .expect("redis-cli cluster info");
                if String::from_utf8_lossy(&info.stdout).contains("cluster_state:ok") {
                    break;
                }
                assert!(Instant::now() < until, "cluster did not come up on {p}");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        cluster
    }

    /// The URL the system is given: `redis+cluster://` with every node.
    pub fn url(&self) -> String {
        let nodes: Vec<String> = self
            .ports
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect();
        format!("redis+cluster://{}", nodes.join(","))
    }

    /// The node (index in port order) serving `key`'s slot.
    pub fn node_of(&self, key: &str) -> usize {
        let cli = |p: u16, args: &[&str]| {
            let out = Command::new("redis-cli")
                .args(["-p", &p.to_string()])
                .args(args)
                .output()
                .expect("redis-cli");
            String::from_utf8_lossy(&out.stdout).into_owned()
        };
        let slot: u16 = cli(self.ports[0], &["cluster", "keyslot", key])
            .trim()
            .parse()
            .expect("a slot");
        self.ports
            .iter()
            .position(|p| {
                let nodes = cli(*p, &["cluster", "nodes"]);
                let me = nodes
                    .lines()
                    .find(|l| l.contains("myself"))
                    .unwrap_or_default();
                // fields 9.. are the node's slots: "a-b" ranges or single slots
                me.split_whitespace().skip(8).any(|range| {
                    let (a, b) = range.split_once('-').unwrap_or((range, range));
                    matches!((a.parse::<u16>(), b.parse::<u16>()), (Ok(a), Ok(b)) if (a..=b).contains(&slot))
                })
            })
            .expect("a node serves every slot")
    }

    /// A Redis namespace whose cross-queue keys (`{ns}:queues`) live on
    /// another node than `queue`'s keys, so a test sees the keys of one
    /// run spread over the nodes whatever the random namespace would hash
    /// to.
    pub fn namespace_apart_from(&self, queue: &str) -> String {
        let home = self.node_of(&format!("{{{queue}}}"));
        loop {
            let ns = format!("t-{}", uuid::Uuid::new_v4().simple());
            if self.node_of(&format!("{ns}:queues")) != home {
                return ns;
            }
        }
    }

    /// Keys held by each node, in port order.
    pub fn keys_per_node(&self) -> Vec<u64> {
        self.ports
            .iter()
            .map(|p| {
                let out = Command::new("redis-cli")
                    .args(["-p", &p.to_string(), "dbsize"])
                    .output()
                    .expect("redis-cli dbsize");
                String::from_utf8_lossy(&out.stdout)
                    .trim()
                    .parse()
                    .unwrap_or(0)
            })
            .collect()
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The id of the job an accepted write queued for `provider`.
pub fn job_id(accepted: &Value, provider: &str) -> String {
    accepted["jobs"]
        .as_array()
        .and_then(|jobs| jobs.iter().find(|j| j["provider"] == provider))
        .and_then(|j| j["jobId"].as_str())
        .unwrap_or_else(|| panic!("a {provider} job in {accepted}"))
        .to_owned()
}
