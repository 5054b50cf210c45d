//! The CSI Node service of `topolvm.io`, as TopoLVM serves it: NodePublishVolume mounts the
//! logical volume straight onto kubelet's target (no staging step: an LV is local and cheap to
//! mount, and TopoLVM's volumes must keep working after a switch), NodeUnpublishVolume undoes
//! it, NodeExpandVolume grows the filesystem after the controller grew the LV, and
//! NodeGetVolumeStats reports usage and the health of the volume, its thin pool and its
//! filesystem (read-only after an error).
//!
//! A volume ID is the name of its LV, in whichever volume group holds it. LVs are found in the
//! node's shared report cache ([`Reports`]), read anew only when the cached copy lacks the
//! volume. Every RPC is idempotent (kubelet retries anything that timed out), and the commands
//! run through the agent's [`Runner`] so mounts land in the namespace kubelet sees.

mod host;
pub mod io_limits;
mod ops;
mod record;
#[cfg(test)]
mod tests;

use std::collections::HashSet;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use csi::identity::Identity;
use csi::pb::identity_server::IdentityServer;
use csi::pb::node_server::{Node, NodeServer};
use csi::pb::node_service_capability::{Rpc, rpc};
use csi::pb::volume_capability::AccessType;
use csi::pb::{self, NodeServiceCapability};
use csi::volume::Usage;
use lvm::{LogicalVolume, Mode, Report, Runner};
use lvms_api::names::TOPOLOGY_NODE_KEY;
use tonic::{Request, Response, Status};

use crate::logical_volume::OWNER_TAG_PREFIX;
use crate::reports::Reports;
use host::Host;

pub use ops::{condition, read_only_problem};
pub use record::Kube;

pub struct NodeService {
    node: String,
    reports: Arc<Reports>,
    host: Host,
    /// Volume IDs with a publish, unpublish or expand under way.
    busy: Arc<Mutex<HashSet<String>>>,
    /// Where mkfs and mount failures are recorded (the LogicalVolume, the claim); None in tests
    /// and tools that run the service without a cluster.
    kube: Option<Kube>,
    /// Where each publish's I/O limits are remembered (io_limits): on the host, beside the
    /// socket, so an agent restarted between publish and unpublish still takes them away.
    io_state: std::path::PathBuf,
}

/// The default of [`NodeService::with_io_state`]: the plugin directory the socket is in.
pub const IO_STATE_DIR: &str = "/run/topolvm/io-limits";

/// Marks a volume busy until dropped. It travels into the blocking task, so a call kubelet gave
/// up waiting for still holds the volume until its commands finish: a retry cannot overlap it.
struct Busy {
    set: Arc<Mutex<HashSet<String>>>,
    id: String,
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.set
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.id);
    }
}

impl NodeService {
    /// `runner` runs mount, mkfs, blkid, ... (and lvchange to activate a volume); `mode` says in
    /// which namespace, so paths are created and the mount table read in the same one.
    pub fn new(
        node: impl Into<String>,
        reports: Arc<Reports>,
        runner: Arc<dyn Runner>,
        mode: Mode,
    ) -> Self {
        Self {
            node: node.into(),
            reports,
            host: Host { runner, mode },
            busy: Arc::default(),
            kube: None,
            io_state: IO_STATE_DIR.into(),
        }
    }

    /// Keeps the record of I/O limits in `dir` instead of [`IO_STATE_DIR`].
    pub fn with_io_state(mut self, dir: impl Into<std::path::PathBuf>) -> Self {
        self.io_state = dir.into();
        self
    }

    /// Records mkfs and mount failures on the cluster too (see [`Kube`]).
    pub fn with_kube(mut self, kube: Kube) -> Self {
        self.kube = Some(kube);
        self
    }

