//! Watches through the in-process client: raw `Api::watch` streams (exact event types) and
//! `kube::runtime` watchers and reflectors (what the controllers use).

use std::time::{Duration, Instant};

use api_double::ApiDouble;
use futures::stream::BoxStream;
use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, Node};
use kube::api::{
    Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams,
};
use kube::runtime::{reflector, watcher};
use kube::{Resource, ResourceExt};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio::time::timeout;

/// Long enough for anything the double does; a broken watch fails here instead of hanging.
const WAIT: Duration = Duration::from_secs(10);
/// How long "no further event" is given to prove itself.
const QUIET: Duration = Duration::from_millis(300);

const CM: &str = "api/v1/configmaps";

fn cm_json(name: &str, namespace: &str, labels: Value) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
    })
}

fn cm(name: &str, labels: Value) -> ConfigMap {
    serde_json::from_value(cm_json(name, "default", labels)).unwrap()
}

fn rv<K: Resource>(obj: &K) -> u64 {
    obj.meta()
        .resource_version
        .as_deref()
        .expect("a resourceVersion")
        .parse()
        .unwrap()
}

type Events<K> = BoxStream<'static, kube::Result<WatchEvent<K>>>;

async fn open<K>(api: &Api<K>, wp: &WatchParams, version: &str) -> Events<K>
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    timeout(WAIT, api.watch(wp, version))
        .await
        .expect("the watch answers")
        .expect("the watch opens")
        .boxed()
}

/// The next event as (type, name, resourceVersion); bookmarks have no name.
async fn next<K: Resource>(
    s: &mut (impl Stream<Item = kube::Result<WatchEvent<K>>> + Unpin),
) -> (&'static str, String, u64) {
    let event = timeout(WAIT, s.next())
        .await
        .expect("an event in time")
        .expect("the watch still open")
        .expect("a watch event");
    let (kind, obj) = match event {
        WatchEvent::Added(o) => ("ADDED", o),
        WatchEvent::Modified(o) => ("MODIFIED", o),
        WatchEvent::Deleted(o) => ("DELETED", o),
        WatchEvent::Bookmark(b) => {
            return (
                "BOOKMARK",
                String::new(),
                b.metadata.resource_version.parse().unwrap(),
            );
        }
        WatchEvent::Error(e) => panic!("unexpected ERROR event {e:?}"),
    };
    let name = obj.meta().name.clone().unwrap_or_default();
    (kind, name, rv(&obj))
}

async fn next_named<K: Resource>(
    s: &mut (impl Stream<Item = kube::Result<WatchEvent<K>>> + Unpin),
) -> (&'static str, String) {
    let (kind, name, _) = next(s).await;
    (kind, name)
}

/// Proves nothing more arrives for a while (a filtered-out change, say).
async fn quiet<T>(s: &mut (impl Stream<Item = T> + Unpin)) {
    assert!(
        timeout(QUIET, s.next()).await.is_err(),
        "an unexpected event or end of stream"
    );
}

/// A `kube::runtime` watcher (behind a reflector) polled by its own task, as a controller does.
fn spawn_watcher(
    api: Api<ConfigMap>,
    config: watcher::Config,
) -> (
    reflector::Store<ConfigMap>,
    mpsc::UnboundedReceiver<watcher::Result<watcher::Event<ConfigMap>>>,
) {
    let (store, writer) = reflector::store();
    let (tx, rx) = mpsc::unbounded_channel();
    let mut stream = reflector::reflector(writer, watcher(api, config)).boxed();
    tokio::spawn(async move {
        while let Some(event) = stream.next().await {
            if tx.send(event).is_err() {
                break;
            }
        }
    });
    (store, rx)
}

fn summary(event: &watcher::Event<ConfigMap>) -> (&'static str, String) {
    match event {
        watcher::Event::Init => ("Init", String::new()),
        watcher::Event::InitApply(o) => ("InitApply", o.name_any()),
        watcher::Event::InitDone => ("InitDone", String::new()),
        watcher::Event::Apply(o) => ("Apply", o.name_any()),
        watcher::Event::Delete(o) => ("Delete", o.name_any()),
    }
}

async fn recv(
    rx: &mut mpsc::UnboundedReceiver<watcher::Result<watcher::Event<ConfigMap>>>,
) -> watcher::Event<ConfigMap> {
    timeout(WAIT, rx.recv())
        .await
        .expect("a watcher event in time")
        .expect("the watcher still running")
        .expect("no watcher error")
}

