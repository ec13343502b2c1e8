//! One crash round: the pod's whole life (prepare, run, stop, unprepare)
//! with a driver armed at one failpoint or killed at a random moment of
//! the case's steps; after it died, a restarted driver, the kubelet's
//! retry of the call that went unanswered and the runtime's `Synchronize`,
//! the invariants for where the pod then is; then the rest of the life
//! with that driver and the invariants of an idle claim.

use std::path::Path;
use std::time::{Duration, Instant};

use proto::nri;
use proto::nri::plugin_methods;
use sriov_dra::testing::driver_process::{self as driver, Driver, Ending};
use sriov_dra::testing::nri_runtime::{FakeRuntime, RuntimeConn, pod as wire_pod};
use sriov_dra::testing::rng::Rng;
use sriov_dra::testing::runtime_handshake::{HandshakeError, handshake};

use super::lab::{LabNode, NAMESPACE, POD, POD_UID};
use super::verify::{Stage, violations};

/// How long a restarted driver has to reach a state where every
/// invariant holds, and the kubelet to get its retried call through.
const SETTLE: Duration = Duration::from_secs(20);

/// A step of the pod's life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// The kubelet's `NodePrepareResources`.
    Prepare,
    /// The runtime's `RunPodSandbox`.
    Run,
    /// The runtime's `StopPodSandbox`.
    Stop,
    /// The kubelet's `NodeUnprepareResources`.
    Unprepare,
}

/// The pod's life in order.
pub const LIFE: [Step; 4] = [Step::Prepare, Step::Run, Step::Stop, Step::Unprepare];

/// How the driver is made to die in a round.
#[derive(Debug, Clone, Copy)]
pub enum Death {
    /// Started with this failpoint armed.
    At(&'static str),
    /// SIGKILLed `after` the start of `step` (or as soon as it answered).
    Kill { step: Step, after: Duration },
}

impl std::fmt::Display for Death {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Death::At(name) => write!(f, "failpoint {name}"),
            Death::Kill { step, after } => write!(f, "SIGKILL {after:?} into {step:?}"),
        }
    }
}

impl Death {
    /// A random kill during one of `steps`, within `within`.
    pub fn random(rng: &mut Rng, steps: &[Step], within: Duration) -> Death {
        Death::Kill {
            step: steps[rng.below(steps.len() as u64) as usize],
            after: Duration::from_millis(rng.below(within.as_millis().max(1) as u64)),
        }
    }
}

/// How a round went, when nothing was violated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Survived {
    /// The driver died as meant and everything held after its restart.
    Crashed,
    /// The armed failpoint was never reached in the pod's whole life.
    NotReached,
}

/// What the kubelet and the runtime believe after a step, and what the
/// kubelet still has to retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct World {
    stage: Stage,
    retry: Option<Step>,
}

impl World {
    /// After `step` answered (`ok`) or the driver died during it. A
    /// sandbox whose plugin died keeps running (containerd drops the
    /// plugin, nri.md), a stop happens whatever the plugin says, and a
    /// kubelet call without an answer is retried.
    fn after(step: Step, ok: bool) -> World {
        let (stage, retry) = match (step, ok) {
            (Step::Prepare, true) => (Stage::Prepared, None),
            (Step::Prepare, false) => (Stage::Idle, Some(Step::Prepare)),
            (Step::Run, _) => (Stage::Running, None),
            (Step::Stop, _) => (Stage::Prepared, None),
            (Step::Unprepare, true) => (Stage::Idle, None),
            (Step::Unprepare, false) => (Stage::Prepared, Some(Step::Unprepare)),
        };
        World { stage, retry }
    }

    /// The steps left of the pod's life after the crash's (a retried
    /// call is done by the kubelet before these).
    fn rest(crashed_in: Step) -> Vec<Step> {
        let next = LIFE.iter().position(|s| *s == crashed_in).unwrap_or(0) + 1;
        LIFE[next..].to_vec()
    }
}

