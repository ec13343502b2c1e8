//! The Kubernetes client the driver talks to the API with.

use anyhow::Context;
use http::HeaderValue;
use http::header::USER_AGENT;

/// Sent on every API request, so the API server's audit log and its
/// per-client metrics name this driver and its version.
pub const AGENT: &str = concat!("sriov-dra/", env!("CARGO_PKG_VERSION"));

/// A client from the in-cluster config or KUBECONFIG, sending [`AGENT`].
pub async fn client() -> anyhow::Result<kube::Client> {
    let config = kube::Config::infer()
        .await
        .context("cannot build a Kubernetes client (in-cluster config or KUBECONFIG)")?;
    from_config(config)
}

/// A client from `config`, sending [`AGENT`].
pub fn from_config(mut config: kube::Config) -> anyhow::Result<kube::Client> {
    config
        .headers
        .push((USER_AGENT, HeaderValue::from_static(AGENT)));
    kube::Client::try_from(config).context("cannot build a Kubernetes client")
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn every_request_says_it_comes_from_sriov_dra() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let server = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut buf = vec![0u8; 8192];
            let n = socket.read(&mut buf).await.unwrap();
            let body = r#"{"kind":"Status","apiVersion":"v1","status":"Failure","code":404,"reason":"NotFound"}"#;
            let _ = socket
                .write_all(
                    format!(
                        "HTTP/1.1 404 Not Found\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    )
                    .as_bytes(),
                )
                .await;
            String::from_utf8_lossy(&buf[..n]).to_lowercase()
        });
        let client = from_config(kube::Config::new(url.parse().unwrap())).unwrap();
        let nodes: kube::Api<k8s_openapi::api::core::v1::Node> = kube::Api::all(client);
        let _ = nodes.get("worker-1").await;
        let request = server.await.unwrap();
        assert!(
            request.contains(&format!("user-agent: {AGENT}")),
            "{request}"
        );
    }
}
