//! The RPCs on volumes that exist: DeleteVolume/DeleteSnapshot, ControllerExpandVolume,
//! ValidateVolumeCapabilities, GetCapacity, and the listings (ListVolumes, ControllerGetVolume,
//! ListSnapshots; their decisions are in [`listing`]).

use kube::ResourceExt;
use tokio::time::Instant;
use tonic::Status;
use tracing::info;

use super::store::Waited;
use super::{ControllerService, bytes_i64, class_parameter};
use super::{decide, layout, listing};
use crate::DEVICE_CLASS_PARAMETER;
use crate::pb;
use crate::volume::{self, Usage};

impl ControllerService {
    /// DeleteVolume and DeleteSnapshot: an unknown ID is already deleted.
    pub(super) async fn delete(
        &self,
        id: &str,
        field: &str,
        deadline: Instant,
    ) -> Result<(), Status> {
        if id.is_empty() {
            return Err(Status::invalid_argument(format!("{field} is required")));
        }
        let Some(lv) = self.store.find(id).await? else {
            return Ok(());
        };
        info!(lv = %lv.name_any(), volume = id, "deleting LogicalVolume");
        self.store.delete(&lv, deadline).await
    }

    pub(super) async fn expand(
        &self,
        req: pb::ControllerExpandVolumeRequest,
        deadline: Instant,
    ) -> Result<pb::ControllerExpandVolumeResponse, Status> {
        let id = req.volume_id.as_str();
        if id.is_empty() {
            return Err(Status::invalid_argument("volume_id is required"));
        }
        let range = req
            .capacity_range
            .as_ref()
            .ok_or_else(|| Status::invalid_argument("capacity_range is required"))?;
        let usage = match &req.volume_capability {
            Some(c) => Some(volume::check(c, "volume_capability")?),
            None => None,
        };
        // Without a capability the volume's use is unknown; it exists already, so the smallest
        // minimum (block) is the right floor for the size.
        let size = volume::size_for(Some(range), usage.as_ref().unwrap_or(&Usage::Block))?;
        // A filesystem grows on the node, where it is mounted; a block device needs nothing.
        // Unknown use: ask the node, which finds out.
        let node_expansion_required = usage != Some(Usage::Block);
        let lv = self
            .store
            .find(id)
            .await?
            .ok_or_else(|| Status::not_found(format!("volume_id: volume {id} not found")))?;
        if decide::is_deleting(&lv) {
            return Err(Status::failed_precondition(format!(
                "volume_id: volume {id} is being deleted"
            )));
        }
        let answer = |capacity: u64| pb::ControllerExpandVolumeResponse {
            capacity_bytes: bytes_i64(capacity),
            node_expansion_required,
        };
        let current = decide::current_size(&lv).unwrap_or(0);
        if current >= size {
            return Ok(answer(current));
        }
        let lv = if size > decide::spec_size(&lv) {
            info!(lv = %lv.name_any(), volume = id, size, "growing LogicalVolume");
            self.store.grow(&lv, size).await?
        } else {
            lv
        };
        match self.store.wait(&lv, size, deadline).await? {
            Waited::Ready(lv) => Ok(answer(decide::current_size(&lv).unwrap_or(size))),
            Waited::Failed { status, .. } => Err(status),
        }
    }

    /// (available bytes, largest volume): for one node both are its free space; for the whole
    /// cluster the sum and the largest single node's, as a volume cannot span nodes. A class
    /// whose StorageClass makes mirrors counts what a mirror can hold (half, less metadata), so
    /// the scheduler does not send a claim to a node that cannot make it.
    pub(super) async fn capacity(&self, req: pb::GetCapacityRequest) -> Result<(u64, u64), Status> {
        let vg = self
            .store
            .resolve_class(class_parameter(&req.parameters))
            .await?;
        // The StorageClass's layout only: the claim's annotations are not known here. A layout
        // the class cannot take fails every CreateVolume; capacity stays the class's own.
        let layout = layout::requested(&req.parameters, None)
            .ok()
            .flatten()
            .and_then(|r| layout::for_class(Some(&r), &vg).ok().flatten());
        let class = vg.name_any();
        // Capabilities we cannot serve have no capacity at all.
        if req
            .volume_capabilities
            .iter()
            .any(|c| volume::check(c, "volume_capabilities").is_err())
        {
            return Ok((0, 0));
        }
        let free = layout::usable(&self.store.capacities(&class).await?, layout.as_ref());
        let topology = req
            .accessible_topology
            .as_ref()
            .filter(|t| !t.segments.is_empty());
        Ok(match topology {
            Some(t) => {
                let node = decide::topology_node(t).and_then(|n| free.get(n).copied());
                (node.unwrap_or(0), node.unwrap_or(0))
            }
            None => (
                free.values().fold(0u64, |a, b| a.saturating_add(*b)),
                free.values().copied().max().unwrap_or(0),
            ),
        })
    }

