//! ServiceAccounts, (Cluster)Roles and bindings for the two workloads, least privilege: every
//! verb and resource is named, never `*`. The operator's own rules (for config/ and the bundle)
//! come from the same tables, so what it grants it holds, and the two cannot drift.

use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::rbac::v1::{
    ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding, RoleRef, Subject,
};
use lvms_api::LVMCluster;

use super::{cluster_meta, owned_meta};
use crate::config::Config;

pub const VG_MANAGER_SA: &str = "vg-manager";
pub const CSI_CONTROLLER_SA: &str = "topolvm-controller";

/// One policy rule: API groups, resources, verbs.
#[derive(Clone, Copy, Debug)]
pub struct Rule(
    pub &'static [&'static str],
    pub &'static [&'static str],
    pub &'static [&'static str],
);

const READ: &[&str] = &["get", "list", "watch"];
const MODIFY: &[&str] = &["get", "list", "watch", "update", "patch"];
const ALL: &[&str] = &[
    "get", "list", "watch", "create", "update", "patch", "delete",
];
const EVENTS: Rule = Rule(
    &["", "events.k8s.io"],
    &["events"],
    &["create", "patch", "update"],
);

/// Who may read `/metrics` is the API server's decision (http-probe's authorizer asks it for
/// every new bearer token): the operator and every vg-manager create these reviews.
const TOKEN_REVIEWS: Rule = Rule(&["authentication.k8s.io"], &["tokenreviews"], &["create"]);
const ACCESS_REVIEWS: Rule = Rule(
    &["authorization.k8s.io"],
    &["subjectaccessreviews"],
    &["create"],
);

/// vg-manager, cluster-wide: its Node (capacity annotations), LogicalVolumes of its node.
pub const VG_MANAGER_CLUSTER_RULES: &[Rule] = &[
    Rule(
        &[""],
        &["nodes"],
        &["get", "list", "watch", "patch", "update"],
    ),
    Rule(
        &["topolvm.io"],
        &["logicalvolumes", "logicalvolumes/status"],
        MODIFY,
    ),
    Rule(&["storage.k8s.io"], &["csidrivers"], READ),
    // Raw-device classes: the node offers its disks as PVs and cleans and deletes released ones
    // (patch records a failed cleanup's reason on the PV).
    Rule(
        &[""],
        &["persistentvolumes"],
        &["get", "list", "watch", "create", "patch", "delete"],
    ),
    EVENTS,
    TOKEN_REVIEWS,
    ACCESS_REVIEWS,
];

/// vg-manager, in the operator's namespace: its volume groups and its node status report.
pub const VG_MANAGER_NAMESPACE_RULES: &[Rule] = &[
    Rule(&["lvm.topolvm.io"], &["lvmclusters"], READ),
    Rule(&["lvm.topolvm.io"], &["lvmvolumegroups"], MODIFY),
    Rule(
        &["lvm.topolvm.io"],
        &[
            "lvmvolumegroupnodestatuses",
            "lvmvolumegroupnodestatuses/status",
        ],
        ALL,
    ),
];

/// The CSI controller and its upstream sidecars (provisioner with capacity, snapshotter, resizer).
pub const CSI_CONTROLLER_CLUSTER_RULES: &[Rule] = &[
    Rule(
        &["topolvm.io"],
        &["logicalvolumes", "logicalvolumes/status"],
        ALL,
    ),
    Rule(&[""], &["nodes"], READ),
    Rule(
        &[""],
        &["persistentvolumes"],
        &[
            "get", "list", "watch", "create", "delete", "patch", "update",
        ],
    ),
    Rule(&[""], &["persistentvolumeclaims"], MODIFY),
    Rule(
        &[""],
        &["persistentvolumeclaims/status"],
        &["patch", "update"],
    ),
    Rule(&[""], &["pods"], READ),
    Rule(
        &["storage.k8s.io"],
        &["storageclasses", "csinodes", "volumeattachments"],
        READ,
    ),
    Rule(&["storage.k8s.io"], &["volumeattributesclasses"], READ),
    Rule(
        &["snapshot.storage.k8s.io"],
        &["volumesnapshotclasses", "volumesnapshots"],
        READ,
    ),
    Rule(
        &["snapshot.storage.k8s.io"],
        &["volumesnapshotcontents"],
        ALL,
    ),
    Rule(
        &["snapshot.storage.k8s.io"],
        &["volumesnapshotcontents/status"],
        &["update", "patch"],
    ),
    Rule(
        &[""],
        &["events"],
        &["get", "list", "watch", "create", "update", "patch"],
    ),
    Rule(
        &["events.k8s.io"],
        &["events"],
        &["create", "patch", "update"],
    ),
];

