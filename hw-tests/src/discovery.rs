//! `discovery/matches-lspci-ip`: what `sriov::inventory` finds must be what
//! `lspci` and `ip link` see, and the profile's PFs must be among it. The
//! comparison is pure (parsers of the tools' output and a diff); [`check`]
//! runs the tools.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use sriov::inventory::{Inventory, Role};

use crate::cases::Outcome;
use crate::profile::NicProfile;
use crate::tools::{need_tools, run};

/// One line of `lspci -Dn`: address, class (upper 16 bits), vendor, device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LspciFunction {
    /// `0000:3b:00.0`.
    pub address: String,
    /// `0x0200` for Ethernet.
    pub class: u16,
    /// Vendor ID.
    pub vendor: u16,
    /// Device ID.
    pub device: u16,
}

/// Parses `lspci -Dn` (`0000:3b:00.0 0200: 15b3:101d (rev 01)`); lines it
/// cannot read are errors naming them.
pub fn parse_lspci(text: &str) -> Result<Vec<LspciFunction>, String> {
    let mut out = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let mut words = line.split_whitespace();
        let (Some(address), Some(class), Some(ids)) = (words.next(), words.next(), words.next())
        else {
            return Err(format!("lspci line {line:?} has fewer than 3 fields"));
        };
        let hex = |s: &str| u16::from_str_radix(s, 16).map_err(|_| format!("lspci line {line:?}"));
        let class = hex(class.trim_end_matches(':'))?;
        let Some((vendor, device)) = ids.split_once(':') else {
            return Err(format!("lspci line {line:?}: no vendor:device"));
        };
        out.push(LspciFunction {
            address: address.to_string(),
            class,
            vendor: hex(vendor)?,
            device: hex(device)?,
        });
    }
    Ok(out)
}

/// Interface name → MAC (lower case) from `ip -j link show`.
pub fn parse_ip_links(json: &str) -> Result<BTreeMap<String, String>, String> {
    let links: serde_json::Value =
        serde_json::from_str(json).map_err(|e| format!("ip -j link printed no JSON: {e}"))?;
    Ok(links
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|l| {
            Some((
                l.get("ifname")?.as_str()?.to_string(),
                l.get("address")
                    .and_then(|a| a.as_str())
                    .unwrap_or_default()
                    .to_lowercase(),
            ))
        })
        .collect())
}

/// Every disagreement between the inventory, lspci, ip link and the
/// profile's NIC; `Ok` with a summary when there is none.
pub fn compare(
    inventory: &Inventory,
    lspci: &[LspciFunction],
    links: &BTreeMap<String, String>,
    nic: &NicProfile,
) -> Result<String, Vec<String>> {
    let mut wrong = Vec::new();
    let network = |class: u16| class >> 8 == 0x02;
    let seen: BTreeMap<String, &LspciFunction> = lspci
        .iter()
        .filter(|f| network(f.class))
        .map(|f| (f.address.clone(), f))
        .collect();
    let found: BTreeSet<String> = inventory
        .functions
        .iter()
        .map(|f| f.address.to_string())
        .collect();
    for address in seen.keys().filter(|a| !found.contains(*a)) {
        wrong.push(format!(
            "lspci lists network function {address}; the inventory does not"
        ));
    }
    let mut netdevs = 0;
    for f in &inventory.functions {
        let address = f.address.to_string();
        match seen.get(&address) {
            None => wrong.push(format!("the inventory lists {address}; lspci does not")),
            Some(l) if (l.vendor, l.device) != (f.vendor_id, f.device_id) => wrong.push(format!(
                "{address}: inventory says {:04x}:{:04x}, lspci {:04x}:{:04x}",
                f.vendor_id, f.device_id, l.vendor, l.device
            )),
            Some(_) => {}
        }
        if let Some(nd) = &f.netdev {
            netdevs += 1;
            match (links.get(&nd.name), &nd.mac) {
                (None, _) => wrong.push(format!("{address}: netdev {} is not in ip link", nd.name)),
                (Some(ip_mac), Some(mac)) if ip_mac != &mac.to_lowercase() => wrong.push(format!(
                    "{address}: netdev {} has MAC {mac} in sysfs, {ip_mac} in ip link",
                    nd.name
                )),
                _ => {}
            }
        }
    }
    for pf in &nic.pfs {
        let Some(f) = inventory
            .functions
            .iter()
            .find(|f| f.netdev.as_ref().is_some_and(|n| &n.name == pf))
        else {
            wrong.push(format!("profile PF {pf} is not in the inventory"));
            continue;
        };
        let ids = format!("{:04x}:{:04x}", f.vendor_id, f.device_id);
        let expected = format!(
            "{}:{}",
            nic.vendor_id.to_lowercase(),
            nic.device_id.to_lowercase()
        );
        if ids != expected {
            wrong.push(format!("PF {pf} is {ids}; the profile expects {expected}"));
        }
        if f.driver.as_deref() != Some(nic.driver.as_str()) {
            wrong.push(format!(
                "PF {pf} uses driver {:?}; the profile expects {}",
                f.driver, nic.driver
            ));
        }
        if !matches!(f.role, Role::Pf { .. }) {
            wrong.push(format!("PF {pf} is not an SR-IOV PF in sysfs"));
        }
    }
    if wrong.is_empty() {
        Ok(format!(
            "{} network functions and {netdevs} netdevs agree with lspci and ip link; PFs {} found",
            inventory.functions.len(),
            nic.pfs.join(", ")
        ))
    } else {
        Err(wrong)
    }
}

