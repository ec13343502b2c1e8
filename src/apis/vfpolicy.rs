//! `VfPolicy`: what the cluster admin lets a tenant's claim set on a VF.
//!
//! A ResourceClaim is written by whoever may create pods in a namespace; a
//! DeviceClass by the admin. VLAN separation is the isolation boundary of a
//! telco cluster, so a claim must not pick another tenant's VLAN, turn
//! `trust` on or `spoofChk` off, choose a MAC or take a static address
//! outside what the admin meant. The class states those bounds in a
//! `VfPolicy` document (honoured only from the class: see
//! [`super::merge`]); [`super::policy`] checks a claim's values against it.
//!
//! Each field left out keeps the default for what it governs; a field
//! that is given is the whole list (an empty list allows nothing). The
//! defaults are those of a class without any policy, except that a policy
//! is needed at all for the privileged fields:
//!
//! | field | absent | given |
//! |---|---|---|
//! | `allowedVlans` | only `vlan: 0` | those IDs, and 0 (but see below) |
//! | `allowedVlanQoS` | none | those priorities |
//! | `allowedVlanProtos` | none | those protocols |
//! | `allowedPools` | any pool | those pools |
//! | `allowStaticAddresses` | none | addresses inside those CIDRs |
//! | `claimMaySet` | `mtu`, `routes`, `rdma` | exactly those fields |
//!
//! `vlan: 0` (untagged) is allowed unless the class's own config sets a
//! VLAN: turning that off takes an `allowedVlans` that lists 0.
//!
//! Parsing is strict like `VfConfig`'s: a misspelt `alowedVlans` silently
//! ignored would refuse (or worse, allow) the wrong VLANs.

use std::fmt;
use std::str::FromStr;

use ipam::IpNetwork;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sriov::vf_config::VlanProto;

use super::validate::FieldError;

/// The policy's kind (its apiVersion is [`super::API_VERSION`]).
pub const POLICY_KIND: &str = "VfPolicy";

/// Highest VLAN ID a VF takes (4095 is reserved).
pub const MAX_VLAN: u32 = 4094;
/// Highest 802.1p priority.
pub const MAX_VLAN_QOS: u32 = 7;

/// An inclusive range of small IDs, written `"100-199"` or `"300"` (a bare
/// number is accepted too, as YAML writes `[100-199, 300]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdRange {
    /// First ID in the range.
    pub first: u32,
    /// Last ID in the range (equal to `first` for a single ID).
    pub last: u32,
}

impl IdRange {
    /// Whether `id` is in the range.
    pub fn contains(&self, id: u32) -> bool {
        (self.first..=self.last).contains(&id)
    }
}

impl FromStr for IdRange {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let bad = || format!("{text:?} is not a number or a range like \"100-199\"");
        let number = |s: &str| s.trim().parse::<u32>().map_err(|_| bad());
        let (first, last) = match text.split_once('-') {
            Some((a, b)) => (number(a)?, number(b)?),
            None => {
                let n = number(text)?;
                (n, n)
            }
        };
        if first > last {
            return Err(format!(
                "{text:?} starts above its end; expected FIRST-LAST with FIRST <= LAST"
            ));
        }
        Ok(IdRange { first, last })
    }
}

impl fmt::Display for IdRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.first == self.last {
            write!(f, "{}", self.first)
        } else {
            write!(f, "{}-{}", self.first, self.last)
        }
    }
}

impl Serialize for IdRange {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for IdRange {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = IdRange;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a number or a range like \"100-199\"")
            }
            fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<IdRange, E> {
                let n = u32::try_from(n).map_err(|_| {
                    E::custom(format!("{n} is not a number or a range like \"100-199\""))
                })?;
                Ok(IdRange { first: n, last: n })
            }
            fn visit_i64<E: serde::de::Error>(self, n: i64) -> Result<IdRange, E> {
                u64::try_from(n)
                    .map_err(|_| E::custom(format!("{n} is negative; expected 0 or more")))
                    .and_then(|n| self.visit_u64(n))
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<IdRange, E> {
                s.parse().map_err(E::custom)
            }
        }
        d.deserialize_any(Visitor)
    }
}

