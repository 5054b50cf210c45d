//! Telling the cluster why NodePublishVolume could not make or mount a volume's filesystem. The
//! gRPC error reaches only the pod's events (kubelet's FailedMount); the text is also written to
//! the LogicalVolume (`status.publishError`, cleared by the next successful publish) and, when the
//! volume context names the claim, to a Warning Event on the PVC, so `kubectl describe pvc` says
//! why a class's mkfs options were refused. All of it is best effort: a failure to record is
//! logged and never changes the RPC's answer.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use k8s_openapi::api::core::v1::{ObjectReference, PersistentVolume};
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::Store;
use kube::{Client, ResourceExt};
use lvms_api::LogicalVolume;
use serde_json::{Value, json};
use tracing::{info, warn};

/// The step of a publish that failed, when it is one worth telling the claim about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    Mkfs,
    Mount,
}

impl Step {
    /// The Event's reason (kubelet's own is FailedMount on the pod; these go on the claim).
    pub fn reason(self) -> &'static str {
        match self {
            Step::Mkfs => "FailedMkfs",
            Step::Mount => "FailedMount",
        }
    }
}

/// Event notes and the status field stay readable; the API server caps a note at 1 KiB.
const MAX_TEXT: usize = 1024;
/// How long recording may hold up the RPC's answer (kubelet is waiting for it).
const RECORD_TIMEOUT: Duration = Duration::from_secs(10);

/// `text` cut to [`MAX_TEXT`] bytes on a character boundary.
pub fn bounded(text: &str) -> String {
    if text.len() <= MAX_TEXT {
        return text.to_string();
    }
    let mut cut = MAX_TEXT - 3;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}...", &text[..cut])
}

/// The claim a volume context names (set by the CSI controller from `--extra-create-metadata`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Claim {
    pub namespace: String,
    pub name: String,
    /// The claim's PV, whose claimRef holds the claim's UID.
    pub pv: Option<String>,
}

pub fn claim_of(context: &HashMap<String, String>) -> Option<Claim> {
    let get = |k: &str| context.get(k).filter(|v| !v.is_empty()).cloned();
    Some(Claim {
        namespace: get(csi::PVC_NAMESPACE_CONTEXT_KEY)?,
        name: get(csi::PVC_NAME_CONTEXT_KEY)?,
        pv: get(csi::PV_NAME_CONTEXT_KEY),
    })
}

/// The merge patch that makes `status.publishError` say `wanted` (empty = absent), or None when
/// it already does: kubelet retries a failing publish, and a healthy publish must write nothing.
pub fn publish_error_patch(lv: &LogicalVolume, wanted: &str) -> Option<Value> {
    let current = lv.status.as_ref().map_or("", |s| s.publish_error.as_str());
    if current == wanted {
        return None;
    }
    let value = if wanted.is_empty() {
        Value::Null
    } else {
        json!(wanted)
    };
    Some(json!({"status": {"publishError": value}}))
}

/// The reference an Event on the claim carries; `uid` from the PV's claimRef when it names
/// the same claim (`kubectl describe pvc` lists Events by the claim's UID).
pub fn claim_reference(claim: &Claim, pv: Option<&PersistentVolume>) -> ObjectReference {
    let uid = pv
        .and_then(|p| p.spec.as_ref()?.claim_ref.as_ref())
        .filter(|r| {
            r.name.as_deref() == Some(&claim.name)
                && r.namespace.as_deref() == Some(&claim.namespace)
        })
        .and_then(|r| r.uid.clone());
    ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("PersistentVolumeClaim".into()),
        name: Some(claim.name.clone()),
        namespace: Some(claim.namespace.clone()),
        uid,
        ..Default::default()
    }
}

/// The node service's access to the cluster: the agent's cache of LogicalVolumes (so a healthy
/// publish costs no request) and an Event recorder.
pub struct Kube {
    client: Client,
    volumes: Store<LogicalVolume>,
    recorder: Recorder,
    node: String,
    /// Volume IDs whose failure this process wrote and has not cleared: the cache may not show
    /// the write yet when the next publish comes, and a retry must neither rewrite nor forget it.
    recorded: Mutex<HashSet<String>>,
}

