//! Watching this node's own ResourceSlices, so a slice deleted or changed
//! from outside (an operator, a controller, the kubelet wiping a driver it
//! thinks is gone) is re-applied within the debounce time instead of at the
//! next period. Every event is a [`Nudge::Slice`]: the publish round that
//! follows lists the slices and writes only if they differ from what was
//! applied, so our own applies coming back as events write nothing.

use std::future::Future;
use std::time::Duration;

use k8s_openapi::api::resource::v1::ResourceSlice;
use kube::api::{Api, WatchEvent, WatchParams};
use tokio_stream::StreamExt;
use tracing::{debug, info, warn};

use crate::events::{Nudge, NudgeSender, nudge};

/// How long one watch request may run before the API server ends it (the
/// server's own limit is about 5 minutes; the loop starts a new one).
const WATCH_TIMEOUT_SECONDS: u32 = 290;
/// Pause after a failed watch before the next.
const RETRY: Duration = Duration::from_secs(1);

/// Watches the slices `selector` (a field selector on `spec.nodeName` and
/// `spec.driver`) picks and nudges `tx` on every change, until `stopped`
/// completes or the nudge channel is closed.
pub async fn watch_slices(
    client: kube::Client,
    selector: String,
    tx: NudgeSender,
    stopped: impl Future<Output = ()>,
) {
    tokio::pin!(stopped);
    let api: Api<ResourceSlice> = Api::all(client);
    let params = WatchParams::default()
        .fields(&selector)
        .timeout(WATCH_TIMEOUT_SECONDS);
    // "0": start with the slices as they are (each an ADDED event), then
    // follow; afterwards resume from the last version seen.
    let mut version = "0".to_string();
    info!(%selector, "watching our ResourceSlices");
    loop {
        if tx.is_closed() {
            return;
        }
        let stream = tokio::select! {
            _ = &mut stopped => return,
            started = api.watch(&params, &version) => started,
        };
        let stream = match stream {
            Ok(stream) => stream,
            Err(e) => {
                warn!(error = %e, "cannot watch our ResourceSlices; retrying");
                tokio::select! {
                    _ = &mut stopped => return,
                    _ = tokio::time::sleep(RETRY) => continue,
                }
            }
        };
        tokio::pin!(stream);
        loop {
            let event = tokio::select! {
                _ = &mut stopped => return,
                event = stream.next() => event,
            };
            match event {
                None => break, // the server ended the watch: start the next
                Some(Ok(WatchEvent::Added(s) | WatchEvent::Modified(s))) => {
                    remember(&mut version, &s);
                    slice_nudge(&tx, &s, "changed");
                }
                Some(Ok(WatchEvent::Deleted(s))) => {
                    remember(&mut version, &s);
                    slice_nudge(&tx, &s, "deleted");
                }
                Some(Ok(WatchEvent::Bookmark(b))) => version = b.metadata.resource_version,
                Some(Ok(WatchEvent::Error(e))) => {
                    // 410 Gone: our version is too old; start from now.
                    if e.code == 410 {
                        version = "0".to_string();
                    }
                    warn!(code = e.code, message = %e.message, "ResourceSlice watch error; restarting");
                    break;
                }
                Some(Err(e)) => {
                    warn!(error = %e, "ResourceSlice watch failed; restarting");
                    tokio::select! {
                        _ = &mut stopped => return,
                        _ = tokio::time::sleep(RETRY) => break,
                    }
                }
            }
        }
    }
}

fn remember(version: &mut String, slice: &ResourceSlice) {
    if let Some(v) = slice
        .metadata
        .resource_version
        .as_ref()
        .filter(|v| !v.is_empty())
    {
        v.clone_into(version);
    }
}

fn slice_nudge(tx: &NudgeSender, slice: &ResourceSlice, what: &str) {
    let name = slice.metadata.name.clone().unwrap_or_default();
    debug!(slice = %name, what, "ResourceSlice event");
    nudge(tx, Nudge::Slice { name });
}
