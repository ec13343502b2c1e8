//! Wire types for the node-local APIs the driver speaks: kubelet plugin
//! registration and the DRA node service (gRPC, with tonic stubs), and NRI
//! with the ttrpc envelope (prost messages only; the transport is ours).
//!
//! The .proto files under `protos/` are our own, written from the upstream
//! wire facts (same packages, services, field numbers and types), so the
//! kubelet and container runtimes decode what we send.

/// Kubelet plugin registration (`pluginregistration.Registration`).
#[allow(missing_docs, clippy::all)]
pub mod pluginregistration {
    tonic::include_proto!("pluginregistration");

    /// Plugin type the kubelet routes to its DRA handler.
    pub const DRA_PLUGIN_TYPE: &str = "DRAPlugin";
}

/// DRA node API (`k8s.io.kubelet.pkg.apis.dra.*.DRAPlugin`).
pub mod dra {
    /// DRA node API v1 (kubelet 1.34+ prefers it).
    #[allow(missing_docs, clippy::all)]
    pub mod v1 {
        tonic::include_proto!("k8s.io.kubelet.pkg.apis.dra.v1");

        /// Label advertised in `PluginInfo.supported_versions`.
        pub const SERVICE_LABEL: &str = "v1.DRAPlugin";
    }

    /// DRA node API v1beta1 (older kubelets).
    #[allow(missing_docs, clippy::all)]
    pub mod v1beta1 {
        tonic::include_proto!("k8s.io.kubelet.pkg.apis.dra.v1beta1");

        /// Label advertised in `PluginInfo.supported_versions`.
        pub const SERVICE_LABEL: &str = "v1beta1.DRAPlugin";
    }

    mod compat;
}

/// DRA device health stream (`v1alpha1.DRAResourceHealth`, KEP-4680),
/// served on the DRA socket beside the node service.
pub mod dra_health {
    /// The kubelet's `dra-health/v1alpha1` API (proto `package v1alpha1;`).
    #[allow(missing_docs, clippy::all)]
    pub mod v1alpha1 {
        tonic::include_proto!("v1alpha1");

        /// Label advertised in `PluginInfo.supported_versions`, after the
        /// DRAPlugin labels.
        pub const SERVICE_LABEL: &str = "v1alpha1.DRAResourceHealth";
    }
}

/// NRI API (`nri.pkg.api.v1alpha1`), messages only: NRI runs over ttrpc.
#[allow(missing_docs, clippy::all)]
pub mod nri {
    tonic::include_proto!("nri.pkg.api.v1alpha1");
    include!(concat!(env!("OUT_DIR"), "/nri_methods.rs"));

    /// ttrpc service name the plugin serves (mux conn 1).
    pub const PLUGIN_SERVICE: &str = "nri.pkg.api.v1alpha1.Plugin";
    /// ttrpc service name the runtime serves (mux conn 2).
    pub const RUNTIME_SERVICE: &str = "nri.pkg.api.v1alpha1.Runtime";

    impl Event {
        /// Bit of this event in `ConfigureResponse.events`.
        pub fn mask(self) -> i32 {
            match self as i32 {
                0 => 0,
                n => 1 << (n - 1),
            }
        }
    }
}

/// ttrpc envelope (`ttrpc.Request`, `ttrpc.Response`, status).
#[allow(missing_docs, clippy::all)]
pub mod ttrpc {
    tonic::include_proto!("ttrpc");
}

#[cfg(test)]
mod tests {
    use prost::Message;

    /// Expected bytes of a length-delimited field (wire type 2), for bodies
    /// under 128 bytes: tag, length, body.
    fn len_field(number: u8, body: &[u8]) -> Vec<u8> {
        let mut out = vec![(number << 3) | 2, body.len() as u8];
        out.extend_from_slice(body);
        out
    }

    /// Expected bytes of a small varint field (wire type 0): tag, value.
    fn varint_field(number: u8, value: u8) -> Vec<u8> {
        vec![number << 3, value]
    }

