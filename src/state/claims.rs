//! Prepared claims: one JSON record per claim UID, and an index from VF
//! (PCI address) to the claim holding it.
//!
//! The record is written before any device is touched (phase
//! [`Phase::Preparing`], with each VF's saved settings), updated as changes
//! are applied, and completed with the addresses and CDI IDs in the same
//! transaction that allocates the addresses. So after a crash at any point
//! the record says what to undo, and the index refuses a VF to a second
//! claim even when the driver's memory is gone.

use std::path::PathBuf;

use ipam::Allocation;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};
use serde::{Deserialize, Serialize};
use sriov::PciAddress;
use sriov::bind::BindRecord;
use sriov::vf_config::VfConfigRecord;

use crate::apis::{AppliedPolicy, ValidConfig};
use crate::state::listing::{Listing, Unreadable};

/// Version of the record layout; a driver refuses records newer than it.
pub const CLAIM_SCHEMA_VERSION: u32 = 1;

/// Claim UID → JSON [`ClaimRecord`].
const PREPARED_CLAIMS: TableDefinition<&str, &[u8]> = TableDefinition::new("prepared_claims");
/// VF PCI address → UID of the claim it is prepared for.
const PREPARED_VFS: TableDefinition<&str, &str> = TableDefinition::new("prepared_vfs");
/// `schema` → version of the claim tables.
const CLAIMS_META: TableDefinition<&str, u32> = TableDefinition::new("claims_meta");

/// How far a claim got.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Phase {
    /// Devices are (or may be) being changed; the kubelet has no answer yet.
    /// Found after a restart, the record is rolled back and prepared again.
    Preparing,
    /// Everything is applied and the kubelet was (or will be) answered.
    Prepared,
}

/// One allocated device of a claim and everything done to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PreparedDevice {
    /// Request name from the allocation result (may be `req/sub`).
    pub request: String,
    /// Pool of the allocation result.
    pub pool: String,
    /// Device name (`pci-0000-3b-02-1`).
    pub device: String,
    /// The VF.
    pub pci_address: PciAddress,
    /// The merged, validated config.
    pub config: ValidConfig,
    /// Interface name in the pod (netdevice mode): the config's or a default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub if_name: Option<String>,
    /// PF-side settings saved and applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vf_settings: Option<VfConfigRecord>,
    /// The VF's RDMA device (`mlx5_3`), if it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rdma_device: Option<String>,
    /// Driver binding (dpdk mode).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bind: Option<BindRecord>,
    /// Addresses from the IPAM store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub addresses: Option<Allocation>,
    /// Fully qualified CDI device ID handed to the kubelet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cdi_device_id: Option<String>,
    /// The DeviceClass and its `VfPolicy` entries the claim's own values
    /// were checked against, for the debug API; `None` in records written
    /// before policies existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<AppliedPolicy>,
}

/// What the driver did for one claim.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClaimRecord {
    /// [`CLAIM_SCHEMA_VERSION`] of the writer.
    pub schema: u32,
    /// Claim UID.
    pub uid: String,
    /// Claim namespace.
    pub namespace: String,
    /// Claim name.
    pub name: String,
    /// How far prepare got.
    pub phase: Phase,
    /// Our driver's devices of the claim, in allocation order.
    pub devices: Vec<PreparedDevice>,
    /// The claim's CDI spec file, once written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cdi_spec: Option<PathBuf>,
    /// Kernel boot ID when prepared: after a reboot the VFs, their driver
    /// bindings and the CDI specs (tmpfs) are gone, and the record is stale.
    #[serde(default)]
    pub boot_id: String,
    /// UIDs of the pods the claim was reserved for when prepared: how the
    /// NRI side finds a starting pod's VFs without asking the API.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reserved_for: Vec<String>,
}

/// Why the claim state could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// The database failed.
    #[error("claim state store: {action}: {source}")]
    Store {
        /// What was being done.
        action: &'static str,
        /// redb's error.
        #[source]
        source: Box<redb::Error>,
    },
    /// A stored record does not parse.
    #[error("claim state store: record of claim {uid} is unreadable: {source}")]
    Corrupt {
        /// The claim UID.
        uid: String,
        /// The JSON error.
        #[source]
        source: serde_json::Error,
    },
    /// The store was written by a newer driver.
    #[error(
        "claim state store has schema {found}, this driver reads up to {supported}; upgrade the driver"
    )]
    Schema {
        /// Version found.
        found: u32,
        /// Version supported.
        supported: u32,
    },
    /// The VF is prepared for another claim.
    #[error("VF {pci} is already prepared for claim {holder}")]
    VfTaken {
        /// The VF.
        pci: PciAddress,
        /// UID of the claim holding it.
        holder: String,
    },
}

