//! The kernel's own announcements of changes, so the inventory is read
//! again when something happened instead of only on a timer: rtnetlink
//! link notifications (multicast group `RTNLGRP_LINK`: a link added,
//! removed, renamed, up or down) and kobject uevents (`NETLINK_KOBJECT_UEVENT`,
//! kernel group: a PCI device added, removed, bound or unbound).
//!
//! The sockets are the thin part: blocking reads with a timeout, so the
//! reading thread can notice it is no longer wanted. Decoding is pure
//! ([`decode_link_events`], [`parse_uevent`]) and tested on bytes.

use std::collections::BTreeMap;
use std::io;
use std::os::fd::AsRawFd;
use std::time::Duration;

use netlink_packet_core::NetlinkPayload;
use netlink_packet_route::RouteNetlinkMessage;
use netlink_packet_route::link::{LinkAttribute, LinkMessage, State};
use netlink_sys::protocols::{NETLINK_KOBJECT_UEVENT, NETLINK_ROUTE};
use netlink_sys::{Socket, SocketAddr};

use super::NetlinkError;
use super::channel::{NetlinkFamily, recv_whole};
use super::wire::decode_messages;

/// `RTMGRP_LINK`: the bind-time group mask of `RTNLGRP_LINK` (group 1).
const RTMGRP_LINK: u32 = 1;
/// The uevent group the kernel itself sends to (udev re-sends on group 2).
const UEVENT_KERNEL_GROUP: u32 = 1;
/// Receive buffer asked for: a burst of VF creations announces thousands of
/// links at once, and an overrun loses events (then `ENOBUFS` says so).
const RECV_BUFFER: usize = 4 << 20;

/// The uevent socket, as errors name it.
pub const UEVENT_FAMILY: NetlinkFamily = NetlinkFamily {
    protocol: NETLINK_KOBJECT_UEVENT,
    name: "kobject uevent",
    unsupported_hint: None,
};

/// What happened to a link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkEvent {
    /// `RTM_NEWLINK` (added or changed) or `RTM_DELLINK`.
    pub removed: bool,
    /// Interface index.
    pub index: u32,
    /// Interface name, when the message carries it.
    pub name: Option<String>,
    /// Operational state, when the message carries it.
    pub up: Option<bool>,
}

/// One kernel uevent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uevent {
    /// `add`, `remove`, `bind`, `unbind`, `change`, `move`, ...
    pub action: String,
    /// The device's path under `/sys` (`/devices/pci0000:3a/0000:3a:00.0/0000:3b:00.2`).
    pub devpath: String,
    /// `pci`, `net`, ...
    pub subsystem: String,
    /// Every `KEY=value` of the event (`PCI_SLOT_NAME`, `DRIVER`, `INTERFACE`, ...).
    pub vars: BTreeMap<String, String>,
}

impl Uevent {
    /// The PCI address of a `pci` event (`PCI_SLOT_NAME`).
    pub fn pci_slot(&self) -> Option<&str> {
        self.vars.get("PCI_SLOT_NAME").map(String::as_str)
    }
}

/// Decodes the link notifications of one datagram; other messages are
/// skipped.
pub fn decode_link_events(buf: &[u8]) -> Result<Vec<LinkEvent>, String> {
    Ok(decode_messages(buf)?
        .into_iter()
        .filter_map(|m| match m.payload {
            NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(link)) => {
                Some(link_event(&link, false))
            }
            NetlinkPayload::InnerMessage(RouteNetlinkMessage::DelLink(link)) => {
                Some(link_event(&link, true))
            }
            _ => None,
        })
        .collect())
}

fn link_event(link: &LinkMessage, removed: bool) -> LinkEvent {
    let mut event = LinkEvent {
        removed,
        index: link.header.index,
        name: None,
        up: None,
    };
    for attribute in &link.attributes {
        match attribute {
            LinkAttribute::IfName(name) => event.name = Some(name.clone()),
            LinkAttribute::OperState(state) => {
                event.up = Some(matches!(state, State::Up));
            }
            _ => {}
        }
    }
    event
}

