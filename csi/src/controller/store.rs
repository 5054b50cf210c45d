//! The controller's API calls: device classes, node capacity, and LogicalVolumes (find, create,
//! wait for the node, grow, delete). Every failure is already a gRPC status for the RPC to
//! return.
//!
//! Waiting is event-driven once [`Store::watch`] runs: one watch of all LogicalVolumes feeds a
//! cache, every change wakes the waiters, and each waiter reads its object from the cache, so
//! the answer goes out as soon as the node's status lands and fifty waiters cost no more API
//! calls than one. The cache only ever shortens a wait: an object it lacks or holds under
//! another UID is read from the API server, and a slow poll remains in case the watch stalls.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::reflector::{self, ObjectRef, reflector};
use kube::runtime::watcher::{self, watcher};
use kube::{Client, ResourceExt};
use lvms_api::names::capacity_annotation;
use lvms_api::{LVMVolumeGroup, LogicalVolume};
use serde_json::json;
use tokio::sync::watch;
use tokio::time::Instant;
use tonic::Status;
use tracing::warn;

use super::decide::{self, Progress};
use crate::DEVICE_CLASS_PARAMETER;

/// First pause between polls; doubled up to MAX_POLL. The node usually answers in tens of ms.
const FIRST_POLL: Duration = Duration::from_millis(20);
const MAX_POLL: Duration = Duration::from_millis(500);
/// With the watch running, a poll is only a safety net.
const FIRST_POLL_WATCHED: Duration = Duration::from_secs(1);
const MAX_POLL_WATCHED: Duration = Duration::from_secs(5);

#[derive(Clone)]
pub struct Store {
    pub(super) client: Client,
    namespace: String,
    /// Set once the API has answered a list of device classes: what Probe reports.
    ready: Arc<AtomicBool>,
    /// The watch-fed cache of LogicalVolumes and its change counter, once [`Store::watch`] runs.
    cache: Option<Cache>,
}

#[derive(Clone)]
struct Cache {
    lvs: reflector::Store<LogicalVolume>,
    changes: watch::Receiver<u64>,
}

/// The outcome of waiting for the node.
pub enum Waited {
    /// Boxed: an object is large next to a status.
    Ready(Box<LogicalVolume>),
    /// The node wrote a failure (its code and message); whether it had made the LV before.
    Failed { status: Status, made: bool },
}

/// Whether `a` is a later version of the object than `b` (resourceVersions of one object only
/// grow; compared as numbers when both are, else any difference counts as news).
fn newer(a: &LogicalVolume, b: &LogicalVolume) -> bool {
    let (ra, rb) = (a.resource_version(), b.resource_version());
    match (
        ra.as_deref().and_then(|r| r.parse::<u64>().ok()),
        rb.as_deref().and_then(|r| r.parse::<u64>().ok()),
    ) {
        (Some(x), Some(y)) => x > y,
        _ => ra != rb,
    }
}

/// A kube error as the status an RPC returns: the API being unreachable or overloaded is
/// transient (Unavailable: the sidecar retries); anything else is ours (Internal).
pub(super) fn api_error(what: &str, e: kube::Error) -> Status {
    match &e {
        kube::Error::Api(s) if s.code != 429 && s.code < 500 => {
            Status::internal(format!("{what}: {e}"))
        }
        _ => Status::unavailable(format!("{what}: {e}")),
    }
}

fn is_api(e: &kube::Error, pred: fn(&kube::core::Status) -> bool) -> bool {
    matches!(e, kube::Error::Api(s) if pred(s))
}

/// Why a wait ended.
#[derive(PartialEq)]
enum Woke {
    /// The watch saw a change (to some LogicalVolume): look in the cache.
    Change,
    /// The poll timer: ask the API server.
    Timer,
}

/// Waits for the next look: a change seen by the watch, or the poll timer. None once the
/// deadline has come.
struct Backoff {
    next: Duration,
    max: Duration,
    deadline: Instant,
    changes: Option<watch::Receiver<u64>>,
}

