//! Operator configuration: namespace, images and node paths. Images come from `RELATED_IMAGE_*`
//! variables, the OLM convention that lets disconnected installs mirror every image.

use std::collections::BTreeMap;
use std::time::Duration;

/// Images of every workload the operator creates.
#[derive(Clone, Debug, PartialEq)]
pub struct Images {
    /// Our node agent; also serves the CSI controller service (`vg-manager csi-controller`).
    pub vg_manager: String,
    pub csi_provisioner: String,
    pub csi_snapshotter: String,
    pub csi_resizer: String,
    pub csi_registrar: String,
    pub csi_livenessprobe: String,
    /// Turns the controller's ListVolumes conditions into Events on the claims.
    pub csi_health_monitor: String,
}

/// (variable, default) per image, in the order of [`Images`].
pub const IMAGE_VARS: [(&str, &str); 7] = [
    (
        "RELATED_IMAGE_VG_MANAGER",
        "ghcr.io/lvms-rs/vg-manager:v0.1.0",
    ),
    (
        "RELATED_IMAGE_CSI_PROVISIONER",
        "registry.k8s.io/sig-storage/csi-provisioner:v5.2.0",
    ),
    (
        "RELATED_IMAGE_CSI_SNAPSHOTTER",
        "registry.k8s.io/sig-storage/csi-snapshotter:v8.2.1",
    ),
    (
        "RELATED_IMAGE_CSI_RESIZER",
        "registry.k8s.io/sig-storage/csi-resizer:v1.13.2",
    ),
    (
        "RELATED_IMAGE_CSI_REGISTRAR",
        "registry.k8s.io/sig-storage/csi-node-driver-registrar:v2.13.0",
    ),
    (
        "RELATED_IMAGE_CSI_LIVENESSPROBE",
        "registry.k8s.io/sig-storage/livenessprobe:v2.15.0",
    ),
    (
        "RELATED_IMAGE_CSI_HEALTH_MONITOR",
        "registry.k8s.io/sig-storage/csi-external-health-monitor-controller:v0.14.0",
    ),
];

impl Images {
    /// Reads the images from `env`, falling back to the defaults for unset or empty variables.
    pub fn from_env(env: &BTreeMap<String, String>) -> Self {
        let get = |i: usize| {
            let (var, default) = IMAGE_VARS[i];
            env.get(var)
                .filter(|v| !v.trim().is_empty())
                .cloned()
                .unwrap_or_else(|| default.to_string())
        };
        Self {
            vg_manager: get(0),
            csi_provisioner: get(1),
            csi_snapshotter: get(2),
            csi_resizer: get(3),
            csi_registrar: get(4),
            csi_livenessprobe: get(5),
            csi_health_monitor: get(6),
        }
    }
}

impl Default for Images {
    fn default() -> Self {
        Self::from_env(&BTreeMap::new())
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// Namespace of the operator, the LVMCluster and every namespaced object it manages.
    pub namespace: String,
    pub images: Images,
    /// The kubelet's root directory on the nodes (`/var/lib/kubelet`; some distributions differ).
    pub kubelet_dir: String,
    /// How long a deleted Node must stay gone before its volumes are released or deleted
    /// (`REMOVED_NODE_GRACE_SECONDS`; see [`crate::node_loss`]).
    pub removed_node_grace: Duration,
}

impl Config {
    pub fn from_env(namespace: String, env: &BTreeMap<String, String>) -> Self {
        Self {
            namespace,
            images: Images::from_env(env),
            kubelet_dir: env
                .get("KUBELET_DIR")
                .filter(|v| v.starts_with('/'))
                .cloned()
                .unwrap_or_else(|| "/var/lib/kubelet".into()),
            removed_node_grace: env
                .get("REMOVED_NODE_GRACE_SECONDS")
                .and_then(|v| v.trim().parse().ok())
                .map(Duration::from_secs)
                .unwrap_or(crate::node_loss::DEFAULT_GRACE),
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self::from_env(lvms_api::names::DEFAULT_NAMESPACE.into(), &BTreeMap::new())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images_default_and_override() {
        let env: BTreeMap<String, String> = [
            (
                "RELATED_IMAGE_VG_MANAGER".to_string(),
                "mirror.local/vg-manager@sha256:abc".to_string(),
            ),
            ("RELATED_IMAGE_CSI_RESIZER".to_string(), " ".to_string()),
        ]
        .into();
        let images = Images::from_env(&env);
        assert_eq!(images.vg_manager, "mirror.local/vg-manager@sha256:abc");
        assert_eq!(
            images.csi_resizer, IMAGE_VARS[3].1,
            "a blank variable falls back to the default"
        );
        assert_eq!(images.csi_provisioner, IMAGE_VARS[1].1);
    }

    #[test]
    fn removed_node_grace_from_env() {
        let grace = |v: &str| {
            let env: BTreeMap<String, String> =
                [("REMOVED_NODE_GRACE_SECONDS".to_string(), v.to_string())].into();
            Config::from_env("ns".into(), &env).removed_node_grace
        };
        assert_eq!(grace("0"), Duration::ZERO);
        assert_eq!(grace(" 60 "), Duration::from_secs(60));
        assert_eq!(
            grace("five minutes"),
            crate::node_loss::DEFAULT_GRACE,
            "an unparsable value falls back to the default"
        );
    }

    #[test]
    fn kubelet_dir_must_be_absolute() {
        let env: BTreeMap<String, String> =
            [("KUBELET_DIR".to_string(), "relative".to_string())].into();
        assert_eq!(
            Config::from_env("ns".into(), &env).kubelet_dir,
            "/var/lib/kubelet"
        );
        let env: BTreeMap<String, String> = [(
            "KUBELET_DIR".to_string(),
            "/var/lib/k0s/kubelet".to_string(),
        )]
        .into();
        assert_eq!(
            Config::from_env("ns".into(), &env).kubelet_dir,
            "/var/lib/k0s/kubelet"
        );
    }
}