/// The CSI controller in its namespace: leader election and CSIStorageCapacity objects.
pub const CSI_CONTROLLER_NAMESPACE_RULES: &[Rule] = &[
    Rule(&["coordination.k8s.io"], &["leases"], ALL),
    // The device classes: which is the default, which are thin (snapshots).
    Rule(&["lvm.topolvm.io"], &["lvmvolumegroups"], READ),
    Rule(&["storage.k8s.io"], &["csistoragecapacities"], ALL),
    // csi-provisioner finds the owner of its capacity objects through its pod and ReplicaSet.
    Rule(&[""], &["pods"], &["get"]),
    Rule(&["apps"], &["replicasets", "deployments"], &["get"]),
];

/// What the operator itself needs, beyond what it grants (see [`operator_cluster_rules`]).
pub const OPERATOR_OWN_CLUSTER_RULES: &[Rule] = &[
    Rule(&["storage.k8s.io"], &["csidrivers", "storageclasses"], ALL),
    Rule(
        &["snapshot.storage.k8s.io"],
        &["volumesnapshotclasses"],
        ALL,
    ),
    Rule(
        &["apiextensions.k8s.io"],
        &["customresourcedefinitions"],
        &["get"],
    ),
    Rule(
        &["rbac.authorization.k8s.io"],
        &["clusterroles", "clusterrolebindings"],
        ALL,
    ),
    Rule(&[""], &["persistentvolumeclaims", "nodes"], READ),
    // Node loss (node_loss): mark and release the volumes of removed nodes and, with the
    // LVMCluster's opt-in, delete them with their claims and PVs.
    Rule(
        &["topolvm.io"],
        &["logicalvolumes"],
        &["list", "patch", "delete"],
    ),
    Rule(&[""], &["persistentvolumeclaims"], &["delete"]),
    Rule(&[""], &["persistentvolumes"], &["list", "patch", "delete"]),
    // OpenShift: the vg-manager SCC (resources::scc).
    Rule(
        &["security.openshift.io"],
        &["securitycontextconstraints"],
        ALL,
    ),
    EVENTS,
    TOKEN_REVIEWS,
    ACCESS_REVIEWS,
];

pub const OPERATOR_OWN_NAMESPACE_RULES: &[Rule] = &[
    // Its workloads' NetworkPolicies (resources::network_policy).
    Rule(&["networking.k8s.io"], &["networkpolicies"], ALL),
    Rule(&["lvm.topolvm.io"], &["lvmclusters"], MODIFY),
    Rule(
        &["lvm.topolvm.io"],
        &["lvmclusters/status", "lvmclusters/finalizers"],
        &["get", "update", "patch"],
    ),
    Rule(&["lvm.topolvm.io"], &["lvmvolumegroups"], ALL),
    // delete: the report of a removed node (node_loss).
    Rule(
        &["lvm.topolvm.io"],
        &["lvmvolumegroupnodestatuses"],
        &["get", "list", "watch", "delete"],
    ),
    Rule(&["apps"], &["daemonsets", "deployments"], ALL),
    Rule(&[""], &["serviceaccounts"], ALL),
    Rule(
        &["rbac.authorization.k8s.io"],
        &["roles", "rolebindings"],
        ALL,
    ),
    Rule(&["coordination.k8s.io"], &["leases"], ALL),
];

