//! `sriov-dra demo`: the whole claim path on a simulated node, in one
//! command, with the driver's real code.
//!
//! A fixture sysfs names macvlan links as the VFs' netdevs; the driver's
//! parts run in-process ([`driver`]); the demo plays the kubelet (real DRA
//! gRPC) and the runtime (real NRI) ([`peers`]); the API server is the
//! tests' fake and the PF side of the NIC a simulated PF ([`node`] says
//! why). Everything the demo makes is removed at the end, and also when a
//! SIGINT or SIGTERM arrives at any moment ([`interrupt`]).
//!
//! Built only with the `demo` feature, because it needs the test doubles.

pub mod claim;
pub mod driver;
pub mod interrupt;
pub mod node;
pub mod peers;
pub mod show;

use std::time::{Duration, Instant};

use anyhow::Context;
use sriov::vf_config::VfTarget;

use self::claim::{CLAIM, IF_NAME, NAMESPACE, POD, POOL, VLAN};
use self::driver::DemoDriver;
use self::interrupt::{Interrupt, Interrupted};
use self::node::{DemoNames, DemoNode, PF_NAME, VF_COUNT};
use self::peers::{Kubelet, Runtime};
use self::show::{debug_get, indent, ip, ipam_summary, pretty, vf_line};

/// How the demo runs.
#[derive(Debug, Clone, Copy, Default)]
pub struct DemoOptions {
    /// Leave the pod running until Ctrl-C, for a look around.
    pub keep: bool,
}

/// What the demo has made so far; torn down whatever the state.
struct Parts {
    node: DemoNode,
    driver: Option<DemoDriver>,
    /// The runtime's end of the NRI connection; closed after the driver
    /// stopped, so the plugin does not see its runtime go away first.
    runtime: Option<Runtime>,
    /// What the demo is doing, for the interruption message.
    stage: &'static str,
}

/// The pod's side once it runs.
struct Session {
    kubelet: Kubelet,
    pod: proto::nri::PodSandbox,
}

fn say(line: &str) {
    println!("{line}");
}

/// Milliseconds since `started`, for people (a figure, not a check).
fn ms(started: Instant) -> String {
    format!("{:.1} ms", started.elapsed().as_secs_f64() * 1e3)
}

/// Runs the demo. Signal handlers are installed before anything is made,
/// so an interruption at any moment ends in the teardown.
pub async fn run(options: DemoOptions) -> anyhow::Result<()> {
    let interrupt = Interrupt::install()?;
    let names = DemoNames::for_pid(std::process::id());
    let mut parts = Parts {
        node: DemoNode::new(names),
        driver: None,
        runtime: None,
        stage: "starting",
    };
    let outcome = run_stages(&mut parts, &interrupt, options).await;
    say(&format!("== cleanup (after {})", parts.stage));
    if let Some(driver) = parts.driver.take() {
        for part in driver.stop().await {
            say(&format!("   {part} did not stop within its patience"));
        }
    }
    drop(parts.runtime.take());
    for removed in parts.node.teardown() {
        say(&format!("   removed {removed}"));
    }
    outcome
}

async fn run_stages(
    parts: &mut Parts,
    interrupt: &Interrupt,
    options: DemoOptions,
) -> anyhow::Result<()> {
    let session = tokio::select! {
        session = bring_up(parts) => session?,
        signal = interrupt.after(0) => return Err(Interrupted::new(signal, parts.stage).into()),
    };
    let mut patience = 0;
    if options.keep {
        let driver = parts.driver.as_ref().context("driver not started")?;
        say(
            "== the pod runs: look around, then Ctrl-C to stop it, unprepare and remove everything",
        );
        say(&format!(
            "   debug API:  {0}/claims {0}/attachments {0}/ipam {0}/inventory {0}/readyz",
            driver.debug_url
        ));
        say(&format!(
            "   pod netns:  {0}   (ip -n {0} addr; ip -n {0} route; ip netns exec {0} sh)",
            parts.node.names.base
        ));
        parts.stage = "waiting for Ctrl-C (--keep)";
        let signal = interrupt.after(0).await;
        say(&format!("   {signal}: stopping the pod"));
        patience = 1;
    }
    tokio::select! {
        done = bring_down(parts, session) => done,
        signal = interrupt.after(patience) => Err(Interrupted::new(signal, parts.stage).into()),
    }
}