    #[test]
    fn plugin_info_fields_match_kubelet_numbers() {
        let info = super::pluginregistration::PluginInfo {
            r#type: "DRAPlugin".into(),
            name: "d".into(),
            endpoint: "e".into(),
            supported_versions: vec!["v1.DRAPlugin".into()],
        };
        let want = [
            len_field(1, b"DRAPlugin"),
            len_field(2, b"d"),
            len_field(3, b"e"),
            len_field(4, b"v1.DRAPlugin"),
        ]
        .concat();
        assert_eq!(info.encode_to_vec(), want);
    }

    #[test]
    fn registration_status_fields_match_kubelet_numbers() {
        let status = super::pluginregistration::RegistrationStatus {
            plugin_registered: true,
            error: "x".into(),
        };
        let want = [varint_field(1, 1), len_field(2, b"x")].concat();
        assert_eq!(status.encode_to_vec(), want);
    }

    #[test]
    fn dra_v1_device_carries_cdi_ids_in_field_4_and_share_id_in_5() {
        let dev = super::dra::v1::Device {
            request_names: vec![],
            pool_name: String::new(),
            device_name: "n".into(),
            cdi_device_ids: vec!["c".into()],
            share_id: Some(String::new()),
        };
        // An explicitly set optional string is encoded even when empty.
        let want = [len_field(3, b"n"), len_field(4, b"c"), len_field(5, b"")].concat();
        assert_eq!(dev.encode_to_vec(), want);
    }

    #[test]
    fn dra_v1_prepare_response_is_a_map_keyed_by_claim_uid() {
        use super::dra::v1::{NodePrepareResourceResponse, NodePrepareResourcesResponse};
        let mut resp = NodePrepareResourcesResponse::default();
        let claim = NodePrepareResourceResponse {
            devices: vec![],
            error: "e".into(),
        };
        resp.claims.insert("u".into(), claim);
        // claims=1 holds one map entry {key=1 "u", value=2 {error=2 "e"}}.
        let entry = [len_field(1, b"u"), len_field(2, &len_field(2, b"e"))].concat();
        assert_eq!(resp.encode_to_vec(), len_field(1, &entry));
    }

    #[test]
    fn dra_v1beta1_claim_and_device_fields_match_kubelet_numbers() {
        let claim = super::dra::v1beta1::Claim {
            namespace: "a".into(),
            uid: "b".into(),
            name: "c".into(),
        };
        let want = [len_field(1, b"a"), len_field(2, b"b"), len_field(3, b"c")].concat();
        assert_eq!(claim.encode_to_vec(), want);

        let dev = super::dra::v1beta1::Device {
            request_names: vec!["r".into()],
            pool_name: "p".into(),
            device_name: String::new(),
            cdi_device_ids: vec!["c".into()],
        };
        let want = [len_field(1, b"r"), len_field(2, b"p"), len_field(4, b"c")].concat();
        assert_eq!(dev.encode_to_vec(), want);
    }

    #[test]
    fn dra_health_device_fields_match_kubelet_numbers() {
        use super::dra_health::v1alpha1::{DeviceHealth, DeviceIdentifier, HealthStatus};
        let health = DeviceHealth {
            device: Some(DeviceIdentifier {
                pool_name: "p".into(),
                device_name: "d".into(),
            }),
            health: HealthStatus::Unhealthy as i32,
            last_updated_time: 7,
            health_check_timeout_seconds: 9,
            message: "m".into(),
        };
        let id = [len_field(1, b"p"), len_field(2, b"d")].concat();
        let want = [
            len_field(1, &id),
            varint_field(2, 2),
            varint_field(3, 7),
            varint_field(4, 9),
            len_field(5, b"m"),
        ]
        .concat();
        assert_eq!(health.encode_to_vec(), want);
    }

