//! SecurityContextConstraints `lvms-vgmanager` (LVMS's name), only on OpenShift. There, pods are
//! admitted by SCCs, not by pod security alone: the default restricted-v2 refuses vg-manager
//! (privileged, hostPath volumes, host IPC, running as root), so without this SCC the DaemonSet
//! never gets a pod. It lets the vg-manager service account, and nobody else, run exactly that.
//! SCC has no spec (the fields sit at the top level) and no type in k8s-openapi, so it is built
//! as JSON and applied through a dynamic client.

use kube::api::ApiResource;
use lvms_api::LVMCluster;
use lvms_api::names::VG_MANAGER_NAME;
use serde_json::{Value, json};

use super::rbac::VG_MANAGER_SA;
use super::{Discovery, cluster_meta};
use crate::config::Config;

pub const NAME: &str = "lvms-vgmanager";
pub const GROUP: &str = "security.openshift.io";
pub const VERSION: &str = "v1";
/// The CRD whose presence says the cluster admits pods by SCC (OpenShift, MicroShift).
pub const CRD_NAME: &str = "securitycontextconstraints.security.openshift.io";

/// The API identity, for a dynamic client.
pub fn api_resource() -> ApiResource {
    ApiResource {
        group: GROUP.into(),
        version: VERSION.into(),
        api_version: format!("{GROUP}/{VERSION}"),
        kind: "SecurityContextConstraints".into(),
        plural: "securitycontextconstraints".into(),
    }
}

/// The SCC for the vg-manager pods, or None where the cluster has no SCCs.
pub fn security_context_constraints(
    cluster: &LVMCluster,
    config: &Config,
    discovery: &Discovery,
) -> Option<Value> {
    if !discovery.security_context_constraints {
        return None;
    }
    let any = json!({"type": "RunAsAny"});
    Some(json!({
        "apiVersion": format!("{GROUP}/{VERSION}"),
        "kind": "SecurityContextConstraints",
        "metadata": cluster_meta(cluster, NAME, VG_MANAGER_NAME),
        // What the DaemonSet's pod asks for (vg_manager::daemon_set), nothing more: privileged
        // as root, hostPath volumes, the host's IPC namespace; not its network, PIDs or ports.
        "allowPrivilegedContainer": true,
        "allowPrivilegeEscalation": true,
        "allowHostDirVolumePlugin": true,
        "allowHostIPC": true,
        "allowHostNetwork": false,
        "allowHostPID": false,
        "allowHostPorts": false,
        "readOnlyRootFilesystem": false,
        "runAsUser": any,
        "seLinuxContext": any,
        "fsGroup": any,
        "supplementalGroups": any,
        "volumes": ["configMap", "downwardAPI", "emptyDir", "hostPath", "projected", "secret"],
        "users": [format!("system:serviceaccount:{}:{VG_MANAGER_SA}", config.namespace)],
        "groups": [],
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::tests::cluster;
    use crate::resources::vg_manager::daemon_set;

    fn openshift() -> Discovery {
        Discovery {
            security_context_constraints: true,
            ..Default::default()
        }
    }

    #[test]
    fn only_where_the_cluster_has_sccs() {
        let c = cluster();
        assert!(
            security_context_constraints(&c, &Config::default(), &Discovery::default()).is_none()
        );
        assert!(security_context_constraints(&c, &Config::default(), &openshift()).is_some());
    }

    #[test]
    fn grants_the_vg_manager_account_what_its_pod_asks_for() {
        let config = Config {
            namespace: "lvms".into(),
            ..Default::default()
        };
        let scc = security_context_constraints(&cluster(), &config, &openshift()).unwrap();
        assert_eq!(scc["metadata"]["name"], NAME);
        assert_eq!(
            scc["users"],
            json!(["system:serviceaccount:lvms:vg-manager"])
        );

        let ds = daemon_set(&cluster(), &config);
        let pod = ds.spec.unwrap().template.spec.unwrap();
        assert_eq!(pod.service_account_name.as_deref(), Some(VG_MANAGER_SA));
        let agent = &pod.containers[0].security_context.clone().unwrap();
        assert_eq!(agent.privileged, Some(true));
        assert_eq!(scc["allowPrivilegedContainer"], true);
        assert_eq!(agent.run_as_user, Some(0));
        assert_eq!(scc["runAsUser"]["type"], "RunAsAny");
        assert_eq!(pod.host_ipc, Some(true));
        assert_eq!(scc["allowHostIPC"], true);
        // Every volume type the pod uses is allowed.
        let allowed: Vec<&str> = scc["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        for v in pod.volumes.unwrap() {
            let kind = if v.host_path.is_some() {
                "hostPath"
            } else if v.empty_dir.is_some() {
                "emptyDir"
            } else if v.secret.is_some() {
                "secret"
            } else {
                panic!("volume {} of an unexpected type", v.name)
            };
            assert!(allowed.contains(&kind), "{kind}");
        }
        // ...and what it does not ask for stays closed.
        assert_eq!(pod.host_network, None);
        assert_eq!(pod.host_pid, None);
        assert_eq!(
            (
                scc["allowHostNetwork"].clone(),
                scc["allowHostPID"].clone(),
                scc["allowHostPorts"].clone()
            ),
            (json!(false), json!(false), json!(false))
        );
    }
}
