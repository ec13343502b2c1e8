//! Test doubles for this crate's kernel interfaces, and the root check of
//! tests that need the real kernel.
//!
//! Built only for tests and with the `test-support` feature, so a release
//! build carries none of it.

mod route;
pub mod sim_pf;
mod sysfs_writer;

pub use route::{RecordedRequest, RecordingTransport};
pub use sysfs_writer::{RecordedWrite, RecordingSysfsWriter};

/// True when running as root; otherwise says loudly on stderr that `test`
/// did not run, and fails under `CI=true`, where root is promised (a skip
/// there would hide a defect).
pub fn have_root(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    eprintln!("\n!!!!! {test}: NOT RUN, needs root !!!!!\n");
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "{test} must run as root in CI"
    );
    false
}

/// Creates the veth pair `name`/`peer` in the calling thread's network
/// namespace (a test's fresh one: the host sees nothing), for tests of
/// what the kernel announces. Panics on failure, as a test's setup does.
pub fn create_veth(name: &str, peer: &str) {
    let mut socket = crate::netlink::RouteSocket::new().expect("a route socket");
    crate::netlink::RouteTransport::request(
        &mut socket,
        &format!("create veth {name}/{peer}"),
        crate::netlink::link::new_veth_message(name, peer),
        crate::netlink::link::CREATE_EXCLUSIVE,
    )
    .expect("veth created");
}
