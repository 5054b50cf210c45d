//! The PVC behind a CreateVolume: read through the name and namespace that csi-provisioner's
//! `--extra-create-metadata` adds to the parameters (its annotations choose a thick volume's
//! layout), and told with a Warning Event when its volume options are refused, so `kubectl
//! describe pvc` says why without reading the controller's log.

use std::collections::HashMap;

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference, PersistentVolumeClaim};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::ResourceExt;
use kube::api::{Api, PostParams};
use tonic::Status;
use tracing::{info, warn};

use super::store::{Store, api_error};
use crate::{
    CSI_DRIVER_NAME, PV_NAME_CONTEXT_KEY, PV_NAME_PARAMETER, PVC_NAME_CONTEXT_KEY,
    PVC_NAME_PARAMETER, PVC_NAMESPACE_CONTEXT_KEY, PVC_NAMESPACE_PARAMETER,
};

/// Reason of the Event for a layout or filesystem option the driver or the node refused.
pub const REFUSED_REASON: &str = "VolumeOptionsRefused";
/// The API server refuses longer event messages.
const MAX_MESSAGE: usize = 1024;

/// (namespace, name) of the PVC, when the provisioner passed them.
pub fn claim_key(params: &HashMap<String, String>) -> Option<(&str, &str)> {
    let ns = params
        .get(PVC_NAMESPACE_PARAMETER)
        .filter(|s| !s.is_empty())?;
    let name = params.get(PVC_NAME_PARAMETER).filter(|s| !s.is_empty())?;
    Some((ns, name))
}

/// The volume context entries naming the claim and PV of a CreateVolume, from the parameters
/// `--extra-create-metadata` adds (none without it): NodePublishVolume's failures are told to
/// the claim. From the request alone, so a repeat answers the same.
pub fn claim_context(params: &HashMap<String, String>) -> HashMap<String, String> {
    let Some((ns, name)) = claim_key(params) else {
        return HashMap::new();
    };
    let mut context = HashMap::from([
        (PVC_NAMESPACE_CONTEXT_KEY.to_string(), ns.to_string()),
        (PVC_NAME_CONTEXT_KEY.to_string(), name.to_string()),
    ]);
    if let Some(pv) = params.get(PV_NAME_PARAMETER).filter(|s| !s.is_empty()) {
        context.insert(PV_NAME_CONTEXT_KEY.to_string(), pv.clone());
    }
    context
}

/// 64-bit FNV-1a, for an Event name that repeats with the same refusal.
fn fnv1a64(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// The Warning Event on `pvc` for `message`. Its name is derived from the claim and the message,
/// so the provisioner's retries of one refusal make one Event, not one per retry.
pub fn refusal_event(pvc: &PersistentVolumeClaim, message: &str, now: Time) -> Event {
    let mut message = message.to_string();
    if message.len() > MAX_MESSAGE {
        let mut cut = MAX_MESSAGE - 3;
        while !message.is_char_boundary(cut) {
            cut -= 1;
        }
        message.truncate(cut);
        message.push_str("...");
    }
    let uid = pvc.uid().unwrap_or_default();
    let name = pvc.name_any();
    Event {
        metadata: ObjectMeta {
            name: Some(format!(
                "{}.{:016x}",
                name.chars().take(200).collect::<String>(),
                fnv1a64(&format!("{uid}\n{REFUSED_REASON}\n{message}"))
            )),
            namespace: pvc.namespace(),
            ..Default::default()
        },
        involved_object: ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("PersistentVolumeClaim".into()),
            name: Some(name),
            namespace: pvc.namespace(),
            uid: pvc.uid(),
            resource_version: pvc.resource_version(),
            ..Default::default()
        },
        reason: Some(REFUSED_REASON.into()),
        message: Some(message),
        type_: Some("Warning".into()),
        count: Some(1),
        first_timestamp: Some(now.clone()),
        last_timestamp: Some(now),
        source: Some(EventSource {
            component: Some(CSI_DRIVER_NAME.into()),
            host: None,
        }),
        reporting_component: Some(CSI_DRIVER_NAME.into()),
        ..Default::default()
    }
}

