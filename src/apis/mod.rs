//! The opaque device configuration claims carry for this driver
//! (`apiVersion: sriov.dra.dev/v1alpha1, kind: VfConfig`): its types, its
//! validation, and how the config entries of a claim merge per request.

pub mod merge;
pub mod validate;
pub mod vfconfig;

pub use merge::{ConfigError, configs_for_request};
pub use validate::{FieldError, ValidConfig, validate};
pub use vfconfig::{API_VERSION, IpamConfig, KIND, Mode, RdmaConfig, VfConfig};