/// Runs one round on `node` with `binary`. `Err` names the first
/// violation (and carries the driver log's tail).
pub async fn round(node: &LabNode, binary: &Path, death: Death) -> Result<Survived, String> {
    let armed = match death {
        Death::At(name) => Some(name),
        Death::Kill { .. } => None,
    };
    let runtime = FakeRuntime::listen(&node.home.nri_socket());
    let mut d = start(node, binary, armed)?;
    let conn = connect(node, &runtime, &mut d, Vec::new()).await?;
    let mut crash = None;
    for step in LIFE {
        let call = call(node, &conn, step);
        let killed_here = matches!(death, Death::Kill { step: s, .. } if s == step);
        let answer = match death {
            Death::Kill { after, .. } if killed_here => tokio::select! {
                r = call => Some(r),
                _ = tokio::time::sleep(after) => None,
            },
            _ => Some(call.await),
        };
        if killed_here {
            // Killed during the call, or the moment it answered: an
            // answer the kubelet or runtime got counts.
            d.kill().await;
            crash = Some((step, World::after(step, matches!(answer, Some(Ok(()))))));
            break;
        }
        if let Some(Err(e)) = answer {
            if d.ended_within(Duration::from_secs(3)).await.is_none() {
                return Err(failed(
                    node,
                    &format!("{step:?} failed while the driver runs: {e}"),
                ));
            }
            crash = Some((step, World::after(step, false)));
            break;
        }
    }
    let Some((step, world)) = crash else {
        return match d.stop().await {
            Ending::Stopped if armed.is_some() => Ok(Survived::NotReached),
            other => Err(failed(
                node,
                &format!("the driver ended {other:?} on SIGTERM"),
            )),
        };
    };
    match (death, d.kill().await) {
        (Death::At(_), Ending::Failpoint) | (Death::Kill { .. }, Ending::Killed) => {}
        (_, other) => {
            return Err(failed(
                node,
                &format!("{death}: the driver ended {other:?}"),
            ));
        }
    }
    runtime.stop();
    drop(conn);

    // The restart: the kubelet registers it and retries, the runtime
    // reconnects with the pods that run.
    let runtime = FakeRuntime::listen(&node.home.nri_socket());
    let mut d = start(node, binary, None)?;
    let mut world = world;
    if let Some(retry) = world.retry {
        retry_until_ok(node, &mut d, retry).await?;
        world = World::after(retry, true);
    }
    let running = if world.stage == Stage::Running {
        vec![sandbox(node)]
    } else {
        Vec::new()
    };
    let conn = connect(node, &runtime, &mut d, running).await?;
    settle(
        node,
        &mut d,
        world.stage,
        &format!("after {death}, crashed in {step:?}"),
    )
    .await?;

    for next in World::rest(step) {
        call(node, &conn, next)
            .await
            .map_err(|e| failed(node, &format!("{next:?} after the restart: {e}")))?;
    }
    settle(
        node,
        &mut d,
        Stage::Idle,
        &format!("the pod's life finished after {death}"),
    )
    .await?;
    let ending = d.stop().await;
    runtime.stop();
    match ending {
        Ending::Stopped => Ok(Survived::Crashed),
        other => Err(failed(
            node,
            &format!("the restarted driver ended {other:?} on SIGTERM"),
        )),
    }
}

/// After a failed round: a driver without failpoints, told by the
/// runtime that no pod runs, and the kubelet's unprepare put the VF back
/// (on a lab node a VF left in the pod's namespace would come home under
/// the pod's name when the namespace goes). `Err` names what still is not
/// as it was.
pub async fn put_back(node: &LabNode, binary: &Path) -> Result<(), String> {
    let runtime = FakeRuntime::listen(&node.home.nri_socket());
    let mut d = start(node, binary, None)?;
    let conn = connect(node, &runtime, &mut d, Vec::new()).await?;
    let _ = call(node, &conn, Step::Stop).await;
    let put = match retry_until_ok(node, &mut d, Step::Unprepare).await {
        Ok(()) => settle(node, &mut d, Stage::Idle, "putting the VF back").await,
        Err(e) => Err(e),
    };
    d.stop().await;
    runtime.stop();
    put
}

fn start(node: &LabNode, binary: &Path, armed: Option<&'static str>) -> Result<Driver, String> {
    Driver::start(binary, &node.home, armed)
        .map_err(|e| format!("starting {}: {e}", binary.display()))
}

/// Registration with the kubelet, then the runtime's handshake.
async fn connect(
    node: &LabNode,
    runtime: &FakeRuntime,
    d: &mut Driver,
    running: Vec<nri::PodSandbox>,
) -> Result<RuntimeConn, String> {
    driver::register(&node.home, d)
        .await
        .map_err(|e| failed(node, &format!("registration: {e}")))?;
    handshake(runtime, d, running).await.map_err(|e| match e {
        HandshakeError::Died => failed(node, "the driver died in the NRI handshake"),
        HandshakeError::Failed(what) => failed(node, &what),
    })
}

