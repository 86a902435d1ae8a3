//! Integration.app's error body, `ErrorData` `{type, key?, message, data?}`,
//! and the status each simulated failure answers with.

use poem::http::StatusCode;
use poem::{IntoResponse, Response};
use serde::Serialize;
use serde_json::{json, Value};

use crate::connection::Connection;

/// The JSON body of every failed action run.
#[derive(Debug, Serialize)]
pub(crate) struct ErrorData {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    key: Option<&'static str>,
    message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) data: Option<Value>,
    /// The error this one wraps (`causedByError`).
    #[serde(rename = "causedByError", skip_serializing_if = "Option::is_none")]
    caused_by_error: Option<Box<ErrorData>>,
}

/// A failed action run: status, body and, for 429s, `Retry-After`.
#[derive(Debug)]
pub(crate) struct ActionError {
    pub(crate) status: StatusCode,
    /// Boxed: the error travels through many `Result`s and stays small.
    pub(crate) body: Box<ErrorData>,
    pub(crate) retry_after_secs: Option<u64>,
}

impl ActionError {
    fn new(
        status: StatusCode,
        kind: &'static str,
        key: Option<&'static str>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            status,
            body: Box::new(ErrorData {
                kind,
                key,
                message: message.into(),
                data: None,
                caused_by_error: None,
            }),
            retry_after_secs: None,
        }
    }

    /// 401: missing or invalid bearer token.
    pub(crate) fn not_authenticated(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "bad_request",
            Some("not_authenticated"),
            message,
        )
    }

    /// 404: a connection or an action Integration.app does not know. Its
    /// errors reference (docs.integration.app/reference/errors, and
    /// docs.getmembrane.com/reference/overview/errors) gives this shape for
    /// an unknown connection, `{type: bad_request, key: not_found, message:
    /// "Connection with id '…' not found"}`, and 404 as the status of the
    /// `not_found` key; `@membranehq/sdk`'s `NotFoundError` is that
    /// `bad_request` / `not_found` pair. A customer who disconnected gets
    /// the same: the connection is gone. An unknown action is taken to
    /// answer the same way (not published; the app must not tell the two
    /// apart by anything but the message).
    pub(crate) fn not_found(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "bad_request",
            Some("not_found"),
            message,
        )
    }

    /// The connection exists but is defunct: `@membranehq/sdk`'s
    /// `ConnectionError` (type `connection`) with `ConnectionErrorKey`
    /// `connection_is_defunct`. The HTTP status is not published (400
    /// here; the client reads the key, not the status).
    pub(crate) fn defunct(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "connection",
            Some("connection_is_defunct"),
            message,
        )
    }

    /// The CRM answered 404 for the record an action named. Not published
    /// as such: `@membranehq/sdk`'s `extractMembraneErrorData` puts an HTTP
    /// client's failure in `data.response {status, data, headers}`, the
    /// connector's API client turns a non-2xx answer into a `connection`
    /// error (Integration.app's connector-builder docs, "API client"), and
    /// the public examples (`membranehq/universal-bidirectional-sync-example`)
    /// catch failed runs as `ActionRunError`; the status of an error without
    /// a key is the default 400. So: 400 `action_run`, caused by a
    /// `connection` error that carries the CRM's 404 and body. The app
    /// reads the record as gone only from that CRM status.
    pub(crate) fn record_not_found(conn: Connection, message: impl Into<String>) -> Self {
        Self::crm_answer(404, conn.not_found_body(), message.into())
    }

    /// The CRM refused to create a record that exists already (HubSpot's
    /// 409 `CONFLICT` for a contact email it has), in the same shape as
    /// [`Self::record_not_found`].
    pub(crate) fn record_conflict(conn: Connection, message: impl Into<String>) -> Self {
        let message = message.into();
        Self::crm_answer(409, conn.conflict_body(&message), message)
    }

    /// A failed action run caused by the CRM's own `status` and `body`: 400
    /// `action_run`, caused by a `connection` error carrying them (see
    /// [`Self::record_not_found`] for where that shape comes from).
    pub(crate) fn crm_answer(status: u16, body: Value, message: String) -> Self {
        let mut e = Self::new(
            StatusCode::BAD_REQUEST,
            "action_run",
            None,
            format!("Action run failed: {message}"),
        );
        e.body.caused_by_error = Some(Box::new(ErrorData {
            kind: "connection",
            key: None,
            message,
            data: Some(json!({
                "response": {"status": status, "headers": {}, "data": body}
            })),
            caused_by_error: None,
        }));
        e
    }

    /// 400: input the action cannot take.
    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", None, message)
    }

    /// 503: the whole service is down.
    pub(crate) fn outage() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "internal",
            None,
            "Service temporarily unavailable",
        )
    }

    /// 502: the CRM answered 500.
    pub(crate) fn crm_server_error(conn: Connection, message: impl Into<String>) -> Self {
        let mut e = Self::new(StatusCode::BAD_GATEWAY, "dependency_error", None, message);
        e.body.data = Some(json!({
            "response": {"status": 500, "headers": {}, "data": conn.server_error_body()}
        }));
        e
    }

    /// 400: the CRM refused the record as invalid.
    pub(crate) fn crm_validation_error(conn: Connection, message: impl Into<String>) -> Self {
        let mut e = Self::new(StatusCode::BAD_REQUEST, "dependency_error", None, message);
        e.body.data = Some(json!({
            "response": {"status": 400, "headers": {}, "data": conn.validation_error_body()}
        }));
        e
    }

    /// 429: the CRM answered 429 with `Retry-After`.
    pub(crate) fn crm_rate_limited(
        conn: Connection,
        retry_after_secs: u64,
        limit: Option<(u32, i64)>,
    ) -> Self {
        let message = format!("{} rate limit exceeded", conn.key());
        let mut e = Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            "dependency_error",
            Some("rate_limit_exceeded"),
            message,
        );
        let (headers, data) = conn.rate_limit_response(retry_after_secs, limit);
        e.body.data = Some(json!({"response": {"status": 429, "headers": headers, "data": data}}));
        e.retry_after_secs = Some(retry_after_secs);
        e
    }
}

impl IntoResponse for ActionError {
    fn into_response(self) -> Response {
        let body = serde_json::to_vec(&self.body).unwrap_or_default();
        let mut resp = Response::builder()
            .status(self.status)
            .content_type("application/json");
        if let Some(secs) = self.retry_after_secs {
            resp = resp.header("Retry-After", secs.to_string());
        }
        resp.body(body)
    }
}

/// A JSON response `{"error": message}` for the admin routes.
pub(crate) fn admin_error(status: StatusCode, message: impl Into<String>) -> Response {
    json_response(status, &json!({"error": message.into()}))
}

/// A JSON response with `status`.
pub(crate) fn json_response(status: StatusCode, body: &Value) -> Response {
    Response::builder()
        .status(status)
        .content_type("application/json")
        .body(serde_json::to_vec(body).unwrap_or_default())
}

/// The CRM's own 400 for a request it cannot take.
pub(crate) fn refused(conn: Connection, message: impl Into<String>) -> ActionError {
    let message = message.into();
    let body = match conn {
        Connection::HubSpot => json!({
            "status": "error",
            "message": message,
            "category": "VALIDATION_ERROR",
        }),
        Connection::Pipedrive => json!({
            "success": false,
            "error": message,
            "errorCode": 400,
        }),
    };
    ActionError::crm_answer(400, body, message)
}