/// Maps a redb error into [`StateError::Store`] naming `action`.
pub(super) fn store_err<E: Into<redb::Error>>(
    action: &'static str,
) -> impl FnOnce(E) -> StateError {
    move |e| StateError::Store {
        action,
        source: Box::new(e.into()),
    }
}

/// Stores `bytes` as the record of `uid` as they are: how a test lays
/// down a record a driver bug or a torn disk left unreadable.
#[cfg(test)]
pub(crate) fn put_raw(db: &Database, uid: &str, bytes: &[u8]) -> Result<(), StateError> {
    let txn = db.begin_write().map_err(store_err("begin write"))?;
    {
        let mut table = txn
            .open_table(PREPARED_CLAIMS)
            .map_err(store_err("open prepared_claims"))?;
        table
            .insert(uid, bytes)
            .map_err(store_err("insert claim"))?;
    }
    commit(txn)
}

/// Creates the claim tables and checks their schema; call once at start.
pub fn init(db: &Database) -> Result<(), StateError> {
    let txn = db.begin_write().map_err(store_err("begin write"))?;
    {
        let mut meta = txn
            .open_table(CLAIMS_META)
            .map_err(store_err("open claims_meta"))?;
        let found = meta
            .get("schema")
            .map_err(store_err("read schema"))?
            .map(|v| v.value());
        match found {
            Some(v) if v > CLAIM_SCHEMA_VERSION => {
                return Err(StateError::Schema {
                    found: v,
                    supported: CLAIM_SCHEMA_VERSION,
                });
            }
            Some(_) => {}
            None => {
                meta.insert("schema", CLAIM_SCHEMA_VERSION)
                    .map_err(store_err("write schema"))?;
            }
        }
        txn.open_table(PREPARED_CLAIMS)
            .map_err(store_err("open prepared_claims"))?;
        txn.open_table(PREPARED_VFS)
            .map_err(store_err("open prepared_vfs"))?;
    }
    commit(txn)
}

/// Commits with immediate durability: on disk when this returns.
pub fn commit(mut txn: WriteTransaction) -> Result<(), StateError> {
    txn.set_durability(redb::Durability::Immediate)
        .map_err(store_err("set durability"))?;
    let started = std::time::Instant::now();
    let committed = txn.commit().map_err(store_err("commit"));
    crate::metrics::metrics().store_commit(started.elapsed());
    committed
}

fn decode(uid: &str, bytes: &[u8]) -> Result<ClaimRecord, StateError> {
    serde_json::from_slice(bytes).map_err(|source| StateError::Corrupt {
        uid: uid.to_string(),
        source,
    })
}

/// The record of claim `uid`, if any.
pub fn get(db: &Database, uid: &str) -> Result<Option<ClaimRecord>, StateError> {
    let txn = db.begin_read().map_err(store_err("begin read"))?;
    let table = txn
        .open_table(PREPARED_CLAIMS)
        .map_err(store_err("open prepared_claims"))?;
    let Some(bytes) = table.get(uid).map_err(store_err("read claim"))? else {
        return Ok(None);
    };
    decode(uid, bytes.value()).map(Some)
}

/// Every readable record, by UID order. An unreadable one is reported (see
/// [`list_all`]) and passed over, so it cannot stop every pod on the node
/// from starting; its VFs stay held through the VF index.
pub fn list(db: &Database) -> Result<Vec<ClaimRecord>, StateError> {
    Ok(list_all(db)?.records)
}

/// Every record, by UID order, and the ones that do not decode (each
/// logged as an error: an operator must look at it).
pub fn list_all(db: &Database) -> Result<Listing<ClaimRecord>, StateError> {
    let txn = db.begin_read().map_err(store_err("begin read"))?;
    let table = txn
        .open_table(PREPARED_CLAIMS)
        .map_err(store_err("open prepared_claims"))?;
    let mut out = Listing::default();
    for row in table.iter().map_err(store_err("list claims"))? {
        let (uid, bytes) = row.map_err(store_err("list claims"))?;
        match decode(uid.value(), bytes.value()) {
            Ok(record) => out.records.push(record),
            Err(e) => out.unreadable.push(Unreadable::report(
                "prepared_claims",
                uid.value(),
                &e,
                "its VFs stay held and its addresses are kept; inspect and remove it with the driver stopped",
            )),
        }
    }
    Ok(out)
}

