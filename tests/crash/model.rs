//! What the kubelet, the runtime and the API believe about each pod: the
//! harness's model of the world, against which the driver's state is
//! checked after every restart.

use crate::node::{PodSpec, claim_json};
use sriov_dra::testing::fake_api::FakeApi;

/// Where a pod is in its life, as the kubelet and the runtime see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Its claim exists and is not prepared.
    Idle,
    /// Its claim is prepared; no sandbox runs.
    Prepared,
    /// Its sandbox runs: the runtime's RunPodSandbox was answered OK.
    Running,
    /// Its sandbox stopped; the claim is still prepared.
    Stopped,
}

/// A kubelet call that did not get its answer (the driver died): the
/// kubelet retries it until it does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pending {
    /// NodePrepareResources of the pod's claim.
    Prepare,
    /// NodeUnprepareResources of the pod's claim.
    Unprepare,
}

/// A claim as the kubelet names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimId {
    /// Its name (a new one after a deletion).
    pub name: String,
    /// Its UID.
    pub uid: String,
}

/// One pod and its current claims.
#[derive(Debug, Clone)]
pub struct PodState {
    /// What the pod asks for.
    pub spec: PodSpec,
    /// Its claims, by the claim numbers of its devices. The kubelet
    /// prepares and unprepares them together.
    pub claims: Vec<ClaimId>,
    generation: u32,
    /// Where it is.
    pub stage: Stage,
    /// A kubelet call still to be retried.
    pub pending: Option<Pending>,
}

/// Every pod, and the claims deleted while the driver was down.
pub struct World {
    /// The pods, in the order of the node's namespaces.
    pub pods: Vec<PodState>,
    /// UIDs of claims deleted from the API without an unprepare: recovery
    /// must release them.
    pub deleted: Vec<String>,
}

impl World {
    /// Each pod idle with its first claims in the API.
    pub fn new(specs: Vec<PodSpec>, api: &FakeApi) -> World {
        let pods = specs
            .into_iter()
            .map(|spec| {
                let mut pod = PodState {
                    claims: Vec::new(),
                    spec,
                    generation: 0,
                    stage: Stage::Idle,
                    pending: None,
                };
                pod.new_claims(api);
                pod
            })
            .collect();
        World {
            pods,
            deleted: Vec::new(),
        }
    }

    /// Pod `i`'s claims are deleted from the API while still prepared,
    /// and the pod gets new ones (the kubelet never unprepares the old).
    pub fn replace_claims(&mut self, i: usize, api: &FakeApi) {
        let pod = &mut self.pods[i];
        for claim in &pod.claims {
            api.delete_claim(crate::node::NAMESPACE, &claim.name);
            self.deleted.push(claim.uid.clone());
        }
        pod.generation += 1;
        pod.stage = Stage::Idle;
        pod.pending = None;
        pod.new_claims(api);
    }
}

impl PodState {
    /// Claims of this generation, put in the API.
    fn new_claims(&mut self, api: &FakeApi) {
        self.claims = (0..self.spec.claims())
            .map(|n| {
                let id = ClaimId {
                    name: format!("{}-{n}-claim-{}", self.spec.name, self.generation),
                    uid: format!("uid-{}-{n}-{}", self.spec.name, self.generation),
                };
                api.put_claim(&claim_json(&self.spec, n, &id.name, &id.uid));
                id
            })
            .collect();
    }
}

/// A small deterministic generator (xorshift64*), so a failing run can be
/// repeated with its printed seed.
pub struct Rng(u64);

impl Rng {
    /// Seeded; a zero seed is moved off zero.
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    /// The next number below `n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
    }

    /// True with probability `percent` / 100.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}
