//! PF-side configuration of a VF (MAC, VLAN, rates, spoof check, trust,
//! link state) through rtnetlink, with an exact restore.
//!
//! The flow is: [`VfSettings::new`] validates the claim's request;
//! [`configure`] reads the VF's [`VfState`] from the PF, stores it in a
//! [`VfConfigRecord`], [`plan`]s the differing settings and applies them one
//! message each; on release [`restore`] writes back the saved value of each
//! setting in the record and of no other.

mod apply;
mod mac;
mod message;
mod plan;
mod settings;
mod state;

pub use apply::{
    Rollback, VfConfigError, VfConfigRecord, VfTarget, apply_changes, configure, read_vf_state,
    restore,
};
pub use mac::{MacAddress, ParseMacError};
pub use message::{get_vfs_message, set_vf_message};
pub use plan::{Setting, VfChange, plan, restore_plan};
pub use settings::{InvalidVfSetting, LinkState, VfSettings, VfSettingsRequest, Vlan, VlanProto};
pub use state::{VfState, vf_states};
