//! The crash harness: the real `sriov-dra run` binary (built with the
//! `failpoints` feature) on a node of stand-in VFs, driven by a test
//! kubelet (registration and DRA sockets), a test runtime (NRI) and the
//! test API (HTTP), made to die again and again — aborted at each failpoint
//! in turn, and SIGKILLed at random moments — and restarted each time.
//!
//! After each restart the kubelet retries what went unanswered, the
//! runtime reconnects and sends `Synchronize` with the pods that run, and
//! the invariants must hold: every VF wholly in its running pod (name, MTU,
//! addresses, route, up) or wholly home (name, MTU, up, no addresses); the
//! records (read from the debug API) say exactly that; no address lost or
//! held twice; a claim deleted while the driver was down fully released;
//! the CDI directory holds exactly the prepared claims' specs.
//!
//! `CRASH_HARNESS_CRASHES` sets how many crashes (default 200),
//! `CRASH_HARNESS_SEED` repeats a run (the seed is printed). Needs root
//! (network namespaces); fails under `CI=true` without it.

mod check;
mod model;
mod node;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use model::{Pending, PodState, Rng, Stage, World};
use node::{NAMESPACE, Node};
use proto::nri;
use proto::nri::plugin_methods;
use sriov_dra::failpoints::{ALL, Needs};
use sriov_dra::testing::driver_process::{self as driver, Driver, Ending};
use sriov_dra::testing::netns::have_root;
use sriov_dra::testing::nri_runtime::{FakeRuntime, RuntimeConn, pod as wire_pod};
use sriov_dra::testing::runtime_handshake::{self, HandshakeError};

/// How often a failpoint that its armed run did not reach is armed again
/// straight away.
const MAX_REARMS: u32 = 10;
/// Crashes when `CRASH_HARNESS_CRASHES` is not set.
const DEFAULT_CRASHES: u64 = 200;
/// Kubelet and runtime calls per driver run, at most (a run usually ends
/// sooner, at its failpoint or its random kill).
const OPS_PER_RUN: usize = 12;
/// How long a restarted driver has to reach a state where every invariant
/// holds (and the kubelet to get its retried calls through).
const SETTLE: Duration = Duration::from_secs(20);
/// The latest random kill, after the restarted driver settled.
const KILL_WITHIN_MS: u64 = 600;
/// The latest random kill that falls into a restart, after the start.
const KILL_IN_RESTART_MS: u64 = 400;

/// What the harness saw.
#[derive(Default)]
struct Tally {
    crashes: usize,
    at_failpoint: BTreeMap<&'static str, usize>,
    killed: usize,
    checks: usize,
    violations: Vec<String>,
}

impl Tally {
    /// Counts how a driver ended; anything but a crash is a violation.
    fn ended(&mut self, driver: &Driver, ending: Ending, node: &Node) {
        match ending {
            Ending::Failpoint => {
                self.crashes += 1;
                *self
                    .at_failpoint
                    .entry(driver.armed.unwrap_or("(none armed)"))
                    .or_default() += 1;
            }
            Ending::Killed => {
                self.crashes += 1;
                self.killed += 1;
            }
            other => self.violation(node, format!("the driver ended by itself: {other:?}")),
        }
    }

    fn violation(&mut self, node: &Node, what: String) {
        eprintln!(
            "VIOLATION: {what}\n--- driver log (last 40 lines) ---\n{}\n---",
            node.home.log_tail(40)
        );
        self.violations.push(what);
    }
}

/// How a phase with a restarted driver went, when not as planned.
enum Broke {
    /// The driver died (at its failpoint, or killed).
    Crashed,
    /// The driver runs but something does not hold: a violation.
    Wrong(String),
}

