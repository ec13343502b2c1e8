//! The Helm chart (`charts/sriov-dra`) held against the driver, without
//! helm: the values and their schema, the node config the chart renders,
//! the RBAC rules against the API calls the driver really makes, and the
//! examples against the driver's own parsers. The chart and the driver
//! cannot drift apart unnoticed.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::resource::v1::{
    DeviceAllocationConfiguration, OpaqueDeviceConfiguration, ResourceClaimTemplate,
};
use k8s_openapi::apimachinery::pkg::runtime::RawExtension;
use serde_json::{Value, json};
use sriov_dra::config::NodeConfig;

mod common;

use common::{chart_dir, example_manifests, example_values_files, read};

fn yaml_file(path: &Path) -> Value {
    serde_yaml::from_str(&read(path)).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn schema() -> Value {
    serde_json::from_str(&read(&chart_dir().join("values.schema.json"))).unwrap()
}

fn default_values() -> Value {
    yaml_file(&chart_dir().join("values.yaml"))
}

/// Helm's merge of a values file over the chart's defaults: maps merge key
/// by key, everything else (lists too) is replaced.
fn merged(base: &Value, over: &Value) -> Value {
    match (base, over) {
        (Value::Object(b), Value::Object(o)) => {
            let mut out = b.clone();
            for (k, v) in o {
                let next = match b.get(k) {
                    Some(bv) => merged(bv, v),
                    None => v.clone(),
                };
                out.insert(k.clone(), next);
            }
            Value::Object(out)
        }
        (_, Value::Null) => base.clone(),
        _ => over.clone(),
    }
}

/// The values of every release the examples describe, and the defaults.
fn every_values() -> Vec<(String, Value)> {
    let defaults = default_values();
    let mut all = vec![("values.yaml".to_string(), defaults.clone())];
    for f in example_values_files() {
        all.push((
            f.file_name().unwrap().to_string_lossy().into_owned(),
            merged(&defaults, &yaml_file(&f)),
        ));
    }
    all
}

// ---------------------------------------------------------------------------
// A minimal strict JSON Schema checker: exactly the keywords
// values.schema.json uses. A keyword it does not know fails the test, so the
// schema cannot grow a rule that nothing here checks.

const KNOWN_KEYWORDS: &[&str] = &[
    "$schema",
    "title",
    "description",
    "definitions",
    "$ref",
    "type",
    "properties",
    "additionalProperties",
    "required",
    "enum",
    "items",
    "pattern",
    "minimum",
    "maximum",
    "minLength",
    "maxLength",
    "minItems",
    "minProperties",
    "maxProperties",
    "oneOf",
];

fn type_matches(ty: &str, v: &Value) -> bool {
    match ty {
        "object" => v.is_object(),
        "array" => v.is_array(),
        "string" => v.is_string(),
        "boolean" => v.is_boolean(),
        "number" => v.is_number(),
        "integer" => v.is_i64() || v.is_u64(),
        "null" => v.is_null(),
        other => panic!("unknown schema type {other}"),
    }
}

fn check(root: &Value, schema: &Value, v: &Value, path: &str, errors: &mut Vec<String>) {
    let s = schema.as_object().expect("a schema is an object");
    for k in s.keys() {
        assert!(
            KNOWN_KEYWORDS.contains(&k.as_str()),
            "schema keyword {k} at {path} is not checked here"
        );
    }
    if let Some(r) = s.get("$ref").and_then(Value::as_str) {
        let name = r.strip_prefix("#/definitions/").expect("local $ref");
        check(root, &root["definitions"][name], v, path, errors);
        return;
    }
    if let Some(ty) = s.get("type") {
        let types: Vec<&str> = match ty {
            Value::String(t) => vec![t.as_str()],
            Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
            _ => panic!("bad type at {path}"),
        };
        if !types.iter().any(|t| type_matches(t, v)) {
            errors.push(format!("{path}: {v} is not of type {}", types.join(" or ")));
            return;
        }
    }
    if let Some(options) = s.get("enum").and_then(Value::as_array)
        && !options.contains(v)
    {
        errors.push(format!(
            "{path}: {v} is not one of {}",
            Value::from(options.clone())
        ));
    }
    if let Some(text) = v.as_str() {
        if let Some(p) = s.get("pattern").and_then(Value::as_str)
            && !regex::Regex::new(p).unwrap().is_match(text)
        {
            errors.push(format!("{path}: {text:?} does not match {p}"));
        }
        let len = text.chars().count() as u64;
        if s.get("minLength")
            .and_then(Value::as_u64)
            .is_some_and(|m| len < m)
        {
            errors.push(format!("{path}: {text:?} is too short"));
        }
        if s.get("maxLength")
            .and_then(Value::as_u64)
            .is_some_and(|m| len > m)
        {
            errors.push(format!("{path}: {text:?} is too long"));
        }
    }
    if let Some(n) = v.as_f64() {
        if s.get("minimum")
            .and_then(Value::as_f64)
            .is_some_and(|m| n < m)
        {
            errors.push(format!("{path}: {n} is below the minimum {}", s["minimum"]));
        }
        if s.get("maximum")
            .and_then(Value::as_f64)
            .is_some_and(|m| n > m)
        {
            errors.push(format!("{path}: {n} is above the maximum {}", s["maximum"]));
        }
    }
    if let Some(items) = v.as_array() {
        if s.get("minItems")
            .and_then(Value::as_u64)
            .is_some_and(|m| (items.len() as u64) < m)
        {
            errors.push(format!("{path}: fewer than {} items", s["minItems"]));
        }
        if let Some(item_schema) = s.get("items") {
            for (i, item) in items.iter().enumerate() {
                check(root, item_schema, item, &format!("{path}[{i}]"), errors);
            }
        }
    }
    if let Some(obj) = v.as_object() {
        let count = obj.len() as u64;
        if s.get("minProperties")
            .and_then(Value::as_u64)
            .is_some_and(|m| count < m)
        {
            errors.push(format!(
                "{path}: needs at least {} keys",
                s["minProperties"]
            ));
        }
        if s.get("maxProperties")
            .and_then(Value::as_u64)
            .is_some_and(|m| count > m)
        {
            errors.push(format!(
                "{path}: allows at most {} keys",
                s["maxProperties"]
            ));
        }
        for req in s
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let req = req.as_str().unwrap();
            if !obj.contains_key(req) {
                errors.push(format!("{path}: missing required key {req:?}"));
            }
        }
        let props = s.get("properties").and_then(Value::as_object);
        for (k, child) in obj {
            let child_path = if path.is_empty() {
                k.clone()
            } else {
                format!("{path}.{k}")
            };
            match (props.and_then(|p| p.get(k)), s.get("additionalProperties")) {
                (Some(prop), _) => check(root, prop, child, &child_path, errors),
                (None, Some(Value::Bool(false))) => {
                    errors.push(format!("{child_path}: unknown key {k:?}"))
                }
                (None, Some(extra @ Value::Object(_))) => {
                    check(root, extra, child, &child_path, errors)
                }
                (None, _) => {}
            }
        }
    }
    if let Some(options) = s.get("oneOf").and_then(Value::as_array) {
        let matching = options
            .iter()
            .filter(|o| {
                let mut e = Vec::new();
                check(root, o, v, path, &mut e);
                e.is_empty()
            })
            .count();
        if matching != 1 {
            errors.push(format!(
                "{path}: must match exactly one of {} (matches {matching})",
                Value::from(options.clone())
            ));
        }
    }
}