/// A field a claim may be allowed to set through `claimMaySet`.
///
/// `ifName` is not here: it names the interface inside the pod's own
/// namespace and is always the claim's to choose. `vlan`, `vlanQoS`,
/// `vlanProto`, `ipam.pool` and `ipam.static` are bounded by value
/// (`allowedVlans`, ...) rather than all-or-nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ClaimField {
    /// `trust`: promiscuous mode and MAC changes from inside the pod.
    Trust,
    /// `spoofChk`: turning it off lets the VF send as any MAC.
    SpoofChk,
    /// `mac`: the administrative MAC; another tenant's MAC steals its traffic.
    Mac,
    /// `linkState`: `enable` keeps the VF up while the uplink is down.
    LinkState,
    /// `minTxRateMbps`: a bandwidth guarantee taken from the PF's others.
    MinTxRateMbps,
    /// `maxTxRateMbps`: lifting a rate limit the class set.
    MaxTxRateMbps,
    /// `mtu` (claim-settable by default).
    Mtu,
    /// `routes` (claim-settable by default).
    Routes,
    /// `rdma.exclusive` (claim-settable by default).
    Rdma,
    /// `mode`: `dpdk` binds the VF to vfio-pci and hands the pod a DMA-capable
    /// device (unconfined under vfio no-IOMMU), so which mode a class
    /// serves is the admin's choice unless the policy lets the claim pick.
    Mode,
}

impl ClaimField {
    /// The fields a claim may set when a policy gives no `claimMaySet`:
    /// they change nothing outside the pod.
    pub const DEFAULT: [ClaimField; 3] = [ClaimField::Mtu, ClaimField::Routes, ClaimField::Rdma];

    /// The name as `claimMaySet` spells it.
    pub fn name(self) -> &'static str {
        match self {
            ClaimField::Trust => "trust",
            ClaimField::SpoofChk => "spoofChk",
            ClaimField::Mac => "mac",
            ClaimField::LinkState => "linkState",
            ClaimField::MinTxRateMbps => "minTxRateMbps",
            ClaimField::MaxTxRateMbps => "maxTxRateMbps",
            ClaimField::Mtu => "mtu",
            ClaimField::Routes => "routes",
            ClaimField::Rdma => "rdma",
            ClaimField::Mode => "mode",
        }
    }
}

impl fmt::Display for ClaimField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One `VfPolicy` document from a DeviceClass config.
///
/// `None` means "not given": the default for what the field governs (see
/// the module documentation); `Some(vec![])` allows nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VfPolicy {
    /// Must be [`super::API_VERSION`].
    pub api_version: String,
    /// Must be [`POLICY_KIND`].
    pub kind: String,
    /// VLAN IDs a claim may ask for; `vlan: 0` (untagged) is always allowed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_vlans: Option<Vec<IdRange>>,
    /// 802.1p priorities (0-7) a claim may ask for.
    #[serde(
        default,
        rename = "allowedVlanQoS",
        skip_serializing_if = "Option::is_none"
    )]
    pub allowed_vlan_qos: Option<Vec<IdRange>>,
    /// Tag protocols a claim may ask for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_vlan_protos: Option<Vec<VlanProto>>,
    /// Pools a claim may name in `ipam.pool`; absent: any pool.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_pools: Option<Vec<String>>,
    /// CIDRs inside which a claim may ask for `ipam.static` addresses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_static_addresses: Option<Vec<IpNetwork>>,
    /// The fields a claim may set at all; absent: [`ClaimField::DEFAULT`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claim_may_set: Option<Vec<ClaimField>>,
}

impl VfPolicy {
    /// Checks what serde cannot: ranges inside the IDs a VF takes, pool
    /// names not empty. Names the field and the entry at fault.
    pub fn validate(&self) -> Result<(), FieldError> {
        let check = |field: &str, ranges: &Option<Vec<IdRange>>, max: u32| {
            for (i, r) in ranges.iter().flatten().enumerate() {
                if r.last > max {
                    return Err(FieldError {
                        field: format!("{field}[{i}]"),
                        expected: format!("{r} is out of range; expected 0-{max}"),
                    });
                }
            }
            Ok(())
        };
        check("allowedVlans", &self.allowed_vlans, MAX_VLAN)?;
        check("allowedVlanQoS", &self.allowed_vlan_qos, MAX_VLAN_QOS)?;
        if let Some(i) = self
            .allowed_pools
            .iter()
            .flatten()
            .position(|p| p.is_empty())
        {
            return Err(FieldError {
                field: format!("allowedPools[{i}]"),
                expected: "is empty; expected a pool name".into(),
            });
        }
        Ok(())
    }

