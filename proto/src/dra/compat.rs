//! v1beta1 ⇄ v1 conversions, so the driver implements the DRA node service
//! once against v1 and serves older kubelets through these. The two
//! versions differ only in `Device.share_id` (v1 only), which a v1beta1
//! kubelet cannot receive and never needs: it predates shared devices.

use super::{v1, v1beta1};

impl From<v1beta1::Claim> for v1::Claim {
    fn from(c: v1beta1::Claim) -> Self {
        Self {
            namespace: c.namespace,
            uid: c.uid,
            name: c.name,
        }
    }
}

impl From<v1beta1::NodePrepareResourcesRequest> for v1::NodePrepareResourcesRequest {
    fn from(r: v1beta1::NodePrepareResourcesRequest) -> Self {
        Self {
            claims: r.claims.into_iter().map(Into::into).collect(),
        }
    }
}

impl From<v1beta1::NodeUnprepareResourcesRequest> for v1::NodeUnprepareResourcesRequest {
    fn from(r: v1beta1::NodeUnprepareResourcesRequest) -> Self {
        Self {
            claims: r.claims.into_iter().map(Into::into).collect(),
        }
    }
}

impl From<v1::Device> for v1beta1::Device {
    fn from(d: v1::Device) -> Self {
        Self {
            request_names: d.request_names,
            pool_name: d.pool_name,
            device_name: d.device_name,
            cdi_device_ids: d.cdi_device_ids,
        }
    }
}

impl From<v1::NodePrepareResourceResponse> for v1beta1::NodePrepareResourceResponse {
    fn from(r: v1::NodePrepareResourceResponse) -> Self {
        Self {
            devices: r.devices.into_iter().map(Into::into).collect(),
            error: r.error,
        }
    }
}

impl From<v1::NodePrepareResourcesResponse> for v1beta1::NodePrepareResourcesResponse {
    fn from(r: v1::NodePrepareResourcesResponse) -> Self {
        Self {
            claims: r
                .claims
                .into_iter()
                .map(|(uid, c)| (uid, c.into()))
                .collect(),
        }
    }
}

impl From<v1::NodeUnprepareResourceResponse> for v1beta1::NodeUnprepareResourceResponse {
    fn from(r: v1::NodeUnprepareResourceResponse) -> Self {
        Self { error: r.error }
    }
}

impl From<v1::NodeUnprepareResourcesResponse> for v1beta1::NodeUnprepareResourcesResponse {
    fn from(r: v1::NodeUnprepareResourcesResponse) -> Self {
        Self {
            claims: r
                .claims
                .into_iter()
                .map(|(uid, c)| (uid, c.into()))
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;

    #[test]
    fn a_v1beta1_prepare_request_becomes_the_same_v1_request() {
        let old = v1beta1::NodePrepareResourcesRequest {
            claims: vec![v1beta1::Claim {
                namespace: "ns".into(),
                uid: "uid-1".into(),
                name: "claim".into(),
            }],
        };
        let new = v1::NodePrepareResourcesRequest::from(old.clone());
        assert_eq!(new.claims[0].uid, "uid-1");
        // Same fields, same numbers: the bytes are identical.
        assert_eq!(new.encode_to_vec(), old.encode_to_vec());
    }

    #[test]
    fn a_v1_prepare_response_reaches_a_v1beta1_kubelet_without_share_id() {
        let mut new = v1::NodePrepareResourcesResponse::default();
        new.claims.insert(
            "uid-1".into(),
            v1::NodePrepareResourceResponse {
                devices: vec![v1::Device {
                    request_names: vec!["vf".into()],
                    pool_name: "node-a".into(),
                    device_name: "pci-0000-3b-02-1".into(),
                    cdi_device_ids: vec!["sriov.dra.dev/vf=uid-1-pci-0000-3b-02-1".into()],
                    share_id: Some("share".into()),
                }],
                error: String::new(),
            },
        );
        let old = v1beta1::NodePrepareResourcesResponse::from(new);
        let device = &old.claims["uid-1"].devices[0];
        assert_eq!(device.device_name, "pci-0000-3b-02-1");
        assert_eq!(
            device.cdi_device_ids,
            ["sriov.dra.dev/vf=uid-1-pci-0000-3b-02-1"]
        );
    }

    #[test]
    fn unprepare_errors_carry_over_per_claim() {
        let mut new = v1::NodeUnprepareResourcesResponse::default();
        new.claims.insert(
            "uid-1".into(),
            v1::NodeUnprepareResourceResponse {
                error: "restore failed".into(),
            },
        );
        let old = v1beta1::NodeUnprepareResourcesResponse::from(new);
        assert_eq!(old.claims["uid-1"].error, "restore failed");
    }
}
