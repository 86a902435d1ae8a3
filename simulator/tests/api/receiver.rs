//! A stand-in for the app's inbound endpoints: records every request and
//! answers from a script (then 200).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use poem::listener::TcpAcceptor;
use poem::{Request, Response, Server};
use serde_json::Value;
use tokio::sync::{oneshot, Notify};
use tokio::time::{timeout_at, Instant};

/// How long a test waits for something to arrive.
pub const PATIENCE: Duration = Duration::from_secs(10);

/// One request as it arrived.
#[derive(Debug, Clone)]
pub struct Received {
    pub path: String,
    /// Lower-cased names.
    pub headers: HashMap<String, String>,
    pub body: Vec<u8>,
    pub json: Value,
}

impl Received {
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(&name.to_lowercase())
            .unwrap_or_else(|| panic!("no {name} header in {:?}", self.headers))
    }
}

/// How to answer one request.
#[derive(Debug, Clone, Copy)]
pub struct Answer {
    pub status: u16,
    pub delay: Duration,
}

#[derive(Default)]
struct Inner {
    requests: Mutex<Vec<Received>>,
    script: Mutex<VecDeque<Answer>>,
    arrived: Notify,
}

pub struct Receiver {
    /// The URL to configure as the target (path `/hook`).
    pub url: String,
    inner: Arc<Inner>,
    _shutdown: oneshot::Sender<()>,
}

impl Receiver {
    pub async fn start() -> Self {
        let inner = Arc::new(Inner::default());
        let state = inner.clone();
        let endpoint = poem::endpoint::make(move |mut req: Request| {
            let state = state.clone();
            async move { state.handle(&mut req).await }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let acceptor = TcpAcceptor::from_tokio(listener).unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        tokio::spawn(
            Server::new_with_acceptor(acceptor).run_with_graceful_shutdown(
                endpoint,
                async move {
                    let _ = rx.await;
                },
                Some(Duration::from_millis(10)),
            ),
        );
        Self {
            url,
            inner,
            _shutdown: tx,
        }
    }

    /// The next requests are answered with these statuses, in order.
    pub fn answer(&self, statuses: &[u16]) {
        let answers = statuses.iter().map(|&status| Answer {
            status,
            delay: Duration::ZERO,
        });
        self.script(answers);
    }

    pub fn script(&self, answers: impl IntoIterator<Item = Answer>) {
        self.inner.script.lock().unwrap().extend(answers);
    }

    pub fn requests(&self) -> Vec<Received> {
        self.inner.requests.lock().unwrap().clone()
    }

    /// Waits until `done` holds for the requests so far, and returns them.
    pub async fn wait_until(
        &self,
        what: &str,
        done: impl Fn(&[Received]) -> bool,
    ) -> Vec<Received> {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let arrived = self.inner.arrived.notified();
            tokio::pin!(arrived);
            arrived.as_mut().enable();
            let requests = self.requests();
            if done(&requests) {
                return requests;
            }
            timeout_at(deadline, arrived)
                .await
                .unwrap_or_else(|_| panic!("timed out waiting for {what}; got {requests:#?}"));
        }
    }

    /// Waits for `n` requests in all.
    pub async fn wait_for(&self, n: usize) -> Vec<Received> {
        self.wait_until(&format!("{n} requests"), |r| r.len() >= n)
            .await
    }

    /// Every event of every HubSpot request so far, in arrival order.
    pub fn events(&self) -> Vec<Value> {
        self.requests()
            .iter()
            .flat_map(|r| r.json.as_array().cloned().unwrap_or_default())
            .collect()
    }

    /// Waits until the HubSpot requests hold `n` events in all.
    pub async fn wait_for_events(&self, n: usize) -> Vec<Value> {
        self.wait_until(&format!("{n} events"), |r| {
            r.iter()
                .map(|r| r.json.as_array().map_or(0, Vec::len))
                .sum::<usize>()
                >= n
        })
        .await;
        self.events()
    }
}

impl Inner {
    async fn handle(&self, req: &mut Request) -> Response {
        let body = req.take_body().into_vec().await.unwrap_or_default();
        let answer = self.script.lock().unwrap().pop_front().unwrap_or(Answer {
            status: 200,
            delay: Duration::ZERO,
        });
        let received = Received {
            path: req.uri().path().to_owned(),
            headers: req
                .headers()
                .iter()
                .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or("").to_owned()))
                .collect(),
            json: serde_json::from_slice(&body).unwrap_or(Value::Null),
            body,
        };
        self.requests.lock().unwrap().push(received);
        self.arrived.notify_waiters();
        if !answer.delay.is_zero() {
            tokio::time::sleep(answer.delay).await;
        }
        Response::builder()
            .status(poem::http::StatusCode::from_u16(answer.status).unwrap())
            .finish()
    }
}
