//! The Identity service: who we are, what we offer, and whether we are ready. The controller and
//! the node plugin each serve it on their own socket (the sidecars ask each one).

use std::sync::Arc;

use tonic::{Request, Response, Status};

use crate::pb::plugin_capability::{Service, VolumeExpansion, service, volume_expansion};
use crate::pb::{self, PluginCapability, plugin_capability};

/// Answers Probe: `true` once the serving half can do its work (for the controller, once it
/// can read the API; the node plugin is ready as soon as it serves).
pub type Readiness = Arc<dyn Fn() -> bool + Send + Sync>;

#[derive(Clone)]
pub struct Identity {
    ready: Readiness,
}

impl Identity {
    pub fn new(ready: Readiness) -> Self {
        Self { ready }
    }

    /// Always ready.
    pub fn ready() -> Self {
        Self::new(Arc::new(|| true))
    }
}

/// What the plugin offers: a controller service, per-node topology, online expansion.
pub fn capabilities() -> Vec<PluginCapability> {
    let service = |t: service::Type| PluginCapability {
        r#type: Some(plugin_capability::Type::Service(Service {
            r#type: t as i32,
        })),
    };
    vec![
        service(service::Type::ControllerService),
        service(service::Type::VolumeAccessibilityConstraints),
        PluginCapability {
            r#type: Some(plugin_capability::Type::VolumeExpansion(VolumeExpansion {
                r#type: volume_expansion::Type::Online as i32,
            })),
        },
    ]
}

#[tonic::async_trait]
impl pb::identity_server::Identity for Identity {
    async fn get_plugin_info(
        &self,
        _: Request<pb::GetPluginInfoRequest>,
    ) -> Result<Response<pb::GetPluginInfoResponse>, Status> {
        Ok(Response::new(pb::GetPluginInfoResponse {
            name: crate::CSI_DRIVER_NAME.into(),
            vendor_version: env!("CARGO_PKG_VERSION").into(),
            manifest: [("implementation".to_string(), "lvms-rs".to_string())].into(),
        }))
    }

    async fn get_plugin_capabilities(
        &self,
        _: Request<pb::GetPluginCapabilitiesRequest>,
    ) -> Result<Response<pb::GetPluginCapabilitiesResponse>, Status> {
        Ok(Response::new(pb::GetPluginCapabilitiesResponse {
            capabilities: capabilities(),
        }))
    }

    async fn probe(
        &self,
        _: Request<pb::ProbeRequest>,
    ) -> Result<Response<pb::ProbeResponse>, Status> {
        Ok(Response::new(pb::ProbeResponse {
            ready: Some(pb::BoolValue {
                value: (self.ready)(),
            }),
        }))
    }
}