    /// The capabilities NodeGetCapabilities answers. No STAGE_UNSTAGE_VOLUME: publish mounts the
    /// LV directly, as TopoLVM does, so a volume moving between the two drivers keeps its mounts.
    pub fn capabilities() -> Vec<NodeServiceCapability> {
        [
            rpc::Type::GetVolumeStats,
            rpc::Type::ExpandVolume,
            rpc::Type::VolumeCondition,
            rpc::Type::SingleNodeMultiWriter,
        ]
        .into_iter()
        .map(|t| NodeServiceCapability {
            r#type: Some(pb::node_service_capability::Type::Rpc(Rpc {
                r#type: t as i32,
            })),
        })
        .collect()
    }

    /// CSI says ABORTED for an operation already pending on the volume; kubelet retries.
    fn begin(&self, id: &str) -> Result<Busy, Status> {
        let mut set = self.busy.lock().unwrap_or_else(PoisonError::into_inner);
        if !set.insert(id.to_string()) {
            return Err(Status::aborted(format!(
                "an operation on volume {id} is already in progress"
            )));
        }
        Ok(Busy {
            set: self.busy.clone(),
            id: id.to_string(),
        })
    }

    /// The LV named `id` and the report it came from. The cached report first (kubelet asks
    /// for stats of every volume every minute); a fresh one when it lacks the volume (created
    /// since) or when `fresh` asks for the size LVM has now (after the controller grew it).
    async fn find(
        &self,
        id: &str,
        fresh: bool,
    ) -> Result<Option<(Arc<Report>, LogicalVolume)>, Status> {
        let lvm_status = |e: lvm::Error| Status::internal(format!("reading LVM: {e}"));
        if !fresh {
            let r = self.reports.current().await.map_err(lvm_status)?;
            if let Some(lv) = pick(&r, id) {
                return Ok(Some((r, lv)));
            }
        }
        let r = self.reports.fresh().await.map_err(lvm_status)?;
        Ok(pick(&r, id).map(|lv| (r, lv)))
    }

    fn not_found(&self, id: &str) -> Status {
        Status::not_found(format!(
            "volume_id {id}: no logical volume of that name on node {}",
            self.node
        ))
    }
}

/// The user volume named `id` in any volume group; ours carry the owner tag, and an untagged
/// one (made by TopoLVM before the switch) is taken when no tagged one exists.
fn pick(report: &Report, id: &str) -> Option<LogicalVolume> {
    let named: Vec<&LogicalVolume> = report
        .lvs
        .iter()
        .filter(|l| l.name == id && !l.is_internal() && !l.is_thin_pool())
        .collect();
    named
        .iter()
        .find(|l| l.tags.iter().any(|t| t.starts_with(OWNER_TAG_PREFIX)))
        .or(named.first())
        .map(|l| (*l).clone())
}

fn required<'a>(value: &'a str, field: &str) -> Result<&'a str, Status> {
    if value.is_empty() {
        Err(Status::invalid_argument(format!("{field} is required")))
    } else {
        Ok(value)
    }
}

/// Kubelet's paths are absolute; anything else is refused before it can reach a command line.
fn absolute(path: &str) -> bool {
    path.starts_with('/') && !path.contains('\0')
}

/// A path to publish onto: one that is not absolute is a bad argument, whatever the volume.
fn required_path(value: &str, field: &str) -> Result<String, Status> {
    let v = required(value, field)?;
    if !absolute(v) {
        return Err(Status::invalid_argument(format!(
            "{field} {v:?} must be an absolute path"
        )));
    }
    Ok(v.to_string())
}

/// The volume_path of a volume already found: where kubelet published it. CSI answers NOT_FOUND
/// for a volume that is not at volume_path, and no volume is ever published at a path that is
/// not absolute; the check comes after the lookup, so an unknown volume is NOT_FOUND whatever
/// the path (what csi-sanity sends: "some/path").
fn published_path(value: &str, id: &str) -> Result<String, Status> {
    if !absolute(value) {
        return Err(Status::not_found(format!(
            "volume {id} is not published at volume_path {value:?}: not an absolute path"
        )));
    }
    Ok(value.to_string())
}

/// The key of a volume whose context asks for encryption, from the request's secrets.
fn encryption_key(r: &pb::NodePublishVolumeRequest) -> Result<Option<lvm::crypt::Key>, Status> {
    if csi::encryption::requested(&r.volume_context, "volume_context")? {
        csi::encryption::key(&r.secrets, &r.volume_id).map(Some)
    } else {
        Ok(None)
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, Status> + Send + 'static,
) -> Result<T, Status> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Status::internal(format!("the node task failed: {e}")))?
}

