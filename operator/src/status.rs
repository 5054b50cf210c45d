//! LVMCluster status from every node's report: a pure function, so the rules (and their cost at
//! 500 nodes) are tested without a cluster.

use std::collections::HashMap;

use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use lvms_api::{
    DeviceClassStatus, LVMCluster, LVMClusterStatus, LVMStateType, LVMVolumeGroupNodeStatus,
    NodeStatus, VGStatus, VGStatusType,
};

use lvms_api::nodes;

pub const RESOURCES_AVAILABLE: &str = "ResourcesAvailable";
pub const VOLUME_GROUPS_READY: &str = "VolumeGroupsReady";

/// How applying the desired objects went.
#[derive(Clone, Debug, PartialEq)]
pub enum Resources {
    Synced,
    /// Not (all) applied, with the reason a user can act on.
    Incomplete(String),
}

/// The status the LVMCluster should have. `previous` keeps condition transition times stable.
pub fn aggregate(
    cluster: &LVMCluster,
    nodes: &[Node],
    reports: &[LVMVolumeGroupNodeStatus],
    resources: &Resources,
    now: &Time,
) -> LVMClusterStatus {
    let by_node: HashMap<&str, &LVMVolumeGroupNodeStatus> = reports
        .iter()
        .filter_map(|r| Some((r.metadata.name.as_deref()?, r)))
        .collect();
    let (mut expected, mut ready) = (0usize, 0usize);
    let (mut failed, mut degraded, mut missing_nodes) = (Vec::new(), Vec::new(), Vec::new());
    let mut class_statuses = Vec::new();
    for class in &cluster.spec.storage.device_classes {
        let selected = nodes::selected(
            class.node_selector.as_ref(),
            &cluster.spec.tolerations,
            nodes,
        );
        if selected.is_empty() {
            missing_nodes.push(class.name.as_str());
        }
        let mut node_status = Vec::with_capacity(selected.len());
        for node in selected {
            expected += 1;
            let report = by_node
                .get(node)
                .and_then(|r| r.spec.lvm_vg_status.iter().find(|s| s.name == class.name));
            let vg = report.cloned().unwrap_or_else(|| VGStatus {
                name: class.name.clone(),
                ..Default::default()
            });
            match vg.status {
                VGStatusType::Ready => ready += 1,
                VGStatusType::Failed => {
                    failed.push(format!("{node}/{}: {}", class.name, vg.reason))
                }
                VGStatusType::Degraded => {
                    degraded.push(format!("{node}/{}: {}", class.name, vg.reason))
                }
                VGStatusType::Progressing => {}
            }
            node_status.push(NodeStatus {
                node: node.to_string(),
                status: vg,
            });
        }
        class_statuses.push(DeviceClassStatus {
            name: class.name.clone(),
            node_status,
        });
    }

    let (vg_state, vg_reason, vg_message) = if !failed.is_empty() {
        (
            LVMStateType::Failed,
            "VGsFailed",
            format!("volume groups failed: {}", summary(&failed)),
        )
    } else if !degraded.is_empty() {
        (
            LVMStateType::Degraded,
            "VGsDegraded",
            format!("volume groups degraded: {}", summary(&degraded)),
        )
    } else if !missing_nodes.is_empty() {
        (
            LVMStateType::Progressing,
            "VGReadinessInProgress",
            format!(
                "no node is selected by device class {}",
                missing_nodes.join(", ")
            ),
        )
    } else if ready == expected {
        (
            LVMStateType::Ready,
            "VGsReady",
            format!("all {expected} volume groups are ready"),
        )
    } else {
        (
            LVMStateType::Progressing,
            "VGReadinessInProgress",
            format!("{ready} of {expected} volume groups are ready"),
        )
    };
    let state = match resources {
        Resources::Incomplete(_) => LVMStateType::Failed,
        Resources::Synced => vg_state,
    };
    let previous = cluster
        .status
        .as_ref()
        .map(|s| s.conditions.as_slice())
        .unwrap_or_default();
    let generation = cluster.metadata.generation;
    let resources_condition = match resources {
        Resources::Synced => condition(
            RESOURCES_AVAILABLE,
            true,
            "ResourcesAvailable",
            "all resources are applied".into(),
        ),
        Resources::Incomplete(why) => condition(
            RESOURCES_AVAILABLE,
            false,
            "ResourcesSyncIncomplete",
            why.clone(),
        ),
    };
    let vg_condition = condition(
        VOLUME_GROUPS_READY,
        vg_state == LVMStateType::Ready,
        vg_reason,
        vg_message,
    );
    let conditions = [resources_condition, vg_condition]
        .into_iter()
        .map(|mut c| {
            c.observed_generation = generation;
            c.last_transition_time = match previous.iter().find(|p| p.type_ == c.type_) {
                Some(p) if p.status == c.status => p.last_transition_time.clone(),
                _ => now.clone(),
            };
            c
        })
        .collect();
    LVMClusterStatus {
        ready: state == LVMStateType::Ready,
        state: Some(state),
        device_class_statuses: class_statuses,
        conditions,
    }
}

