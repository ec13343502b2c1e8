//! The tenant check: which of a claim's own `VfConfig` values its
//! DeviceClass lets it set.
//!
//! Only the claim's values (`source: FromClaim`) are checked; the class's
//! `VfConfig` was written by the admin and may set anything. A claim value
//! equal to what the class's own config gives changes nothing and passes
//! (a template that restates `spoofChk: true` is not asking for more).
//!
//! Without a `VfPolicy` a claim may set [`NO_POLICY_ALLOWS`]: fields that
//! change nothing outside the pod, and a pool of the node config (pools are
//! the admin's, and the node offers every one of them by default). `vlan: 0`
//! passes too, unless the class's config sets a VLAN: a claim turning that
//! off would put the VF on the PF's untagged network, so it then takes an
//! `allowedVlans` that lists 0 explicitly. With
//! policies, every one of them must allow each value (the strictest wins):
//! a class with two `VfPolicy` entries is read as two bounds, never as one
//! loosening the other.

use std::fmt;

use ipam::{IpNetwork, RouteConfig};
use serde::{Deserialize, Serialize};
use sriov::vf_config::{LinkState, MacAddress, VlanProto};

use super::vfconfig::{Mode, VfConfig};
use super::vfpolicy::{ClaimField, IdRange, VfPolicy};

/// What a claim may set when its class has no `VfPolicy`, as errors say it.
pub const NO_POLICY_ALLOWS: &str = "ifName, mtu, routes, rdma.exclusive and ipam.pool";

/// A class's `VfPolicy` with the config entry it came from (`config[4]
/// (FromClass)`), to tell several apart in errors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabeledPolicy {
    /// Where the entry is in the claim's allocation.
    pub entry: String,
    /// The policy.
    pub policy: VfPolicy,
}

/// Which class bounded a request and with which policies; kept in the
/// claim record so that the debug API shows why a claim was allowed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AppliedPolicy {
    /// The DeviceClass the request names (`exactly.deviceClassName`, or a
    /// subrequest's); `None` when the claim's spec names none for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_class: Option<String>,
    /// The class's `VfPolicy` documents that applied; empty: the defaults.
    #[serde(default)]
    pub vf_policies: Vec<VfPolicy>,
}

/// A claim value its class does not allow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyViolation {
    /// The field as the claim spells it (`vlan`, `ipam.static`).
    pub field: &'static str,
    /// The value the claim asked for, as written in errors.
    pub value: String,
    /// The DeviceClass, when the claim's spec names it.
    pub device_class: Option<String>,
    /// The rule that refused it: what is allowed instead.
    pub rule: String,
}

impl PolicyViolation {
    /// The part after `field X: `, e.g. `200 is not allowed by DeviceClass
    /// sriov-fronthaul (allowed: 100-199)`.
    pub fn expected(&self) -> String {
        let class = match &self.device_class {
            Some(name) => format!("DeviceClass {name}"),
            None => "the request's DeviceClass".to_string(),
        };
        format!("{} is not allowed by {class} ({})", self.value, self.rule)
    }
}

impl fmt::Display for PolicyViolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "field {}: {}", self.field, self.expected())
    }
}

impl std::error::Error for PolicyViolation {}

/// One value a claim asks for that differs from what its class gives.
#[derive(Debug, Clone, PartialEq)]
enum Ask {
    Mode(Mode),
    Mtu(u32),
    Mac(MacAddress),
    Vlan(u32),
    /// `vlan: 0` where the class's config sets a VLAN: leaving the class's
    /// VLAN for the PF's untagged network, which is no tenant's.
    Untag {
        class_vlan: u32,
    },
    VlanQos(u32),
    VlanProto(VlanProto),
    SpoofChk(bool),
    Trust(bool),
    LinkState(LinkState),
    MinTxRate(u32),
    MaxTxRate(u32),
    Pool(String),
    Static(IpNetwork),
    Routes(Vec<RouteConfig>),
    RdmaExclusive(bool),
}

