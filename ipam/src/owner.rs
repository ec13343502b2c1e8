//! Who holds an allocation: one device of one request of one claim.
//!
//! The key is `<claim UID>/<device>/<request>`. The request comes last
//! because DRA subrequests are written `request/subrequest`; UIDs and device
//! names never contain `/`, so the key splits back unambiguously, and all
//! owners of a claim share the prefix `<claim UID>/` (release by claim is one
//! range query).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// The owner of an allocation.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Owner {
    /// UID of the ResourceClaim.
    pub claim_uid: String,
    /// Request name in the claim (may be `request/subrequest`).
    pub request: String,
    /// Device name from the allocation result.
    pub device: String,
}

/// An owner that cannot be keyed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("invalid IPAM owner {input:?}: {reason}")]
pub struct OwnerError {
    /// What was given.
    pub input: String,
    /// What was expected.
    pub reason: &'static str,
}

impl Owner {
    /// Builds an owner, checking that its key will split back.
    pub fn new(
        claim_uid: impl Into<String>,
        request: impl Into<String>,
        device: impl Into<String>,
    ) -> Result<Owner, OwnerError> {
        let owner = Owner {
            claim_uid: claim_uid.into(),
            request: request.into(),
            device: device.into(),
        };
        let fail = |reason| OwnerError {
            input: format!("{}/{}/{}", owner.claim_uid, owner.device, owner.request),
            reason,
        };
        if owner.claim_uid.is_empty() || owner.claim_uid.contains('/') {
            return Err(fail("claim UID must be non-empty and contain no '/'"));
        }
        if owner.device.is_empty() || owner.device.contains('/') {
            return Err(fail("device name must be non-empty and contain no '/'"));
        }
        if owner.request.is_empty() {
            return Err(fail("request name must be non-empty"));
        }
        Ok(owner)
    }

    /// Stable key used in the store and on the command line.
    pub fn key(&self) -> String {
        format!("{}/{}/{}", self.claim_uid, self.device, self.request)
    }

    /// Key prefix shared by every owner of a claim.
    pub fn claim_prefix(claim_uid: &str) -> String {
        format!("{claim_uid}/")
    }
}

impl fmt::Display for Owner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.key())
    }
}

impl FromStr for Owner {
    type Err = OwnerError;

    /// Parses `<claim UID>/<device>/<request>`.
    fn from_str(s: &str) -> Result<Owner, OwnerError> {
        let mut parts = s.splitn(3, '/');
        match (parts.next(), parts.next(), parts.next()) {
            (Some(uid), Some(device), Some(request)) => Owner::new(uid, request, device),
            _ => Err(OwnerError {
                input: s.to_string(),
                reason: "expected <claim UID>/<device>/<request>",
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_round_trips_even_with_a_subrequest() {
        let o = Owner::new("7f3c-uid", "nic/fast", "pci-0000-3b-02-1").unwrap();
        assert_eq!(o.key(), "7f3c-uid/pci-0000-3b-02-1/nic/fast");
        assert_eq!(o.key().parse::<Owner>().unwrap(), o);
        assert!(o.key().starts_with(&Owner::claim_prefix("7f3c-uid")));
    }

    #[test]
    fn unsplittable_owners_are_rejected() {
        assert!(Owner::new("a/b", "r", "d").is_err());
        assert!(Owner::new("uid", "", "d").is_err());
        assert!("only-two/parts".parse::<Owner>().is_err());
    }
}
