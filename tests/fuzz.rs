//! Bounded fuzzing of everything the driver parses from outside the
//! process: opaque claim configs (`VfConfig`, `VfPolicy`), the node config,
//! NRI mux frames and ttrpc messages, rtnetlink and RDMA netlink replies,
//! and the state store's records. Each target must reject bad input with
//! an error value and never panic.
//!
//! Property tests rather than `cargo fuzz`: they run on stable in the
//! ordinary test command, with a fixed case count per target
//! (`PROPTEST_CASES` raises it for a longer run on a workstation).

use k8s_openapi::api::resource::v1::{DeviceAllocationConfiguration, OpaqueDeviceConfiguration};
use k8s_openapi::apimachinery::pkg::runtime::RawExtension;
use proptest::prelude::*;
use serde_json::{Map, Value};

/// Field names the parsers know, so generated documents reach past the
/// first "unknown field" check, plus a few they do not.
const KEYS: &[&str] = &[
    "apiVersion",
    "kind",
    "mode",
    "ifName",
    "mtu",
    "mac",
    "vlan",
    "vlanQoS",
    "vlanProto",
    "spoofChk",
    "trust",
    "linkState",
    "minTxRateMbps",
    "maxTxRateMbps",
    "ipam",
    "pool",
    "static",
    "routes",
    "dst",
    "gw",
    "rdma",
    "exclusive",
    "allowedVlans",
    "allowedVlanQoS",
    "allowedVlanProtos",
    "allowedPools",
    "allowStaticAddresses",
    "claimMaySet",
    "driverName",
    "nodeName",
    "selectors",
    "vendors",
    "pfNames",
    "pfPolicies",
    "numVfs",
    "pools",
    "subnets",
    "subnet",
    "rangeStart",
    "exclude",
    "debugAddress",
    "x",
    "",
];

/// Scalars the parsers treat specially, and arbitrary ones.
fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        (0u32..5000).prop_map(Value::from),
        prop_oneof![
            Just("sriov.dra.dev/v1alpha1"),
            Just("VfConfig"),
            Just("VfPolicy"),
            Just("dpdk"),
            Just("netdevice"),
            Just("802.1ad"),
            Just("10.1.0.0/24"),
            Just("fe80::1/64"),
            Just("100-199"),
            Just("4094-1"),
            Just("ens1f0#0-3,6"),
            Just("02:00:00:00:01:00"),
            Just("trust"),
        ]
        .prop_map(Value::from),
        ".{0,24}".prop_map(Value::from),
    ]
}

/// JSON documents a few levels deep, keyed mostly by known field names.
fn document() -> impl Strategy<Value = Value> {
    scalar().prop_recursive(4, 48, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec((prop::sample::select(KEYS), inner), 0..8).prop_map(|pairs| {
                Value::Object(
                    pairs
                        .into_iter()
                        .map(|(k, v)| (k.to_string(), v))
                        .collect::<Map<_, _>>(),
                )
            }),
        ]
    })
}

/// A document that claims to be one of our kinds, so the strict parsers
/// get past the apiVersion/kind check.
fn opaque_config() -> impl Strategy<Value = Value> {
    (
        document(),
        prop::sample::select(&["VfConfig", "VfPolicy", "Other"][..]),
    )
        .prop_map(|(doc, kind)| {
            let mut obj = match doc {
                Value::Object(m) => m,
                other => {
                    let mut m = Map::new();
                    m.insert("x".into(), other);
                    m
                }
            };
            obj.insert("apiVersion".into(), "sriov.dra.dev/v1alpha1".into());
            obj.insert("kind".into(), kind.into());
            Value::Object(obj)
        })
}

/// `PROPTEST_CASES` when set (a longer run), else the CI bound.
fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(default)
}