/// The claim holding VF `pci`, seen from inside a write transaction.
pub fn vf_holder_in(txn: &WriteTransaction, pci: PciAddress) -> Result<Option<String>, StateError> {
    let table = txn
        .open_table(PREPARED_VFS)
        .map_err(store_err("open prepared_vfs"))?;
    let key = pci.to_string();
    let holder = table
        .get(key.as_str())
        .map_err(store_err("read VF owner"))?;
    Ok(holder.map(|h| h.value().to_string()))
}

/// Writes `record` and claims its VFs in the index, refusing a VF another
/// claim holds. Nothing is written when it refuses (abort the transaction).
pub fn put_in(txn: &WriteTransaction, record: &ClaimRecord) -> Result<(), StateError> {
    let mut vfs = txn
        .open_table(PREPARED_VFS)
        .map_err(store_err("open prepared_vfs"))?;
    for dev in &record.devices {
        let key = dev.pci_address.to_string();
        let holder = vfs
            .get(key.as_str())
            .map_err(store_err("read VF owner"))?
            .map(|h| h.value().to_string());
        match holder {
            Some(h) if h != record.uid => {
                return Err(StateError::VfTaken {
                    pci: dev.pci_address,
                    holder: h,
                });
            }
            Some(_) => {}
            None => {
                vfs.insert(key.as_str(), record.uid.as_str())
                    .map_err(store_err("write VF owner"))?;
            }
        }
    }
    let json = serde_json::to_vec(record).map_err(|source| StateError::Corrupt {
        uid: record.uid.clone(),
        source,
    })?;
    let mut claims = txn
        .open_table(PREPARED_CLAIMS)
        .map_err(store_err("open prepared_claims"))?;
    claims
        .insert(record.uid.as_str(), json.as_slice())
        .map_err(store_err("write claim"))?;
    Ok(())
}

/// Deletes the record of `uid` and frees its VFs; returns the record.
pub fn remove_in(txn: &WriteTransaction, uid: &str) -> Result<Option<ClaimRecord>, StateError> {
    let mut claims = txn
        .open_table(PREPARED_CLAIMS)
        .map_err(store_err("open prepared_claims"))?;
    let record = match claims.remove(uid).map_err(store_err("delete claim"))? {
        Some(bytes) => decode(uid, bytes.value())?,
        None => return Ok(None),
    };
    let mut vfs = txn
        .open_table(PREPARED_VFS)
        .map_err(store_err("open prepared_vfs"))?;
    for dev in &record.devices {
        let key = dev.pci_address.to_string();
        let held_by_us = vfs
            .get(key.as_str())
            .map_err(store_err("read VF owner"))?
            .is_some_and(|h| h.value() == uid);
        if held_by_us {
            vfs.remove(key.as_str()).map_err(store_err("free VF"))?;
        }
    }
    Ok(Some(record))
}

/// [`put_in`] in its own durable transaction.
pub fn put(db: &Database, record: &ClaimRecord) -> Result<(), StateError> {
    let txn = db.begin_write().map_err(store_err("begin write"))?;
    put_in(&txn, record)?;
    commit(txn)
}

/// [`put_in`] in its own transaction that is not synced to disk: for a
/// record that lists no device change yet, whose loss in a crash leaves
/// nothing to undo. The next durable commit makes it durable too; redb keeps
/// the file consistent either way.
pub fn put_unsynced(db: &Database, record: &ClaimRecord) -> Result<(), StateError> {
    let mut txn = db.begin_write().map_err(store_err("begin write"))?;
    txn.set_durability(redb::Durability::None)
        .map_err(store_err("set durability"))?;
    put_in(&txn, record)?;
    txn.commit().map_err(store_err("commit"))
}

