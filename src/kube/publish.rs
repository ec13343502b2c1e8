//! Keeping the node's ResourceSlices in the API equal to the inventory.
//!
//! Small and idempotent, like a kube-rs controller: render, compare with
//! what was last published, and only when the devices changed bump the pool
//! generation, apply every slice with server-side apply and delete the
//! slices the new render no longer has. Publishing the same inventory twice
//! writes nothing, so a periodic republish never flaps; slices changed or
//! deleted from outside differ from what was applied and are applied again.
//!
//! Unhealthy devices carry a `NoSchedule` taint, or the `unhealthy`
//! attribute where the API server refuses or drops taints
//! ([`crate::kube::taints`]).

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::resource::v1::{Device, ResourceSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use tracing::{info, warn};

use crate::config::NodeConfig;
use crate::health::DeviceHealth;
use crate::inventory::NodeInventory;
use crate::kube::slices::{self, SliceParams};
use crate::kube::taints::{self, TaintMode};

/// Field manager of our server-side applies.
pub const FIELD_MANAGER: &str = "sriov-dra";

/// What one publish did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PublishOutcome {
    /// The devices were already published: nothing was written.
    Unchanged {
        /// The pool generation in effect.
        generation: i64,
    },
    /// New slices were applied.
    Published {
        /// The new pool generation.
        generation: i64,
        /// Slices applied.
        applied: usize,
        /// Stale slices deleted.
        deleted: usize,
    },
}

/// Publishes one node's pool for one driver.
pub struct SlicePublisher {
    api: Api<ResourceSlice>,
    driver: String,
    node: String,
    owner: Option<OwnerReference>,
    /// Devices of the last successful publish, by name, and its generation.
    published: Option<(Vec<Device>, i64)>,
    /// The same devices as the API server stored them (its replies): what
    /// a list must show for the slices to be untouched since.
    stored: Vec<Device>,
    /// Apply even when the devices are unchanged (the owner changed).
    force: bool,
    /// Taints, until the API server refuses or drops them.
    taint_mode: TaintMode,
    /// In the attribute fallback: ask the API server again whether it
    /// takes taints, at the next publish that has a taint to show it.
    retry_taints: bool,
}

/// Why applying the slices failed.
enum ApplyError {
    /// The API server refused or dropped the taints; the message says how.
    TaintsRefused(String),
    /// Anything else.
    Other(anyhow::Error),
}

impl SlicePublisher {
    /// A publisher for `node`'s pool; `owner` (the Node) makes the API
    /// delete the slices with the node.
    pub fn new(
        client: kube::Client,
        config: &NodeConfig,
        node: &str,
        owner: Option<OwnerReference>,
    ) -> Self {
        SlicePublisher {
            api: Api::all(client),
            driver: config.driver_name.clone(),
            node: node.to_string(),
            owner,
            published: None,
            stored: Vec::new(),
            force: false,
            taint_mode: TaintMode::Taints,
            retry_taints: false,
        }
    }

    /// Whether the slices carry the Node as their owner.
    pub fn has_owner(&self) -> bool {
        self.owner.is_some()
    }

    /// How unhealthy devices are marked now.
    pub fn taint_mode(&self) -> TaintMode {
        self.taint_mode
    }

    /// Asks the next publish to try device taints again if unhealthy
    /// devices are marked with the attribute: the API server may have been
    /// upgraded, or its feature gate turned on, since it refused them. The
    /// publish loop calls this every period; the try is a dry-run apply,
    /// so a refusal writes nothing.
    pub fn retry_taints(&mut self) {
        if self.taint_mode == TaintMode::Attribute {
            self.retry_taints = true;
        }
    }

    /// Sets the Node owner, learned after start or re-read because the
    /// Node was deleted and re-created (a new UID: the garbage collector
    /// deletes objects whose owner's UID is gone). The next publish applies
    /// it; the same owner again changes nothing.
    pub fn set_owner(&mut self, owner: OwnerReference) {
        if self.owner.as_ref() != Some(&owner) {
            self.owner = Some(owner);
            self.force = true;
        }
    }

    /// The list selector of this node's and driver's slices (also what the
    /// slice watch uses).
    pub fn selector(&self) -> String {
        format!("spec.nodeName={},spec.driver={}", self.node, self.driver)
    }

    /// Our slices as the API has them, sorted by name.
    async fn existing(&self) -> Result<Vec<ResourceSlice>, kube::Error> {
        let params = ListParams::default().fields(&self.selector());
        let mut items = self.api.list(&params).await?.items;
        items.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
        Ok(items)
    }

