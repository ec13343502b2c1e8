//! Recovery: make the state store agree with the API, in the background.
//!
//! While the driver was down — or while the API was unreachable — the
//! kubelet may have unprepared claims (it retries, but a claim deleted
//! meanwhile is never unprepared), and pods may be gone. Claims the API no
//! longer has, or has re-created, or has deallocated are unprepared here;
//! addresses no record owns are released.
//!
//! It runs after the sockets are served (a node whose API is down still
//! starts its pods), then on a period, and sooner after a pass that could
//! not reach the API (so a reconnect is noticed within seconds) or could
//! not unprepare a stale claim. Each API
//! call has its own timeout, and each claim is handled under the same
//! per-claim lock the kubelet's calls take.

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use ipam::{Ipam, Owner};
use tracing::{error, info, warn};

use crate::claim::prepare::Preparer;
use crate::failpoints::failpoint;
use crate::kube::claims::{ClaimError, ClaimReader};
use crate::state::claims;

/// What one recovery pass did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Recovered {
    /// Claims unprepared because the API no longer allocates them to us.
    pub unprepared: Vec<String>,
    /// Address owners released because no record holds them.
    pub released: Vec<String>,
    /// Whether the API could not be asked about every claim (so address
    /// GC was skipped and the next pass comes sooner).
    pub api_unsure: bool,
    /// Claims whose unprepare failed this pass (e.g. their VF was being
    /// moved home by the runtime's detach of the same pod at that moment):
    /// the next pass comes sooner, as after an API failure, instead of a
    /// whole period later with the VF and addresses still held.
    pub failed: Vec<String>,
}

/// How recovery paces itself.
#[derive(Debug, Clone, Copy)]
pub struct RecoverySchedule {
    /// Between passes that reached the API.
    pub period: Duration,
    /// After a pass that did not: doubled each time, up to `period`.
    pub retry: Duration,
    /// For each API call.
    pub call_timeout: Duration,
}

impl Default for RecoverySchedule {
    fn default() -> Self {
        RecoverySchedule {
            period: Duration::from_secs(300),
            retry: Duration::from_secs(5),
            call_timeout: Duration::from_secs(10),
        }
    }
}

impl RecoverySchedule {
    /// How long after the pass that did `done` the next one comes: a
    /// period after a complete pass; after one that could not reach the
    /// API or could not unprepare a stale claim, `retry` (doubled each
    /// time such passes follow each other, up to the period).
    fn next_wait(&self, done: &Recovered, retry: &mut Duration) -> Duration {
        if done.api_unsure || !done.failed.is_empty() {
            let wait = *retry;
            *retry = (*retry * 2).min(self.period);
            wait
        } else {
            *retry = self.retry;
            self.period
        }
    }
}

