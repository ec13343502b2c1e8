//! PCI addresses in the kernel's `DDDD:BB:DD.F` form.

use std::fmt;
use std::hash::{Hash, Hasher};
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A validated PCI function address (domain, bus, device, function).
///
/// Parsing accepts the sysfs form `0000:3b:02.1` and the short `3b:02.1`
/// (domain 0) that `lspci` prints without `-D`; display is always the full,
/// lower-case sysfs form, so an address round-trips to the directory name.
/// Ordering is numeric, which is the order `lspci` lists devices in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
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
        let text = self.text(b'-', b'-', b'-');
        let mut name = String::with_capacity(4 + text.as_str().len());
        name.push_str("pci-");
        name.push_str(text.as_str());
        name
    }

    /// The address as text with the given separators after the domain,
    /// bus and device, on the stack: a large node's render spells each
    /// address several times, and `write!` costs ten times as much.
    fn text(&self, after_domain: u8, after_bus: u8, after_device: u8) -> AddressText {
        let mut out = AddressText {
            bytes: [0; AddressText::CAPACITY],
            len: 0,
        };
        // At least four domain digits, more for the rare wide segment.
        let digits = (8 - self.domain.leading_zeros() as usize / 4).max(4);
        for i in (0..digits).rev() {
            out.push(hex_digit(self.domain >> (4 * i)));
        }
        out.push(after_domain);
        out.push(hex_digit(u32::from(self.bus) >> 4));
        out.push(hex_digit(u32::from(self.bus)));
        out.push(after_bus);
        out.push(hex_digit(u32::from(self.device) >> 4));
        out.push(hex_digit(u32::from(self.device)));
        out.push(after_device);
        // One digit for the functions `new` allows; two for a wider one
        // built field by field, as `{:x}` would.
        if self.function >= 0x10 {
            out.push(hex_digit(u32::from(self.function) >> 4));
        }
        out.push(hex_digit(u32::from(self.function)));
        out
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
        // Split from the right: `[domain:]bus:device`, without a Vec (every
        // scan parses each entry of `bus/pci/devices`).
        let (rest, dev) = head
            .rsplit_once(':')
            .ok_or_else(|| err("expected domain:bus:device"))?;
        let (domain, bus) = match rest.rsplit_once(':') {
            Some((d, _)) if d.contains(':') => return Err(err("expected domain:bus:device")),
            Some((d, b)) => (hex_field(d, 4).ok_or_else(|| err("bad domain"))?, b),
            None => (0, rest),
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
        f.write_str(self.text(b':', b':', b'.').as_str())
    }
}

impl Hash for PciAddress {
    /// One word, not four fields: maps keyed by address are hashed some
    /// ten thousand times in a scan of a large node, and each field is a
    /// call into the hasher. Equal addresses give equal words.
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(
            (u64::from(self.domain) << 32)
                | (u64::from(self.bus) << 16)
                | (u64::from(self.device) << 8)
                | u64::from(self.function),
        );
    }
}

/// An address spelled out, held on the stack.
struct AddressText {
    bytes: [u8; AddressText::CAPACITY],
    len: usize,
}

impl AddressText {
    /// Eight domain digits and `:BB:DD.FF`.
    const CAPACITY: usize = 17;

    fn push(&mut self, byte: u8) {
        self.bytes[self.len] = byte;
        self.len += 1;
    }

    fn as_str(&self) -> &str {
        // Only ASCII hex digits and separators are ever pushed.
        std::str::from_utf8(&self.bytes[..self.len]).unwrap_or_default()
    }
}

/// The lower-case hex digit of the low four bits of `value`.
fn hex_digit(value: u32) -> u8 {
    b"0123456789abcdef"[(value & 0xf) as usize]
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
    fn spells_every_field_as_the_kernel_does() {
        for (domain, bus, device, function) in [
            (0, 0, 0, 0),
            (0xabcd, 0xff, 0x1f, 7),
            (0x1_0000, 0x3b, 2, 1),
            (u32::MAX, 1, 0x10, 3),
        ] {
            let a = PciAddress::new(domain, bus, device, function).unwrap();
            let kernel = format!("{domain:04x}:{bus:02x}:{device:02x}.{function:x}");
            assert_eq!(a.to_string(), kernel);
            // Fields set one by one can be out of `new`'s range.
            let wide = PciAddress {
                function: 0xa0 | function,
                ..a
            };
            assert_eq!(
                wide.to_string(),
                format!("{domain:04x}:{bus:02x}:{device:02x}.{:x}", wide.function)
            );
            assert_eq!(
                a.device_name(),
                format!("pci-{}", kernel.replace([':', '.'], "-"))
            );
        }
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
            "1:0000:3b:02.1",
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
