//! `GET /api/check`: the operator's self-check (as `contact-sync check`
//! runs it) for the console: the workspace token mints, and each enabled
//! connection exists, can be used and has the actions the app runs. It
//! asks Integration.app (one `GET` for the connection and one per action),
//! so it runs when asked, never on the console's refresh.

use futures::{StreamExt, TryStreamExt};
use poem_openapi::param::Query;
use poem_openapi::payload::Json;
use poem_openapi::{Object, OpenApi};

use super::auth::ViewerAuth;
use super::errors::{customer_param, ApiError, ApiResult, BAD_REQUEST, NOT_FOUND, UNAVAILABLE};
use super::ApiState;
use crate::crm::{IntegrationApp, TokenMinter};
use crate::domain::{CustomerId, Provider};

/// Connections asked about at once.
const AT_ONCE: usize = 8;

/// What the api checks with: the client and the workspace's token minter,
/// or why it cannot (the workspace is not configured).
#[derive(Clone)]
pub struct Checker {
    ready: Result<(IntegrationApp, std::sync::Arc<TokenMinter>), String>,
    /// The customer whose token proves the workspace credentials.
    default: CustomerId,
}

impl Checker {
    /// A checker over Integration.app at `url`, with the workspace `key`
    /// and `secret` (`None`: the check reports it unconfigured).
    ///
    /// # Errors
    /// When the HTTP client cannot be built.
    pub fn new(
        url: &str,
        workspace: anyhow::Result<(String, crate::domain::Secret)>,
        default: CustomerId,
        timeout: std::time::Duration,
    ) -> anyhow::Result<Self> {
        let ready = match workspace {
            Ok((key, secret)) => {
                let crm = IntegrationApp::new(
                    url,
                    TokenMinter::new(&key, secret.expose()),
                    None,
                    timeout,
                )?;
                Ok((
                    crm,
                    std::sync::Arc::new(TokenMinter::new(&key, secret.expose())),
                ))
            }
            Err(e) => Err(format!("{e:#}")),
        };
        Ok(Self { ready, default })
    }
}

/// The self-check of one connection.
#[derive(Debug, Object)]
#[oai(rename_all = "camelCase")]
pub struct ConnectionCheck {
    /// The customer.
    pub customer_id: String,
    /// The CRM.
    pub provider: String,
    /// Connected, with every action the app runs.
    pub ok: bool,
    /// What needs fixing.
    pub problem: Option<String>,
}

/// The self-check's findings.
#[derive(Debug, Object)]
#[oai(rename_all = "camelCase")]
pub struct CheckReport {
    /// The workspace credentials mint a customer token.
    pub workspace_ok: bool,
    /// Why they do not.
    pub workspace_problem: Option<String>,
    /// Each enabled connection (the asked customer's only, if one was).
    pub connections: Vec<ConnectionCheck>,
    /// Connections that need fixing.
    pub problems: u32,
}

// Problems found are findings (200), not failures; 503 when MongoDB or
// Integration.app could not be asked.

/// The self-check endpoint.
pub struct CheckApi;

#[OpenApi(tag = "super::Tag::Operators")]
impl CheckApi {
    /// The self-check `contact-sync check` runs: the workspace token, then
    /// each enabled connection (of `customerId` only, when given) and the
    /// actions the app runs on it, asked of Integration.app.
    #[oai(path = "/check", method = "get")]
    async fn check(
        &self,
        state: poem::web::Data<&ApiState>,
        _auth: ViewerAuth,
        #[oai(name = "customerId")] customer: Query<Option<String>>,
    ) -> ApiResult<Json<CheckReport>, { BAD_REQUEST | NOT_FOUND | UNAVAILABLE }> {
        let only = customer_param(customer.0.as_deref())?;
        let (crm, tokens) = match &state.checker.ready {
            Ok(ready) => ready,
            Err(why) => return Ok(report(Some(why.clone()), Vec::new())),
        };
        if let Err(e) = tokens.token(state.checker.default.as_str()) {
            return Ok(report(Some(format!("minting a token: {e}")), Vec::new()));
        }
        let targets = state.enabled_connections(only.as_ref()).await?;
        let connections = futures::stream::iter(targets)
            .map(|(customer, provider)| async move {
                let verdict = crm
                    .check_connection(&customer, provider)
                    .await
                    .map_err(|e| {
                        ApiError::unavailable(format!(
                            "asking Integration.app about {customer} {provider}: {e}"
                        ))
                    })?;
                let problem = verdict.problem();
                Ok::<_, ApiError>(ConnectionCheck {
                    customer_id: customer.to_string(),
                    provider: provider.to_string(),
                    ok: problem.is_none(),
                    problem,
                })
            })
            .buffered(AT_ONCE)
            .try_collect()
            .await?;
        Ok(report(None, connections))
    }
}

fn report(
    workspace_problem: Option<String>,
    connections: Vec<ConnectionCheck>,
) -> Json<CheckReport> {
    let problems = connections.iter().filter(|c| !c.ok).count() as u32;
    Json(CheckReport {
        workspace_ok: workspace_problem.is_none(),
        workspace_problem,
        connections,
        problems,
    })
}

impl ApiState {
    /// Every enabled connection with a CRM the deployment syncs with, of
    /// one customer (404 when there is no such customer) or of all.
    async fn enabled_connections(
        &self,
        only: Option<&CustomerId>,
    ) -> Result<Vec<(CustomerId, Provider)>, ApiError> {
        let Some(id) = only else {
            return self
                .store
                .enabled_connections(&self.providers)
                .await
                .map_err(ApiError::unavailable);
        };
        let customer = self
            .store
            .customer(id)
            .await
            .map_err(ApiError::unavailable)?
            .ok_or_else(|| ApiError::not_found(format!("no customer {id}")))?;
        Ok(customer
            .enabled()
            .into_iter()
            .filter(|p| self.providers.contains(p))
            .map(|p| (customer.id.clone(), p))
            .collect())
    }
}
