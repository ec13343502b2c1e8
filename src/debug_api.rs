//! The read-only HTTP debug API: what the driver knows, as JSON.
//!
//! While the driver runs it holds the state store exclusively, so this is
//! how an operator reads it (`sriov-dra ipam` points here). It serves GETs
//! only: nothing here changes a device, a claim or an address. It shows
//! every claim, address and device of the node without authentication, so
//! it listens on loopback unless the node config sets `debugAllowRemote`;
//! and since a scan or a store read can be slow, each request has a
//! deadline and only a few run at once, so that the API cannot starve the
//! blocking pool that prepare and attach use.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use ipam::Ipam;
use serde::Serialize;
use tokio::sync::Semaphore;

use crate::blocking::blocking;
use crate::inventory::NodeInventory;
use crate::readiness::Readiness;
use crate::state::{attachments, claims};

/// What the handlers read from.
#[derive(Clone)]
pub struct DebugState {
    /// The state store (claims, attachments, addresses).
    pub store: Arc<Ipam>,
    /// sysfs root for `/inventory`.
    pub sysfs_root: PathBuf,
    /// What `/readyz` reports.
    pub readiness: Readiness,
}

/// How long a request may take and how many run at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// A request still running after this is answered 503 (its work runs
    /// on, holding its slot, until done).
    pub request_timeout: Duration,
    /// Requests beyond this many at once are answered 503 at once, rather
    /// than queued: an operator retries, a flood does not pile up.
    pub max_in_flight: usize,
}

impl Default for Limits {
    /// 10 s (a full sysfs scan of a 2048-VF node takes well under one) and
    /// 4 requests at once.
    fn default() -> Self {
        Limits {
            request_timeout: Duration::from_secs(10),
            max_in_flight: 4,
        }
    }
}

/// The routes: `/healthz`, `/readyz`, `/inventory`, `/claims`,
/// `/attachments`, `/ipam`, `/unreadable`, `/metrics`. `/claims` shows per device the
/// DeviceClass and the `VfPolicy` entries the claim's own values were
/// checked against.
pub fn router(state: DebugState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/inventory", get(inventory))
        .route("/claims", get(claims_handler))
        .route("/attachments", get(attachments_handler))
        .route("/ipam", get(ipam_handler))
        .route("/unreadable", get(unreadable_handler))
        .route("/metrics", get(metrics_handler))
        .with_state(state)
}

/// `router` with a deadline per request and a cap on requests in flight,
/// shared by all its routes.
pub fn with_limits(router: Router, limits: Limits) -> Router {
    let slots = Arc::new(Semaphore::new(limits.max_in_flight));
    router.layer(axum::middleware::from_fn(
        move |req: Request, next: Next| {
            let slots = slots.clone();
            async move {
                let Ok(slot) = slots.try_acquire_owned() else {
                    return (
                    StatusCode::SERVICE_UNAVAILABLE,
                    [(header::RETRY_AFTER, "1")],
                    format!(
                        "debug API: {} requests are running, the most it serves at once; retry\n",
                        limits.max_in_flight
                    ),
                )
                    .into_response();
                };
                // The work keeps its slot until it ends, also past the deadline:
                // the cap bounds the work running, not only the answers pending.
                let work = tokio::spawn(async move {
                    let response = next.run(req).await;
                    drop(slot);
                    response
                });
                match tokio::time::timeout(limits.request_timeout, work).await {
                    Ok(Ok(response)) => response,
                    Ok(Err(e)) => (
                        StatusCode::INTERNAL_SERVER_ERROR,
                        format!("debug API: the request failed: {e}\n"),
                    )
                        .into_response(),
                    Err(_) => (
                        StatusCode::SERVICE_UNAVAILABLE,
                        format!(
                            "debug API: the request took longer than {:?}\n",
                            limits.request_timeout
                        ),
                    )
                        .into_response(),
                }
            }
        },
    ))
}

/// Refuses an `address` beyond this node unless `allow_remote`.
fn check_address(address: SocketAddr, allow_remote: bool) -> anyhow::Result<()> {
    if !address.ip().is_loopback() && !allow_remote {
        anyhow::bail!(
            "debug API: {address} is not a loopback address; set debugAllowRemote: true in the node config to serve it beyond this node"
        );
    }
    Ok(())
}