fn validate(values: &Value) -> Vec<String> {
    let schema = schema();
    let mut errors = Vec::new();
    check(&schema, &schema, values, "", &mut errors);
    errors
}

#[test]
fn default_values_and_every_example_values_file_validate() {
    for (name, values) in every_values() {
        assert_eq!(validate(&values), Vec::<String>::new(), "{name}");
    }
}

#[test]
fn every_object_in_the_schema_refuses_unknown_keys() {
    fn walk(s: &Value, path: &str, open: &mut Vec<String>) {
        match s {
            Value::Object(o) => {
                if o.get("type") == Some(&json!("object")) {
                    match o.get("additionalProperties") {
                        Some(Value::Bool(false)) | Some(Value::Object(_)) => {}
                        _ => open.push(path.to_string()),
                    }
                }
                for (k, v) in o {
                    walk(v, &format!("{path}/{k}"), open);
                }
            }
            Value::Array(a) => {
                for (i, v) in a.iter().enumerate() {
                    walk(v, &format!("{path}/{i}"), open);
                }
            }
            _ => {}
        }
    }
    let mut open = Vec::new();
    walk(&schema(), "", &mut open);
    // Helm's `global` belongs to parent charts; affinity's three parts are
    // Kubernetes types the API server checks.
    let allowed = [
        "/properties/global",
        "/properties/affinity/properties/nodeAffinity",
        "/properties/affinity/properties/podAffinity",
        "/properties/affinity/properties/podAntiAffinity",
    ];
    open.retain(|p| !allowed.contains(&p.as_str()));
    assert!(open.is_empty(), "objects that accept any key: {open:?}");
}

