//! What an operator's self-check asks Integration.app about a customer's
//! connection: whether it exists and can be used, and whether the actions
//! the app runs are there (`GET /connections/{c}` and
//! `GET /connections/{c}/actions/{key}` of its published api).

use serde::Deserialize;

use super::{CrmError, IntegrationApp};
use crate::domain::{CustomerId, Provider};

/// The actions the app runs on every connection.
pub const ACTIONS: [&str; 7] = [
    "find-contact",
    "create-contact",
    "update-contact",
    "delete-contact",
    "get-contact",
    super::LIST,
    super::LIST_CHANGED,
];

/// What the self-check found of one connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnectionState {
    /// It exists and can be used.
    Usable,
    /// Integration.app does not know it, or it is disconnected or defunct:
    /// the customer has to connect again.
    NeedsReconnect(String),
}

/// What the self-check concluded of one connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Connected, with every action the app runs.
    Ready,
    /// The customer has to connect again (why).
    NeedsReconnect(String),
    /// Actions missing from the workspace (push `integration-app/`).
    MissingActions(Vec<&'static str>),
}

impl Verdict {
    /// What needs fixing, in words; `None` when nothing does.
    pub fn problem(&self) -> Option<String> {
        match self {
            Self::Ready => None,
            Self::NeedsReconnect(why) => Some(format!("needs reconnecting: {why}")),
            Self::MissingActions(missing) => Some(format!(
                "actions missing (push integration-app/): {}",
                missing.join(", ")
            )),
        }
    }
}

/// The parts of Integration.app's `ConnectionDto` the check reads.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ConnectionDto {
    #[serde(default)]
    disconnected: bool,
    #[serde(default)]
    is_defunct: bool,
}

impl IntegrationApp {
    /// Whether the customer's connection with `provider` exists and can be
    /// used.
    ///
    /// # Errors
    /// When Integration.app cannot be asked (network, token refused, 5xx).
    pub async fn connection_state(
        &self,
        customer: &CustomerId,
        provider: Provider,
    ) -> Result<ConnectionState, CrmError> {
        match self
            .get::<ConnectionDto>(customer, provider, &format!("connections/{provider}"))
            .await
        {
            Ok(c) if c.disconnected => Ok(ConnectionState::NeedsReconnect(
                "the connection is disconnected".into(),
            )),
            Ok(c) if c.is_defunct => Ok(ConnectionState::NeedsReconnect(
                "the connection is defunct".into(),
            )),
            Ok(_) => Ok(ConnectionState::Usable),
            Err(CrmError::NeedsReconnect { message, .. }) => {
                Ok(ConnectionState::NeedsReconnect(message))
            }
            Err(e) => Err(e),
        }
    }

    /// The self-check of the customer's connection with `provider`: that
    /// it can be used, then that every action the app runs is there.
    ///
    /// # Errors
    /// When Integration.app cannot be asked.
    pub async fn check_connection(
        &self,
        customer: &CustomerId,
        provider: Provider,
    ) -> Result<Verdict, CrmError> {
        if let ConnectionState::NeedsReconnect(why) =
            self.connection_state(customer, provider).await?
        {
            return Ok(Verdict::NeedsReconnect(why));
        }
        let missing = self.missing_actions(customer, provider).await?;
        Ok(if missing.is_empty() {
            Verdict::Ready
        } else {
            Verdict::MissingActions(missing)
        })
    }

    /// The actions of [`ACTIONS`] Integration.app does not have on the
    /// customer's connection with `provider`.
    ///
    /// # Errors
    /// When Integration.app cannot be asked.
    pub async fn missing_actions(
        &self,
        customer: &CustomerId,
        provider: Provider,
    ) -> Result<Vec<&'static str>, CrmError> {
        let mut missing = Vec::new();
        for action in ACTIONS {
            let path = format!("connections/{provider}/actions/{action}");
            match self
                .get::<serde::de::IgnoredAny>(customer, provider, &path)
                .await
            {
                Ok(_) => {}
                Err(CrmError::NeedsReconnect { .. } | CrmError::NotFound(_)) => {
                    missing.push(action)
                }
                Err(e) => return Err(e),
            }
        }
        Ok(missing)
    }
}