    pub(super) async fn validate(
        &self,
        req: pb::ValidateVolumeCapabilitiesRequest,
    ) -> Result<pb::ValidateVolumeCapabilitiesResponse, Status> {
        let id = req.volume_id.as_str();
        if id.is_empty() {
            return Err(Status::invalid_argument("volume_id is required"));
        }
        if req.volume_capabilities.is_empty() {
            return Err(Status::invalid_argument("volume_capabilities is required"));
        }
        let lv = self
            .store
            .find(id)
            .await?
            .ok_or_else(|| Status::not_found(format!("volume_id: volume {id} not found")))?;
        let problem = match volume::check_all(&req.volume_capabilities, "volume_capabilities") {
            Err(e) => Some(e.message().to_string()),
            Ok(_) => class_parameter(&req.parameters)
                .filter(|c| *c != lv.spec.device_class)
                .map(|c| {
                    format!(
                        "parameters[{DEVICE_CLASS_PARAMETER}]: volume {id} is in device class {}, not {c}",
                        lv.spec.device_class
                    )
                }),
        };
        Ok(match problem {
            Some(message) => pb::ValidateVolumeCapabilitiesResponse {
                confirmed: None,
                message,
            },
            None => pb::ValidateVolumeCapabilitiesResponse {
                confirmed: Some(pb::validate_volume_capabilities_response::Confirmed {
                    volume_context: req.volume_context,
                    volume_capabilities: req.volume_capabilities,
                    parameters: req.parameters,
                    mutable_parameters: req.mutable_parameters,
                }),
                message: String::new(),
            },
        })
    }

    pub(super) async fn volumes_page(
        &self,
        req: pb::ListVolumesRequest,
    ) -> Result<pb::ListVolumesResponse, Status> {
        let all = self.store.list_all().await?;
        let (entries, next_token) = listing::page(
            listing::volume_entries(&all),
            &req.starting_token,
            req.max_entries,
            "ListVolumes",
        )?;
        Ok(pb::ListVolumesResponse {
            entries,
            next_token,
        })
    }

    /// ControllerGetVolume: the volume as ListVolumes shows it, read as ListVolumes reads it
    /// (from the API server, not the cache: a condition the node has just written must show).
    /// A snapshot's ID names no volume, and an object the node never made is not one yet:
    /// NOT_FOUND, as for an unknown ID.
    pub(super) async fn get_volume(
        &self,
        req: pb::ControllerGetVolumeRequest,
    ) -> Result<pb::ControllerGetVolumeResponse, Status> {
        let id = req.volume_id.as_str();
        if id.is_empty() {
            return Err(Status::invalid_argument("volume_id is required"));
        }
        let all = self.store.list_all().await?;
        let by_id = |id: &str| all.iter().find(|lv| decide::has_volume_id(lv, id));
        let lv = by_id(id)
            .filter(|lv| listing::is_made(lv))
            .ok_or_else(|| Status::not_found(format!("volume_id: volume {id} not found")))?;
        if listing::is_snapshot(lv) {
            return Err(Status::not_found(format!(
                "volume_id: {id} is a snapshot, not a volume"
            )));
        }
        let source = match lv.spec.source.as_str() {
            "" => None,
            s => by_id(s).map(listing::is_snapshot),
        };
        Ok(pb::ControllerGetVolumeResponse {
            volume: Some(listing::volume(lv, source)),
            status: Some(pb::controller_get_volume_response::VolumeStatus {
                published_node_ids: vec![],
                volume_condition: Some(listing::condition(lv)),
            }),
        })
    }

    pub(super) async fn snapshots_page(
        &self,
        req: pb::ListSnapshotsRequest,
    ) -> Result<pb::ListSnapshotsResponse, Status> {
        let all = self.store.list_all().await?;
        let (entries, next_token) = listing::page(
            listing::snapshot_entries(&all, &req.snapshot_id, &req.source_volume_id),
            &req.starting_token,
            req.max_entries,
            "ListSnapshots",
        )?;
        Ok(pb::ListSnapshotsResponse {
            entries,
            next_token,
        })
    }
}
