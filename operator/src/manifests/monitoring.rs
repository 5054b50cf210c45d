//! What Prometheus needs to watch lvms-rs: a Service and a ServiceMonitor for the operator and for
//! every node's vg-manager (which serves the `topolvm_*` and `lvms_raid_*` gauges), the RBAC that
//! lets a Prometheus with namespaced permissions discover them, and the alerts: the usage alerts of
//! compat.md (groups `vg-alert.rules` and `thin-pool-alert.rules`) and the RAID alerts of LVMS's
//! design (group `raid-alert.rules`: a RAID volume degraded, failed, or synchronising for too
//! long). `config/prometheus` holds them for kustomize; the OLM bundle carries them too, for
//! OpenShift's cluster monitoring.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::api::rbac::v1::{
    ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding, RoleRef, Subject,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use lvms_api::names::{VG_MANAGER_METRICS_SERVICE, VG_MANAGER_NAME};
use serde_json::{Value, json};

use super::{METRICS_CERT_SECRET, METRICS_SERVICE, NAME, NAMESPACE, labels, meta, selector_labels};
use crate::resources::metrics_tls::{self, PORT_NAME};
use crate::resources::vg_manager::METRICS_CERT_SECRET as VG_MANAGER_CERT_SECRET;

/// LVMS's names for the Prometheus RBAC and for the rule object: a cluster moving from LVMS
/// replaces them rather than keeping a second copy that would fire every alert twice.
pub const METRICS_RBAC_NAME: &str = "lvms-metrics";
pub const RULE_NAME: &str = "prometheus-lvmo-rules";
/// The ClusterRole (and binding) that lets Prometheus read `/metrics`.
pub const METRICS_READER_NAME: &str = "lvms-metrics-reader";

/// Prometheus service accounts that discover targets with namespaced permissions only:
/// OpenShift's cluster monitoring and kube-prometheus. (kube-prometheus-stack's Prometheus has a
/// ClusterRole of its own; a binding to an account that does not exist grants nothing.)
pub const PROMETHEUS_ACCOUNTS: &[(&str, &str)] = &[
    ("openshift-monitoring", "prometheus-k8s"),
    ("monitoring", "prometheus-k8s"),
];

/// Alert thresholds, in percent used: compat.md's "near full" and "critical".
pub const NEAR_FULL: u32 = 75;
pub const CRITICAL: u32 = 85;
/// How long a threshold must be crossed before its alert fires, in minutes.
pub const FOR_MINUTES: u32 = 5;
/// How long a RAID condition must hold before its alert fires, in minutes. Degraded waits as long
/// as the usage alerts, so that a member that drops off and comes back (a bus reset, a path
/// failover) does not page. Failed waits only one minute: the data is already unavailable and
/// waiting saves nothing, but a single reading alone does not page. A sync is normal after a
/// repair or on a new volume; only one that has run for half an hour is worth a look, and a
/// warning, not a page: a big volume's sync can take that long on healthy disks.
pub const RAID_DEGRADED_FOR_MINUTES: u32 = 5;
pub const RAID_FAILED_FOR_MINUTES: u32 = 1;
pub const RAID_SYNC_SLOW_MINUTES: u32 = 30;

/// How Prometheus checks the metrics endpoints' certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trust {
    /// OpenShift (the OLM bundle): the serving certificate comes from service-ca, whose CA
    /// cluster monitoring mounts into Prometheus; verified for the Service's name.
    ServiceCa,
    /// Elsewhere (`config/prometheus`): the pods serve a self-signed certificate unless a Secret
    /// of the same name is provided (cert-manager), so the certificate is not verified. The
    /// bearer token still is: TLS here keeps the metrics and the token off the wire, but not
    /// from a host that takes over the pod's IP. With a real certificate, set `caFile` and
    /// `serverName` as the bundle does.
    SelfSigned,
}

/// Where OpenShift's cluster monitoring mounts the service CA bundle in Prometheus.
pub const SERVICE_CA_FILE: &str =
    "/etc/prometheus/configmaps/serving-certs-ca-bundle/service-ca.crt";
/// Prometheus's own service-account token, sent as the bearer token the pods check.
const TOKEN_FILE: &str = "/var/run/secrets/kubernetes.io/serviceaccount/token";