/// The pod's sandbox as the runtime describes it.
fn sandbox(node: &LabNode) -> nri::PodSandbox {
    let netns = node.netns.path().display().to_string();
    let mut pod = wire_pod(NAMESPACE, POD, Some(&netns));
    pod.uid = POD_UID.into();
    pod
}

/// One step's call to the driver.
async fn call(node: &LabNode, conn: &RuntimeConn, step: Step) -> Result<(), String> {
    let claims = std::slice::from_ref(&node.claim);
    match step {
        Step::Prepare => driver::prepare(&node.home, claims).await,
        Step::Unprepare => driver::unprepare(&node.home, claims).await,
        Step::Run => conn
            .call::<nri::RunPodSandboxResponse>(
                plugin_methods::RUN_POD_SANDBOX,
                &nri::RunPodSandboxRequest {
                    pod: Some(sandbox(node)),
                },
            )
            .await
            .map(drop)
            .map_err(|e| e.to_string()),
        Step::Stop => conn
            .call::<nri::StopPodSandboxResponse>(
                plugin_methods::STOP_POD_SANDBOX,
                &nri::StopPodSandboxRequest {
                    pod: Some(sandbox(node)),
                },
            )
            .await
            .map(drop)
            .map_err(|e| e.to_string()),
    }
}

/// The kubelet retries `step` until it succeeds.
async fn retry_until_ok(node: &LabNode, d: &mut Driver, step: Step) -> Result<(), String> {
    let deadline = Instant::now() + SETTLE;
    loop {
        let result = match step {
            Step::Prepare => driver::prepare(&node.home, std::slice::from_ref(&node.claim)).await,
            _ => driver::unprepare(&node.home, std::slice::from_ref(&node.claim)).await,
        };
        match result {
            Ok(()) => return Ok(()),
            Err(e) if Instant::now() > deadline || d.exited() => {
                return Err(failed(
                    node,
                    &format!("the kubelet's retried {step:?} still fails after {SETTLE:?}: {e}"),
                ));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// Waits until every invariant of `stage` holds, or names what does not.
async fn settle(node: &LabNode, d: &mut Driver, stage: Stage, when: &str) -> Result<(), String> {
    let deadline = Instant::now() + SETTLE;
    loop {
        let wrong = violations(node, stage).await;
        if wrong.is_empty() {
            return Ok(());
        }
        if d.exited() || Instant::now() > deadline {
            return Err(failed(
                node,
                &format!("{when}, pod {stage:?}: {}", wrong.join("; ")),
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A violation for the report (one line: it goes into a table), with
/// the driver log's last lines on stderr for whoever looks into it.
fn failed(node: &LabNode, what: &str) -> String {
    eprintln!(
        "crash case: {what}\n--- driver log (last 30 lines) ---\n{}\n---",
        node.home.log_tail(30)
    );
    format!("{what} (the driver's log is on stderr)")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kubelet_retries_what_went_unanswered_and_a_sandbox_outlives_its_plugin() {
        assert_eq!(
            World::after(Step::Prepare, false),
            World {
                stage: Stage::Idle,
                retry: Some(Step::Prepare)
            }
        );
        assert_eq!(World::after(Step::Run, false).stage, Stage::Running);
        assert_eq!(World::after(Step::Stop, false).stage, Stage::Prepared);
        assert_eq!(
            World::after(Step::Unprepare, false),
            World {
                stage: Stage::Prepared,
                retry: Some(Step::Unprepare)
            }
        );
    }

    #[test]
    fn the_rest_of_the_life_follows_the_crashed_step() {
        assert_eq!(
            World::rest(Step::Prepare),
            [Step::Run, Step::Stop, Step::Unprepare]
        );
        assert_eq!(World::rest(Step::Run), [Step::Stop, Step::Unprepare]);
        assert_eq!(World::rest(Step::Unprepare), []);
    }

    #[test]
    fn a_random_death_is_a_kill_in_one_of_the_steps_within_the_bound() {
        let mut rng = Rng::new(7);
        for _ in 0..50 {
            let Death::Kill { step, after } = Death::random(
                &mut rng,
                &[Step::Run, Step::Stop],
                Duration::from_millis(80),
            ) else {
                panic!("not a kill")
            };
            assert!(matches!(step, Step::Run | Step::Stop));
            assert!(after < Duration::from_millis(80));
        }
    }
}
