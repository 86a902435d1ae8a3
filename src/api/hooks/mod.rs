//! Endpoints the CRMs' side calls: HubSpot's webhooks and Integration.app's
//! flow events. Both are authenticated by signature, not by bearer token;
//! the check itself is a pure function in [`signature`].

pub mod flow;
pub mod hubspot;
pub mod signature;