    /// [`Self::publish_with_health`] with every device healthy.
    pub async fn publish(
        &mut self,
        inventory: &NodeInventory,
        config: &NodeConfig,
        held: &BTreeSet<String>,
    ) -> anyhow::Result<PublishOutcome> {
        self.publish_with_health(inventory, config, held, &BTreeMap::new())
            .await
    }

    /// Makes the API's slices match `inventory` under `config`, with the
    /// devices `health` finds unhealthy tainted.
    ///
    /// Devices in `held` (prepared for a claim) keep the attributes they
    /// were last published with: while a VF sits in a pod or on vfio-pci its
    /// netdev name, MAC, MTU and driver are the pod's business, and
    /// publishing them would bump the pool on every pod start and stop (and
    /// a `drivers` selector would hide the VF while it is in use). Their
    /// health is still current.
    pub async fn publish_with_health(
        &mut self,
        inventory: &NodeInventory,
        config: &NodeConfig,
        held: &BTreeSet<String>,
        health: &BTreeMap<String, DeviceHealth>,
    ) -> anyhow::Result<PublishOutcome> {
        // One list per cycle: the kubelet deletes a driver's slices while no
        // plugin is registered (at its own restart, say), and an unchanged
        // inventory must then still be published again.
        let mut existing = self.existing().await?;
        let api_generation = pool_generation(&existing);
        let mut in_api = flat_devices(&existing);
        if self.published.is_none() {
            // After our own restart, learn what is published from the API.
            self.published = Some((in_api.clone(), api_generation));
            self.stored = in_api.clone();
        }
        let (last_devices, last_generation) = self.published.clone().unwrap_or_default();
        let marked = |mode: TaintMode, params: &SliceParams| {
            let mut devices =
                current_devices(inventory, config, &params.driver, held, &last_devices);
            for device in &mut devices {
                taints::mark(device, health.get(&device.name), mode, &params.driver);
            }
            devices
        };
        if self.taint_mode == TaintMode::Attribute && self.retry_taints {
            // The slice as the next apply would send it.
            let mut params = SliceParams::new(config, &self.node);
            params.owner = self.owner.clone();
            params.generation = last_generation.max(api_generation) + 1;
            match self
                .taints_taken(marked(TaintMode::Taints, &params), &params)
                .await
            {
                // Nothing unhealthy: nothing to show it yet.
                None => {}
                Some(true) => {
                    info!(
                        "the API server takes device taints now; \
                         marking unhealthy devices with taints instead of the attribute"
                    );
                    self.taint_mode = TaintMode::Taints;
                    self.retry_taints = false;
                }
                Some(false) => {
                    info!(
                        "the API server still does not take device taints; keeping the attribute"
                    );
                    self.retry_taints = false;
                }
            }
        }
        loop {
            let mut params = SliceParams::new(config, &self.node);
            params.owner = self.owner.clone();
            let devices = marked(self.taint_mode, &params);

            let slice_count = slices::slice_count(&devices);
            let expected: Vec<String> = (0..slice_count)
                .map(|i| slices::slice_name(&self.node, &params.driver, i))
                .collect();
            let untouched = existing.len() == slice_count
                && in_api == self.stored
                && existing.iter().all(|s| {
                    s.spec.pool.generation == last_generation
                        && s.metadata
                            .name
                            .as_ref()
                            .is_some_and(|n| expected.contains(n))
                });
            if last_devices == devices && last_generation > 0 && untouched && !self.force {
                return Ok(PublishOutcome::Unchanged {
                    generation: last_generation,
                });
            }

            params.generation = last_generation.max(api_generation) + 1;
            match self.apply(devices, &existing, params).await {
                Ok(outcome) => return Ok(outcome),
                Err(ApplyError::TaintsRefused(why)) if self.taint_mode == TaintMode::Taints => {
                    warn!(
                        %why,
                        attribute = %taints::taint_key(&self.driver, taints::UNHEALTHY_ATTRIBUTE),
                        "the API server does not take device taints (feature gate DRADeviceTaints off?); \
                         marking unhealthy devices with an attribute instead"
                    );
                    self.taint_mode = TaintMode::Attribute;
                    // The slices before the refused one are in the API at
                    // the new generation, some perhaps beyond what the
                    // attribute form needs: list again, so all are applied
                    // anew (at that same generation) and the extra ones
                    // deleted.
                    existing = self.existing().await?;
                    in_api = flat_devices(&existing);
                }
                Err(ApplyError::TaintsRefused(why)) => return Err(anyhow::anyhow!(why)),
                Err(ApplyError::Other(e)) => return Err(e),
            }
        }
    }