/// [`remove_in`] in its own durable transaction.
pub fn remove(db: &Database, uid: &str) -> Result<Option<ClaimRecord>, StateError> {
    let txn = db.begin_write().map_err(store_err("begin write"))?;
    let record = remove_in(&txn, uid)?;
    commit(txn)?;
    Ok(record)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apis::{Mode, ValidConfig};

    fn db() -> (tempfile::TempDir, Database) {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::create(dir.path().join("state.redb")).unwrap();
        init(&db).unwrap();
        (dir, db)
    }

    fn record(uid: &str, vfs: &[&str]) -> ClaimRecord {
        ClaimRecord {
            schema: CLAIM_SCHEMA_VERSION,
            uid: uid.into(),
            namespace: "ran".into(),
            name: format!("claim-{uid}"),
            phase: Phase::Prepared,
            devices: vfs
                .iter()
                .map(|pci| {
                    let pci: PciAddress = pci.parse().unwrap();
                    PreparedDevice {
                        request: "nic".into(),
                        pool: "node-1".into(),
                        device: pci.device_name(),
                        pci_address: pci,
                        config: ValidConfig {
                            mode: Mode::Netdevice,
                            if_name: None,
                            mtu: None,
                            settings: Default::default(),
                            addresses: None,
                            routes: vec![],
                            rdma_exclusive: false,
                        },
                        if_name: Some("net1".into()),
                        rdma_device: None,
                        vf_settings: None,
                        bind: None,
                        addresses: None,
                        cdi_device_id: None,
                        policy: None,
                    }
                })
                .collect(),
            cdi_spec: None,
            boot_id: "boot-1".into(),
            reserved_for: vec![format!("pod-of-{uid}")],
        }
    }

    #[test]
    fn a_record_round_trips_and_survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.redb");
        let rec = record("uid-1", &["0000:3b:00.2"]);
        {
            let db = Database::create(&path).unwrap();
            init(&db).unwrap();
            put(&db, &rec).unwrap();
        }
        let db = Database::create(&path).unwrap();
        init(&db).unwrap();
        assert_eq!(get(&db, "uid-1").unwrap(), Some(rec.clone()));
        assert_eq!(list(&db).unwrap(), vec![rec]);
    }

    #[test]
    fn a_vf_held_by_one_claim_is_refused_to_another_from_the_store() {
        let (_dir, db) = db();
        put(&db, &record("uid-1", &["0000:3b:00.2"])).unwrap();
        let err = put(&db, &record("uid-2", &["0000:3b:00.3", "0000:3b:00.2"])).unwrap_err();
        assert!(
            matches!(&err, StateError::VfTaken { holder, .. } if holder == "uid-1"),
            "{err}"
        );
        assert_eq!(get(&db, "uid-2").unwrap(), None, "nothing half-written");
        let txn = db.begin_write().unwrap();
        assert_eq!(
            vf_holder_in(&txn, "0000:3b:00.3".parse().unwrap()).unwrap(),
            None
        );
    }

    #[test]
    fn removing_frees_the_vfs() {
        let (_dir, db) = db();
        put(&db, &record("uid-1", &["0000:3b:00.2"])).unwrap();
        let txn = db.begin_write().unwrap();
        assert!(remove_in(&txn, "uid-1").unwrap().is_some());
        assert!(
            remove_in(&txn, "uid-1").unwrap().is_none(),
            "second remove is a no-op"
        );
        commit(txn).unwrap();
        put(&db, &record("uid-2", &["0000:3b:00.2"])).unwrap();
    }

    #[test]
    fn a_newer_schema_is_refused() {
        let (_dir, db) = db();
        let txn = db.begin_write().unwrap();
        txn.open_table(CLAIMS_META)
            .unwrap()
            .insert("schema", 99)
            .unwrap();
        commit(txn).unwrap();
        assert!(matches!(
            init(&db),
            Err(StateError::Schema { found: 99, .. })
        ));
    }

    #[test]
    fn the_applied_policy_is_kept_and_a_record_from_before_policies_still_loads() {
        let mut rec = record("uid-1", &["0000:3b:00.2"]);
        let policy: crate::apis::VfPolicy = serde_json::from_value(serde_json::json!({
            "apiVersion": "sriov.dra.dev/v1alpha1", "kind": "VfPolicy", "allowedVlans": ["100-199"]
        }))
        .unwrap();
        rec.devices[0].policy = Some(AppliedPolicy {
            device_class: Some("sriov-fronthaul".into()),
            vf_policies: vec![policy],
        });
        let json = serde_json::to_value(&rec).unwrap();
        assert_eq!(
            json["devices"][0]["policy"],
            serde_json::json!({"deviceClass": "sriov-fronthaul", "vfPolicies": [
                {"apiVersion": "sriov.dra.dev/v1alpha1", "kind": "VfPolicy", "allowedVlans": ["100-199"]}
            ]})
        );
        assert_eq!(
            decode("uid-1", &serde_json::to_vec(&rec).unwrap()).unwrap(),
            rec
        );

        let mut old = json;
        if let Some(dev) = old["devices"][0].as_object_mut() {
            dev.remove("policy");
        }
        let loaded = decode("uid-1", &serde_json::to_vec(&old).unwrap()).unwrap();
        assert_eq!(loaded.devices[0].policy, None);
    }
}
