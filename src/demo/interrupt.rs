//! SIGINT and SIGTERM, counted. Once installed, a signal no longer kills
//! the process: it is noted here and the demo drops what it was doing at
//! its next await point and tears down. A second Ctrl-C during a `--keep`
//! demo's orderly stop aborts that stop, but still ends in the teardown.

use std::fmt;

use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;

/// The signals received so far.
pub struct Interrupt {
    count: watch::Receiver<(u32, &'static str)>,
}

impl Interrupt {
    /// Starts listening for SIGINT and SIGTERM.
    pub fn install() -> anyhow::Result<Interrupt> {
        let mut int = signal(SignalKind::interrupt())?;
        let mut term = signal(SignalKind::terminate())?;
        let (tx, count) = watch::channel((0, ""));
        tokio::spawn(async move {
            loop {
                let name = tokio::select! {
                    Some(()) = int.recv() => "SIGINT",
                    Some(()) = term.recv() => "SIGTERM",
                    else => break,
                };
                tx.send_modify(|(n, last)| {
                    *n += 1;
                    *last = name;
                });
            }
        });
        Ok(Interrupt { count })
    }

    /// Resolves with the signal's name once more than `seen` signals came.
    pub async fn after(&self, seen: u32) -> &'static str {
        let mut rx = self.count.clone();
        match rx.wait_for(|(n, _)| *n > seen).await {
            Ok(state) => state.1,
            // The listener ended (no signal can come any more): wait forever.
            Err(_) => std::future::pending().await,
        }
    }
}

/// The demo was stopped by a signal; it tore down what it had made.
#[derive(Debug)]
pub struct Interrupted {
    signal: &'static str,
    stage: &'static str,
}

impl Interrupted {
    /// `signal` arrived while the demo was at `stage`.
    pub fn new(signal: &'static str, stage: &'static str) -> Self {
        Interrupted { signal, stage }
    }
}

impl fmt::Display for Interrupted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "interrupted by {} while {}; the cleanup above lists what was removed",
            self.signal, self.stage
        )
    }
}

impl std::error::Error for Interrupted {}