/// Parses a kernel uevent datagram: `ACTION@DEVPATH`, then NUL-separated
/// `KEY=value` pairs. `None` for anything else (udev's re-sends start with
/// `libudev`, and are not on the kernel group anyway).
pub fn parse_uevent(buf: &[u8]) -> Option<Uevent> {
    let mut parts = buf.split(|b| *b == 0).filter(|p| !p.is_empty());
    let header = std::str::from_utf8(parts.next()?).ok()?;
    let (action, devpath) = header.split_once('@')?;
    let mut vars = BTreeMap::new();
    for part in parts {
        let Ok(text) = std::str::from_utf8(part) else {
            continue;
        };
        if let Some((k, v)) = text.split_once('=') {
            vars.insert(k.to_string(), v.to_string());
        }
    }
    Some(Uevent {
        action: vars
            .get("ACTION")
            .cloned()
            .unwrap_or_else(|| action.to_string()),
        devpath: vars
            .get("DEVPATH")
            .cloned()
            .unwrap_or_else(|| devpath.to_string()),
        subsystem: vars.get("SUBSYSTEM").cloned().unwrap_or_default(),
        vars,
    })
}

/// A socket subscribed to one multicast group of one netlink family, read
/// with a timeout.
struct Subscription {
    socket: Socket,
    family: NetlinkFamily,
}

impl Subscription {
    fn open(family: NetlinkFamily, groups: u32, timeout: Duration) -> Result<Self, NetlinkError> {
        let op = format!("subscribing to {} events", family.name);
        let io_error = |action, source| NetlinkError::Io {
            op: op.clone(),
            family,
            action,
            source,
        };
        let mut socket = Socket::new(family.protocol).map_err(|e| io_error("creating", e))?;
        socket
            .bind(&SocketAddr::new(0, groups))
            .map_err(|e| io_error("binding", e))?;
        // Best effort: the default buffer still works, with more overruns.
        let _ = socket.set_rx_buf_sz(RECV_BUFFER);
        set_receive_timeout(&socket, timeout).map_err(|e| io_error("setting a timeout on", e))?;
        Ok(Subscription { socket, family })
    }

    /// One datagram, or `None` when the timeout passed first.
    fn recv(&self) -> Result<Option<Vec<u8>>, NetlinkError> {
        match recv_whole(&self.socket) {
            Ok(buf) => Ok(Some(buf)),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                Ok(None)
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(None),
            Err(source) => Err(NetlinkError::Io {
                op: format!("reading {} events", self.family.name),
                family: self.family,
                action: "receiving from",
                source,
            }),
        }
    }
}

