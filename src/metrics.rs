//! What operators graph and alert on, served at `/metrics` on the debug API
//! in the Prometheus text format.
//!
//! Events (prepares, attaches, NRI connections, recovery repairs, store
//! commits) are counted where they happen, in one process-wide registry;
//! state (devices by state, addresses per pool, unreadable records) is read
//! from the store when scraped, so it can never drift from the records.

use std::sync::LazyLock;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// An operation and how it ended.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Outcome {
    /// `prepare`, `unprepare`, `attach`, `detach`, `reconcile`.
    pub operation: String,
    /// `ok` or `error`.
    pub outcome: String,
}

/// An operation that failed, and what failed; one operation may count
/// several (a reconcile goes on past each pod's failure).
///
/// `kind` is one of a closed set, so alerts can name it:
/// - `claim`: the ResourceClaim is gone, re-created or not allocated;
/// - `api`: reading the ResourceClaim from the API server failed;
/// - `config`: the claim's config is invalid;
/// - `device`: the device cannot serve the request as configured;
/// - `state`: the state store could not be read or written;
/// - `ipam`: addresses could not be allocated or released;
/// - `vf_config`: the VF's settings (MAC, VLAN, rates, ...) could not be set;
/// - `vfio`: the VF could not be bound to vfio-pci;
/// - `cdi`: the CDI spec could not be written or deleted;
/// - `rdma`: the VF's RDMA char devices could not be read;
/// - `restore`: unprepare could not bring a VF home or restore its
///   settings or driver;
/// - `host_network`: a hostNetwork pod holds netdevice-mode VFs;
/// - `attach`: moving VFs into a pod failed;
/// - `detach`: moving VFs home from a pod failed;
/// - `internal`: a task of the driver panicked or was cancelled.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Failure {
    /// As in [`Outcome`].
    pub operation: String,
    /// What failed, as listed above.
    pub kind: String,
}

/// An operation, for its latency.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Operation {
    /// As in [`Outcome`].
    pub operation: String,
}

/// Devices by state.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DeviceState {
    /// `free` (offered, not held by a claim), `prepared` (held by a
    /// claim), `attached` (in a pod), `unhealthy` (offered or held, PF link
    /// down or SR-IOV lost).
    pub state: String,
}

/// One address family of one pool, and which count.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PoolCount {
    /// Pool name.
    pub pool: String,
    /// `ipv4` or `ipv6`.
    pub family: String,
    /// `size`, `used` or `free`.
    pub kind: String,
}

/// A table of the state store.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Table {
    /// `prepared_claims` or `pod_attachments`.
    pub table: String,
}

type Latency = Family<Operation, Histogram, fn() -> Histogram>;

/// The driver's metrics.
pub struct Metrics {
    registry: Registry,
    operations: Family<Outcome, Counter>,
    errors: Family<Failure, Counter>,
    latency: Latency,
    nri_connections: Counter,
    recovery_unprepared: Counter,
    recovery_released: Counter,
    store_commit: Histogram,
    devices: Family<DeviceState, Gauge>,
    addresses: Family<PoolCount, Gauge>,
    unreadable: Family<Table, Gauge>,
    /// Devices the last publish round offered; `free` is this less the
    /// prepared ones, at scrape time.
    offered: std::sync::atomic::AtomicUsize,
}

fn latency_buckets() -> Histogram {
    // 1 ms to ~16 s.
    Histogram::new(exponential_buckets(0.001, 2.0, 15))
}