    /// Whether a claim may set `field` at all.
    pub fn may_set(&self, field: ClaimField) -> bool {
        match &self.claim_may_set {
            Some(list) => list.contains(&field),
            None => ClaimField::DEFAULT.contains(&field),
        }
    }

    /// Whether a claim may ask for VLAN `id` (0, untagged, always).
    pub fn allows_vlan(&self, id: u32) -> bool {
        id == 0 || in_ranges(&self.allowed_vlans, id)
    }

    /// Whether a claim may turn off a VLAN its class's config sets: only
    /// when `allowedVlans` lists 0 itself, as the untagged network is no
    /// tenant's by default.
    pub fn allows_untagging(&self) -> bool {
        in_ranges(&self.allowed_vlans, 0)
    }

    /// Whether a claim may ask for 802.1p priority `qos`.
    pub fn allows_vlan_qos(&self, qos: u32) -> bool {
        in_ranges(&self.allowed_vlan_qos, qos)
    }

    /// Whether a claim may ask for tag protocol `proto`.
    pub fn allows_vlan_proto(&self, proto: VlanProto) -> bool {
        self.allowed_vlan_protos
            .as_ref()
            .is_some_and(|l| l.contains(&proto))
    }

    /// Whether a claim may name pool `pool`.
    pub fn allows_pool(&self, pool: &str) -> bool {
        self.allowed_pools
            .as_ref()
            .is_none_or(|l| l.iter().any(|p| p == pool))
    }

    /// Whether a claim may ask for static address `address`: its IP lies
    /// inside one of `allowStaticAddresses` (the prefix length is the
    /// interface's own and only shapes the pod's on-link route).
    pub fn allows_static(&self, address: &IpNetwork) -> bool {
        self.allow_static_addresses
            .iter()
            .flatten()
            .any(|cidr| cidr.contains(address.ip()))
    }
}

