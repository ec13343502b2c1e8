//! Vendor and device names from the PCI ID database compiled into `pci-ids`.

use std::collections::HashMap;

/// Memoises name look-ups: a 2048-VF node asks for the same pair thousands
/// of times, and the vendor table is searched linearly.
#[derive(Default)]
pub(crate) struct NameCache {
    names: HashMap<(u16, u16), (Option<String>, Option<String>)>,
}

impl NameCache {
    /// Vendor and device names for an ID pair, if the database knows them.
    pub(crate) fn lookup(&mut self, vendor: u16, device: u16) -> (Option<String>, Option<String>) {
        self.names
            .entry((vendor, device))
            .or_insert_with(|| {
                let vendor_name = pci_ids::Vendors::iter()
                    .find(|v| v.id() == vendor)
                    .map(|v| v.name().to_string());
                let device_name =
                    pci_ids::Device::from_vid_pid(vendor, device).map(|d| d.name().to_string());
                (vendor_name, device_name)
            })
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn knows_common_nic_vendors() {
        let mut cache = NameCache::default();
        let (v, d) = cache.lookup(0x15b3, 0x101e);
        assert_eq!(v.as_deref(), Some("Mellanox Technologies"));
        assert!(d.unwrap().contains("Virtual Function"));
        assert_eq!(cache.lookup(0x15b3, 0xfffe).1, None);
    }
}
