//! Failpoints: named places, just before each step that changes the world
//! outside the process, where a test build can make the driver die.
//!
//! Compiled in only with the `failpoints` feature (the `fail` crate); in
//! every other build [`failpoint!`] expands to nothing, so a release binary
//! carries no trace of them. With the feature, `sriov-dra run` reads
//! `FAILPOINTS` at start (`FAILPOINTS='attach::netns_move=return'`) and a
//! failpoint set to `return` aborts the process on the spot, the way a
//! `kill -9` or a power cut would, after one line on stderr naming it.
//! (`panic` is no crash: tokio catches a panic in a blocking task.)
//!
//! Every failpoint is listed once in [`ALL`], so the crash harness
//! (`tests/crash.rs`) can go through all of them; a test below checks the
//! list against the `failpoint!` sites in the source.

/// What must be present for the step a failpoint guards to run at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Needs {
    /// Runs against stand-in VFs (macvlans in network namespaces), a
    /// fixture sysfs and the test doubles: the crash harness reaches it.
    StandIns,
    /// PF-side VF settings over rtnetlink: a real SR-IOV PF (`hw-tests/`).
    PfNetlink,
    /// Driver binding through sysfs: a real PCI function and vfio-pci.
    Vfio,
    /// An RDMA device in exclusive netns mode.
    Rdma,
    /// A physical netdev: when a pod's netns goes, the kernel hands a VF
    /// back to the host (possibly renamed, addresses gone with the netns
    /// or not); a virtual stand-in is deleted with the netns instead.
    PhysicalNetdev,
}

/// One failpoint: its name and what it comes before.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Failpoint {
    /// `<workflow>::<step>`, the name `FAILPOINTS` takes.
    pub name: &'static str,
    /// The step that has not happened yet when it fires.
    pub before: &'static str,
    /// What the step needs to run.
    pub needs: Needs,
}

const fn fp(name: &'static str, before: &'static str, needs: Needs) -> Failpoint {
    Failpoint {
        name,
        before,
        needs,
    }
}

/// Every failpoint in the driver, by workflow, in the order they fire.
pub const ALL: &[Failpoint] = &[
    fp(
        "startup::num_vfs",
        "applying a PF's sriov_numvfs plan (pfPolicies; a write when the count differs)",
        Needs::Vfio,
    ),
    fp(
        "prepare::record_plan",
        "the write-ahead claim record of a claim whose first change is a vfio binding",
        Needs::Vfio,
    ),
    fp(
        "prepare::vf_setting",
        "each PF-side VF setting (its write-ahead record is durable)",
        Needs::PfNetlink,
    ),
    fp(
        "prepare::vfio_bind",
        "switching a VF's driver to vfio-pci (the planned binding is durable)",
        Needs::Vfio,
    ),
    fp(
        "prepare::address_commit",
        "committing the claim's addresses (IPAM) with its record",
        Needs::StandIns,
    ),
    fp(
        "prepare::cdi_write",
        "writing the claim's CDI spec",
        Needs::StandIns,
    ),
    fp(
        "cdi::rename",
        "renaming a written, synced CDI spec into place",
        Needs::StandIns,
    ),
    fp(
        "prepare::record_commit",
        "committing the claim record as prepared",
        Needs::StandIns,
    ),
    fp(
        "prepare::answer",
        "answering the kubelet (everything is durable)",
        Needs::StandIns,
    ),
    fp(
        "unprepare::detach_from_pod",
        "moving home a VF a pod record still holds, at unprepare",
        Needs::StandIns,
    ),
    fp(
        "unprepare::pod_record_commit",
        "updating the pod record after unprepare moved its VFs home",
        Needs::StandIns,
    ),
    fp(
        "unprepare::driver_restore",
        "giving a VF back to its original driver",
        Needs::Vfio,
    ),
    fp(
        "unprepare::vf_restore",
        "restoring a VF's PF-side settings",
        Needs::PfNetlink,
    ),
    fp(
        "unprepare::cdi_remove",
        "deleting the claim's CDI spec",
        Needs::StandIns,
    ),
    fp(
        "unprepare::release_commit",
        "releasing the claim's addresses and dropping its record, in one commit",
        Needs::StandIns,
    ),
    fp(
        "recover::address_gc",
        "releasing addresses no claim record holds",
        Needs::StandIns,
    ),
    fp(
        "attach::plan_commit",
        "committing the pod's attach plan (state planned)",
        Needs::StandIns,
    ),
    fp(
        "attach::netns_move",
        "moving a VF into the pod netns (renamed in the same message)",
        Needs::StandIns,
    ),
    fp(
        "attach::rdma_move",
        "moving a VF's RDMA device into the pod netns",
        Needs::Rdma,
    ),
    fp(
        "attach::mtu",
        "setting a VF's MTU in the pod",
        Needs::StandIns,
    ),
    fp(
        "attach::mac",
        "setting a VF's MAC in the pod",
        Needs::PfNetlink,
    ),
    fp(
        "attach::address",
        "adding each address in the pod",
        Needs::StandIns,
    ),
    fp("attach::up", "bringing a VF up in the pod", Needs::StandIns),
    fp(
        "attach::route",
        "adding each route in the pod",
        Needs::StandIns,
    ),
    fp(
        "attach::record_commit",
        "committing the pod's attachments (state attached)",
        Needs::StandIns,
    ),
    fp(
        "detach::rdma_move",
        "moving a VF's RDMA device back to the host netns",
        Needs::Rdma,
    ),
    fp(
        "detach::netns_move",
        "moving a VF back to the host netns under its host name",
        Needs::StandIns,
    ),
    fp(
        "detach::rename",
        "renaming a VF that came home under another name",
        Needs::PhysicalNetdev,
    ),
    fp(
        "detach::address_flush",
        "removing addresses a VF still has in the host",
        Needs::PhysicalNetdev,
    ),
    fp(
        "detach::mtu",
        "restoring a VF's MTU in the host",
        Needs::StandIns,
    ),
    fp(
        "detach::mac",
        "restoring a VF's MAC in the host",
        Needs::PfNetlink,
    ),
    fp(
        "detach::up",
        "bringing a VF up again in the host",
        Needs::StandIns,
    ),
    fp(
        "detach::record_commit",
        "dropping the pod's attachment record",
        Needs::StandIns,
    ),
];

