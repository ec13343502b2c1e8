//! Per-claim locks: every change to one claim (the kubelet's Prepare and
//! Unprepare, recovery's unprepare) runs under its claim UID's lock, so a
//! retry never races the attempt it retries and recovery never releases a
//! claim the kubelet is preparing.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::OwnedMutexGuard;

/// Async locks by claim UID; entries nobody holds are pruned as the map
/// grows.
#[derive(Default)]
pub struct ClaimLocks(Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>);

impl ClaimLocks {
    /// Waits for claim `uid`'s lock. The guard is owned so it can move into
    /// blocking work and outlive a caller whose deadline passed.
    pub async fn lock(&self, uid: &str) -> OwnedMutexGuard<()> {
        let lock = {
            let mut map = self.0.lock().unwrap_or_else(PoisonError::into_inner);
            if map.len() > 1024 {
                map.retain(|_, l| Arc::strong_count(l) > 1);
            }
            map.entry(uid.to_string()).or_default().clone()
        };
        lock.lock_owned().await
    }
}
