//! An in-process double of the Kubernetes API server, served to a real `kube::Client` through a
//! tower service: reconcilers run their real requests against it, and tests assert on the objects
//! it holds. It implements what our controllers use: get, list (label and field selectors),
//! create, replace (with resourceVersion conflicts), server-side apply (single manager), merge and
//! JSON patches, the status subresource, deletion with finalizers and preconditions (uid,
//! resourceVersion), owner-reference garbage collection, and watches.
//!
//! Watches (`GET <collection>?watch=true`) behave like the API server's, so `kube::runtime`
//! watchers, reflectors and controllers run against the double: every change is an ADDED,
//! MODIFIED (any update, deletionTimestamp included) or DELETED event with the object's new
//! resourceVersion; a watch from resourceVersion RV first replays the recorded changes after RV,
//! then streams live ones; without RV (or with `0`) it starts with ADDED events for the current
//! objects. Label and field selectors apply, and an object entering or leaving the selection is
//! ADDED or DELETED for that watch. The double keeps the last [`DEFAULT_EVENT_HISTORY`] changes
//! (see [`ApiDouble::with_event_history`] and [`ApiDouble::compact`]); a watch from an older RV
//! gets an ERROR event with a 410 Expired Status, as from the API server, and kube's watcher
//! lists again. A watch ends after `timeoutSeconds` (at most 290 s), with a BOOKMARK at its last
//! resourceVersion when `allowWatchBookmarks=true`, or when the client drops it.

mod review;
#[cfg(feature = "server")]
pub mod served;
mod watch;

use std::collections::{BTreeMap, VecDeque};
use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use kube::client::Body;
use serde_json::{Value, json};
use tokio::sync::broadcast;

use watch::EventType;

/// The body of the double's responses: whole for most requests, a stream of events for watches.
pub type ResponseBody = BoxBody<Bytes, Infallible>;

/// How many changes the double remembers for watches that start from a resourceVersion.
pub const DEFAULT_EVENT_HISTORY: usize = 4096;

/// (resource path such as `apis/apps/v1/daemonsets`, namespace, name).
type Key = (String, Option<String>, String);

struct State {
    objects: BTreeMap<Key, Value>,
    resource_version: u64,
    uid: u64,
    requests: Vec<String>,
    /// The latest changes, oldest first.
    history: VecDeque<Arc<watch::Event>>,
    history_limit: usize,
    /// The resourceVersion of the newest change no longer in `history`.
    compacted: u64,
    /// Every change, to the open watches (which wait on it without the lock).
    events: broadcast::Sender<Arc<watch::Event>>,
    /// Bearer tokens TokenReviews authenticate (see [`ApiDouble::add_token`]).
    tokens: BTreeMap<String, review::User>,
}

impl State {
    fn new(history_limit: usize) -> Self {
        State {
            objects: BTreeMap::new(),
            resource_version: 0,
            uid: 0,
            requests: Vec::new(),
            history: VecDeque::new(),
            history_limit,
            compacted: 0,
            events: broadcast::channel(1024).0,
            tokens: BTreeMap::new(),
        }
    }
}

#[derive(Clone)]
pub struct ApiDouble {
    state: Arc<Mutex<State>>,
}

impl Default for ApiDouble {
    fn default() -> Self {
        Self::with_event_history(DEFAULT_EVENT_HISTORY)
    }
}

struct Target {
    resource: String,
    namespace: Option<String>,
    name: Option<String>,
    status: bool,
}

fn parse_path(path: &str) -> Option<Target> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (prefix, rest) = match *segs.first()? {
        "api" if segs.len() > 2 => (segs[..2].join("/"), &segs[2..]),
        "apis" if segs.len() > 3 => (segs[..3].join("/"), &segs[3..]),
        _ => return None,
    };
    let (namespace, rest) = if rest.len() >= 3 && rest[0] == "namespaces" {
        (Some(rest[1].to_string()), &rest[2..])
    } else {
        (None, rest)
    };
    Some(Target {
        resource: format!("{prefix}/{}", rest.first()?),
        namespace,
        name: rest.get(1).map(|s| s.to_string()),
        status: rest.get(2) == Some(&"status"),
    })
}