#[test]
fn misspelt_and_mistyped_values_are_refused_naming_the_key() {
    let cases: &[(&str, Value, &str)] = &[
        ("top-level typo", json!({"nodeConfg": {}}), "nodeConfg"),
        (
            "selector typo",
            json!({"nodeConfig": {"selectors": [{"vendor": ["15b3"]}]}}),
            "nodeConfig.selectors[0].vendor",
        ),
        (
            "numVfs as a string",
            json!({"nodeConfig": {"pfPolicies": [{"pfName": "ens1f0", "numVfs": "8"}]}}),
            "nodeConfig.pfPolicies[0].numVfs",
        ),
        (
            "pfPolicy with both PF keys",
            json!({"nodeConfig": {"pfPolicies": [{"pfName": "ens1f0", "pciAddress": "0000:3b:00.0", "numVfs": 8}]}}),
            "nodeConfig.pfPolicies[0]",
        ),
        (
            "VF range",
            json!({"nodeConfig": {"selectors": [{"pfNames": ["ens1f0#3-"]}]}}),
            "nodeConfig.selectors[0].pfNames[0]",
        ),
        (
            "empty selector",
            json!({"nodeConfig": {"selectors": [{}]}}),
            "nodeConfig.selectors[0]",
        ),
        (
            "class VLAN out of range",
            json!({"deviceClasses": {"netdevice": {"vfConfig": {"vlan": 5000}}}}),
            "deviceClasses.netdevice.vfConfig.vlan",
        ),
        (
            "class VfConfig typo",
            json!({"deviceClasses": {"rdma": {"vfConfig": {"rdma": {"exlusive": true}}}}}),
            "deviceClasses.rdma.vfConfig.rdma.exlusive",
        ),
        (
            "class policy typo",
            json!({"deviceClasses": {"netdevice": {"vfPolicy": {"alowedVlans": ["100-199"]}}}}),
            "deviceClasses.netdevice.vfPolicy.alowedVlans",
        ),
        (
            "class policy VLAN range",
            json!({"deviceClasses": {"netdevice": {"vfPolicy": {"allowedVlans": ["100-"]}}}}),
            "deviceClasses.netdevice.vfPolicy.allowedVlans[0]",
        ),
        (
            "privileged as a string",
            json!({"securityContext": {"privileged": "yes"}}),
            "securityContext.privileged",
        ),
        (
            "pull policy",
            json!({"image": {"pullPolicy": "Sometimes"}}),
            "image.pullPolicy",
        ),
        (
            "toleration typo",
            json!({"tolerations": [{"key": "a", "efect": "NoSchedule"}]}),
            "tolerations[0].efect",
        ),
        (
            "pool subnet without prefix",
            json!({"nodeConfig": {"ipam": {"pools": [{"name": "fh", "scope": "node", "subnets": [{"subnet": "10.1.0.0"}]}]}}}),
            "nodeConfig.ipam.pools[0].subnets[0].subnet",
        ),
        (
            "debug address without port",
            json!({"nodeConfig": {"debugAddress": "127.0.0.1"}}),
            "nodeConfig.debugAddress",
        ),
        (
            "nodeName is per node, not per release",
            json!({"nodeConfig": {"nodeName": "worker-1"}}),
            "nodeConfig.nodeName",
        ),
    ];
    for (what, change, key) in cases {
        let values = merged(&default_values(), change);
        let errors = validate(&values);
        assert!(
            errors.iter().any(|e| e.starts_with(&format!("{key}:"))),
            "{what}: expected an error naming {key}, got {errors:?}"
        );
    }
}

// ---------------------------------------------------------------------------
// The node config: what configmap.yaml renders is `toYaml .Values.nodeConfig`,
// so values' nodeConfig is exactly the file the driver reads.

#[test]
fn the_configmap_is_the_nodeconfig_subtree_and_the_daemonset_reads_it() {
    let cm = read(&chart_dir().join("templates/configmap.yaml"));
    assert!(
        cm.contains("node-config.yaml: |\n    {{- toYaml .Values.nodeConfig | nindent 4 }}"),
        "{cm}"
    );
    let ds = read(&chart_dir().join("templates/daemonset.yaml"));
    for needle in [
        r#"args: ["run", "--config", "/etc/sriov-dra/node-config.yaml"]"#,
        "mountPath: /etc/sriov-dra",
        "fieldPath: spec.nodeName",
        "path: /healthz",
        "path: /readyz",
        "hostNetwork: true",
        "mountPropagation: HostToContainer",
        "terminationGracePeriodSeconds:",
    ] {
        assert!(ds.contains(needle), "daemonset.yaml lacks {needle:?}");
    }
}

#[test]
fn the_rendered_node_config_parses_with_the_driver_parser() {
    for (name, values) in every_values() {
        let text = serde_yaml::to_string(&values["nodeConfig"]).unwrap();
        let config = NodeConfig::parse(&text, &name).unwrap_or_else(|e| panic!("{e:#}"));
        assert!(config.node_name.is_none(), "{name}: NODE_NAME decides");
    }
}

/// The fields a strict serde struct expects, read from its own error for an
/// unknown field ("unknown field `x`, expected one of `a`, `b`").
fn expected_fields(parse_error: &str) -> BTreeSet<String> {
    let list = parse_error
        .split("expected ")
        .nth(1)
        .unwrap_or_else(|| panic!("no field list in {parse_error}"));
    // `a`, `b` or `c`: every other piece between backticks is a name.
    list.split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect()
}

fn schema_keys(schema: &Value, pointer: &str) -> BTreeSet<String> {
    schema
        .pointer(pointer)
        .and_then(Value::as_object)
        .unwrap_or_else(|| panic!("no {pointer} in the schema"))
        .keys()
        .cloned()
        .collect()
}

