//! Reading VF settings back with iproute2 (`ip -j -d link show dev PF`), a
//! second opinion independent of our netlink encoder and parser.

use std::process::Command;

use serde_json::Value;
use sriov::vf_config::{LinkState, MacAddress, VfState, VfTarget, Vlan, VlanProto};

use crate::cases::IndependentReader;

/// Runs `ip` from `$PATH`.
pub struct IpLinkReader;

impl IndependentReader for IpLinkReader {
    fn read(&mut self, target: &VfTarget) -> Result<VfState, String> {
        let out = Command::new("ip")
            .args(["-j", "-d", "link", "show", "dev", &target.pf])
            .output()
            .map_err(|e| format!("cannot run ip: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "ip link show {}: {}",
                target.pf,
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        parse(&String::from_utf8_lossy(&out.stdout), target.vf)
    }
}

/// The VF's state from `ip -j link` output. iproute2 leaves out zero rates
/// and an unset VLAN, and older versions print rates flat while newer ones
/// nest them in `rate`: both are read.
pub fn parse(json: &str, vf: u32) -> Result<VfState, String> {
    let links: Value =
        serde_json::from_str(json).map_err(|e| format!("ip printed no JSON: {e}"))?;
    let entry = links
        .get(0)
        .and_then(|l| l.get("vfinfo_list"))
        .and_then(Value::as_array)
        .and_then(|list| {
            list.iter()
                .find(|e| e.get("vf").and_then(Value::as_u64) == Some(u64::from(vf)))
        })
        .ok_or_else(|| format!("ip shows no VF {vf}"))?;
    let num = |v: Option<&Value>| v.and_then(Value::as_u64).unwrap_or(0);
    let mut state = VfState::unconfigured(vf);
    if let Some(mac) = entry.get("address").and_then(Value::as_str) {
        state.mac = mac.parse::<MacAddress>().map_err(|e| e.to_string())?;
    }
    let vlan_entry = entry
        .get("vlan_list")
        .and_then(|l| l.get(0))
        .unwrap_or(entry);
    state.vlan = Vlan {
        id: u16::try_from(num(vlan_entry.get("vlan"))).map_err(|e| e.to_string())?,
        qos: u8::try_from(num(vlan_entry.get("qos"))).map_err(|e| e.to_string())?,
        proto: match vlan_entry.get("protocol").and_then(Value::as_str) {
            Some("802.1ad") => VlanProto::Dot1Ad,
            _ => VlanProto::Dot1Q,
        },
    };
    let rate = entry.get("rate").unwrap_or(entry);
    let max = rate.get("max_tx").or_else(|| entry.get("max_tx_rate"));
    let min = rate.get("min_tx").or_else(|| entry.get("min_tx_rate"));
    state.max_tx_rate_mbps = u32::try_from(num(max)).map_err(|e| e.to_string())?;
    state.min_tx_rate_mbps = u32::try_from(num(min)).map_err(|e| e.to_string())?;
    state.spoof_chk = entry
        .get("spoofchk")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    state.trust = entry.get("trust").and_then(Value::as_bool).unwrap_or(false);
    state.link_state = match entry.get("link_state").and_then(Value::as_str) {
        Some("enable") => Some(LinkState::Enable),
        Some("disable") => Some(LinkState::Disable),
        Some("auto") | None => Some(LinkState::Auto),
        Some(_) => None,
    };
    Ok(state)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_nested_and_flat_forms() {
        let json = r#"[{"ifname":"ens1f0","vfinfo_list":[
            {"vf":0,"address":"00:00:00:00:00:00","spoofchk":true,"trust":false,"link_state":"auto"},
            {"vf":1,"address":"02:00:5e:10:20:30","vlan_list":[{"vlan":102,"qos":5,"protocol":"802.1ad"}],
             "rate":{"max_tx":1000,"min_tx":100},"spoofchk":false,"trust":true,"link_state":"disable"},
            {"vf":2,"vlan":100,"qos":3,"max_tx_rate":500,"spoofchk":true,"link_state":"enable"}]}]"#;
        assert_eq!(parse(json, 0).unwrap(), VfState::unconfigured(0));
        let vf1 = parse(json, 1).unwrap();
        assert_eq!(
            vf1.vlan,
            Vlan {
                id: 102,
                qos: 5,
                proto: VlanProto::Dot1Ad
            }
        );
        assert_eq!((vf1.min_tx_rate_mbps, vf1.max_tx_rate_mbps), (100, 1000));
        assert!(vf1.trust && !vf1.spoof_chk);
        assert_eq!(vf1.link_state, Some(LinkState::Disable));
        let vf2 = parse(json, 2).unwrap();
        assert_eq!(
            (vf2.vlan.id, vf2.vlan.qos, vf2.max_tx_rate_mbps),
            (100, 3, 500)
        );
        assert!(parse(json, 7).unwrap_err().contains("no VF 7"));
        assert!(parse("not json", 0).is_err());
    }
}