fn json_response(code: StatusCode, v: &Value) -> Response<ResponseBody> {
    Response::builder()
        .status(code)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(v.to_string())).boxed())
        .unwrap()
}

fn status_response(code: StatusCode, reason: &str, message: String) -> Response<ResponseBody> {
    let body = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": message, "reason": reason, "code": code.as_u16()});
    json_response(code, &body)
}

fn ok(v: &Value) -> Response<ResponseBody> {
    json_response(StatusCode::OK, v)
}

/// Whether two versions of an object hold the same thing: everything but the resourceVersion,
/// with a field set to null the same as an absent one.
fn same_object(a: &Value, b: &Value) -> bool {
    fn normal(v: &Value) -> Value {
        match v {
            Value::Object(m) => Value::Object(
                m.iter()
                    .filter(|(_, v)| !v.is_null())
                    .map(|(k, v)| (k.clone(), normal(v)))
                    .collect(),
            ),
            Value::Array(a) => Value::Array(a.iter().map(normal).collect()),
            other => other.clone(),
        }
    }
    let strip = |v: &Value| {
        let mut v = normal(v);
        if let Some(m) = v["metadata"].as_object_mut() {
            m.remove("resourceVersion");
        }
        v
    };
    strip(a) == strip(b)
}

/// RFC 7386 JSON merge patch.
pub fn merge(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(p) => {
            if !target.is_object() {
                *target = json!({});
            }
            let t = target.as_object_mut().unwrap();
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        other => *target = other.clone(),
    }
}

/// Splits a selector at the commas that separate requirements (not those inside `in (a,b)`).
fn requirements(selector: &str) -> impl Iterator<Item = &str> {
    let mut depth = 0usize;
    selector
        .split(move |c| {
            match c {
                '(' => depth += 1,
                ')' => depth = depth.saturating_sub(1),
                _ => {}
            }
            c == ',' && depth == 0
        })
        .map(str::trim)
        .filter(|r| !r.is_empty())
}

/// A label selector: `k=v`, `k==v`, `k!=v`, `k in (a,b)`, `k notin (a,b)`, `k`, `!k`.
fn matches_selector(obj: &Value, selector: &str) -> bool {
    let labels = &obj["metadata"]["labels"];
    let label = |k: &str| labels.get(k.trim()).and_then(Value::as_str);
    let set = |rest: &str| -> Option<Vec<String>> {
        let inner = rest.trim().strip_prefix('(')?.strip_suffix(')')?;
        Some(inner.split(',').map(|v| v.trim().to_string()).collect())
    };
    requirements(selector).all(|req| {
        if let Some((k, rest)) = req.split_once(" notin ")
            && let Some(values) = set(rest)
        {
            return label(k).is_none_or(|v| !values.iter().any(|x| x == v));
        }
        if let Some((k, rest)) = req.split_once(" in ")
            && let Some(values) = set(rest)
        {
            return label(k).is_some_and(|v| values.iter().any(|x| x == v));
        }
        if let Some((k, v)) = req.split_once("!=") {
            return label(k) != Some(v.trim());
        }
        if let Some((k, v)) = req.split_once("==").or_else(|| req.split_once('=')) {
            return label(k) == Some(v.trim());
        }
        match req.strip_prefix('!') {
            Some(k) => label(k).is_none(),
            None => label(req).is_some(),
        }
    })
}

/// A field selector: `path=v`, `path==v`, `path!=v`, comma-separated, where path is any dotted
/// field (`metadata.name`, `metadata.namespace`, `spec.nodeName`); a missing field is "".
fn matches_fields(obj: &Value, selector: &str) -> bool {
    requirements(selector).all(|req| {
        let (path, want, equal) = if let Some((p, v)) = req.split_once("!=") {
            (p, v, false)
        } else if let Some((p, v)) = req.split_once("==").or_else(|| req.split_once('=')) {
            (p, v, true)
        } else {
            return false;
        };
        let field = path.trim().split('.').fold(obj, |v, seg| &v[seg]);
        let have = match field {
            Value::String(s) => s.clone(),
            Value::Null => String::new(),
            other => other.to_string(),
        };
        (have == want.trim()) == equal
    })
}