#[test]
fn the_schema_has_exactly_the_driver_fields() {
    let s = schema();
    let fields = |yaml: &str| {
        expected_fields(&format!(
            "{:#}",
            NodeConfig::parse(yaml, "probe").unwrap_err()
        ))
    };
    let mut node = fields("zzUnknown: 1");
    assert!(node.remove("nodeName"), "{node:?}");
    assert_eq!(
        node,
        schema_keys(&s, "/properties/nodeConfig/properties"),
        "nodeConfig (nodeName comes from NODE_NAME)"
    );
    assert_eq!(
        fields("selectors: [{zzUnknown: 1}]"),
        schema_keys(&s, "/definitions/selector/properties")
    );
    assert_eq!(
        fields("pfPolicies: [{pfName: ens1f0, numVfs: 1, zzUnknown: 1}]"),
        schema_keys(&s, "/definitions/pfPolicy/properties")
    );
    assert_eq!(
        fields("ipam: {zzUnknown: 1}"),
        schema_keys(&s, "/properties/nodeConfig/properties/ipam/properties")
    );
    assert_eq!(
        fields("ipam: {pools: [{name: a, subnets: [], zzUnknown: 1}]}"),
        schema_keys(&s, "/definitions/pool/properties")
    );
    assert_eq!(
        fields("ipam: {pools: [{name: a, subnets: [{subnet: 10.0.0.0/24, zzUnknown: 1}]}]}"),
        schema_keys(&s, "/definitions/pool/properties/subnets/items/properties")
    );
    assert_eq!(
        fields("ipam: {pools: [{name: a, subnets: [], routes: [{dst: 0.0.0.0/0, zzUnknown: 1}]}]}"),
        schema_keys(&s, "/definitions/route/properties")
    );
    // A class's vfConfig is a VfConfig without apiVersion and kind (the
    // chart adds them).
    let err = serde_json::from_value::<sriov_dra::apis::VfConfig>(
        json!({"apiVersion": "a", "kind": "b", "zzUnknown": 1}),
    )
    .unwrap_err();
    let mut vf = expected_fields(&err.to_string());
    assert!(vf.remove("apiVersion") && vf.remove("kind"));
    assert_eq!(vf, schema_keys(&s, "/definitions/vfConfig/properties"));
    // A class's vfPolicy is a VfPolicy without apiVersion and kind, and
    // claimMaySet names exactly the driver's fields.
    let err = serde_json::from_value::<sriov_dra::apis::VfPolicy>(
        json!({"apiVersion": "a", "kind": "b", "zzUnknown": 1}),
    )
    .unwrap_err();
    let mut policy = expected_fields(&err.to_string());
    assert!(policy.remove("apiVersion") && policy.remove("kind"));
    assert_eq!(policy, schema_keys(&s, "/definitions/vfPolicy/properties"));
    let err =
        serde_json::from_value::<sriov_dra::apis::ClaimField>(json!("zzUnknown")).unwrap_err();
    let may_set: BTreeSet<String> = s
        .pointer("/definitions/vfPolicy/properties/claimMaySet/items/enum")
        .and_then(Value::as_array)
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    assert_eq!(expected_fields(&err.to_string()), may_set);
    assert_eq!(
        schema_keys(&s, "/definitions/vfConfig/properties/ipam/properties"),
        BTreeSet::from(["pool".to_string(), "static".to_string()])
    );
}

// ---------------------------------------------------------------------------
// DeviceClasses and examples.

/// What the slices this driver publishes carry: every attribute name of the
/// golden slice files (the wire contract).
fn published_attributes() -> BTreeSet<String> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/kube/testdata");
    let mut names = BTreeSet::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("yaml") {
            continue;
        }
        for doc in serde_yaml::Deserializer::from_str(&read(&path)) {
            let slice: Value = serde::Deserialize::deserialize(doc).unwrap();
            for device in slice["spec"]["devices"].as_array().into_iter().flatten() {
                if let Some(attrs) = device["attributes"].as_object() {
                    names.extend(attrs.keys().cloned());
                }
            }
        }
    }
    assert!(names.contains("sriov.dra.dev/isVf"), "{names:?}");
    names
}

/// The classes the chart creates with `values`, as `(name, the parameters
/// of its config entries: VfConfig, then VfPolicy when one is given)`,
/// mirroring deviceclasses.yaml (which renders a VfConfig entry only when it
/// sets more than apiVersion and kind; an extra empty one changes nothing).
fn device_classes(values: &Value) -> Vec<(String, Vec<Value>)> {
    let driver = values["nodeConfig"]["driverName"].as_str().unwrap();
    let mut out = Vec::new();
    for (key, default_name, forced) in [
        ("netdevice", "sriov-vf", json!({})),
        ("dpdk", "sriov-dpdk-vf", json!({"mode": "dpdk"})),
        ("rdma", "sriov-rdma-vf", json!({})),
    ] {
        let class = &values["deviceClasses"][key];
        if class["enabled"] != json!(true) {
            continue;
        }
        let name = match class["name"].as_str() {
            Some(n) if !n.is_empty() => n.to_string(),
            _ => format!("{default_name}.{driver}"),
        };
        let mut params = json!({"apiVersion": "sriov.dra.dev/v1alpha1", "kind": "VfConfig"});
        let map = params.as_object_mut().unwrap();
        if let Some(cfg) = class["vfConfig"].as_object() {
            map.extend(cfg.clone());
        }
        map.extend(forced.as_object().unwrap().clone());
        let mut entries = vec![params];
        if let Some(policy) = class["vfPolicy"].as_object().filter(|p| !p.is_empty()) {
            let mut params = json!({"apiVersion": "sriov.dra.dev/v1alpha1", "kind": "VfPolicy"});
            params.as_object_mut().unwrap().extend(policy.clone());
            entries.push(params);
        }
        out.push((name, entries));
    }
    out
}

fn config_entry(
    source: &str,
    requests: Option<Vec<String>>,
    params: Value,
) -> DeviceAllocationConfiguration {
    DeviceAllocationConfiguration {
        source: source.into(),
        requests,
        opaque: Some(OpaqueDeviceConfiguration {
            driver: "sriov.dra.dev".into(),
            parameters: RawExtension(params),
        }),
    }
}

#[test]
fn class_vfconfig_defaults_parse_with_the_driver_parser() {
    for (name, values) in every_values() {
        for (class, params) in device_classes(&values) {
            let entries: Vec<_> = params
                .into_iter()
                .map(|p| config_entry("FromClass", None, p))
                .collect();
            sriov_dra::apis::configs_for_request(
                "class",
                "sriov.dra.dev",
                &entries,
                "r",
                Some(&class),
            )
            .unwrap_or_else(|e| panic!("{name}: class {class}: {e}"));
        }
    }
}