/// Runs [`once`] now and then on `schedule` until `stopped`.
pub async fn run(
    preparer: Arc<Preparer>,
    ipam: Arc<Ipam>,
    reader: ClaimReader,
    schedule: RecoverySchedule,
    stopped: impl Future<Output = ()>,
) {
    tokio::pin!(stopped);
    let mut retry = schedule.retry;
    loop {
        let done = once(&preparer, &ipam, &reader, schedule.call_timeout).await;
        if done.unprepared.is_empty() && done.released.is_empty() && done.failed.is_empty() {
            tracing::debug!(?done, "recovery pass found nothing to do");
        } else {
            info!(?done, "recovery pass done");
        }
        let wait = schedule.next_wait(&done, &mut retry);
        tokio::select! {
            _ = &mut stopped => return,
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

/// One pass: unprepares stale claims and garbage-collects addresses.
/// Failures are logged and left for the next pass: a driver that stops
/// because the API is briefly unreachable would take the node's pods down.
pub async fn once(
    preparer: &Arc<Preparer>,
    ipam: &Arc<Ipam>,
    reader: &ClaimReader,
    call_timeout: Duration,
) -> Recovered {
    let mut out = Recovered::default();
    let listing = {
        let ipam = ipam.clone();
        tokio::task::spawn_blocking(move || claims::list_all(ipam.database())).await
    };
    let listing = match listing {
        Ok(Ok(l)) => l,
        Ok(Err(e)) => {
            error!(error = %e, "cannot read prepared claims; skipping recovery");
            out.api_unsure = true;
            return out;
        }
        Err(e) => {
            error!(error = %e, "reading prepared claims failed; skipping recovery");
            out.api_unsure = true;
            return out;
        }
    };
    for r in &listing.records {
        let label = format!("{}/{}", r.namespace, r.name);
        let read = reader.read(&r.namespace, &r.name, &r.uid, preparer.driver());
        match tokio::time::timeout(call_timeout, read).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) if is_stale(&e) => {
                // Under the claim's lock, and asked again: a kubelet
                // Prepare of the same claim that got there first has then
                // finished, and one that comes later waits for us.
                let guard = preparer.lock_claim(&r.uid).await;
                let again = reader.read(&r.namespace, &r.name, &r.uid, preparer.driver());
                match tokio::time::timeout(call_timeout, again).await {
                    Ok(Err(e)) if is_stale(&e) => {}
                    _ => continue,
                }
                let (p, uid) = (preparer.clone(), r.uid.clone());
                let done = tokio::task::spawn_blocking(move || {
                    let _held = guard;
                    p.unprepare(&uid)
                })
                .await;
                match done {
                    Ok(Ok(())) => {
                        info!(claim = %label, uid = %r.uid, "unprepared a claim the API no longer allocates");
                        out.unprepared.push(r.uid.clone());
                    }
                    Ok(Err(e)) => {
                        error!(claim = %label, error = %e, "unprepare during recovery failed; retrying soon");
                        out.failed.push(r.uid.clone());
                    }
                    Err(e) => {
                        error!(claim = %label, error = %e, "unprepare task failed; retrying soon");
                        out.failed.push(r.uid.clone());
                    }
                }
            }
            Ok(Err(e)) => {
                out.api_unsure = true;
                warn!(claim = %label, error = %e, "cannot check the claim; keeping it");
            }
            Err(_) => {
                out.api_unsure = true;
                warn!(claim = %label, timeout = ?call_timeout, "reading the claim timed out; keeping it");
            }
        }
    }
    if out.api_unsure {
        // GC only with a complete picture.
        crate::metrics::metrics().recovered(out.unprepared.len(), 0);
        return out;
    }
    let unreadable: BTreeSet<String> = listing.unreadable.into_iter().map(|u| u.key).collect();
    let ipam = ipam.clone();
    let gc = tokio::task::spawn_blocking(move || gc_addresses(&ipam, &unreadable)).await;
    match gc {
        Ok(Ok(released)) => out.released = released,
        Ok(Err(e)) => error!(error = %e, "address GC failed"),
        Err(e) => error!(error = %e, "address GC task failed"),
    }
    crate::metrics::metrics().recovered(out.unprepared.len(), out.released.len());
    out
}

/// Whether the API's answer means the claim is no longer ours to hold:
/// deleted, re-created under another UID, or deallocated.
fn is_stale(e: &ClaimError) -> bool {
    matches!(
        e,
        ClaimError::NotFound { .. } | ClaimError::Replaced { .. } | ClaimError::NotAllocated { .. }
    )
}

/// Releases the addresses no claim record holds. The claims of records
/// that do not decode keep theirs: nothing says those are free, and an
/// address handed to a second pod is worse than one kept too long.
fn gc_addresses(ipam: &Ipam, unreadable: &BTreeSet<String>) -> Result<Vec<String>, String> {
    let records = claims::list(ipam.database()).map_err(|e| e.to_string())?;
    let mut live: BTreeSet<Owner> = records
        .iter()
        .flat_map(|r| {
            r.devices
                .iter()
                .filter_map(|d| d.addresses.as_ref().map(|a| a.owner.clone()))
        })
        .collect();
    if !unreadable.is_empty() {
        let held = ipam.list().map_err(|e| e.to_string())?;
        live.extend(
            held.into_iter()
                .filter(|a| unreadable.contains(&a.owner.claim_uid))
                .map(|a| a.owner),
        );
    }
    failpoint!("recover::address_gc");
    let released = ipam.gc(&live).map_err(|e| e.to_string())?;
    Ok(released
        .into_iter()
        .map(|a| {
            info!(owner = %a.owner, addresses = %a, "released addresses no claim holds");
            a.owner.to_string()
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schedule() -> RecoverySchedule {
        RecoverySchedule {
            period: Duration::from_secs(300),
            retry: Duration::from_secs(5),
            call_timeout: Duration::from_secs(10),
        }
    }

    #[test]
    fn a_pass_with_a_failed_unprepare_is_followed_soon_then_less_soon() {
        let s = schedule();
        let mut retry = s.retry;
        let failed = Recovered {
            failed: vec!["uid-1".into()],
            ..Recovered::default()
        };
        assert_eq!(s.next_wait(&failed, &mut retry), Duration::from_secs(5));
        assert_eq!(s.next_wait(&failed, &mut retry), Duration::from_secs(10));
        let unsure = Recovered {
            api_unsure: true,
            ..Recovered::default()
        };
        assert_eq!(s.next_wait(&unsure, &mut retry), Duration::from_secs(20));
        // A complete pass waits the period and starts retries afresh.
        assert_eq!(
            s.next_wait(&Recovered::default(), &mut retry),
            Duration::from_secs(300)
        );
        assert_eq!(s.next_wait(&failed, &mut retry), Duration::from_secs(5));
    }

    #[test]
    fn retries_never_wait_longer_than_the_period() {
        let s = schedule();
        let mut retry = Duration::from_secs(200);
        let unsure = Recovered {
            api_unsure: true,
            ..Recovered::default()
        };
        assert_eq!(s.next_wait(&unsure, &mut retry), Duration::from_secs(200));
        assert_eq!(s.next_wait(&unsure, &mut retry), Duration::from_secs(300));
        assert_eq!(s.next_wait(&unsure, &mut retry), Duration::from_secs(300));
    }
}