#[tonic::async_trait]
impl Node for NodeService {
    async fn node_publish_volume(
        &self,
        request: Request<pb::NodePublishVolumeRequest>,
    ) -> Result<Response<pb::NodePublishVolumeResponse>, Status> {
        let r = request.into_inner();
        let id = required(&r.volume_id, "volume_id")?;
        let target = required_path(&r.target_path, "target_path")?;
        let cap = r
            .volume_capability
            .as_ref()
            .ok_or_else(|| Status::invalid_argument("volume_capability is required"))?;
        let usage = csi::volume::check(cap, "volume_capability")?;
        let flags = match &cap.access_type {
            Some(AccessType::Mount(m)) => m.mount_flags.clone(),
            _ => vec![],
        };
        // The controller checked these at CreateVolume; a PV's mount options and attributes can
        // be edited since, and this is what reaches mount and mkfs.
        let mkfs_options = match &usage {
            Usage::Filesystem(name) => {
                let fs = lvm::fs::Filesystem::parse(name).ok_or_else(|| {
                    Status::invalid_argument(format!("volume_capability.mount.fs_type {name:?}"))
                })?;
                csi::fs_options::check_mount_flags(&flags, fs, "volume_capability")?;
                csi::fs_options::mkfs_words(&r.volume_context, fs, "volume_context")?
            }
            Usage::Block => vec![],
        };
        let encryption = match encryption_key(&r) {
            Ok(k) => k,
            Err(status) => {
                // A missing key is the claim's business as much as a wrong one: tell it too.
                if let Some(k) = &self.kube {
                    k.failed(id, &r.volume_context, record::Step::Mount, status.message())
                        .await;
                }
                return Err(status);
            }
        };
        let busy = self.begin(id)?;
        let (_, lv) = self
            .find(id, false)
            .await?
            .ok_or_else(|| self.not_found(id))?;
        let host = self.host.clone();
        // The device the pod's I/O goes to: the decrypted mapping of an encrypted volume.
        let device_path = match &encryption {
            Some(_) => lvm::crypt::mapper_path(&lvm::crypt::mapping_name(id)),
            None => format!("/dev/{}/{}", lv.vg_name, lv.name),
        };
        let (size, limited) = (lv.size, (target.clone(), r.volume_context.clone()));
        let p = ops::Publish {
            lv,
            target,
            usage,
            flags,
            mkfs_options,
            readonly: r.readonly,
            encryption,
        };
        let (state, volume) = (self.io_state.clone(), id.to_string());
        let outcome = blocking(move || {
            let _busy = busy;
            let published = ops::publish(&host, &p);
            if published.is_ok() {
                // After the mount, when the device (and an encrypted volume's mapping) exists;
                // a refusal fails the publish, and kubelet's retry finds the mount in place.
                let (target, context) = &limited;
                let dev = host.stat(&device_path)?.ok_or_else(|| {
                    Status::internal(format!("{device_path} vanished after the publish"))
                })?;
                io_limits::apply(
                    std::path::Path::new(io_limits::CGROUP_ROOT),
                    &state,
                    &volume,
                    target,
                    context,
                    dev.rdev,
                    size,
                )?;
            }
            Ok(published)
        })
        .await?;
        match outcome {
            Ok(activated) => {
                if activated {
                    // The report says the LV was inactive: read LVM again next time.
                    self.reports.invalidate().await;
                }
                if let Some(k) = &self.kube {
                    k.succeeded(id).await;
                }
                Ok(Response::new(pb::NodePublishVolumeResponse {}))
            }
            Err(failed) => {
                if let (Some(k), Some(step)) = (&self.kube, failed.step) {
                    k.failed(id, &r.volume_context, step, failed.status.message())
                        .await;
                }
                Err(failed.status)
            }
        }
    }

    async fn node_unpublish_volume(
        &self,
        request: Request<pb::NodeUnpublishVolumeRequest>,
    ) -> Result<Response<pb::NodeUnpublishVolumeResponse>, Status> {
        let r = request.into_inner();
        let id = required(&r.volume_id, "volume_id")?;
        let target = required_path(&r.target_path, "target_path")?;
        let busy = self.begin(id)?;
        let host = self.host.clone();
        let volume = id.to_string();
        let state = self.io_state.clone();
        blocking(move || {
            let _busy = busy;
            ops::unpublish(&host, &target)?;
            io_limits::clear(&state, &volume, &target)?;
            // Also on a retry that finds the target gone: a crash between unmount and close
            // must not leave the volume decrypted.
            ops::lock(&host, &volume)
        })
        .await?;
        Ok(Response::new(pb::NodeUnpublishVolumeResponse {}))
    }