fn set_receive_timeout(socket: &Socket, timeout: Duration) -> io::Result<()> {
    let tv = libc::timeval {
        tv_sec: libc::time_t::try_from(timeout.as_secs()).unwrap_or(libc::time_t::MAX),
        tv_usec: libc::suseconds_t::from(timeout.subsec_micros() as i32),
    };
    // SAFETY: setsockopt reads `size_of::<timeval>()` bytes from a valid
    // timeval on a socket this process owns.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&tv as *const libc::timeval).cast(),
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Link notifications of the network namespace of the thread that opened it.
pub struct LinkEvents(Subscription);

impl LinkEvents {
    /// Subscribes to `RTNLGRP_LINK`; each [`LinkEvents::recv`] waits at
    /// most `timeout`.
    pub fn open(timeout: Duration) -> Result<Self, NetlinkError> {
        let family = NetlinkFamily::ROUTE;
        debug_assert_eq!(family.protocol, NETLINK_ROUTE);
        Subscription::open(family, RTMGRP_LINK, timeout).map(LinkEvents)
    }

    /// The link events of the next datagram (empty after a timeout). An
    /// `ENOBUFS` error means events were lost: rescan everything.
    pub fn recv(&self) -> Result<Vec<LinkEvent>, NetlinkError> {
        let Some(buf) = self.0.recv()? else {
            return Ok(Vec::new());
        };
        decode_link_events(&buf).map_err(|detail| NetlinkError::Protocol {
            op: "reading link events".into(),
            detail,
        })
    }
}

/// Kernel uevents (every subsystem; callers pick what they need).
pub struct Uevents(Subscription);

impl Uevents {
    /// Subscribes to the kernel's uevent group; each [`Uevents::recv`]
    /// waits at most `timeout`.
    pub fn open(timeout: Duration) -> Result<Self, NetlinkError> {
        Subscription::open(UEVENT_FAMILY, UEVENT_KERNEL_GROUP, timeout).map(Uevents)
    }

    /// The next uevent, `None` after a timeout or for a datagram that is
    /// not one.
    pub fn recv(&self) -> Result<Option<Uevent>, NetlinkError> {
        Ok(self.0.recv()?.as_deref().and_then(parse_uevent))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use netlink_packet_core::{NetlinkHeader, NetlinkMessage};

    fn datagram(messages: Vec<RouteNetlinkMessage>) -> Vec<u8> {
        let mut out = Vec::new();
        for m in messages {
            let mut msg =
                NetlinkMessage::new(NetlinkHeader::default(), NetlinkPayload::InnerMessage(m));
            msg.finalize();
            let mut buf = vec![0; msg.buffer_len()];
            msg.serialize(&mut buf);
            buf.resize(buf.len().div_ceil(4) * 4, 0);
            out.extend(buf);
        }
        out
    }

    #[test]
    fn new_and_del_link_messages_decode_to_events() {
        let mut up = LinkMessage::default();
        up.header.index = 7;
        up.attributes
            .push(LinkAttribute::IfName("ens1f0np0".into()));
        up.attributes.push(LinkAttribute::OperState(State::Down));
        let mut gone = LinkMessage::default();
        gone.header.index = 9;
        let buf = datagram(vec![
            RouteNetlinkMessage::NewLink(up),
            RouteNetlinkMessage::DelLink(gone),
        ]);
        assert_eq!(
            decode_link_events(&buf).unwrap(),
            [
                LinkEvent {
                    removed: false,
                    index: 7,
                    name: Some("ens1f0np0".into()),
                    up: Some(false),
                },
                LinkEvent {
                    removed: true,
                    index: 9,
                    name: None,
                    up: None,
                },
            ]
        );
    }

    #[test]
    fn a_pci_bind_uevent_parses_with_its_slot_and_driver() {
        let raw = b"bind@/devices/pci0000:3a/0000:3a:00.0/0000:3b:00.2\0ACTION=bind\0\
DEVPATH=/devices/pci0000:3a/0000:3a:00.0/0000:3b:00.2\0SUBSYSTEM=pci\0DRIVER=vfio-pci\0\
PCI_SLOT_NAME=0000:3b:00.2\0SEQNUM=4711\0";
        let ev = parse_uevent(raw).unwrap();
        assert_eq!(ev.action, "bind");
        assert_eq!(ev.subsystem, "pci");
        assert_eq!(ev.pci_slot(), Some("0000:3b:00.2"));
        assert_eq!(ev.vars["DRIVER"], "vfio-pci");
        assert!(ev.devpath.ends_with("0000:3b:00.2"));
    }

    #[test]
    fn garbage_is_not_a_uevent() {
        assert_eq!(parse_uevent(b""), None);
        assert_eq!(parse_uevent(b"no at sign\0A=b"), None);
    }

    /// The real subscription: a link created in a fresh network namespace
    /// is announced to a socket opened there.
    #[test]
    fn a_dummy_link_created_in_a_fresh_netns_is_announced() {
        if !crate::testing::have_root("a_dummy_link_created_in_a_fresh_netns_is_announced") {
            return;
        }
        let events = std::thread::spawn(|| {
            // SAFETY: unshare only moves this throw-away thread into a new
            // network namespace.
            assert_eq!(unsafe { libc::unshare(libc::CLONE_NEWNET) }, 0);
            let subscription = LinkEvents::open(Duration::from_millis(200)).unwrap();
            crate::testing::create_veth("evA", "evB");
            let deadline = std::time::Instant::now() + Duration::from_secs(2);
            let mut seen = Vec::new();
            while std::time::Instant::now() < deadline
                && !seen
                    .iter()
                    .any(|e: &LinkEvent| e.name.as_deref() == Some("evA"))
            {
                seen.extend(subscription.recv().unwrap());
            }
            seen
        })
        .join()
        .unwrap();
        assert!(
            events
                .iter()
                .any(|e| e.name.as_deref() == Some("evA") && !e.removed),
            "{events:?}"
        );
    }
}
