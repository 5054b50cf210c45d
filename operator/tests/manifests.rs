//! The checked-in install manifests (`config/`, `bundle/`, `bundle.Dockerfile`): fresh, equal to the
//! sources of truth (RBAC tables, images, the Deployment), free of wildcards, and rendering with
//! kustomize.

use std::path::{Path, PathBuf};
use std::process::Command;

use k8s_openapi::api::apps::v1::DeploymentSpec;
use k8s_openapi::api::rbac::v1::PolicyRule;
use lvms_operator::config::IMAGE_VARS;
use lvms_operator::manifests::{self, monitoring};
use lvms_operator::resources::rbac::{operator_cluster_rules, operator_namespace_rules};
use serde_json::{Value, json};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .into()
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(root().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn yaml(rel: &str) -> Value {
    serde_yaml::from_str(&read(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn rules(v: &Value) -> Vec<PolicyRule> {
    serde_json::from_value(v.clone()).expect("policy rules")
}

fn csv() -> Value {
    yaml("bundle/manifests/lvms-operator.clusterserviceversion.yaml")
}

#[test]
fn generated_files_are_fresh() {
    let stale = manifests::sync(&root(), true).expect("generating");
    assert!(
        stale.is_empty(),
        "stale generated files (run `make manifests`): {stale:?}"
    );
}

#[test]
fn rbac_equals_the_rule_tables() {
    let cr = yaml("config/rbac/cluster_role.yaml");
    assert_eq!(cr["kind"], "ClusterRole");
    assert_eq!(rules(&cr["rules"]), operator_cluster_rules());
    let role = yaml("config/rbac/role.yaml");
    assert_eq!(role["kind"], "Role");
    assert_eq!(rules(&role["rules"]), operator_namespace_rules());
    for binding in ["cluster_role_binding", "role_binding"] {
        let b = yaml(&format!("config/rbac/{binding}.yaml"));
        assert_eq!(b["subjects"][0]["name"], manifests::NAME, "{binding}");
        assert_eq!(b["roleRef"]["name"], manifests::NAME, "{binding}");
    }
}

fn files_under(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files_under(&path, out);
        } else {
            out.push(path);
        }
    }
}

/// No `*` in any RBAC rule (or anywhere else) of config/ or bundle/. CRD files are skipped: their
/// descriptions legitimately contain `*` (and they grant nothing).
#[test]
fn no_wildcards_in_config_or_bundle() {
    let mut files = Vec::new();
    files_under(&root().join("config"), &mut files);
    files_under(&root().join("bundle"), &mut files);
    let mut checked = 0;
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        if text.contains("kind: CustomResourceDefinition") {
            continue;
        }
        checked += 1;
        assert!(!text.contains('*'), "{} contains a `*`", f.display());
    }
    assert!(checked >= 10, "only {checked} files checked");
}

#[test]
fn csv_owns_exactly_the_crds() {
    let mut want: Vec<(String, String, String)> = manifests::crd_files(&root())
        .unwrap()
        .iter()
        .map(|(f, text)| manifests::crd_identity(text).unwrap_or_else(|e| panic!("{f}: {e}")))
        .collect();
    assert_eq!(want.len(), 4);
    let mut owned: Vec<(String, String, String)> =
        csv()["spec"]["customresourcedefinitions"]["owned"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| {
                assert!(o["displayName"].as_str().is_some_and(|s| !s.is_empty()));
                assert!(o["description"].as_str().is_some_and(|s| !s.is_empty()));
                (
                    o["name"].as_str().unwrap().into(),
                    o["version"].as_str().unwrap().into(),
                    o["kind"].as_str().unwrap().into(),
                )
            })
            .collect();
    want.sort();
    owned.sort();
    assert_eq!(owned, want);
    for (file, text) in manifests::crd_files(&root()).unwrap() {
        assert_eq!(read(&format!("bundle/manifests/{file}")), text);
        assert_eq!(read(&format!("config/crd/bases/{file}")), text);
    }
}

#[test]
fn csv_permissions_equal_the_rule_tables() {
    let spec = &csv()["spec"]["install"]["spec"];
    assert_eq!(
        rules(&spec["clusterPermissions"][0]["rules"]),
        operator_cluster_rules()
    );
    assert_eq!(
        rules(&spec["permissions"][0]["rules"]),
        operator_namespace_rules()
    );
    assert_eq!(
        spec["permissions"][0]["serviceAccountName"],
        "lvms-operator"
    );
    assert_eq!(
        spec["clusterPermissions"][0]["serviceAccountName"],
        "lvms-operator"
    );
}

#[test]
fn csv_deployment_equals_config_manager() {
    let csv = csv();
    let from_csv: DeploymentSpec =
        serde_json::from_value(csv["spec"]["install"]["spec"]["deployments"][0]["spec"].clone())
            .unwrap();
    let from_config: DeploymentSpec =
        serde_json::from_value(yaml("config/manager/deployment.yaml")["spec"].clone()).unwrap();
    assert_eq!(from_csv, from_config);
    assert_eq!(from_config, manifests::deployment_spec());
    let pod = from_config.template.spec.unwrap();
    assert_eq!(pod.service_account_name.as_deref(), Some("lvms-operator"));
    let c = &pod.containers[0];
    let args = c.args.clone().unwrap();
    assert!(args.contains(&"--leader-elect".to_string()), "{args:?}");
    let sc = c.security_context.clone().unwrap();
    assert_eq!(sc.read_only_root_filesystem, Some(true));
    assert_eq!(sc.allow_privilege_escalation, Some(false));
    assert_eq!(sc.capabilities.unwrap().drop, Some(vec!["ALL".to_string()]));
    let env = c.env.clone().unwrap();
    for (var, default) in IMAGE_VARS {
        assert!(
            env.iter()
                .any(|e| e.name == var && e.value.as_deref() == Some(default)),
            "{var} missing from the Deployment"
        );
    }
    assert!(env.iter().any(|e| {
        e.name == "POD_NAMESPACE"
            && e.value_from
                .as_ref()
                .unwrap()
                .field_ref
                .as_ref()
                .unwrap()
                .field_path
                == "metadata.namespace"
    }));
    let install_modes = &csv["spec"]["installModes"];
    for (mode, supported) in [
        ("OwnNamespace", true),
        ("SingleNamespace", false),
        ("MultiNamespace", false),
        ("AllNamespaces", false),
    ] {
        assert!(
            install_modes
                .as_array()
                .unwrap()
                .iter()
                .any(|m| m["type"] == mode && m["supported"] == supported),
            "{mode}"
        );
    }
}

#[test]
fn csv_related_images_hold_every_image() {
    let csv = csv();
    let related: Vec<&str> = csv["spec"]["relatedImages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["image"].as_str().unwrap())
        .collect();
    for (var, default) in IMAGE_VARS {
        assert!(
            related.contains(&default),
            "{var} default {default} missing"
        );
    }
    assert!(related.contains(&manifests::operator_image().as_str()));
}

#[test]
fn alm_examples_are_the_samples() {
    let csv = csv();
    let examples: Value = serde_json::from_str(
        csv["metadata"]["annotations"]["alm-examples"]
            .as_str()
            .unwrap(),
    )
    .expect("alm-examples is JSON");
    let mut samples = manifests::samples(&root()).unwrap();
    assert!(samples.len() >= 5);
    // Without the namespace: the console creates them in the operator's, wherever it is.
    for s in &mut samples {
        s["metadata"].as_object_mut().unwrap().remove("namespace");
    }
    assert_eq!(examples, Value::Array(samples));
}

/// What the OpenShift console reads from the CSV: the LVMCluster it offers after install, the
/// namespace it creates (the same as config/default's, labelled for monitoring and privileged
/// pods), and the owned kinds it hides.
#[test]
fn csv_console_annotations() {
    let csv = csv();
    let a = &csv["metadata"]["annotations"];
    let text = a["operatorframework.io/initialization-resource"]
        .as_str()
        .unwrap();
    let init: lvms_api::LVMCluster =
        serde_json::from_str(text).expect("initialization-resource is an LVMCluster");
    assert!(init.metadata.namespace.is_none());
    let examples: Vec<Value> = serde_json::from_str(a["alm-examples"].as_str().unwrap()).unwrap();
    assert_eq!(serde_json::from_str::<Value>(text).unwrap(), examples[0]);
    let classes = &init.spec.storage.device_classes;
    assert!(
        classes.iter().any(|c| c.default),
        "it makes a default class"
    );

    let template: Value = serde_json::from_str(
        a["operatorframework.io/suggested-namespace-template"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(template, yaml("config/default/namespace.yaml"));
    assert_eq!(
        template["metadata"]["name"],
        a["operatorframework.io/suggested-namespace"]
    );
    assert_eq!(
        template["metadata"]["labels"]["pod-security.kubernetes.io/enforce"],
        "privileged"
    );
    assert_eq!(a["operatorframework.io/cluster-monitoring"], "true");
    assert_eq!(
        template["metadata"]["labels"]["openshift.io/cluster-monitoring"],
        "true"
    );

    let internal: Vec<String> = serde_json::from_str(
        a["operators.operatorframework.io/internal-objects"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    let owned: Vec<&str> = csv["spec"]["customresourcedefinitions"]["owned"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["name"].as_str().unwrap())
        .collect();
    let mut hidden: Vec<&str> = owned
        .iter()
        .copied()
        .filter(|n| *n != "lvmclusters.lvm.topolvm.io")
        .collect();
    hidden.sort();
    let mut internal: Vec<&str> = internal.iter().map(String::as_str).collect();
    internal.sort();
    assert_eq!(
        internal, hidden,
        "every owned kind but LVMCluster is internal"
    );
}

fn is_semver(v: &str) -> bool {
    let core = v.split(['-', '+']).next().unwrap();
    let parts: Vec<&str> = core.split('.').collect();
    parts.len() == 3
        && parts.iter().all(|p| {
            !p.is_empty()
                && p.chars().all(|c| c.is_ascii_digit())
                && (p.len() == 1 || !p.starts_with('0'))
        })
}

#[test]
fn semver_check_rejects_what_olm_rejects() {
    assert!(is_semver("0.1.0") && is_semver("1.28.0") && is_semver("4.18.0-rc.1"));
    assert!(!is_semver("v0.1.0") && !is_semver("1.28") && !is_semver("01.0.0"));
}

/// What `operator-sdk bundle validate` (operator-framework/api's bundle, CSV and OperatorHub
/// validators; a Go tool, not installable here) checks of a registry+v1 bundle, for this one.
#[test]
fn bundle_passes_the_olm_validators() {
    let csv = csv();
    let spec = &csv["spec"];
    let annotations = yaml("bundle/metadata/annotations.yaml")["annotations"].clone();
    let package = annotations["operators.operatorframework.io.bundle.package.v1"]
        .as_str()
        .unwrap();

    // Name, version and Kubernetes version.
    let version = spec["version"].as_str().unwrap();
    assert!(is_semver(version), "spec.version {version}");
    assert_eq!(csv["metadata"]["name"], format!("{package}.v{version}"));
    assert!(is_semver(spec["minKubeVersion"].as_str().unwrap()));

    // Channels: the default channel is one of them.
    let channels: Vec<&str> = annotations["operators.operatorframework.io.bundle.channels.v1"]
        .as_str()
        .unwrap()
        .split(',')
        .collect();
    let default = &annotations["operators.operatorframework.io.bundle.channel.default.v1"];
    assert!(
        channels.iter().any(|c| default == c),
        "{default} not in {channels:?}"
    );

    // Install modes: each of the four exactly once, and at least one supported.
    let modes = spec["installModes"].as_array().unwrap();
    let mut types: Vec<&str> = modes.iter().map(|m| m["type"].as_str().unwrap()).collect();
    types.sort();
    assert_eq!(
        types,
        [
            "AllNamespaces",
            "MultiNamespace",
            "OwnNamespace",
            "SingleNamespace"
        ]
    );
    assert!(modes.iter().any(|m| m["supported"] == true));

    // OperatorHub: capability level, categories, icon, maintainers, links, provider.
    let meta = &csv["metadata"]["annotations"];
    assert!(
        [
            "Basic Install",
            "Seamless Upgrades",
            "Full Lifecycle",
            "Deep Insights",
            "Auto Pilot"
        ]
        .contains(&meta["capabilities"].as_str().unwrap())
    );
    for c in meta["categories"].as_str().unwrap().split(',') {
        assert!(
            ["Storage", "Database", "Monitoring", "OpenShift Optional"].contains(&c.trim()),
            "category {c}"
        );
    }
    let icon = &spec["icon"][0];
    assert_eq!(icon["mediatype"], "image/svg+xml");
    let svg: k8s_openapi::ByteString =
        serde_json::from_value(icon["base64data"].clone()).expect("icon is base64");
    assert_eq!(
        svg.0,
        std::fs::read(root().join("images/icon.svg")).unwrap()
    );
    assert!(String::from_utf8(svg.0).unwrap().starts_with("<svg"));
    for m in spec["maintainers"].as_array().unwrap() {
        assert!(m["email"].as_str().unwrap().contains('@'));
    }
    for l in spec["links"].as_array().unwrap() {
        assert!(l["url"].as_str().unwrap().starts_with("https://"));
    }
    assert!(
        spec["provider"]["name"]
            .as_str()
            .is_some_and(|s| !s.is_empty())
    );
    assert!(spec["description"].as_str().unwrap().len() > 100);

    // alm-examples: every example is of an owned kind.
    let owned: Vec<(String, String)> = spec["customresourcedefinitions"]["owned"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| {
            let group = o["name"].as_str().unwrap().split_once('.').unwrap().1;
            (
                format!("{group}/{}", o["version"].as_str().unwrap()),
                o["kind"].as_str().unwrap().into(),
            )
        })
        .collect();
    let examples: Vec<Value> =
        serde_json::from_str(meta["alm-examples"].as_str().unwrap()).unwrap();
    for e in &examples {
        let gvk = (
            e["apiVersion"].as_str().unwrap().to_string(),
            e["kind"].as_str().unwrap().to_string(),
        );
        assert!(owned.contains(&gvk), "example of a kind not owned: {gvk:?}");
    }

    // The install strategy: unique deployment names, every service account given rules runs a
    // deployment.
    let install = &spec["install"]["spec"];
    let deployments = install["deployments"].as_array().unwrap();
    let accounts: Vec<&str> = deployments
        .iter()
        .map(|d| {
            d["spec"]["template"]["spec"]["serviceAccountName"]
                .as_str()
                .unwrap()
        })
        .collect();
    let mut names: Vec<&str> = deployments
        .iter()
        .map(|d| d["name"].as_str().unwrap())
        .collect();
    names.dedup();
    assert_eq!(names.len(), deployments.len());
    for kind in ["permissions", "clusterPermissions"] {
        for p in install[kind].as_array().unwrap() {
            assert!(
                accounts.contains(&p["serviceAccountName"].as_str().unwrap()),
                "{kind}"
            );
        }
    }

    // bundle/manifests holds one CSV and only kinds a registry+v1 bundle may carry.
    let supported = [
        "ClusterServiceVersion",
        "CustomResourceDefinition",
        "Service",
        "ConfigMap",
        "Secret",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
        "PrometheusRule",
        "ServiceMonitor",
        "PodDisruptionBudget",
        "PriorityClass",
        "VerticalPodAutoscaler",
        "ConsoleYAMLSample",
        "ConsoleQuickStart",
        "ConsoleCLIDownload",
        "ConsoleLink",
    ];
    // NetworkPolicy is not on the list (OLM v1 and the certification pipeline refuse it): the
    // operator applies its policies itself (resources::network_policy).
    let mut csvs = 0;
    for entry in std::fs::read_dir(root().join("bundle/manifests")).unwrap() {
        let file = entry.unwrap().file_name().into_string().unwrap();
        let kind = yaml(&format!("bundle/manifests/{file}"))["kind"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(supported.contains(&kind.as_str()), "{file}: {kind}");
        csvs += usize::from(kind == "ClusterServiceVersion");
    }
    assert_eq!(csvs, 1);
}

/// Each field in this CRD schema, as a descriptor path (`a.b.c`; arrays are looked through).
fn schema_has(schema: &Value, path: &str) -> bool {
    let mut node = schema;
    for seg in path.split('.') {
        while node["type"] == "array" {
            node = &node["items"];
        }
        node = &node["properties"][seg];
        if node.is_null() {
            return false;
        }
    }
    true
}

#[test]
fn csv_descriptors_name_fields_of_the_crds() {
    let csv = csv();
    let mut checked = 0;
    for owned in csv["spec"]["customresourcedefinitions"]["owned"]
        .as_array()
        .unwrap()
    {
        let name = owned["name"].as_str().unwrap();
        let crd = yaml(&format!(
            "bundle/manifests/{}_{}.yaml",
            name.split_once('.').unwrap().1,
            name.split_once('.').unwrap().0
        ));
        let version = crd["spec"]["versions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == owned["version"])
            .unwrap();
        let root = &version["schema"]["openAPIV3Schema"]["properties"];
        for (list, part) in [("specDescriptors", "spec"), ("statusDescriptors", "status")] {
            for d in owned[list].as_array().unwrap() {
                let path = d["path"].as_str().unwrap();
                assert!(
                    schema_has(&root[part], path),
                    "{name}: {part}.{path} is not in the schema"
                );
                for x in d["x-descriptors"].as_array().into_iter().flatten() {
                    assert!(
                        x.as_str().unwrap().starts_with("urn:alm:descriptor:"),
                        "{x}"
                    );
                }
                checked += 1;
            }
        }
    }
    assert!(checked >= 15, "only {checked} descriptors");
    // The check itself tells a wrong path from a right one.
    let schema = serde_json::json!({"properties": {"a": {"type": "array", "items": {"properties": {"b": {}}}}}});
    assert!(schema_has(&schema, "a.b") && !schema_has(&schema, "a.c"));
}

#[test]
fn bundle_metadata_and_dockerfile_agree() {
    let annotations = yaml("bundle/metadata/annotations.yaml");
    let dockerfile = read("bundle.Dockerfile");
    for (k, v) in manifests::bundle_annotations() {
        assert_eq!(annotations["annotations"][k], v, "{k}");
        assert!(dockerfile.contains(&format!("LABEL {k}={v}\n")), "{k}");
    }
    assert_eq!(
        annotations["annotations"]["operators.operatorframework.io.bundle.mediatype.v1"],
        "registry+v1"
    );
    assert!(dockerfile.contains("FROM scratch"));
}

/// The OLM bundle carries the same monitoring objects as `config/prometheus` (OpenShift's cluster
/// monitoring reads them from there), without namespaces, as OLM wants them.
#[test]
fn bundle_carries_the_monitoring_objects() {
    let overlay = yaml("config/prometheus/kustomization.yaml");
    let files = overlay["resources"].as_array().unwrap();
    assert!(files.len() >= 6, "{files:?}");
    for file in files {
        let mut obj = yaml(&format!("config/prometheus/{}", file.as_str().unwrap()));
        let cluster_scoped = obj["kind"].as_str().unwrap().starts_with("Cluster");
        if cluster_scoped {
            assert!(obj["metadata"].get("namespace").is_none(), "{file}");
        } else {
            assert_eq!(obj["metadata"]["namespace"], manifests::NAMESPACE, "{file}");
        }
        obj["metadata"].as_object_mut().unwrap().remove("namespace");
        let (bundle_file, _) = manifests::bundle_object(obj.clone());
        let mut in_bundle = yaml(&format!("bundle/manifests/{bundle_file}"));
        // The one difference: on OpenShift Prometheus verifies the service-ca certificate;
        // with kustomize the pods' certificate is self-signed unless the user provides one.
        if obj["kind"] == "ServiceMonitor" {
            let endpoint = &mut in_bundle["spec"]["endpoints"][0];
            assert_eq!(endpoint["tlsConfig"]["caFile"], monitoring::SERVICE_CA_FILE);
            assert_eq!(
                obj["spec"]["endpoints"][0]["tlsConfig"],
                json!({"insecureSkipVerify": true})
            );
            endpoint["tlsConfig"] = obj["spec"]["endpoints"][0]["tlsConfig"].clone();
        }
        assert_eq!(
            in_bundle, obj,
            "bundle/manifests/{bundle_file} differs from {file}"
        );
    }
    for entry in std::fs::read_dir(root().join("bundle/manifests")).unwrap() {
        let file = entry.unwrap().file_name().into_string().unwrap();
        let obj = yaml(&format!("bundle/manifests/{file}"));
        if obj["kind"] != "ClusterServiceVersion" && obj["kind"] != "CustomResourceDefinition" {
            assert!(obj["metadata"].get("namespace").is_none(), "{file}");
        }
    }
}

/// Prometheus may read what service discovery needs in the install's namespace, and nothing
/// more: the accounts of OpenShift's cluster monitoring and of kube-prometheus.
#[test]
fn prometheus_rbac_is_read_only_discovery() {
    let role = yaml("config/prometheus/role.yaml");
    for rule in rules(&role["rules"]) {
        assert_eq!(rule.verbs, ["get", "list", "watch"], "{rule:?}");
        for r in rule.resources.unwrap() {
            assert!(
                ["services", "endpoints", "pods", "endpointslices"].contains(&r.as_str()),
                "{r}"
            );
        }
    }
    let binding = yaml("config/prometheus/role_binding.yaml");
    assert_eq!(binding["roleRef"]["kind"], "Role");
    assert_eq!(binding["roleRef"]["name"], role["metadata"]["name"]);
    let subjects: Vec<(&str, &str)> = binding["subjects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["namespace"].as_str().unwrap(),
                s["name"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        subjects,
        [
            ("openshift-monitoring", "prometheus-k8s"),
            ("monitoring", "prometheus-k8s")
        ]
    );
}

/// The documents `kubectl kustomize DIR` renders (DIR relative to the repository root).
fn kustomize(dir: &str) -> Vec<Value> {
    let out = Command::new("kubectl")
        .args(["kustomize"])
        .arg(root().join(dir))
        .output()
        .unwrap_or_else(|e| {
            panic!("kubectl with kustomize is required to test config/ (the machine image ships it): {e}")
        });
    assert!(
        out.status.success(),
        "kubectl kustomize {dir}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    serde_yaml::Deserializer::from_str(&text)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .collect()
}

#[test]
fn kustomize_renders_the_default_install() {
    let docs = kustomize("config/default");
    let count = |kind: &str| docs.iter().filter(|d| d["kind"] == kind).count();
    assert_eq!(count("CustomResourceDefinition"), 4);
    assert_eq!(count("Namespace"), 1);
    for kind in [
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
        "Service",
    ] {
        assert_eq!(count(kind), 1, "{kind}");
    }
    let deployment = docs
        .iter()
        .find(|d| d["kind"] == "Deployment")
        .expect("a Deployment");
    assert_eq!(deployment["metadata"]["name"], "lvms-operator");
    assert_eq!(deployment["metadata"]["namespace"], "openshift-storage");
    let cr = docs.iter().find(|d| d["kind"] == "ClusterRole").unwrap();
    assert_eq!(rules(&cr["rules"]), operator_cluster_rules());
}

#[test]
fn kustomize_renders_the_prometheus_overlay() {
    let docs = kustomize("config/prometheus");
    let mut kinds: Vec<&str> = docs.iter().map(|d| d["kind"].as_str().unwrap()).collect();
    kinds.sort();
    assert_eq!(
        kinds,
        [
            "ClusterRole",
            "ClusterRoleBinding",
            "PrometheusRule",
            "Role",
            "RoleBinding",
            "Service",
            "ServiceMonitor",
            "ServiceMonitor"
        ]
    );
    for d in &docs {
        if !d["kind"].as_str().unwrap().starts_with("Cluster") {
            assert_eq!(d["metadata"]["namespace"], manifests::NAMESPACE);
        }
        // A ServiceMonitor without namespaceSelector looks in its own namespace, wherever the
        // overlay puts it.
        assert!(d["spec"].get("namespaceSelector").is_none());
    }
}

#[test]
fn vg_manager_metrics_are_scraped_where_the_agents_serve_them() {
    use lvms_operator::resources::vg_manager::daemon_set;
    // The alerts read topolvm_* gauges, which only the node agents serve.
    let cluster: lvms_api::LVMCluster = serde_yaml::from_str(
        &std::fs::read_to_string(root().join("config/samples/lvm_v1alpha1_lvmcluster.yaml"))
            .unwrap(),
    )
    .unwrap();
    let ds = daemon_set(&cluster, &lvms_operator::config::Config::default());
    let pod = ds.spec.unwrap().template;
    let pod_labels = pod.metadata.unwrap().labels.unwrap();
    let service = yaml("config/prometheus/vg_manager_service.yaml");
    for (k, v) in service["spec"]["selector"].as_object().unwrap() {
        assert_eq!(
            pod_labels.get(k).map(String::as_str),
            v.as_str(),
            "selector {k} must match the vg-manager pods"
        );
    }
    let agent = &pod.spec.unwrap().containers[0];
    let port = agent
        .ports
        .as_ref()
        .unwrap()
        .iter()
        .find(|p| p.name.as_deref() == Some("https-metrics"))
        .expect("the agent names its metrics port");
    assert_eq!(service["spec"]["ports"][0]["targetPort"], "https-metrics");
    assert_eq!(service["spec"]["ports"][0]["port"], port.container_port);
    let monitor = yaml("config/prometheus/vg_manager_service_monitor.yaml");
    assert_eq!(monitor["spec"]["endpoints"][0]["port"], "https-metrics");
    for (k, v) in monitor["spec"]["selector"]["matchLabels"]
        .as_object()
        .unwrap()
    {
        assert_eq!(
            &service["metadata"]["labels"][k], v,
            "the monitor selects the service"
        );
    }
}

/// Prometheus scrapes over HTTPS with its token; the Service asks service-ca for the certificate
/// the pods mount; the bundle's monitor verifies it for the Service's name.
#[test]
fn metrics_are_scraped_over_tls_with_a_token() {
    for (monitor, service, pods) in [
        (
            "service_monitor.yaml",
            "config/manager/service.yaml",
            manifests::deployment_spec().template.spec.unwrap(),
        ),
        (
            "vg_manager_service_monitor.yaml",
            "config/prometheus/vg_manager_service.yaml",
            {
                let cluster: lvms_api::LVMCluster =
                    serde_yaml::from_str(&read("config/samples/lvm_v1alpha1_lvmcluster.yaml"))
                        .unwrap();
                lvms_operator::resources::vg_manager::daemon_set(
                    &cluster,
                    &lvms_operator::config::Config::default(),
                )
                .spec
                .unwrap()
                .template
                .spec
                .unwrap()
            },
        ),
    ] {
        let service = yaml(service);
        let name = service["metadata"]["name"].as_str().unwrap();
        let endpoint =
            yaml(&format!("config/prometheus/{monitor}"))["spec"]["endpoints"][0].clone();
        assert_eq!(endpoint["scheme"], "https", "{monitor}");
        assert_eq!(
            endpoint["bearerTokenFile"],
            "/var/run/secrets/kubernetes.io/serviceaccount/token"
        );
        let (bundle_file, _) =
            manifests::bundle_object(yaml(&format!("config/prometheus/{monitor}")));
        let bundled = yaml(&format!("bundle/manifests/{bundle_file}"));
        assert_eq!(
            bundled["spec"]["endpoints"][0]["tlsConfig"]["serverName"],
            format!("{name}.{}.svc", manifests::NAMESPACE)
        );
        let secret = service["metadata"]["annotations"]
            ["service.beta.openshift.io/serving-cert-secret-name"]
            .as_str()
            .unwrap_or_else(|| panic!("{name} asks service-ca for no certificate"));
        let volume = pods
            .volumes
            .as_ref()
            .unwrap()
            .iter()
            .find(|v| v.secret.as_ref().and_then(|s| s.secret_name.as_deref()) == Some(secret))
            .unwrap_or_else(|| panic!("the pods behind {name} do not mount {secret}"));
        assert_eq!(volume.secret.as_ref().unwrap().optional, Some(true));
        let container = &pods.containers[0];
        let mount = container
            .volume_mounts
            .as_ref()
            .unwrap()
            .iter()
            .find(|m| m.name == volume.name)
            .unwrap();
        let args = container.args.as_ref().unwrap();
        assert!(
            args.contains(&format!("--metrics-cert-dir={}", mount.mount_path)),
            "{args:?}"
        );
        assert!(!args.iter().any(|a| a == "--metrics-insecure"), "{args:?}");
    }
}