#[test]
fn crash_harness() {
    if !have_root("crash_harness") {
        return;
    }
    let target = env_number("CRASH_HARNESS_CRASHES").unwrap_or(DEFAULT_CRASHES) as usize;
    let seed = env_number("CRASH_HARNESS_SEED").unwrap_or_else(Rng::clock_seed);
    eprintln!("crash harness: seed {seed}, aiming at {target} crashes");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let started = Instant::now();
    let tally = runtime.block_on(run(target, seed));
    let reachable: Vec<&str> = ALL
        .iter()
        .filter(|f| f.needs == Needs::StandIns)
        .map(|f| f.name)
        .collect();
    for name in &reachable {
        eprintln!(
            "  failpoint {name}: {} crashes",
            tally.at_failpoint.get(name).copied().unwrap_or(0)
        );
    }
    eprintln!(
        "  SIGKILL at a random moment: {} crashes; invariants checked {} times; {:.0?} in all",
        tally.killed,
        tally.checks,
        started.elapsed()
    );
    println!(
        "crash harness: {} crashes, {} invariant violations",
        tally.crashes,
        tally.violations.len()
    );
    assert!(
        tally.violations.is_empty(),
        "invariant violations (seed {seed}):\n{}",
        tally.violations.join("\n")
    );
    assert!(tally.crashes >= target, "{} crashes", tally.crashes);
    if target as u64 >= DEFAULT_CRASHES {
        let missed: Vec<&&str> = reachable
            .iter()
            .filter(|n| !tally.at_failpoint.contains_key(**n))
            .collect();
        assert!(
            missed.is_empty(),
            "failpoints never reached (seed {seed}): {missed:?}"
        );
    }
}

fn env_number(name: &str) -> Option<u64> {
    let value = std::env::var(name).ok()?;
    Some(
        value
            .parse()
            .unwrap_or_else(|e| panic!("{name}={value:?}: {e}")),
    )
}

async fn run(target: usize, seed: u64) -> Tally {
    let specs = node::pod_specs();
    let vf_count = specs
        .iter()
        .flat_map(|p| p.devices.iter().map(|d| d.vf + 1))
        .max()
        .unwrap_or(0);
    let node = Node::new(vf_count, specs.len()).await;
    let mut world = World::new(specs, &node.home.api);
    let mut rng = Rng::new(seed);
    let arms: Vec<&'static str> = ALL
        .iter()
        .filter(|f| f.needs == Needs::StandIns)
        .map(|f| f.name)
        .collect();
    let mut tally = Tally::default();
    let mut next_arm = 0;
    let mut retry: Option<&'static str> = None;
    let mut unreached: BTreeMap<&'static str, u32> = BTreeMap::new();
    let mut recovery_crashed = false;
    let mut iteration = 0u64;
    while tally.crashes < target && tally.violations.is_empty() {
        iteration += 1;
        // Failpoints and random kills take turns; a restart that itself
        // crashed is followed by an unarmed one, so each failpoint's
        // aftermath is checked too.
        let armed = if recovery_crashed || iteration.is_multiple_of(2) {
            None
        } else {
            Some(retry.take().unwrap_or_else(|| {
                next_arm += 1;
                arms[(next_arm - 1) % arms.len()]
            }))
        };
        let missed_stop = armed.is_some_and(needs_missed_stop);
        if iteration > 1 {
            while_down(&mut world, &node, &mut rng, missed_stop);
        }
        // A fresh runtime socket for each driver: a connection a dead
        // driver left in the backlog is never taken for the new one's.
        let runtime = FakeRuntime::listen(&node.home.nri_socket());
        // Some random kills fall into the restart itself: recovery, the
        // kubelet's retries, the runtime's Synchronize.
        let kill_in_restart = (armed.is_none() && !recovery_crashed && rng.chance(30))
            .then(|| Instant::now() + Duration::from_millis(rng.below(KILL_IN_RESTART_MS)));
        let mut driver = start(&node, armed);
        let restarted = {
            let restarting = restart(
                &node,
                &runtime,
                &mut driver,
                &mut world,
                &mut rng,
                &mut tally,
            );
            match kill_in_restart {
                Some(at) => tokio::select! {
                    r = restarting => Some(r),
                    _ = tokio::time::sleep_until(at.into()) => None,
                },
                None => Some(restarting.await),
            }
        };
        let restarted = match restarted {
            Some(r) => r,
            None => {
                driver.kill().await;
                Err(Broke::Crashed)
            }
        };
        match restarted {
            Ok(conn) => {
                recovery_crashed = false;
                let kill_at = armed
                    .is_none()
                    .then(|| Instant::now() + Duration::from_millis(rng.below(KILL_WITHIN_MS)));
                if let Err(Broke::Wrong(what)) =
                    workload(&node, &conn, &mut driver, &mut world, &mut rng, kill_at).await
                {
                    tally.violation(&node, what);
                }
            }
            Err(Broke::Crashed) => recovery_crashed = true,
            Err(Broke::Wrong(what)) => tally.violation(&node, what),
        }
        let ending = driver.kill().await;
        // A failpoint whose run did not reach it (a missed-stop one finds
        // no running pod, say) is armed again next time, until it fires
        // once: every reachable failpoint must be seen firing.
        if let Some(name) = armed
            && !matches!(ending, Ending::Failpoint)
            && !tally.at_failpoint.contains_key(name)
        {
            let tries = unreached.entry(name).or_default();
            *tries += 1;
            if *tries <= MAX_REARMS {
                retry = Some(name);
            }
        }
        tally.ended(&driver, ending, &node);
        runtime.stop();
    }
    if tally.violations.is_empty() {
        last_clean_run(&node, &mut world, &mut rng, &mut tally).await;
    }
    tally
}

