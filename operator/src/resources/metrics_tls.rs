//! What a pod needs to serve `/metrics` over HTTPS (http-probe): its flags, its named port and
//! the serving certificate's Secret, mounted optional so that the pod starts before (or without)
//! it. On OpenShift the service-ca operator creates the Secret that the metrics Service's
//! annotation names; elsewhere the process serves a self-signed certificate until one appears
//! (cert-manager can write the same Secret). The operator's Deployment and the vg-manager
//! DaemonSet share these.

use k8s_openapi::api::core::v1::{ContainerPort, SecretVolumeSource, Volume, VolumeMount};
use std::collections::BTreeMap;

pub use http_probe::endpoints::CERT_DIR;

/// The named container and Service port of `/metrics`.
pub const PORT_NAME: &str = "https-metrics";
pub const PORT: i32 = 8443;
/// The plain `/healthz` and `/readyz` port.
pub const HEALTH_PORT: i32 = 8081;
const VOLUME: &str = "metrics-cert";
/// The annotation by which OpenShift's service-ca operator writes a serving certificate for a
/// Service into a Secret (`tls.crt`, `tls.key`).
pub const SERVING_CERT_ANNOTATION: &str = "service.beta.openshift.io/serving-cert-secret-name";

pub fn args() -> Vec<String> {
    vec![
        format!("--health-addr=0.0.0.0:{HEALTH_PORT}"),
        format!("--metrics-addr=0.0.0.0:{PORT}"),
        format!("--metrics-cert-dir={CERT_DIR}"),
    ]
}

pub fn port() -> ContainerPort {
    ContainerPort {
        name: Some(PORT_NAME.into()),
        container_port: PORT,
        protocol: Some("TCP".into()),
        ..Default::default()
    }
}

pub fn volume(secret: &str) -> Volume {
    Volume {
        name: VOLUME.into(),
        secret: Some(SecretVolumeSource {
            secret_name: Some(secret.into()),
            optional: Some(true),
            ..Default::default()
        }),
        ..Default::default()
    }
}

pub fn mount() -> VolumeMount {
    VolumeMount {
        name: VOLUME.into(),
        mount_path: CERT_DIR.into(),
        read_only: Some(true),
        ..Default::default()
    }
}

/// The metrics Service's annotations: service-ca's certificate into `secret`.
pub fn service_annotations(secret: &str) -> BTreeMap<String, String> {
    [(SERVING_CERT_ANNOTATION.to_string(), secret.to_string())].into()
}