/// What a list or a watch covers: a collection, optionally narrowed by selectors.
struct Filter {
    resource: String,
    /// `None` for cluster-scoped resources and all-namespaces requests.
    namespace: Option<String>,
    labels: String,
    fields: String,
}

impl Filter {
    fn new(t: &Target, query: &str) -> Self {
        Filter {
            resource: t.resource.clone(),
            namespace: t.namespace.clone(),
            labels: query_param(query, "labelSelector").unwrap_or_default(),
            fields: query_param(query, "fieldSelector").unwrap_or_default(),
        }
    }

    /// Whether the object stored at `key` is in the collection.
    fn covers(&self, (resource, namespace, _): &Key) -> bool {
        *resource == self.resource && (self.namespace.is_none() || *namespace == self.namespace)
    }

    /// Whether the selectors select `obj`.
    fn selects(&self, obj: &Value) -> bool {
        matches_selector(obj, &self.labels) && matches_fields(obj, &self.fields)
    }
}

fn query_param(query: &str, key: &str) -> Option<String> {
    query.split('&').find_map(|kv| {
        kv.split_once('=')
            .filter(|(k, _)| *k == key)
            .map(|(_, v)| percent_decode(v))
    })
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Ok(b) = u8::from_str_radix(&s[i + 1..i + 3], 16)
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(if bytes[i] == b'+' { b' ' } else { bytes[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl ApiDouble {
    pub fn new() -> Self {
        Self::default()
    }

    /// A double that remembers only the last `events` changes for watches: a watch from an older
    /// resourceVersion gets 410 Expired (and a `kube::runtime` watcher lists again).
    pub fn with_event_history(events: usize) -> Self {
        ApiDouble {
            state: Arc::new(Mutex::new(State::new(events))),
        }
    }

    /// Forgets every change recorded so far, as an etcd compaction does: a watch from a
    /// resourceVersion before the latest change gets 410 Expired (one from the current
    /// resourceVersion misses nothing and works). Open watches are not affected.
    pub fn compact(&self) {
        self.state.lock().unwrap().compact();
    }

    /// A client whose every request this double answers.
    pub fn client(&self) -> kube::Client {
        self.client_with_hook(|_, _| {})
    }

    /// A client like [`ApiDouble::client`] that first calls `before(method, path)` for each
    /// request (outside the double's lock, so it may seed or patch): for tests in which the
    /// world changes between two requests of one pass, such as an object re-created after the
    /// code under test listed it.
    pub fn client_with_hook(
        &self,
        before: impl Fn(&Method, &str) + Send + Sync + 'static,
    ) -> kube::Client {
        let me = self.clone();
        let before = Arc::new(before);
        let service = tower::service_fn(move |req: Request<Body>| {
            let me = me.clone();
            let before = before.clone();
            async move {
                before(req.method(), req.uri().path());
                Ok::<_, Infallible>(me.handle(req).await)
            }
        });
        kube::Client::new(service, "default")
    }

    /// A client whose every request waits `latency` before the double answers it, as a round
    /// trip to a real API server does (benchmarks of how many round trips a pass needs in a
    /// row; requests in flight together wait together).
    pub fn client_with_latency(&self, latency: std::time::Duration) -> kube::Client {
        let me = self.clone();
        let service = tower::service_fn(move |req: Request<Body>| {
            let me = me.clone();
            async move {
                tokio::time::sleep(latency).await;
                Ok::<_, Infallible>(me.handle(req).await)
            }
        });
        kube::Client::new(service, "default")
    }

    /// Stores `obj` as if it had been created (fills uid, resourceVersion, creationTimestamp).
    pub fn seed(&self, resource: &str, obj: Value) -> Value {
        let mut st = self.state.lock().unwrap();
        let ns = obj["metadata"]["namespace"].as_str().map(String::from);
        let name = obj["metadata"]["name"]
            .as_str()
            .expect("seeded objects have a name")
            .to_string();
        let obj = Self::stamp_new(&mut st, obj);
        Self::insert(&mut st, (resource.into(), ns, name), obj.clone());
        obj
    }

    pub fn get(&self, resource: &str, namespace: Option<&str>, name: &str) -> Option<Value> {
        self.state
            .lock()
            .unwrap()
            .objects
            .get(&(resource.into(), namespace.map(String::from), name.into()))
            .cloned()
    }

    /// Every object of `resource` (all namespaces).
    pub fn list(&self, resource: &str) -> Vec<Value> {
        self.state
            .lock()
            .unwrap()
            .objects
            .iter()
            .filter(|((r, _, _), _)| r == resource)
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// Replaces an object's content the way another controller would (merge patch semantics).
    pub fn patch(&self, resource: &str, namespace: Option<&str>, name: &str, patch: Value) {
        let mut st = self.state.lock().unwrap();
        let key = (
            resource.to_string(),
            namespace.map(String::from),
            name.to_string(),
        );
        let mut obj = st
            .objects
            .get(&key)
            .cloned()
            .expect("object to patch exists");
        merge(&mut obj, &patch);
        Self::store(&mut st, key, obj);
    }

    /// Every request seen, as `METHOD path`: for tests that must prove something was not done.
    pub fn requests(&self) -> Vec<String> {
        self.state.lock().unwrap().requests.clone()
    }

    fn stamp_new(st: &mut State, mut obj: Value) -> Value {
        st.resource_version += 1;
        st.uid += 1;
        let md = &mut obj["metadata"];
        md["uid"] = json!(format!("00000000-0000-4000-8000-{:012}", st.uid));
        md["resourceVersion"] = json!(st.resource_version.to_string());
        md["creationTimestamp"] = json!(format!(
            "2026-01-01T00:{:02}:{:02}Z",
            (st.uid / 60) % 60,
            st.uid % 60
        ));
        md["generation"] = json!(1);
        obj
    }

    /// Puts `obj` (carrying the current resourceVersion) at `key`, and records it for watches.
    fn insert(st: &mut State, key: Key, obj: Value) {
        let prev = st.objects.insert(key.clone(), obj.clone());
        let kind = if prev.is_some() {
            EventType::Modified
        } else {
            EventType::Added
        };
        st.record(kind, &key, prev, obj);
    }

    /// Stores an updated object: bumps resourceVersion (and generation when more than metadata or
    /// status changed), and removes it when it is deleting and has no finalizer left.
    fn store(st: &mut State, key: Key, mut obj: Value) {
        let old = st.objects.get(&key).cloned();
        // A write that changes nothing is no write, as in the API server: the resourceVersion
        // stays and no watch event goes out. (Otherwise a controller that re-applies the
        // objects it watches would wake itself for ever.)
        if old.as_ref().is_some_and(|old| same_object(old, &obj)) {
            return;
        }
        st.resource_version += 1;
        obj["metadata"]["resourceVersion"] = json!(st.resource_version.to_string());
        if let Some(old) = &old {
            let content = |v: &Value| {
                let mut v = v.clone();
                if let Some(m) = v.as_object_mut() {
                    m.remove("metadata");
                    m.remove("status");
                }
                v
            };
            let generation = old["metadata"]["generation"].as_i64().unwrap_or(1);
            obj["metadata"]["generation"] = json!(if content(old) != content(&obj) {
                generation + 1
            } else {
                generation
            });
        }
        let deleting = obj["metadata"]
            .get("deletionTimestamp")
            .is_some_and(|t| !t.is_null());
        let finalizers = obj["metadata"]["finalizers"]
            .as_array()
            .is_some_and(|f| !f.is_empty());
        if deleting && !finalizers {
            Self::remove(st, &key);
        } else {
            Self::insert(st, key, obj);
        }
    }

    /// Removes an object and, like the garbage collector, deletes what it owned. Watchers see it
    /// DELETED in its last stored state, at a new resourceVersion.
    fn remove(st: &mut State, key: &Key) {
        let Some(mut obj) = st.objects.remove(key) else {
            return;
        };
        st.resource_version += 1;
        obj["metadata"]["resourceVersion"] = json!(st.resource_version.to_string());
        st.record(EventType::Deleted, key, None, obj.clone());
        let uid = obj["metadata"]["uid"].clone();
        let owned: Vec<Key> = st
            .objects
            .iter()
            .filter(|(_, v)| {
                v["metadata"]["ownerReferences"]
                    .as_array()
                    .is_some_and(|o| o.iter().any(|r| r["uid"] == uid))
            })
            .map(|(k, _)| k.clone())
            .collect();
        for k in owned {
            Self::delete_key(st, &k);
        }
    }

    fn delete_key(st: &mut State, key: &Key) -> Option<Value> {
        let mut obj = st.objects.get(key).cloned()?;
        if obj["metadata"]["finalizers"]
            .as_array()
            .is_some_and(|f| !f.is_empty())
        {
            if obj["metadata"]
                .get("deletionTimestamp")
                .is_none_or(Value::is_null)
            {
                obj["metadata"]["deletionTimestamp"] = json!("2026-01-01T01:00:00Z");
                Self::store(st, key.clone(), obj.clone());
            }
            // As stored, at its new resourceVersion (the API server answers so): a write
            // guarded by the answer's version must go through.
            st.objects.get(key).cloned()
        } else {
            Self::remove(st, key);
            Some(obj)
        }
    }

    /// Answers one request (the in-process client and the HTTP server both come here). A watch
    /// answers at once with a body that streams its events.
    pub async fn handle(&self, req: Request<Body>) -> Response<ResponseBody> {
        let (parts, body) = req.into_parts();
        let bytes = body.collect_bytes().await.unwrap_or_default();
        let path = parts.uri.path().to_string();
        let query = parts.uri.query().unwrap_or("").to_string();
        let content_type = parts
            .headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let mut st = self.state.lock().unwrap();
        st.requests.push(format!("{} {path}", parts.method));
        let Some(t) = parse_path(&path) else {
            return status_response(
                StatusCode::NOT_FOUND,
                "NotFound",
                format!("no route {path}"),
            );
        };
        let body: Value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or(Value::Null)
        };
        // Reviews are answered, never stored.
        if let Some(response) = review::answer(&st, &parts.method, &t, &body) {
            return response;
        }
        let what = || format!("{} {:?}", t.resource, t.name);
        match (parts.method.clone(), &t.name) {
            (Method::GET, None) => {
                let filter = Filter::new(&t, &query);
                if query_param(&query, "watch").is_some_and(|w| w == "true" || w == "1") {
                    return watch::start(&self.state, &mut st, filter, &query).unwrap_or_else(
                        |message| status_response(StatusCode::BAD_REQUEST, "BadRequest", message),
                    );
                }
                let items: Vec<Value> = st
                    .objects
                    .iter()
                    .filter(|(k, v)| filter.covers(k) && filter.selects(v))
                    .map(|(_, v)| v.clone())
                    .collect();
                ok(
                    &json!({"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": st.resource_version.to_string()}, "items": items}),
                )
            }
            (Method::GET, Some(name)) => {
                match st
                    .objects
                    .get(&(t.resource.clone(), t.namespace.clone(), name.clone()))
                {
                    Some(v) => ok(v),
                    None => status_response(
                        StatusCode::NOT_FOUND,
                        "NotFound",
                        format!("{} not found", what()),
                    ),
                }
            }
            (Method::POST, None) => {
                let mut obj = body;
                let name = match obj["metadata"]["name"].as_str() {
                    Some(n) => n.to_string(),
                    None => format!(
                        "{}{}",
                        obj["metadata"]["generateName"].as_str().unwrap_or("gen-"),
                        st.uid + 1
                    ),
                };
                obj["metadata"]["name"] = json!(name);
                if let Some(ns) = &t.namespace {
                    obj["metadata"]["namespace"] = json!(ns);
                }
                let key = (t.resource.clone(), t.namespace.clone(), name.clone());
                if st.objects.contains_key(&key) {
                    return status_response(
                        StatusCode::CONFLICT,
                        "AlreadyExists",
                        format!("{} {name} already exists", t.resource),
                    );
                }
                let obj = Self::stamp_new(&mut st, obj);
                Self::insert(&mut st, key, obj.clone());
                json_response(StatusCode::CREATED, &obj)
            }
            (Method::PUT, Some(name)) => {
                let key = (t.resource.clone(), t.namespace.clone(), name.clone());
                let Some(current) = st.objects.get(&key).cloned() else {
                    return status_response(
                        StatusCode::NOT_FOUND,
                        "NotFound",
                        format!("{} not found", what()),
                    );
                };
                let rv = body["metadata"]["resourceVersion"].as_str();
                if rv.is_some_and(|rv| Some(rv) != current["metadata"]["resourceVersion"].as_str())
                {
                    return status_response(
                        StatusCode::CONFLICT,
                        "Conflict",
                        format!("{}: the object has been modified", what()),
                    );
                }
                let mut obj = body.clone();
                if t.status {
                    obj = current.clone();
                    obj["status"] = body["status"].clone();
                } else {
                    obj["status"] = current["status"].clone();
                    for keep in [
                        "uid",
                        "creationTimestamp",
                        "deletionTimestamp",
                        "generation",
                    ] {
                        obj["metadata"][keep] = current["metadata"][keep].clone();
                    }
                }
                Self::store(&mut st, key.clone(), obj.clone());
                // A deleting object whose last finalizer went is gone: answer with its last state.
                ok(st.objects.get(&key).unwrap_or(&obj))
            }
            (Method::PATCH, Some(name)) => {
                let key = (t.resource.clone(), t.namespace.clone(), name.clone());
                let current = st.objects.get(&key).cloned();
                let apply = content_type.starts_with("application/apply-patch");
                let mut obj = match (current.clone(), apply) {
                    (Some(c), _) => c,
                    (None, true) => {
                        let mut fresh = json!({"metadata": {"name": name}});
                        if let Some(ns) = &t.namespace {
                            fresh["metadata"]["namespace"] = json!(ns);
                        }
                        Self::stamp_new(&mut st, fresh)
                    }
                    (None, false) => {
                        return status_response(
                            StatusCode::NOT_FOUND,
                            "NotFound",
                            format!("{} not found", what()),
                        );
                    }
                };
                if let Some(rv) = body["metadata"]["resourceVersion"].as_str()
                    && current.is_some()
                    && Some(rv) != obj["metadata"]["resourceVersion"].as_str()
                {
                    return status_response(
                        StatusCode::CONFLICT,
                        "Conflict",
                        format!("{}: the object has been modified", what()),
                    );
                }
                if apply {
                    // One field manager owns everything it applies: its fields replace ours.
                    for (k, v) in body.as_object().into_iter().flatten() {
                        match k.as_str() {
                            "metadata" => {
                                for (mk, mv) in v.as_object().into_iter().flatten() {
                                    if !matches!(
                                        mk.as_str(),
                                        "uid"
                                            | "resourceVersion"
                                            | "creationTimestamp"
                                            | "generation"
                                            | "deletionTimestamp"
                                    ) {
                                        obj["metadata"][mk] = mv.clone();
                                    }
                                }
                            }
                            "status" if !t.status => {}
                            _ => obj[k] = v.clone(),
                        }
                    }
                } else if content_type.starts_with("application/json-patch") {
                    let patch: json_patch::Patch = match serde_json::from_value(body.clone()) {
                        Ok(p) => p,
                        Err(e) => {
                            return status_response(
                                StatusCode::BAD_REQUEST,
                                "BadRequest",
                                e.to_string(),
                            );
                        }
                    };
                    if let Err(e) = json_patch::patch(&mut obj, &patch) {
                        return status_response(
                            StatusCode::UNPROCESSABLE_ENTITY,
                            "Invalid",
                            e.to_string(),
                        );
                    }
                } else if t.status {
                    let mut status = obj["status"].clone();
                    merge(&mut status, &body["status"]);
                    obj["status"] = status;
                } else {
                    let mut patch = body.clone();
                    if let Some(m) = patch.as_object_mut() {
                        m.remove("status");
                    }
                    merge(&mut obj, &patch);
                }
                Self::store(&mut st, key.clone(), obj.clone());
                // A deleting object whose last finalizer went is gone: answer with its last state.
                ok(st.objects.get(&key).unwrap_or(&obj))
            }
            (Method::DELETE, Some(name)) => {
                let key = (t.resource.clone(), t.namespace.clone(), name.clone());
                // DeleteOptions.preconditions: only the object they name is deleted; another
                // one (re-created under the name, or changed since) is a 409, as from the API
                // server.
                if let Some(current) = st.objects.get(&key) {
                    for (field, label) in [("uid", "UID"), ("resourceVersion", "ResourceVersion")] {
                        let have = current["metadata"][field].as_str().unwrap_or("");
                        if let Some(want) = body["preconditions"][field].as_str()
                            && want != have
                        {
                            return status_response(
                                StatusCode::CONFLICT,
                                "Conflict",
                                format!(
                                    "Operation cannot be fulfilled on {}: Precondition failed: \
                                     {label} in precondition: {want}, {label} in object meta: {have}",
                                    what()
                                ),
                            );
                        }
                    }
                }
                match Self::delete_key(&mut st, &key) {
                    Some(obj) => ok(&obj),
                    None => status_response(
                        StatusCode::NOT_FOUND,
                        "NotFound",
                        format!("{} not found", what()),
                    ),
                }
            }
            _ => status_response(
                StatusCode::METHOD_NOT_ALLOWED,
                "MethodNotAllowed",
                format!("{} {path}", parts.method),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        let t = parse_path("/apis/apps/v1/namespaces/ns/daemonsets/vg-manager").unwrap();
        assert_eq!(
            (
                t.resource.as_str(),
                t.namespace.as_deref(),
                t.name.as_deref(),
                t.status
            ),
            (
                "apis/apps/v1/daemonsets",
                Some("ns"),
                Some("vg-manager"),
                false
            )
        );
        let t = parse_path("/api/v1/nodes").unwrap();
        assert_eq!(
            (t.resource.as_str(), t.namespace, t.name),
            ("api/v1/nodes", None, None)
        );
        let t =
            parse_path("/apis/lvm.topolvm.io/v1alpha1/namespaces/x/lvmclusters/c/status").unwrap();
        assert!(t.status && t.name.as_deref() == Some("c"));
    }

    #[test]
    fn merge_patch_semantics() {
        let mut v = json!({"a": {"b": 1, "c": 2}, "d": [1]});
        merge(&mut v, &json!({"a": {"b": null, "e": 3}, "d": [2]}));
        assert_eq!(v, json!({"a": {"c": 2, "e": 3}, "d": [2]}));
    }

    #[test]
    fn selectors_and_decoding() {
        let o = json!({"metadata": {"labels": {"a": "1", "b": "2"}}});
        assert!(
            matches_selector(&o, "a=1,b=2")
                && !matches_selector(&o, "a=2")
                && matches_selector(&o, "")
                && matches_selector(&o, "!c")
        );
        assert_eq!(
            percent_decode("lvm.topolvm.io%2Fowned-by%3Dns.c"),
            "lvm.topolvm.io/owned-by=ns.c"
        );
    }

    #[test]
    fn set_and_inequality_selectors() {
        let o = json!({"metadata": {"name": "n", "namespace": "ns", "labels": {"a": "1", "b": "2"}}, "spec": {"nodeName": "w1", "size": 3}});
        for (selector, want) in [
            ("a==1", true),
            ("a!=1", false),
            ("a!=2", true),
            ("c!=1", true),
            ("a in (1,3)", true),
            ("a in (2,3)", false),
            ("a notin (2,3),b", true),
            ("a notin (1)", false),
            ("c notin (1)", true),
            ("c in (1)", false),
            ("a in (1, 3),b=2", true),
            ("a in (1,3),b=3", false),
        ] {
            assert_eq!(matches_selector(&o, selector), want, "{selector}");
        }
        for (selector, want) in [
            ("metadata.name=n", true),
            ("metadata.name==m", false),
            ("metadata.name!=m,metadata.namespace=ns", true),
            ("metadata.namespace=other", false),
            ("spec.nodeName=w1", true),
            ("spec.size=3", true),
            ("spec.missing=", true),
            ("", true),
        ] {
            assert_eq!(matches_fields(&o, selector), want, "{selector}");
        }
    }
}
