//! Which of a claim's config entries apply to a request, in which order,
//! and the one validated config they add up to.
//!
//! The allocation result of a claim copies the DeviceClass configs
//! (`source: FromClass`) and the claim's own (`FromClaim`). An entry applies
//! to a request when it lists no requests, lists the request, or lists the
//! parent of a subrequest (`nic` for `nic/fast`). Class entries come first,
//! claim entries after; within each, later entries win field by field.
//!
//! Two kinds are read: `VfConfig` (from either source) and `VfPolicy`
//! (from the class only: the claim's author is a tenant, and a policy it
//! wrote itself would bound nothing). The claim's own values are checked
//! against the class's policies ([`super::policy`]) after the merged config
//! is validated, so a value out of range is reported as such first.

use k8s_openapi::api::resource::v1::DeviceAllocationConfiguration;
use serde::de::DeserializeOwned;

use super::policy::{AppliedPolicy, LabeledPolicy, check_claim_values};
use super::validate::{ValidConfig, validate};
use super::vfconfig::{API_VERSION, KIND, VfConfig};
use super::vfpolicy::{POLICY_KIND, VfPolicy};

/// `source` of config entries that come from the DeviceClass.
pub const FROM_CLASS: &str = "FromClass";
/// `source` of config entries that come from the claim.
pub const FROM_CLAIM: &str = "FromClaim";

/// A config that cannot be used, naming the claim, the request, the entry
/// it came from (when one entry is at fault), the field and what is expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("claim {claim}, request {request:?}: {}field {field}: {expected}", entry.as_ref().map(|e| format!("{e}: ")).unwrap_or_default())]
pub struct ConfigError {
    /// `namespace/name` of the claim.
    pub claim: String,
    /// The request the config was merged for.
    pub request: String,
    /// `config[2] (FromClaim)`, when a single entry is at fault.
    pub entry: Option<String>,
    /// The field (`vlan`, `apiVersion`, `ipam`).
    pub field: String,
    /// What is wrong and what is expected.
    pub expected: String,
}

/// The config a request gets, and the class policy that bounded it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestConfig {
    /// The merged, validated config.
    pub config: ValidConfig,
    /// The class and its `VfPolicy` entries the claim's values were checked
    /// against (no entries: the defaults).
    pub policy: AppliedPolicy,
}

/// Whether a config entry that lists `requests` applies to `request`.
fn applies(requests: Option<&[String]>, request: &str) -> bool {
    let parent = request.split_once('/').map(|(p, _)| p);
    match requests {
        None | Some([]) => true,
        Some(list) => list
            .iter()
            .any(|r| r == request || Some(r.as_str()) == parent),
    }
}

/// One parsed config entry of our driver.
enum Entry {
    Config(VfConfig),
    Policy(VfPolicy),
}

/// Parses one entry's parameters strictly by its kind; on failure names
/// the field. A `VfPolicy` from the claim is refused before its body is
/// read: whatever it says, a tenant does not bound itself.
fn parse_entry(params: &serde_json::Value, source: &str) -> Result<Entry, (String, String)> {
    let Some(obj) = params.as_object() else {
        return Err((
            "parameters".into(),
            format!("is not an object; expected a {KIND} or {POLICY_KIND} document"),
        ));
    };
    let text = |k: &str| obj.get(k).and_then(|v| v.as_str());
    if text("apiVersion") != Some(API_VERSION) {
        return Err((
            "apiVersion".into(),
            format!(
                "is {:?}; expected {API_VERSION:?}",
                text("apiVersion").unwrap_or("")
            ),
        ));
    }
    match text("kind") {
        Some(KIND) => parse_strict(obj, KIND).map(Entry::Config),
        Some(POLICY_KIND) if source == FROM_CLAIM => Err((
            "kind".into(),
            format!(
                "{POLICY_KIND} is honoured only from a DeviceClass config (source {FROM_CLASS}), not from a claim; ask the cluster admin to allow the value in the class's {POLICY_KIND}"
            ),
        )),
        Some(POLICY_KIND) => parse_strict(obj, POLICY_KIND).map(Entry::Policy),
        other => Err((
            "kind".into(),
            format!(
                "is {:?}; expected {KIND:?} or {POLICY_KIND:?}",
                other.unwrap_or("")
            ),
        )),
    }
}