impl Metrics {
    fn new() -> Metrics {
        let mut registry = Registry::with_prefix("sriov_dra");
        let operations = Family::<Outcome, Counter>::default();
        registry.register(
            "operations",
            "Claim and pod operations, by operation and outcome",
            operations.clone(),
        );
        let errors = Family::<Failure, Counter>::default();
        registry.register(
            "errors",
            "Failed claim and pod operations, by operation and what failed",
            errors.clone(),
        );
        let latency: Latency = Family::new_with_constructor(latency_buckets);
        registry.register(
            "operation_seconds",
            "Latency of claim and pod operations",
            latency.clone(),
        );
        let nri_connections = Counter::default();
        registry.register(
            "nri_connections",
            "Registrations with the runtime's NRI socket (1 + reconnects)",
            nri_connections.clone(),
        );
        let recovery_unprepared = Counter::default();
        registry.register(
            "recovery_unprepared_claims",
            "Claims recovery unprepared because the API no longer allocates them",
            recovery_unprepared.clone(),
        );
        let recovery_released = Counter::default();
        registry.register(
            "recovery_released_owners",
            "Address owners recovery released because no record holds them",
            recovery_released.clone(),
        );
        let store_commit = Histogram::new(exponential_buckets(0.0001, 2.0, 16));
        registry.register(
            "store_commit_seconds",
            "Durable commits of the state store: claim and pod records, addresses, IPAM blocks",
            store_commit.clone(),
        );
        let devices = Family::<DeviceState, Gauge>::default();
        registry.register("devices", "Devices by state", devices.clone());
        let addresses = Family::<PoolCount, Gauge>::default();
        registry.register(
            "ipam_addresses",
            "Addresses per pool and family: size, used, free",
            addresses.clone(),
        );
        let unreadable = Family::<Table, Gauge>::default();
        registry.register(
            "unreadable_records",
            "Records of the state store that do not decode (see /unreadable)",
            unreadable.clone(),
        );
        Metrics {
            registry,
            operations,
            errors,
            latency,
            nri_connections,
            recovery_unprepared,
            recovery_released,
            store_commit,
            devices,
            addresses,
            unreadable,
            offered: std::sync::atomic::AtomicUsize::new(0),
        }
    }

    /// Counts one operation and its latency: ok when `error` is `None`,
    /// else failed with that kind (see [`Failure`]).
    pub fn operation(&self, operation: &str, error: Option<&str>, took: Duration) {
        match error {
            None => self.ended(operation, "ok", took),
            Some(kind) => self.failed(operation, &[kind], took),
        }
    }

    /// Counts one failed operation, its latency and each of its failures
    /// under its kind (see [`Failure`]).
    pub fn failed(&self, operation: &str, kinds: &[&str], took: Duration) {
        self.ended(operation, "error", took);
        for kind in kinds {
            self.errors
                .get_or_create(&Failure {
                    operation: operation.into(),
                    kind: (*kind).into(),
                })
                .inc();
        }
    }

    fn ended(&self, operation: &str, outcome: &str, took: Duration) {
        self.operations
            .get_or_create(&Outcome {
                operation: operation.into(),
                outcome: outcome.into(),
            })
            .inc();
        self.latency
            .get_or_create(&Operation {
                operation: operation.into(),
            })
            .observe(took.as_secs_f64());
    }

    /// Counts a registration with the runtime.
    pub fn nri_connected(&self) {
        self.nri_connections.inc();
    }

    /// Counts what a recovery pass repaired.
    pub fn recovered(&self, unprepared: usize, released: usize) {
        self.recovery_unprepared.inc_by(unprepared as u64);
        self.recovery_released.inc_by(released as u64);
    }

    /// What the last publish round found: how many devices it offered and
    /// how many of those (or of the held ones) are unhealthy.
    pub fn inventory(&self, offered: usize, unhealthy: usize) {
        self.offered
            .store(offered, std::sync::atomic::Ordering::Relaxed);
        self.set_device_state("unhealthy", unhealthy);
    }

    /// Observes one durable commit.
    pub fn store_commit(&self, took: Duration) {
        self.store_commit.observe(took.as_secs_f64());
    }

    /// The text exposition, after reading the state gauges from `store`.
    /// A part of the store that cannot be read leaves its gauges as they
    /// were and is logged; the scrape still answers.
    pub fn render(&self, store: &ipam::Ipam) -> Result<String, std::fmt::Error> {
        self.read_state(store);
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }

