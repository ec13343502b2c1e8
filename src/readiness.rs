//! Whether the driver is ready to serve pods, part by part, for the debug
//! API's `/readyz`.
//!
//! The chart's readiness probe reads it, so a rolling update of the
//! DaemonSet stops on a node where the new driver never got registered with
//! the kubelet, never reached the runtime's NRI socket, or never published
//! its slices, instead of moving on to the next node. Each part is set by
//! the code that knows it (the driver's wiring, the NRI connection loop, the
//! publish loop); the probe only reads.

use std::sync::Arc;

use serde::Serialize;
use tokio::sync::watch;

/// The kubelet's registration verdict, as readiness sees it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum KubeletPart {
    /// The kubelet has not (yet) confirmed the registration.
    #[default]
    Pending,
    /// The kubelet accepted the plugin.
    Registered,
    /// The kubelet refused the plugin, with its reason.
    Rejected(String),
}

/// Every part readiness waits for.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Parts {
    /// The state store is open (prepared claims, attachments, addresses).
    pub store_open: bool,
    /// The kubelet's registration verdict.
    pub kubelet: KubeletPart,
    /// Registered with the runtime's NRI socket right now.
    pub nri_connected: bool,
    /// The node's ResourceSlices were published (or found up to date) at
    /// least once since start.
    pub slices_published: bool,
}

/// One part of a readiness report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    /// `store`, `kubeletRegistration`, `nri` or `slices`.
    pub name: &'static str,
    /// Whether this part is ready.
    pub ready: bool,
    /// What the part's state is, in words.
    pub detail: String,
}

/// What `/readyz` answers: ready only when every check is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    /// All checks ready.
    pub ready: bool,
    /// Each part, in start-up order.
    pub checks: Vec<Check>,
}

impl Parts {
    /// The report of these parts.
    pub fn report(&self) -> Report {
        let check = |name, ready, detail: &str| Check {
            name,
            ready,
            detail: detail.to_string(),
        };
        let kubelet = match &self.kubelet {
            KubeletPart::Pending => check(
                "kubeletRegistration",
                false,
                "not registered with the kubelet yet",
            ),
            KubeletPart::Registered => check("kubeletRegistration", true, "registered"),
            KubeletPart::Rejected(why) => check(
                "kubeletRegistration",
                false,
                &format!("rejected by the kubelet: {why}"),
            ),
        };
        let checks = vec![
            if self.store_open {
                check("store", true, "open")
            } else {
                check("store", false, "not open")
            },
            kubelet,
            if self.nri_connected {
                check("nri", true, "connected")
            } else {
                check(
                    "nri",
                    false,
                    "not connected to the runtime's NRI socket (is NRI enabled?)",
                )
            },
            if self.slices_published {
                check("slices", true, "published")
            } else {
                check("slices", false, "not published yet")
            },
        ];
        Report {
            ready: checks.iter().all(|c| c.ready),
            checks,
        }
    }
}

/// A shared, cheaply cloned handle on the driver's readiness.
#[derive(Debug, Clone)]
pub struct Readiness {
    parts: Arc<watch::Sender<Parts>>,
}

impl Default for Readiness {
    fn default() -> Self {
        Self::new()
    }
}

impl Readiness {
    /// Nothing ready yet.
    pub fn new() -> Self {
        Readiness {
            parts: Arc::new(watch::Sender::new(Parts::default())),
        }
    }

    /// The current parts.
    pub fn parts(&self) -> Parts {
        self.parts.borrow().clone()
    }

    /// The current report.
    pub fn report(&self) -> Report {
        self.parts.borrow().report()
    }

    /// Waits until every part is ready (tests, and anyone who must not act
    /// before the driver is).
    pub async fn wait_ready(&self) {
        let mut rx = self.parts.subscribe();
        let _ = rx.wait_for(|p| p.report().ready).await;
    }

    fn update(&self, change: impl FnOnce(&mut Parts)) {
        self.parts.send_if_modified(|parts| {
            let before = parts.clone();
            change(parts);
            *parts != before
        });
    }

    /// The state store was opened.
    pub fn set_store_open(&self, open: bool) {
        self.update(|p| p.store_open = open);
    }

    /// The kubelet's latest registration verdict.
    pub fn set_kubelet(&self, kubelet: KubeletPart) {
        self.update(|p| p.kubelet = kubelet);
    }

    /// The NRI connection came up (registered) or went away.
    pub fn set_nri_connected(&self, connected: bool) {
        self.update(|p| p.nri_connected = connected);
    }

    /// A publish round succeeded; readiness keeps that for the driver's life
    /// (a later failed round is retried and logged, the slices stay).
    pub fn set_slices_published(&self) {
        self.update(|p| p.slices_published = true);
    }

    /// Copies every value of `source` into readiness through `apply`, until
    /// `source`'s sender goes away. For the registration and NRI watches,
    /// whose owners know nothing of readiness.
    pub async fn follow<T: Clone>(
        self,
        mut source: watch::Receiver<T>,
        apply: impl Fn(&Readiness, T),
    ) {
        loop {
            let value = source.borrow_and_update().clone();
            apply(&self, value);
            if source.changed().await.is_err() {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_only_when_every_part_is() {
        let r = Readiness::new();
        let report = r.report();
        assert!(!report.ready);
        assert_eq!(report.checks.len(), 4);
        assert!(report.checks.iter().all(|c| !c.ready));
        r.set_store_open(true);
        r.set_kubelet(KubeletPart::Registered);
        r.set_nri_connected(true);
        assert!(!r.report().ready, "slices not published yet");
        r.set_slices_published();
        assert!(r.report().ready);
        r.set_nri_connected(false);
        let report = r.report();
        assert!(!report.ready);
        let nri = report.checks.iter().find(|c| c.name == "nri").unwrap();
        assert!(!nri.ready && nri.detail.contains("NRI"), "{nri:?}");
    }

    #[tokio::test]
    async fn follow_copies_a_watch_until_its_sender_goes() {
        let r = Readiness::new();
        let (tx, rx) = watch::channel(false);
        let task = tokio::spawn(
            r.clone()
                .follow(rx, |r, connected| r.set_nri_connected(connected)),
        );
        tx.send_replace(true);
        tokio::time::timeout(std::time::Duration::from_secs(5), async {
            while !r.parts().nri_connected {
                tokio::task::yield_now().await;
            }
        })
        .await
        .unwrap();
        drop(tx);
        task.await.unwrap();
    }
}