/// Node, driver, prepare, pod start; prints what a user would check.
async fn bring_up(parts: &mut Parts) -> anyhow::Result<Session> {
    parts.stage = "building the node";
    parts.node.build()?;
    let dir = parts.node.dir()?.to_path_buf();
    say(&format!(
        "== 1/6 node: fixture sysfs in {}: simulated ConnectX-6 Dx PF {PF_NAME} ({VF_COUNT} VFs); the VFs' netdevs are macvlan links {}",
        dir.display(),
        parts
            .node
            .vfs
            .iter()
            .map(|v| v.if_name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    ));

    parts.stage = "starting the driver";
    let listener = Runtime::listen(&dir.join("nri.sock"));
    let driver = DemoDriver::start(&parts.node, dir.join("nri.sock")).await?;
    let driver = &*parts.driver.insert(driver);
    let kubelet = Kubelet::register(&driver.paths).await?;
    let runtime = &*parts.runtime.insert(Runtime::connect(listener).await);
    say(&format!(
        "== 2/6 driver: state store, DRA service on {}, NRI plugin connected to the runtime, debug API on {}",
        driver.paths.dra_socket.display(),
        driver.debug_url
    ));
    for (name, slice) in driver.api.slices() {
        let devices = slice["spec"]["devices"].as_array().map_or(0, Vec::len);
        say(&format!(
            "   published ResourceSlice {name}: {devices} devices in pool {}",
            slice["spec"]["pool"]["name"].as_str().unwrap_or("?")
        ));
    }

    parts.stage = "preparing the claim";
    let vf = parts
        .node
        .vfs
        .first()
        .context("the demo node has no VF")?
        .clone();
    driver.api.put_claim(&claim::resource_claim(&vf.device()));
    say(&format!(
        "== 3/6 kubelet: NodePrepareResources for claim {NAMESPACE}/{CLAIM}: device {} (VF {} of {PF_NAME}), VfConfig vlan {VLAN}, ifName {IF_NAME}, ipam pool {POOL}",
        vf.device(),
        vf.index
    ));
    let mut kubelet = kubelet;
    let started = Instant::now();
    let cdi = kubelet.prepare().await?;
    say(&format!(
        "   prepared in {}; CDI devices: {}",
        ms(started),
        cdi.join(", ")
    ));
    let target = VfTarget {
        pf: PF_NAME.into(),
        vf: vf.index,
    };
    let state = driver.ops.vf_state(&target)?;
    say(&format!(
        "   PF side: {PF_NAME} is a simulated PF (a macvlan has no PF to carry a VLAN); it recorded, read back over the netlink wire format:\n     {}",
        vf_line(&state)
    ));

    parts.stage = "starting the pod";
    let netns = parts.node.create_netns()?.to_path_buf();
    let pod = claim::pod_sandbox(&netns);
    say(&format!(
        "== 4/6 runtime: RunPodSandbox for pod {NAMESPACE}/{POD}, network namespace {}",
        netns.display()
    ));
    let started = Instant::now();
    runtime.run_pod(&pod).await?;
    say(&format!(
        "   the runtime's RunPodSandbox was answered in {} (VF moved, renamed, addressed, up)",
        ms(started)
    ));
    let names = &parts.node.names;
    say(&format!(
        "   $ ip -n {} addr      (the pod's view)",
        names.base
    ));
    print!("{}", indent(&ip(&["-n", &names.base, "addr"]), 5));
    let status = claim_status(driver).await;
    say("   claim status.devices[] (as `kubectl get resourceclaim -o yaml` shows it):");
    print!("{}", indent(&pretty(&status), 5));
    let attachments = debug_get(&driver.debug_url, "/attachments").await?;
    say(&format!("   debug API {}/attachments:", driver.debug_url));
    print!("{}", indent(&pretty(&attachments), 5));
    Ok(Session { kubelet, pod })
}

/// The claim's `status.devices`, once the handler reported it (it does so
/// right after answering the runtime).
async fn claim_status(driver: &DemoDriver) -> serde_json::Value {
    for _ in 0..100 {
        let devices = driver
            .api
            .claim(NAMESPACE, CLAIM)
            .map(|c| c["status"]["devices"].clone())
            .unwrap_or_default();
        if devices.as_array().is_some_and(|d| !d.is_empty()) {
            return devices;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    serde_json::json!("(not reported within 5 s)")
}

/// Pod stop, unprepare; prints the VF home and its settings restored.
async fn bring_down(parts: &mut Parts, session: Session) -> anyhow::Result<()> {
    let Session { mut kubelet, pod } = session;
    let runtime = parts.runtime.as_ref().context("runtime not connected")?;
    let driver = parts.driver.as_ref().context("driver not started")?;
    let vf = parts.node.vfs.first().context("no VF")?.clone();
    parts.stage = "stopping the pod";
    say(&format!(
        "== 5/6 runtime: StopPodSandbox and RemovePodSandbox for pod {NAMESPACE}/{POD}"
    ));
    let started = Instant::now();
    runtime.stop_pod(&pod).await?;
    say(&format!("   both answered in {}", ms(started)));
    say(&format!(
        "   $ ip -br link show dev {}      (the VF is back in the host, under its own name)",
        vf.if_name
    ));
    print!(
        "{}",
        indent(&ip(&["-br", "link", "show", "dev", &vf.if_name]), 5)
    );

    parts.stage = "unpreparing the claim";
    say(&format!(
        "== 6/6 kubelet: NodeUnprepareResources for claim {NAMESPACE}/{CLAIM}"
    ));
    let started = Instant::now();
    kubelet.unprepare().await?;
    say(&format!("   unprepared in {}", ms(started)));
    let state = driver.ops.vf_state(&VfTarget {
        pf: PF_NAME.into(),
        vf: vf.index,
    })?;
    say(&format!(
        "   PF side (simulated), restored:\n     {}",
        vf_line(&state)
    ));
    let ipam = debug_get(&driver.debug_url, "/ipam").await?;
    say(&format!(
        "   debug API {}/ipam (the addresses are released):",
        driver.debug_url
    ));
    print!("{}", indent(&ipam_summary(&ipam), 5));
    parts.stage = "done";
    Ok(())
}
