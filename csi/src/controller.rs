//! The CSI Controller service, as TopoLVM does it: every volume or snapshot is a `LogicalVolume`
//! object naming a node, and that node's agent makes the LV and reports in the object's status.
//! The controller only chooses (node, class, size), writes the object, and waits for the answer.
//!
//! Every RPC is idempotent: objects are named after the request, so a retry (or N concurrent
//! identical calls) finds the object the first call made and waits on it. Waits end at the
//! caller's gRPC deadline with DeadlineExceeded, which the sidecars retry.
//!
//! [`decide`] and [`layout`] hold the pure decisions and `store` the API calls; `claim` reads a
//! volume's PVC and records refusals on it; `create` does CreateVolume and CreateSnapshot,
//! `existing` the RPCs on volumes that exist; this file ties them to gRPC.

mod claim;
mod create;
pub mod decide;
mod existing;
pub mod layout;
pub mod listing;
mod store;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use kube::Client;
use tokio::time::Instant;
use tonic::{Request, Response, Status};
use tracing::{info, warn};

use crate::identity::Identity;
use crate::pb::controller_service_capability::rpc::Type as Rpc;
use crate::pb::{self, Topology};
use crate::{DEVICE_CLASS_PARAMETER, TOPOLOGY_NODE_KEY, socket};
use store::Store;

/// Why serving stopped.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("binding the CSI socket {path}: {source}")]
    Bind {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("serving gRPC: {0}")]
    Serve(#[from] tonic::transport::Error),
}

/// The Controller service over the Kubernetes API. `namespace` holds the LVMVolumeGroups (the
/// operator's namespace); LogicalVolumes and Nodes are cluster-scoped.
#[derive(Clone)]
pub struct ControllerService {
    store: Store,
}

impl ControllerService {
    pub fn new(client: Client, namespace: impl Into<String>) -> Self {
        Self {
            store: Store::new(client, namespace.into()),
        }
    }

    /// True once the API has answered a list of device classes.
    pub fn is_ready(&self) -> bool {
        self.store.is_ready()
    }
}

fn class_parameter(params: &std::collections::HashMap<String, String>) -> Option<&str> {
    params
        .get(DEVICE_CLASS_PARAMETER)
        .map(String::as_str)
        .filter(|c| !c.is_empty())
}

fn bytes_i64(b: u64) -> i64 {
    i64::try_from(b).unwrap_or(i64::MAX)
}

fn node_topology(node: &str) -> Topology {
    Topology {
        segments: [(TOPOLOGY_NODE_KEY.to_string(), node.to_string())].into(),
    }
}

/// When this call must answer: the caller's `grpc-timeout`, less a margin.
fn deadline_of<T>(req: &Request<T>) -> Instant {
    let timeout = req
        .metadata()
        .get("grpc-timeout")
        .and_then(|v| v.to_str().ok())
        .and_then(decide::parse_grpc_timeout);
    Instant::now() + decide::budget(timeout)
}

fn capabilities() -> Vec<pb::ControllerServiceCapability> {
    [
        Rpc::CreateDeleteVolume,
        Rpc::CreateDeleteSnapshot,
        Rpc::CloneVolume,
        Rpc::ExpandVolume,
        Rpc::GetCapacity,
        // Several pods on the volume's node may share it.
        Rpc::SingleNodeMultiWriter,
        // What the external-health-monitor controller needs to put an Event on a claim whose
        // LV is missing, whose thin pool is full or whose filesystem went read-only: a
        // ListVolumes every --list-volumes-interval (ControllerGetVolume per PV for a driver
        // without it) with each volume's condition, which the node's agent records in the
        // LogicalVolume.
        Rpc::ListVolumes,
        Rpc::GetVolume,
        Rpc::VolumeCondition,
        Rpc::ListSnapshots,
        // Not LIST_VOLUMES_PUBLISHED_NODES: the spec ties it to PUBLISH_UNPUBLISH_VOLUME ("The
        // SP MUST also support PUBLISH_UNPUBLISH_VOLUME") and defines published_node_ids as the
        // nodes a volume is *controller* published on. A local LV has no ControllerPublish
        // (the CSIDriver says attachRequired: false), so the list would always be empty or
        // made up; its only consumer, the external-attacher's VolumeAttachment reconciler,
        // does not run for this driver, and the health monitor never reads the field.
    ]
    .into_iter()
    .map(|t| pb::ControllerServiceCapability {
        r#type: Some(pb::controller_service_capability::Type::Rpc(
            pb::controller_service_capability::Rpc { r#type: t as i32 },
        )),
    })
    .collect()
}

#[tonic::async_trait]
impl pb::controller_server::Controller for ControllerService {
    async fn create_volume(
        &self,
        request: Request<pb::CreateVolumeRequest>,
    ) -> Result<Response<pb::CreateVolumeResponse>, Status> {
        let deadline = deadline_of(&request);
        let volume = self.provision(request.into_inner(), deadline).await?;
        Ok(Response::new(pb::CreateVolumeResponse {
            volume: Some(volume),
        }))
    }

