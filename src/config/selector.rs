//! Device selectors: which of the node's functions are offered.
//!
//! A device is offered when any selector matches it; a selector matches
//! when every field it sets matches; a field matches when any of its values
//! does. `pfNames` takes sriov-network-device-plugin's `ens1f0#0-7` form,
//! extended to lists of ranges (`ens1f0#0-3,6`).

use std::fmt;
use std::str::FromStr;

use serde::Deserialize;
use sriov::PciAddress;
use sriov::inventory::{LinkType, Role};

use crate::inventory::NodeDevice;

/// One selector from the node config.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DeviceSelector {
    /// PCI vendor IDs, hex (`15b3`).
    #[serde(default)]
    pub vendors: Vec<HexId>,
    /// PCI device IDs, hex (`101e`).
    #[serde(default)]
    pub devices: Vec<HexId>,
    /// Bound kernel drivers (`mlx5_core`, `iavf`, `vfio-pci`).
    #[serde(default)]
    pub drivers: Vec<String>,
    /// PF interface names, optionally with VF index ranges.
    #[serde(default)]
    pub pf_names: Vec<PfName>,
    /// Exact PCI addresses.
    #[serde(default)]
    pub pci_addresses: Vec<PciAddress>,
    /// `ethernet` or `infiniband`.
    #[serde(default)]
    pub link_types: Vec<LinkTypeName>,
    /// Only devices with (true) or without (false) an RDMA device.
    #[serde(default)]
    pub rdma: Option<bool>,
}

impl DeviceSelector {
    /// True when no field is set.
    pub fn is_empty(&self) -> bool {
        self.vendors.is_empty()
            && self.devices.is_empty()
            && self.drivers.is_empty()
            && self.pf_names.is_empty()
            && self.pci_addresses.is_empty()
            && self.link_types.is_empty()
            && self.rdma.is_none()
    }

    /// Whether `dev` satisfies every field this selector sets.
    pub fn matches(&self, dev: &NodeDevice) -> bool {
        let f = &dev.function;
        any_or_unset(&self.vendors, |v| v.0 == f.vendor_id)
            && any_or_unset(&self.devices, |d| d.0 == f.device_id)
            && any_or_unset(&self.drivers, |d| f.driver.as_deref() == Some(d.as_str()))
            && any_or_unset(&self.pf_names, |p| p.matches(dev))
            && any_or_unset(&self.pci_addresses, |a| *a == f.address)
            && any_or_unset(&self.link_types, |l| l.0 == f.link_type)
            && self.rdma.is_none_or(|want| want == dev.rdma.is_some())
    }
}

fn any_or_unset<T>(values: &[T], pred: impl Fn(&T) -> bool) -> bool {
    values.is_empty() || values.iter().any(pred)
}

/// A 16-bit PCI ID written in hex, with or without `0x`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HexId(pub u16);

impl<'de> Deserialize<'de> for HexId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        let digits = s.strip_prefix("0x").unwrap_or(&s);
        if digits.is_empty() || digits.len() > 4 || !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(serde::de::Error::custom(format!(
                "invalid PCI ID {s:?}: expected up to 4 hex digits, e.g. \"15b3\""
            )));
        }
        u16::from_str_radix(digits, 16)
            .map(HexId)
            .map_err(serde::de::Error::custom)
    }
}

/// `ethernet` or `infiniband`, as in the `linkType` attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkTypeName(pub LinkType);

impl<'de> Deserialize<'de> for LinkTypeName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        match s.as_str() {
            "ethernet" => Ok(LinkTypeName(LinkType::Ethernet)),
            "infiniband" => Ok(LinkTypeName(LinkType::Infiniband)),
            _ => Err(serde::de::Error::custom(format!(
                "invalid link type {s:?}: expected ethernet or infiniband"
            ))),
        }
    }
}

/// An inclusive range of VF indexes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VfRange {
    /// First index.
    pub first: u32,
    /// Last index, inclusive.
    pub last: u32,
}

/// A PF interface name with optional VF ranges: `ens1f0`, `ens1f0#0-7`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PfName {
    /// The PF's netdev name.
    pub name: String,
    /// VF index ranges; empty means every VF (and the PF itself when PFs
    /// are offered).
    pub ranges: Vec<VfRange>,
}

impl PfName {
    fn matches(&self, dev: &NodeDevice) -> bool {
        match dev.function.role {
            Role::Vf { index, .. } => {
                dev.pf_name.as_deref() == Some(self.name.as_str())
                    && (self.ranges.is_empty()
                        || self
                            .ranges
                            .iter()
                            .any(|r| (r.first..=r.last).contains(&index)))
            }
            _ => {
                self.ranges.is_empty()
                    && dev.function.netdev.as_ref().map(|n| n.name.as_str())
                        == Some(self.name.as_str())
            }
        }
    }
}

impl FromStr for PfName {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad = |why: &str| {
            format!("invalid pfName {s:?}: {why} (expected e.g. \"ens1f0\" or \"ens1f0#0-7,10\")")
        };
        let (name, ranges) = match s.split_once('#') {
            Some((n, r)) => (n, Some(r)),
            None => (s, None),
        };
        if let Some(why) = sriov::ifname::ifname_problem(name) {
            return Err(bad(&format!("the interface name {why}")));
        }
        let mut parsed = Vec::new();
        for part in ranges
            .map(|r| r.split(',').collect())
            .unwrap_or_else(Vec::new)
        {
            let (a, b) = part.split_once('-').unwrap_or((part, part));
            let (Ok(first), Ok(last)) = (a.trim().parse::<u32>(), b.trim().parse::<u32>()) else {
                return Err(bad("VF ranges must be numbers"));
            };
            if first > last {
                return Err(bad("a range's start is after its end"));
            }
            parsed.push(VfRange { first, last });
        }
        Ok(PfName {
            name: name.to_string(),
            ranges: parsed,
        })
    }
}

impl fmt::Display for PfName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)?;
        for (i, r) in self.ranges.iter().enumerate() {
            let sep = if i == 0 { '#' } else { ',' };
            write!(f, "{sep}{}-{}", r.first, r.last)?;
        }
        Ok(())
    }
}

impl<'de> Deserialize<'de> for PfName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pf_names_with_ranges() {
        let p: PfName = "ens1f0#0-3,6".parse().unwrap();
        assert_eq!(p.name, "ens1f0");
        assert_eq!(
            p.ranges,
            [VfRange { first: 0, last: 3 }, VfRange { first: 6, last: 6 }]
        );
        assert_eq!(p.to_string(), "ens1f0#0-3,6-6");
        assert!("ens1f0".parse::<PfName>().unwrap().ranges.is_empty());
        for bad in [
            "#0-1",
            "ens1f0#",
            "ens1f0#a-b",
            "ens1f0#5-1",
            "averyveryverylongname0",
        ] {
            assert!(bad.parse::<PfName>().is_err(), "{bad}");
        }
    }
}
