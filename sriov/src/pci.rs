//! PCI addresses in the kernel's `DDDD:BB:DD.F` form.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A validated PCI function address (domain, bus, device, function).
///
/// Parsing accepts the sysfs form `0000:3b:02.1` and the short `3b:02.1`
/// (domain 0) that `lspci` prints without `-D`; display is always the full,
/// lower-case sysfs form, so an address round-trips to the directory name.
/// Ordering is numeric, which is the order `lspci` lists devices in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PciAddress {
    /// PCI segment (domain), 16 bits in practice; sysfs prints four digits.
    pub domain: u32,
    /// Bus number, 0-255.
    pub bus: u8,
    /// Device (slot) number, 0-31.
    pub device: u8,
    /// Function number, 0-7.
    pub function: u8,
}

/// Why a string is not a PCI address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid PCI address {input:?}: {reason} (expected DDDD:BB:DD.F, e.g. 0000:3b:02.1)")]
pub struct ParsePciAddressError {
    input: String,
    reason: &'static str,
}

impl PciAddress {
    /// Builds an address, checking the device and function ranges.
    pub fn new(domain: u32, bus: u8, device: u8, function: u8) -> Option<Self> {
        (device < 32 && function < 8).then_some(PciAddress {
            domain,
            bus,
            device,
            function,
        })
    }

    /// The DRA device name for this function: `pci-0000-3b-02-1`.
    ///
    /// This is a contract (DESIGN.md): claims and slices refer to devices by
    /// it, so it must stay stable across releases.
    pub fn device_name(&self) -> String {
        format!(
            "pci-{:04x}-{:02x}-{:02x}-{:x}",
            self.domain, self.bus, self.device, self.function
        )
    }

    /// Parses a DRA device name (`pci-0000-3b-02-1`) back into an address.
    pub fn from_device_name(name: &str) -> Result<Self, ParsePciAddressError> {
        let err = |reason| ParsePciAddressError {
            input: name.to_string(),
            reason,
        };
        let rest = name
            .strip_prefix("pci-")
            .ok_or_else(|| err("device name must start with \"pci-\""))?;
        let parts: Vec<&str> = rest.split('-').collect();
        let [d, b, s, f] = parts[..] else {
            return Err(err("device name must have four dash-separated fields"));
        };
        format!("{d}:{b}:{s}.{f}")
            .parse()
            .map_err(|_| err("bad field"))
    }
}

fn hex_field(s: &str, max_len: usize) -> Option<u32> {
    if s.is_empty() || s.len() > max_len || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u32::from_str_radix(s, 16).ok()
}

impl FromStr for PciAddress {
    type Err = ParsePciAddressError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let err = |reason| ParsePciAddressError {
            input: input.to_string(),
            reason,
        };
        let (head, func) = input
            .rsplit_once('.')
            .ok_or_else(|| err("missing '.' before the function number"))?;
        let fields: Vec<&str> = head.split(':').collect();
        let (domain, bus, dev) = match fields[..] {
            [d, b, s] => (hex_field(d, 4).ok_or_else(|| err("bad domain"))?, b, s),
            [b, s] => (0, b, s),
            _ => return Err(err("expected domain:bus:device")),
        };
        let bus = hex_field(bus, 2).ok_or_else(|| err("bad bus"))?;
        let dev = hex_field(dev, 2).ok_or_else(|| err("bad device"))?;
        let func = hex_field(func, 1).ok_or_else(|| err("bad function"))?;
        let (Ok(bus), Ok(dev), Ok(func)) =
            (u8::try_from(bus), u8::try_from(dev), u8::try_from(func))
        else {
            return Err(err("field out of range"));
        };
        PciAddress::new(domain, bus, dev, func)
            .ok_or_else(|| err("device must be below 0x20 and function below 8"))
    }
}

impl fmt::Display for PciAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:04x}:{:02x}:{:02x}.{:x}",
            self.domain, self.bus, self.device, self.function
        )
    }
}

impl Serialize for PciAddress {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for PciAddress {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_displays_the_sysfs_form() {
        let a: PciAddress = "0000:3B:02.1".parse().unwrap();
        assert_eq!(a, PciAddress::new(0, 0x3b, 2, 1).unwrap());
        assert_eq!(a.to_string(), "0000:3b:02.1");
        assert_eq!(a.device_name(), "pci-0000-3b-02-1");
        assert_eq!(PciAddress::from_device_name("pci-0000-3b-02-1"), Ok(a));
    }

    #[test]
    fn short_form_means_domain_zero() {
        let a: PciAddress = "af:00.0".parse().unwrap();
        assert_eq!(a.to_string(), "0000:af:00.0");
    }

    #[test]
    fn rejects_out_of_range_and_garbage() {
        for bad in [
            "",
            "0000:3b:02",
            "0000:3b:20.0",
            "0000:3b:02.8",
            "0000:3b:02.x",
            "00000:3b:02.1",
            "0000:13b:02.1",
            "0000:3b:02.1.1",
            "pci-0000-3b-02-1",
            "0000:+3:02.1",
        ] {
            let e = bad.parse::<PciAddress>().unwrap_err();
            assert!(e.to_string().contains(&format!("{bad:?}")), "{e}");
        }
        assert!(PciAddress::from_device_name("pci-0000-3b-02").is_err());
    }

    #[test]
    fn orders_numerically() {
        let mut v: Vec<PciAddress> = [
            "0000:3b:10.0",
            "0000:3b:02.1",
            "0001:00:00.0",
            "0000:3b:02.0",
        ]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
        v.sort();
        let s: Vec<String> = v.iter().map(|a| a.to_string()).collect();
        assert_eq!(
            s,
            [
                "0000:3b:02.0",
                "0000:3b:02.1",
                "0000:3b:10.0",
                "0001:00:00.0"
            ]
        );
    }
}