fn in_ranges(ranges: &Option<Vec<IdRange>>, id: u32) -> bool {
    ranges.iter().flatten().any(|r| r.contains(id))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(json: serde_json::Value) -> Result<VfPolicy, String> {
        let mut doc =
            serde_json::json!({"apiVersion": "sriov.dra.dev/v1alpha1", "kind": "VfPolicy"});
        if let (Some(d), Some(j)) = (doc.as_object_mut(), json.as_object()) {
            d.extend(j.clone());
        }
        let p: VfPolicy = serde_json::from_value(doc).map_err(|e| e.to_string())?;
        p.validate().map_err(|e| e.to_string())?;
        Ok(p)
    }

    #[test]
    fn a_full_policy_reads_with_the_api_spelling() {
        let p = policy(serde_json::json!({
            "allowedVlans": ["100-199", "300", 400],
            "allowedVlanQoS": ["0-3", 5],
            "allowedVlanProtos": ["802.1Q"],
            "allowedPools": ["fronthaul"],
            "allowStaticAddresses": ["10.1.0.0/24", "fd00:1::/64"],
            "claimMaySet": ["trust", "spoofChk", "mac", "linkState", "minTxRateMbps",
                            "maxTxRateMbps", "mtu", "routes", "rdma", "mode"],
        }))
        .unwrap();
        assert_eq!(
            p.allowed_vlans,
            Some(vec![
                IdRange {
                    first: 100,
                    last: 199
                },
                IdRange {
                    first: 300,
                    last: 300
                },
                IdRange {
                    first: 400,
                    last: 400
                },
            ])
        );
        assert_eq!(p.claim_may_set.as_ref().map(Vec::len), Some(10));
        // It writes back as it was read (ranges as text), for the debug API.
        let back = serde_json::to_value(&p).unwrap();
        assert_eq!(
            back["allowedVlans"],
            serde_json::json!(["100-199", "300", "400"])
        );
        assert_eq!(back["allowedVlanQoS"], serde_json::json!(["0-3", "5"]));
    }

    #[test]
    fn unknown_fields_and_values_are_named() {
        let err = policy(serde_json::json!({"alowedVlans": ["100"]})).unwrap_err();
        assert!(err.contains("unknown field `alowedVlans`"), "{err}");
        let err = policy(serde_json::json!({"claimMaySet": ["vlan"]})).unwrap_err();
        assert!(err.contains("unknown variant `vlan`"), "{err}");
        let err = policy(serde_json::json!({"allowedVlanProtos": ["802.1x"]})).unwrap_err();
        assert!(err.contains("unknown variant `802.1x`"), "{err}");
        let err = policy(serde_json::json!({"allowStaticAddresses": ["10.1.0.0/33"]})).unwrap_err();
        assert!(
            err.contains("10.1.0.0/33") || err.contains("prefix"),
            "{err}"
        );
    }

    #[test]
    fn vlan_ranges_parse_and_bad_ones_say_what_is_expected() {
        assert_eq!(
            "100-199".parse::<IdRange>(),
            Ok(IdRange {
                first: 100,
                last: 199
            })
        );
        assert_eq!(" 7 ".parse::<IdRange>(), Ok(IdRange { first: 7, last: 7 }));
        assert_eq!(
            "200-100".parse::<IdRange>().unwrap_err(),
            "\"200-100\" starts above its end; expected FIRST-LAST with FIRST <= LAST"
        );
        for bad in ["", "a", "1-", "-5", "1-2-3", "1..5"] {
            assert!(bad.parse::<IdRange>().is_err(), "{bad:?}");
        }
        let err = policy(serde_json::json!({"allowedVlans": ["100-5000"]})).unwrap_err();
        assert_eq!(
            err,
            "field allowedVlans[0]: 100-5000 is out of range; expected 0-4094"
        );
        let err = policy(serde_json::json!({"allowedVlanQoS": [1, "6-8"]})).unwrap_err();
        assert_eq!(
            err,
            "field allowedVlanQoS[1]: 6-8 is out of range; expected 0-7"
        );
        let err = policy(serde_json::json!({"allowedVlans": [-1]})).unwrap_err();
        assert!(err.contains("-1 is negative"), "{err}");
        let err = policy(serde_json::json!({"allowedPools": ["fronthaul", ""]})).unwrap_err();
        assert_eq!(err, "field allowedPools[1]: is empty; expected a pool name");
    }

    #[test]
    fn vlan_zero_is_always_allowed_and_ranges_are_inclusive() {
        let p = policy(serde_json::json!({"allowedVlans": ["100-199", "300"]})).unwrap();
        for (id, allowed) in [
            (0, true),
            (99, false),
            (100, true),
            (199, true),
            (200, false),
            (300, true),
        ] {
            assert_eq!(p.allows_vlan(id), allowed, "vlan {id}");
        }
        let none = policy(serde_json::json!({})).unwrap();
        assert!(none.allows_vlan(0) && !none.allows_vlan(1));
    }

    #[test]
    fn static_addresses_must_lie_inside_an_allowed_cidr() {
        let p = policy(serde_json::json!({"allowStaticAddresses": ["10.1.0.0/24", "fd00:1::/64"]}))
            .unwrap();
        let net = |s: &str| s.parse::<IpNetwork>().unwrap();
        assert!(p.allows_static(&net("10.1.0.50/24")));
        assert!(
            p.allows_static(&net("10.1.0.255/16")),
            "the prefix is the interface's"
        );
        assert!(!p.allows_static(&net("10.1.1.1/24")));
        assert!(p.allows_static(&net("fd00:1::9/64")));
        assert!(!p.allows_static(&net("fd00:2::9/64")));
        assert!(
            !policy(serde_json::json!({}))
                .unwrap()
                .allows_static(&net("10.1.0.1/24"))
        );
    }

    #[test]
    fn a_field_left_out_keeps_its_default_and_a_given_list_is_the_whole_list() {
        let defaults = policy(serde_json::json!({})).unwrap();
        assert!(defaults.allows_pool("anything"));
        assert!(defaults.may_set(ClaimField::Mtu) && defaults.may_set(ClaimField::Rdma));
        assert!(!defaults.may_set(ClaimField::Trust));
        assert!(!defaults.allows_vlan_qos(0));
        assert!(!defaults.allows_vlan_proto(VlanProto::Dot1Q));

        let given =
            policy(serde_json::json!({"allowedPools": ["fronthaul"], "claimMaySet": ["trust"]}))
                .unwrap();
        assert!(given.allows_pool("fronthaul") && !given.allows_pool("bulk"));
        assert!(given.may_set(ClaimField::Trust));
        assert!(
            !given.may_set(ClaimField::Mtu),
            "not listed, so not allowed"
        );

        let empty = policy(serde_json::json!({"allowedPools": []})).unwrap();
        assert!(!empty.allows_pool("fronthaul"));
    }
}