    #[test]
    fn nri_configure_response_events_is_field_2() {
        use super::nri::{ConfigureResponse, Event};
        let mask = Event::RunPodSandbox.mask()
            | Event::StopPodSandbox.mask()
            | Event::RemovePodSandbox.mask();
        assert_eq!(mask, 0x7);
        let resp = ConfigureResponse { events: mask };
        assert_eq!(resp.encode_to_vec(), varint_field(2, 7));
    }

    #[test]
    fn nri_register_plugin_and_pod_sandbox_fields_match_upstream() {
        use super::nri::{LinuxNamespace, LinuxPodSandbox, PodSandbox, RegisterPluginRequest};
        let reg = RegisterPluginRequest {
            plugin_name: "s".into(),
            plugin_idx: "10".into(),
            nri_version: "v".into(),
        };
        let want = [len_field(1, b"s"), len_field(2, b"10"), len_field(3, b"v")].concat();
        assert_eq!(reg.encode_to_vec(), want);

        let pod = PodSandbox {
            uid: "u".into(),
            linux: Some(LinuxPodSandbox {
                namespaces: vec![LinuxNamespace {
                    r#type: "n".into(),
                    path: "p".into(),
                }],
                ..Default::default()
            }),
            ips: vec!["i".into()],
            ..Default::default()
        };
        // uid=3, linux=8 {namespaces=5 {type=1, path=2}}, ips=10.
        let namespace = [len_field(1, b"n"), len_field(2, b"p")].concat();
        let want = [
            len_field(3, b"u"),
            len_field(8, &len_field(5, &namespace)),
            len_field(10, b"i"),
        ]
        .concat();
        assert_eq!(pod.encode_to_vec(), want);
    }

    #[test]
    fn nri_method_names_cover_every_rpc_of_both_services() {
        use super::nri::{plugin_methods, runtime_methods};
        assert_eq!(plugin_methods::RUN_POD_SANDBOX, "RunPodSandbox");
        assert_eq!(plugin_methods::STATE_CHANGE, "StateChange");
        assert_eq!(plugin_methods::ALL.len(), 18);
        assert_eq!(runtime_methods::ALL, ["RegisterPlugin", "UpdateContainers"]);
    }

    #[test]
    fn nri_state_change_decodes_event_and_pod() {
        use super::nri::{Event, StateChangeEvent};
        // event=1 (2 = STOP_POD_SANDBOX), pod=2 {id=1 "x"}.
        let wire = [varint_field(1, 2), len_field(2, &len_field(1, b"x"))].concat();
        let ev = StateChangeEvent::decode(&wire[..]).expect("valid test bytes");
        assert_eq!(ev.event(), Event::StopPodSandbox);
        assert_eq!(ev.pod.map(|p| p.id).as_deref(), Some("x"));
    }

    #[test]
    fn nri_decoding_skips_fields_we_left_out() {
        use super::nri::LinuxPodSandbox;
        // pod_resources=2 (a LinuxResources we do not model), cgroup_parent=3.
        let wire = [len_field(2, &varint_field(1, 1)), len_field(3, b"c")].concat();
        let linux = LinuxPodSandbox::decode(&wire[..]).expect("valid test bytes");
        assert_eq!(linux.cgroup_parent, "c");
    }

    #[test]
    fn ttrpc_request_and_response_fields_match_upstream() {
        use super::ttrpc::{Request, Response, Status};
        let req = Request {
            service: "s".into(),
            method: "m".into(),
            payload: vec![0xAA],
            timeout_nano: 1,
            metadata: vec![],
        };
        let want = [
            len_field(1, b"s"),
            len_field(2, b"m"),
            len_field(3, &[0xAA]),
            varint_field(4, 1),
        ]
        .concat();
        assert_eq!(req.encode_to_vec(), want);

        let resp = Response {
            status: Some(Status {
                code: 12,
                message: "x".into(),
                details: vec![],
            }),
            payload: vec![],
        };
        let status = [varint_field(1, 12), len_field(2, b"x")].concat();
        assert_eq!(resp.encode_to_vec(), len_field(1, &status));
    }
}