    fn read_state(&self, store: &ipam::Ipam) {
        use crate::state::{attachments, claims};
        let db = store.database();
        match claims::list_all(db) {
            Ok(listing) => {
                let held: usize = listing.records.iter().map(|r| r.devices.len()).sum();
                self.set_device_state("prepared", held);
                let offered = self.offered.load(std::sync::atomic::Ordering::Relaxed);
                self.set_device_state("free", offered.saturating_sub(held));
                self.set_unreadable("prepared_claims", listing.unreadable.len());
            }
            Err(e) => tracing::warn!(error = %e, "metrics: cannot read the claim records"),
        }
        match attachments::list_all(db) {
            Ok(listing) => {
                let attached: usize = listing.records.iter().map(|p| p.attachments.len()).sum();
                self.set_device_state("attached", attached);
                self.set_unreadable("pod_attachments", listing.unreadable.len());
            }
            Err(e) => tracing::warn!(error = %e, "metrics: cannot read the pod attachments"),
        }
        match store.status() {
            Ok(pools) => {
                for pool in pools {
                    for usage in &pool.usage {
                        let family = match usage.family {
                            ipam::Family::V4 => "ipv4",
                            ipam::Family::V6 => "ipv6",
                        };
                        let used = usage.size.saturating_sub(usage.free);
                        for (kind, n) in
                            [("size", usage.size), ("used", used), ("free", usage.free)]
                        {
                            self.addresses
                                .get_or_create(&PoolCount {
                                    pool: pool.name.clone(),
                                    family: family.into(),
                                    kind: kind.into(),
                                })
                                .set(i64::try_from(n).unwrap_or(i64::MAX));
                        }
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "metrics: cannot read the pools"),
        }
    }

    fn set_device_state(&self, state: &str, n: usize) {
        self.devices
            .get_or_create(&DeviceState {
                state: state.into(),
            })
            .set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    fn set_unreadable(&self, table: &str, n: usize) {
        self.unreadable
            .get_or_create(&Table {
                table: table.into(),
            })
            .set(i64::try_from(n).unwrap_or(i64::MAX));
    }
}

#[cfg(test)]
impl Metrics {
    /// A registry of its own, for a test that counts exactly while other
    /// tests count into the process's.
    pub(crate) fn isolated() -> Metrics {
        Metrics::new()
    }

    /// How many `operation`s ended with `outcome` (`ok` or `error`).
    pub(crate) fn count(&self, operation: &str, outcome: &str) -> u64 {
        self.operations
            .get_or_create(&Outcome {
                operation: operation.into(),
                outcome: outcome.into(),
            })
            .get()
    }

    /// How many failures of `kind` the `operation`s had.
    pub(crate) fn errors_of(&self, operation: &str, kind: &str) -> u64 {
        self.errors
            .get_or_create(&Failure {
                operation: operation.into(),
                kind: kind.into(),
            })
            .get()
    }

    /// Claims recovery unprepared, and owners it released, so far.
    pub(crate) fn recovery_counts(&self) -> (u64, u64) {
        (self.recovery_unprepared.get(), self.recovery_released.get())
    }

    /// The text exposition of the counted events alone (no store read).
    fn text(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry).unwrap();
        out
    }
}

/// The process's metrics.
pub fn metrics() -> &'static Metrics {
    static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);
    &METRICS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_by_state_count_free_as_offered_less_prepared_the_attached_and_the_unhealthy() {
        let dir = tempfile::tempdir().unwrap();
        let store = ipam::Ipam::open(dir.path(), &[]).unwrap();
        crate::state::claims::init(store.database()).unwrap();
        // Two pods in, one VF each.
        for pod in ["pod-a", "pod-b"] {
            let attached = crate::testing::records::attached_pod(pod);
            crate::state::attachments::put(store.database(), &attached).unwrap();
        }
        let m = Metrics::new();
        m.inventory(16, 3);
        let text = m.render(&store).unwrap();
        for line in [
            r#"sriov_dra_devices{state="free"} 16"#,
            r#"sriov_dra_devices{state="prepared"} 0"#,
            r#"sriov_dra_devices{state="attached"} 2"#,
            r#"sriov_dra_devices{state="unhealthy"} 3"#,
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing in\n{text}");
        }
    }

    #[test]
    fn a_failed_prepare_is_counted_as_an_error_and_under_its_kind() {
        let m = Metrics::new();
        m.operation("prepare", Some("ipam"), Duration::from_millis(3));
        m.operation("prepare", None, Duration::from_millis(2));
        let text = m.text();
        for line in [
            r#"sriov_dra_operations_total{operation="prepare",outcome="error"} 1"#,
            r#"sriov_dra_operations_total{operation="prepare",outcome="ok"} 1"#,
            r#"sriov_dra_errors_total{operation="prepare",kind="ipam"} 1"#,
            r#"sriov_dra_operation_seconds_count{operation="prepare"} 2"#,
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing in\n{text}");
        }
        assert_eq!(
            text.lines()
                .filter(|l| l.starts_with("sriov_dra_errors_total{"))
                .count(),
            1,
            "the ok prepare adds no error series:\n{text}"
        );
    }

    #[test]
    fn one_failed_operation_counts_each_of_its_failures() {
        let m = Metrics::new();
        m.failed("reconcile", &["attach", "attach", "state"], Duration::ZERO);
        assert_eq!(m.count("reconcile", "error"), 1);
        assert_eq!(m.errors_of("reconcile", "attach"), 2);
        assert_eq!(m.errors_of("reconcile", "state"), 1);
    }
}
