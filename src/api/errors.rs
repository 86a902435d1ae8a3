//! JSON errors. Every failure the api returns is `{"error": code, "message"}`
//! with a 4xx/5xx status: operation errors through [`Fail`], and everything
//! poem itself refuses (bad JSON, wrong types, missing auth, body too large,
//! unknown route) through [`json_error`], installed with `catch_all_error`.

use poem::http::StatusCode;
use poem::{IntoResponse, Response};
use poem_openapi::Object;

/// The body of every error response.
#[derive(Debug, Clone, Object)]
pub struct ErrorBody {
    /// A stable, machine-readable code (`bad_request`, `not_found`, …).
    pub error: String,
    /// What was wrong, for a person.
    pub message: String,
}

/// The kinds of operation failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailKind {
    /// 400.
    BadRequest,
    /// 403.
    Forbidden,
    /// 404.
    NotFound,
    /// 409.
    Conflict,
    /// 503.
    Unavailable,
}

/// An operation failure, turned into the operation's own response type.
#[derive(Debug)]
pub struct Fail {
    /// Which status.
    pub kind: FailKind,
    /// The body.
    pub body: ErrorBody,
}

impl Fail {
    fn new(kind: FailKind, code: &str, message: impl Into<String>) -> Self {
        Self {
            kind,
            body: ErrorBody {
                error: code.into(),
                message: message.into(),
            },
        }
    }

    /// 400 with a specific code.
    pub fn bad_request(code: &str, message: impl Into<String>) -> Self {
        Self::new(FailKind::BadRequest, code, message)
    }

    /// 403: the token may not do this.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(FailKind::Forbidden, "forbidden", message)
    }

    /// 404.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(FailKind::NotFound, "not_found", message)
    }

    /// 409.
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(FailKind::Conflict, "conflict", message)
    }

    /// 503: a dependency (MongoDB, Redis) failed. The cause is logged, not shown.
    pub fn unavailable(cause: impl std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "dependency failure");
        Self::new(
            FailKind::Unavailable,
            "unavailable",
            "a backing service is unavailable; try again",
        )
    }
}

impl From<crate::store::StoreError> for Fail {
    /// A refused unique index is 409; anything else of the store is 503.
    fn from(e: crate::store::StoreError) -> Self {
        match e {
            crate::store::StoreError::Conflict(m) => Self::conflict(m),
            crate::store::StoreError::Other(e) => Self::unavailable(format!("{e:#}")),
        }
    }
}

/// A `customerId` parameter or field: absent stays `None`, a malformed
/// one is a 400 naming it.
pub fn customer_param(value: Option<&str>) -> Result<Option<crate::domain::CustomerId>, Fail> {
    value
        .map(crate::domain::CustomerId::parse)
        .transpose()
        .map_err(|m| Fail::bad_request("invalid_customer", format!("customerId: {m}")))
}

/// Implements `From<Fail>` for an operation response enum that has variants
/// named after the [`FailKind`]s it documents (others become `Unavailable`).
macro_rules! fail_into {
    ($ty:ident { $($kind:ident),* }) => {
        impl From<$crate::api::errors::Fail> for $ty {
            fn from(f: $crate::api::errors::Fail) -> Self {
                use $crate::api::errors::FailKind;
                match f.kind {
                    $(FailKind::$kind => $ty::$kind(poem_openapi::payload::Json(f.body)),)*
                    #[allow(unreachable_patterns)]
                    _ => $ty::Unavailable(poem_openapi::payload::Json(f.body)),
                }
            }
        }
    };
}
pub(crate) use fail_into;

/// An operation's response enum: the success variant, then one variant per
/// [`FailKind`] it documents (`Kind = status`), each with the error body.
macro_rules! response {
    ($name:ident, $ok_status:literal, $ok:ty, { $($kind:ident = $status:literal),* }) => {
        #[derive(poem_openapi::ApiResponse)]
        enum $name {
            /// Success.
            #[oai(status = $ok_status)]
            Ok(poem_openapi::payload::Json<$ok>),
            $(
                /// See the error body.
                #[oai(status = $status)]
                $kind(poem_openapi::payload::Json<$crate::api::errors::ErrorBody>),
            )*
        }
        $crate::api::errors::fail_into!($name { $($kind),* });
    };
}
pub(crate) use response;

/// Renders any poem error as the JSON error body, keeping its status.
pub async fn json_error(err: poem::Error) -> Response {
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