    async fn delete_volume(
        &self,
        request: Request<pb::DeleteVolumeRequest>,
    ) -> Result<Response<pb::DeleteVolumeResponse>, Status> {
        let deadline = deadline_of(&request);
        self.delete(&request.into_inner().volume_id, "volume_id", deadline)
            .await?;
        Ok(Response::new(pb::DeleteVolumeResponse {}))
    }

    async fn validate_volume_capabilities(
        &self,
        request: Request<pb::ValidateVolumeCapabilitiesRequest>,
    ) -> Result<Response<pb::ValidateVolumeCapabilitiesResponse>, Status> {
        Ok(Response::new(self.validate(request.into_inner()).await?))
    }

    async fn get_capacity(
        &self,
        request: Request<pb::GetCapacityRequest>,
    ) -> Result<Response<pb::GetCapacityResponse>, Status> {
        let (free, largest) = self.capacity(request.into_inner()).await?;
        Ok(Response::new(pb::GetCapacityResponse {
            available_capacity: bytes_i64(free),
            // The scheduler compares a claim's size with this (CSIStorageCapacity).
            maximum_volume_size: Some(pb::Int64Value {
                value: bytes_i64(largest),
            }),
            minimum_volume_size: None,
        }))
    }

    async fn controller_get_capabilities(
        &self,
        _: Request<pb::ControllerGetCapabilitiesRequest>,
    ) -> Result<Response<pb::ControllerGetCapabilitiesResponse>, Status> {
        Ok(Response::new(pb::ControllerGetCapabilitiesResponse {
            capabilities: capabilities(),
        }))
    }

    async fn create_snapshot(
        &self,
        request: Request<pb::CreateSnapshotRequest>,
    ) -> Result<Response<pb::CreateSnapshotResponse>, Status> {
        let deadline = deadline_of(&request);
        let snapshot = self.snapshot(request.into_inner(), deadline).await?;
        Ok(Response::new(pb::CreateSnapshotResponse {
            snapshot: Some(snapshot),
        }))
    }

    async fn delete_snapshot(
        &self,
        request: Request<pb::DeleteSnapshotRequest>,
    ) -> Result<Response<pb::DeleteSnapshotResponse>, Status> {
        let deadline = deadline_of(&request);
        self.delete(&request.into_inner().snapshot_id, "snapshot_id", deadline)
            .await?;
        Ok(Response::new(pb::DeleteSnapshotResponse {}))
    }

    async fn list_volumes(
        &self,
        request: Request<pb::ListVolumesRequest>,
    ) -> Result<Response<pb::ListVolumesResponse>, Status> {
        Ok(Response::new(
            self.volumes_page(request.into_inner()).await?,
        ))
    }

    async fn controller_get_volume(
        &self,
        request: Request<pb::ControllerGetVolumeRequest>,
    ) -> Result<Response<pb::ControllerGetVolumeResponse>, Status> {
        Ok(Response::new(self.get_volume(request.into_inner()).await?))
    }

    async fn list_snapshots(
        &self,
        request: Request<pb::ListSnapshotsRequest>,
    ) -> Result<Response<pb::ListSnapshotsResponse>, Status> {
        Ok(Response::new(
            self.snapshots_page(request.into_inner()).await?,
        ))
    }

    async fn controller_expand_volume(
        &self,
        request: Request<pb::ControllerExpandVolumeRequest>,
    ) -> Result<Response<pb::ControllerExpandVolumeResponse>, Status> {
        let deadline = deadline_of(&request);
        Ok(Response::new(
            self.expand(request.into_inner(), deadline).await?,
        ))
    }
}

/// Serves Identity and Controller on the unix socket at `socket_path` until `shutdown`
/// completes. Probe answers ready once the API has answered a list of device classes: until
/// then the controller could not place a volume.
pub async fn serve(
    client: Client,
    namespace: impl Into<String>,
    socket_path: impl AsRef<Path>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), Error> {
    let path = socket_path.as_ref();
    let incoming = socket::bind(path).map_err(|source| Error::Bind {
        path: path.to_path_buf(),
        source,
    })?;
    let mut service = ControllerService::new(client, namespace);
    // Waits for the node are answered from this watch as soon as the status lands.
    let watch = service.store.watch();
    let store = service.store.clone();
    let first_list = tokio::spawn(async move {
        while let Err(e) = store.list_classes().await {
            warn!("not ready: {}", e.message());
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    });
    let probe = service.clone();
    let identity = Identity::new(Arc::new(move || probe.is_ready()));
    info!(socket = %path.display(), "serving the CSI controller");
    let served = tonic::transport::Server::builder()
        .add_service(pb::identity_server::IdentityServer::new(identity))
        .add_service(pb::controller_server::ControllerServer::new(service))
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await;
    first_list.abort();
    watch.abort();
    Ok(served?)
}
