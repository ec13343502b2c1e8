//! Watches for the fake API server: every ResourceSlice write is an event
//! with the next `resourceVersion`, and a `watch=true` list is answered
//! with the events after the version it names (for `0` or none: an ADDED
//! event per current object), one JSON event per line, as the API server
//! streams them.
//!
//! A response carries the events pending when it is made, waiting up to
//! [`LONGEST_WAIT`] for the first: the client's stream then ends, as a real
//! watch does at its timeout, and the watcher resumes from the last
//! version it saw, so every event still arrives once, in order.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::Notify;

/// Longest a watch request waits for its first event.
pub const LONGEST_WAIT: Duration = Duration::from_secs(2);

#[derive(Default)]
struct Log {
    version: u64,
    events: Vec<(u64, &'static str, serde_json::Value)>,
}

/// The event log of one collection.
#[derive(Clone, Default)]
pub struct WatchLog {
    log: Arc<Mutex<Log>>,
    wake: Arc<Notify>,
}

/// Whether a request's query asks for a watch.
pub fn is_watch(query: &str) -> bool {
    query
        .split('&')
        .any(|kv| kv == "watch=true" || kv == "watch=1")
}

fn resource_version(query: &str) -> u64 {
    query
        .split('&')
        .find_map(|kv| kv.strip_prefix("resourceVersion="))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

impl WatchLog {
    /// Records an `ADDED`, `MODIFIED` or `DELETED` of `object`, stamping it
    /// with the next `resourceVersion` first (so the stored object carries
    /// it too).
    pub fn record(&self, kind: &'static str, object: &mut serde_json::Value) {
        {
            let mut log = self.log.lock().unwrap_or_else(PoisonError::into_inner);
            log.version += 1;
            let version = log.version;
            if object.is_object() {
                object["metadata"]["resourceVersion"] = version.to_string().into();
            }
            log.events.push((version, kind, object.clone()));
        }
        self.wake.notify_waiters();
    }

    /// The latest `resourceVersion`.
    pub fn version(&self) -> u64 {
        self.log
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .version
    }

    fn pending(
        &self,
        after: u64,
        current: &dyn Fn() -> Vec<serde_json::Value>,
        selected: &dyn Fn(&serde_json::Value) -> bool,
    ) -> Vec<serde_json::Value> {
        if after == 0 {
            return current()
                .into_iter()
                .filter(|o| selected(o))
                .map(|o| serde_json::json!({"type": "ADDED", "object": o}))
                .collect();
        }
        let log = self.log.lock().unwrap_or_else(PoisonError::into_inner);
        log.events
            .iter()
            .filter(|(v, _, o)| *v > after && selected(o))
            .map(|(_, kind, o)| serde_json::json!({"type": kind, "object": o}))
            .collect()
    }

    /// The body of a watch response for `query`: the pending events, one
    /// JSON object per line. `current` lists the collection, `selected`
    /// applies the request's selector.
    pub async fn answer(
        &self,
        query: &str,
        current: impl Fn() -> Vec<serde_json::Value>,
        selected: impl Fn(&serde_json::Value) -> bool,
    ) -> Vec<u8> {
        let after = resource_version(query);
        let deadline = tokio::time::Instant::now() + LONGEST_WAIT;
        loop {
            // Registered before looking, so a write in between still wakes us.
            let woken = self.wake.notified();
            let events = self.pending(after, &current, &selected);
            if !events.is_empty() {
                let mut body = Vec::new();
                for event in events {
                    body.extend(serde_json::to_vec(&event).unwrap_or_default());
                    body.push(b'\n');
                }
                return body;
            }
            if tokio::time::timeout_at(deadline, woken).await.is_err() {
                return Vec::new();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_watch_gets_the_events_after_its_version_or_waits_for_one() {
        let log = WatchLog::default();
        let mut a = serde_json::json!({"metadata": {"name": "a"}});
        log.record("ADDED", &mut a);
        assert_eq!(a["metadata"]["resourceVersion"], "1");
        let current = || vec![serde_json::json!({"metadata": {"name": "a"}})];
        let all = |_: &serde_json::Value| true;

        let from_zero = log
            .answer("watch=true&resourceVersion=0", current, all)
            .await;
        let line: serde_json::Value = serde_json::from_slice(&from_zero).unwrap();
        assert_eq!(line["type"], "ADDED");

        let waiting = {
            let log = log.clone();
            tokio::spawn(async move {
                log.answer("watch=true&resourceVersion=1", current, all)
                    .await
            })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        log.record("DELETED", &mut a);
        let body = waiting.await.unwrap();
        let line: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(line["type"], "DELETED");
        assert_eq!(line["object"]["metadata"]["resourceVersion"], "2");
        assert!(is_watch("fieldSelector=x&watch=true") && !is_watch("watch=false"));
    }
}
