//! JSON errors. Every failure the api returns is `{"error": code, "message"}`
//! with a 4xx/5xx status: operation errors through [`ApiError`], and everything
//! poem itself refuses (bad JSON, wrong types, missing auth, body too large,
//! unknown route) through [`json_error`], installed with `catch_all_error`.

use poem::http::StatusCode;
use poem::{IntoResponse, Response};
use poem_openapi::payload::Json;
use poem_openapi::types::ToJSON;
use poem_openapi::{ApiResponse, Object};

/// The body of every error response.
#[derive(Debug, Clone, Object)]
pub struct ErrorBody {
    /// A stable, machine-readable code (`bad_request`, `not_found`, …).
    pub error: String,
    /// What was wrong, for a person.
    pub message: String,
}

/// Every failure an operation answers: one type for the whole api. An
/// operation returns [`ApiResult`] (its success as `Json`, [`Accepted`],
/// [`Created`] or [`NoContent`]) and `?` does the rest. Each variant
/// carries the same [`ErrorBody`]; its `error` code says which of the
/// causes a status covers it was.
#[derive(Debug, ApiResponse)]
pub enum ApiError {
    /// The input is invalid: the body names the field or parameter.
    #[oai(status = 400)]
    BadRequest(Json<ErrorBody>),
    /// The token may not do this (a viewer token writing, or a customer
    /// token reaching another customer's data).
    #[oai(status = 403)]
    Forbidden(Json<ErrorBody>),
    /// No such resource (or not one the token may see).
    #[oai(status = 404)]
    NotFound(Json<ErrorBody>),
    /// The request clashes with the resource's state (a duplicate email, a
    /// running job, a first sync underway).
    #[oai(status = 409)]
    Conflict(Json<ErrorBody>),
    /// MongoDB or Redis is unavailable; try again.
    #[oai(status = 503)]
    Unavailable(Json<ErrorBody>),
}

fn body(code: &str, message: impl Into<String>) -> Json<ErrorBody> {
    Json(ErrorBody {
        error: code.into(),
        message: message.into(),
    })
}

impl ApiError {
    /// 400 with a specific code.
    pub fn bad_request(code: &str, message: impl Into<String>) -> Self {
        Self::BadRequest(body(code, message))
    }

    /// 403: the token may not do this.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::Forbidden(body("forbidden", message))
    }

    /// 404.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::NotFound(body("not_found", message))
    }

    /// 409.
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::Conflict(body("conflict", message))
    }

    /// 503: a dependency (MongoDB, Redis) failed. The cause is logged, not shown.
    pub fn unavailable(cause: impl std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "dependency failure");
        Self::Unavailable(body(
            "unavailable",
            "a backing service is unavailable; try again",
        ))
    }

    /// The body, whatever the status.
    pub fn body(&self) -> &ErrorBody {
        match self {
            Self::BadRequest(b)
            | Self::Forbidden(b)
            | Self::NotFound(b)
            | Self::Conflict(b)
            | Self::Unavailable(b) => &b.0,
        }
    }
}

impl From<crate::store::StoreError> for ApiError {
    /// A refused unique index is 409; anything else of the store is 503.
    fn from(e: crate::store::StoreError) -> Self {
        match e {
            crate::store::StoreError::Conflict(m) => Self::conflict(m),
            crate::store::StoreError::Other(e) => Self::unavailable(format!("{e:#}")),
        }
    }
}

/// Which error statuses an operation documents, as a set of bits: an
/// operation names its own with `ApiResult<Json<T>, { NOT_FOUND |
/// UNAVAILABLE }>`, so its spec lists those and no others.
pub type Statuses = u8;
/// 400.
pub const BAD_REQUEST: Statuses = 1;
/// 403.
pub const FORBIDDEN: Statuses = 2;
/// 404.
pub const NOT_FOUND: Statuses = 4;
/// 409.
pub const CONFLICT: Statuses = 8;
/// 503.
pub const UNAVAILABLE: Statuses = 16;