#[test]
fn without_the_pool_values_class_policy_the_fronthaul_vlan_is_refused() {
    // The default values' netdevice class has no VfPolicy: a tenant may not
    // pick a VLAN. The E810 pool's class (examples) allows 100-199.
    let (_, defaults) = device_classes(&default_values()).remove(0);
    let claim = json!({"apiVersion": "sriov.dra.dev/v1alpha1", "kind": "VfConfig", "vlan": 100});
    let mut entries: Vec<_> = defaults
        .into_iter()
        .map(|p| config_entry("FromClass", None, p))
        .collect();
    entries.push(config_entry("FromClaim", None, claim));
    let err = sriov_dra::apis::configs_for_request(
        "ran/du-0",
        "sriov.dra.dev",
        &entries,
        "fronthaul",
        Some("sriov-vf.sriov.dra.dev"),
    )
    .unwrap_err();
    assert_eq!(err.field, "vlan", "{err}");
}

#[test]
fn the_class_selectors_use_attributes_the_driver_publishes() {
    let published = published_attributes();
    let template = read(&chart_dir().join("templates/deviceclasses.yaml"));
    let attr = regex::Regex::new(
        r#"\$attrs \}\}\.(\w+)|'(\w+)' in %s|"%s\.(\w+)|'(\w+)' in \{\{ \$attrs \}\}"#,
    )
    .unwrap();
    let used: BTreeSet<String> = attr
        .captures_iter(&template)
        .filter_map(|c| {
            (1..=4)
                .find_map(|i| c.get(i))
                .map(|m| m.as_str().to_string())
        })
        .collect();
    assert_eq!(
        used,
        ["iommuGroup", "ifName", "isVf", "rdma", "unhealthy"]
            .map(String::from)
            .into(),
        "update this test with the template"
    );
    // The health fallback's attribute is on no golden slice (all healthy).
    let fallback = sriov_dra::kube::taints::UNHEALTHY_ATTRIBUTE;
    assert!(used.contains(fallback));
    for a in used.into_iter().filter(|a| a != fallback) {
        assert!(
            published.contains(&format!("sriov.dra.dev/{a}")),
            "DeviceClass CEL uses {a}, which no slice carries"
        );
    }
}

