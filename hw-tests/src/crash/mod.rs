//! The crash cases, `crash/mid-prepare` and `crash/mid-attach`: the real
//! `sriov-dra run` binary (built with failpoints) is made to die at every
//! failpoint of preparing a claim (and undoing it) or of attaching its VF
//! to a pod (and detaching it), and SIGKILLed at random moments of those
//! steps; after each restart nothing may be stranded. The driver is
//! started and spoken to with the driver's own crash-harness machinery
//! (`sriov_dra::testing`: the process, its home and test API, the test
//! kubelet calls, the runtime handshake, where a VF is).
//!
//! On a lab node the claim uses the profile's real VFs with PF-side
//! settings (VLAN, trust) and, when the profile allows DPDK, a second VF
//! in `dpdk` mode, so the failpoints that need hardware fire too; in a
//! simulated run a macvlan stand-in plays the VF and the result is
//! `simulated`, never `pass`.

pub mod binary;
pub mod lab;
pub mod plan;
pub mod rounds;
pub mod verify;

use std::path::Path;
use std::time::{Duration, Instant};

use sriov_dra::testing::rng::Rng;

use crate::cases::Outcome;
use crate::profile::NicProfile;
use crate::report::Entry;
use crate::tools::need_root;

use lab::LabNode;
use plan::{CrashCase, Plan, Reach};
use rounds::{Death, Step, Survived, round};

/// SIGKILL rounds per case on a lab node.
pub const LAB_KILLS: u32 = 6;
/// SIGKILL rounds per case in a simulated run (CI's time is short).
pub const SIMULATED_KILLS: u32 = 4;
/// The latest random kill after a step's call went out.
const KILL_WITHIN: Duration = Duration::from_millis(150);

/// Where the crash cases run.
pub enum Site<'a> {
    /// On a macvlan stand-in in a fixture sysfs.
    Simulated,
    /// On the profile's VFs of this node.
    Lab {
        /// The NIC model's profile (its first PF, `test_vf`, `pair_vfs`).
        nic: &'a NicProfile,
        /// The sysfs root the driver reads.
        sysfs_root: &'a Path,
    },
}

/// Both crash cases' report lines. `binary` is the failpoints-built
/// driver; `seed` repeats a run's random kills.
pub fn cases(binary: Option<&Path>, site: Site, seed: u64) -> Vec<Entry> {
    let unable = |outcome: Outcome| {
        CrashCase::ALL
            .iter()
            .map(|c| Entry::instant(c.name(), outcome.clone()))
            .collect()
    };
    if let Err(e) = need_root() {
        return unable(Outcome::Skipped(format!(
            "{e} (network namespaces, the driver's sockets)"
        )));
    }
    let Some(binary) = binary else {
        return unable(Outcome::Skipped(
            "no failpoints-built sriov-dra: give --driver-binary FILE or [node] driver_binary"
                .into(),
        ));
    };
    if let Err(e) = binary::check(binary) {
        return unable(Outcome::Skipped(e));
    }
    let reach = match &site {
        Site::Simulated => Reach::STAND_INS,
        Site::Lab { nic, sysfs_root } => Reach {
            pf_netlink: true,
            vfio: nic.allow_dpdk && lab::vfio_ready(nic, sysfs_root),
            physical: true,
        },
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => return unable(Outcome::Fail(format!("tokio runtime: {e}"))),
    };
    let mut rng = Rng::new(seed);
    CrashCase::ALL
        .iter()
        .map(|case| {
            let kills = match site {
                Site::Simulated => SIMULATED_KILLS,
                Site::Lab { .. } => LAB_KILLS,
            };
            let plan = plan::plan(*case, reach, kills);
            let started = Instant::now();
            let outcome =
                runtime.block_on(run_case(*case, &plan, binary, &site, reach, &mut rng, seed));
            Entry {
                case: case.name().into(),
                outcome,
                elapsed: started.elapsed(),
            }
        })
        .collect()
}

/// The steps a case's random kills fall into.
fn kill_steps(case: CrashCase) -> &'static [Step] {
    match case {
        CrashCase::MidPrepare => &[Step::Prepare, Step::Unprepare],
        CrashCase::MidAttach => &[Step::Run, Step::Stop],
    }
}

async fn run_case(
    case: CrashCase,
    plan: &Plan,
    binary: &Path,
    site: &Site<'_>,
    reach: Reach,
    rng: &mut Rng,
    seed: u64,
) -> Outcome {
    let node = match site {
        Site::Simulated => LabNode::simulated().await,
        Site::Lab { nic, sysfs_root } => LabNode::on_hardware(nic, sysfs_root, reach.vfio).await,
    };
    let node = match node {
        Ok(n) => n,
        Err(e) => return Outcome::Fail(format!("setting up: {e}")),
    };
    let deaths = plan
        .armed
        .iter()
        .map(|f| Death::At(f))
        .chain((0..plan.kills).map(|_| Death::random(rng, kill_steps(case), KILL_WITHIN)));
    let (mut crashes, mut not_reached) = (0, Vec::new());
    for death in deaths {
        match round(&node, binary, death).await {
            Ok(Survived::Crashed) => crashes += 1,
            Ok(Survived::NotReached) => {
                if let Death::At(name) = death {
                    not_reached.push(name);
                }
            }
            Err(e) => {
                let back = match rounds::put_back(&node, binary).await {
                    Ok(()) => "the VF was put back".to_string(),
                    Err(b) => format!("putting the VF back failed too: {b}"),
                };
                return Outcome::Fail(format!("{death} (seed {seed}): {e}; {back}"));
            }
        }
    }
    let mut summary = format!(
        "{crashes} crashes ({} failpoints, {} SIGKILLs), nothing stranded after any restart",
        plan.armed.len() - not_reached.len(),
        plan.kills
    );
    if !not_reached.is_empty() {
        summary += &format!("; armed, never reached: {}", not_reached.join(", "));
    }
    if !plan.left_out.is_empty() {
        summary += &format!("; not armed: {}", plan.left_out_text());
    }
    match site {
        Site::Simulated => Outcome::Simulated(format!("macvlan stand-in VF: {summary}")),
        Site::Lab { .. } => Outcome::Measured(summary),
    }
}