/// Serves the API on `address` until `shutdown` completes, with the
/// default [`Limits`]. A non-loopback `address` is refused unless
/// `allow_remote`, and warned about when allowed. Binds before returning,
/// so a taken port is an error at start, not a silent absence.
pub async fn serve(
    address: SocketAddr,
    allow_remote: bool,
    state: DebugState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    check_address(address, allow_remote)?;
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .map_err(|e| anyhow::anyhow!("debug API: cannot listen on {address}: {e}"))?;
    if !address.ip().is_loopback() {
        tracing::warn!(
            %address,
            "debug API listening beyond this node (debugAllowRemote): it shows every claim, address and device without authentication; firewall it"
        );
    }
    tracing::info!(%address, "debug API listening");
    let app = with_limits(router(state), Limits::default());
    Ok(tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await
        {
            tracing::error!(error = %e, "debug API stopped");
        }
    }))
}

/// A JSON answer, or a 500 naming what failed.
fn json<T: Serialize>(result: Result<T, String>) -> Response {
    match result {
        Ok(value) => axum::Json(value).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
    }
}

/// 200 when every readiness part is ready, else 503; the JSON body names
/// each part and what it is waiting for either way.
async fn readyz(State(s): State<DebugState>) -> Response {
    let report = s.readiness.report();
    let status = if report.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(report)).into_response()
}

async fn inventory(State(s): State<DebugState>) -> Response {
    json(
        blocking(move || {
            let full = NodeInventory::discover(&s.sysfs_root).and_then(|mut inventory| {
                inventory.read_rdma_details()?;
                Ok(inventory)
            });
            full.map_err(|e| format!("{e:#}"))
        })
        .await,
    )
}

async fn claims_handler(State(s): State<DebugState>) -> Response {
    json(blocking(move || claims::list(s.store.database()).map_err(|e| e.to_string())).await)
}

async fn attachments_handler(State(s): State<DebugState>) -> Response {
    json(blocking(move || attachments::list(s.store.database()).map_err(|e| e.to_string())).await)
}

