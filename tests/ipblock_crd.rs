//! The IPBlock CRD the chart ships matches the lease objects the driver
//! writes: group, version, kind, plural, scope, the spec's fields, and the
//! columns `kubectl get ipblocks` prints.

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
