//! Which VFs sit in which pod's network namespace.
//!
//! Written (durably) after the VFs are moved and before the runtime is
//! answered, so a driver restarted between RunPodSandbox and
//! StopPodSandbox still knows what to move back, and where from.

use std::path::PathBuf;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use super::StateError;
use super::claims::{commit, store_err};
use super::listing::{Listing, Unreadable};
use crate::attach::Attachment;

/// Pod UID → JSON [`PodAttachments`].
const POD_ATTACHMENTS: TableDefinition<&str, &[u8]> = TableDefinition::new("pod_attachments");

/// How far a pod's attach got.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum AttachState {
    /// The write-ahead plan: written before the first VF moves. Some, all
    /// or none of the VFs may be in the pod; found after a crash it is
    /// rolled back (and the attach done again for a running pod), never
    /// taken as done.
    Planned,
    /// Every VF is in the pod as recorded. Records written before this
    /// field existed read as attached: rolling back a running pod's VFs on
    /// a driver upgrade would cut its traffic.
    #[default]
    Attached,
}

/// Everything attached to one pod.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodAttachments {
    /// Pod UID.
    pub pod_uid: String,
    /// The sandbox the VFs are in: a pod whose sandbox is recreated keeps
    /// its UID, and events for the old sandbox must not touch the new one.
    #[serde(default)]
    pub sandbox_id: String,
    /// `namespace/name`, for messages.
    pub pod: String,
    /// The pod's network namespace when attached.
    pub netns: PathBuf,
    /// Whether the attach finished.
    #[serde(default)]
    pub state: AttachState,
    /// Each attached VF.
    pub attachments: Vec<Attachment>,
}

/// Records a pod's attachments, durable when this returns.
pub fn put(db: &Database, record: &PodAttachments) -> Result<(), StateError> {
    let bytes = serde_json::to_vec(record).map_err(|source| StateError::Corrupt {
        uid: record.pod_uid.clone(),
        source,
    })?;
    let txn = db.begin_write().map_err(store_err("begin write"))?;
    {
        let mut table = txn
            .open_table(POD_ATTACHMENTS)
            .map_err(store_err("open pod_attachments"))?;
        table
            .insert(record.pod_uid.as_str(), bytes.as_slice())
            .map_err(store_err("write pod attachments"))?;
    }
    commit(txn)
}

/// Drops a pod's record; absent is fine.
pub fn remove(db: &Database, pod_uid: &str) -> Result<(), StateError> {
    let txn = db.begin_write().map_err(store_err("begin write"))?;
    {
        let mut table = txn
            .open_table(POD_ATTACHMENTS)
            .map_err(store_err("open pod_attachments"))?;
        table
            .remove(pod_uid)
            .map_err(store_err("remove pod attachments"))?;
    }
    commit(txn)
}

/// Decodes a stored record; an unreadable one is reported and passed over,
/// so it cannot stop every other pod's VFs from attaching or detaching.
fn decode(pod_uid: &str, bytes: &[u8]) -> Result<PodAttachments, Unreadable> {
    serde_json::from_slice(bytes).map_err(|e| {
        Unreadable::report(
            "pod_attachments",
            pod_uid,
            &e,
            "its VFs must be checked by hand",
        )
    })
}

/// The attachments table, `None` when nothing was ever attached here.
fn read_table(
    txn: &redb::ReadTransaction,
) -> Result<Option<redb::ReadOnlyTable<&'static str, &'static [u8]>>, StateError> {
    match txn.open_table(POD_ATTACHMENTS) {
        Ok(t) => Ok(Some(t)),
        Err(redb::TableError::TableDoesNotExist(_)) => Ok(None),
        Err(e) => Err(store_err("open pod_attachments")(e)),
    }
}

/// Every pod's record.
pub fn list(db: &Database) -> Result<Vec<PodAttachments>, StateError> {
    Ok(list_all(db)?.records)
}

/// Every pod's record, and the ones that do not decode.
pub fn list_all(db: &Database) -> Result<Listing<PodAttachments>, StateError> {
    let txn = db.begin_read().map_err(store_err("begin read"))?;
    let Some(table) = read_table(&txn)? else {
        return Ok(Listing::default());
    };
    let mut out = Listing::default();
    for entry in table.iter().map_err(store_err("list pod attachments"))? {
        let (uid, bytes) = entry.map_err(store_err("read pod attachments"))?;
        match decode(uid.value(), bytes.value()) {
            Ok(record) => out.records.push(record),
            Err(bad) => out.unreadable.push(bad),
        }
    }
    Ok(out)
}

/// One pod's record, if any (and readable).
pub fn get(db: &Database, pod_uid: &str) -> Result<Option<PodAttachments>, StateError> {
    let txn = db.begin_read().map_err(store_err("begin read"))?;
    let Some(table) = read_table(&txn)? else {
        return Ok(None);
    };
    let bytes = table
        .get(pod_uid)
        .map_err(store_err("read pod attachments"))?;
    Ok(bytes.and_then(|b| decode(pod_uid, b.value()).ok()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::records::attached_pod as record;

    #[test]
    fn a_record_from_before_attach_states_reads_as_attached() {
        let mut json = serde_json::to_value(record("pod-a")).unwrap();
        json.as_object_mut().unwrap().remove("state");
        let old: PodAttachments = serde_json::from_value(json).unwrap();
        assert_eq!(old.state, AttachState::Attached);
    }

    #[test]
    fn an_unreadable_record_is_passed_over_not_fatal() {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::create(dir.path().join("state.redb")).unwrap();
        put(&db, &record("pod-a")).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(POD_ATTACHMENTS)
            .unwrap()
            .insert("pod-b", b"{not json".as_slice())
            .unwrap();
        txn.commit().unwrap();
        let uids: Vec<String> = list(&db).unwrap().into_iter().map(|r| r.pod_uid).collect();
        assert_eq!(uids, ["pod-a"]);
    }

    #[test]
    fn records_survive_a_reopen_and_removal_is_idempotent() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.redb");
        assert!(list(&Database::create(&path).unwrap()).unwrap().is_empty());
        {
            let db = Database::create(&path).unwrap();
            put(&db, &record("pod-a")).unwrap();
            put(&db, &record("pod-b")).unwrap();
        }
        let db = Database::create(&path).unwrap();
        assert_eq!(get(&db, "pod-a").unwrap(), Some(record("pod-a")));
        remove(&db, "pod-a").unwrap();
        remove(&db, "pod-a").unwrap();
        let left: Vec<String> = list(&db).unwrap().into_iter().map(|r| r.pod_uid).collect();
        assert_eq!(left, ["pod-b"]);
    }
}
