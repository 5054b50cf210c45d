//! Deployment `topolvm-controller` (LVMS's name): our CSI controller service on a unix socket
//! beside the upstream sidecars. The provisioner runs with topology and storage capacity
//! tracking, so the scheduler only picks nodes with room; the snapshotter runs only when the
//! snapshot API exists (it cannot start without it).

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, EmptyDirVolumeSource, PodSecurityContext, PodSpec, SeccompProfile,
    SecurityContext, Volume, VolumeMount,
};
use lvms_api::LVMCluster;

use super::vg_manager::{
    CSI_SOCKET, CSI_SOCKET_DIR, HEALTH_PORT, csi_liveness_probe, field_env, health_port, requests,
    sidecar,
};
use super::{Discovery, labels, owned_meta, rbac::CSI_CONTROLLER_SA, selector_and_template};
use crate::config::Config;

pub const NAME: &str = "topolvm-controller";

pub fn deployment(cluster: &LVMCluster, config: &Config, discovery: &Discovery) -> Deployment {
    let socket = || {
        vec![VolumeMount {
            name: "socket-dir".into(),
            mount_path: CSI_SOCKET_DIR.into(),
            ..Default::default()
        }]
    };
    let csi = format!("--csi-address={CSI_SOCKET}");
    let leader = || {
        vec![
            "--leader-election".to_string(),
            "--leader-election-namespace=$(NAMESPACE)".to_string(),
        ]
    };
    let restricted = SecurityContext {
        allow_privilege_escalation: Some(false),
        read_only_root_filesystem: Some(true),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".into()]),
            ..Default::default()
        }),
        ..Default::default()
    };
    let namespace_env = || {
        Some(vec![
            field_env("NAMESPACE", "metadata.namespace"),
            field_env("POD_NAME", "metadata.name"),
        ])
    };

    let controller = Container {
        name: NAME.into(),
        image: Some(config.images.vg_manager.clone()),
        command: Some(vec!["/usr/bin/vg-manager".into()]),
        args: Some(vec![
            "csi-controller".into(),
            format!("--csi-socket={CSI_SOCKET}"),
        ]),
        env: Some(vec![field_env("POD_NAMESPACE", "metadata.namespace")]),
        ports: Some(vec![health_port()]),
        liveness_probe: Some(csi_liveness_probe()),
        volume_mounts: Some(socket()),
        resources: requests("2m", "20Mi"),
        security_context: Some(restricted.clone()),
        termination_message_policy: Some("FallbackToLogsOnError".into()),
        ..Default::default()
    };
    let mut provisioner_args = vec![
        csi.clone(),
        "--feature-gates=Topology=true".into(),
        "--enable-capacity".into(),
        "--capacity-ownerref-level=2".into(),
        "--capacity-poll-interval=30s".into(),
        "--extra-create-metadata".into(),
        "--timeout=60s".into(),
    ];
    provisioner_args.extend(leader());
    let mut provisioner = sidecar(
        "csi-provisioner",
        &config.images.csi_provisioner,
        provisioner_args,
        socket(),
    );
    provisioner.env = namespace_env();
    let mut resizer = sidecar(
        "csi-resizer",
        &config.images.csi_resizer,
        [vec![csi.clone(), "--timeout=60s".into()], leader()].concat(),
        socket(),
    );
    resizer.env = namespace_env();
    let liveness = sidecar(
        "liveness-probe",
        &config.images.csi_livenessprobe,
        vec![csi.clone(), format!("--http-endpoint=:{HEALTH_PORT}")],
        socket(),
    );
    // ListVolumes every minute (its default is 5): a volume the node finds missing, full or
    // read-only becomes a VolumeConditionAbnormal Event on its claim within a pass and a minute.
    let mut health_monitor = sidecar(
        "csi-external-health-monitor-controller",
        &config.images.csi_health_monitor,
        [
            vec![csi.clone(), "--list-volumes-interval=1m".into()],
            leader(),
        ]
        .concat(),
        socket(),
    );
    health_monitor.env = namespace_env();
    let mut containers = vec![controller, provisioner, resizer, health_monitor];
    if discovery.snapshot_crds {
        let mut snapshotter = sidecar(
            "csi-snapshotter",
            &config.images.csi_snapshotter,
            [vec![csi, "--timeout=60s".into()], leader()].concat(),
            socket(),
        );
        snapshotter.env = namespace_env();
        containers.push(snapshotter);
    }
    containers.push(liveness);
    for c in containers.iter_mut().skip(1) {
        c.security_context = Some(restricted.clone());
    }

    let pod = PodSpec {
        service_account_name: Some(CSI_CONTROLLER_SA.into()),
        priority_class_name: Some("system-cluster-critical".into()),
        security_context: Some(PodSecurityContext {
            run_as_non_root: Some(true),
            // The image's default user is root (vg-manager shares it), so a non-root UID must be
            // named; on OpenShift the SCC assigns one from the namespace's range and refuses any
            // other.
            run_as_user: (!discovery.security_context_constraints).then_some(65532),
            seccomp_profile: Some(SeccompProfile {
                type_: "RuntimeDefault".into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        tolerations: Some(super::vg_manager::tolerations(cluster)).filter(|t| !t.is_empty()),
        containers,
        volumes: Some(vec![Volume {
            name: "socket-dir".into(),
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..Default::default()
        }]),
        ..Default::default()
    };
    let (selector, template) = selector_and_template(labels(NAME), pod);
    Deployment {
        metadata: owned_meta(cluster, config, NAME, NAME),
        spec: Some(DeploymentSpec {
            replicas: Some(1),
            selector,
            template,
            ..Default::default()
        }),
        status: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::tests::cluster;

    fn containers(d: &Deployment) -> Vec<Container> {
        d.spec.clone().unwrap().template.spec.unwrap().containers
    }

    #[test]
    fn sidecars_with_topology_and_capacity() {
        let d = deployment(&cluster(), &Config::default(), &Discovery::default());
        let cs = containers(&d);
        let names: Vec<_> = cs.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "topolvm-controller",
                "csi-provisioner",
                "csi-resizer",
                "csi-external-health-monitor-controller",
                "liveness-probe"
            ]
        );
        // Volume health reaches the claims every minute, one elected replica at a time.
        let monitor = cs[3].args.clone().unwrap();
        for flag in ["--list-volumes-interval=1m", "--leader-election"] {
            assert!(
                monitor.contains(&flag.to_string()),
                "health monitor lacks {flag}"
            );
        }
        let prov = cs[1].args.clone().unwrap();
        for flag in [
            "--feature-gates=Topology=true",
            "--enable-capacity",
            "--leader-election",
        ] {
            assert!(prov.contains(&flag.to_string()), "provisioner lacks {flag}");
        }
        let env: Vec<_> = cs[1]
            .env
            .clone()
            .unwrap()
            .into_iter()
            .map(|e| e.name)
            .collect();
        assert_eq!(
            env,
            ["NAMESPACE", "POD_NAME"],
            "capacity tracking needs its namespace and pod name"
        );
        for c in &cs {
            assert!(
                c.args
                    .as_ref()
                    .unwrap()
                    .iter()
                    .any(|a| a.ends_with("/run/topolvm/csi-topolvm.sock")),
                "{} not on the socket",
                c.name
            );
            let sc = c.security_context.as_ref().unwrap();
            assert_eq!(sc.read_only_root_filesystem, Some(true));
            assert_eq!(sc.allow_privilege_escalation, Some(false));
        }
    }

    #[test]
    fn snapshotter_only_with_snapshot_crds() {
        let with = deployment(
            &cluster(),
            &Config::default(),
            &Discovery {
                snapshot_crds: true,
                ..Default::default()
            },
        );
        assert!(
            containers(&with)
                .iter()
                .any(|c| c.name == "csi-snapshotter")
        );
    }

    #[test]
    fn runs_as_non_root_under_its_service_account() {
        let d = deployment(&cluster(), &Config::default(), &Discovery::default());
        let pod = d.spec.unwrap().template.spec.unwrap();
        assert_eq!(
            pod.service_account_name.as_deref(),
            Some("topolvm-controller")
        );
        assert_eq!(
            pod.security_context.as_ref().unwrap().run_as_non_root,
            Some(true)
        );
        crate::resources::tests::liveness_sidecar_is_probed(&pod);
    }
}