fn status_bit(status: u16) -> Statuses {
    match status {
        400 => BAD_REQUEST,
        403 => FORBIDDEN,
        404 => NOT_FOUND,
        409 => CONFLICT,
        _ => UNAVAILABLE,
    }
}

/// An [`ApiError`] as one operation answers it: the same error, with the
/// statuses `S` the operation documents. `?` turns any `ApiError` into
/// it; the status answered is always the error's own.
#[derive(Debug)]
pub struct Errors<const S: Statuses>(pub ApiError);

impl<const S: Statuses> From<ApiError> for Errors<S> {
    fn from(e: ApiError) -> Self {
        Self(e)
    }
}

impl<const S: Statuses> From<crate::store::StoreError> for Errors<S> {
    fn from(e: crate::store::StoreError) -> Self {
        Self(e.into())
    }
}

impl<const S: Statuses> ApiResponse for Errors<S> {
    fn meta() -> poem_openapi::registry::MetaResponses {
        let mut meta = ApiError::meta();
        meta.responses
            .retain(|r| r.status.is_some_and(|s| status_bit(s) & S != 0));
        meta
    }

    fn register(registry: &mut poem_openapi::registry::Registry) {
        ApiError::register(registry);
    }
}

impl<const S: Statuses> IntoResponse for Errors<S> {
    fn into_response(self) -> Response {
        self.0.into_response()
    }
}

impl<const S: Statuses> From<Errors<S>> for poem::Error {
    fn from(e: Errors<S>) -> Self {
        e.0.into()
    }
}

/// What an operation returns: its success payload, or an [`ApiError`] of
/// one of the statuses `S` it documents.
pub type ApiResult<T, const S: Statuses> = Result<T, Errors<S>>;

/// 202: queued; the work happens in the background.
#[derive(ApiResponse)]
pub enum Accepted<T: ToJSON> {
    /// Accepted; the work is queued.
    #[oai(status = 202)]
    Accepted(Json<T>),
}

/// 201: created.
#[derive(ApiResponse)]
pub enum Created<T: ToJSON> {
    /// Created.
    #[oai(status = 201)]
    Created(Json<T>),
}

/// 204: done, nothing to answer.
#[derive(ApiResponse)]
pub enum NoContent {
    /// Done.
    #[oai(status = 204)]
    NoContent,
}

/// A `customerId` parameter or field: absent stays `None`, a malformed
/// one is a 400 naming it.
pub fn customer_param(value: Option<&str>) -> Result<Option<crate::domain::CustomerId>, ApiError> {
    value
        .map(crate::domain::CustomerId::parse)
        .transpose()
        .map_err(|m| ApiError::bad_request("invalid_customer", format!("customerId: {m}")))
}

/// Renders any poem error as the JSON error body, keeping its status.
pub async fn json_error(err: poem::Error) -> Response {
    if err.is_from_response() {
        // An operation's own answer (an `ApiError`), already JSON.
        return err.into_response();
    }
    let status = err.status();
    let code = match status {
        StatusCode::BAD_REQUEST => "bad_request",
        StatusCode::UNAUTHORIZED => "unauthorized",
        StatusCode::FORBIDDEN => "forbidden",
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        StatusCode::SERVICE_UNAVAILABLE => "unavailable",
        s if s.is_server_error() => "internal",
        _ => "error",
    };
    let message = match status {
        StatusCode::UNAUTHORIZED => "missing or invalid bearer token".to_owned(),
        StatusCode::PAYLOAD_TOO_LARGE => "request body is too large".to_owned(),
        StatusCode::SERVICE_UNAVAILABLE => {
            tracing::error!(error = %err, "request failed");
            "a backing service is unavailable; try again".to_owned()
        }
        s if s.is_server_error() => {
            tracing::error!(error = %err, "request failed");
            "internal error".to_owned()
        }
        _ => err.to_string(),
    };
    error_response(status, code, message)
}

/// The JSON error body `{"error": code, "message"}` with `status`, for
/// handlers outside the OpenAPI operations (the CRM-side hooks).
pub fn error_response(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    let body = serde_json::json!({ "error": code, "message": message.into() });
    poem::web::Json(body).with_status(status).into_response()
}
