//! The record of what an owner holds; returned to callers and stored as-is,
//! so a retried prepare gets back exactly what the first one got.

use std::fmt;
use std::net::IpAddr;

use ipnetwork::IpNetwork;
use serde::{Deserialize, Serialize};

use crate::config::RouteConfig;
use crate::owner::Owner;

/// One address given to an owner.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AssignedAddress {
    /// Address with the prefix length of its subnet, as it goes on the interface.
    pub address: IpNetwork,
    /// Gateway of that subnet, if the pool defines one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<IpAddr>,
}

/// What an owner holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Allocation {
    /// Who holds it.
    pub owner: Owner,
    /// Pool it came from; `None` for static addresses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool: Option<String>,
    /// Addresses, IPv4 first.
    pub addresses: Vec<AssignedAddress>,
    /// Routes of the pool at allocation time.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<RouteConfig>,
}

impl Allocation {
    /// The bare addresses.
    pub fn ips(&self) -> Vec<IpAddr> {
        self.addresses.iter().map(|a| a.address.ip()).collect()
    }
}

impl fmt::Display for Allocation {
    /// Short form for messages: `pool fronthaul: 10.0.0.5/24, fd00::5/64`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.pool {
            Some(p) => write!(f, "pool {p:?}: ")?,
            None => f.write_str("static: ")?,
        }
        let list: Vec<String> = self
            .addresses
            .iter()
            .map(|a| a.address.to_string())
            .collect();
        f.write_str(&list.join(", "))
    }
}
