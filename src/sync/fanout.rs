//! What an applied change sets off: pushes to the other CRMs, queued only
//! where a link is behind and no live job will bring it up to date.

use workers::JobError;

use super::inbound::InboundSync;
use super::{queue_err, store_err};
use crate::domain::Provider;
use crate::store::Contact;

impl InboundSync {
    /// Queues a push to every other provider whose link is missing or not
    /// synced at the contact's version. A change applied just before a crash
    /// may not have been queued; pushes are idempotent, so a duplicate costs
    /// one skipped job.
    pub(super) async fn ensure_others(
        &self,
        contact: &Contact,
        from: Provider,
    ) -> Result<(), JobError> {
        let others = self.others(&contact.customer_id, from).await?;
        self.ensure(contact, &others).await
    }

    /// Every CRM the customer syncs with but `from`.
    async fn others(
        &self,
        customer: &crate::domain::CustomerId,
        from: Provider,
    ) -> Result<Vec<Provider>, JobError> {
        Ok(self
            .pushed_to(customer)
            .await?
            .into_iter()
            .filter(|p| *p != from)
            .collect())
    }

    /// Every CRM the contact's customer syncs with.
    pub(super) async fn connected(&self, contact: &Contact) -> Result<Vec<Provider>, JobError> {
        self.pushed_to(&contact.customer_id).await
    }

    /// The CRMs the customer syncs with that take pushes now: a connection
    /// whose first sync is underway holds them, and its write step creates
    /// and updates in batches what the listings brought in and what
    /// changed meanwhile. Read through a 2 s cache: a push held just
    /// before the step ended is taken by its last pass, which runs later
    /// than that.
    async fn pushed_to(
        &self,
        customer: &crate::domain::CustomerId,
    ) -> Result<Vec<Provider>, JobError> {
        let mut providers = self
            .customers
            .providers(customer)
            .await
            .map_err(store_err)?;
        if providers.is_empty() {
            return Ok(providers);
        }
        let held = self
            .customers
            .held_providers(customer)
            .await
            .map_err(store_err)?;
        providers.retain(|p| !held.contains(p));
        Ok(providers)
    }

    /// Queues a push to each of `providers` whose link is behind the
    /// contact and has no live job to bring it up to date.
    pub(super) async fn ensure(
        &self,
        contact: &Contact,
        providers: &[Provider],
    ) -> Result<(), JobError> {
        let links = self
            .store
            .links_of(&[contact.id])
            .await
            .map_err(store_err)?;
        let mut lost = Vec::new();
        for &p in providers {
            let link = links.iter().find(|l| l.provider == p);
            let behind = link.is_none_or(|l| l.synced_version < contact.version);
            if !behind {
                continue;
            }
            // A push for this version that is queued, running or waiting
            // out a retry will get there; queueing another would only race it.
            let awaited = match link {
                Some(l) if l.pending_version >= contact.version => match &l.pending_job_id {
                    Some(id) => self.pushes.is_live(id).await.map_err(queue_err)?,
                    None => false,
                },
                _ => false,
            };
            if !awaited {
                lost.push(p);
            }
        }
        self.push(contact, &lost).await
    }

    /// The pushes a change that came from `from` owes: one to each other
    /// CRM of the customer, and one back to `from` when `back` (the app
    /// holds values that CRM lacks). Planned before the change is written,
    /// so they are written with it, as its outbox: a worker that dies
    /// after the write (killed, out of memory, its job timed out) leaves
    /// them to the outbox relay instead of losing them.
    pub(crate) async fn owed(
        &self,
        customer: &crate::domain::CustomerId,
        from: Provider,
        back: bool,
    ) -> Result<Vec<(Provider, String)>, JobError> {
        let mut providers = self.others(customer, from).await?;
        if back && self.pushed_to(customer).await?.contains(&from) {
            providers.push(from);
        }
        Ok(providers
            .into_iter()
            .map(|p| (p, workers::new_job_id()))
            .collect())
    }

    /// Queues the pushes `contact`'s change was written with (see
    /// [`Self::owed`]), then clears its outbox (if that fails, the relay
    /// finds the jobs queued already).
    pub(crate) async fn push_owed(
        &self,
        contact: &Contact,
        jobs: &[(Provider, String)],
    ) -> Result<(), JobError> {
        if jobs.is_empty() {
            return Ok(());
        }
        self.pushes
            .push_jobs(
                &self.store,
                contact.id,
                &contact.customer_id,
                jobs,
                contact.version,
            )
            .await
            .map_err(queue_err)?;
        if let Some(outbox) = &contact.outbox {
            if let Err(e) = self.store.outbox_relayed(contact.id, outbox).await {
                tracing::debug!(contact_id = %contact.id, error = %format!("{e:#}"), "outbox not cleared; the relay will");
            }
        }
        Ok(())
    }

    /// Marks the links pending and queues a push per provider.
    pub(super) async fn push(
        &self,
        contact: &Contact,
        providers: &[Provider],
    ) -> Result<(), JobError> {
        if providers.is_empty() {
            return Ok(());
        }
        self.pushes
            .push_contact(
                &self.store,
                contact.id,
                &contact.customer_id,
                providers,
                contact.version,
            )
            .await
            .map_err(queue_err)?;
        Ok(())
    }
}
