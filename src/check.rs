//! `contact-sync check`: an operator's self-check of the deployment against
//! its Integration.app workspace. It mints a token with the workspace
//! credentials, then, for every customer's enabled connection, asks
//! Integration.app whether the connection exists and can be used and
//! whether the actions the app runs are there. Prints one line per
//! connection; fails (exit code 1) when anything needs fixing.

use std::time::Duration;

use anyhow::Context;

use crate::config::CheckProcess;
use crate::crm::{IntegrationApp, TokenMinter};
use crate::domain::CustomerId;
use crate::store::Store;

/// Runs the check, printing what it finds to stdout.
///
/// # Errors
/// When the workspace is not configured, MongoDB or Integration.app cannot
/// be reached, or a connection needs fixing.
pub async fn run(cfg: &CheckProcess) -> anyhow::Result<()> {
    let (key, secret) = cfg.integration.require_workspace()?;
    let tokens = TokenMinter::new(&key, secret.expose());
    let default = CustomerId::parse(&cfg.integration.integration_app_customer_id)
        .map_err(|m| anyhow::anyhow!("INTEGRATION_APP_CUSTOMER_ID: {m}"))?;
    tokens
        .token(default.as_str())
        .context("minting a token with the workspace secret")?;
    println!("ok    workspace {key}: a customer token is minted");
    let crm = IntegrationApp::new(
        &cfg.integration.integration_app_url,
        tokens,
        None,
        Duration::from_secs(cfg.integration.crm_call_timeout_secs.max(1)),
    )?;
    let store = Store::connect_with(&cfg.mongo.mongodb_uri, &cfg.mongo.mongodb_db, None)
        .await
        .context("MONGODB_URI: cannot connect")?;
    let connections = store.enabled_connections(&cfg.sync.providers).await?;
    let mut problems = 0;
    for (customer, provider) in &connections {
        let who = format!("{customer} {provider}");
        let verdict = crm
            .check_connection(customer, *provider)
            .await
            .with_context(|| format!("asking Integration.app about {who}"))?;
        match verdict.problem() {
            None => println!("ok    {who}: connected, every action there"),
            Some(problem) => {
                problems += 1;
                println!("FAIL  {who}: {problem}");
            }
        }
    }
    let checked = connections.len();
    if problems > 0 {
        anyhow::bail!("{problems} of {checked} connections need fixing");
    }
    println!("ok    {checked} connections checked");
    Ok(())
}