/// A last start without failpoints: it must settle, and stop cleanly on
/// SIGTERM, removing its kubelet sockets.
async fn last_clean_run(node: &Node, world: &mut World, rng: &mut Rng, tally: &mut Tally) {
    let runtime = FakeRuntime::listen(&node.home.nri_socket());
    let mut driver = start(node, None);
    let settled = restart(node, &runtime, &mut driver, world, rng, tally).await;
    if let Err(broke) = settled {
        let what = match broke {
            Broke::Crashed => "the last, unarmed driver died".to_string(),
            Broke::Wrong(what) => what,
        };
        tally.violation(node, what);
    }
    match driver.stop().await {
        Ending::Stopped => {}
        other => tally.violation(node, format!("SIGTERM: the driver ended {other:?}")),
    }
    for socket in [node.home.dra_socket(), node.home.registration_socket()] {
        if socket.exists() {
            tally.violation(
                node,
                format!("{} is left after a clean stop", socket.display()),
            );
        }
    }
    runtime.stop();
}

/// What happens while the driver is down: the runtime stops a running pod
/// (no StopPodSandbox reaches the driver; the kubelet's unprepare waits
/// for the restart), or a claim that is prepared, or whose prepare went
/// unanswered, is deleted and its pod gets a new one (the kubelet never
/// unprepares the old: recovery must).
fn while_down(world: &mut World, node: &Node, rng: &mut Rng, missed_stop: bool) {
    if (missed_stop || rng.chance(30))
        && let Some(i) = pick(world, rng, |p| p.stage == Stage::Running)
    {
        world.pods[i].stage = Stage::Stopped;
        world.pods[i].pending = Some(Pending::Unprepare);
    }
    if rng.chance(40)
        && let Some(i) = pick(world, rng, |p| {
            matches!(p.stage, Stage::Stopped | Stage::Prepared)
                || p.pending == Some(Pending::Prepare)
        })
    {
        world.replace_claims(i, &node.home.api);
    }
}

/// Whether `failpoint` is reached only when the kubelet unprepares a claim
/// whose VFs a pod record still holds: a stop the driver missed, and the
/// kubelet's retry before the runtime's reconnect.
fn needs_missed_stop(failpoint: &str) -> bool {
    matches!(
        failpoint,
        "unprepare::detach_from_pod" | "unprepare::pod_record_commit"
    )
}