fn entry(source: &str, parameters: Value) -> DeviceAllocationConfiguration {
    DeviceAllocationConfiguration {
        source: source.into(),
        requests: None,
        opaque: Some(OpaqueDeviceConfiguration {
            driver: "sriov.dra.dev".into(),
            parameters: RawExtension(parameters),
        }),
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: cases(256),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn claim_and_class_configs_never_panic(
        class in opaque_config(),
        claim in opaque_config(),
        raw in document(),
    ) {
        let configs = [entry("FromClass", class), entry("FromClaim", claim), entry("FromClaim", raw)];
        for n in 0..=configs.len() {
            let _ = sriov_dra::apis::configs_for_request(
                "ran/du-0", "sriov.dra.dev", &configs[..n], "fh0", Some("sriov-vf"),
            );
        }
    }

    #[test]
    fn node_config_yaml_never_panics(doc in document(), text in ".{0,200}") {
        let yaml = serde_yaml::to_string(&doc).unwrap_or_default();
        let _ = sriov_dra::config::NodeConfig::parse(&yaml, "fuzz.yaml");
        let _ = sriov_dra::config::NodeConfig::parse(&text, "fuzz.yaml");
    }

    #[test]
    fn rtnetlink_replies_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = sriov::netlink::decode_messages(&bytes);
    }

    #[test]
    fn rtnetlink_replies_with_a_plausible_header_never_panic(
        kind in prop::sample::select(&[2u16, 3, 16, 17, 20, 24][..]),
        flags in any::<u16>(),
        body in prop::collection::vec(any::<u8>(), 0..400),
    ) {
        let _ = sriov::netlink::decode_messages(&netlink_datagram(kind, flags, &body));
    }

    #[test]
    fn rdma_netlink_replies_never_panic(
        kind in prop::sample::select(&[2u16, 3, 1, (5 << 10) + 1, (5 << 10) + 6][..]),
        flags in any::<u16>(),
        body in prop::collection::vec(any::<u8>(), 0..400),
        raw in prop::collection::vec(any::<u8>(), 0..128),
    ) {
        let _ = rdma::netlink::wire::decode_messages(&netlink_datagram(kind, flags, &body));
        let _ = rdma::netlink::wire::decode_messages(&raw);
    }

    #[test]
    fn ttrpc_messages_never_panic(
        chunks in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..64), 0..8),
    ) {
        let mut decoder = sriov_dra::nri::ttrpc::MessageDecoder::default();
        for chunk in &chunks {
            decoder.push(chunk);
            while let Ok(Some(message)) = decoder.next_message() {
                let _ = sriov_dra::nri::ttrpc::decode_response(&message.body);
            }
        }
    }

    #[test]
    fn state_records_never_panic(doc in document(), bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        let text = serde_json::to_vec(&doc).unwrap_or_default();
        for input in [&text[..], &bytes[..]] {
            let _ = serde_json::from_slice::<sriov_dra::state::ClaimRecord>(input);
            let _ = serde_json::from_slice::<sriov_dra::state::attachments::PodAttachments>(input);
            let _ = serde_json::from_slice::<ipam::Allocation>(input);
        }
    }
}

/// One netlink message with a correct header around `body`.
fn netlink_datagram(kind: u16, flags: u16, body: &[u8]) -> Vec<u8> {
    let len = (16 + body.len()) as u32;
    let mut out = Vec::with_capacity(len as usize);
    out.extend_from_slice(&len.to_ne_bytes());
    out.extend_from_slice(&kind.to_ne_bytes());
    out.extend_from_slice(&flags.to_ne_bytes());
    out.extend_from_slice(&1u32.to_ne_bytes());
    out.extend_from_slice(&0u32.to_ne_bytes());
    out.extend_from_slice(body);
    out
}

/// Mux frames from a peer that sends anything: the reader ends each conn
/// with an error value (or keeps reading), and never panics.
#[test]
fn nri_mux_frames_never_panic() {
    use proptest::test_runner::{Config, TestRunner};
    use sriov_dra::nri::mux::Mux;
    use tokio::io::AsyncWriteExt;

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut runner = TestRunner::new(Config {
        cases: cases(128),
        failure_persistence: None,
        ..Config::default()
    });
    let frames = prop::collection::vec(
        (
            0u32..4,
            prop::collection::vec(any::<u8>(), 0..64),
            any::<bool>(),
        ),
        0..8,
    );
    runner
        .run(&frames, |frames| {
            runtime.block_on(async {
                let (ours, mut peer) = tokio::net::UnixStream::pair().expect("socketpair");
                let mux = Mux::new(ours);
                let mut conn1 = mux.open(1).expect("open 1").reader;
                let _conn2 = mux.open(2).expect("open 2");
                mux.unblock();
                for (conn, payload, lie_about_length) in frames {
                    let mut bytes = Vec::new();
                    bytes.extend_from_slice(&conn.to_be_bytes());
                    let len = if lie_about_length {
                        u32::MAX
                    } else {
                        payload.len() as u32
                    };
                    bytes.extend_from_slice(&len.to_be_bytes());
                    bytes.extend_from_slice(&payload);
                    let _ = peer.write_all(&bytes).await;
                }
                drop(peer);
                let read_all = async { while conn1.read_frame().await.is_ok() {} };
                tokio::time::timeout(std::time::Duration::from_secs(5), read_all)
                    .await
                    .expect("the conn ends once the peer has gone");
            });
            Ok(())
        })
        .expect("no input panics the mux");
}