    /// Whether the API server takes the taints of `devices` now, asked with
    /// a dry-run apply of the first slice that carries one (nothing is
    /// written either way); `None` when no device carries a taint.
    async fn taints_taken(&self, devices: Vec<Device>, params: &SliceParams) -> Option<bool> {
        let tainted = |d: &Device| d.taints.as_ref().is_some_and(|t| !t.is_empty());
        let rendered = slices::assemble(devices, params);
        let slice = rendered
            .iter()
            .find(|s| s.spec.devices.iter().flatten().any(tainted))?;
        let name = slice.metadata.name.clone().unwrap_or_default();
        let sent = slice.spec.devices.as_deref().unwrap_or_default();
        let dry_run = PatchParams::apply(FIELD_MANAGER).force().dry_run();
        Some(
            match self.api.patch(&name, &dry_run, &Patch::Apply(slice)).await {
                Ok(back) => {
                    !taints::taints_dropped(sent, back.spec.devices.as_deref().unwrap_or_default())
                }
                Err(e) if taints::refuses_taints(&e) => false,
                Err(e) => {
                    warn!(error = %e, slice = %name, "cannot ask the API server about device taints");
                    false
                }
            },
        )
    }

    /// Applies the slices of `devices` at `params.generation`, then deletes
    /// the slices of `existing` the render no longer has.
    async fn apply(
        &mut self,
        devices: Vec<Device>,
        existing: &[ResourceSlice],
        params: SliceParams,
    ) -> Result<PublishOutcome, ApplyError> {
        let generation = params.generation;
        let rendered = slices::assemble(devices.clone(), &params);
        let apply = PatchParams::apply(FIELD_MANAGER).force();
        let mut stored = Vec::with_capacity(devices.len());
        for slice in &rendered {
            let name = slice.metadata.name.clone().unwrap_or_default();
            let sent = slice.spec.devices.as_deref().unwrap_or_default();
            match self.api.patch(&name, &apply, &Patch::Apply(slice)).await {
                Ok(back) => {
                    let back = back.spec.devices.unwrap_or_default();
                    if self.taint_mode == TaintMode::Taints && taints::taints_dropped(sent, &back) {
                        return Err(ApplyError::TaintsRefused(format!(
                            "ResourceSlice {name} was stored without the taints it was sent"
                        )));
                    }
                    stored.extend(back);
                }
                Err(e) if taints::refuses_taints(&e) => {
                    return Err(ApplyError::TaintsRefused(format!(
                        "applying ResourceSlice {name}: {e}"
                    )));
                }
                Err(e) => {
                    return Err(ApplyError::Other(anyhow::anyhow!(
                        "applying ResourceSlice {name}: {e}"
                    )));
                }
            }
        }
        // Delete only after the new generation is in place: the scheduler
        // ignores older generations of a pool once a newer one exists.
        let keep: Vec<String> = rendered
            .iter()
            .filter_map(|s| s.metadata.name.clone())
            .collect();
        let mut deleted = 0;
        for stale in existing.iter().filter_map(|s| s.metadata.name.as_ref()) {
            if !keep.contains(stale) {
                self.api
                    .delete(stale, &DeleteParams::default())
                    .await
                    .map_err(|e| {
                        ApplyError::Other(anyhow::anyhow!(
                            "deleting stale ResourceSlice {stale}: {e}"
                        ))
                    })?;
                deleted += 1;
            }
        }
        stored.sort_by(|a, b| a.name.cmp(&b.name));
        self.stored = stored;
        self.published = Some((devices, generation));
        self.force = false;
        Ok(PublishOutcome::Published {
            generation,
            applied: rendered.len(),
            deleted,
        })
    }
}

/// The devices to publish, sorted by name (which is PCI address order): the
/// offered devices as they are now, except that a held device keeps its
/// last published form.
fn current_devices(
    inventory: &NodeInventory,
    config: &NodeConfig,
    driver: &str,
    held: &BTreeSet<String>,
    last: &[Device],
) -> Vec<Device> {
    let mut by_name: BTreeMap<String, Device> = slices::devices(inventory, config, driver)
        .into_iter()
        .map(|d| (d.name.clone(), d))
        .collect();
    for previous in last.iter().filter(|d| held.contains(&d.name)) {
        by_name.insert(previous.name.clone(), previous.clone());
    }
    by_name.into_values().collect()
}

/// The newest generation of the pool among `slices` (0 for none).
fn pool_generation(slices: &[ResourceSlice]) -> i64 {
    slices
        .iter()
        .map(|s| s.spec.pool.generation)
        .max()
        .unwrap_or(0)
}

