//! Which claim records describe devices as they are now.
//!
//! A reboot resets every VF setting, driver binding and namespace move a
//! record describes, so only records written in this boot (same kernel
//! boot ID) hold devices; a record of an earlier boot is released without
//! touching anything. This is the one place that rule is written.

use redb::Database;

use super::claims::{self, ClaimRecord, Phase, StateError};

/// Where the kernel publishes the boot ID.
pub const BOOT_ID_PATH: &str = "/proc/sys/kernel/random/boot_id";

/// The kernel's boot ID, which changes on every boot.
pub fn current_boot_id() -> std::io::Result<String> {
    Ok(std::fs::read_to_string(BOOT_ID_PATH)?.trim().to_string())
}

/// Whether `record` was written in the boot `boot_id`, so the devices it
/// names are still in the state it says.
pub fn of_this_boot(record: &ClaimRecord, boot_id: &str) -> bool {
    record.boot_id == boot_id
}

/// Whether `record` is fully prepared in this boot: the only records that
/// answer a Prepare as they are, and whose VFs may go into pods.
pub fn prepared_in_this_boot(record: &ClaimRecord, boot_id: &str) -> bool {
    record.phase == Phase::Prepared && of_this_boot(record, boot_id)
}

/// Every claim record of this boot (prepared or being prepared): the
/// records that hold devices now.
pub fn claims_of_this_boot(db: &Database, boot_id: &str) -> Result<Vec<ClaimRecord>, StateError> {
    Ok(claims::list(db)?
        .into_iter()
        .filter(|r| of_this_boot(r, boot_id))
        .collect())
}