#[tokio::test]
async fn watcher_sees_create_modify_delete_in_order() {
    let api = ApiDouble::new();
    let cms: Api<ConfigMap> = Api::namespaced(api.client(), "default");
    let (store, mut rx) = spawn_watcher(cms.clone(), watcher::Config::default());
    assert_eq!(summary(&recv(&mut rx).await).0, "Init");
    assert_eq!(summary(&recv(&mut rx).await).0, "InitDone");

    let mut a = cm("a", json!({"app": "x"}));
    a.metadata.finalizers = Some(vec!["test.io/keep".into()]);
    let created = cms.create(&PostParams::default(), &a).await.unwrap();
    let event = recv(&mut rx).await;
    assert_eq!(summary(&event), ("Apply", "a".into()));
    let watcher::Event::Apply(seen) = event else {
        unreachable!()
    };
    assert_eq!(seen.resource_version(), created.resource_version());

    let patched = cms
        .patch(
            "a",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"k": "v"}})),
        )
        .await
        .unwrap();
    let event = recv(&mut rx).await;
    let watcher::Event::Apply(seen) = event else {
        panic!("expected Apply, got {:?}", summary(&event));
    };
    assert_eq!(seen.data.as_ref().unwrap()["k"], "v");
    assert_eq!(seen.resource_version(), patched.resource_version());
    assert!(rv(&patched) > rv(&created));
    // The reflector's store follows.
    let in_store = store.state();
    assert_eq!(in_store.len(), 1);
    assert_eq!(in_store[0].data.as_ref().unwrap()["k"], "v");

    // Deleting an object with a finalizer only marks it: MODIFIED with a deletionTimestamp.
    cms.delete("a", &DeleteParams::default()).await.unwrap();
    let event = recv(&mut rx).await;
    let watcher::Event::Apply(seen) = event else {
        panic!("expected Apply, got {:?}", summary(&event));
    };
    assert!(seen.metadata.deletion_timestamp.is_some());
    let marked = rv(&seen);
    assert!(marked > rv(&patched));

    // Its finalizer gone, it is DELETED.
    cms.patch(
        "a",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .unwrap();
    let event = recv(&mut rx).await;
    let watcher::Event::Delete(seen) = event else {
        panic!("expected Delete, got {:?}", summary(&event));
    };
    assert_eq!(seen.name_any(), "a");
    assert!(rv(&seen) > marked, "DELETED carries a new resourceVersion");
    assert!(store.state().is_empty());
    assert!(api.get(CM, Some("default"), "a").is_none());
    assert!(timeout(QUIET, rx.recv()).await.is_err(), "no further event");
}