fn service_monitor(name: &str, service: &str, port: &str, selector: Value, trust: Trust) -> Value {
    let tls = match trust {
        Trust::ServiceCa => json!({
            "caFile": SERVICE_CA_FILE,
            "serverName": format!("{service}.{NAMESPACE}.svc"),
        }),
        Trust::SelfSigned => json!({"insecureSkipVerify": true}),
    };
    json!({
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "ServiceMonitor",
        "metadata": {"name": name, "namespace": NAMESPACE, "labels": labels()},
        // No namespaceSelector: a ServiceMonitor looks in its own namespace, which is right
        // wherever the install is (kustomize can move it, OLM puts it in the operator's).
        "spec": {
            "endpoints": [{
                "port": port,
                "path": "/metrics",
                "interval": "30s",
                "scheme": "https",
                "bearerTokenFile": TOKEN_FILE,
                "tlsConfig": tls,
            }],
            "selector": {"matchLabels": selector},
        },
    })
}

pub fn operator_service_monitor(trust: Trust) -> Value {
    service_monitor(
        NAME,
        METRICS_SERVICE,
        PORT_NAME,
        json!(selector_labels()),
        trust,
    )
}

/// A Service over the metrics port of the pods `selector` picks, with service-ca's serving
/// certificate written into `cert_secret` on OpenShift.
fn metrics_service(
    mut metadata: ObjectMeta,
    selector: BTreeMap<String, String>,
    cert_secret: &str,
    headless: bool,
) -> Service {
    metadata.annotations = Some(metrics_tls::service_annotations(cert_secret));
    Service {
        metadata,
        spec: Some(ServiceSpec {
            cluster_ip: headless.then(|| "None".into()),
            selector: Some(selector),
            ports: Some(vec![ServicePort {
                name: Some(PORT_NAME.into()),
                port: metrics_tls::PORT,
                target_port: Some(IntOrString::String(PORT_NAME.into())),
                protocol: Some("TCP".into()),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The operator's metrics Service (`config/manager`, and the bundle).
pub fn operator_metrics_service() -> Service {
    metrics_service(
        meta(METRICS_SERVICE, true),
        selector_labels(),
        METRICS_CERT_SECRET,
        false,
    )
}

/// A Service over the vg-manager pods' metrics port: the gauges the alerts read are
/// served by the agents, not by the operator. Selector and port come from the DaemonSet builder's
/// own labels and port, so the two cannot drift. Headless: one endpoint per node agent, nothing
/// to balance (service-ca signs headless Services too).
pub fn vg_manager_metrics_service() -> Service {
    let mut metadata = meta(VG_MANAGER_METRICS_SERVICE, true);
    metadata.labels = Some(crate::resources::labels(VG_MANAGER_NAME));
    metrics_service(
        metadata,
        crate::resources::labels(VG_MANAGER_NAME),
        VG_MANAGER_CERT_SECRET,
        true,
    )
}

pub fn vg_manager_service_monitor(trust: Trust) -> Value {
    service_monitor(
        VG_MANAGER_NAME,
        VG_MANAGER_METRICS_SERVICE,
        PORT_NAME,
        json!(crate::resources::labels(VG_MANAGER_NAME)),
        trust,
    )
}

/// The ClusterRole a scraper needs on top of discovery: `get` on the `/metrics` URL, which the
/// pods check with a SubjectAccessReview for each new token. Non-resource URLs exist only in
/// ClusterRoles, so it is cluster-wide (it opens no data, only these metrics endpoints and any
/// other `/metrics` that authorizes the same way).
pub fn metrics_reader_cluster_role() -> ClusterRole {
    ClusterRole {
        metadata: meta(METRICS_READER_NAME, false),
        rules: Some(vec![PolicyRule {
            non_resource_urls: Some(vec!["/metrics".into()]),
            verbs: vec!["get".into()],
            ..Default::default()
        }]),
        ..Default::default()
    }
}

pub fn metrics_reader_binding() -> ClusterRoleBinding {
    ClusterRoleBinding {
        metadata: meta(METRICS_READER_NAME, false),
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".into(),
            kind: "ClusterRole".into(),
            name: METRICS_READER_NAME.into(),
        },
        subjects: Some(prometheus_subjects()),
    }
}

fn prometheus_subjects() -> Vec<Subject> {
    PROMETHEUS_ACCOUNTS
        .iter()
        .map(|(namespace, name)| Subject {
            kind: "ServiceAccount".into(),
            name: name.to_string(),
            namespace: Some(namespace.to_string()),
            ..Default::default()
        })
        .collect()
}

/// What service discovery reads in the install's namespace: the Services, their endpoints (or
/// EndpointSlices, with newer prometheus-operator settings) and the pods behind them.
pub fn metrics_rules() -> Vec<PolicyRule> {
    let read = || vec!["get".to_string(), "list".into(), "watch".into()];
    vec![
        PolicyRule {
            api_groups: Some(vec![String::new()]),
            resources: Some(vec!["services".into(), "endpoints".into(), "pods".into()]),
            verbs: read(),
            ..Default::default()
        },
        PolicyRule {
            api_groups: Some(vec!["discovery.k8s.io".into()]),
            resources: Some(vec!["endpointslices".into()]),
            verbs: read(),
            ..Default::default()
        },
    ]
}

pub fn metrics_role() -> Role {
    Role {
        metadata: meta(METRICS_RBAC_NAME, true),
        rules: Some(metrics_rules()),
    }
}

pub fn metrics_role_binding() -> RoleBinding {
    RoleBinding {
        metadata: meta(METRICS_RBAC_NAME, true),
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".into(),
            kind: "Role".into(),
            name: METRICS_RBAC_NAME.into(),
        },
        subjects: Some(prometheus_subjects()),
    }
}

/// The used share of a volume group, in percent. Written without `*` so that no manifest holds
/// one (the wildcard check stays simple).
const VG_USED: &str =
    "(100 - topolvm_volumegroup_available_bytes / (topolvm_volumegroup_size_bytes / 100))";
const THIN_DATA: &str = "topolvm_thinpool_data_percent";
const THIN_METADATA: &str = "topolvm_thinpool_metadata_percent";

/// PromQL selecting the series whose usage is above `threshold` percent.
type Above = fn(u32) -> String;

fn vg_above(threshold: u32) -> String {
    // A thin class's pool takes sizePercent (90 % by default) of its volume group from the first
    // day, so its VG alone always looks full. There the VG counts only when the pool's data is
    // above the threshold too (LVMS: "both the volume group and the thin pool"): the pool is
    // filling and the VG has no room left to grow it. A thick class has no pool series, so
    // `unless` removes nothing and its VG usage alone decides.
    format!("{VG_USED} > {threshold} unless on(node, device_class) {THIN_DATA} <= {threshold}")
}

fn thin_data_above(threshold: u32) -> String {
    format!("{THIN_DATA} > {threshold}")
}

fn thin_metadata_above(threshold: u32) -> String {
    format!("{THIN_METADATA} > {threshold}")
}

/// (rule group, alert name stem as LVMS names it, what fills up, what to do, the usage test).
const USAGE_ALERTS: &[(&str, &str, &str, &str, Above)] = &[
    (
        "vg-alert.rules",
        "VolumeGroupUsage",
        "volume group",
        "Delete volumes that are no longer needed, or add disks to the device class: vg-manager adds them to the volume group and grows its thin pool.",
        vg_above,
    ),
    (
        "thin-pool-alert.rules",
        "ThinPoolDataUsage",
        "thin pool data",
        "Delete volumes or snapshots that are no longer needed, or add disks to the device class: the thin pool grows with its volume group. A full pool stops every write to its volumes.",
        thin_data_above,
    ),
    (
        "thin-pool-alert.rules",
        "ThinPoolMetaDataUsage",
        "thin pool metadata",
        "Delete volumes or snapshots that are no longer needed, or raise the class's metadataSize (metadataSizeCalculationPolicy Static): vg-manager grows the pool's metadata from the volume group's free space. Full metadata stops every write to the pool's volumes.",
        thin_metadata_above,
    ),
];

/// One alerting rule, annotated as LVMS's alerts are.
fn alert(
    name: &str,
    expr: String,
    for_minutes: u32,
    severity: &str,
    summary: String,
    description: String,
) -> Value {
    json!({
        "alert": name,
        "expr": expr,
        "for": format!("{for_minutes}m"),
        "labels": {"severity": severity},
        "annotations": {
            "summary": summary,
            // LVMS's alerts carry `message`; notification templates may read it.
            "message": summary,
            "description": description,
        },
    })
}

/// The alerts of compat.md, under LVMS's names: volume group, thin pool data and thin pool
/// metadata usage above 75 % (`…AtThresholdNearFull`, warning) and above 85 %
/// (`…AtThresholdCritical`, critical) for 5 minutes. The warning stops where the critical alert
/// starts, as in LVMS, so one condition pages once. As (rule group, rules), in LVMS's order.
fn usage_alerts() -> Vec<(&'static str, Vec<Value>)> {
    let mut groups: Vec<(&str, Vec<Value>)> = Vec::new();
    for (group, stem, what, remedy, above) in USAGE_ALERTS {
        let levels = [
            (
                "NearFull",
                "warning",
                NEAR_FULL,
                format!("({}) unless ({})", above(NEAR_FULL), above(CRITICAL)),
            ),
            ("Critical", "critical", CRITICAL, above(CRITICAL)),
        ];
        for (level, severity, threshold, expr) in levels {
            let rule = alert(
                &format!("{stem}AtThreshold{level}"),
                expr,
                FOR_MINUTES,
                severity,
                format!(
                    "The {what} of device class {{{{ $labels.device_class }}}} on node {{{{ $labels.node }}}} is more than {threshold}% used."
                ),
                format!(
                    "The {what} of device class {{{{ $labels.device_class }}}} on node {{{{ $labels.node }}}} is {{{{ $value | humanize }}}}% used, above {threshold}% for {FOR_MINUTES} minutes. {remedy}"
                ),
            );
            match groups.iter_mut().find(|(g, _)| g == group) {
                Some((_, rules)) => rules.push(rule),
                None => groups.push((group, vec![rule])),
            }
        }
    }
    groups
}

/// The gauges vg-manager serves for every RAID device class on its node: the worst health of the
/// class's RAID volumes (`lvms_raid_health_status`, 0 healthy, 1 degraded, 2 failed) and whether
/// any of them is synchronising (`lvms_raid_sync_in_progress`, 1 or 0).
const RAID_HEALTH: &str = "lvms_raid_health_status";
const RAID_DEGRADED: u32 = 1;
const RAID_FAILED: u32 = 2;
const RAID_SYNC: &str = "lvms_raid_sync_in_progress";

/// The RAID alerts of LVMS's design: a RAID volume degraded (`RAIDDegraded`, critical: one more
/// lost disk can lose its data), failed (`RAIDFailed`, critical) or synchronising for more than
/// 30 minutes (`RAIDSyncSlow`, warning). Each description says what to do on the node.
fn raid_alerts() -> Vec<Value> {
    let class = "device class {{ $labels.device_class }} on node {{ $labels.node }}";
    // vg-manager names a class's volume group after the class, so the commands can be spelled
    // out; only the LV is left for `lvs` to tell.
    let vg = "{{ $labels.device_class }}";
    let find = format!("`lvs -o+lv_health_status,sync_percent,raid_sync_action {vg}` on the node");
    vec![
        alert(
            "RAIDDegraded",
            format!("{RAID_HEALTH} == {RAID_DEGRADED}"),
            RAID_DEGRADED_FOR_MINUTES,
            "critical",
            format!("A RAID volume of {class} is degraded."),
            format!(
                "A RAID volume of {class} has lost a member disk and runs without full redundancy: one more disk failure can lose its data. Replace the disk: add the new disk's path to the device class's deviceSelector.paths (or run `vgextend {vg} <new disk>` on the node), run `lvconvert --repair {vg}/<lv>` for each degraded LV, then `vgreduce --removemissing {vg}`. {find} shows which LVs are degraded."
            ),
        ),
        alert(
            "RAIDFailed",
            format!("{RAID_HEALTH} == {RAID_FAILED}"),
            RAID_FAILED_FOR_MINUTES,
            "critical",
            format!("A RAID volume of {class} has failed."),
            format!(
                "A RAID volume of {class} has lost more member disks than its RAID level tolerates: the data of the affected volumes is unavailable. Restore the missing disk(s) (once they are back, `lvchange --refresh {vg}/<lv>` puts them in use again), or restore the volumes' data from backup. {find} shows which LVs have failed."
            ),
        ),
        alert(
            "RAIDSyncSlow",
            format!("{RAID_SYNC} == 1"),
            RAID_SYNC_SLOW_MINUTES,
            "warning",
            format!(
                "A RAID volume of {class} has been synchronising for more than {RAID_SYNC_SLOW_MINUTES} minutes."
            ),
            format!(
                "A RAID volume of {class} has been synchronising for more than {RAID_SYNC_SLOW_MINUTES} minutes; until the sync completes it does not have full redundancy. Check its progress with `lvs -o+sync_percent,raid_sync_action {vg}` on the node. A sync that does not progress points at a slow or failing disk: check the disks' health (SMART, the kernel log). One that progresses slowly may be throttled by other I/O: raising the sysctl dev.raid.speed_limit_min raises the rate the kernel keeps even then."
            ),
        ),
    ]
}

/// The PrometheusRule: the usage alerts' groups, then `raid-alert.rules`.
pub fn prometheus_rule() -> Value {
    let mut groups = usage_alerts();
    groups.push(("raid-alert.rules", raid_alerts()));
    let groups: Vec<Value> = groups
        .into_iter()
        .map(|(name, rules)| json!({"name": name, "rules": rules}))
        .collect();
    json!({
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {"name": RULE_NAME, "namespace": NAMESPACE, "labels": labels()},
        "spec": {"groups": groups},
    })
}