/// Reads a `kind` document; an unknown field or a wrong value is named.
fn parse_strict<T: DeserializeOwned>(
    obj: &serde_json::Map<String, serde_json::Value>,
    kind: &str,
) -> Result<T, (String, String)> {
    serde_json::from_value::<T>(serde_json::Value::Object(obj.clone())).map_err(|err| {
        // serde names unknown fields but not the field of a wrong value;
        // find it by parsing one field at a time.
        let message = err.to_string();
        if let Some(name) = message
            .strip_prefix("unknown field `")
            .and_then(|rest| rest.split('`').next())
        {
            return (name.to_string(), format!("is not a {kind} field"));
        }
        for (key, value) in obj {
            let single =
                serde_json::json!({ "apiVersion": API_VERSION, "kind": kind, key.as_str(): value });
            if let Err(e) = serde_json::from_value::<T>(single) {
                return (key.clone(), e.to_string());
            }
        }
        ("parameters".to_string(), message)
    })
}

/// Merges the entries of `configs` for `driver` that apply to `request`,
/// validates the result and checks the claim's own values against the
/// class's `VfPolicy` entries. `device_class` is the class the request
/// names in the claim's spec, for errors and the record. No entry gives the
/// default config.
pub fn configs_for_request(
    claim: &str,
    driver: &str,
    configs: &[DeviceAllocationConfiguration],
    request: &str,
    device_class: Option<&str>,
) -> Result<RequestConfig, ConfigError> {
    let error = |entry: Option<String>, field: String, expected: String| ConfigError {
        claim: claim.to_string(),
        request: request.to_string(),
        entry,
        field,
        expected,
    };
    // The class's values and the claim's, each laid over in order: the
    // claim's are what the policy checks, the class's what they may equal.
    let mut class_values = VfConfig::default();
    let mut claim_values = VfConfig::default();
    let mut policies = Vec::new();
    for source in [FROM_CLASS, FROM_CLAIM] {
        for (index, entry) in configs.iter().enumerate() {
            if entry.source != source || !applies(entry.requests.as_deref(), request) {
                continue;
            }
            let Some(opaque) = &entry.opaque else {
                continue;
            };
            if opaque.driver != driver {
                continue;
            }
            let label = format!("config[{index}] ({source})");
            let parsed = parse_entry(&opaque.parameters.0, source)
                .map_err(|(field, expected)| error(Some(label.clone()), field, expected))?;
            match parsed {
                Entry::Config(cfg) if source == FROM_CLASS => class_values.overlay(cfg),
                Entry::Config(cfg) => claim_values.overlay(cfg),
                Entry::Policy(policy) => {
                    policy
                        .validate()
                        .map_err(|e| error(Some(label.clone()), e.field, e.expected))?;
                    policies.push(LabeledPolicy {
                        entry: label,
                        policy,
                    });
                }
            }
        }
    }
    if let Some(source) = configs
        .iter()
        .map(|c| c.source.as_str())
        .find(|s| *s != FROM_CLASS && *s != FROM_CLAIM)
    {
        return Err(error(
            None,
            "source".into(),
            format!("{source:?} is unknown; expected {FROM_CLASS} or {FROM_CLAIM}"),
        ));
    }
    let mut merged = class_values.clone();
    merged.overlay(claim_values.clone());
    let config = validate(&merged).map_err(|e| error(None, e.field, e.expected))?;
    check_claim_values(&claim_values, &class_values, device_class, &policies)
        .map_err(|v| error(None, v.field.to_string(), v.expected()))?;
    Ok(RequestConfig {
        config,
        policy: AppliedPolicy {
            device_class: device_class.map(str::to_string),
            vf_policies: policies.into_iter().map(|p| p.policy).collect(),
        },
    })
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::resource::v1::OpaqueDeviceConfiguration;
    use k8s_openapi::apimachinery::pkg::runtime::RawExtension;

    use super::*;

    fn entry(
        source: &str,
        requests: &[&str],
        driver: &str,
        params: serde_json::Value,
    ) -> DeviceAllocationConfiguration {
        DeviceAllocationConfiguration {
            source: source.into(),
            requests: (!requests.is_empty())
                .then(|| requests.iter().map(|r| r.to_string()).collect()),
            opaque: Some(OpaqueDeviceConfiguration {
                driver: driver.into(),
                parameters: RawExtension(params),
            }),
        }
    }

    fn vf(extra: serde_json::Value) -> serde_json::Value {
        let mut v = serde_json::json!({"apiVersion": API_VERSION, "kind": KIND});
        if let (Some(o), Some(e)) = (v.as_object_mut(), extra.as_object()) {
            o.extend(e.clone());
        }
        v
    }

    fn policy(extra: serde_json::Value) -> serde_json::Value {
        let mut v = serde_json::json!({"apiVersion": API_VERSION, "kind": POLICY_KIND});
        if let (Some(o), Some(e)) = (v.as_object_mut(), extra.as_object()) {
            o.extend(e.clone());
        }
        v
    }

    const D: &str = "sriov.dra.dev";

    /// The merged config of `request` of class `sriov-vf`.
    fn merged(
        configs: &[DeviceAllocationConfiguration],
        request: &str,
    ) -> Result<ValidConfig, ConfigError> {
        configs_for_request("ns/c", D, configs, request, Some("sriov-vf")).map(|r| r.config)
    }

    #[test]
    fn class_first_then_claim_later_wins_field_by_field() {
        let configs = [
            // Listed first but from the claim: still applied after the class.
            entry(
                FROM_CLAIM,
                &["nic"],
                D,
                vf(serde_json::json!({"vlan": 200})),
            ),
            entry(
                FROM_CLASS,
                &[],
                D,
                vf(serde_json::json!({"vlan": 100, "trust": true})),
            ),
            entry(FROM_CLAIM, &[], D, vf(serde_json::json!({"mtu": 9000}))),
            entry(
                FROM_CLASS,
                &["nic"],
                D,
                policy(serde_json::json!({"allowedVlans": ["200"]})),
            ),
        ];
        let cfg = merged(&configs, "nic").unwrap();
        assert_eq!(cfg.settings.vlan().map(|v| v.id), Some(200));
        assert_eq!(cfg.settings.trust(), Some(true));
        assert_eq!(cfg.mtu, Some(9000));
    }

    #[test]
    fn entries_for_other_requests_and_drivers_are_skipped() {
        let configs = [
            entry(
                FROM_CLAIM,
                &["other"],
                D,
                vf(serde_json::json!({"vlan": 1})),
            ),
            entry(
                FROM_CLAIM,
                &[],
                "gpu.example.com",
                serde_json::json!({"whatever": true}),
            ),
            entry(FROM_CLAIM, &["nic"], D, vf(serde_json::json!({"vlan": 7}))),
            entry(
                FROM_CLASS,
                &["nic/fast"],
                D,
                policy(serde_json::json!({"allowedVlans": ["1-9"]})),
            ),
        ];
        let cfg = merged(&configs, "nic/fast").unwrap();
        assert_eq!(
            cfg.settings.vlan().map(|v| v.id),
            Some(7),
            "parent request applies to subrequest"
        );
    }

    #[test]
    fn errors_name_claim_request_entry_and_field() {
        let configs = [entry(
            FROM_CLAIM,
            &[],
            D,
            vf(serde_json::json!({"vlan": "hundred"})),
        )];
        let err = merged(&configs, "nic").unwrap_err();
        assert_eq!(err.field, "vlan");
        assert_eq!(err.entry.as_deref(), Some("config[0] (FromClaim)"));
        assert!(
            err.to_string().starts_with(
                "claim ns/c, request \"nic\": config[0] (FromClaim): field vlan: invalid type"
            ),
            "{err}"
        );

        let configs = [entry(
            FROM_CLASS,
            &[],
            D,
            serde_json::json!({"apiVersion": "v1", "kind": KIND}),
        )];
        let err = merged(&configs, "nic").unwrap_err();
        assert_eq!(
            (err.field.as_str(), err.expected.as_str()),
            (
                "apiVersion",
                "is \"v1\"; expected \"sriov.dra.dev/v1alpha1\""
            )
        );

        let configs = [entry(
            FROM_CLASS,
            &[],
            D,
            vf(serde_json::json!({"kind": "NetConfig"})),
        )];
        assert_eq!(merged(&configs, "nic").unwrap_err().field, "kind");

        let configs = [entry(
            FROM_CLAIM,
            &[],
            D,
            vf(serde_json::json!({"spoofchk": false})),
        )];
        assert_eq!(merged(&configs, "nic").unwrap_err().field, "spoofchk");
    }

    #[test]
    fn a_merged_config_is_validated_as_a_whole() {
        // Each entry is fine alone; together the rates contradict.
        let configs = [
            entry(
                FROM_CLASS,
                &[],
                D,
                vf(serde_json::json!({"maxTxRateMbps": 1000})),
            ),
            entry(
                FROM_CLAIM,
                &[],
                D,
                vf(serde_json::json!({"minTxRateMbps": 2000})),
            ),
        ];
        let err = merged(&configs, "nic").unwrap_err();
        assert_eq!((err.field.as_str(), err.entry), ("minTxRateMbps", None));
    }

    #[test]
    fn a_policy_in_the_claim_is_refused_whatever_it_says() {
        let configs = [
            entry(FROM_CLAIM, &[], D, vf(serde_json::json!({"vlan": 200}))),
            entry(
                FROM_CLAIM,
                &["nic"],
                D,
                policy(serde_json::json!({"allowedVlans": ["1-4094"]})),
            ),
        ];
        let err = merged(&configs, "nic").unwrap_err();
        assert_eq!(
            err.to_string(),
            "claim ns/c, request \"nic\": config[1] (FromClaim): field kind: VfPolicy is honoured only from a DeviceClass config (source FromClass), not from a claim; ask the cluster admin to allow the value in the class's VfPolicy"
        );
    }

    #[test]
    fn the_claims_values_are_checked_against_the_class_policy_after_validation() {
        let class_policy = entry(
            FROM_CLASS,
            &["fh0"],
            D,
            policy(serde_json::json!({"allowedVlans": ["100-199"]})),
        );
        let claim = |v: serde_json::Value| entry(FROM_CLAIM, &["fh0"], D, vf(v));
        let check = |configs: &[DeviceAllocationConfiguration]| {
            configs_for_request("ran/du-0", D, configs, "fh0", Some("sriov-fronthaul"))
        };

        let ok = check(&[
            class_policy.clone(),
            claim(serde_json::json!({"vlan": 100})),
        ])
        .unwrap();
        assert_eq!(ok.config.settings.vlan().map(|v| v.id), Some(100));
        assert_eq!(ok.policy.device_class.as_deref(), Some("sriov-fronthaul"));
        assert_eq!(ok.policy.vf_policies.len(), 1, "recorded for the debug API");

        let err = check(&[
            class_policy.clone(),
            claim(serde_json::json!({"vlan": 200})),
        ])
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "claim ran/du-0, request \"fh0\": field vlan: 200 is not allowed by DeviceClass sriov-fronthaul (allowed: 100-199)"
        );
        // Out of range is said as such, not as "not allowed".
        let err = check(&[
            class_policy.clone(),
            claim(serde_json::json!({"vlan": 5000})),
        ])
        .unwrap_err();
        assert!(err.expected.contains("out of range"), "{err}");
        // The class's own values are the admin's and need no policy.
        let class_sets = entry(
            FROM_CLASS,
            &[],
            D,
            vf(serde_json::json!({"vlan": 300, "trust": true})),
        );
        let ok = check(&[class_sets]).unwrap();
        assert_eq!(ok.config.settings.trust(), Some(true));
        assert!(ok.policy.vf_policies.is_empty());
    }

    #[test]
    fn a_class_policy_for_another_request_does_not_apply() {
        let configs = [
            entry(
                FROM_CLASS,
                &["other"],
                D,
                policy(serde_json::json!({"claimMaySet": ["trust"]})),
            ),
            entry(FROM_CLAIM, &[], D, vf(serde_json::json!({"trust": true}))),
        ];
        let err = merged(&configs, "nic").unwrap_err();
        assert!(err.expected.contains("the class has no VfPolicy"), "{err}");
        merged(&configs, "other").expect("allowed where the policy applies");
    }

    #[test]
    fn a_bad_class_policy_names_its_entry_and_field() {
        let configs = [entry(
            FROM_CLASS,
            &[],
            D,
            policy(serde_json::json!({"allowedVlan": ["100"]})),
        )];
        assert_eq!(
            merged(&configs, "nic").unwrap_err().to_string(),
            "claim ns/c, request \"nic\": config[0] (FromClass): field allowedVlan: is not a VfPolicy field"
        );
        let configs = [entry(
            FROM_CLASS,
            &[],
            D,
            policy(serde_json::json!({"allowedVlans": ["100-5000"]})),
        )];
        assert_eq!(
            merged(&configs, "nic").unwrap_err().to_string(),
            "claim ns/c, request \"nic\": config[0] (FromClass): field allowedVlans[0]: 100-5000 is out of range; expected 0-4094"
        );
        let configs = [entry(
            FROM_CLASS,
            &[],
            D,
            policy(serde_json::json!({"allowedVlans": ["abc"]})),
        )];
        assert_eq!(
            merged(&configs, "nic").unwrap_err().to_string(),
            "claim ns/c, request \"nic\": config[0] (FromClass): field allowedVlans: \"abc\" is not a number or a range like \"100-199\""
        );
    }
}
