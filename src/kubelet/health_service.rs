//! The kubelet's device health stream (`v1alpha1.DRAResourceHealth`,
//! KEP-4680) on the DRA socket: the kubelet subscribes once with
//! `NodeWatchResources` and shows each pod the health of the devices it
//! uses in the pod's status.
//!
//! Each subscriber gets the full health at once, again on every change,
//! and again every [`RESEND_INTERVAL`]: the kubelet marks a device
//! `Unknown` when it has heard nothing about it for
//! [`HEALTH_CHECK_TIMEOUT`]. The stream covers every device of the pool
//! (published or prepared), so a device prepared between two messages is
//! already known.

use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use proto::dra_health::v1alpha1::dra_resource_health_server::DraResourceHealth;
use proto::dra_health::v1alpha1::{
    DeviceHealth as WireHealth, DeviceIdentifier, HealthStatus, NodeWatchResourcesRequest,
    NodeWatchResourcesResponse,
};
use tokio::sync::{mpsc, watch};
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::health::HealthReport;

/// How often an unchanged health is sent again.
pub const RESEND_INTERVAL: Duration = Duration::from_secs(30);
/// Told to the kubelet: after this long without news of a device, it may
/// call it `Unknown`. Several resends fit in it, so one slow round does
/// not flip a pod's status.
pub const HEALTH_CHECK_TIMEOUT: Duration = Duration::from_secs(150);

/// The health service; cheap to clone, one per server.
#[derive(Clone)]
pub struct HealthService {
    reports: watch::Receiver<Arc<HealthReport>>,
    resend: Duration,
}

impl HealthService {
    /// Streams the reports `reports` follows (see [`crate::health::HealthBook::subscribe`]).
    pub fn new(reports: watch::Receiver<Arc<HealthReport>>) -> Self {
        HealthService {
            reports,
            resend: RESEND_INTERVAL,
        }
    }
}

/// The wire form of a report: every judged device with its status, the
/// time of the check and, for an unhealthy one, why.
pub fn response(report: &HealthReport) -> NodeWatchResourcesResponse {
    let checked = report
        .checked_at
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let timeout = HEALTH_CHECK_TIMEOUT.as_secs();
    NodeWatchResourcesResponse {
        devices: report
            .devices
            .iter()
            .map(|(name, health)| WireHealth {
                device: Some(DeviceIdentifier {
                    pool_name: report.pool.clone(),
                    device_name: name.clone(),
                }),
                health: match &health.problem {
                    None => HealthStatus::Healthy,
                    Some(_) => HealthStatus::Unhealthy,
                } as i32,
                last_updated_time: i64::try_from(checked).unwrap_or(i64::MAX),
                health_check_timeout_seconds: i64::try_from(timeout).unwrap_or(i64::MAX),
                message: health
                    .problem
                    .as_ref()
                    .map(|p| p.message())
                    .unwrap_or_default(),
            })
            .collect(),
    }
}

type HealthStream = Pin<Box<dyn Stream<Item = Result<NodeWatchResourcesResponse, Status>> + Send>>;

#[tonic::async_trait]
impl DraResourceHealth for HealthService {
    type NodeWatchResourcesStream = HealthStream;

    async fn node_watch_resources(
        &self,
        _request: Request<NodeWatchResourcesRequest>,
    ) -> Result<Response<Self::NodeWatchResourcesStream>, Status> {
        let mut reports = self.reports.clone();
        let resend = self.resend;
        let (tx, rx) = mpsc::channel(2);
        tracing::info!("the kubelet subscribed to device health");
        tokio::spawn(async move {
            loop {
                let report = reports.borrow_and_update().clone();
                tracing::debug!(
                    devices = report.devices.len(),
                    unhealthy = report.unhealthy(),
                    "sending device health"
                );
                if tx.send(Ok(response(&report))).await.is_err() {
                    return; // the kubelet hung up
                }
                tokio::select! {
                    changed = reports.changed() => if changed.is_err() {
                        return; // the driver is stopping
                    },
                    _ = tokio::time::sleep(resend) => {}
                    _ = tx.closed() => return,
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::{HealthBook, Problem};
    use std::collections::BTreeMap;
    use std::time::SystemTime;
    use tokio_stream::StreamExt;

    #[test]
    fn a_report_becomes_one_entry_per_device_with_status_time_and_reason() {
        let book = HealthBook::new("node-a");
        let at = UNIX_EPOCH + Duration::from_secs(1000);
        book.update(
            BTreeMap::from([
                ("pci-0000-3b-00-2".into(), None),
                (
                    "pci-0000-3b-02-1".into(),
                    Some(Problem::PfLinkDown {
                        pf: "ens1f1np1".into(),
                        operstate: "down".into(),
                    }),
                ),
            ]),
            at,
        );
        let wire = response(&book.current());
        assert_eq!(wire.devices.len(), 2);
        let bad = &wire.devices[1];
        let id = bad.device.clone().unwrap();
        assert_eq!(
            (id.pool_name.as_str(), id.device_name.as_str()),
            ("node-a", "pci-0000-3b-02-1")
        );
        assert_eq!(bad.health, HealthStatus::Unhealthy as i32);
        assert_eq!(bad.message, "PF ens1f1np1 link is down");
        assert_eq!(bad.last_updated_time, 1000);
        assert_eq!(bad.health_check_timeout_seconds, 150);
        assert_eq!(wire.devices[0].health, HealthStatus::Healthy as i32);
        assert!(wire.devices[0].message.is_empty());
    }

    #[tokio::test]
    async fn a_subscriber_gets_the_health_at_once_on_change_and_on_resend() {
        let book = HealthBook::new("node-a");
        book.update(
            BTreeMap::from([("pci-0000-3b-02-1".into(), None)]),
            SystemTime::now(),
        );
        let mut service = HealthService::new(book.subscribe());
        service.resend = Duration::from_millis(200);
        let mut stream = service
            .node_watch_resources(Request::new(NodeWatchResourcesRequest {}))
            .await
            .unwrap()
            .into_inner();
        let first = stream.next().await.unwrap().unwrap();
        assert_eq!(first.devices[0].health, HealthStatus::Healthy as i32);

        book.update(
            BTreeMap::from([(
                "pci-0000-3b-02-1".into(),
                Some(Problem::SriovLost { pf: None }),
            )]),
            SystemTime::now(),
        );
        let changed = tokio::time::timeout(Duration::from_millis(150), stream.next())
            .await
            .expect("a change is sent before the resend period")
            .unwrap()
            .unwrap();
        assert_eq!(changed.devices[0].health, HealthStatus::Unhealthy as i32);
        let again = tokio::time::timeout(Duration::from_secs(2), stream.next())
            .await
            .expect("resent after the period")
            .unwrap()
            .unwrap();
        assert_eq!(again, changed);
    }
}