impl Ask {
    fn field(&self) -> &'static str {
        match self {
            Ask::Mode(_) => "mode",
            Ask::Mtu(_) => "mtu",
            Ask::Mac(_) => "mac",
            Ask::Vlan(_) | Ask::Untag { .. } => "vlan",
            Ask::VlanQos(_) => "vlanQoS",
            Ask::VlanProto(_) => "vlanProto",
            Ask::SpoofChk(_) => "spoofChk",
            Ask::Trust(_) => "trust",
            Ask::LinkState(_) => "linkState",
            Ask::MinTxRate(_) => "minTxRateMbps",
            Ask::MaxTxRate(_) => "maxTxRateMbps",
            Ask::Pool(_) => "ipam.pool",
            Ask::Static(_) => "ipam.static",
            Ask::Routes(_) => "routes",
            Ask::RdmaExclusive(_) => "rdma.exclusive",
        }
    }

    fn value(&self) -> String {
        match self {
            Ask::Mode(m) => m.to_string(),
            Ask::Mtu(n)
            | Ask::Vlan(n)
            | Ask::VlanQos(n)
            | Ask::MinTxRate(n)
            | Ask::MaxTxRate(n) => n.to_string(),
            Ask::Untag { .. } => "0".to_string(),
            Ask::Mac(m) => m.to_string(),
            Ask::VlanProto(p) => p.to_string(),
            Ask::SpoofChk(b) | Ask::Trust(b) | Ask::RdmaExclusive(b) => b.to_string(),
            Ask::LinkState(s) => s.to_string(),
            Ask::Pool(p) => format!("{p:?}"),
            Ask::Static(a) => a.to_string(),
            Ask::Routes(routes) => {
                let each: Vec<String> = routes
                    .iter()
                    .map(|r| match r.gw {
                        Some(gw) => format!("{} via {gw}", r.dst),
                        None => r.dst.to_string(),
                    })
                    .collect();
                format!("[{}]", each.join(", "))
            }
        }
    }

    /// The `claimMaySet` entry that governs this value, if it is one of
    /// those all-or-nothing fields.
    fn claim_field(&self) -> Option<ClaimField> {
        Some(match self {
            Ask::Mode(_) => ClaimField::Mode,
            Ask::Mtu(_) => ClaimField::Mtu,
            Ask::Mac(_) => ClaimField::Mac,
            Ask::SpoofChk(_) => ClaimField::SpoofChk,
            Ask::Trust(_) => ClaimField::Trust,
            Ask::LinkState(_) => ClaimField::LinkState,
            Ask::MinTxRate(_) => ClaimField::MinTxRateMbps,
            Ask::MaxTxRate(_) => ClaimField::MaxTxRateMbps,
            Ask::Routes(_) => ClaimField::Routes,
            Ask::RdmaExclusive(_) => ClaimField::Rdma,
            Ask::Vlan(_)
            | Ask::Untag { .. }
            | Ask::VlanQos(_)
            | Ask::VlanProto(_)
            | Ask::Pool(_)
            | Ask::Static(_) => {
                return None;
            }
        })
    }

    /// Whether a class without any `VfPolicy` lets a claim ask this.
    fn allowed_without_policy(&self) -> bool {
        matches!(
            self,
            Ask::Mtu(_) | Ask::Routes(_) | Ask::RdmaExclusive(_) | Ask::Pool(_) | Ask::Vlan(0)
        )
    }

    /// `Ok` when `policy` allows this value, else the rule that refuses it.
    fn check(&self, policy: &VfPolicy) -> Result<(), String> {
        if let Some(field) = self.claim_field() {
            return if policy.may_set(field) {
                Ok(())
            } else {
                Err(match &policy.claim_may_set {
                    Some(list) if list.is_empty() => "claimMaySet is empty".to_string(),
                    Some(list) => format!("claimMaySet: {}", joined(list)),
                    None => {
                        "its VfPolicy has no claimMaySet, which allows only mtu, routes and rdma"
                            .to_string()
                    }
                })
            };
        }
        let (allowed, rule) = match self {
            Ask::Vlan(id) => (
                policy.allows_vlan(*id),
                ranges_rule("allowedVlans", &policy.allowed_vlans, ", so only vlan 0"),
            ),
            Ask::Untag { class_vlan } => (
                policy.allows_untagging(),
                format!(
                    "the class sets vlan {class_vlan}; allowedVlans must list 0 to let a claim leave it untagged"
                ),
            ),
            Ask::VlanQos(qos) => (
                policy.allows_vlan_qos(*qos),
                ranges_rule("allowedVlanQoS", &policy.allowed_vlan_qos, ""),
            ),
            Ask::VlanProto(proto) => (
                policy.allows_vlan_proto(*proto),
                list_rule("allowedVlanProtos", policy.allowed_vlan_protos.as_deref()),
            ),
            Ask::Pool(pool) => (
                policy.allows_pool(pool),
                list_rule("allowedPools", policy.allowed_pools.as_deref()),
            ),
            Ask::Static(address) => (
                policy.allows_static(address),
                match &policy.allow_static_addresses {
                    Some(list) if !list.is_empty() => format!("allowed inside: {}", joined(list)),
                    _ => list_rule(
                        "allowStaticAddresses",
                        policy.allow_static_addresses.as_deref(),
                    ),
                },
            ),
            _ => (true, String::new()),
        };
        if allowed { Ok(()) } else { Err(rule) }
    }
}

