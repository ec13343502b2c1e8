//! What a running driver says about itself, read the way both crash
//! harnesses (`tests/crash` and the lab's crash cases in `hw-tests`) check
//! it after a restart: its claim records, attachment records and address
//! allocations from the debug API, and the CDI specs it left on disk.

use std::collections::BTreeSet;

use ipam::Allocation;
use ipnetwork::IpNetwork;
use serde::Deserialize;

use super::driver_home::DriverHome;
use super::driver_process::debug_get;
use crate::state::ClaimRecord;
use crate::state::attachments::PodAttachments;

/// What `/ipam` shows.
#[derive(Deserialize)]
struct IpamView {
    allocations: Vec<Allocation>,
    orphans: Vec<Allocation>,
}

/// The driver's records, as its debug API shows them.
#[derive(Debug)]
pub struct DriverView {
    /// `/claims`: one record per claim it knows.
    pub claims: Vec<ClaimRecord>,
    /// `/attachments`: one record per pod it attached to.
    pub pods: Vec<PodAttachments>,
    /// `/ipam`: the addresses held.
    pub allocations: Vec<Allocation>,
    /// `/ipam`: addresses held by no claim record.
    pub orphans: Vec<Allocation>,
}

impl DriverView {
    /// Claims, attachments and allocations in that order; the first answer
    /// that fails is the error.
    pub async fn read(home: &DriverHome) -> Result<DriverView, String> {
        let claims = debug_get(home, "/claims").await?;
        let pods = debug_get(home, "/attachments").await?;
        let ipam: IpamView = debug_get(home, "/ipam").await?;
        Ok(DriverView {
            claims,
            pods,
            allocations: ipam.allocations,
            orphans: ipam.orphans,
        })
    }

    /// The record of the claim with UID `uid`, if there is one.
    pub fn claim(&self, uid: &str) -> Option<&ClaimRecord> {
        self.claims.iter().find(|r| r.uid == uid)
    }
}

/// The addresses `record` holds for `device`: none without a record, the
/// device or addresses.
pub fn addresses_of(record: Option<&ClaimRecord>, device: &str) -> BTreeSet<IpNetwork> {
    record
        .and_then(|r| r.devices.iter().find(|d| d.device == device))
        .and_then(|d| d.addresses.as_ref())
        .map(|a| a.addresses.iter().map(|x| x.address).collect())
        .unwrap_or_default()
}

/// The file names in the home's CDI directory (none if it is missing).
pub fn cdi_files(home: &DriverHome) -> BTreeSet<String> {
    std::fs::read_dir(home.cdi_dir())
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}