impl Backoff {
    fn new(deadline: Instant, cache: Option<&Cache>) -> Self {
        let (next, max) = match cache {
            Some(_) => (FIRST_POLL_WATCHED, MAX_POLL_WATCHED),
            None => (FIRST_POLL, MAX_POLL),
        };
        Self {
            next,
            max,
            deadline,
            changes: cache.map(|c| c.changes.clone()),
        }
    }

    async fn wait(&mut self) -> Option<Woke> {
        let now = Instant::now();
        if now >= self.deadline {
            return None;
        }
        let sleep = tokio::time::sleep(self.next.min(self.deadline - now));
        let woke = match self.changes.as_mut() {
            Some(rx) => tokio::select! {
                r = rx.changed() => match r {
                    Ok(()) => Woke::Change,
                    // The watch task ended: poll from now on.
                    Err(_) => {
                        self.changes = None;
                        self.max = MAX_POLL;
                        Woke::Timer
                    }
                },
                _ = sleep => Woke::Timer,
            },
            None => {
                sleep.await;
                Woke::Timer
            }
        };
        if woke == Woke::Timer {
            self.next = (self.next * 2).min(self.max);
        }
        Some(woke)
    }
}

impl Store {
    pub fn new(client: Client, namespace: String) -> Self {
        Self {
            client,
            namespace,
            ready: Arc::new(AtomicBool::new(false)),
            cache: None,
        }
    }

