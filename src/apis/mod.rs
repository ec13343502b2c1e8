//! The opaque device configuration claims and classes carry for this
//! driver (`apiVersion: sriov.dra.dev/v1alpha1`): `VfConfig` (what a VF
//! gets) and `VfPolicy` (what a class lets a claim ask for), their types,
//! their validation, the tenant check, and how the config entries of a
//! claim merge per request.

pub mod merge;
pub mod policy;
pub mod validate;
pub mod vfconfig;
pub mod vfpolicy;

pub use merge::{ConfigError, RequestConfig, configs_for_request};
pub use policy::{AppliedPolicy, PolicyViolation, check_claim_values};
pub use validate::{FieldError, ValidConfig, validate};
pub use vfconfig::{API_VERSION, IpamConfig, KIND, Mode, RdmaConfig, VfConfig};
pub use vfpolicy::{ClaimField, IdRange, POLICY_KIND, VfPolicy};