/// The Prometheus text exposition ([`crate::metrics`]).
async fn metrics_handler(State(s): State<DebugState>) -> Response {
    let rendered = blocking(move || {
        crate::metrics::metrics()
            .render(&s.store)
            .map_err(|e| format!("encoding the metrics: {e}"))
    })
    .await;
    match rendered {
        Ok(text) => (
            [(
                axum::http::header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
    }
}

/// Records of the state store that do not decode (claims and pod
/// attachments): the driver passes over them, an operator must not.
async fn unreadable_handler(State(s): State<DebugState>) -> Response {
    json(
        blocking(move || {
            let err = |e: crate::state::StateError| e.to_string();
            let mut bad = claims::list_all(s.store.database())
                .map_err(err)?
                .unreadable;
            bad.extend(
                attachments::list_all(s.store.database())
                    .map_err(err)?
                    .unreadable,
            );
            Ok(bad)
        })
        .await,
    )
}

/// Pool usage, every allocation and the orphans, as `sriov-dra ipam list`
/// shows them when the driver is stopped.
#[derive(Serialize)]
struct IpamView {
    pools: Vec<ipam::PoolStatus>,
    /// Blocks of cluster pools this node leases, with their lease objects.
    blocks: Vec<ipam::BlockUsage>,
    /// Single-address leases of cluster pools: this node's static
    /// addresses outside its blocks, and other nodes' inside them.
    #[serde(rename = "singleLeases")]
    single_leases: Vec<ipam::StaticLease>,
    allocations: Vec<ipam::Allocation>,
    orphans: Vec<ipam::Allocation>,
}

async fn ipam_handler(State(s): State<DebugState>) -> Response {
    json(
        blocking(move || {
            let err = |e: ipam::IpamError| e.to_string();
            Ok(IpamView {
                pools: s.store.status().map_err(err)?,
                blocks: s.store.blocks().map_err(err)?,
                single_leases: s.store.static_leases().map_err(err)?,
                allocations: s.store.list().map_err(err)?,
                orphans: s.store.orphans().map_err(err)?,
            })
        })
        .await,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use ipam::{Owner, PoolConfig, PoolScope, SubnetConfig};
    use sriov::fixture::Fixture;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// One HTTP/1.1 request over a plain socket: status code and body.
    async fn request(address: SocketAddr, method: &str, path: &str) -> (u16, String) {
        let mut s = tokio::net::TcpStream::connect(address).await.unwrap();
        s.write_all(
            format!("{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
        let mut text = String::new();
        s.read_to_string(&mut text).await.unwrap();
        let status = text[9..12].parse().unwrap();
        let body = text
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default();
        (status, body)
    }

    /// A chunked body's JSON (axum streams JSON without a length).
    fn json_of(body: &str) -> serde_json::Value {
        let start = body.find(['{', '[']).unwrap();
        let end = body.rfind(['}', ']']).unwrap();
        serde_json::from_str(&body[start..=end]).unwrap()
    }

    #[tokio::test]
    async fn serves_the_state_read_only_on_loopback() {
        let sys = tempfile::tempdir_in(sriov::fixture::scratch_base()).unwrap();
        Fixture::E810.build(sys.path()).unwrap();
        let state_dir = tempfile::tempdir().unwrap();
        let pool = PoolConfig {
            name: "fronthaul".into(),
            scope: Some(PoolScope::Node),
            block_size: None,
            subnets: vec![SubnetConfig {
                subnet: "10.1.0.0/24".parse().unwrap(),
                range_start: None,
                range_end: None,
                gateway: None,
            }],
            exclude: vec![],
            routes: vec![],
        };
        let store = Arc::new(Ipam::open(state_dir.path(), &[pool]).unwrap());
        claims::init(store.database()).unwrap();
        store
            .allocate(
                &Owner::new("claim-1", "nic", "pci-0000-af-01-0").unwrap(),
                "fronthaul",
            )
            .unwrap();
        claims::put_raw(store.database(), "uid-damaged", b"{not json").unwrap();
        let state_store = store.clone();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let state = DebugState {
            store,
            sysfs_root: sys.path().to_path_buf(),
            readiness: Readiness::new(),
        };
        // Bind an ephemeral loopback port, as the driver binds its own.
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = probe.local_addr().unwrap();
        drop(probe);
        let task = serve(address, false, state, async {
            let _ = stopped.await;
        })
        .await
        .unwrap();

        assert_eq!(
            request(address, "GET", "/healthz").await,
            (200, "ok\n".into())
        );
        let (code, body) = request(address, "GET", "/ipam").await;
        assert_eq!(code, 200);
        let ipam = json_of(&body);
        assert_eq!(
            ipam["allocations"][0]["addresses"][0]["address"],
            "10.1.0.1/24"
        );
        assert_eq!(ipam["pools"][0]["name"], "fronthaul");
        assert_eq!(
            ipam["blocks"],
            serde_json::json!([]),
            "a node pool leases no blocks"
        );
        assert_eq!(ipam["singleLeases"], serde_json::json!([]));
        let (code, body) = request(address, "GET", "/inventory").await;
        assert_eq!(code, 200);
        assert_eq!(json_of(&body)["devices"].as_array().unwrap().len(), 5);
        let (code, body) = request(address, "GET", "/claims").await;
        assert_eq!((code, json_of(&body)), (200, serde_json::json!([])));
        claims::put(state_store.database(), &claim_with_policy()).unwrap();
        let (code, body) = request(address, "GET", "/claims").await;
        assert_eq!(code, 200);
        assert_eq!(
            json_of(&body)[0]["devices"][0]["policy"],
            serde_json::json!({"deviceClass": "sriov-fronthaul", "vfPolicies": [{
                "apiVersion": "sriov.dra.dev/v1alpha1", "kind": "VfPolicy",
                "allowedVlans": ["100-199"], "allowedPools": ["fronthaul"]}]}),
            "which policy bounded the claim"
        );
        let (code, _) = request(address, "GET", "/attachments").await;
        assert_eq!(code, 200);
        // The damaged record does not hide the others; it is listed apart.
        let (code, body) = request(address, "GET", "/unreadable").await;
        assert_eq!(code, 200);
        let bad = json_of(&body);
        assert_eq!(bad[0]["table"], "prepared_claims");
        assert_eq!(bad[0]["key"], "uid-damaged");
        // Metrics, as Prometheus scrapes them.
        let (code, body) = request(address, "GET", "/metrics").await;
        assert_eq!(code, 200);
        let samples = crate::testing::exposition::parse(&body);
        let value = |series: &str| {
            *samples
                .get(series)
                .unwrap_or_else(|| panic!("{series} missing from {body}"))
        };
        assert_eq!(
            value(r#"sriov_dra_unreadable_records{table="prepared_claims"}"#),
            1.0
        );
        assert_eq!(
            value(r#"sriov_dra_ipam_addresses{pool="fronthaul",family="ipv4",kind="used"}"#),
            1.0
        );
        assert_eq!(
            value(r#"sriov_dra_ipam_addresses{pool="fronthaul",family="ipv4",kind="size"}"#),
            value(r#"sriov_dra_ipam_addresses{pool="fronthaul",family="ipv4",kind="free"}"#) + 1.0
        );
        // The one claim record the test wrote holds one device.
        assert_eq!(value(r#"sriov_dra_devices{state="prepared"}"#), 1.0);
        assert!(samples.contains_key("sriov_dra_store_commit_seconds_count"));
        // Read-only: nothing answers a write.
        let (code, _) = request(address, "POST", "/claims").await;
        assert_eq!(code, 405);
        let (code, _) = request(address, "GET", "/nothing").await;
        assert_eq!(code, 404);

        let _ = stop.send(());
        task.await.unwrap();
    }

    /// A server on an ephemeral loopback port with an empty store.
    async fn serve_with(
        readiness: Readiness,
    ) -> (
        SocketAddr,
        tempfile::TempDir,
        tokio::sync::oneshot::Sender<()>,
        tokio::task::JoinHandle<()>,
    ) {
        let state_dir = tempfile::tempdir().unwrap();
        let state = DebugState {
            store: Arc::new(Ipam::open(state_dir.path(), &[]).unwrap()),
            sysfs_root: "/sys".into(),
            readiness,
        };
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = probe.local_addr().unwrap();
        drop(probe);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = serve(address, false, state, async {
            let _ = stopped.await;
        })
        .await
        .unwrap();
        (address, state_dir, stop, task)
    }

    /// The names of the checks `/readyz` reports as not ready.
    fn not_ready(body: &str) -> Vec<String> {
        json_of(body)["checks"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["ready"] == false)
            .map(|c| c["name"].as_str().unwrap().to_string())
            .collect()
    }

    #[tokio::test]
    async fn readyz_is_503_naming_each_missing_part_until_all_are_there() {
        use crate::readiness::KubeletPart;
        let readiness = Readiness::new();
        let (address, _dir, stop, task) = serve_with(readiness.clone()).await;

        let (code, body) = request(address, "GET", "/readyz").await;
        assert_eq!(code, 503, "{body}");
        assert_eq!(
            not_ready(&body),
            ["store", "kubeletRegistration", "nri", "slices"]
        );
        assert_eq!(json_of(&body)["ready"], false);
        // Liveness does not depend on readiness.
        assert_eq!(request(address, "GET", "/healthz").await.0, 200);

        readiness.set_store_open(true);
        readiness.set_kubelet(KubeletPart::Rejected("version 9 unsupported".into()));
        let (code, body) = request(address, "GET", "/readyz").await;
        assert_eq!(code, 503);
        assert_eq!(not_ready(&body), ["kubeletRegistration", "nri", "slices"]);
        assert!(body.contains("version 9 unsupported"), "{body}");

        readiness.set_kubelet(KubeletPart::Registered);
        readiness.set_nri_connected(true);
        let (code, body) = request(address, "GET", "/readyz").await;
        assert_eq!((code, not_ready(&body)), (503, vec!["slices".to_string()]));

        readiness.set_slices_published();
        let (code, body) = request(address, "GET", "/readyz").await;
        assert_eq!(code, 200, "{body}");
        assert_eq!(json_of(&body)["ready"], true);

        // The runtime restarts: not ready until NRI is back.
        readiness.set_nri_connected(false);
        let (code, body) = request(address, "GET", "/readyz").await;
        assert_eq!((code, not_ready(&body)), (503, vec!["nri".to_string()]));

        let _ = stop.send(());
        task.await.unwrap();
    }

    #[tokio::test]
    async fn a_taken_port_is_an_error_naming_the_address() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = taken.local_addr().unwrap();
        let state_dir = tempfile::tempdir().unwrap();
        let state = DebugState {
            store: Arc::new(Ipam::open(state_dir.path(), &[]).unwrap()),
            sysfs_root: "/sys".into(),
            readiness: Readiness::new(),
        };
        let err = serve(address, false, state, std::future::pending())
            .await
            .unwrap_err();
        assert!(err.to_string().contains(&address.to_string()), "{err}");
    }

    /// A prepared claim whose device was checked against a class policy.
    fn claim_with_policy() -> claims::ClaimRecord {
        use crate::apis::{AppliedPolicy, Mode, ValidConfig, VfPolicy};
        let policy: VfPolicy = serde_json::from_value(serde_json::json!({
            "apiVersion": "sriov.dra.dev/v1alpha1", "kind": "VfPolicy",
            "allowedVlans": ["100-199"], "allowedPools": ["fronthaul"]
        }))
        .unwrap();
        let pci: sriov::PciAddress = "0000:af:01.0".parse().unwrap();
        claims::ClaimRecord {
            schema: claims::CLAIM_SCHEMA_VERSION,
            uid: "claim-1".into(),
            namespace: "ran".into(),
            name: "du-0".into(),
            phase: claims::Phase::Prepared,
            devices: vec![claims::PreparedDevice {
                request: "fh0".into(),
                pool: "worker-1".into(),
                device: pci.device_name(),
                pci_address: pci,
                config: ValidConfig {
                    mode: Mode::Netdevice,
                    if_name: None,
                    mtu: None,
                    settings: Default::default(),
                    addresses: None,
                    routes: vec![],
                    rdma_exclusive: false,
                },
                if_name: None,
                vf_settings: None,
                rdma_device: None,
                bind: None,
                addresses: None,
                cdi_device_id: None,
                policy: Some(AppliedPolicy {
                    device_class: Some("sriov-fronthaul".into()),
                    vf_policies: vec![policy],
                }),
            }],
            cdi_spec: None,
            boot_id: "boot-1".into(),
            reserved_for: vec![],
        }
    }

    /// A free port on every address.
    fn free_port() -> u16 {
        std::net::TcpListener::bind("0.0.0.0:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }

    #[tokio::test]
    async fn a_remote_address_is_refused_unless_allowed() {
        let state_dir = tempfile::tempdir().unwrap();
        let state = DebugState {
            store: Arc::new(Ipam::open(state_dir.path(), &[]).unwrap()),
            sysfs_root: "/sys".into(),
            readiness: Readiness::new(),
        };
        let port = free_port();
        let everywhere = SocketAddr::from(([0, 0, 0, 0], port));
        let err = serve(everywhere, false, state.clone(), std::future::pending())
            .await
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "debug API: 0.0.0.0:{port} is not a loopback address; set debugAllowRemote: true in the node config to serve it beyond this node"
            )
        );
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = serve(everywhere, true, state, async {
            let _ = stopped.await;
        })
        .await
        .expect("allowed when asked for");
        let local = SocketAddr::from(([127, 0, 0, 1], port));
        assert_eq!(
            request(local, "GET", "/healthz").await,
            (200, "ok\n".into())
        );
        let _ = stop.send(());
        task.await.unwrap();
    }

    /// Serves `app` on a loopback port until the returned sender is dropped.
    async fn serve_test(app: Router) -> (SocketAddr, tokio::sync::oneshot::Sender<()>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await;
        });
        (address, stop)
    }

    #[tokio::test]
    async fn a_slow_request_is_answered_503_at_its_deadline() {
        let app = Router::new().route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(30)).await;
                "late\n"
            }),
        );
        let limits = Limits {
            request_timeout: Duration::from_millis(100),
            max_in_flight: 4,
        };
        let (address, _stop) = serve_test(with_limits(app, limits)).await;
        let started = std::time::Instant::now();
        let (code, body) = request(address, "GET", "/slow").await;
        assert_eq!(code, 503);
        assert!(
            body.contains("the request took longer than 100ms"),
            "{body}"
        );
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[tokio::test]
    async fn requests_beyond_the_limit_are_refused_until_a_slot_frees() {
        let gate = Arc::new(tokio::sync::Notify::new());
        let entered = Arc::new(tokio::sync::Notify::new());
        let app = {
            let (gate, entered) = (gate.clone(), entered.clone());
            Router::new()
                .route(
                    "/wait",
                    get(move || {
                        let (gate, entered) = (gate.clone(), entered.clone());
                        async move {
                            entered.notify_one();
                            gate.notified().await;
                            "done\n"
                        }
                    }),
                )
                .route("/now", get(|| async { "now\n" }))
        };
        let limits = Limits {
            request_timeout: Duration::from_secs(10),
            max_in_flight: 1,
        };
        let (address, _stop) = serve_test(with_limits(app, limits)).await;
        let first = tokio::spawn(async move { request(address, "GET", "/wait").await });
        entered.notified().await;
        let (code, body) = request(address, "GET", "/now").await;
        assert_eq!(code, 503, "{body}");
        assert!(
            body.contains("1 requests are running, the most it serves at once"),
            "{body}"
        );
        gate.notify_one();
        assert_eq!(first.await.unwrap(), (200, "done\n".into()));
        assert_eq!(request(address, "GET", "/now").await, (200, "now\n".into()));
    }
}
