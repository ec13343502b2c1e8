//! What the demo prints for the user to check: `ip` as the pod sees it,
//! the simulated PF's VF table, JSON from the claim and the debug API.

use std::time::Duration;

use anyhow::{Context, bail};
use sriov::vf_config::VfState;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Runs `ip ARGS` and returns its output, or says why there is none
/// (`ip` missing or failing is shown, not fatal: it is only a view).
pub fn ip(args: &[&str]) -> String {
    match std::process::Command::new("ip").args(args).output() {
        Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout).into_owned(),
        Ok(out) => format!(
            "(ip {} failed: {})\n",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ),
        Err(e) => format!("(cannot run ip from iproute2: {e})\n"),
    }
}

/// A VF's PF-side settings in `ip link show <pf>`'s words.
pub fn vf_line(state: &VfState) -> String {
    let link_state = match state.link_state {
        Some(ls) => format!("{ls:?}").to_lowercase(),
        None => "unknown".into(),
    };
    format!(
        "vf {} link/ether {} vlan {} qos {} proto {}, spoof checking {}, link-state {}, trust {}, max_tx_rate {}Mbps",
        state.index,
        state.mac,
        state.vlan.id,
        state.vlan.qos,
        state.vlan.proto,
        on_off(state.spoof_chk),
        link_state,
        on_off(state.trust),
        state.max_tx_rate_mbps,
    )
}

fn on_off(on: bool) -> &'static str {
    if on { "on" } else { "off" }
}

/// Indents every line of `text` by `n` spaces.
pub fn indent(text: &str, n: usize) -> String {
    let pad = " ".repeat(n);
    text.lines()
        .map(|l| format!("{pad}{l}\n"))
        .collect::<String>()
}

/// Pretty JSON.
pub fn pretty(value: &serde_json::Value) -> String {
    serde_json::to_string_pretty(value).unwrap_or_else(|e| format!("(unprintable: {e})"))
}

/// One line per pool of the debug API's `/ipam`: addresses in use per
/// family, then the allocations (the whole JSON is at the URL).
pub fn ipam_summary(ipam: &serde_json::Value) -> String {
    let mut out = String::new();
    for pool in ipam["pools"].as_array().into_iter().flatten() {
        let usage: Vec<String> = pool["usage"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|u| {
                let size = u["size"].as_u64().unwrap_or(0);
                let used = size.saturating_sub(u["free"].as_u64().unwrap_or(0));
                format!("{} {used} in use", u["family"].as_str().unwrap_or("?"))
            })
            .collect();
        out.push_str(&format!(
            "pool {}: {}\n",
            pool["name"].as_str().unwrap_or("?"),
            usage.join(", ")
        ));
    }
    out.push_str(&format!("allocations: {}\n", ipam["allocations"]));
    out
}

/// GET `path` of the debug API at `base` (`http://127.0.0.1:PORT`), as
/// JSON. A plain HTTP/1.1 request with `Connection: close`: the debug API
/// answers every GET with a complete body.
pub async fn debug_get(base: &str, path: &str) -> anyhow::Result<serde_json::Value> {
    let Some(authority) = base.strip_prefix("http://") else {
        bail!("debug API URL {base} is not http://");
    };
    let fetch = async {
        let mut stream = tokio::net::TcpStream::connect(authority)
            .await
            .with_context(|| format!("cannot connect to the debug API at {base}"))?;
        let request =
            format!("GET {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await?;
        anyhow::Ok(response)
    };
    let response = tokio::time::timeout(Duration::from_secs(10), fetch)
        .await
        .with_context(|| format!("debug API {path}: no answer within 10 s"))??;
    parse_response(&response).with_context(|| format!("debug API {base}{path}"))
}

/// The JSON body of a `200` HTTP/1.1 response with a `Content-Length` body.
fn parse_response(response: &[u8]) -> anyhow::Result<serde_json::Value> {
    let text = String::from_utf8_lossy(response);
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        bail!("the response has no header/body separator");
    };
    let status = head.lines().next().unwrap_or_default();
    if !status.starts_with("HTTP/1.1 200") {
        bail!("answered {status:?}: {}", body.trim());
    }
    serde_json::from_str(body).context("the body is not JSON")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_vf_line_reads_like_ip_link() {
        let mut state = VfState::unconfigured(0);
        state.vlan.id = 100;
        let line = vf_line(&state);
        assert!(
            line.starts_with("vf 0 link/ether 00:00:00:00:00:00 vlan 100 qos 0"),
            "{line}"
        );
    }

    #[test]
    fn the_ipam_summary_counts_what_is_in_use() {
        let ipam = serde_json::json!({"allocations": [], "pools": [{"name": "fronthaul",
            "usage": [{"family": "IPv4", "size": 254, "free": 253}]}]});
        assert_eq!(
            ipam_summary(&ipam),
            "pool fronthaul: IPv4 1 in use\nallocations: []\n"
        );
    }

    #[test]
    fn responses_are_parsed_or_named() {
        let ok = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 7\r\n\r\n{\"a\":1}";
        assert_eq!(parse_response(ok).unwrap(), serde_json::json!({"a": 1}));
        let busy = b"HTTP/1.1 503 Service Unavailable\r\n\r\nretry\n";
        let err = parse_response(busy).unwrap_err().to_string();
        assert!(err.contains("503") && err.contains("retry"), "{err}");
        assert!(parse_response(b"garbage").is_err());
    }
}
