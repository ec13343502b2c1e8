//! What makes the driver read the node again before the period is up: the
//! kernel announcing a link or PCI change, or our slices changing in the
//! API. Sources send [`Nudge`]s; the publish loop gathers them with a
//! [`debounce::Debouncer`] so a burst (a PF creating 64 VFs) is one rescan,
//! [`targets`] says which functions the batch asks to read again (all of
//! them only when it cannot tell), and [`changes`] says what the rescan
//! found different.

pub mod changes;
pub mod debounce;
pub mod kernel;
pub mod targets;

use tokio::sync::mpsc;

/// Why the inventory or the slices should be looked at again.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Nudge {
    /// A link was added, removed or changed (rtnetlink `RTNLGRP_LINK`).
    Link {
        /// Its name, or `#<index>` when the message had none.
        name: String,
    },
    /// A PCI device was added, removed, bound or unbound (kernel uevent).
    Pci {
        /// `add`, `remove`, `bind`, `unbind`.
        action: String,
        /// Its PCI address.
        device: String,
    },
    /// Kernel events were lost (socket overrun): everything may have changed.
    Overrun,
    /// One of our ResourceSlices changed or went away in the API.
    Slice {
        /// The slice's name.
        name: String,
    },
}

/// Where sources send their nudges. Bounded: when the loop is behind, one
/// pending rescan covers any number of further nudges, so a full channel
/// drops them.
pub type NudgeSender = mpsc::Sender<Nudge>;

/// Capacity of the nudge channel.
pub const NUDGE_BACKLOG: usize = 256;

/// A nudge channel.
pub fn channel() -> (NudgeSender, mpsc::Receiver<Nudge>) {
    mpsc::channel(NUDGE_BACKLOG)
}

/// Sends without waiting; a full or closed channel drops the nudge (a
/// rescan is pending, or the driver is stopping).
pub fn nudge(tx: &NudgeSender, nudge: Nudge) {
    let _ = tx.try_send(nudge);
}
