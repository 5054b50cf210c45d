//! An in-process double of the Kubernetes API server, served to a real `kube::Client` through a
//! tower service: reconcilers run their real requests against it, and tests assert on the objects
//! it holds. It implements what our controllers use: get, list (label selectors), create,
//! replace (with resourceVersion conflicts), server-side apply (single manager), merge and JSON
//! patches, the status subresource, deletion with finalizers, and owner-reference garbage
//! collection. Watches are not served: tests call the reconcile functions directly.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use http::{Method, Request, Response, StatusCode};
use kube::client::Body;
use serde_json::{Value, json};

/// (resource path such as `apis/apps/v1/daemonsets`, namespace, name).
type Key = (String, Option<String>, String);

#[derive(Default)]
struct State {
    objects: BTreeMap<Key, Value>,
    resource_version: u64,
    uid: u64,
    requests: Vec<String>,
}

#[derive(Clone, Default)]
pub struct ApiDouble {
    state: Arc<Mutex<State>>,
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

fn status_response(code: StatusCode, reason: &str, message: String) -> Response<Body> {
    let body = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": message, "reason": reason, "code": code.as_u16()});
    Response::builder()
        .status(code)
        .header("content-type", "application/json")
        .body(Body::from(body.to_string().into_bytes()))
        .unwrap()
}

fn ok(v: &Value) -> Response<Body> {
    Response::builder()
        .status(200)
        .header("content-type", "application/json")
        .body(Body::from(v.to_string().into_bytes()))
        .unwrap()
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

fn matches_selector(obj: &Value, selector: &str) -> bool {
    selector.split(',').filter(|s| !s.is_empty()).all(|req| {
        let labels = &obj["metadata"]["labels"];
        match req.split_once('=') {
            Some((k, v)) => labels[k.trim_end_matches('=')].as_str() == Some(v),
            None => match req.strip_prefix('!') {
                Some(k) => labels.get(k).is_none(),
                None => labels.get(req).is_some(),
            },
        }
    })
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

    /// A client whose every request this double answers.
    pub fn client(&self) -> kube::Client {
        let me = self.clone();
        let service = tower::service_fn(move |req: Request<Body>| {
            let me = me.clone();
            async move { Ok::<_, Infallible>(me.handle(req).await) }
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
        st.objects.insert((resource.into(), ns, name), obj.clone());
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

    /// Stores an updated object: bumps resourceVersion (and generation when more than metadata or
    /// status changed), and removes it when it is deleting and has no finalizer left.
    fn store(st: &mut State, key: Key, mut obj: Value) {
        let old = st.objects.get(&key).cloned();
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
            st.objects.insert(key, obj);
        }
    }

    /// Removes an object and, like the garbage collector, deletes what it owned.
    fn remove(st: &mut State, key: &Key) {
        let Some(obj) = st.objects.remove(key) else {
            return;
        };
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
            Some(obj)
        } else {
            Self::remove(st, key);
            Some(obj)
        }
    }

    /// Answers one request (the in-process client and the HTTP server both come here).
    pub async fn handle(&self, req: Request<Body>) -> Response<Body> {
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
        let what = || format!("{} {:?}", t.resource, t.name);
        match (parts.method.clone(), &t.name) {
            (Method::GET, None) => {
                if query_param(&query, "watch").is_some_and(|w| w == "true" || w == "1") {
                    return status_response(
                        StatusCode::METHOD_NOT_ALLOWED,
                        "MethodNotAllowed",
                        "the API double serves no watches".into(),
                    );
                }
                let selector = query_param(&query, "labelSelector").unwrap_or_default();
                let items: Vec<Value> = st
                    .objects
                    .iter()
                    .filter(|((r, ns, _), v)| {
                        *r == t.resource
                            && (t.namespace.is_none() || *ns == t.namespace)
                            && matches_selector(v, &selector)
                    })
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
                st.objects.insert(key, obj.clone());
                Response::builder()
                    .status(201)
                    .header("content-type", "application/json")
                    .body(Body::from(obj.to_string().into_bytes()))
                    .unwrap()
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
                Self::store(&mut st, key.clone(), obj);
                ok(st.objects.get(&key).unwrap_or(&Value::Null))
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
}
