//! `api-double-server --addr 127.0.0.1:PORT --kubeconfig FILE [--seed FILE.yaml]...`
//! Serves the API double over plain HTTP on loopback and writes a kubeconfig for it, so a real
//! binary (the operator) can run against it out of cluster. Watches stream their events as they
//! happen (each event line is flushed as one HTTP chunk). `--addr 127.0.0.1:0` picks a free port:
//! the kubeconfig and the log line name the one bound.

use std::sync::Arc;

use api_double::ApiDouble;

/// The resource path of the kinds a seed file may hold.
fn resource(api_version: &str, kind: &str) -> Option<String> {
    let plural = match kind {
        "Node" => "nodes",
        "Namespace" => "namespaces",
        "PersistentVolumeClaim" => "persistentvolumeclaims",
        "StorageClass" => "storageclasses",
        "CustomResourceDefinition" => "customresourcedefinitions",
        "LVMCluster" => "lvmclusters",
        "LVMVolumeGroup" => "lvmvolumegroups",
        "LVMVolumeGroupNodeStatus" => "lvmvolumegroupnodestatuses",
        _ => return None,
    };
    let prefix = if api_version.contains('/') {
        format!("apis/{api_version}")
    } else {
        format!("api/{api_version}")
    };
    Some(format!("{prefix}/{plural}"))
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let get = |flag: &str| {
        args.windows(2)
            .filter(|w| w[0] == flag)
            .map(|w| w[1].clone())
            .collect::<Vec<_>>()
    };
    let addr = get("--addr")
        .pop()
        .unwrap_or_else(|| "127.0.0.1:18080".into());
    let kubeconfig = get("--kubeconfig").pop().expect("--kubeconfig FILE");
    let api = Arc::new(ApiDouble::new());
    for file in get("--seed") {
        let text = std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{file}: {e}"));
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let v: serde_json::Value =
                serde::Deserialize::deserialize(doc).unwrap_or_else(|e| panic!("{file}: {e}"));
            if v.is_null() {
                continue;
            }
            let path = resource(
                v["apiVersion"].as_str().unwrap_or(""),
                v["kind"].as_str().unwrap_or(""),
            )
            .unwrap_or_else(|| panic!("{file}: cannot seed kind {}", v["kind"]));
            api.seed(&path, v);
        }
    }
    let listener = tokio::net::TcpListener::bind(&addr)
        .await
        .unwrap_or_else(|e| panic!("bind {addr}: {e}"));
    let addr = listener.local_addr().expect("the bound address");
    let config = api_double::served::kubeconfig(addr);
    // Written whole under another name, then renamed: a reader never sees half a kubeconfig.
    let partial = format!("{kubeconfig}.partial");
    std::fs::write(&partial, config).expect("writing the kubeconfig");
    std::fs::rename(&partial, &kubeconfig).expect("writing the kubeconfig");
    eprintln!("api-double-server: serving http://{addr}; kubeconfig {kubeconfig}");
    api_double::served::serve(api, listener).await;
}
