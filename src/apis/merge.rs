//! Which of a claim's config entries apply to a request, in which order,
//! and the one validated config they add up to.
//!
//! The allocation result of a claim copies the DeviceClass configs
//! (`source: FromClass`) and the claim's own (`FromClaim`). An entry applies
//! to a request when it lists no requests, lists the request, or lists the
//! parent of a subrequest (`nic` for `nic/fast`). Class entries come first,
//! claim entries after; within each, later entries win field by field.

use k8s_openapi::api::resource::v1::DeviceAllocationConfiguration;

use super::validate::{ValidConfig, validate};
use super::vfconfig::{API_VERSION, KIND, VfConfig};

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

/// Parses one entry's parameters strictly; on failure names the field.
fn parse_entry(params: &serde_json::Value) -> Result<VfConfig, (String, String)> {
    let Some(obj) = params.as_object() else {
        return Err((
            "parameters".into(),
            "is not an object; expected a VfConfig document".into(),
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
    if text("kind") != Some(KIND) {
        return Err((
            "kind".into(),
            format!("is {:?}; expected {KIND:?}", text("kind").unwrap_or("")),
        ));
    }
    serde_json::from_value::<VfConfig>(params.clone()).map_err(|err| {
        // serde names unknown fields but not the field of a wrong value;
        // find it by parsing one field at a time.
        let message = err.to_string();
        if let Some(name) = message
            .strip_prefix("unknown field `")
            .and_then(|rest| rest.split('`').next())
        {
            return (name.to_string(), "is not a VfConfig field".to_string());
        }
        for (key, value) in obj {
            let single =
                serde_json::json!({ "apiVersion": API_VERSION, "kind": KIND, key.as_str(): value });
            if let Err(e) = serde_json::from_value::<VfConfig>(single) {
                return (key.clone(), e.to_string());
            }
        }
        ("parameters".to_string(), message)
    })
}

/// Merges the entries of `configs` for `driver` that apply to `request` and
/// validates the result. No entry gives the default config.
pub fn configs_for_request(
    claim: &str,
    driver: &str,
    configs: &[DeviceAllocationConfiguration],
    request: &str,
) -> Result<ValidConfig, ConfigError> {
    let error = |entry: Option<String>, field: String, expected: String| ConfigError {
        claim: claim.to_string(),
        request: request.to_string(),
        entry,
        field,
        expected,
    };
    let mut merged = VfConfig::default();
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
            let cfg = parse_entry(&opaque.parameters.0).map_err(|(field, expected)| {
                error(Some(format!("config[{index}] ({source})")), field, expected)
            })?;
            merged.overlay(cfg);
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
    validate(&merged).map_err(|e| error(None, e.field, e.expected))
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

    const D: &str = "sriov.dra.dev";

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
        ];
        let cfg = configs_for_request("ns/c", D, &configs, "nic").unwrap();
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
        ];
        let cfg = configs_for_request("ns/c", D, &configs, "nic/fast").unwrap();
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
        let err = configs_for_request("ns/c", D, &configs, "nic").unwrap_err();
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
        let err = configs_for_request("ns/c", D, &configs, "nic").unwrap_err();
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
        assert_eq!(
            configs_for_request("ns/c", D, &configs, "nic")
                .unwrap_err()
                .field,
            "kind"
        );

        let configs = [entry(
            FROM_CLAIM,
            &[],
            D,
            vf(serde_json::json!({"spoofchk": false})),
        )];
        assert_eq!(
            configs_for_request("ns/c", D, &configs, "nic")
                .unwrap_err()
                .field,
            "spoofchk"
        );
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
        let err = configs_for_request("ns/c", D, &configs, "nic").unwrap_err();
        assert_eq!((err.field.as_str(), err.entry), ("minTxRateMbps", None));
    }
}