/// The operator's cluster rules: its own plus everything it grants (Kubernetes refuses to let a
/// subject grant permissions it does not hold).
pub fn operator_cluster_rules() -> Vec<PolicyRule> {
    [
        OPERATOR_OWN_CLUSTER_RULES,
        VG_MANAGER_CLUSTER_RULES,
        CSI_CONTROLLER_CLUSTER_RULES,
    ]
    .concat()
    .iter()
    .map(policy)
    .collect()
}

/// The operator's rules in its namespace: its own plus the namespaced grants.
pub fn operator_namespace_rules() -> Vec<PolicyRule> {
    [
        OPERATOR_OWN_NAMESPACE_RULES,
        VG_MANAGER_NAMESPACE_RULES,
        CSI_CONTROLLER_NAMESPACE_RULES,
    ]
    .concat()
    .iter()
    .map(policy)
    .collect()
}

pub fn policy(rule: &Rule) -> PolicyRule {
    let strings = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    PolicyRule {
        api_groups: Some(strings(rule.0)),
        resources: Some(strings(rule.1)),
        verbs: strings(rule.2),
        ..Default::default()
    }
}

#[derive(Clone, Debug, Default)]
pub struct Rbac {
    pub service_accounts: Vec<ServiceAccount>,
    pub cluster_roles: Vec<ClusterRole>,
    pub cluster_role_bindings: Vec<ClusterRoleBinding>,
    pub roles: Vec<Role>,
    pub role_bindings: Vec<RoleBinding>,
}

/// Cluster-scoped names carry the namespace so two installs in two namespaces cannot collide.
pub fn cluster_role_name(config: &Config, sa: &str) -> String {
    format!("lvms-{}-{sa}", config.namespace)
}