impl Store {
    /// The PVC `namespace/name`; None when it is gone (the provisioner gives up on a deleted
    /// claim by itself).
    pub async fn claim(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<PersistentVolumeClaim>, Status> {
        Api::<PersistentVolumeClaim>::namespaced(self.client.clone(), namespace)
            .get_opt(name)
            .await
            .map_err(|e| {
                api_error(
                    &format!(
                        "reading PersistentVolumeClaim {namespace}/{name} (its layout annotations)"
                    ),
                    e,
                )
            })
    }

    /// Records `message` as a Warning Event on `pvc`. Best effort: the refusal itself is the
    /// RPC's answer, which the provisioner also reports; an Event that exists already (the same
    /// refusal, retried) is left as it is.
    pub async fn warn_claim(&self, pvc: &PersistentVolumeClaim, message: &str) {
        let ns = pvc.namespace().unwrap_or_default();
        let event = refusal_event(pvc, message, Time(k8s_openapi::jiff::Timestamp::now()));
        match Api::<Event>::namespaced(self.client.clone(), &ns)
            .create(&PostParams::default(), &event)
            .await
        {
            Ok(_) => {
                info!(pvc = %format!("{ns}/{}", pvc.name_any()), message, "recorded the refusal on the PVC")
            }
            Err(kube::Error::Api(s)) if s.is_already_exists() => {}
            Err(e) => warn!(pvc = %format!("{ns}/{}", pvc.name_any()), "recording an Event: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pvc() -> PersistentVolumeClaim {
        let mut p = PersistentVolumeClaim::default();
        p.metadata.name = Some("data".into());
        p.metadata.namespace = Some("app".into());
        p.metadata.uid = Some("uid-7".into());
        p
    }

    #[test]
    fn the_claim_comes_from_the_extra_metadata() {
        let p = |list: &[(&str, &str)]| -> HashMap<String, String> {
            list.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        assert_eq!(
            claim_key(&p(&[
                (PVC_NAME_PARAMETER, "data"),
                (PVC_NAMESPACE_PARAMETER, "app")
            ])),
            Some(("app", "data"))
        );
        assert_eq!(claim_key(&p(&[(PVC_NAME_PARAMETER, "data")])), None);
        assert_eq!(claim_key(&p(&[])), None);
    }

    #[test]
    fn the_claim_and_pv_reach_the_volume_context() {
        let p = |list: &[(&str, &str)]| -> HashMap<String, String> {
            list.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let all = p(&[
            (PVC_NAME_PARAMETER, "data"),
            (PVC_NAMESPACE_PARAMETER, "app"),
            (PV_NAME_PARAMETER, "pvc-1234"),
            ("other", "x"),
        ]);
        assert_eq!(
            claim_context(&all),
            p(&[
                ("lvms.topolvm.io/pvc-name", "data"),
                ("lvms.topolvm.io/pvc-namespace", "app"),
                ("lvms.topolvm.io/pv-name", "pvc-1234"),
            ]),
            "only our own keys, never the provisioner's"
        );
        let no_pv = p(&[
            (PVC_NAME_PARAMETER, "data"),
            (PVC_NAMESPACE_PARAMETER, "app"),
        ]);
        assert_eq!(claim_context(&no_pv).len(), 2);
        assert!(
            claim_context(&p(&[(PV_NAME_PARAMETER, "pvc-1234")])).is_empty(),
            "a PV without its claim names no one to tell"
        );
    }

    #[test]
    fn one_event_per_refusal_on_the_claim() {
        let now = Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH);
        let e = refusal_event(&pvc(), "mirror needs 2 physical volumes", now.clone());
        assert_eq!(
            e.involved_object.kind.as_deref(),
            Some("PersistentVolumeClaim")
        );
        assert_eq!(e.involved_object.uid.as_deref(), Some("uid-7"));
        assert_eq!(e.metadata.namespace.as_deref(), Some("app"));
        assert_eq!(e.type_.as_deref(), Some("Warning"));
        assert_eq!(e.reason.as_deref(), Some(REFUSED_REASON));
        let again = refusal_event(&pvc(), "mirror needs 2 physical volumes", now.clone());
        assert_eq!(
            e.metadata.name, again.metadata.name,
            "a retry makes the same Event"
        );
        let other = refusal_event(&pvc(), "another reason", now.clone());
        assert_ne!(e.metadata.name, other.metadata.name);
        assert!(e.metadata.name.unwrap().starts_with("data."));
        let long = refusal_event(&pvc(), &"é".repeat(2000), now);
        assert!(long.message.unwrap().len() <= MAX_MESSAGE);
    }
}