/// Makes the process die at once: what a failpoint set to `return` does.
/// One line on stderr first, so whoever started the process knows where.
#[cfg(feature = "failpoints")]
pub fn crash(name: &str) -> ! {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "failpoint {name}: aborting");
    std::process::abort()
}

/// Reads `FAILPOINTS` from the environment (a no-op without the
/// `failpoints` feature). Keep the returned guard for the process's life.
#[cfg(feature = "failpoints")]
pub fn setup() -> fail::FailScenario<'static> {
    fail::FailScenario::setup()
}

/// A failpoint named `$name` (listed in [`ALL`]): with the `failpoints`
/// feature and `FAILPOINTS=$name=return` the process aborts here; otherwise
/// nothing at all.
#[cfg(feature = "failpoints")]
macro_rules! failpoint {
    ($name:literal) => {
        fail::fail_point!($name, |_| $crate::failpoints::crash($name))
    };
}

/// A failpoint named `$name` (listed in [`ALL`]): with the `failpoints`
/// feature and `FAILPOINTS=$name=return` the process aborts here; otherwise
/// nothing at all.
#[cfg(not(feature = "failpoints"))]
macro_rules! failpoint {
    ($name:literal) => {{
        let _ = $name;
    }};
}

pub(crate) use failpoint;

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::path::Path;

    /// Every `failpoint!("…")` in `dir`, with the file it is in.
    fn sites(dir: &Path, out: &mut BTreeMap<String, Vec<String>>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                sites(&path, out);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") || path.ends_with("failpoints.rs") {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            for piece in text.split("failpoint!(\"").skip(1) {
                let name = piece.split('"').next().unwrap().to_string();
                out.entry(name)
                    .or_default()
                    .push(path.display().to_string());
            }
        }
    }

    #[test]
    fn the_list_names_every_failpoint_in_the_source_once_and_nothing_else() {
        let mut found = BTreeMap::new();
        sites(
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
            &mut found,
        );
        let listed: Vec<&str> = ALL.iter().map(|f| f.name).collect();
        let mut sorted = listed.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), listed.len(), "a name is listed twice");
        let in_source: Vec<&str> = found.keys().map(String::as_str).collect();
        assert_eq!(in_source, sorted, "ALL and the failpoint! sites differ");
        for (name, files) in &found {
            assert_eq!(files.len(), 1, "{name} is placed more than once: {files:?}");
        }
    }

    #[test]
    fn names_are_workflow_colon_colon_step() {
        for f in ALL {
            let (workflow, step) = f.name.split_once("::").unwrap();
            assert!(
                [
                    "startup",
                    "prepare",
                    "cdi",
                    "unprepare",
                    "recover",
                    "attach",
                    "detach"
                ]
                .contains(&workflow),
                "{}",
                f.name
            );
            assert!(
                !step.is_empty()
                    && step
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c == '_' || c.is_ascii_digit()),
                "{}",
                f.name
            );
        }
    }
}
