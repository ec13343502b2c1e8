//! Running blocking work (redb commits that fsync, sysfs scans, netlink)
//! off the tokio workers: a worker stuck in an fsync stalls every
//! connection it serves, the NRI one included.

/// A blocking task that panicked or was cancelled before it answered.
#[derive(Debug, thiserror::Error)]
#[error("blocking task failed: {0}")]
pub struct TaskFailed(#[from] tokio::task::JoinError);

impl From<TaskFailed> for String {
    fn from(e: TaskFailed) -> String {
        e.to_string()
    }
}

/// Runs `f` on tokio's blocking pool; a panicked or cancelled task is an
/// error like any other.
pub async fn blocking<T, E>(f: impl FnOnce() -> Result<T, E> + Send + 'static) -> Result<T, E>
where
    T: Send + 'static,
    E: From<TaskFailed> + Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| E::from(TaskFailed(e)))?
}