pub fn rbac(cluster: &LVMCluster, config: &Config) -> Rbac {
    let mut out = Rbac::default();
    for (sa, cluster_rules, ns_rules) in [
        (
            VG_MANAGER_SA,
            VG_MANAGER_CLUSTER_RULES,
            VG_MANAGER_NAMESPACE_RULES,
        ),
        (
            CSI_CONTROLLER_SA,
            CSI_CONTROLLER_CLUSTER_RULES,
            CSI_CONTROLLER_NAMESPACE_RULES,
        ),
    ] {
        let subject = Subject {
            kind: "ServiceAccount".into(),
            name: sa.into(),
            namespace: Some(config.namespace.clone()),
            ..Default::default()
        };
        let cr_name = cluster_role_name(config, sa);
        out.service_accounts.push(ServiceAccount {
            metadata: owned_meta(cluster, config, sa, sa),
            ..Default::default()
        });
        out.cluster_roles.push(ClusterRole {
            metadata: cluster_meta(cluster, &cr_name, sa),
            rules: Some(cluster_rules.iter().map(policy).collect()),
            ..Default::default()
        });
        out.cluster_role_bindings.push(ClusterRoleBinding {
            metadata: cluster_meta(cluster, &cr_name, sa),
            role_ref: RoleRef {
                api_group: "rbac.authorization.k8s.io".into(),
                kind: "ClusterRole".into(),
                name: cr_name.clone(),
            },
            subjects: Some(vec![subject.clone()]),
        });
        out.roles.push(Role {
            metadata: owned_meta(cluster, config, sa, sa),
            rules: Some(ns_rules.iter().map(policy).collect()),
        });
        out.role_bindings.push(RoleBinding {
            metadata: owned_meta(cluster, config, sa, sa),
            role_ref: RoleRef {
                api_group: "rbac.authorization.k8s.io".into(),
                kind: "Role".into(),
                name: sa.into(),
            },
            subjects: Some(vec![subject]),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::tests::cluster;

    fn all_rules(r: &Rbac) -> Vec<PolicyRule> {
        let c = r
            .cluster_roles
            .iter()
            .flat_map(|x| x.rules.clone().unwrap());
        c.chain(r.roles.iter().flat_map(|x| x.rules.clone().unwrap()))
            .collect()
    }

    #[test]
    fn no_wildcards_anywhere() {
        let r = rbac(&cluster(), &Config::default());
        let mut every = all_rules(&r);
        every.extend(operator_cluster_rules());
        every.extend(operator_namespace_rules());
        for rule in every {
            let words = rule
                .verbs
                .iter()
                .chain(rule.resources.iter().flatten())
                .chain(rule.api_groups.iter().flatten());
            for w in words {
                assert!(!w.contains('*'), "wildcard in {rule:?}");
            }
            assert!(
                !rule.verbs.is_empty() && rule.resources.as_ref().is_some_and(|r| !r.is_empty())
            );
        }
    }

    /// Kubernetes refuses to create a (Cluster)Role granting what the creator lacks.
    fn covers(holder: &[PolicyRule], granted: &PolicyRule) -> bool {
        let groups = granted.api_groups.clone().unwrap();
        let resources = granted.resources.clone().unwrap();
        groups.iter().all(|g| {
            resources.iter().all(|res| {
                granted.verbs.iter().all(|v| {
                    holder.iter().any(|h| {
                        h.api_groups.as_ref().unwrap().contains(g)
                            && h.resources.as_ref().unwrap().contains(res)
                            && h.verbs.contains(v)
                    })
                })
            })
        })
    }

    #[test]
    fn the_operator_holds_everything_it_grants() {
        let r = rbac(&cluster(), &Config::default());
        let cluster_held = operator_cluster_rules();
        let mut ns_held = operator_namespace_rules();
        ns_held.extend(cluster_held.clone());
        for cr in &r.cluster_roles {
            for rule in cr.rules.as_ref().unwrap() {
                assert!(covers(&cluster_held, rule), "operator lacks {rule:?}");
            }
        }
        for role in &r.roles {
            for rule in role.rules.as_ref().unwrap() {
                assert!(covers(&ns_held, rule), "operator lacks {rule:?}");
            }
        }
    }

    #[test]
    fn bindings_point_at_their_roles_and_service_accounts() {
        let config = Config {
            namespace: "lvms".into(),
            ..Default::default()
        };
        let r = rbac(&cluster(), &config);
        assert_eq!(r.service_accounts.len(), 2);
        for (crb, cr) in r.cluster_role_bindings.iter().zip(&r.cluster_roles) {
            assert_eq!(Some(&crb.role_ref.name), cr.metadata.name.as_ref());
            let s = &crb.subjects.as_ref().unwrap()[0];
            assert_eq!(s.namespace.as_deref(), Some("lvms"));
            assert!(
                r.service_accounts
                    .iter()
                    .any(|sa| sa.metadata.name.as_deref() == Some(s.name.as_str()))
            );
        }
        assert_eq!(
            r.cluster_roles[0].metadata.name.as_deref(),
            Some("lvms-lvms-vg-manager")
        );
        for (rb, role) in r.role_bindings.iter().zip(&r.roles) {
            assert_eq!(Some(&rb.role_ref.name), role.metadata.name.as_ref());
            assert_eq!(rb.role_ref.kind, "Role");
        }
    }

    #[test]
    fn vg_manager_cannot_touch_pvcs_or_secrets() {
        let r = rbac(&cluster(), &Config::default());
        let vg: Vec<_> = r.cluster_roles[0]
            .rules
            .clone()
            .unwrap()
            .into_iter()
            .chain(r.roles[0].rules.clone().unwrap())
            .collect();
        for rule in vg {
            let res = rule.resources.unwrap();
            assert!(
                !res.iter()
                    .any(|x| x == "secrets" || x == "persistentvolumeclaims"),
                "{res:?}"
            );
            // PVs only for raw-device classes: its node's own, never rewritten whole.
            if res.iter().any(|x| x == "persistentvolumes") {
                assert_eq!(res, ["persistentvolumes"]);
                assert!(!rule.verbs.iter().any(|v| v == "update" || v == "*"));
            }
        }
    }
}