/// A random pod that passes `test`.
fn pick(world: &World, rng: &mut Rng, test: impl Fn(&PodState) -> bool) -> Option<usize> {
    let candidates: Vec<usize> = (0..world.pods.len())
        .filter(|i| test(&world.pods[*i]))
        .collect();
    (!candidates.is_empty()).then(|| candidates[rng.below(candidates.len() as u64) as usize])
}

/// A started driver until it has settled: the kubelet registers it and
/// retries its unanswered calls, the runtime connects and synchronizes (in
/// either order), and every invariant holds. Returns the runtime's
/// connection.
async fn restart(
    node: &Node,
    runtime: &FakeRuntime,
    driver: &mut Driver,
    world: &mut World,
    rng: &mut Rng,
    tally: &mut Tally,
) -> Result<RuntimeConn, Broke> {
    if let Err(e) = driver::register(&node.home, driver).await {
        return Err(crashed_or(driver, format!("registration: {e}")).await);
    }
    let kubelet_first = driver.armed.is_some_and(needs_missed_stop) || rng.chance(50);
    if kubelet_first {
        retry_kubelet(node, driver, world).await?;
    }
    let conn = handshake(node, runtime, driver, world).await?;
    if !kubelet_first {
        retry_kubelet(node, driver, world).await?;
    }
    let deadline = Instant::now() + SETTLE;
    loop {
        if driver.exited() {
            return Err(Broke::Crashed);
        }
        let violations = check::violations(node, world).await;
        if violations.is_empty() {
            tally.checks += 1;
            world.deleted.clear();
            return Ok(conn);
        }
        if Instant::now() > deadline {
            return Err(crashed_or(driver, violations.join("\n")).await);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `Crashed` when the driver has died (or dies within moments), otherwise
/// the violation `what`.
async fn crashed_or(driver: &mut Driver, what: String) -> Broke {
    if driver.ended_within(Duration::from_secs(1)).await.is_some() {
        Broke::Crashed
    } else {
        Broke::Wrong(what)
    }
}

/// The kubelet retries each call that went unanswered until it succeeds.
async fn retry_kubelet(node: &Node, driver: &mut Driver, world: &mut World) -> Result<(), Broke> {
    for pod in &mut world.pods {
        let Some(op) = pod.pending else {
            continue;
        };
        let deadline = Instant::now() + SETTLE;
        loop {
            let result = match op {
                Pending::Prepare => driver::prepare(&node.home, &pod.claims).await,
                Pending::Unprepare => driver::unprepare(&node.home, &pod.claims).await,
            };
            match result {
                Ok(()) => {
                    pod.pending = None;
                    pod.stage = match op {
                        Pending::Prepare => Stage::Prepared,
                        Pending::Unprepare => Stage::Idle,
                    };
                    break;
                }
                Err(e) => {
                    if driver
                        .ended_within(Duration::from_millis(300))
                        .await
                        .is_some()
                    {
                        return Err(Broke::Crashed);
                    }
                    if Instant::now() > deadline {
                        return Err(Broke::Wrong(format!(
                            "the kubelet's {op:?} of pod {}'s claims still fails after {SETTLE:?}: {e}",
                            pod.spec.name
                        )));
                    }
                }
            }
        }
    }
    Ok(())
}

/// The runtime's side of a (re)connect: accept, registration, Configure,
/// Synchronize with the pods that run.
async fn handshake(
    node: &Node,
    runtime: &FakeRuntime,
    driver: &mut Driver,
    world: &World,
) -> Result<RuntimeConn, Broke> {
    let pods = world
        .pods
        .iter()
        .enumerate()
        .filter(|(_, p)| p.stage == Stage::Running)
        .map(|(i, p)| sandbox(node, i, p.spec.name, &p.spec.uid()))
        .collect();
    match runtime_handshake::handshake(runtime, driver, pods).await {
        Ok(conn) => Ok(conn),
        Err(HandshakeError::Died) => Err(Broke::Crashed),
        Err(HandshakeError::Failed(what)) => Err(crashed_or(driver, what).await),
    }
}

/// The binary under test, started on `node` with `armed`.
fn start(node: &Node, armed: Option<&'static str>) -> Driver {
    Driver::start(
        Path::new(env!("CARGO_BIN_EXE_sriov-dra")),
        &node.home,
        armed,
    )
    .expect("sriov-dra starts")
}

/// Pod `i`'s sandbox as the runtime describes it.
fn sandbox(node: &Node, i: usize, name: &str, uid: &str) -> nri::PodSandbox {
    let netns = node.netns[i].path().display().to_string();
    let mut pod = wire_pod(NAMESPACE, name, Some(&netns));
    pod.uid = uid.into();
    pod
}

/// Random kubelet and runtime calls, each moving one pod one step, until
/// the driver dies (its failpoint), `kill_at` comes (SIGKILL in the middle
/// of whatever call is under way), or [`OPS_PER_RUN`] calls are done. The
/// model follows what the kubelet and runtime would conclude.
async fn workload(
    node: &Node,
    conn: &RuntimeConn,
    driver: &mut Driver,
    world: &mut World,
    rng: &mut Rng,
    kill_at: Option<Instant>,
) -> Result<(), Broke> {
    for _ in 0..OPS_PER_RUN {
        if driver.exited() {
            return Err(Broke::Crashed);
        }
        let i = rng.below(world.pods.len() as u64) as usize;
        let pod = world.pods[i].clone();
        let sandbox = sandbox(node, i, pod.spec.name, &pod.spec.uid());
        let call = async {
            match pod.stage {
                Stage::Idle => driver::prepare(&node.home, &pod.claims).await,
                Stage::Prepared => conn
                    .call::<nri::RunPodSandboxResponse>(
                        plugin_methods::RUN_POD_SANDBOX,
                        &nri::RunPodSandboxRequest { pod: Some(sandbox) },
                    )
                    .await
                    .map(drop)
                    .map_err(|e| e.to_string()),
                Stage::Running => conn
                    .call::<nri::StopPodSandboxResponse>(
                        plugin_methods::STOP_POD_SANDBOX,
                        &nri::StopPodSandboxRequest { pod: Some(sandbox) },
                    )
                    .await
                    .map(drop)
                    .map_err(|e| e.to_string()),
                Stage::Stopped => driver::unprepare(&node.home, &pod.claims).await,
            }
        };
        let result = match kill_at {
            Some(at) => tokio::select! {
                r = call => Some(r),
                _ = tokio::time::sleep_until(at.into()) => None,
            },
            None => Some(call.await),
        };
        let crashed = match &result {
            None => {
                driver.kill().await;
                true
            }
            Some(Ok(())) => false,
            Some(Err(_)) => driver.ended_within(Duration::from_secs(3)).await.is_some(),
        };
        let ok = matches!(result, Some(Ok(())));
        let state = &mut world.pods[i];
        match state.stage {
            Stage::Idle if ok => state.stage = Stage::Prepared,
            Stage::Idle => state.pending = Some(Pending::Prepare),
            // On a closed connection containerd drops the plugin and the
            // sandbox runs on (nri.md item 23): the restarted driver finds
            // it in Synchronize and must finish its attach.
            Stage::Prepared if ok || crashed => state.stage = Stage::Running,
            // Any other error: containerd stops and removes the sandbox.
            Stage::Prepared => {}
            // And stops it whatever the plugin answers.
            Stage::Running => state.stage = Stage::Stopped,
            Stage::Stopped if ok => state.stage = Stage::Idle,
            Stage::Stopped => state.pending = Some(Pending::Unprepare),
        }
        if crashed {
            return Err(Broke::Crashed);
        }
        if let Some(Err(e)) = result {
            return Err(Broke::Wrong(format!(
                "{:?} step of pod {} failed while the driver runs: {e}",
                pod.stage, pod.spec.name
            )));
        }
    }
    Ok(())
}
