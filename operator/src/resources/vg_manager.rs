//! DaemonSet `vg-manager`: the node agent on every node any device class selects, with the CSI
//! node sidecars. Privileged because it creates volume groups and mounts volumes for pods.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{
    DaemonSet, DaemonSetSpec, DaemonSetUpdateStrategy, RollingUpdateDaemonSet,
};
use k8s_openapi::api::core::v1::{
    Affinity, Container, ContainerPort, EnvVar, EnvVarSource, HTTPGetAction, HostPathVolumeSource,
    NodeAffinity, NodeSelector, ObjectFieldSelector, PodSpec, Probe, ResourceRequirements,
    SecurityContext, Toleration, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use lvms_api::LVMCluster;
use lvms_api::names::{CSI_DRIVER_NAME, HOST_MOUNTINFO, VG_MANAGER_NAME};

use super::{labels, owned_meta, rbac::VG_MANAGER_SA, selector_and_template};
use crate::config::Config;

/// Where the CSI socket lives inside the pod; the host side is the kubelet's plugin dir.
pub const CSI_SOCKET_DIR: &str = "/run/topolvm";
pub const CSI_SOCKET: &str = "/run/topolvm/csi-topolvm.sock";
pub const METRICS_PORT: i32 = super::metrics_tls::PORT;
/// The Secret service-ca writes the agents' serving certificate into (the `vg-manager-metrics`
/// Service's annotation names it).
pub const METRICS_CERT_SECRET: &str = "vg-manager-metrics-cert";
pub const HEALTH_PORT: i32 = 9808;

/// The nodes the agent must run on: the union of every class's selector. One class without a
/// selector means every node; terms are ORed by Kubernetes, so the union is their concatenation.
pub fn node_selector_union(cluster: &LVMCluster) -> Option<NodeSelector> {
    let mut terms = Vec::new();
    for class in &cluster.spec.storage.device_classes {
        match &class.node_selector {
            None => return None,
            Some(sel) => {
                for term in &sel.node_selector_terms {
                    if !terms.contains(term) {
                        terms.push(term.clone());
                    }
                }
            }
        }
    }
    (!terms.is_empty()).then_some(NodeSelector {
        node_selector_terms: terms,
    })
}

/// The user's tolerations. Device classes carry no tolerations of their own in the LVMS API, so
/// the union over classes is the cluster-wide list, deduplicated.
pub fn tolerations(cluster: &LVMCluster) -> Vec<Toleration> {
    let mut out: Vec<Toleration> = Vec::new();
    for t in &cluster.spec.tolerations {
        if !out.contains(t) {
            out.push(t.clone());
        }
    }
    out
}

fn host_path(name: &str, path: &str, kind: &str) -> Volume {
    Volume {
        name: name.into(),
        host_path: Some(HostPathVolumeSource {
            path: path.into(),
            type_: Some(kind.into()),
        }),
        ..Default::default()
    }
}

fn mount(name: &str, path: &str, propagation: Option<&str>) -> VolumeMount {
    VolumeMount {
        name: name.into(),
        mount_path: path.into(),
        mount_propagation: propagation.map(Into::into),
        ..Default::default()
    }
}

pub(crate) fn field_env(name: &str, path: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: path.into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

pub(crate) fn requests(cpu: &str, memory: &str) -> Option<ResourceRequirements> {
    Some(ResourceRequirements {
        requests: Some(BTreeMap::from([
            ("cpu".to_string(), Quantity(cpu.into())),
            ("memory".to_string(), Quantity(memory.into())),
        ])),
        ..Default::default()
    })
}

/// The port the livenessprobe sidecar serves, declared by the container it probes (a probe's
/// named port is looked up in its own container).
pub(crate) fn health_port() -> ContainerPort {
    ContainerPort {
        name: Some("healthz".into()),
        container_port: HEALTH_PORT,
        ..Default::default()
    }
}

/// Liveness of a CSI server: the livenessprobe sidecar answers /healthz by calling the driver's
/// Probe over its socket, so a server that stopped answering gRPC is restarted. (The agent's
/// own /healthz only shows that its HTTP thread runs.)
pub(crate) fn csi_liveness_probe() -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some("/healthz".into()),
            port: IntOrString::String("healthz".into()),
            ..Default::default()
        }),
        // The socket appears once the service has started: 10 s + 3 × 30 s before a restart.
        initial_delay_seconds: Some(10),
        period_seconds: Some(30),
        timeout_seconds: Some(5),
        failure_threshold: Some(3),
        ..Default::default()
    }
}