#[tokio::test]
async fn label_and_field_selectors_filter_events() {
    let api = ApiDouble::new();
    let cms: Api<ConfigMap> = Api::namespaced(api.client(), "default");
    let mut by_label = open(&cms, &WatchParams::default().labels("app=x"), "0").await;
    let mut by_set = open(&cms, &WatchParams::default().labels("app in (x,z)"), "0").await;
    let mut by_name = open(&cms, &WatchParams::default().fields("metadata.name=b"), "0").await;
    let mut unlabeled = open(&cms, &WatchParams::default().labels("!app"), "0").await;

    api.seed(CM, cm_json("a", "default", json!({"app": "x"})));
    api.seed(CM, cm_json("b", "default", json!({"app": "y"})));
    assert_eq!(next_named(&mut by_label).await, ("ADDED", "a".into()));
    assert_eq!(next_named(&mut by_set).await, ("ADDED", "a".into()));
    assert_eq!(next_named(&mut by_name).await, ("ADDED", "b".into()));

    // b enters the selection: ADDED for the label watch. a leaves it: DELETED.
    api.patch(
        CM,
        Some("default"),
        "b",
        json!({"metadata": {"labels": {"app": "x"}}}),
    );
    api.patch(
        CM,
        Some("default"),
        "a",
        json!({"metadata": {"labels": {"app": "z"}}}),
    );
    assert_eq!(next_named(&mut by_label).await, ("ADDED", "b".into()));
    assert_eq!(next_named(&mut by_label).await, ("DELETED", "a".into()));
    assert_eq!(next_named(&mut by_set).await, ("ADDED", "b".into()));
    assert_eq!(next_named(&mut by_set).await, ("MODIFIED", "a".into()));
    assert_eq!(next_named(&mut by_name).await, ("MODIFIED", "b".into()));
    quiet(&mut by_label).await;
    quiet(&mut by_set).await;
    quiet(&mut by_name).await;
    quiet(&mut unlabeled).await;

    // A watcher with a field selector lists with it first, then watches with it.
    let (store, mut rx) = spawn_watcher(
        cms.clone(),
        watcher::Config::default().fields("metadata.name=b"),
    );
    let mut seen = Vec::new();
    loop {
        let s = summary(&recv(&mut rx).await);
        let done = s.0 == "InitDone";
        seen.push(s);
        if done {
            break;
        }
    }
    assert_eq!(
        seen,
        [
            ("Init", String::new()),
            ("InitApply", "b".into()),
            ("InitDone", String::new())
        ]
    );
    api.patch(CM, Some("default"), "a", json!({"data": {"k": "1"}}));
    api.patch(CM, Some("default"), "b", json!({"data": {"k": "2"}}));
    assert_eq!(summary(&recv(&mut rx).await), ("Apply", "b".into()));
    assert!(
        timeout(QUIET, rx.recv()).await.is_err(),
        "a is filtered out"
    );
    assert_eq!(store.state().len(), 1);

    // Lists take field selectors too.
    let listed = cms
        .list(&ListParams::default().fields("metadata.name!=b"))
        .await
        .unwrap();
    let names: Vec<String> = listed.items.iter().map(|c| c.name_any()).collect();
    assert_eq!(names, ["a"]);
}

#[tokio::test]
async fn namespaced_all_namespaces_and_cluster_scoped_watches() {
    let api = ApiDouble::new();
    let client = api.client();
    let default: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let all: Api<ConfigMap> = Api::all(client.clone());
    let nodes: Api<Node> = Api::all(client);
    let mut in_default = open(&default, &WatchParams::default(), "0").await;
    let mut everywhere = open(&all, &WatchParams::default(), "0").await;
    let mut node_events = open(&nodes, &WatchParams::default(), "0").await;

    api.seed(CM, cm_json("a", "other", json!({})));
    api.seed(CM, cm_json("b", "default", json!({})));
    api.seed(
        "api/v1/nodes",
        json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"}}),
    );
    assert_eq!(next_named(&mut in_default).await, ("ADDED", "b".into()));
    assert_eq!(next_named(&mut everywhere).await, ("ADDED", "a".into()));
    assert_eq!(next_named(&mut everywhere).await, ("ADDED", "b".into()));
    assert_eq!(next_named(&mut node_events).await, ("ADDED", "n1".into()));
    quiet(&mut in_default).await;
    quiet(&mut everywhere).await;
    quiet(&mut node_events).await;
}

#[tokio::test]
async fn watch_from_resource_version_replays_only_later_changes() {
    let api = ApiDouble::new();
    let cms: Api<ConfigMap> = Api::namespaced(api.client(), "default");
    api.seed(CM, cm_json("a", "default", json!({})));
    api.seed(CM, cm_json("b", "default", json!({})));
    let listed = cms.list(&ListParams::default()).await.unwrap();
    let at = listed
        .metadata
        .resource_version
        .expect("a list carries its resourceVersion");
    assert_eq!(listed.items.len(), 2);

    api.patch(CM, Some("default"), "a", json!({"data": {"k": "1"}}));
    cms.create(&PostParams::default(), &cm("c", json!({})))
        .await
        .unwrap();
    cms.delete("b", &DeleteParams::default()).await.unwrap();

    let mut events = open(&cms, &WatchParams::default(), &at).await;
    let replayed = [
        next(&mut events).await,
        next(&mut events).await,
        next(&mut events).await,
    ];
    let kinds: Vec<(&str, &str)> = replayed.iter().map(|(k, n, _)| (*k, n.as_str())).collect();
    assert_eq!(kinds, [("MODIFIED", "a"), ("ADDED", "c"), ("DELETED", "b")]);
    assert!(replayed.iter().all(|(_, _, v)| *v > at.parse().unwrap()));
    assert!(replayed.windows(2).all(|w| w[0].2 < w[1].2), "in order");
    quiet(&mut events).await;

    // Then live changes.
    api.patch(CM, Some("default"), "c", json!({"data": {"k": "2"}}));
    assert_eq!(next_named(&mut events).await, ("MODIFIED", "c".into()));

    // Without a resourceVersion: the current objects as ADDED, then live changes only.
    let mut fresh = open(&cms, &WatchParams::default(), "0").await;
    let mut initial = vec![next_named(&mut fresh).await, next_named(&mut fresh).await];
    initial.sort();
    assert_eq!(initial, [("ADDED", "a".into()), ("ADDED", "c".into())]);
    quiet(&mut fresh).await;
}