/// Every device of `slices`, sorted by name: how they are split into
/// slices follows from the list, so the list alone says what changed.
fn flat_devices(slices: &[ResourceSlice]) -> Vec<Device> {
    let mut devices: Vec<Device> = slices
        .iter()
        .flat_map(|s| s.spec.devices.clone().unwrap_or_default())
        .collect();
    devices.sort_by(|a, b| a.name.cmp(&b.name));
    devices
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::convert::Infallible;
    use std::sync::{Arc, Mutex};

    use kube::client::Body;
    use sriov::fixture::Fixture;

    /// The API's `resourceslices` collection, in memory, with a log of the
    /// writes it received.
    #[derive(Clone, Default)]
    struct SliceApi {
        objects: Arc<Mutex<BTreeMap<String, serde_json::Value>>>,
        writes: Arc<Mutex<Vec<String>>>,
        /// How an API server without device taints answers a slice with
        /// taints: `Some(true)` refuses it (422), `Some(false)` drops them.
        no_taints: Arc<Mutex<Option<bool>>>,
        /// Slices sent with `dryRun=All`: answered, never stored.
        dry_runs: Arc<Mutex<Vec<String>>>,
    }

    impl SliceApi {
        fn handle(
            &self,
            method: &http::Method,
            path: &str,
            query: &str,
            body: &[u8],
        ) -> (u16, serde_json::Value) {
            let name = path
                .strip_prefix("/apis/resource.k8s.io/v1/resourceslices")
                .unwrap_or("")
                .trim_start_matches('/')
                .to_string();
            let mut objects = self.objects.lock().unwrap();
            match *method {
                http::Method::GET => {
                    assert!(
                        query.contains("fieldSelector"),
                        "list must select our node and driver: {query}"
                    );
                    let items: Vec<_> = objects.values().cloned().collect();
                    (
                        200,
                        serde_json::json!({"apiVersion": "resource.k8s.io/v1", "kind": "ResourceSliceList", "metadata": {}, "items": items}),
                    )
                }
                http::Method::PATCH => {
                    assert!(
                        query.contains("fieldManager=sriov-dra") && query.contains("force=true"),
                        "{query}"
                    );
                    let dry_run = query.contains("dryRun=All");
                    if dry_run {
                        self.dry_runs.lock().unwrap().push(name.clone());
                    }
                    let mut obj: serde_json::Value = serde_json::from_slice(body).unwrap();
                    let tainted = obj["spec"]["devices"]
                        .as_array()
                        .is_some_and(|d| d.iter().any(|d| d.get("taints").is_some()));
                    match *self.no_taints.lock().unwrap() {
                        Some(true) if tainted => {
                            return (
                                422,
                                serde_json::json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 422,
                                    "reason": "Invalid",
                                    "message": format!("ResourceSlice.resource.k8s.io \"{name}\" is invalid: spec.devices[0].taints: Forbidden: disabled by feature gate")}),
                            );
                        }
                        Some(false) => {
                            for d in obj["spec"]["devices"].as_array_mut().into_iter().flatten() {
                                d.as_object_mut().map(|d| d.remove("taints"));
                            }
                        }
                        _ => {}
                    }
                    if dry_run {
                        return (200, obj);
                    }
                    self.writes.lock().unwrap().push(format!("apply {name}"));
                    objects.insert(name, obj.clone());
                    (200, obj)
                }
                http::Method::DELETE => {
                    self.writes.lock().unwrap().push(format!("delete {name}"));
                    let obj = objects.remove(&name).unwrap_or_default();
                    (200, obj)
                }
                _ => (405, serde_json::json!({})),
            }
        }

        fn client(&self) -> kube::Client {
            let api = self.clone();
            let service = tower::service_fn(move |req: http::Request<Body>| {
                let api = api.clone();
                async move {
                    let (parts, body) = req.into_parts();
                    let bytes = body.collect_bytes().await.unwrap_or_default();
                    let (status, json) = api.handle(
                        &parts.method,
                        parts.uri.path(),
                        parts.uri.query().unwrap_or(""),
                        &bytes,
                    );
                    let mut resp =
                        http::Response::new(Body::from(serde_json::to_vec(&json).unwrap()));
                    *resp.status_mut() = http::StatusCode::from_u16(status).unwrap();
                    Ok::<_, Infallible>(resp)
                }
            });
            kube::Client::new(service, "default")
        }

        fn take_writes(&self) -> Vec<String> {
            std::mem::take(&mut *self.writes.lock().unwrap())
        }

        fn generations(&self) -> Vec<i64> {
            let objects = self.objects.lock().unwrap();
            objects
                .values()
                .map(|o| o["spec"]["pool"]["generation"].as_i64().unwrap())
                .collect()
        }
    }

    fn inventory(f: Fixture) -> NodeInventory {
        let dir = tempfile::tempdir_in(sriov::fixture::scratch_base()).unwrap();
        f.build(dir.path()).unwrap();
        NodeInventory::discover(dir.path()).unwrap()
    }

    #[tokio::test]
    async fn publishing_twice_writes_once_and_changes_bump_the_generation() {
        let api = SliceApi::default();
        let config = NodeConfig::default();
        let mut p = SlicePublisher::new(api.client(), &config, "node-a", None);
        let inv = inventory(Fixture::ConnectX6Dx);

        let first = p.publish(&inv, &config, &BTreeSet::new()).await.unwrap();
        assert_eq!(
            first,
            PublishOutcome::Published {
                generation: 1,
                applied: 1,
                deleted: 0
            }
        );
        assert_eq!(api.take_writes(), ["apply node-a-sriov-dra-dev-0"]);

        assert_eq!(
            p.publish(&inv, &config, &BTreeSet::new()).await.unwrap(),
            PublishOutcome::Unchanged { generation: 1 }
        );
        assert!(
            api.take_writes().is_empty(),
            "an unchanged inventory writes nothing"
        );

        // A new publisher (driver restart) learns the generation from the API.
        let mut restarted = SlicePublisher::new(api.client(), &config, "node-a", None);
        assert_eq!(
            restarted
                .publish(&inv, &config, &BTreeSet::new())
                .await
                .unwrap(),
            PublishOutcome::Unchanged { generation: 1 }
        );

        let fewer = NodeConfig::parse("selectors: [{pfNames: [\"ens1f0np0\"]}]", "t").unwrap();
        let out = restarted
            .publish(&inv, &fewer, &BTreeSet::new())
            .await
            .unwrap();
        assert_eq!(
            out,
            PublishOutcome::Published {
                generation: 2,
                applied: 1,
                deleted: 0
            }
        );
        assert_eq!(api.generations(), [2]);
    }

    #[tokio::test]
    async fn a_vf_in_use_keeps_its_published_attributes() {
        let api = SliceApi::default();
        let config = NodeConfig::default();
        let mut p = SlicePublisher::new(api.client(), &config, "node-a", None);
        let dir = tempfile::tempdir_in(sriov::fixture::scratch_base()).unwrap();
        Fixture::E810.build(dir.path()).unwrap();
        let before = NodeInventory::discover(dir.path()).unwrap();
        p.publish(&before, &config, &BTreeSet::new()).await.unwrap();
        // The VF went into a pod: its netdev left the host.
        let net = dir.path().join("bus/pci/devices/0000:af:01.0/net");
        sriov::fixture::remove_class_dir(dir.path(), "net", &net).unwrap();
        let in_use = NodeInventory::discover(dir.path()).unwrap();
        let held = BTreeSet::from(["pci-0000-af-01-0".to_string()]);
        assert_eq!(
            p.publish(&in_use, &config, &held).await.unwrap(),
            PublishOutcome::Unchanged { generation: 1 },
            "a pod start does not bump the pool"
        );
        // Released but still without a netdev: now it is published as it is.
        let out = p.publish(&in_use, &config, &BTreeSet::new()).await.unwrap();
        assert_eq!(
            out,
            PublishOutcome::Published {
                generation: 2,
                applied: 1,
                deleted: 0
            }
        );
        let objects = api.objects.lock().unwrap();
        let attrs = &objects["node-a-sriov-dra-dev-0"]["spec"]["devices"][0]["attributes"];
        assert!(attrs.get("sriov.dra.dev/ifName").is_none(), "{attrs}");
    }

    #[tokio::test]
    async fn slices_the_kubelet_wiped_are_published_again() {
        let api = SliceApi::default();
        let config = NodeConfig::default();
        let mut p = SlicePublisher::new(api.client(), &config, "node-a", None);
        let inv = inventory(Fixture::ConnectX6Dx);
        p.publish(&inv, &config, &BTreeSet::new()).await.unwrap();
        // No plugin registered for a moment: the kubelet deletes our slices.
        api.objects.lock().unwrap().clear();
        api.take_writes();
        let out = p.publish(&inv, &config, &BTreeSet::new()).await.unwrap();
        assert_eq!(
            out,
            PublishOutcome::Published {
                generation: 2,
                applied: 1,
                deleted: 0
            }
        );
        assert_eq!(api.take_writes(), ["apply node-a-sriov-dra-dev-0"]);
        assert_eq!(
            p.publish(&inv, &config, &BTreeSet::new()).await.unwrap(),
            PublishOutcome::Unchanged { generation: 2 }
        );
    }

    #[tokio::test]
    async fn an_owner_learned_later_is_applied_once() {
        let api = SliceApi::default();
        let config = NodeConfig::default();
        let mut p = SlicePublisher::new(api.client(), &config, "node-a", None);
        let inv = inventory(Fixture::ConnectX6Dx);
        p.publish(&inv, &config, &BTreeSet::new()).await.unwrap();
        assert!(!p.has_owner());
        p.set_owner(OwnerReference {
            api_version: "v1".into(),
            kind: "Node".into(),
            name: "node-a".into(),
            uid: "node-uid".into(),
            ..Default::default()
        });
        let out = p.publish(&inv, &config, &BTreeSet::new()).await.unwrap();
        assert_eq!(
            out,
            PublishOutcome::Published {
                generation: 2,
                applied: 1,
                deleted: 0
            }
        );
        let owner =
            api.objects.lock().unwrap()["node-a-sriov-dra-dev-0"]["metadata"]["ownerReferences"][0]
                ["uid"]
                .clone();
        assert_eq!(owner, "node-uid");
        assert_eq!(
            p.publish(&inv, &config, &BTreeSet::new()).await.unwrap(),
            PublishOutcome::Unchanged { generation: 2 }
        );
    }

    #[tokio::test]
    async fn a_recreated_node_gives_the_slices_its_new_uid_and_the_same_node_changes_nothing() {
        let api = SliceApi::default();
        let config = NodeConfig::default();
        let node = |uid: &str| OwnerReference {
            api_version: "v1".into(),
            kind: "Node".into(),
            name: "node-a".into(),
            uid: uid.into(),
            ..Default::default()
        };
        let mut p = SlicePublisher::new(api.client(), &config, "node-a", Some(node("uid-1")));
        let inv = inventory(Fixture::ConnectX6Dx);
        p.publish(&inv, &config, &BTreeSet::new()).await.unwrap();

        // Re-read every round: the same Node writes nothing.
        p.set_owner(node("uid-1"));
        assert_eq!(
            p.publish(&inv, &config, &BTreeSet::new()).await.unwrap(),
            PublishOutcome::Unchanged { generation: 1 }
        );
        // The Node was deleted and re-created: its new UID is applied.
        p.set_owner(node("uid-2"));
        assert!(matches!(
            p.publish(&inv, &config, &BTreeSet::new()).await.unwrap(),
            PublishOutcome::Published { applied: 1, .. }
        ));
        let owner =
            api.objects.lock().unwrap()["node-a-sriov-dra-dev-0"]["metadata"]["ownerReferences"][0]
                ["uid"]
                .clone();
        assert_eq!(owner, "uid-2");
    }

    #[tokio::test]
    async fn slices_the_render_no_longer_has_are_deleted_after_the_apply() {
        let api = SliceApi::default();
        let config = NodeConfig::default();
        let mut p = SlicePublisher::new(api.client(), &config, "node-a", None);
        let scale = inventory(Fixture::Scale2048);
        p.publish(&scale, &config, &BTreeSet::new()).await.unwrap();
        assert_eq!(api.take_writes().len(), 16);
        let mut restarted = SlicePublisher::new(api.client(), &config, "node-a", None);
        assert_eq!(
            restarted
                .publish(&scale, &config, &BTreeSet::new())
                .await
                .unwrap(),
            PublishOutcome::Unchanged { generation: 1 },
            "16 slices read back from the API are the same pool"
        );

        let out = p
            .publish(&inventory(Fixture::ConnectX6Dx), &config, &BTreeSet::new())
            .await
            .unwrap();
        assert_eq!(
            out,
            PublishOutcome::Published {
                generation: 2,
                applied: 1,
                deleted: 15
            }
        );
        let writes = api.take_writes();
        assert_eq!(writes[0], "apply node-a-sriov-dra-dev-0");
        assert!(writes[1..].iter().all(|w| w.starts_with("delete ")));
        assert_eq!(api.generations(), [2]);
    }

    fn link_down(inv: &NodeInventory, pf: &str) -> BTreeMap<String, DeviceHealth> {
        inv.devices
            .iter()
            .filter(|d| d.pf_name.as_deref() == Some(pf))
            .map(|d| {
                let problem = crate::health::Problem::PfLinkDown {
                    pf: pf.into(),
                    operstate: "down".into(),
                };
                let since = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000);
                (
                    d.name(),
                    DeviceHealth {
                        problem: Some(problem),
                        since,
                    },
                )
            })
            .collect()
    }

    fn attribute(api: &SliceApi, device: &str) -> Option<serde_json::Value> {
        let objects = api.objects.lock().unwrap();
        objects
            .values()
            .flat_map(|s| s["spec"]["devices"].as_array().cloned().unwrap_or_default())
            .find(|d| d["name"] == device)
            .map(|d| d["attributes"]["sriov.dra.dev/unhealthy"].clone())
    }

    #[tokio::test]
    async fn unhealthy_devices_are_tainted_once_and_a_tainted_pool_packs_64_per_slice() {
        let api = SliceApi::default();
        let config = NodeConfig::default();
        let mut p = SlicePublisher::new(api.client(), &config, "node-a", None);
        let scale = inventory(Fixture::Scale2048);
        let pf = scale
            .devices
            .iter()
            .find_map(|d| d.pf_name.clone())
            .unwrap();
        let health = link_down(&scale, &pf);
        assert!(!health.is_empty());
        let held = BTreeSet::new();
        let out = p
            .publish_with_health(&scale, &config, &held, &health)
            .await
            .unwrap();
        assert!(
            matches!(out, PublishOutcome::Published { applied: 32, .. }),
            "{out:?}"
        );
        assert_eq!(
            p.publish_with_health(&scale, &config, &held, &health)
                .await
                .unwrap(),
            PublishOutcome::Unchanged { generation: 1 },
            "the same health writes nothing: timeAdded does not move"
        );
        // Recovery: back to 128 per slice, the extra slices deleted.
        let out = p.publish(&scale, &config, &held).await.unwrap();
        assert_eq!(
            out,
            PublishOutcome::Published {
                generation: 2,
                applied: 16,
                deleted: 16
            }
        );
    }

    #[tokio::test]
    async fn an_api_server_refusing_or_dropping_taints_gets_the_attribute_instead() {
        for refuses in [true, false] {
            let api = SliceApi::default();
            *api.no_taints.lock().unwrap() = Some(refuses);
            let config = NodeConfig::default();
            let mut p = SlicePublisher::new(api.client(), &config, "node-a", None);
            let inv = inventory(Fixture::ConnectX6Dx);
            let health = link_down(&inv, "ens1f1np1");
            let held = BTreeSet::new();
            p.publish_with_health(&inv, &config, &held, &health)
                .await
                .unwrap();
            assert_eq!(p.taint_mode(), TaintMode::Attribute, "refuses: {refuses}");
            assert_eq!(
                attribute(&api, "pci-0000-3b-02-1"),
                Some(serde_json::json!({"string": "pf-link-down"}))
            );
            assert_eq!(
                attribute(&api, "pci-0000-3b-00-2"),
                Some(serde_json::Value::Null),
                "a VF of the other PF"
            );
            assert_eq!(
                p.publish_with_health(&inv, &config, &held, &health)
                    .await
                    .unwrap(),
                PublishOutcome::Unchanged { generation: 1 }
            );
            p.publish(&inv, &config, &held).await.unwrap();
            assert_eq!(
                attribute(&api, "pci-0000-3b-02-1"),
                Some(serde_json::Value::Null)
            );
        }
    }
    fn taint_keys(api: &SliceApi, device: &str) -> Vec<serde_json::Value> {
        let objects = api.objects.lock().unwrap();
        objects
            .values()
            .flat_map(|s| s["spec"]["devices"].as_array().cloned().unwrap_or_default())
            .find(|d| d["name"] == device)
            .and_then(|d| d["taints"].as_array().cloned())
            .unwrap_or_default()
            .iter()
            .map(|t| t["key"].clone())
            .collect()
    }

    #[tokio::test]
    async fn the_fallback_tries_taints_again_when_asked_and_switches_back_once_they_are_taken() {
        for refuses in [true, false] {
            let api = SliceApi::default();
            *api.no_taints.lock().unwrap() = Some(refuses);
            let config = NodeConfig::default();
            let mut p = SlicePublisher::new(api.client(), &config, "node-a", None);
            let inv = inventory(Fixture::ConnectX6Dx);
            let health = link_down(&inv, "ens1f1np1");
            let held = BTreeSet::new();
            let publish = async |p: &mut SlicePublisher| {
                p.publish_with_health(&inv, &config, &held, &health)
                    .await
                    .unwrap()
            };
            publish(&mut p).await;
            assert_eq!(p.taint_mode(), TaintMode::Attribute);
            api.take_writes();

            // Still refused: asked with a dry run, nothing written.
            p.retry_taints();
            assert_eq!(
                publish(&mut p).await,
                PublishOutcome::Unchanged { generation: 1 }
            );
            assert_eq!(*api.dry_runs.lock().unwrap(), ["node-a-sriov-dra-dev-0"]);
            assert_eq!(p.taint_mode(), TaintMode::Attribute, "refuses: {refuses}");
            assert!(api.take_writes().is_empty());
            // Asked once per retry, not on every publish.
            publish(&mut p).await;
            assert_eq!(api.dry_runs.lock().unwrap().len(), 1);

            // The feature gate is turned on: the next retry switches back.
            *api.no_taints.lock().unwrap() = None;
            publish(&mut p).await;
            assert_eq!(p.taint_mode(), TaintMode::Attribute, "only when asked");
            p.retry_taints();
            assert_eq!(
                publish(&mut p).await,
                PublishOutcome::Published {
                    generation: 2,
                    applied: 1,
                    deleted: 0
                }
            );
            assert_eq!(p.taint_mode(), TaintMode::Taints);
            assert_eq!(api.dry_runs.lock().unwrap().len(), 2);
            assert_eq!(
                taint_keys(&api, "pci-0000-3b-02-1"),
                ["sriov.dra.dev/pf-link-down"]
            );
            assert_eq!(
                attribute(&api, "pci-0000-3b-02-1"),
                Some(serde_json::Value::Null),
                "the attribute is gone with the switch"
            );
            assert_eq!(
                publish(&mut p).await,
                PublishOutcome::Unchanged { generation: 2 }
            );
        }
    }

    #[tokio::test]
    async fn a_retry_with_nothing_unhealthy_waits_for_a_taint_to_show() {
        let api = SliceApi::default();
        *api.no_taints.lock().unwrap() = Some(true);
        let config = NodeConfig::default();
        let mut p = SlicePublisher::new(api.client(), &config, "node-a", None);
        let inv = inventory(Fixture::E810);
        let held = BTreeSet::new();
        let health = link_down(&inv, "ens3f0");
        p.publish_with_health(&inv, &config, &held, &health)
            .await
            .unwrap();
        assert_eq!(p.taint_mode(), TaintMode::Attribute);
        p.publish(&inv, &config, &held).await.unwrap();

        *api.no_taints.lock().unwrap() = None;
        p.retry_taints();
        p.publish(&inv, &config, &held).await.unwrap();
        assert!(api.dry_runs.lock().unwrap().is_empty(), "no taint to try");
        assert_eq!(p.taint_mode(), TaintMode::Attribute);
        // The link goes down again: the pending retry is made then.
        p.publish_with_health(&inv, &config, &held, &health)
            .await
            .unwrap();
        assert_eq!(api.dry_runs.lock().unwrap().len(), 1);
        assert_eq!(p.taint_mode(), TaintMode::Taints);
        assert_eq!(
            taint_keys(&api, "pci-0000-af-01-0"),
            ["sriov.dra.dev/pf-link-down"]
        );
    }

    #[tokio::test]
    async fn a_refusal_after_some_slices_were_applied_leaves_one_pool_generation() {
        // Tainted, the pool packs 64 devices per slice: 28 slices are
        // applied before the one with the taint is refused. The attribute
        // form needs 16 of 128: the other 12 must go, and all 16 must be
        // at one generation, also for a restarted driver (which starts
        // with taints again while the API holds the attribute form).
        let api = SliceApi::default();
        *api.no_taints.lock().unwrap() = Some(true);
        let config = NodeConfig::default();
        let scale = inventory(Fixture::Scale2048);
        let last_pf = scale
            .devices
            .iter()
            .rev()
            .find_map(|d| d.pf_name.clone())
            .unwrap();
        let health = link_down(&scale, &last_pf);
        let held = BTreeSet::new();
        let mut first = SlicePublisher::new(api.client(), &config, "node-a", None);
        first
            .publish_with_health(&scale, &config, &held, &health)
            .await
            .unwrap();
        let one_pool = |api: &SliceApi| {
            let objects = api.objects.lock().unwrap();
            let generations: BTreeSet<i64> = objects
                .values()
                .map(|o| o["spec"]["pool"]["generation"].as_i64().unwrap())
                .collect();
            let devices: usize = objects
                .values()
                .map(|o| o["spec"]["devices"].as_array().map_or(0, Vec::len))
                .sum();
            assert_eq!((objects.len(), devices), (16, 2048), "{generations:?}");
            assert_eq!(generations.len(), 1, "{generations:?}");
        };
        one_pool(&api);
        let mut restarted = SlicePublisher::new(api.client(), &config, "node-a", None);
        restarted
            .publish_with_health(&scale, &config, &held, &health)
            .await
            .unwrap();
        assert_eq!(restarted.taint_mode(), TaintMode::Attribute);
        one_pool(&api);
    }
}
