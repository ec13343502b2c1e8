//! Start-up recovery: make the state store agree with the API.
//!
//! While the driver was down the kubelet may have unprepared claims (it
//! retries, but a claim deleted meanwhile is never unprepared), and pods
//! may be gone. Claims the API no longer has, or has re-created, or has
//! deallocated are unprepared here; addresses no record owns are released.

use std::collections::BTreeSet;

use ipam::{Ipam, Owner};
use tracing::{error, info, warn};

use crate::claim::prepare::Preparer;
use crate::kube::claims::{ClaimError, ClaimReader};
use crate::state::claims;

/// What recovery did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Recovered {
    /// Claims unprepared because the API no longer allocates them to us.
    pub unprepared: Vec<String>,
    /// Address owners released because no record holds them.
    pub released: Vec<String>,
}

/// Unprepares stale claims and garbage-collects addresses. Failures are
/// logged and left for the next start: a driver that refuses to start
/// because the API is briefly unreachable would take the node's pods down.
pub async fn on_start(preparer: &Preparer, ipam: &Ipam, reader: &ClaimReader) -> Recovered {
    let mut out = Recovered::default();
    let records = match claims::list(ipam.database()) {
        Ok(r) => r,
        Err(e) => {
            error!(error = %e, "cannot read prepared claims; skipping recovery");
            return out;
        }
    };
    let mut api_unsure = false;
    for r in &records {
        let label = format!("{}/{}", r.namespace, r.name);
        match reader
            .read(&r.namespace, &r.name, &r.uid, preparer.driver())
            .await
        {
            Ok(_) => {}
            Err(
                ClaimError::NotFound { .. }
                | ClaimError::Replaced { .. }
                | ClaimError::NotAllocated { .. },
            ) => match preparer.unprepare(&r.uid) {
                Ok(()) => {
                    info!(claim = %label, uid = %r.uid, "unprepared a claim the API no longer allocates");
                    out.unprepared.push(r.uid.clone());
                }
                Err(e) => error!(claim = %label, error = %e, "unprepare during recovery failed"),
            },
            Err(e) => {
                api_unsure = true;
                warn!(claim = %label, error = %e, "cannot check the claim; keeping it");
            }
        }
    }
    if api_unsure {
        // GC only with a complete picture.
        return out;
    }
    let live: BTreeSet<Owner> = match claims::list(ipam.database()) {
        Ok(records) => records
            .iter()
            .flat_map(|r| {
                r.devices
                    .iter()
                    .filter_map(|d| d.addresses.as_ref().map(|a| a.owner.clone()))
            })
            .collect(),
        Err(e) => {
            error!(error = %e, "cannot re-read prepared claims; skipping address GC");
            return out;
        }
    };
    match ipam.gc(&live) {
        Ok(released) => {
            for a in released {
                info!(owner = %a.owner, addresses = %a, "released addresses no claim holds");
                out.released.push(a.owner.to_string());
            }
        }
        Err(e) => error!(error = %e, "address GC failed"),
    }
    out
}
