//! The read-only HTTP debug API: what the driver knows, as JSON.
//!
//! While the driver runs it holds the state store exclusively, so this is
//! how an operator reads it (`sriov-dra ipam` points here). It listens on
//! loopback unless the node config says otherwise, and serves GETs only:
//! nothing here changes a device, a claim or an address.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use ipam::Ipam;
use serde::Serialize;

use crate::blocking::blocking;
use crate::inventory::NodeInventory;
use crate::state::{attachments, claims};

/// What the handlers read from.
#[derive(Clone)]
pub struct DebugState {
    /// The state store (claims, attachments, addresses).
    pub store: Arc<Ipam>,
    /// sysfs root for `/inventory`.
    pub sysfs_root: PathBuf,
}

/// The routes: `/healthz`, `/inventory`, `/claims`, `/attachments`,
/// `/ipam`, `/unreadable`.
pub fn router(state: DebugState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/inventory", get(inventory))
        .route("/claims", get(claims_handler))
        .route("/attachments", get(attachments_handler))
        .route("/ipam", get(ipam_handler))
        .route("/unreadable", get(unreadable_handler))
        .with_state(state)
}

/// Serves the API on `address` until `shutdown` completes. Binds before
/// returning, so a taken port is an error at start, not a silent absence.
pub async fn serve(
    address: SocketAddr,
    state: DebugState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .map_err(|e| anyhow::anyhow!("debug API: cannot listen on {address}: {e}"))?;
    tracing::info!(%address, "debug API listening");
    Ok(tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, router(state))
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

async fn inventory(State(s): State<DebugState>) -> Response {
    json(
        blocking(move || NodeInventory::discover(&s.sysfs_root).map_err(|e| format!("{e:#}")))
            .await,
    )
}

async fn claims_handler(State(s): State<DebugState>) -> Response {
    json(blocking(move || claims::list(s.store.database()).map_err(|e| e.to_string())).await)
}

async fn attachments_handler(State(s): State<DebugState>) -> Response {
    json(blocking(move || attachments::list(s.store.database()).map_err(|e| e.to_string())).await)
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
    allocations: Vec<ipam::Allocation>,
    orphans: Vec<ipam::Allocation>,
}

async fn ipam_handler(State(s): State<DebugState>) -> Response {
    json(
        blocking(move || {
            let err = |e: ipam::IpamError| e.to_string();
            Ok(IpamView {
                pools: s.store.status().map_err(err)?,
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
    use ipam::{Owner, PoolConfig, SubnetConfig};
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
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let state = DebugState {
            store,
            sysfs_root: sys.path().to_path_buf(),
        };
        // Bind an ephemeral loopback port, as the driver binds its own.
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = probe.local_addr().unwrap();
        drop(probe);
        let task = serve(address, state, async {
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
        let (code, body) = request(address, "GET", "/inventory").await;
        assert_eq!(code, 200);
        assert_eq!(json_of(&body)["devices"].as_array().unwrap().len(), 5);
        let (code, body) = request(address, "GET", "/claims").await;
        assert_eq!((code, json_of(&body)), (200, serde_json::json!([])));
        let (code, _) = request(address, "GET", "/attachments").await;
        assert_eq!(code, 200);
        // The damaged record does not hide the others; it is listed apart.
        let (code, body) = request(address, "GET", "/unreadable").await;
        assert_eq!(code, 200);
        let bad = json_of(&body);
        assert_eq!(bad[0]["table"], "prepared_claims");
        assert_eq!(bad[0]["key"], "uid-damaged");
        // Read-only: nothing answers a write.
        let (code, _) = request(address, "POST", "/claims").await;
        assert_eq!(code, 405);
        let (code, _) = request(address, "GET", "/nothing").await;
        assert_eq!(code, 404);

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
        };
        let err = serve(address, state, std::future::pending())
            .await
            .unwrap_err();
        assert!(err.to_string().contains(&address.to_string()), "{err}");
    }
}