fn joined<T: fmt::Display>(items: &[T]) -> String {
    items
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// `allowed: a, b`, or why nothing is.
fn list_rule<T: fmt::Display>(name: &str, list: Option<&[T]>) -> String {
    match list {
        Some([]) => format!("{name} is empty"),
        Some(list) => format!("allowed: {}", joined(list)),
        None => format!("its VfPolicy has no {name}"),
    }
}

fn ranges_rule(name: &str, ranges: &Option<Vec<IdRange>>, when_none: &str) -> String {
    match ranges {
        Some(list) if !list.is_empty() => format!("allowed: {}", joined(list)),
        Some(_) => format!("{name} is empty{when_none}"),
        None => format!("its VfPolicy has no {name}{when_none}"),
    }
}

/// The claim's value of a field when it sets one the class does not give
/// as is.
fn differs<'a, T: PartialEq>(claim: &'a Option<T>, class: &Option<T>) -> Option<&'a T> {
    claim.as_ref().filter(|v| class.as_ref() != Some(*v))
}

/// What `claim` asks for beyond `class`, in the order of the `VfConfig`
/// fields. `ifName` is never an ask: it names the interface inside the
/// pod's own namespace.
fn asks(claim: &VfConfig, class: &VfConfig) -> Vec<Ask> {
    let mut out = Vec::new();
    if let Some(mode) = claim.mode
        && mode != class.mode.unwrap_or_default()
    {
        out.push(Ask::Mode(mode));
    }
    out.extend(differs(&claim.mtu, &class.mtu).map(|v| Ask::Mtu(*v)));
    out.extend(differs(&claim.mac, &class.mac).map(|v| Ask::Mac(*v)));
    out.extend(
        differs(&claim.vlan, &class.vlan).map(|v| match (*v, class.vlan) {
            (0, Some(class_vlan)) if class_vlan != 0 => Ask::Untag { class_vlan },
            (v, _) => Ask::Vlan(v),
        }),
    );
    out.extend(differs(&claim.vlan_qos, &class.vlan_qos).map(|v| Ask::VlanQos(*v)));
    out.extend(differs(&claim.vlan_proto, &class.vlan_proto).map(|v| Ask::VlanProto(*v)));
    out.extend(differs(&claim.spoof_chk, &class.spoof_chk).map(|v| Ask::SpoofChk(*v)));
    out.extend(differs(&claim.trust, &class.trust).map(|v| Ask::Trust(*v)));
    out.extend(differs(&claim.link_state, &class.link_state).map(|v| Ask::LinkState(*v)));
    out.extend(
        differs(&claim.min_tx_rate_mbps, &class.min_tx_rate_mbps).map(|v| Ask::MinTxRate(*v)),
    );
    out.extend(
        differs(&claim.max_tx_rate_mbps, &class.max_tx_rate_mbps).map(|v| Ask::MaxTxRate(*v)),
    );
    if let Some(ipam) = differs(&claim.ipam, &class.ipam) {
        out.extend(ipam.pool.clone().map(Ask::Pool));
        out.extend(
            ipam.static_addresses
                .iter()
                .flatten()
                .map(|a| Ask::Static(*a)),
        );
    }
    out.extend(differs(&claim.routes, &class.routes).map(|v| Ask::Routes(v.clone())));
    let exclusive = |c: &VfConfig| c.rdma.as_ref().and_then(|r| r.exclusive);
    out.extend(differs(&exclusive(claim), &exclusive(class)).map(|v| Ask::RdmaExclusive(*v)));
    out
}