impl Kube {
    pub fn new(client: Client, volumes: Store<LogicalVolume>, node: &str) -> Self {
        let reporter = Reporter {
            controller: "lvms-vg-manager".into(),
            instance: Some(node.to_string()),
        };
        Self {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            volumes,
            node: node.to_string(),
            recorded: Mutex::default(),
        }
    }

    /// Records a failed mkfs or mount of volume `id` on its LogicalVolume and its claim.
    pub async fn failed(
        &self,
        id: &str,
        context: &HashMap<String, String>,
        step: Step,
        text: &str,
    ) {
        let text = bounded(text);
        let work = async {
            let again = self.recorded().contains(id);
            self.set_publish_error(id, &text, again).await;
            if let Some(claim) = claim_of(context) {
                self.tell_claim(&claim, id, step, &text).await;
            }
        };
        if tokio::time::timeout(RECORD_TIMEOUT, work).await.is_err() {
            warn!(volume = id, "recording the publish failure timed out");
        }
    }

    /// Clears a recorded failure of volume `id` after a successful publish; nothing to do (and
    /// no request) when none is recorded.
    pub async fn succeeded(&self, id: &str) {
        let here = self.recorded().remove(id);
        if tokio::time::timeout(RECORD_TIMEOUT, self.set_publish_error(id, "", here))
            .await
            .is_err()
        {
            warn!(
                volume = id,
                "clearing the recorded publish failure timed out"
            );
        }
    }