#[tokio::test]
async fn expired_resource_version_gets_410_and_the_watcher_relists() {
    let api = ApiDouble::with_event_history(3);
    let cms: Api<ConfigMap> = Api::namespaced(api.client(), "default");
    let x = api.seed(CM, cm_json("x", "default", json!({})));
    let old = x["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string();
    for i in 0..5 {
        api.patch(
            CM,
            Some("default"),
            "x",
            json!({"data": {"i": i.to_string()}}),
        );
    }
    // A raw watch from there: one ERROR event, 410 Expired, and the stream ends.
    let mut events = open(&cms, &WatchParams::default(), &old).await;
    match timeout(WAIT, events.next()).await.unwrap() {
        Some(Ok(WatchEvent::Error(status))) => {
            assert_eq!((status.code, status.reason.as_str()), (410, "Expired"));
        }
        other => panic!("expected a 410 ERROR event, got {other:?}"),
    }
    assert!(timeout(WAIT, events.next()).await.unwrap().is_none());
    // The recent past is still there.
    let current: u64 = api.get(CM, Some("default"), "x").unwrap()["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let mut recent = open(&cms, &WatchParams::default(), &(current - 1).to_string()).await;
    assert_eq!(next(&mut recent).await, ("MODIFIED", "x".into(), current));

    // A watcher lists, then (polled again only later) watches from the listed resourceVersion,
    // which has expired meanwhile: it gets the 410 and lists again, finding what it missed.
    let mut w = watcher(cms.clone(), watcher::Config::default()).boxed();
    let mut step = async || {
        let event = timeout(WAIT, w.next())
            .await
            .expect("in time")
            .expect("open");
        event.map(|e| summary(&e))
    };
    assert_eq!(step().await.unwrap().0, "Init");
    assert_eq!(step().await.unwrap(), ("InitApply", "x".into()));
    assert_eq!(step().await.unwrap().0, "InitDone");
    api.seed(CM, cm_json("late", "default", json!({})));
    for i in 0..5 {
        api.patch(
            CM,
            Some("default"),
            "x",
            json!({"data": {"j": i.to_string()}}),
        );
    }
    match step().await {
        Err(watcher::Error::WatchError(status)) => assert_eq!(status.code, 410),
        other => panic!("expected the 410 watch error, got {other:?}"),
    }
    let mut relisted = Vec::new();
    loop {
        let s = step().await.expect("the relist succeeds");
        let done = s.0 == "InitDone";
        relisted.push(s);
        if done {
            break;
        }
    }
    assert_eq!(
        relisted,
        [
            ("Init", String::new()),
            ("InitApply", "late".into()),
            ("InitApply", "x".into()),
            ("InitDone", String::new()),
        ]
    );
}

#[tokio::test]
async fn compact_expires_earlier_resource_versions() {
    let api = ApiDouble::new();
    let cms: Api<ConfigMap> = Api::namespaced(api.client(), "default");
    let a = api.seed(CM, cm_json("a", "default", json!({})));
    let before = a["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string();
    api.patch(CM, Some("default"), "a", json!({"data": {"k": "1"}}));
    let now = cms
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    api.compact();
    let mut events = open(&cms, &WatchParams::default(), &before).await;
    assert!(matches!(
        timeout(WAIT, events.next()).await.unwrap(),
        Some(Ok(WatchEvent::Error(s))) if s.code == 410
    ));
    // Nothing was missed from the current resourceVersion: that watch works.
    let mut events = open(&cms, &WatchParams::default(), &now).await;
    api.patch(CM, Some("default"), "a", json!({"data": {"k": "2"}}));
    assert_eq!(next_named(&mut events).await, ("MODIFIED", "a".into()));
}

#[tokio::test]
async fn watch_with_timeout_ends_by_itself() {
    let api = ApiDouble::new();
    let cms: Api<ConfigMap> = Api::namespaced(api.client(), "default");
    api.seed(CM, cm_json("a", "default", json!({})));
    let at = cms
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    let started = Instant::now();
    let mut events = open(&cms, &WatchParams::default().timeout(1), &at).await;
    // With bookmarks allowed (kube's default), the watch ends with a BOOKMARK at its position.
    assert_eq!(
        next(&mut events).await,
        ("BOOKMARK", String::new(), at.parse().unwrap())
    );
    assert!(
        timeout(WAIT, events.next())
            .await
            .expect("ends in time")
            .is_none(),
        "the stream ends"
    );
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(900), "ended after {took:?}");

    let mut silent = open(
        &cms,
        &WatchParams::default().timeout(1).disable_bookmarks(),
        &at,
    )
    .await;
    assert!(
        timeout(WAIT, silent.next())
            .await
            .expect("ends in time")
            .is_none()
    );
}

#[tokio::test]
async fn deleting_with_finalizers_modifies_then_deletes() {
    let api = ApiDouble::new();
    let cms: Api<ConfigMap> = Api::namespaced(api.client(), "default");
    let mut obj = cm("f", json!({}));
    obj.metadata.finalizers = Some(vec!["test.io/keep".into()]);
    let created = cms.create(&PostParams::default(), &obj).await.unwrap();
    let mut events = open(
        &cms,
        &WatchParams::default(),
        &created.resource_version().unwrap(),
    )
    .await;

    cms.delete("f", &DeleteParams::default()).await.unwrap();
    let Some(Ok(WatchEvent::Modified(marked))) = timeout(WAIT, events.next()).await.unwrap() else {
        panic!("expected MODIFIED");
    };
    assert!(marked.metadata.deletion_timestamp.is_some());
    assert_eq!(marked.finalizers(), ["test.io/keep"]);
    assert!(api.get(CM, Some("default"), "f").is_some(), "still there");
    // Deleting again changes nothing.
    cms.delete("f", &DeleteParams::default()).await.unwrap();
    quiet(&mut events).await;

    let mut without = marked.clone();
    without.metadata.finalizers = None;
    cms.replace("f", &PostParams::default(), &without)
        .await
        .unwrap();
    let Some(Ok(WatchEvent::Deleted(gone))) = timeout(WAIT, events.next()).await.unwrap() else {
        panic!("expected DELETED");
    };
    assert_eq!(gone.name_any(), "f");
    assert!(rv(&gone) > rv(&marked));
    assert!(api.get(CM, Some("default"), "f").is_none());
    quiet(&mut events).await;
}

#[tokio::test]
async fn every_mutation_emits_its_event() {
    let api = ApiDouble::new();
    let cms: Api<ConfigMap> = Api::namespaced(api.client(), "default");
    let mut events = open(&cms, &WatchParams::default(), "0").await;

    // seed, the test helper patch.
    let owner = api.seed(CM, cm_json("owner", "default", json!({})));
    assert_eq!(next_named(&mut events).await, ("ADDED", "owner".into()));
    api.patch(CM, Some("default"), "owner", json!({"data": {"k": "1"}}));
    assert_eq!(next_named(&mut events).await, ("MODIFIED", "owner".into()));

    // Server-side apply creating, then updating; a JSON patch; a replace.
    let pp = PatchParams::apply("test").force();
    let apply = |v: &str| {
        Patch::Apply(json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "applied", "ownerReferences": [{
                "apiVersion": "v1", "kind": "ConfigMap", "name": "owner",
                "uid": owner["metadata"]["uid"],
            }]},
            "data": {"k": v},
        }))
    };
    cms.patch("applied", &pp, &apply("1")).await.unwrap();
    assert_eq!(next_named(&mut events).await, ("ADDED", "applied".into()));
    cms.patch("applied", &pp, &apply("2")).await.unwrap();
    assert_eq!(
        next_named(&mut events).await,
        ("MODIFIED", "applied".into())
    );
    cms.patch(
        "applied",
        &PatchParams::default(),
        &Patch::Json::<()>(
            serde_json::from_value(json!([{"op": "add", "path": "/data/j", "value": "3"}]))
                .unwrap(),
        ),
    )
    .await
    .unwrap();
    assert_eq!(
        next_named(&mut events).await,
        ("MODIFIED", "applied".into())
    );
    let mut current = cms.get("applied").await.unwrap();
    current
        .data
        .get_or_insert_default()
        .insert("r".into(), "4".into());
    cms.replace("applied", &PostParams::default(), &current)
        .await
        .unwrap();
    let (kind, name, version) = next(&mut events).await;
    assert_eq!((kind, name.as_str()), ("MODIFIED", "applied"));
    assert_eq!(
        version.to_string(),
        cms.get("applied")
            .await
            .unwrap()
            .resource_version()
            .unwrap()
    );

    // Removing the owner removes what it owns (garbage collection): two DELETED events.
    cms.delete("owner", &DeleteParams::default()).await.unwrap();
    assert_eq!(next_named(&mut events).await, ("DELETED", "owner".into()));
    assert_eq!(next_named(&mut events).await, ("DELETED", "applied".into()));
    quiet(&mut events).await;
}

