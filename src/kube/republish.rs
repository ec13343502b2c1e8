//! When the node's slices are published again: at start, every
//! [`REPUBLISH_INTERVAL`], and whenever the kubelet's registration verdict
//! changes. Each round re-reads the inventory and hands it to the preparer
//! first, so what is published is what can be prepared.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tracing::{error, info, warn};

use crate::claim::prepare::Preparer;
use crate::config::NodeConfig;
use crate::inventory::NodeInventory;
use crate::kube::node::node_owner;
use crate::kube::publish::SlicePublisher;
use crate::kubelet::registration::RegistrationState;
use crate::readiness::Readiness;

/// How often the inventory is re-read and the slices republished when
/// nothing else triggers it.
pub const REPUBLISH_INTERVAL: Duration = Duration::from_secs(60);

/// Re-reads the inventory (handing it to the preparer) and republishes at
/// start, every [`REPUBLISH_INTERVAL`], and whenever the
/// kubelet's registration verdict changes (it wipes our slices while we are
/// not registered); unchanged inventories write nothing. The first round
/// that succeeds makes the slices part of `readiness` ready.
#[allow(clippy::too_many_arguments)]
pub async fn publish_loop(
    mut publisher: SlicePublisher,
    client: kube::Client,
    node: String,
    preparer: Arc<Preparer>,
    config: NodeConfig,
    mut registration: watch::Receiver<RegistrationState>,
    readiness: Readiness,
    stopped: impl Future<Output = ()>,
) {
    tokio::pin!(stopped);
    loop {
        let (root, held_by) = (config.sysfs_root.clone(), preparer.clone());
        let scanned = tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
            let inventory = NodeInventory::discover(&root)?;
            let held = held_by.held_devices()?;
            Ok((inventory, held))
        });
        match scanned.await {
            Ok(Ok((inventory, held))) => {
                // Every round: a Node deleted and re-created has a new UID,
                // and slices owned by the old one would be collected.
                if let Some(owner) = node_owner(&client, &node).await {
                    publisher.set_owner(owner);
                }
                // What is published is what can be prepared.
                preparer.refresh(&inventory, inventory.offered(&config).map(|d| d.name()));
                match publisher.publish(&inventory, &config, &held).await {
                    Ok(outcome) => {
                        info!(?outcome, "ResourceSlices published");
                        readiness.set_slices_published();
                    }
                    Err(e) => {
                        warn!(error = %format!("{e:#}"), "publishing ResourceSlices failed; retrying")
                    }
                }
            }
            Ok(Err(e)) => error!(error = %format!("{e:#}"), "inventory failed"),
            Err(e) => error!(error = %e, "inventory task failed"),
        }
        if !next_round(&mut stopped, &mut registration, REPUBLISH_INTERVAL).await {
            return;
        }
    }
}

/// Waits for the next round: the period, or a change of the kubelet's
/// registration verdict. False when the driver stops, or when the
/// registration server is gone (its channel closed: the driver is shutting
/// down, and a closed channel is "changed" at once, which would republish
/// in a burst).
async fn next_round(
    stopped: &mut (impl Future<Output = ()> + Unpin),
    registration: &mut watch::Receiver<RegistrationState>,
    period: Duration,
) -> bool {
    tokio::select! {
        _ = stopped => false,
        _ = tokio::time::sleep(period) => true,
        changed = registration.changed() => match changed {
            Ok(()) => {
                info!(state = ?*registration.borrow(), "kubelet registration changed; republishing");
                true
            }
            Err(_) => {
                info!("kubelet registration server stopped; no more republishing");
                false
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_closed_registration_channel_ends_the_loop_instead_of_a_burst() {
        let (tx, mut rx) = watch::channel(RegistrationState::Pending);
        let mut never = std::pin::pin!(std::future::pending::<()>());
        tx.send_replace(RegistrationState::Registered);
        assert!(next_round(&mut never, &mut rx, Duration::from_secs(3600)).await);
        drop(tx);
        let ended = tokio::time::timeout(
            Duration::from_secs(5),
            next_round(&mut never, &mut rx, Duration::from_secs(3600)),
        )
        .await
        .expect("no wait for the period");
        assert!(!ended);
    }
}
