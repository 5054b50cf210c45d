//! The in-process client: deletion preconditions (only the object they name goes), and the
//! hook that changes the world between two requests.

use api_double::ApiDouble;
use http::Method;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use serde_json::json;

const CM: &str = "api/v1/configmaps";

fn guarded(uid: Option<String>, resource_version: Option<String>) -> DeleteParams {
    DeleteParams {
        preconditions: Some(Preconditions {
            uid,
            resource_version,
        }),
        ..Default::default()
    }
}

fn conflict(r: kube::Result<impl std::fmt::Debug>) -> String {
    match r {
        Err(kube::Error::Api(s)) if s.code == 409 => s.message,
        other => panic!("expected 409, got {other:?}"),
    }
}

#[tokio::test(flavor = "current_thread")]
async fn preconditions_protect_another_object_of_the_same_name() {
    let api = ApiDouble::new();
    let cms: Api<ConfigMap> = Api::namespaced(api.client(), "default");
    let mut obj = ConfigMap::default();
    obj.metadata.name = Some("c".into());
    let old = cms.create(&PostParams::default(), &obj).await.unwrap();
    // Re-created under the same name: the old uid no longer matches.
    cms.delete("c", &DeleteParams::default()).await.unwrap();
    let new = cms.create(&PostParams::default(), &obj).await.unwrap();
    let message = conflict(cms.delete("c", &guarded(old.uid(), None)).await);
    assert!(message.contains("Precondition failed: UID"), "{message}");
    assert!(api.get(CM, Some("default"), "c").is_some(), "kept");

    // Changed since it was read: the resourceVersion no longer matches.
    let changed = cms
        .patch(
            "c",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"k": "v"}})),
        )
        .await
        .unwrap();
    conflict(
        cms.delete("c", &guarded(new.uid(), new.resource_version()))
            .await,
    );
    assert!(api.get(CM, Some("default"), "c").is_some(), "kept");

    cms.delete("c", &guarded(changed.uid(), changed.resource_version()))
        .await
        .unwrap();
    assert!(api.get(CM, Some("default"), "c").is_none());
    assert!(
        cms.get_opt("c").await.unwrap().is_none(),
        "a GET answers 404"
    );
}

#[tokio::test(flavor = "current_thread")]
async fn the_hook_runs_before_each_request_is_answered() {
    let api = ApiDouble::new();
    let world = api.clone();
    // A ConfigMap appears just before anyone GETs it by name (and never on a list).
    let client = api.client_with_hook(move |method, path| {
        if method == Method::GET
            && path == "/api/v1/namespaces/default/configmaps/late"
            && world.get(CM, Some("default"), "late").is_none()
        {
            world.seed(
                CM,
                json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "late", "namespace": "default"}}),
            );
        }
    });
    let cms: Api<ConfigMap> = Api::namespaced(client, "default");
    assert!(
        cms.list(&Default::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );
    assert_eq!(cms.get("late").await.unwrap().name_any(), "late");
}

#[tokio::test(flavor = "current_thread")]
async fn a_deletion_held_by_a_finalizer_answers_the_object_at_its_new_version() {
    let api = ApiDouble::new();
    let cms: Api<ConfigMap> = Api::namespaced(api.client(), "default");
    let mut obj = ConfigMap::default();
    obj.metadata.name = Some("held".into());
    obj.metadata.finalizers = Some(vec!["test.io/keep".into()]);
    cms.create(&PostParams::default(), &obj).await.unwrap();
    let deleting = cms
        .delete("held", &DeleteParams::default())
        .await
        .unwrap()
        .left()
        .expect("the object, still there");
    assert!(deleting.metadata.deletion_timestamp.is_some());
    assert_eq!(
        deleting.resource_version().as_deref(),
        api.get(CM, Some("default"), "held").unwrap()["metadata"]["resourceVersion"].as_str()
    );
    // Its finalizer released at that version: gone, and a GET answers 404.
    cms.patch(
        "held",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null, "resourceVersion": deleting.resource_version()}})),
    )
    .await
    .unwrap();
    assert!(cms.get_opt("held").await.unwrap().is_none());
}
