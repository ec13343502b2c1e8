//! The [`FakeApi`] served over real HTTP on 127.0.0.1, with a kubeconfig
//! that points at it: for tests that run the `sriov-dra` binary itself,
//! which finds its API server the way it does on a node (`KUBECONFIG`).

use std::net::SocketAddr;
use std::path::Path;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};

use super::fake_api::{ApiCall, FakeApi};

/// The largest request body the fake reads (a slice of 128 devices is
/// far below it).
const BODY_LIMIT: usize = 16 << 20;

/// A running HTTP server answering from a [`FakeApi`]; stops when dropped.
pub struct FakeApiServer {
    address: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl FakeApiServer {
    /// Serves `api` on a free port of 127.0.0.1. Must be called inside a
    /// tokio runtime; the server lives on it.
    pub async fn start(api: FakeApi) -> std::io::Result<FakeApiServer> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?;
        let app = axum::Router::new().fallback(handle).with_state(api);
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(FakeApiServer { address, task })
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    /// Writes a kubeconfig for this server (no credentials: the fake
    /// checks none) to `path`, for `KUBECONFIG`.
    pub fn write_kubeconfig(&self, path: &Path) -> std::io::Result<()> {
        std::fs::write(path, kubeconfig(&self.url()))
    }
}

impl Drop for FakeApiServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A kubeconfig with one cluster at `server`, one user without
/// credentials, and the context joining them as the current one.
pub fn kubeconfig(server: &str) -> String {
    format!(
        "apiVersion: v1
kind: Config
clusters:
- name: fake
  cluster:
    server: {server}
users:
- name: fake
  user: {{}}
contexts:
- name: fake
  context:
    cluster: fake
    user: fake
current-context: fake
"
    )
}

async fn handle(State(api): State<FakeApi>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let call = ApiCall::from_parts(&parts);
    let bytes = match axum::body::to_bytes(body, BODY_LIMIT).await {
        Ok(b) => b,
        Err(e) => {
            return (
                http::StatusCode::BAD_REQUEST,
                format!("reading the body: {e}\n"),
            )
                .into_response();
        }
    };
    let (status, body) = api.respond(call, &bytes).await;
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Node;

    #[tokio::test]
    async fn a_client_from_the_kubeconfig_reaches_the_fake_over_http() {
        let api = FakeApi::new();
        api.put_node("node-a", "uid-a");
        let server = FakeApiServer::start(api.clone()).await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kubeconfig");
        server.write_kubeconfig(&path).unwrap();

        let kubeconfig = kube::config::Kubeconfig::read_from(&path).unwrap();
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
            .await
            .unwrap();
        let client = crate::kube::client::from_config(config).unwrap();
        let nodes: kube::Api<Node> = kube::Api::all(client);
        let node = nodes.get("node-a").await.unwrap();
        assert_eq!(node.metadata.uid.as_deref(), Some("uid-a"));
        let missing = nodes.get("node-b").await.unwrap_err();
        assert!(
            matches!(&missing, kube::Error::Api(s) if s.code == 404),
            "{missing:?}"
        );
        let calls = api.calls();
        assert_eq!(calls.len(), 2, "{calls:?}");
        assert_eq!(calls[0].path, "/api/v1/nodes/node-a");
    }
}
