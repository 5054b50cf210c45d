//! NetworkPolicies, applied with the LVMCluster's other objects (and owned by it): only Prometheus (OpenShift's cluster monitoring or kube-prometheus, the
//! namespaces of [`PROMETHEUS_ACCOUNTS`]) reaches the metrics ports, and the pods reach only the
//! API server. Kubernetes always lets a pod's own node in, so the kubelet's probes need no rule.
//!
//! Each policy selects one of our workloads, rather than a namespace-wide default deny as LVMS
//! ships: the install namespace may hold other software (OpenShift's `openshift-storage` is also
//! ODF's), which a blanket deny would cut off.
//!
//! The operator applies them rather than the OLM bundle carrying them: OLM v1 refuses a bundle
//! with a NetworkPolicy, OLM v0 accepts one only in recent releases, and the certification
//! pipeline rejects it. So they hold for a kustomize and an OLM install alike. The operator's own
//! pod is covered too, from the first reconcile of an LVMCluster on (before it, the operator
//! serves nothing but authorized metrics and answers probes).
//!
//! The API server is matched by port only (6443 for kube-apiserver, OpenShift and k3s; 443 where
//! it listens there): it runs on the host network, which no pod or namespace selector matches,
//! and its addresses differ per cluster. Policies see the endpoint's port after the Service's
//! translation, so `kubernetes.default:443` → `6443` is covered by 6443. No DNS is needed: the
//! clients reach the API server at `KUBERNETES_SERVICE_HOST`, an address.

use std::collections::BTreeMap;

use k8s_openapi::api::networking::v1::{
    NetworkPolicy, NetworkPolicyEgressRule, NetworkPolicyIngressRule, NetworkPolicyPeer,
    NetworkPolicyPort, NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use lvms_api::LVMCluster;
use lvms_api::names::VG_MANAGER_NAME;

use super::csi_controller::NAME as CSI_CONTROLLER_NAME;
use super::{metrics_tls, owned_meta};
use crate::config::Config;
use crate::manifests::NAME as OPERATOR_NAME;
use crate::manifests::monitoring::PROMETHEUS_ACCOUNTS;

pub const API_SERVER_PORTS: &[i32] = &[6443, 443];

fn tcp(port: i32) -> NetworkPolicyPort {
    NetworkPolicyPort {
        port: Some(IntOrString::Int(port)),
        protocol: Some("TCP".into()),
        ..Default::default()
    }
}

fn from_prometheus() -> NetworkPolicyIngressRule {
    let namespaces: Vec<String> = PROMETHEUS_ACCOUNTS
        .iter()
        .map(|(ns, _)| ns.to_string())
        .collect();
    NetworkPolicyIngressRule {
        ports: Some(vec![tcp(metrics_tls::PORT)]),
        from: Some(vec![NetworkPolicyPeer {
            namespace_selector: Some(LabelSelector {
                match_expressions: Some(vec![LabelSelectorRequirement {
                    key: "kubernetes.io/metadata.name".into(),
                    operator: "In".into(),
                    values: Some(namespaces),
                }]),
                ..Default::default()
            }),
            ..Default::default()
        }]),
    }
}

fn policy(
    cluster: &LVMCluster,
    config: &Config,
    component: &str,
    ingress: Vec<NetworkPolicyIngressRule>,
) -> NetworkPolicy {
    let pods: BTreeMap<String, String> =
        [("app.kubernetes.io/name".to_string(), component.to_string())].into();
    NetworkPolicy {
        metadata: owned_meta(cluster, config, &policy_name(component), component),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(LabelSelector {
                match_labels: Some(pods),
                ..Default::default()
            }),
            // Both listed: an empty ingress list then means "nothing may connect".
            policy_types: Some(vec!["Ingress".into(), "Egress".into()]),
            ingress: Some(ingress),
            egress: Some(vec![NetworkPolicyEgressRule {
                ports: Some(API_SERVER_PORTS.iter().map(|p| tcp(*p)).collect()),
                to: None,
            }]),
        }),
    }
}

pub fn policy_name(component: &str) -> String {
    format!("{component}-network-policy")
}

/// The operator's, the node agents' and the CSI controller's policies (the controller serves
/// nothing on the network: its sidecars talk to it over a socket).
pub fn network_policies(cluster: &LVMCluster, config: &Config) -> Vec<NetworkPolicy> {
    vec![
        policy(cluster, config, OPERATOR_NAME, vec![from_prometheus()]),
        policy(cluster, config, VG_MANAGER_NAME, vec![from_prometheus()]),
        policy(cluster, config, CSI_CONTROLLER_NAME, vec![]),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::tests::cluster;
    use crate::resources::{csi_controller, vg_manager};

    fn selects(p: &NetworkPolicy, labels: &BTreeMap<String, String>) -> bool {
        let sel = p.spec.as_ref().unwrap().pod_selector.as_ref().unwrap();
        sel.match_labels
            .as_ref()
            .unwrap()
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v))
    }

    #[test]
    fn each_workload_is_closed_but_for_prometheus_and_the_api_server() {
        let (c, config) = (cluster(), Config::default());
        let policies = network_policies(&c, &config);
        let template_labels = |t: Option<k8s_openapi::api::core::v1::PodTemplateSpec>| {
            t.unwrap().metadata.unwrap().labels.unwrap()
        };
        let pods = [
            (
                OPERATOR_NAME,
                template_labels(Some(crate::manifests::deployment_spec().template)),
                true,
            ),
            (
                VG_MANAGER_NAME,
                template_labels(vg_manager::daemon_set(&c, &config).spec.map(|s| s.template)),
                true,
            ),
            (
                CSI_CONTROLLER_NAME,
                template_labels(
                    csi_controller::deployment(&c, &config, &Default::default())
                        .spec
                        .map(|s| s.template),
                ),
                false,
            ),
        ];
        for (name, labels, serves_metrics) in pods {
            let mine: Vec<&NetworkPolicy> =
                policies.iter().filter(|p| selects(p, &labels)).collect();
            assert_eq!(mine.len(), 1, "{name}: exactly one policy selects its pods");
            let spec = mine[0].spec.as_ref().unwrap();
            assert_eq!(
                spec.policy_types.as_deref(),
                Some(&["Ingress".to_string(), "Egress".to_string()][..])
            );
            let ingress = spec.ingress.as_ref().unwrap();
            assert_eq!(ingress.len(), usize::from(serves_metrics), "{name}");
            for rule in ingress {
                assert_eq!(rule.ports, Some(vec![tcp(metrics_tls::PORT)]));
                let from = rule.from.as_ref().unwrap();
                let expr = &from[0]
                    .namespace_selector
                    .as_ref()
                    .unwrap()
                    .match_expressions;
                let expr = &expr.as_ref().unwrap()[0];
                assert_eq!(
                    (expr.key.as_str(), expr.operator.as_str()),
                    ("kubernetes.io/metadata.name", "In")
                );
                assert_eq!(
                    expr.values.as_deref(),
                    Some(&["openshift-monitoring".to_string(), "monitoring".to_string()][..])
                );
                assert!(from[0].pod_selector.is_none() && from[0].ip_block.is_none());
            }
            let egress = spec.egress.as_ref().unwrap();
            assert_eq!(egress.len(), 1);
            assert_eq!(egress[0].ports, Some(vec![tcp(6443), tcp(443)]));
            // Owned by the LVMCluster: removed with it.
            let owner = &mine[0].metadata.owner_references.as_ref().unwrap()[0];
            assert_eq!(owner.kind, "LVMCluster");
        }
    }
}
