//! Running blocking work (redb commits that fsync, sysfs scans, netlink)
//! off the tokio workers: a worker stuck in an fsync stalls every
//! connection it serves, the NRI one included.

/// Runs `f` on tokio's blocking pool; a panicked or cancelled task is an
/// error like any other.
pub async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, String> + Send + 'static,
) -> Result<T, String> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| format!("blocking task failed: {e}"))?
}