    /// Starts the watch of all LogicalVolumes that feeds the cache (call once, before serving).
    pub fn watch(&mut self) -> tokio::task::JoinHandle<()> {
        let (reader, writer) = reflector::store();
        let (tx, rx) = watch::channel(0u64);
        self.cache = Some(Cache {
            lvs: reader,
            changes: rx,
        });
        let stream = reflector(writer, watcher(self.lvs(), watcher::Config::default()));
        tokio::spawn(async move {
            let mut stream = std::pin::pin!(stream);
            while let Some(event) = stream.next().await {
                match event {
                    Ok(_) => tx.send_modify(|n| *n += 1),
                    Err(e) => {
                        warn!(error = %e, "watching LogicalVolumes; retrying");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            }
        })
    }

    /// `name` from the cache, if the cache has it under `uid` (else ask the API server).
    fn cached(&self, name: &str, uid: Option<&str>) -> Option<LogicalVolume> {
        let c = self.cache.as_ref()?;
        let lv = c.lvs.get(&ObjectRef::new(name))?;
        (lv.uid().as_deref() == uid).then(|| LogicalVolume::clone(&lv))
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }

    fn lvs(&self) -> Api<LogicalVolume> {
        Api::all(self.client.clone())
    }

    fn classes(&self) -> Api<LVMVolumeGroup> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    /// Every device class (one LVMVolumeGroup each). Marks the service ready.
    pub async fn list_classes(&self) -> Result<Vec<LVMVolumeGroup>, Status> {
        let list = self
            .classes()
            .list(&ListParams::default())
            .await
            .map_err(|e| api_error("listing LVMVolumeGroups", e))?;
        self.ready.store(true, Ordering::Relaxed);
        Ok(list.items)
    }

    pub async fn class(&self, name: &str) -> Result<Option<LVMVolumeGroup>, Status> {
        self.classes()
            .get_opt(name)
            .await
            .map_err(|e| api_error(&format!("reading LVMVolumeGroup {name}"), e))
    }

    /// The class a request names in its parameters, else the default class.
    pub async fn resolve_class(&self, named: Option<&str>) -> Result<LVMVolumeGroup, Status> {
        match named {
            Some(name) => self.class(name).await?.ok_or_else(|| {
                Status::invalid_argument(format!(
                    "parameters[{DEVICE_CLASS_PARAMETER}]: device class {name:?} does not exist"
                ))
            }),
            None => self
                .list_classes()
                .await?
                .into_iter()
                .find(|c| c.spec.default)
                .ok_or_else(|| {
                    Status::invalid_argument(format!(
                        "parameters[{DEVICE_CLASS_PARAMETER}] is not set and no device class is the default"
                    ))
                }),
        }
    }

    /// Free bytes of `class` on each node that reports it (the node agents' annotations).
    /// A reflector cache of Nodes can replace this list when clusters grow large.
    pub async fn capacities(&self, class: &str) -> Result<BTreeMap<String, u64>, Status> {
        let key = capacity_annotation(class);
        let nodes = Api::<Node>::all(self.client.clone())
            .list(&ListParams::default())
            .await
            .map_err(|e| api_error("listing Nodes", e))?;
        Ok(nodes
            .items
            .iter()
            .filter_map(|n| {
                let a = n.annotations().get(&key)?;
                Some((n.name_any(), decide::parse_capacity(Some(a))))
            })
            .collect())
    }

    pub async fn get(&self, name: &str) -> Result<Option<LogicalVolume>, Status> {
        self.lvs()
            .get_opt(name)
            .await
            .map_err(|e| api_error(&format!("reading LogicalVolume {name}"), e))
    }

    /// The LogicalVolume whose volume ID is `id`: from the cache, else (not there yet, or no
    /// cache) from a list of them all.
    pub async fn find(&self, id: &str) -> Result<Option<LogicalVolume>, Status> {
        if let Some(c) = &self.cache
            && let Some(lv) = c.lvs.find(|lv| decide::has_volume_id(lv, id))
        {
            return Ok(Some(LogicalVolume::clone(&lv)));
        }
        let list = self
            .lvs()
            .list(&ListParams::default())
            .await
            .map_err(|e| api_error("listing LogicalVolumes", e))?;
        Ok(list
            .items
            .into_iter()
            .find(|lv| decide::has_volume_id(lv, id)))
    }

    /// Every LogicalVolume, from the API server rather than the cache: a list right after a
    /// CreateVolume or DeleteVolume must show it (or not), and the health monitor's one list a
    /// minute costs one request.
    pub async fn list_all(&self) -> Result<Vec<LogicalVolume>, Status> {
        self.lvs()
            .list(&ListParams::default())
            .await
            .map(|l| l.items)
            .map_err(|e| api_error("listing LogicalVolumes", e))
    }

    /// Creates `lv`; None when an object of that name already exists (a concurrent or earlier
    /// identical call: the caller reads it and decides).
    pub async fn create(&self, lv: &LogicalVolume) -> Result<Option<LogicalVolume>, Status> {
        match self.lvs().create(&PostParams::default(), lv).await {
            Ok(created) => Ok(Some(created)),
            Err(e) if is_api(&e, |s| s.is_already_exists() || s.is_conflict()) => Ok(None),
            Err(e) => Err(api_error(
                &format!("creating LogicalVolume {}", lv.name_any()),
                e,
            )),
        }
    }

    /// Polls `lv` until the node reports it ready at `size` bytes or failed. Deadline →
    /// DeadlineExceeded; a retry of the RPC resumes waiting on the same object.
    pub async fn wait(
        &self,
        lv: &LogicalVolume,
        size: u64,
        deadline: Instant,
    ) -> Result<Waited, Status> {
        let name = lv.name_any();
        let mut backoff = Backoff::new(deadline, self.cache.as_ref());
        let mut current = lv.clone();
        loop {
            match decide::progress(&current, size) {
                Progress::Ready => return Ok(Waited::Ready(Box::new(current))),
                Progress::Failed(status) => {
                    let made = current
                        .status
                        .as_ref()
                        .is_some_and(|s| !s.volume_id.is_empty());
                    return Ok(Waited::Failed { status, made });
                }
                Progress::Pending => {}
            }
            let Some(woke) = backoff.wait().await else {
                return Err(Status::deadline_exceeded(format!(
                    "LogicalVolume {name}: node {} has not reported {size} bytes yet; retry to keep waiting",
                    current.spec.node_name
                )));
            };
            let cached = match woke {
                Woke::Change => self.cached(&name, lv.uid().as_deref()),
                Woke::Timer => None,
            };
            current = match cached {
                // A change to another object, or a copy older than ours: nothing new.
                Some(c) if !newer(&c, &current) => current,
                Some(c) => c,
                None => match self.get(&name).await? {
                    Some(l) if l.uid() == lv.uid() => l,
                    _ => {
                        return Err(Status::aborted(format!(
                            "LogicalVolume {name} was deleted while waiting for the node"
                        )));
                    }
                },
            };
        }
    }

    /// Deletes `lv` and waits until it is gone (the node removes the LV, then the finalizer).
    /// The UID precondition keeps a newer object of the same name safe.
    pub async fn delete(&self, lv: &LogicalVolume, deadline: Instant) -> Result<(), Status> {
        let name = lv.name_any();
        let params = DeleteParams {
            preconditions: Some(Preconditions {
                uid: lv.uid(),
                resource_version: None,
            }),
            ..Default::default()
        };
        match self.lvs().delete(&name, &params).await {
            Ok(_) => {}
            Err(e) if is_api(&e, |s| s.is_not_found() || s.is_conflict()) => return Ok(()),
            Err(e) => return Err(api_error(&format!("deleting LogicalVolume {name}"), e)),
        }
        let mut backoff = Backoff::new(deadline, self.cache.as_ref());
        let mut woke = Woke::Timer;
        loop {
            // Still in the cache after a change: still there. Otherwise ask the API server.
            if woke == Woke::Timer || self.cached(&name, lv.uid().as_deref()).is_none() {
                match self.get(&name).await? {
                    Some(l) if l.uid() == lv.uid() => {}
                    _ => return Ok(()),
                }
            }
            woke = backoff.wait().await.ok_or_else(|| {
                Status::deadline_exceeded(format!(
                    "LogicalVolume {name}: node {} has not removed the volume yet; retry to keep waiting",
                    lv.spec.node_name
                ))
            })?;
        }
    }

    /// Asks the node for `size` bytes. The old failure (if any) is cleared first, so waiting does
    /// not mistake an earlier attempt's answer for this one's; spec.size goes second, so the
    /// node's answer to it cannot be cleared.
    pub async fn grow(&self, lv: &LogicalVolume, size: u64) -> Result<LogicalVolume, Status> {
        let name = lv.name_any();
        let params = PatchParams::default();
        if lv.status.as_ref().is_some_and(|s| s.code != 0) {
            let reset = json!({"status": {"code": 0, "message": null}});
            self.lvs()
                .patch_status(&name, &params, &Patch::Merge(&reset))
                .await
                .map_err(|e| api_error(&format!("clearing LogicalVolume {name}'s status"), e))?;
        }
        let patch = json!({"spec": {"size": size.to_string()}});
        self.lvs()
            .patch(&name, &params, &Patch::Merge(&patch))
            .await
            .map_err(|e| api_error(&format!("growing LogicalVolume {name}"), e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use api_double::ApiDouble;
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
    use lvms_api::LogicalVolumeSpec;

    fn lv(name: &str) -> LogicalVolume {
        LogicalVolume::new(
            name,
            LogicalVolumeSpec {
                name: name.into(),
                node_name: "node-a".into(),
                size: Quantity("1Gi".into()),
                ..Default::default()
            },
        )
    }

    #[tokio::test]
    async fn a_second_create_of_a_name_yields_to_the_first() {
        let store = Store::new(ApiDouble::new().client(), "ns".into());
        let first = store.create(&lv("pvc-1")).await.unwrap().expect("created");
        assert!(
            store.create(&lv("pvc-1")).await.unwrap().is_none(),
            "409: the caller reads the existing object"
        );
        let uid = first.uid().unwrap();
        assert_eq!(store.find(&uid).await.unwrap().unwrap().uid(), Some(uid));
        assert!(store.find("other").await.unwrap().is_none());
    }

    #[tokio::test]
    async fn waiting_ends_at_the_deadline_or_when_the_object_goes() {
        let api = ApiDouble::new();
        let store = Store::new(api.client(), "ns".into());
        let created = store.create(&lv("pvc-1")).await.unwrap().unwrap();
        let soon = Instant::now() + Duration::from_millis(60);
        let e = store.wait(&created, 1 << 30, soon).await.err().unwrap();
        assert_eq!(e.code(), tonic::Code::DeadlineExceeded);
        // Without a finalizer the double removes it at once.
        store.delete(&created, soon).await.unwrap();
        let later = Instant::now() + Duration::from_secs(5);
        let e = store.wait(&created, 1 << 30, later).await.err().unwrap();
        assert_eq!(e.code(), tonic::Code::Aborted, "{}", e.message());
        assert!(api.list("apis/topolvm.io/v1/logicalvolumes").is_empty());
    }
}