pub(crate) fn sidecar(
    name: &str,
    image: &str,
    args: Vec<String>,
    mounts: Vec<VolumeMount>,
) -> Container {
    Container {
        name: name.into(),
        image: Some(image.into()),
        args: Some(args),
        volume_mounts: Some(mounts),
        resources: requests("1m", "16Mi"),
        security_context: Some(SecurityContext {
            read_only_root_filesystem: Some(true),
            ..Default::default()
        }),
        ..Default::default()
    }
}

pub fn daemon_set(cluster: &LVMCluster, config: &Config) -> DaemonSet {
    let kubelet = config.kubelet_dir.trim_end_matches('/');
    let plugin_dir = format!("{kubelet}/plugins/{CSI_DRIVER_NAME}/node");
    let agent = Container {
        name: VG_MANAGER_NAME.into(),
        image: Some(config.images.vg_manager.clone()),
        command: Some(vec!["/usr/bin/vg-manager".into()]),
        args: Some(
            [
                vec!["run".to_string(), format!("--csi-socket={CSI_SOCKET}")],
                super::metrics_tls::args(),
            ]
            .concat(),
        ),
        env: Some(vec![
            field_env("NODE_NAME", "spec.nodeName"),
            field_env("POD_NAMESPACE", "metadata.namespace"),
        ]),
        ports: Some(vec![super::metrics_tls::port(), health_port()]),
        liveness_probe: Some(csi_liveness_probe()),
        // The image's lvm2 works on the host's devices with the host's udev database, VG locks
        // (/run/lock/lvm: host and pod commands must exclude each other), lvm2 runtime state and
        // configuration (a host devices file in /etc/lvm must be honoured); what cannot be
        // shared is overridden per command (lvm::container). Mounting volumes into pods needs
        // privilege and Bidirectional propagation of the pods directory.
        security_context: Some(SecurityContext {
            privileged: Some(true),
            run_as_user: Some(0),
            ..Default::default()
        }),
        volume_mounts: Some(vec![
            mount("dev", "/dev", None),
            mount("sys", "/sys", None),
            mount("run-udev", "/run/udev", None),
            mount("run-lvm", "/run/lvm", None),
            mount("run-lock-lvm", "/run/lock/lvm", None),
            mount("etc-lvm", "/etc/lvm", None),
            // lvm2 loads dm-thin-pool and friends with modprobe when the kernel has not yet;
            // the image's modprobe needs the host kernel's modules.
            VolumeMount {
                read_only: Some(true),
                ..mount("lib-modules", "/lib/modules", None)
            },
            // The host's mount table, so a disk refused for being mounted is reported where the
            // host mounts it (the pod's own table says /etc/hosts, /run/topolvm, ...). One
            // read-only file of the host's /proc rather than the host's PID namespace.
            VolumeMount {
                read_only: Some(true),
                ..mount("host-mountinfo", HOST_MOUNTINFO, None)
            },
            mount("plugin-dir", CSI_SOCKET_DIR, None),
            super::metrics_tls::mount(),
            mount(
                "pods-dir",
                &format!("{kubelet}/pods"),
                Some("Bidirectional"),
            ),
            mount(
                "csi-plugins-dir",
                &format!("{kubelet}/plugins/kubernetes.io/csi"),
                Some("Bidirectional"),
            ),
        ]),
        resources: requests("1m", "20Mi"),
        termination_message_policy: Some("FallbackToLogsOnError".into()),
        ..Default::default()
    };
    let registrar = sidecar(
        "csi-registrar",
        &config.images.csi_registrar,
        vec![
            format!("--csi-address={CSI_SOCKET}"),
            format!("--kubelet-registration-path={plugin_dir}/csi-topolvm.sock"),
        ],
        vec![
            mount("plugin-dir", CSI_SOCKET_DIR, None),
            mount("registration-dir", "/registration", None),
        ],
    );
    let liveness = sidecar(
        "liveness-probe",
        &config.images.csi_livenessprobe,
        vec![
            format!("--csi-address={CSI_SOCKET}"),
            format!("--http-endpoint=:{HEALTH_PORT}"),
        ],
        vec![mount("plugin-dir", CSI_SOCKET_DIR, None)],
    );
    let volumes = vec![
        host_path("dev", "/dev", "Directory"),
        host_path("sys", "/sys", "Directory"),
        host_path("run-udev", "/run/udev", "DirectoryOrCreate"),
        host_path("run-lvm", "/run/lvm", "DirectoryOrCreate"),
        host_path("run-lock-lvm", "/run/lock/lvm", "DirectoryOrCreate"),
        host_path("etc-lvm", "/etc/lvm", "DirectoryOrCreate"),
        host_path("lib-modules", "/lib/modules", "Directory"),
        host_path("host-mountinfo", "/proc/1/mountinfo", "File"),
        host_path("plugin-dir", &plugin_dir, "DirectoryOrCreate"),
        host_path(
            "registration-dir",
            &format!("{kubelet}/plugins_registry"),
            "Directory",
        ),
        host_path("pods-dir", &format!("{kubelet}/pods"), "DirectoryOrCreate"),
        super::metrics_tls::volume(METRICS_CERT_SECRET),
        host_path(
            "csi-plugins-dir",
            &format!("{kubelet}/plugins/kubernetes.io/csi"),
            "DirectoryOrCreate",
        ),
    ];
    let affinity = node_selector_union(cluster).map(|sel| Affinity {
        node_affinity: Some(NodeAffinity {
            required_during_scheduling_ignored_during_execution: Some(sel),
            ..Default::default()
        }),
        ..Default::default()
    });
    let pod = PodSpec {
        service_account_name: Some(VG_MANAGER_SA.into()),
        priority_class_name: Some("system-node-critical".into()),
        affinity,
        tolerations: Some(tolerations(cluster)).filter(|t| !t.is_empty()),
        containers: vec![agent, registrar, liveness],
        volumes: Some(volumes),
        // libdevmapper waits for the host's udevd through SysV semaphores ("udev cookies"),
        // which belong to an IPC namespace: in the pod's own, the host's udevd would complete
        // a different semaphore and an activating lvm command would wait forever.
        host_ipc: Some(true),
        termination_grace_period_seconds: Some(30),
        ..Default::default()
    };
    let (selector, template) = selector_and_template(labels(VG_MANAGER_NAME), pod);
    DaemonSet {
        metadata: owned_meta(cluster, config, VG_MANAGER_NAME, VG_MANAGER_NAME),
        spec: Some(DaemonSetSpec {
            selector,
            update_strategy: Some(DaemonSetUpdateStrategy {
                type_: Some("RollingUpdate".into()),
                rolling_update: Some(RollingUpdateDaemonSet {
                    max_unavailable: Some(IntOrString::Int(1)),
                    ..Default::default()
                }),
            }),
            template,
            ..Default::default()
        }),
        status: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::tests::{cluster, selector};

    fn pod(ds: &DaemonSet) -> PodSpec {
        ds.spec.clone().unwrap().template.spec.unwrap()
    }

    #[test]
    fn node_affinity_is_the_union_of_the_classes() {
        let ds = daemon_set(&cluster(), &Config::default());
        let sel = pod(&ds)
            .affinity
            .unwrap()
            .node_affinity
            .unwrap()
            .required_during_scheduling_ignored_during_execution
            .unwrap();
        assert_eq!(
            sel.node_selector_terms,
            [
                selector("node-role.kubernetes.io/worker").node_selector_terms,
                selector("storage").node_selector_terms
            ]
            .concat()
        );
    }

    #[test]
    fn a_class_without_selector_means_every_node() {
        let mut c = cluster();
        c.spec.storage.device_classes[1].node_selector = None;
        assert!(node_selector_union(&c).is_none());
        assert!(pod(&daemon_set(&c, &Config::default())).affinity.is_none());
    }

    #[test]
    fn identical_terms_are_not_repeated() {
        let mut c = cluster();
        c.spec.storage.device_classes[1].node_selector =
            c.spec.storage.device_classes[0].node_selector.clone();
        assert_eq!(
            node_selector_union(&c).unwrap().node_selector_terms.len(),
            1
        );
    }

    #[test]
    fn tolerations_come_from_the_spec_once_each() {
        let mut c = cluster();
        c.spec.tolerations.push(c.spec.tolerations[0].clone());
        let t = pod(&daemon_set(&c, &Config::default()))
            .tolerations
            .unwrap();
        assert_eq!(t.len(), 1);
        assert_eq!(t[0].key.as_deref(), Some("node-role.kubernetes.io/master"));
    }

    #[test]
    fn agent_has_privilege_host_mounts_and_sidecars() {
        let config = Config {
            kubelet_dir: "/var/lib/kubelet/".into(),
            ..Default::default()
        };
        let p = pod(&daemon_set(&cluster(), &config));
        let names: Vec<_> = p.containers.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["vg-manager", "csi-registrar", "liveness-probe"]);
        let agent = &p.containers[0];
        assert_eq!(
            agent.image.as_deref(),
            Some(config.images.vg_manager.as_str())
        );
        assert_eq!(
            agent.security_context.as_ref().unwrap().privileged,
            Some(true)
        );
        assert_eq!(p.host_ipc, Some(true), "udev cookies are host semaphores");
        let mounts = agent.volume_mounts.as_ref().unwrap();
        for path in [
            "/dev",
            "/sys",
            "/run/udev",
            "/run/lvm",
            "/run/lock/lvm",
            "/etc/lvm",
            "/lib/modules",
            "/run/topolvm",
        ] {
            assert!(
                mounts.iter().any(|m| m.mount_path == path),
                "missing {path}"
            );
        }
        let host_mounts = mounts
            .iter()
            .find(|m| m.mount_path == HOST_MOUNTINFO)
            .unwrap();
        assert_eq!(host_mounts.read_only, Some(true));
        let pods = mounts
            .iter()
            .find(|m| m.mount_path == "/var/lib/kubelet/pods")
            .unwrap();
        assert_eq!(pods.mount_propagation.as_deref(), Some("Bidirectional"));
        let env = agent.env.as_ref().unwrap();
        assert_eq!(
            env[0]
                .value_from
                .as_ref()
                .unwrap()
                .field_ref
                .as_ref()
                .unwrap()
                .field_path,
            "spec.nodeName"
        );
        let reg = &p.containers[1];
        assert!(reg.args.as_ref().unwrap().contains(&"--kubelet-registration-path=/var/lib/kubelet/plugins/topolvm.io/node/csi-topolvm.sock".to_string()));
        let vols = p.volumes.clone().unwrap();
        let source = |name: &str| {
            let v = vols.iter().find(|v| v.name == name).unwrap();
            v.host_path.clone().unwrap()
        };
        let host_table = source(&host_mounts.name);
        assert_eq!(
            (host_table.path.as_str(), host_table.type_.as_deref()),
            ("/proc/1/mountinfo", Some("File")),
            "the host's init's table; no hostPID needed"
        );
        assert_eq!(p.host_pid, None);
        let reg_dir = vols.iter().find(|v| v.name == "registration-dir").unwrap();
        assert_eq!(
            reg_dir.host_path.as_ref().unwrap().path,
            "/var/lib/kubelet/plugins_registry"
        );
        assert!(
            agent
                .resources
                .as_ref()
                .unwrap()
                .requests
                .as_ref()
                .unwrap()
                .contains_key("memory")
        );
        assert_eq!(p.service_account_name.as_deref(), Some("vg-manager"));
        let probe = agent
            .liveness_probe
            .as_ref()
            .unwrap()
            .http_get
            .as_ref()
            .unwrap();
        assert_eq!(
            (probe.path.as_deref(), &probe.port),
            (Some("/healthz"), &IntOrString::String("healthz".into()))
        );
        crate::resources::tests::liveness_sidecar_is_probed(&p);
        let port = agent
            .ports
            .as_ref()
            .unwrap()
            .iter()
            .find(|p| p.name.as_deref() == Some("https-metrics"))
            .unwrap();
        assert_eq!(port.container_port, METRICS_PORT);
        let args = agent.args.as_ref().unwrap();
        assert!(
            args.contains(&format!("--metrics-addr=0.0.0.0:{METRICS_PORT}")),
            "the agent serves the declared port"
        );
        assert!(!args.iter().any(|a| a == "--metrics-insecure"));
        // The serving certificate: the Secret is optional (the pod starts before service-ca
        // has written it) and mounted where --metrics-cert-dir points.
        let cert = p
            .volumes
            .as_ref()
            .unwrap()
            .iter()
            .find_map(|v| v.secret.as_ref())
            .unwrap();
        assert_eq!(
            (cert.secret_name.as_deref(), cert.optional),
            (Some(METRICS_CERT_SECRET), Some(true))
        );
        let dir = agent
            .volume_mounts
            .as_ref()
            .unwrap()
            .iter()
            .find(|m| m.name == "metrics-cert")
            .unwrap();
        assert_eq!(dir.read_only, Some(true));
        assert!(args.contains(&format!("--metrics-cert-dir={}", dir.mount_path)));
    }

    #[test]
    fn selector_matches_template_labels() {
        let ds = daemon_set(&cluster(), &Config::default());
        let spec = ds.spec.unwrap();
        let sel = spec.selector.match_labels.unwrap();
        let tpl = spec.template.metadata.unwrap().labels.unwrap();
        assert!(sel.iter().all(|(k, v)| tpl.get(k) == Some(v)));
    }
}