#[test]
fn every_example_parses_and_its_configs_are_valid_vfconfigs() {
    let published = published_attributes();
    let values = every_values();
    // The classes of the cluster the examples describe: those of the one
    // node-pool release that creates them.
    let creators: Vec<&Value> = values
        .iter()
        .skip(1)
        .map(|(_, v)| v)
        .filter(|v| v["deviceClasses"]["create"] == json!(true))
        .collect();
    assert_eq!(creators.len(), 1, "exactly one pool creates the classes");
    let classes: BTreeMap<String, Vec<Value>> = device_classes(creators[0]).into_iter().collect();
    let pools: BTreeSet<String> = values
        .iter()
        .flat_map(|(_, v)| {
            v["nodeConfig"]["ipam"]["pools"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .filter_map(|p| p["name"].as_str().map(String::from))
        .collect();
    let cel_attr = regex::Regex::new(r#"device\.attributes\["([^"]+)"\]\.(\w+)"#).unwrap();

    let manifests = example_manifests();
    let names: Vec<String> = manifests
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    for needed in ["fronthaul.yaml", "dpdk-pair.yaml", "rdma-exclusive.yaml"] {
        assert!(names.iter().any(|n| n == needed), "{needed} in {names:?}");
    }
    let mut seen = BTreeSet::new();
    for path in manifests {
        let file = path.display().to_string();
        let mut templates = 0;
        let mut pods = 0;
        for doc in serde_yaml::Deserializer::from_str(&read(&path)) {
            let obj: Value = serde::Deserialize::deserialize(doc).unwrap();
            match obj["kind"].as_str() {
                Some("ResourceClaimTemplate") => {
                    templates += 1;
                    let rct: ResourceClaimTemplate = serde_json::from_value(obj.clone())
                        .unwrap_or_else(|e| panic!("{file}: {e}"));
                    let devices = rct.spec.spec.devices.unwrap();
                    let claim_configs = devices.config.unwrap_or_default();
                    for request in devices.requests.unwrap_or_default() {
                        let exact = request.exactly.expect("exactly");
                        let class_params =
                            classes.get(&exact.device_class_name).unwrap_or_else(|| {
                                panic!("{file}: no chart DeviceClass {}", exact.device_class_name)
                            });
                        for sel in exact.selectors.unwrap_or_default() {
                            let cel = sel.cel.unwrap().expression;
                            for c in cel_attr.captures_iter(&cel) {
                                let name = format!("{}/{}", &c[1], &c[2]);
                                assert!(published.contains(&name), "{file}: {name}");
                            }
                        }
                        // What the allocation hands the driver: the class's
                        // configs, then the claim's.
                        let mut entries: Vec<_> = class_params
                            .iter()
                            .map(|p| config_entry("FromClass", None, p.clone()))
                            .collect();
                        for c in &claim_configs {
                            let opaque = c.opaque.clone().expect("opaque config");
                            assert_eq!(opaque.driver, "sriov.dra.dev", "{file}");
                            entries.push(config_entry(
                                "FromClaim",
                                c.requests.clone(),
                                opaque.parameters.0,
                            ));
                        }
                        let valid = sriov_dra::apis::configs_for_request(
                            &file,
                            "sriov.dra.dev",
                            &entries,
                            &request.name,
                            Some(&exact.device_class_name),
                        )
                        .unwrap_or_else(|e| panic!("{e}"))
                        .config;
                        if let Some(sriov_dra::apis::validate::AddressSource::Pool(pool)) =
                            &valid.addresses
                        {
                            assert!(
                                pools.contains(pool),
                                "{file}: pool {pool} in no values file"
                            );
                            let vlan_100 = claim_configs.iter().any(|c| {
                                c.opaque
                                    .as_ref()
                                    .is_some_and(|o| o.parameters.0["vlan"] == 100)
                            });
                            if vlan_100 {
                                seen.insert("fronthaul VLAN 100 with a pool");
                            }
                        }
                        if valid.mode == sriov_dra::apis::Mode::Dpdk && exact.count == Some(2) {
                            seen.insert("two DPDK VFs");
                        }
                        if valid.rdma_exclusive {
                            seen.insert("RDMA exclusive");
                        }
                    }
                    for constraint in devices.constraints.unwrap_or_default() {
                        let attr = constraint.match_attribute.expect("matchAttribute");
                        assert!(published.contains(&attr), "{file}: constraint on {attr}");
                        seen.insert(if attr.ends_with("pcieRoot") {
                            "same PCIe root"
                        } else {
                            "same NUMA node"
                        });
                    }
                }
                Some("Pod") => {
                    pods += 1;
                    let pod: Pod =
                        serde_json::from_value(obj).unwrap_or_else(|e| panic!("{file}: {e}"));
                    let spec = pod.spec.unwrap();
                    let claims: BTreeSet<String> = spec
                        .resource_claims
                        .unwrap_or_default()
                        .into_iter()
                        .map(|c| c.name)
                        .collect();
                    for c in spec.containers {
                        for used in c.resources.and_then(|r| r.claims).unwrap_or_default() {
                            assert!(claims.contains(&used.name), "{file}: {}", used.name);
                        }
                    }
                }
                other => panic!("{file}: unexpected kind {other:?}"),
            }
        }
        assert!(
            templates >= 1 && pods >= 1,
            "{file}: a template with its pod"
        );
    }
    assert_eq!(
        seen,
        BTreeSet::from([
            "fronthaul VLAN 100 with a pool",
            "two DPDK VFs",
            "RDMA exclusive",
            "same PCIe root",
            "same NUMA node",
        ])
    );
}

// ---------------------------------------------------------------------------
// RBAC: the ClusterRole against every API call the driver makes.

/// `(apiGroup, resource[/subresource], verb)`, as RBAC rules spell them.
type Permission = (String, String, String);

/// The rules of the chart's ClusterRole. Template actions are replaced by a
/// placeholder and directive-only lines dropped; the rules block itself has
/// none (rbac.yaml says so).
fn cluster_role_rules() -> BTreeSet<Permission> {
    let text = read(&chart_dir().join("templates/rbac.yaml"));
    let action = regex::Regex::new(r"\{\{[^}]*\}\}").unwrap();
    let plain: String = text
        .lines()
        .filter(|l| !l.trim_start().starts_with("{{"))
        .map(|l| action.replace_all(l, "X").into_owned() + "\n")
        .collect();
    let mut rules = BTreeSet::new();
    let mut roles = 0;
    for doc in serde_yaml::Deserializer::from_str(&plain) {
        let obj: Value = serde::Deserialize::deserialize(doc).unwrap();
        if obj["kind"] != "ClusterRole" {
            continue;
        }
        roles += 1;
        for rule in obj["rules"].as_array().unwrap() {
            let list = |k: &str| -> Vec<String> {
                rule[k]
                    .as_array()
                    .unwrap_or_else(|| panic!("rule without {k}: {rule}"))
                    .iter()
                    .map(|v| v.as_str().unwrap().to_string())
                    .collect()
            };
            assert!(rule.get("resourceNames").is_none() && rule.get("nonResourceURLs").is_none());
            for group in list("apiGroups") {
                for resource in list("resources") {
                    for verb in list("verbs") {
                        for part in [&group, &resource, &verb] {
                            assert!(!part.contains('*'), "wildcard in {rule}");
                        }
                        assert!(!resource.starts_with("secrets"), "{rule}");
                        rules.insert((group.clone(), resource.clone(), verb.clone()));
                    }
                }
            }
        }
    }
    assert_eq!(roles, 1, "one ClusterRole");
    rules
}

/// What the API server authorizes for one request.
fn permissions_of(call: &sriov_dra::testing::fake_api::ApiCall) -> Vec<Permission> {
    let parts: Vec<&str> = call.path.trim_matches('/').split('/').collect();
    let (group, rest) = match parts.as_slice() {
        ["api", _version, rest @ ..] => (String::new(), rest),
        ["apis", group, _version, rest @ ..] => (group.to_string(), rest),
        _ => panic!("not an API path: {}", call.path),
    };
    let rest = match rest {
        ["namespaces", _ns, rest @ ..] if !rest.is_empty() => rest,
        other => other,
    };
    let (resource, name, sub) = match rest {
        [resource] => (*resource, None, None),
        [resource, name] => (*resource, Some(*name), None),
        [resource, name, sub] => (*resource, Some(*name), Some(*sub)),
        _ => panic!("unexpected API path {}", call.path),
    };
    let full = match sub {
        Some(sub) => format!("{resource}/{sub}"),
        None => resource.to_string(),
    };
    let watch = call
        .query
        .split('&')
        .any(|kv| kv == "watch=true" || kv == "watch=1");
    let verbs: Vec<&str> = match (call.method.as_str(), name) {
        ("GET", _) if watch => vec!["watch"],
        ("GET", Some(_)) => vec!["get"],
        ("GET", None) => vec!["list"],
        ("POST", _) => vec!["create"],
        ("PUT", _) => vec!["update"],
        // Server-side apply creates the object when it is missing, and the
        // API server then also authorizes `create` (not for subresources).
        ("PATCH", _)
            if call.content_type.as_deref() == Some("application/apply-patch+yaml")
                && sub.is_none() =>
        {
            vec!["patch", "create"]
        }
        ("PATCH", _) => vec!["patch"],
        ("DELETE", Some(_)) => vec!["delete"],
        ("DELETE", None) => vec!["deletecollection"],
        (m, _) => panic!("unexpected method {m} on {}", call.path),
    };
    verbs
        .into_iter()
        .map(|v| (group.clone(), full.clone(), v.to_string()))
        .collect()
}

/// Kinds the driver's code builds an `Api<…>` for; each has a driven call
/// in the test below. A new one fails the test until it is driven too.
const DRIVEN_KINDS: &[&str] = &["IpBlock", "Node", "ResourceClaim", "ResourceSlice"];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().and_then(|e| e.to_str()) == Some("rs") {
            out.push(path);
        }
    }
}

#[test]
fn every_kind_the_driver_talks_to_is_driven_by_the_rbac_test() {
    let mut files = Vec::new();
    rust_files(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
        &mut files,
    );
    let typed = regex::Regex::new(r"\bApi<(\w+)>").unwrap();
    for file in files {
        let text = read(&file);
        for c in typed.captures_iter(&text) {
            assert!(
                DRIVEN_KINDS.contains(&&c[1]),
                "{} uses Api<{}>: drive that call in the RBAC test and give it a rule in rbac.yaml",
                file.display(),
                &c[1]
            );
        }
        for raw in ["client.request", ".request::<", "request_text("] {
            assert!(
                !text.contains(raw),
                "{}: raw API request ({raw}); map it in the RBAC test",
                file.display()
            );
        }
    }
}

#[tokio::test]
async fn the_cluster_role_grants_exactly_the_calls_the_driver_makes() {
    use sriov_dra::inventory::NodeInventory;
    use sriov_dra::kube::claims::ClaimReader;
    use sriov_dra::kube::publish::SlicePublisher;
    use sriov_dra::testing::fake_api::FakeApi;

    let api = FakeApi::new();
    let node = "node-a";
    api.put_node(node, "uid-node-a");
    // A slice an earlier run left behind (more devices then): the publisher
    // deletes it after applying the new generation.
    api.put_slice(&json!({
        "apiVersion": "resource.k8s.io/v1", "kind": "ResourceSlice",
        "metadata": {"name": "node-a-sriov-dra-dev-7"},
        "spec": {"driver": "sriov.dra.dev", "nodeName": node,
                 "pool": {"name": node, "generation": 1, "resourceSliceCount": 8}},
    }));
    let claim: Value = serde_json::from_str(&read(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("src/kube/testdata/claim-fronthaul-rdma.json"),
    ))
    .unwrap();
    api.put_claim(&claim);
    let client = api.client();

    // Start-up: the Node as the slices' owner.
    let owner = sriov_dra::kube::node::node_owner(&client, node).await;
    assert!(owner.is_some());

    // Publish the node's slices.
    let sys = tempfile::tempdir_in(sriov::fixture::scratch_base()).unwrap();
    sriov::fixture::Fixture::ConnectX6Dx
        .build(sys.path())
        .unwrap();
    let inventory = NodeInventory::discover(sys.path()).unwrap();
    let config = NodeConfig::default();
    let mut publisher = SlicePublisher::new(client.clone(), &config, node, owner);
    publisher
        .publish(&inventory, &config, &BTreeSet::new())
        .await
        .unwrap();
    assert_eq!(
        api.slices().keys().cloned().collect::<Vec<_>>(),
        ["node-a-sriov-dra-dev-0"],
        "applied the new slice, deleted the stale one"
    );

    // Watch the node's slices, so one deleted or changed from outside is
    // re-applied at once: the first event is the slice just published.
    let (nudges, mut nudged) = sriov_dra::events::channel();
    let watch = tokio::spawn(sriov_dra::kube::slice_watch::watch_slices(
        client.clone(),
        publisher.selector(),
        nudges,
        std::future::pending(),
    ));
    assert!(nudged.recv().await.is_some());
    watch.abort();

    // Prepare (and recovery): read the claim.
    let (ns, name, uid) = (
        claim["metadata"]["namespace"].as_str().unwrap(),
        claim["metadata"]["name"].as_str().unwrap(),
        claim["metadata"]["uid"].as_str().unwrap(),
    );
    ClaimReader::new(client.clone())
        .read(ns, name, uid, "sriov.dra.dev")
        .await
        .unwrap();

    // Pod start: report the attached device in the claim's status.
    let status = k8s_openapi::api::resource::v1::AllocatedDeviceStatus {
        driver: "sriov.dra.dev".into(),
        pool: node.into(),
        device: "pci-0000-3b-00-2".into(),
        ..Default::default()
    };
    sriov_dra::kube::claim_status::apply(client.clone(), ns, name, vec![status])
        .await
        .unwrap();
    assert_eq!(
        api.claim(ns, name).unwrap()["status"]["devices"][0]["device"],
        "pci-0000-3b-00-2"
    );

    // Cluster-wide IPAM pools: claim a block, list the node's and the
    // pool's leases, read one and give it back.
    let blocks = sriov_dra::kube::leases::IpBlocks::new(client.clone());
    let block = "10.2.0.0/27".parse().unwrap();
    let node_ref = sriov_dra::kube::node::node_owner(&client, node)
        .await
        .unwrap();
    blocks
        .claim("midhaul", block, node, &node_ref)
        .await
        .unwrap();
    assert_eq!(blocks.of_node(node).await.unwrap().len(), 1);
    assert_eq!(blocks.of_pool("midhaul").await.unwrap().len(), 1);
    let lease = blocks
        .get(&ipam::lease_name("midhaul", &block))
        .await
        .unwrap()
        .unwrap();
    blocks.release(&lease).await.unwrap();
    assert!(api.ip_blocks().all().is_empty());

    let calls = api.calls();
    let used: BTreeSet<Permission> = calls.iter().flat_map(permissions_of).collect();
    let granted = cluster_role_rules();
    let missing: Vec<_> = used.difference(&granted).collect();
    assert!(
        missing.is_empty(),
        "the driver makes calls rbac.yaml does not allow: {missing:?}\ncalls: {calls:#?}"
    );
    let unused: Vec<_> = granted.difference(&used).collect();
    assert!(
        unused.is_empty(),
        "rbac.yaml grants what no driver call needs: {unused:?}"
    );
}

// ---------------------------------------------------------------------------
// The templates, as far as they can be checked without helm: balanced
// blocks, includes of defined templates, and values paths that exist.

fn templates() -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = std::fs::read_dir(chart_dir().join("templates"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .map(|p| {
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                read(&p),
            )
        })
        .collect();
    out.sort();
    out
}

/// The text of every `{{ … }}` action of `text`, comments left out.
fn actions(text: &str) -> Vec<String> {
    let action = regex::Regex::new(r"(?s)\{\{-?\s*(.*?)\s*-?\}\}").unwrap();
    action
        .captures_iter(text)
        .map(|c| c[1].to_string())
        .filter(|a| !a.starts_with("/*"))
        .collect()
}

#[test]
fn template_blocks_are_balanced_and_includes_are_defined() {
    let word = regex::Regex::new(r"^(\w+)").unwrap();
    let define = regex::Regex::new(r#"^define "([^"]+)""#).unwrap();
    let include = regex::Regex::new(r#"\b(?:include|template) "([^"]+)""#).unwrap();
    let mut defined = BTreeSet::new();
    let mut included = BTreeSet::new();
    for (name, text) in templates() {
        let mut open: Vec<String> = Vec::new();
        for a in actions(&text) {
            if let Some(d) = define.captures(&a) {
                defined.insert(d[1].to_string());
            }
            for i in include.captures_iter(&a) {
                included.insert(i[1].to_string());
            }
            match word.captures(&a).map(|w| w[1].to_string()).as_deref() {
                Some("if" | "with" | "range" | "define" | "block") => open.push(a.clone()),
                Some("else") => assert!(!open.is_empty(), "{name}: else outside a block"),
                Some("end") => {
                    open.pop()
                        .unwrap_or_else(|| panic!("{name}: end without a block"));
                }
                _ => {}
            }
        }
        assert!(open.is_empty(), "{name}: blocks never ended: {open:?}");
    }
    let undefined: Vec<_> = included.difference(&defined).collect();
    assert!(
        undefined.is_empty(),
        "included but not defined: {undefined:?}"
    );
}

#[test]
fn every_values_path_a_template_reads_exists_and_every_value_is_read() {
    let values = default_values();
    let path = regex::Regex::new(r"(?:\.Values|\$nc)((?:\.[A-Za-z_][A-Za-z0-9_]*)+)").unwrap();
    let mut read_paths = BTreeSet::new();
    for (name, text) in templates() {
        for a in actions(&text) {
            for c in path.captures_iter(&a) {
                let full = if c[0].starts_with("$nc") {
                    format!(".nodeConfig{}", &c[1])
                } else {
                    c[1].to_string()
                };
                let pointer = full.replace('.', "/");
                assert!(
                    values.pointer(&pointer).is_some(),
                    "{name} reads .Values{full}, which values.yaml does not have"
                );
                read_paths.insert(full);
            }
        }
    }
    let all_text: String = templates().into_iter().map(|(_, t)| t).collect();
    for (key, value) in values.as_object().unwrap() {
        let top = format!(".{key}");
        assert!(
            read_paths
                .iter()
                .any(|p| p == &top || p.starts_with(&format!("{top}."))),
            "values.yaml's {key} is read by no template"
        );
        // nodeConfig, resources and the like are rendered whole; the classes
        // are read through a per-class dict (.cls) in deviceclasses.yaml.
        if key == "nodeConfig" || read_paths.contains(&top) {
            continue;
        }
        for (sub, subvalue) in value.as_object().into_iter().flatten() {
            let p = format!("{top}.{sub}");
            if key == "deviceClasses" && subvalue.is_object() {
                for field in subvalue.as_object().unwrap().keys() {
                    assert!(
                        all_text.contains(&format!(".cls.{field}"))
                            || all_text.contains(&format!("if .{field}")),
                        "deviceClasses.{sub}.{field} is read by no template"
                    );
                }
                continue;
            }
            assert!(
                read_paths
                    .iter()
                    .any(|r| r == &p || r.starts_with(&format!("{p}."))),
                "values.yaml's {key}.{sub} is read by no template"
            );
        }
    }
}