/// Checks the values a claim sets itself (`claim`, its `FromClaim` entries
/// laid over each other) against its class: the class's own merged
/// `VfConfig` (`class`), the class's name and its `VfPolicy` entries that
/// apply to the request. The first value refused is the error.
pub fn check_claim_values(
    claim: &VfConfig,
    class: &VfConfig,
    device_class: Option<&str>,
    policies: &[LabeledPolicy],
) -> Result<(), PolicyViolation> {
    for ask in asks(claim, class) {
        let refused = if policies.is_empty() {
            (!ask.allowed_without_policy()).then(|| {
                format!("the class has no VfPolicy; a claim may set only {NO_POLICY_ALLOWS}")
            })
        } else {
            policies.iter().find_map(|p| {
                ask.check(&p.policy).err().map(|rule| {
                    if policies.len() > 1 {
                        format!("{}: {rule}", p.entry)
                    } else {
                        rule
                    }
                })
            })
        };
        if let Some(rule) = refused {
            return Err(PolicyViolation {
                field: ask.field(),
                value: ask.value(),
                device_class: device_class.map(str::to_string),
                rule,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vf(json: serde_json::Value) -> VfConfig {
        let mut doc =
            serde_json::json!({"apiVersion": "sriov.dra.dev/v1alpha1", "kind": "VfConfig"});
        if let (Some(d), Some(j)) = (doc.as_object_mut(), json.as_object()) {
            d.extend(j.clone());
        }
        serde_json::from_value(doc).unwrap()
    }

    fn policy(json: serde_json::Value) -> LabeledPolicy {
        let mut doc =
            serde_json::json!({"apiVersion": "sriov.dra.dev/v1alpha1", "kind": "VfPolicy"});
        if let (Some(d), Some(j)) = (doc.as_object_mut(), json.as_object()) {
            d.extend(j.clone());
        }
        LabeledPolicy {
            entry: "config[0] (FromClass)".into(),
            policy: serde_json::from_value(doc).unwrap(),
        }
    }

    /// The error text for a claim asking `claim` of class `sriov-fronthaul`.
    fn refusal(claim: serde_json::Value, policies: &[LabeledPolicy]) -> Option<String> {
        check_claim_values(
            &vf(claim),
            &vf(serde_json::json!({})),
            Some("sriov-fronthaul"),
            policies,
        )
        .err()
        .map(|e| e.to_string())
    }

    #[test]
    fn a_vlan_outside_the_allowed_ranges_names_value_class_and_rule() {
        let p = [policy(serde_json::json!({"allowedVlans": ["100-199"]}))];
        assert_eq!(refusal(serde_json::json!({"vlan": 150}), &p), None);
        assert_eq!(
            refusal(serde_json::json!({"vlan": 200}), &p).as_deref(),
            Some(
                "field vlan: 200 is not allowed by DeviceClass sriov-fronthaul (allowed: 100-199)"
            )
        );
        assert_eq!(
            refusal(serde_json::json!({"vlan": 0}), &p),
            None,
            "untagged always"
        );
    }

    #[test]
    fn a_claim_may_not_untag_a_vlan_the_class_sets_unless_zero_is_listed() {
        let class = vf(serde_json::json!({"vlan": 100}));
        let untag = vf(serde_json::json!({"vlan": 0}));
        let check = |policies: &[LabeledPolicy]| {
            check_claim_values(&untag, &class, Some("sriov-fronthaul"), policies)
                .map_err(|e| e.to_string())
        };
        assert_eq!(
            check(&[policy(serde_json::json!({"allowedVlans": ["100-199"]}))]).unwrap_err(),
            "field vlan: 0 is not allowed by DeviceClass sriov-fronthaul (the class sets vlan 100; allowedVlans must list 0 to let a claim leave it untagged)"
        );
        assert!(
            check(&[])
                .unwrap_err()
                .contains("the class has no VfPolicy")
        );
        assert_eq!(
            check(&[policy(
                serde_json::json!({"allowedVlans": ["0", "100-199"]})
            )]),
            Ok(())
        );
    }

    #[test]
    fn without_a_policy_only_the_harmless_fields_pass() {
        for ok in [
            serde_json::json!({"ifName": "fh0", "mtu": 9000, "ipam": {"pool": "any"}}),
            serde_json::json!({"routes": [{"dst": "10.9.0.0/16"}], "rdma": {"exclusive": true}}),
            serde_json::json!({"vlan": 0}),
        ] {
            assert_eq!(refusal(ok.clone(), &[]), None, "{ok}");
        }
        assert_eq!(
            refusal(serde_json::json!({"trust": true}), &[]).as_deref(),
            Some(
                "field trust: true is not allowed by DeviceClass sriov-fronthaul (the class has no VfPolicy; a claim may set only ifName, mtu, routes, rdma.exclusive and ipam.pool)"
            )
        );
        for (claim, field) in [
            (serde_json::json!({"vlan": 200}), "vlan"),
            (serde_json::json!({"vlan": 0, "vlanQoS": 3}), "vlanQoS"),
            (serde_json::json!({"mac": "02:00:00:00:00:09"}), "mac"),
            (serde_json::json!({"spoofChk": false}), "spoofChk"),
            (serde_json::json!({"linkState": "enable"}), "linkState"),
            (serde_json::json!({"maxTxRateMbps": 0}), "maxTxRateMbps"),
            (serde_json::json!({"minTxRateMbps": 100}), "minTxRateMbps"),
            (
                serde_json::json!({"ipam": {"static": ["10.1.0.9/24"]}}),
                "ipam.static",
            ),
            (serde_json::json!({"mode": "dpdk"}), "mode"),
        ] {
            let err = refusal(claim.clone(), &[]).expect("refused");
            assert!(
                err.starts_with(&format!("field {field}: ")),
                "{claim}: {err}"
            );
        }
    }

    #[test]
    fn a_value_the_class_already_gives_is_not_an_ask() {
        let class = vf(
            serde_json::json!({"spoofChk": true, "vlan": 300, "mode": "dpdk",
                                          "ipam": {"static": ["10.7.0.1/24"]}}),
        );
        let claim = vf(
            serde_json::json!({"spoofChk": true, "vlan": 300, "mode": "dpdk",
                                          "ipam": {"static": ["10.7.0.1/24"]}}),
        );
        assert_eq!(check_claim_values(&claim, &class, None, &[]), Ok(()));
        // `netdevice` is what a class without a mode gives.
        let netdevice = vf(serde_json::json!({"mode": "netdevice"}));
        assert_eq!(
            check_claim_values(&netdevice, &vf(serde_json::json!({})), None, &[]),
            Ok(())
        );
        // But turning spoof checking off is.
        let off = vf(serde_json::json!({"spoofChk": false}));
        let err = check_claim_values(&off, &class, None, &[]).unwrap_err();
        assert_eq!(err.field, "spoofChk");
        assert!(
            err.expected()
                .starts_with("false is not allowed by the request's DeviceClass")
        );
    }

    #[test]
    fn claim_may_set_given_is_the_whole_list_and_absent_is_the_default() {
        let trust_only = [policy(serde_json::json!({"claimMaySet": ["trust"]}))];
        assert_eq!(
            refusal(serde_json::json!({"trust": true}), &trust_only),
            None
        );
        assert_eq!(
            refusal(serde_json::json!({"mtu": 9000}), &trust_only).as_deref(),
            Some(
                "field mtu: 9000 is not allowed by DeviceClass sriov-fronthaul (claimMaySet: trust)"
            )
        );
        let absent = [policy(serde_json::json!({"allowedVlans": ["100"]}))];
        assert_eq!(refusal(serde_json::json!({"mtu": 9000}), &absent), None);
        assert_eq!(
            refusal(serde_json::json!({"mac": "02:00:00:00:00:01"}), &absent).as_deref(),
            Some(
                "field mac: 02:00:00:00:00:01 is not allowed by DeviceClass sriov-fronthaul (its VfPolicy has no claimMaySet, which allows only mtu, routes and rdma)"
            )
        );
    }

    #[test]
    fn pools_and_static_addresses_follow_their_lists() {
        let p = [policy(serde_json::json!({
            "allowedPools": ["fronthaul"], "allowStaticAddresses": ["10.1.0.0/24"]}))];
        assert_eq!(
            refusal(serde_json::json!({"ipam": {"pool": "fronthaul"}}), &p),
            None
        );
        assert_eq!(
            refusal(serde_json::json!({"ipam": {"pool": "bulk"}}), &p).as_deref(),
            Some(
                "field ipam.pool: \"bulk\" is not allowed by DeviceClass sriov-fronthaul (allowed: fronthaul)"
            )
        );
        assert_eq!(
            refusal(serde_json::json!({"ipam": {"static": ["10.1.0.7/24"]}}), &p),
            None
        );
        assert_eq!(
            refusal(
                serde_json::json!({"ipam": {"static": ["10.1.0.7/24", "10.2.0.7/24"]}}),
                &p
            )
            .as_deref(),
            Some(
                "field ipam.static: 10.2.0.7/24 is not allowed by DeviceClass sriov-fronthaul (allowed inside: 10.1.0.0/24)"
            )
        );
        let none = [policy(serde_json::json!({}))];
        assert_eq!(
            refusal(
                serde_json::json!({"ipam": {"static": ["10.1.0.7/24"]}}),
                &none
            )
            .as_deref(),
            Some(
                "field ipam.static: 10.1.0.7/24 is not allowed by DeviceClass sriov-fronthaul (its VfPolicy has no allowStaticAddresses)"
            )
        );
    }

    #[test]
    fn vlan_qos_and_proto_need_their_own_lists() {
        let p = [policy(serde_json::json!({
            "allowedVlans": ["100-199"], "allowedVlanQoS": ["0-3"], "allowedVlanProtos": ["802.1Q"]}))];
        assert_eq!(
            refusal(
                serde_json::json!({"vlan": 100, "vlanQoS": 3, "vlanProto": "802.1Q"}),
                &p
            ),
            None
        );
        assert_eq!(
            refusal(serde_json::json!({"vlan": 100, "vlanQoS": 5}), &p).as_deref(),
            Some("field vlanQoS: 5 is not allowed by DeviceClass sriov-fronthaul (allowed: 0-3)")
        );
        assert_eq!(
            refusal(serde_json::json!({"vlan": 100, "vlanProto": "802.1ad"}), &p).as_deref(),
            Some(
                "field vlanProto: 802.1ad is not allowed by DeviceClass sriov-fronthaul (allowed: 802.1Q)"
            )
        );
    }

    #[test]
    fn every_policy_must_allow_a_value_and_the_refusing_one_is_named() {
        let mut narrow = policy(serde_json::json!({"allowedVlans": ["150-160"]}));
        narrow.entry = "config[3] (FromClass)".into();
        let both = [
            policy(serde_json::json!({"allowedVlans": ["100-199"]})),
            narrow,
        ];
        assert_eq!(refusal(serde_json::json!({"vlan": 155}), &both), None);
        assert_eq!(
            refusal(serde_json::json!({"vlan": 120}), &both).as_deref(),
            Some(
                "field vlan: 120 is not allowed by DeviceClass sriov-fronthaul (config[3] (FromClass): allowed: 150-160)"
            )
        );
    }

    #[test]
    fn routes_are_written_readably() {
        let p = [policy(serde_json::json!({"claimMaySet": []}))];
        assert_eq!(
            refusal(
                serde_json::json!({"routes": [{"dst": "10.9.0.0/16", "gw": "10.1.0.1"}, {"dst": "10.8.0.0/16"}]}),
                &p
            )
            .as_deref(),
            Some(
                "field routes: [10.9.0.0/16 via 10.1.0.1, 10.8.0.0/16] is not allowed by DeviceClass sriov-fronthaul (claimMaySet is empty)"
            )
        );
    }
}