fn condition(type_: &str, ok: bool, reason: &str, message: String) -> Condition {
    Condition {
        type_: type_.into(),
        status: if ok { "True" } else { "False" }.into(),
        reason: reason.into(),
        message,
        last_transition_time: Time(Default::default()),
        observed_generation: None,
    }
}

/// At most five entries, then a count: messages must stay readable at 500 nodes.
fn summary(items: &[String]) -> String {
    let mut s = items.iter().take(5).cloned().collect::<Vec<_>>().join("; ");
    if items.len() > 5 {
        s.push_str(&format!("; and {} more", items.len() - 5));
    }
    s
}

/// The status of an LVMCluster that is not the one this operator serves.
pub fn duplicate(cluster: &LVMCluster, active: &str, now: &Time) -> LVMClusterStatus {
    let message =
        format!("only one LVMCluster is supported and {active} is already active; delete this one");
    let mut c = condition(
        RESOURCES_AVAILABLE,
        false,
        "ResourcesSyncIncomplete",
        message,
    );
    c.observed_generation = cluster.metadata.generation;
    c.last_transition_time = now.clone();
    LVMClusterStatus {
        ready: false,
        state: Some(LVMStateType::Failed),
        conditions: vec![c],
        ..Default::default()
    }
}

#[cfg(test)]
pub mod tests {
    use super::*;
    use crate::resources::tests::cluster;
    use lvms_api::LVMVolumeGroupNodeStatusSpec;
    use lvms_api::nodes::node;

    pub fn report(node: &str, statuses: &[(&str, VGStatusType, &str)]) -> LVMVolumeGroupNodeStatus {
        let mut r = LVMVolumeGroupNodeStatus::new(
            node,
            LVMVolumeGroupNodeStatusSpec {
                lvm_vg_status: statuses
                    .iter()
                    .map(|(name, status, reason)| VGStatus {
                        name: name.to_string(),
                        status: *status,
                        reason: reason.to_string(),
                        devices: vec!["/dev/sdb".into()],
                        ..Default::default()
                    })
                    .collect(),
            },
        );
        r.metadata.namespace = Some("openshift-storage".into());
        r
    }

    fn now() -> Time {
        Time(k8s_openapi::jiff::Timestamp::from_second(1_800_000_000).unwrap())
    }

    fn nodes() -> Vec<Node> {
        // a: both classes; b: only fast; c: no class.
        vec![
            node(
                "a",
                &[("node-role.kubernetes.io/worker", ""), ("storage", "")],
                &[],
            ),
            node("b", &[("node-role.kubernetes.io/worker", "")], &[]),
            node("c", &[], &[]),
        ]
    }

    use VGStatusType::*;

    #[test]
    fn progressing_until_every_selected_node_is_ready() {
        let c = cluster();
        let s = aggregate(
            &c,
            &nodes(),
            &[report("a", &[("fast", Ready, ""), ("bulk", Ready, "")])],
            &Resources::Synced,
            &now(),
        );
        assert_eq!(s.state, Some(LVMStateType::Progressing));
        assert!(!s.ready);
        let vg = s
            .conditions
            .iter()
            .find(|c| c.type_ == VOLUME_GROUPS_READY)
            .unwrap();
        assert_eq!(
            (vg.status.as_str(), vg.reason.as_str()),
            ("False", "VGReadinessInProgress")
        );
        assert!(vg.message.contains("2 of 3"), "{}", vg.message);
        // Node b's missing report shows as Progressing for it.
        let fast = &s.device_class_statuses[0];
        assert_eq!(
            fast.node_status
                .iter()
                .map(|n| n.node.as_str())
                .collect::<Vec<_>>(),
            ["a", "b"]
        );
        assert_eq!(fast.node_status[1].status.status, Progressing);
    }

    #[test]
    fn ready_when_all_report_ready() {
        let reports = [
            report("a", &[("fast", Ready, ""), ("bulk", Ready, "")]),
            report("b", &[("fast", Ready, "")]),
        ];
        let s = aggregate(&cluster(), &nodes(), &reports, &Resources::Synced, &now());
        assert_eq!(s.state, Some(LVMStateType::Ready));
        assert!(s.ready);
        assert!(
            s.conditions.iter().all(|c| c.status == "True"),
            "{:?}",
            s.conditions
        );
        assert_eq!(
            s.device_class_statuses[1].node_status.len(),
            1,
            "bulk runs on node a only"
        );
    }