    fn recorded(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.recorded.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The LogicalVolume whose volume ID is `id`: from the cache, else (`list`) from the API
    /// server, as the cache may not have synced yet.
    async fn object(&self, id: &str, list: bool) -> Option<Arc<LogicalVolume>> {
        let has_id = |o: &LogicalVolume| o.status.as_ref().is_some_and(|s| s.volume_id == id);
        if let Some(o) = self.volumes.state().into_iter().find(|o| has_id(o)) {
            return Some(o);
        }
        if !list {
            return None;
        }
        match Api::<LogicalVolume>::all(self.client.clone())
            .list(&ListParams::default())
            .await
        {
            Ok(l) => l.items.into_iter().find(|o| has_id(o)).map(Arc::new),
            Err(e) => {
                warn!(
                    volume = id,
                    "listing LogicalVolumes to record a publish failure: {e}"
                );
                None
            }
        }
    }

    /// Sets (or, with an empty `text`, clears) `status.publishError` of volume `id`. `ours` says
    /// this process wrote the last failure: then the cache is not trusted to show it, and the
    /// object may be looked up on the API server.
    async fn set_publish_error(&self, id: &str, text: &str, ours: bool) {
        let failing = !text.is_empty();
        let Some(lv) = self.object(id, failing || ours).await else {
            if failing {
                warn!(
                    volume = id,
                    "no LogicalVolume has this volume ID; the failure is not recorded on one"
                );
            }
            return;
        };
        let patch = match publish_error_patch(&lv, text) {
            Some(p) => p,
            // A retried failure already written, or nothing to clear as far as the cache knows.
            None if ours == failing => return,
            // The cache lags: what it shows is not what this process last wrote.
            None => {
                json!({"status": {"publishError": if failing { json!(text) } else { Value::Null }}})
            }
        };
        let name = lv.name_any();
        match Api::<LogicalVolume>::all(self.client.clone())
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) if text.is_empty() => {
                info!(logicalvolume = %name, "cleared the recorded publish failure")
            }
            Ok(_) => {
                self.recorded().insert(id.to_string());
                info!(logicalvolume = %name, "recorded the publish failure")
            }
            Err(e) => warn!(logicalvolume = %name, "writing status.publishError: {e}"),
        }
    }

    async fn tell_claim(&self, claim: &Claim, id: &str, step: Step, text: &str) {
        let pv = match &claim.pv {
            Some(name) => {
                match Api::<PersistentVolume>::all(self.client.clone())
                    .get_opt(name)
                    .await
                {
                    Ok(pv) => pv,
                    Err(e) => {
                        warn!(pv = %name, "reading the PV for its claim's UID: {e}");
                        None
                    }
                }
            }
            None => None,
        };
        let reference = claim_reference(claim, pv.as_ref());
        let event = Event {
            type_: EventType::Warning,
            reason: step.reason().into(),
            note: Some(bounded(&format!(
                "volume {id} on node {}: {text}",
                self.node
            ))),
            action: "NodePublishVolume".into(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&event, &reference).await {
            warn!(pvc = %format!("{}/{}", claim.namespace, claim.name), "recording an Event: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lvms_api::{LogicalVolumeSpec, LogicalVolumeStatus};

    fn lv(publish_error: &str) -> LogicalVolume {
        let mut o = LogicalVolume::new("pvc-1", LogicalVolumeSpec::default());
        o.status = Some(LogicalVolumeStatus {
            volume_id: "uid-1".into(),
            publish_error: publish_error.into(),
            ..Default::default()
        });
        o
    }

    #[test]
    fn the_status_is_written_only_when_it_changes() {
        assert_eq!(
            publish_error_patch(&lv(""), "mkfs failed"),
            Some(json!({"status": {"publishError": "mkfs failed"}}))
        );
        assert_eq!(
            publish_error_patch(&lv("mkfs failed"), "mkfs failed"),
            None,
            "a retry of the same failure"
        );
        assert_eq!(
            publish_error_patch(&lv("mkfs failed"), ""),
            Some(json!({"status": {"publishError": null}})),
            "cleared by merge patch: code and message are the agent's and stay"
        );
        assert_eq!(publish_error_patch(&lv(""), ""), None, "a healthy publish");
        let mut bare = lv("");
        bare.status = None;
        assert_eq!(publish_error_patch(&bare, ""), None);
    }

    #[test]
    fn the_claim_comes_from_the_volume_context() {
        let ctx = |list: &[(&str, &str)]| -> HashMap<String, String> {
            list.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        assert_eq!(
            claim_of(&ctx(&[
                ("lvms.topolvm.io/pvc-name", "data"),
                ("lvms.topolvm.io/pvc-namespace", "app"),
                ("lvms.topolvm.io/pv-name", "pvc-9"),
            ])),
            Some(Claim {
                namespace: "app".into(),
                name: "data".into(),
                pv: Some("pvc-9".into())
            })
        );
        assert_eq!(
            claim_of(&ctx(&[("lvms.topolvm.io/pvc-name", "data")])),
            None,
            "a name without its namespace"
        );
        assert_eq!(claim_of(&ctx(&[])), None, "a volume made before the keys");
    }

    #[test]
    fn the_reference_takes_the_uid_of_the_same_claim_only() {
        let claim = Claim {
            namespace: "app".into(),
            name: "data".into(),
            pv: Some("pvc-9".into()),
        };
        let pv = |name: &str| PersistentVolume {
            spec: Some(k8s_openapi::api::core::v1::PersistentVolumeSpec {
                claim_ref: Some(ObjectReference {
                    name: Some(name.into()),
                    namespace: Some("app".into()),
                    uid: Some("uid-claim".into()),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let r = claim_reference(&claim, Some(&pv("data")));
        assert_eq!(r.kind.as_deref(), Some("PersistentVolumeClaim"));
        assert_eq!(
            (r.namespace.as_deref(), r.name.as_deref()),
            (Some("app"), Some("data"))
        );
        assert_eq!(r.uid.as_deref(), Some("uid-claim"));
        assert_eq!(
            claim_reference(&claim, Some(&pv("other"))).uid,
            None,
            "a PV re-bound to another claim"
        );
        assert_eq!(claim_reference(&claim, None).uid, None);
    }

    #[test]
    fn long_text_is_bounded_on_a_character() {
        assert_eq!(bounded("short"), "short");
        let long = bounded(&"é".repeat(1000));
        assert!(
            long.len() <= MAX_TEXT && long.ends_with("..."),
            "{}",
            long.len()
        );
    }
}
