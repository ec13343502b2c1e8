//! How an unhealthy device shows in its slice: a `NoSchedule` device taint
//! (`resource.k8s.io/v1` `Device.taints`, KEP-5055), or, where the API
//! server refuses or drops taints (feature gate `DRADeviceTaints` off), a
//! string attribute `<driver>/unhealthy` naming the reason, which a
//! DeviceClass selector can exclude.

use std::time::{SystemTime, UNIX_EPOCH};

use k8s_openapi::api::resource::v1::{Device, DeviceAttribute, DeviceTaint};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::health::DeviceHealth;

/// The effect of our taints: keep new claims off the device; pods already
/// using it are left alone (their traffic may come back with the link).
pub const EFFECT: &str = "NoSchedule";
/// Name of the fallback attribute (under the driver's domain).
pub const UNHEALTHY_ATTRIBUTE: &str = "unhealthy";
/// Devices per slice when any device of the pool carries a taint
/// (`ResourceSliceMaxDevicesWithTaintsOrConsumesCounters`, 1.35+).
pub const MAX_TAINTED_DEVICES_PER_SLICE: usize = 64;

/// How the publisher marks unhealthy devices.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaintMode {
    /// `Device.taints` (the API server has device taints on).
    Taints,
    /// The `<driver>/unhealthy` attribute (taints were refused or dropped).
    Attribute,
}

/// The taint key of a problem: `<driver>/<reason>`, a qualified label name.
pub fn taint_key(driver: &str, reason: &str) -> String {
    format!("{driver}/{reason}")
}

/// Sets `device`'s health marks for `health` under `mode`, replacing any
/// it carried (a held device keeps its last published form, marks and all).
pub fn mark(device: &mut Device, health: Option<&DeviceHealth>, mode: TaintMode, driver: &str) {
    device.taints = None;
    let attribute = taint_key(driver, UNHEALTHY_ATTRIBUTE);
    if let Some(attributes) = device.attributes.as_mut() {
        attributes.remove(&attribute);
    }
    let Some((problem, since)) = health.and_then(|h| Some((h.problem.as_ref()?, h.since))) else {
        return;
    };
    match mode {
        TaintMode::Taints => {
            device.taints = Some(vec![DeviceTaint {
                key: taint_key(driver, problem.reason()),
                value: None,
                effect: EFFECT.to_string(),
                time_added: Some(time(since)),
            }]);
        }
        TaintMode::Attribute => {
            device.attributes.get_or_insert_default().insert(
                attribute,
                DeviceAttribute {
                    string: Some(problem.reason().to_string()),
                    ..Default::default()
                },
            );
        }
    }
}

fn time(t: SystemTime) -> Time {
    let secs = t.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    let secs = i64::try_from(secs).unwrap_or(i64::MAX);
    Time(k8s_openapi::jiff::Timestamp::from_second(secs).unwrap_or_default())
}

/// Whether an apply error is the API server refusing the `taints` field
/// (a 400 or 422 whose message names it), so the publisher falls back to
/// the attribute.
pub fn refuses_taints(error: &kube::Error) -> bool {
    match error {
        kube::Error::Api(status) => {
            matches!(status.code, 400 | 422) && status.message.contains("taints")
        }
        _ => false,
    }
}

/// Whether the API server dropped taints we sent: it silently clears
/// fields of a disabled feature gate, so the stored object has none.
pub fn taints_dropped(sent: &[Device], stored: &[Device]) -> bool {
    let tainted = |d: &&Device| d.taints.as_ref().is_some_and(|t| !t.is_empty());
    sent.iter().any(|d| tainted(&d)) && !stored.iter().any(|d| tainted(&d))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::Problem;
    use std::time::Duration;

    fn unhealthy() -> DeviceHealth {
        DeviceHealth {
            problem: Some(Problem::PfLinkDown {
                pf: "ens1f0".into(),
                operstate: "down".into(),
            }),
            since: UNIX_EPOCH + Duration::from_secs(1_700_000_000),
        }
    }

    #[test]
    fn an_unhealthy_device_gets_a_noschedule_taint_with_its_reason_and_time() {
        let mut d = Device::default();
        mark(
            &mut d,
            Some(&unhealthy()),
            TaintMode::Taints,
            "sriov.dra.dev",
        );
        let json = serde_json::to_value(&d.taints).unwrap();
        assert_eq!(
            json,
            serde_json::json!([{
                "key": "sriov.dra.dev/pf-link-down",
                "effect": "NoSchedule",
                "timeAdded": "2023-11-14T22:13:20Z",
            }])
        );
        // Recovery clears it.
        let healthy = DeviceHealth {
            problem: None,
            since: UNIX_EPOCH,
        };
        mark(&mut d, Some(&healthy), TaintMode::Taints, "sriov.dra.dev");
        assert_eq!(d.taints, None);
    }

    #[test]
    fn the_fallback_is_an_attribute_that_recovery_removes() {
        let mut d = Device::default();
        mark(
            &mut d,
            Some(&unhealthy()),
            TaintMode::Attribute,
            "sriov.dra.dev",
        );
        assert_eq!(d.taints, None);
        let attrs = d.attributes.clone().unwrap();
        assert_eq!(
            attrs["sriov.dra.dev/unhealthy"].string.as_deref(),
            Some("pf-link-down")
        );
        mark(&mut d, None, TaintMode::Attribute, "sriov.dra.dev");
        assert!(d.attributes.unwrap().is_empty());
    }

    #[test]
    fn a_422_naming_taints_is_a_refusal_and_others_are_not() {
        let status = |code, message: &str| {
            kube::Error::Api(Box::new(kube::core::Status {
                code,
                message: message.into(),
                ..Default::default()
            }))
        };
        assert!(refuses_taints(&status(
            422,
            "ResourceSlice.resource.k8s.io \"x\" is invalid: spec.devices[0].taints: Forbidden"
        )));
        assert!(!refuses_taints(&status(
            422,
            "spec.devices[0].name: Invalid"
        )));
        assert!(!refuses_taints(&status(500, "taints")));
    }

    #[test]
    fn taints_missing_from_the_stored_object_were_dropped() {
        let mut sent = Device::default();
        mark(&mut sent, Some(&unhealthy()), TaintMode::Taints, "d");
        let stored = Device::default();
        assert!(taints_dropped(&[sent.clone()], &[stored]));
        assert!(!taints_dropped(&[sent.clone()], &[sent]));
        assert!(!taints_dropped(&[Device::default()], &[Device::default()]));
    }
}