/// The case on this node.
pub fn check(sysfs_root: &Path, nic: &NicProfile) -> Outcome {
    if let Err(e) = need_tools(&["lspci", "ip"]) {
        return Outcome::NeedsHardware(e);
    }
    let inventory = match sriov::inventory::scan(sysfs_root) {
        Ok(i) => i,
        Err(e) => return Outcome::Fail(format!("inventory: {e}")),
    };
    let lspci = match run("lspci", &["-Dn"]).and_then(|t| parse_lspci(&t)) {
        Ok(l) => l,
        Err(e) => return Outcome::Fail(e),
    };
    let links = match run("ip", &["-j", "link", "show"]).and_then(|t| parse_ip_links(&t)) {
        Ok(l) => l,
        Err(e) => return Outcome::Fail(e),
    };
    match compare(&inventory, &lspci, &links, nic) {
        Ok(_) => Outcome::Pass,
        Err(wrong) => Outcome::Fail(wrong.join("; ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::CaseKind;
    use sriov::fixture::Fixture;

    fn nic() -> NicProfile {
        NicProfile {
            model: "ConnectX-6 Dx".into(),
            vendor_id: "15b3".into(),
            device_id: "101d".into(),
            driver: "mlx5_core".into(),
            pfs: vec!["ens1f0np0".into()],
            num_vfs: 8,
            test_vf: 0,
            pair_vfs: [0, 1],
            cases: vec![CaseKind::Discovery],
            allow_resize: false,
            peer: None,
        }
    }

    /// The fixture node, and lspci / ip output that agree with it.
    fn node() -> (tempfile::TempDir, Inventory, String, String) {
        let dir = tempfile::tempdir().unwrap();
        Fixture::ConnectX6Dx.build(dir.path()).unwrap();
        let inventory = sriov::inventory::scan(dir.path()).unwrap();
        let lspci: String = inventory
            .functions
            .iter()
            .map(|f| {
                format!(
                    "{} {:04x}: {:04x}:{:04x}\n",
                    f.address,
                    f.class >> 8,
                    f.vendor_id,
                    f.device_id
                )
            })
            .collect();
        let links: Vec<serde_json::Value> = inventory
            .functions
            .iter()
            .filter_map(|f| f.netdev.as_ref())
            .map(|n| serde_json::json!({"ifname": n.name, "address": n.mac}))
            .collect();
        let ip = serde_json::to_string(&links).unwrap();
        (dir, inventory, lspci, ip)
    }

    #[test]
    fn an_inventory_that_agrees_with_the_tools_passes() {
        let (_dir, inventory, lspci, ip) = node();
        let lspci = format!("{lspci}0000:00:1f.3 0403: 8086:a348 (rev 10)\n");
        let summary = compare(
            &inventory,
            &parse_lspci(&lspci).unwrap(),
            &parse_ip_links(&ip).unwrap(),
            &nic(),
        )
        .unwrap();
        assert!(summary.contains("PFs ens1f0np0 found"), "{summary}");
    }

    #[test]
    fn every_disagreement_is_named() {
        let (_dir, inventory, lspci, ip) = node();
        let mut lines: Vec<&str> = lspci.lines().collect();
        let dropped = lines.remove(3).split(' ').next().unwrap().to_string();
        let lspci = format!("{}\n0000:99:00.0 0200: 8086:1592\n", lines.join("\n"));
        let mut links = parse_ip_links(&ip).unwrap();
        links.insert("ens1f0np0".into(), "00:11:22:33:44:55".into());
        let mut wrong_nic = nic();
        wrong_nic.driver = "ice".into();
        let errors = compare(
            &inventory,
            &parse_lspci(&lspci).unwrap(),
            &links,
            &wrong_nic,
        )
        .unwrap_err()
        .join("\n");
        assert!(
            errors.contains("lspci lists network function 0000:99:00.0"),
            "{errors}"
        );
        assert!(errors.contains(&format!("the inventory lists {dropped}; lspci does not")));
        assert!(errors.contains("netdev ens1f0np0 has MAC"), "{errors}");
        assert!(errors.contains("PF ens1f0np0 uses driver"), "{errors}");
    }

    #[test]
    fn unreadable_lspci_lines_are_named() {
        let err = parse_lspci("0000:3b:00.0 zz: 15b3:101d\n").unwrap_err();
        assert!(err.contains("0000:3b:00.0 zz"), "{err}");
    }
}
