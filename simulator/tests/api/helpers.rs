//! `TestApp`: a simulator on 127.0.0.1:0 and one method per endpoint.

use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use reqwest::header::HeaderMap;
use reqwest::StatusCode;
use serde_json::{json, Value};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub const KEY: &str = "test-workspace";
pub const SECRET: &str = "test-secret";
/// The simulator's default customer, and the one `good_token` names.
pub const CUSTOMER: &str = "contact-sync";

/// A response taken apart.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
}

pub struct TestApp {
    pub base: String,
    client: reqwest::Client,
    shutdown: Option<oneshot::Sender<()>>,
    pub server: Option<JoinHandle<anyhow::Result<()>>>,
}

pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A token signed with `secret` carrying `claims`.
pub fn token(alg: Algorithm, secret: &str, claims: Value) -> String {
    encode(
        &Header::new(alg),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

/// A valid token, as the app mints it, for the default customer.
pub fn good_token() -> String {
    customer_token(CUSTOMER)
}

/// A valid token for `customer`.
pub fn customer_token(customer: &str) -> String {
    let now = now_secs();
    token(
        Algorithm::HS512,
        SECRET,
        json!({"iss": KEY, "id": customer, "name": "Customer", "iat": now, "exp": now + 7200}),
    )
}

impl TestApp {
    pub async fn spawn() -> Self {
        Self::spawn_with(None, None).await
    }

    /// A simulator sending webhooks and flow events as configured.
    pub async fn spawn_with(
        webhooks: Option<simulator::WebhookConfig>,
        events: Option<simulator::EventsConfig>,
    ) -> Self {
        let cfg = simulator::SimulatorConfig {
            workspace_key: KEY.into(),
            workspace_secret: SECRET.into(),
            config_dir: PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../integration-app"),
            default_customer: CUSTOMER.into(),
            webhooks,
            events,
        };
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (tx, rx) = oneshot::channel::<()>();
        let server = tokio::spawn(simulator::serve(cfg, listener, async move {
            let _ = rx.await;
        }));
        let app = Self {
            base,
            client: reqwest::Client::new(),
            shutdown: Some(tx),
            server: Some(server),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while app
            .client
            .get(app.url("/_sim/health"))
            .send()
            .await
            .is_err()
        {
            assert!(Instant::now() < deadline, "simulator did not come up");
            tokio::task::yield_now().await;
        }
        app
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// Stops the server and waits for `serve` to return.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        let _ = self.shutdown.take().unwrap().send(());
        self.server.take().unwrap().await.unwrap()
    }

    async fn reply(resp: reqwest::Response) -> Reply {
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = resp.bytes().await.unwrap();
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or_else(|_| panic!("not JSON: {bytes:?}"))
        };
        Reply {
            status,
            headers,
            body,
        }
    }

    /// Runs an action with `authorization` as the header value, if any.
    pub async fn run_as(
        &self,
        authorization: Option<&str>,
        conn: &str,
        action: &str,
        input: &Value,
    ) -> Reply {
        let mut req = self
            .client
            .post(self.url(&format!("/connections/{conn}/actions/{action}/run")))
            .json(input);
        if let Some(a) = authorization {
            req = req.header("Authorization", a);
        }
        Self::reply(req.send().await.unwrap()).await
    }

    pub async fn run(&self, conn: &str, action: &str, input: Value) -> Reply {
        self.run_as(
            Some(&format!("Bearer {}", good_token())),
            conn,
            action,
            &input,
        )
        .await
    }

    /// Runs an action for `customer` (a token whose `id` names it).
    pub async fn run_for(&self, customer: &str, conn: &str, action: &str, input: Value) -> Reply {
        self.run_as(
            Some(&format!("Bearer {}", customer_token(customer))),
            conn,
            action,
            &input,
        )
        .await
    }

    /// Runs an action for `customer` that must succeed; returns its output.
    pub async fn ok_for(&self, customer: &str, conn: &str, action: &str, input: Value) -> Value {
        let r = self.run_for(customer, conn, action, input).await;
        assert_eq!(
            r.status,
            StatusCode::CREATED,
            "{action} on {conn} for {customer}: {}",
            r.body
        );
        r.body["output"].clone()
    }

    /// Runs an action that must succeed; returns its output.
    pub async fn ok(&self, conn: &str, action: &str, input: Value) -> Value {
        let r = self.run(conn, action, input).await;
        assert_eq!(
            r.status,
            StatusCode::CREATED,
            "{action} on {conn}: {}",
            r.body
        );
        r.body["output"].clone()
    }

    pub async fn upsert(&self, conn: &str, fields: Value) -> Value {
        self.ok(conn, "upsert-contact", json!({ "fields": fields }))
            .await
    }

    pub async fn get_contact(&self, conn: &str, id: &str) -> Reply {
        self.run(conn, "get-contact", json!({ "id": id })).await
    }

    pub async fn admin(&self, method: reqwest::Method, path: &str, body: Option<&str>) -> Reply {
        let mut req = self.client.request(method, self.url(path));
        if let Some(b) = body {
            req = req
                .header("Content-Type", "application/json")
                .body(b.to_owned());
        }
        Self::reply(req.send().await.unwrap()).await
    }

    pub async fn put_faults(&self, faults: Value) {
        let r = self
            .admin(
                reqwest::Method::PUT,
                "/_sim/faults",
                Some(&faults.to_string()),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    }

    pub async fn records(&self, conn: &str, include_deleted: bool) -> Vec<Value> {
        let path = format!("/_sim/{conn}/records?includeDeleted={include_deleted}");
        let r = self.admin(reqwest::Method::GET, &path, None).await;
        assert_eq!(r.status, StatusCode::OK);
        r.body.as_array().unwrap().clone()
    }

    /// `customer`'s live records on `conn`, through `?customer=`.
    pub async fn records_of(&self, customer: &str, conn: &str) -> Vec<Value> {
        let path = format!("/_sim/{conn}/records?customer={customer}");
        let r = self.admin(reqwest::Method::GET, &path, None).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        r.body.as_array().unwrap().clone()
    }

    pub async fn accounts(&self) -> Vec<Value> {
        let r = self
            .admin(reqwest::Method::GET, "/_sim/accounts", None)
            .await;
        assert_eq!(r.status, StatusCode::OK);
        r.body.as_array().unwrap().clone()
    }

    pub async fn put_account(&self, customer: &str, conn: &str, body: Value) -> Reply {
        let path = format!("/_sim/accounts/{customer}/{conn}");
        self.admin(reqwest::Method::PUT, &path, Some(&body.to_string()))
            .await
    }

    pub async fn calls(&self, query: &str) -> Vec<Value> {
        let r = self
            .admin(reqwest::Method::GET, &format!("/_sim/calls{query}"), None)
            .await;
        assert_eq!(r.status, StatusCode::OK);
        r.body.as_array().unwrap().clone()
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}
