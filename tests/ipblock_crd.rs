//! The IPBlock CRD the chart ships matches the lease objects the driver
//! writes: group, version, kind, plural, scope, the spec's fields, and the
//! columns `kubectl get ipblocks` prints; and the admission policy lets a
//! node's driver create and delete only its own IPBlocks.

use std::collections::BTreeSet;
use std::path::Path;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Resource;
use sriov_dra::kube::leases::{IpBlock, IpBlockSpec};

fn crd() -> CustomResourceDefinition {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("charts/sriov-dra/crds/ipblocks.sriov.dra.dev.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn the_crd_names_the_kind_the_driver_writes() {
    let crd = crd();
    assert_eq!(crd.spec.group, IpBlock::group(&()));
    assert_eq!(crd.spec.names.kind, IpBlock::kind(&()));
    assert_eq!(crd.spec.names.plural, IpBlock::plural(&()));
    assert_eq!(
        crd.metadata.name.as_deref(),
        Some(format!("{}.{}", IpBlock::plural(&()), IpBlock::group(&())).as_str())
    );
    assert_eq!(crd.spec.scope, "Cluster", "owned by a Node, no namespace");
    let versions: Vec<&str> = crd.spec.versions.iter().map(|v| v.name.as_str()).collect();
    assert_eq!(versions, [IpBlock::version(&()).as_ref()]);
}

#[test]
fn the_crd_schema_has_exactly_the_spec_fields_and_kubectl_prints_them() {
    let crd = crd();
    let version = &crd.spec.versions[0];
    let schema = version
        .schema
        .as_ref()
        .and_then(|s| s.open_api_v3_schema.as_ref())
        .unwrap();
    let spec = &schema.properties.as_ref().unwrap()["spec"];
    let in_crd: BTreeSet<String> = spec.properties.as_ref().unwrap().keys().cloned().collect();
    let written = serde_json::to_value(IpBlockSpec::default()).unwrap();
    let in_driver: BTreeSet<String> = written.as_object().unwrap().keys().cloned().collect();
    assert_eq!(in_crd, in_driver);
    let required: BTreeSet<String> = spec.required.clone().unwrap().into_iter().collect();
    assert_eq!(required, in_driver, "every field is required");
    let columns: Vec<(&str, &str)> = version
        .additional_printer_columns
        .as_ref()
        .unwrap()
        .iter()
        .map(|c| (c.name.as_str(), c.json_path.as_str()))
        .collect();
    assert_eq!(
        columns,
        [
            ("Pool", ".spec.pool"),
            ("CIDR", ".spec.cidr"),
            ("Node", ".spec.nodeName"),
            ("Age", ".metadata.creationTimestamp"),
        ]
    );
}

/// The admission policy's IPBlock rule, as written in the template (it has
/// no template directives).
fn block_rule() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("charts/sriov-dra/templates/admission-policy.yaml");
    let text = std::fs::read_to_string(path).unwrap();
    let start = text
        .find("!variables.isBlock ||")
        .expect("the IPBlock rule");
    let end = start + text[start..].find("messageExpression").unwrap();
    text[start..end].trim().to_string()
}

fn admitted(operation: &str, node: &str, object: serde_json::Value) -> bool {
    let program = cel::Program::compile(&block_rule()).unwrap();
    let mut context = cel::Context::default();
    let value = |v: serde_json::Value| cel::to_value(v).unwrap();
    context.add_variable_from_value(
        "variables",
        value(serde_json::json!({"isBlock": true, "isSlice": false, "nodeName": node})),
    );
    context.add_variable_from_value(
        "request",
        value(serde_json::json!({"operation": operation})),
    );
    context.add_variable_from_value("object", value(object.clone()));
    context.add_variable_from_value("oldObject", value(object));
    match program.execute(&context) {
        Ok(cel::Value::Bool(b)) => b,
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_node_may_create_and_delete_only_its_own_ipblocks() {
    let block = |holder: &str, owner: &str| {
        serde_json::json!({
            "metadata": {"name": "midhaul-10-2-0-64-27",
                         "labels": {"sriov.dra.dev/node": holder, "sriov.dra.dev/pool": "midhaul"},
                         "ownerReferences": [{"kind": "Node", "name": owner, "uid": "u"}]},
            "spec": {"pool": "midhaul", "cidr": "10.2.0.64/27", "nodeName": holder},
        })
    };
    assert!(admitted(
        "CREATE",
        "worker-1",
        block("worker-1", "worker-1")
    ));
    assert!(!admitted(
        "CREATE",
        "worker-1",
        block("worker-2", "worker-2")
    ));
    assert!(
        !admitted("CREATE", "worker-1", block("worker-1", "worker-2")),
        "owned by another Node: would outlive this one"
    );
    assert!(admitted(
        "DELETE",
        "worker-1",
        block("worker-1", "worker-1")
    ));
    assert!(!admitted(
        "DELETE",
        "worker-1",
        block("worker-2", "worker-2")
    ));
}

#[test]
fn single_address_leases_pass_the_same_rule() {
    let single = |holder: &str| {
        serde_json::json!({
            "metadata": {"name": "midhaul-10-2-0-70-32",
                         "labels": {"sriov.dra.dev/node": holder, "sriov.dra.dev/pool": "midhaul",
                                    "sriov.dra.dev/static": "true",
                                    "sriov.dra.dev/block": "midhaul-10-2-0-64-27"},
                         "ownerReferences": [{"kind": "Node", "name": holder, "uid": "u"}]},
            "spec": {"pool": "midhaul", "cidr": "10.2.0.70/32", "nodeName": holder},
        })
    };
    for op in ["CREATE", "DELETE"] {
        assert!(admitted(op, "worker-1", single("worker-1")), "{op}");
        assert!(
            !admitted(op, "worker-1", single("worker-2")),
            "{op}: another node's static address"
        );
    }
}