    async fn node_get_volume_stats(
        &self,
        request: Request<pb::NodeGetVolumeStatsRequest>,
    ) -> Result<Response<pb::NodeGetVolumeStatsResponse>, Status> {
        let r = request.into_inner();
        let id = required(&r.volume_id, "volume_id")?;
        required(&r.volume_path, "volume_path")?;
        // The volume first, then where it is: NOT_FOUND either way.
        let (report, lv) = self
            .find(id, false)
            .await?
            .ok_or_else(|| self.not_found(id))?;
        let path = published_path(&r.volume_path, id)?;
        let host = self.host.clone();
        let out = blocking(move || ops::stats(&host, &path, &report, &lv)).await?;
        Ok(Response::new(out))
    }

    async fn node_expand_volume(
        &self,
        request: Request<pb::NodeExpandVolumeRequest>,
    ) -> Result<Response<pb::NodeExpandVolumeResponse>, Status> {
        let r = request.into_inner();
        let id = required(&r.volume_id, "volume_id")?;
        required(&r.volume_path, "volume_path")?;
        let usage = r
            .volume_capability
            .as_ref()
            .map(|c| csi::volume::check(c, "volume_capability"))
            .transpose()?;
        let required_bytes = r
            .capacity_range
            .map_or(0, |c| c.required_bytes.max(0) as u64);
        let busy = self.begin(id)?;
        // Fresh: the controller has just grown the LV, and the size we answer must be LVM's.
        let (_, lv) = self
            .find(id, true)
            .await?
            .ok_or_else(|| self.not_found(id))?;
        let path = published_path(&r.volume_path, id)?;
        if required_bytes > lv.size {
            return Err(Status::out_of_range(format!(
                "capacity_range.required_bytes {required_bytes}: logical volume {} is {} bytes; \
                 ControllerExpandVolume must grow it first",
                lv.full_name(),
                lv.size
            )));
        }
        let size = lv.size;
        let host = self.host.clone();
        let (state, volume) = (self.io_state.clone(), id.to_string());
        blocking(move || {
            let _busy = busy;
            ops::expand(&host, &lv, &path, usage.as_ref() == Some(&Usage::Block))?;
            // A per-GiB limit grows with the volume.
            io_limits::resize(&state, &volume, size)
        })
        .await?;
        Ok(Response::new(pb::NodeExpandVolumeResponse {
            capacity_bytes: size as i64,
        }))
    }

    async fn node_get_capabilities(
        &self,
        _: Request<pb::NodeGetCapabilitiesRequest>,
    ) -> Result<Response<pb::NodeGetCapabilitiesResponse>, Status> {
        Ok(Response::new(pb::NodeGetCapabilitiesResponse {
            capabilities: Self::capabilities(),
        }))
    }

    async fn node_get_info(
        &self,
        _: Request<pb::NodeGetInfoRequest>,
    ) -> Result<Response<pb::NodeGetInfoResponse>, Status> {
        Ok(Response::new(pb::NodeGetInfoResponse {
            node_id: self.node.clone(),
            // No limit of our own: capacity (the node annotation) is what bounds volumes.
            max_volumes_per_node: 0,
            accessible_topology: Some(pb::Topology {
                segments: [(TOPOLOGY_NODE_KEY.to_string(), self.node.clone())].into(),
            }),
        }))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot listen on {}: {source}", path.display())]
    Bind {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("serving the CSI node service: {0}")]
    Serve(#[from] tonic::transport::Error),
}

/// Serves Identity and Node on the unix socket `socket` (replacing a stale one) until
/// `shutdown` completes.
pub async fn serve(
    node: NodeService,
    socket: &Path,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    let incoming = csi::socket::bind(socket).map_err(|source| ServeError::Bind {
        path: socket.to_path_buf(),
        source,
    })?;
    tracing::info!(socket = %socket.display(), node = %node.node, "serving the CSI node service");
    tonic::transport::Server::builder()
        .add_service(IdentityServer::new(Identity::ready()))
        .add_service(NodeServer::new(node))
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await?;
    Ok(())
}

/// The protobuf enum of a capability, for tests and logs.
pub fn capability_type(c: &NodeServiceCapability) -> Option<rpc::Type> {
    match c.r#type {
        Some(pb::node_service_capability::Type::Rpc(Rpc { r#type })) => {
            rpc::Type::try_from(r#type).ok()
        }
        None => None,
    }
}
