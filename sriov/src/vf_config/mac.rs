//! Ethernet MAC addresses as the VF settings carry them.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A 48-bit Ethernet address, printed and serialised as `aa:bb:cc:dd:ee:ff`.
///
/// The all-zero address is representable because the kernel reports it for
/// a VF whose MAC the PF never set, and restoring must be able to write it
/// back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct MacAddress(pub [u8; 6]);

/// Why a string is not a MAC address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid MAC address {0:?} (expected six hex pairs like 02:00:00:00:00:01)")]
pub struct ParseMacError(String);

impl MacAddress {
    /// True for `00:00:00:00:00:00`, the kernel's "not set".
    pub fn is_zero(&self) -> bool {
        self.0 == [0; 6]
    }

    /// True when the group bit is set: such an address cannot be a VF's own.
    pub fn is_multicast(&self) -> bool {
        self.0[0] & 1 == 1
    }
}

impl FromStr for MacAddress {
    type Err = ParseMacError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ParseMacError(s.to_string());
        let mut out = [0u8; 6];
        let mut parts = s.split([':', '-']);
        for byte in &mut out {
            let part = parts.next().ok_or_else(err)?;
            if part.len() != 2 {
                return Err(err());
            }
            *byte = u8::from_str_radix(part, 16).map_err(|_| err())?;
        }
        if parts.next().is_some() {
            return Err(err());
        }
        Ok(MacAddress(out))
    }
}

impl TryFrom<&[u8]> for MacAddress {
    type Error = ParseMacError;

    /// From a netlink hardware-address attribute, which must be 6 bytes.
    fn try_from(bytes: &[u8]) -> Result<Self, Self::Error> {
        <[u8; 6]>::try_from(bytes)
            .map(MacAddress)
            .map_err(|_| ParseMacError(format!("{} bytes of hardware address", bytes.len())))
    }
}

impl fmt::Display for MacAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

impl Serialize for MacAddress {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for MacAddress {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_colon_and_dash_forms_and_prints_lower_case() {
        let mac: MacAddress = "02:AB:00:00:00:01".parse().unwrap();
        assert_eq!(mac.0, [2, 0xab, 0, 0, 0, 1]);
        assert_eq!(mac.to_string(), "02:ab:00:00:00:01");
        assert_eq!("02-ab-00-00-00-01".parse::<MacAddress>().unwrap(), mac);
    }

    #[test]
    fn rejects_short_long_and_non_hex() {
        for bad in [
            "02:00:00:00:00",
            "02:00:00:00:00:00:00",
            "0g:00:00:00:00:00",
            "2:00:00:00:00:00",
        ] {
            assert!(bad.parse::<MacAddress>().is_err(), "{bad} parsed");
        }
    }

    #[test]
    fn serialises_as_a_string() {
        let mac: MacAddress = "02:00:00:00:00:01".parse().unwrap();
        assert_eq!(
            serde_json::to_string(&mac).unwrap(),
            "\"02:00:00:00:00:01\""
        );
        assert_eq!(
            serde_json::from_str::<MacAddress>("\"02:00:00:00:00:01\"").unwrap(),
            mac
        );
    }
}