/// As in the API server, a write that changes nothing (a re-apply of the same object, an empty
/// merge patch, a replace with what is stored) keeps the resourceVersion and emits no event: a
/// controller that re-applies what it watches must not wake itself.
#[tokio::test]
async fn writes_that_change_nothing_are_silent() {
    let api = ApiDouble::new();
    let cms: Api<ConfigMap> = Api::namespaced(api.client(), "default");
    let pp = PatchParams::apply("test").force();
    let body = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a"}, "data": {"k": "1"}});
    let created = cms.patch("a", &pp, &Patch::Apply(&body)).await.unwrap();
    let mut events = open(
        &cms,
        &WatchParams::default(),
        &created.resource_version().unwrap(),
    )
    .await;

    let again = cms.patch("a", &pp, &Patch::Apply(&body)).await.unwrap();
    assert_eq!(again.resource_version(), created.resource_version());
    let merged = cms
        .patch(
            "a",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"k": "1"}})),
        )
        .await
        .unwrap();
    assert_eq!(merged.resource_version(), created.resource_version());
    let replaced = cms
        .replace("a", &PostParams::default(), &created)
        .await
        .unwrap();
    assert_eq!(replaced.resource_version(), created.resource_version());
    quiet(&mut events).await;

    // A real change still is one.
    let changed = cms
        .patch("a", &pp, &Patch::Apply(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a"}, "data": {"k": "2"}})))
        .await
        .unwrap();
    assert!(rv(&changed) > rv(&created));
    assert_eq!(next_named(&mut events).await, ("MODIFIED", "a".into()));
}

#[tokio::test]
async fn a_watcher_that_falls_behind_catches_up_from_history() {
    let api = ApiDouble::new();
    let cms: Api<ConfigMap> = Api::namespaced(api.client(), "default");
    api.seed(CM, cm_json("a", "default", json!({})));
    let at = cms
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    let mut events = open(&cms, &WatchParams::default(), &at).await;
    // More changes than the broadcast channel holds (but fewer than the history) while the
    // watch is not read: it must still see every one, in order.
    let n = 2000;
    for i in 0..n {
        api.patch(
            CM,
            Some("default"),
            "a",
            json!({"data": {"i": i.to_string()}}),
        );
    }
    let mut last = at.parse::<u64>().unwrap();
    for _ in 0..n {
        let (kind, _, version) = next(&mut events).await;
        assert_eq!(kind, "MODIFIED");
        assert_eq!(version, last + 1, "no change skipped");
        last = version;
    }
    quiet(&mut events).await;

    // Fallen behind further than the history reaches: 410.
    let api = ApiDouble::with_event_history(100);
    let cms: Api<ConfigMap> = Api::namespaced(api.client(), "default");
    api.seed(CM, cm_json("a", "default", json!({})));
    let mut events = open(&cms, &WatchParams::default(), "0").await;
    assert_eq!(next_named(&mut events).await, ("ADDED", "a".into()));
    for i in 0..n {
        api.patch(
            CM,
            Some("default"),
            "a",
            json!({"data": {"i": i.to_string()}}),
        );
    }
    let mut modified = 0;
    loop {
        match timeout(WAIT, events.next()).await.expect("in time") {
            Some(Ok(WatchEvent::Modified(_))) => modified += 1,
            Some(Ok(WatchEvent::Error(status))) => {
                assert_eq!(status.code, 410);
                break;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(modified < n);
    assert!(timeout(WAIT, events.next()).await.unwrap().is_none());
}