    #[test]
    fn failed_wins_and_names_the_node_and_reason() {
        let reports = [
            report(
                "a",
                &[
                    ("fast", Degraded, ""),
                    ("bulk", Failed, "/dev/sdb: has a filesystem signature (xfs)"),
                ],
            ),
            report("b", &[("fast", Ready, "")]),
        ];
        let s = aggregate(&cluster(), &nodes(), &reports, &Resources::Synced, &now());
        assert_eq!(s.state, Some(LVMStateType::Failed));
        let vg = s
            .conditions
            .iter()
            .find(|c| c.type_ == VOLUME_GROUPS_READY)
            .unwrap();
        assert_eq!(vg.reason, "VGsFailed");
        assert!(
            vg.message
                .contains("a/bulk: /dev/sdb: has a filesystem signature"),
            "{}",
            vg.message
        );
    }

    #[test]
    fn a_degraded_raid_class_degrades_the_cluster_and_its_health_is_shown() {
        let mut a = report(
            "a",
            &[
                ("fast", Ready, ""),
                ("bulk", Degraded, "RAID volume group bulk is degraded"),
            ],
        );
        a.spec.lvm_vg_status[1].raid_status = Some(lvms_api::RAIDStatus {
            status: lvms_api::RAIDHealthStatus::Degraded,
            member_count: 2,
            degraded_member_count: 1,
            min_sync_percent: Some(100),
            lv_health: vec![lvms_api::RAIDLVHealth {
                name: "uid-1".into(),
                raid_type: "raid1".into(),
                sync_percent: 100,
                health_status: "partial".into(),
            }],
        });
        let reports = [a, report("b", &[("fast", Ready, "")])];
        let s = aggregate(&cluster(), &nodes(), &reports, &Resources::Synced, &now());
        assert_eq!(s.state, Some(LVMStateType::Degraded));
        // LVMS's shape: the node's VGStatus, raidStatus included, beside the node name.
        let bulk = serde_json::to_value(&s.device_class_statuses[1].node_status[0]).unwrap();
        assert_eq!(bulk["node"], "a");
        assert_eq!(bulk["raidStatus"]["degradedMemberCount"], 1);
        assert_eq!(bulk["raidStatus"]["lvHealth"][0]["healthStatus"], "partial");
    }

    #[test]
    fn degraded_without_failures() {
        let reports = [
            report(
                "a",
                &[("fast", Ready, ""), ("bulk", Degraded, "pv missing")],
            ),
            report("b", &[("fast", Ready, "")]),
        ];
        let s = aggregate(&cluster(), &nodes(), &reports, &Resources::Synced, &now());
        assert_eq!(s.state, Some(LVMStateType::Degraded));
        assert_eq!(s.conditions[1].reason, "VGsDegraded");
    }

    #[test]
    fn resource_errors_fail_the_cluster() {
        let s = aggregate(
            &cluster(),
            &nodes(),
            &[],
            &Resources::Incomplete("applying DaemonSet vg-manager: forbidden".into()),
            &now(),
        );
        assert_eq!(s.state, Some(LVMStateType::Failed));
        let r = &s.conditions[0];
        assert_eq!(
            (r.type_.as_str(), r.status.as_str(), r.reason.as_str()),
            (RESOURCES_AVAILABLE, "False", "ResourcesSyncIncomplete")
        );
        assert!(r.message.contains("forbidden"));
    }

    #[test]
    fn no_selected_node_is_progressing_with_a_reason() {
        let s = aggregate(
            &cluster(),
            &[node("c", &[], &[])],
            &[],
            &Resources::Synced,
            &now(),
        );
        assert_eq!(s.state, Some(LVMStateType::Progressing));
        assert!(
            s.conditions[1]
                .message
                .contains("no node is selected by device class fast, bulk")
        );
    }

    #[test]
    fn transition_time_moves_only_on_change() {
        let mut c = cluster();
        let reports = [
            report("a", &[("fast", Ready, ""), ("bulk", Ready, "")]),
            report("b", &[("fast", Ready, "")]),
        ];
        c.status = Some(aggregate(
            &c,
            &nodes(),
            &reports,
            &Resources::Synced,
            &now(),
        ));
        let later = Time(k8s_openapi::jiff::Timestamp::from_second(1_800_000_600).unwrap());
        let same = aggregate(&c, &nodes(), &reports, &Resources::Synced, &later);
        assert!(
            same.conditions
                .iter()
                .all(|x| x.last_transition_time == now())
        );
        let worse = aggregate(&c, &nodes(), &reports[..1], &Resources::Synced, &later);
        assert_eq!(worse.conditions[1].last_transition_time, later);
        assert_eq!(worse.conditions[0].last_transition_time, now());
    }

    #[test]
    fn long_failure_lists_are_summarised() {
        let many: Vec<String> = (0..8).map(|i| format!("n{i}")).collect();
        let s = summary(&many);
        assert!(s.ends_with("; and 3 more"), "{s}");
    }
}
