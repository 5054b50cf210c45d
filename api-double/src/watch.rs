//! Watches: every change the double makes is recorded as an [`Event`] (in a bounded history, for
//! watches that start from a resourceVersion) and broadcast to the open watches. A watch is a
//! stream of newline-delimited JSON events that waits on the broadcast channel, never on the state
//! mutex, and ends at its timeout or when the client drops it.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::Response;
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody};
use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::broadcast;
use tokio::time::{Duration, Instant};

use crate::{Filter, Key, ResponseBody, State, query_param};

/// Longest a watch stays open, and its length when the client sends no `timeoutSeconds`.
const MAX_TIMEOUT_SECS: u64 = 290;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum EventType {
    Added,
    Modified,
    Deleted,
}

/// One change to one object, as the storage saw it.
pub(crate) struct Event {
    /// The resourceVersion the change produced (`object`'s own).
    pub(crate) rv: u64,
    pub(crate) kind: EventType,
    pub(crate) key: Key,
    /// The state before a modification: a watch with a selector turns a modification into ADDED or
    /// DELETED when the object enters or leaves the selection, as the API server does.
    pub(crate) prev: Option<Value>,
    pub(crate) object: Value,
}

#[derive(Serialize)]
struct Line<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    object: &'a Value,
}

fn line(kind: &str, object: &Value) -> Bytes {
    let mut out = serde_json::to_vec(&Line { kind, object }).expect("JSON values serialize");
    out.push(b'\n');
    Bytes::from(out)
}

/// `event` as `filter`'s watcher sees it, if it sees it at all.
fn render(filter: &Filter, event: &Event) -> Option<Bytes> {
    if !filter.covers(&event.key) {
        return None;
    }
    let now = filter.selects(&event.object);
    let kind = match event.kind {
        EventType::Added => now.then_some("ADDED"),
        EventType::Deleted => now.then_some("DELETED"),
        EventType::Modified => {
            match (event.prev.as_ref().is_some_and(|p| filter.selects(p)), now) {
                (true, true) => Some("MODIFIED"),
                (true, false) => Some("DELETED"),
                (false, true) => Some("ADDED"),
                (false, false) => None,
            }
        }
    }?;
    Some(line(kind, &event.object))
}

/// The ERROR event the API server sends when a watch starts before the history it keeps.
fn expired(from: u64, oldest: u64) -> Bytes {
    let status = json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": format!("too old resource version: {from} ({oldest})"),
        "reason": "Expired",
        "code": 410,
    });
    line("ERROR", &status)
}

impl State {
    /// Records a change at the current resourceVersion and tells the open watches.
    pub(crate) fn record(
        &mut self,
        kind: EventType,
        key: &Key,
        prev: Option<Value>,
        object: Value,
    ) {
        let event = Arc::new(Event {
            rv: self.resource_version,
            kind,
            key: key.clone(),
            prev,
            object,
        });
        self.history.push_back(event.clone());
        while self.history.len() > self.history_limit {
            if let Some(old) = self.history.pop_front() {
                self.compacted = old.rv;
            }
        }
        // No receiver is fine: nobody watches.
        let _ = self.events.send(event);
    }

    /// Forgets every recorded change, as an etcd compaction does.
    pub(crate) fn compact(&mut self) {
        if let Some(last) = self.history.back() {
            self.compacted = last.rv;
        }
        self.history.clear();
    }
}

/// An open watch: what is ready to send, and where it is in the stream of changes.
struct Watch {
    state: Arc<Mutex<State>>,
    filter: Filter,
    pending: VecDeque<Bytes>,
    rx: broadcast::Receiver<Arc<Event>>,
    /// The resourceVersion this watcher has seen every change up to.
    last: u64,
    deadline: Instant,
    bookmarks: bool,
    /// `apiVersion` and `kind` for BOOKMARK events.
    api_version: String,
    kind: String,
    done: bool,
}

impl Watch {
    fn accept(&mut self, event: &Event) {
        if event.rv <= self.last {
            return;
        }
        self.last = event.rv;
        if let Some(line) = render(&self.filter, event) {
            self.pending.push_back(line);
        }
    }

    fn bookmark(&self, annotations: Value) -> Bytes {
        line(
            "BOOKMARK",
            &json!({
                "apiVersion": self.api_version,
                "kind": self.kind,
                "metadata": {"resourceVersion": self.last.to_string(), "annotations": annotations},
            }),
        )
    }

    /// The watcher fell behind the broadcast channel: take what it missed from the history.
    fn catch_up(&mut self) {
        let state = self.state.clone();
        let st = state.lock().unwrap();
        self.rx = st.events.subscribe();
        if self.last < st.compacted {
            self.pending.push_back(expired(self.last, st.compacted));
            self.done = true;
            return;
        }
        for event in &st.history {
            self.accept(event);
        }
    }

    /// The next line to send, waiting for a change when there is none; `None` ends the stream.
    async fn next(&mut self) -> Option<Bytes> {
        loop {
            if let Some(line) = self.pending.pop_front() {
                return Some(line);
            }
            if self.done {
                return None;
            }
            let received = tokio::select! {
                () = tokio::time::sleep_until(self.deadline) => None,
                r = self.rx.recv() => Some(r),
            };
            match received {
                None => {
                    self.done = true;
                    if self.bookmarks {
                        let line = self.bookmark(json!({}));
                        self.pending.push_back(line);
                    }
                }
                Some(Ok(event)) => self.accept(&event),
                Some(Err(broadcast::error::RecvError::Lagged(_))) => self.catch_up(),
                Some(Err(broadcast::error::RecvError::Closed)) => self.done = true,
            }
        }
    }
}

/// `apiVersion` of a resource path: `api/v1/nodes` is `v1`, `apis/g/v1/xs` is `g/v1`.
fn api_version(resource: &str) -> String {
    let mut segs: Vec<&str> = resource.split('/').collect();
    segs.pop();
    segs.remove(0);
    segs.join("/")
}

/// Opens a watch on `filter`'s collection. Called with the state locked, so the replayed history,
/// the initial objects and the subscription to later changes line up exactly.
pub(crate) fn start(
    shared: &Arc<Mutex<State>>,
    st: &mut State,
    filter: Filter,
    query: &str,
) -> Result<Response<ResponseBody>, String> {
    let rv = query_param(query, "resourceVersion").filter(|rv| !rv.is_empty() && rv != "0");
    let from = match &rv {
        Some(rv) => rv
            .parse::<u64>()
            .map_err(|_| format!("invalid resourceVersion {rv:?}"))?,
        None => st.resource_version,
    };
    let send_initial = query_param(query, "sendInitialEvents");
    let initial = match send_initial.as_deref() {
        Some(v) => v == "true",
        None => rv.is_none(),
    };
    let secs = query_param(query, "timeoutSeconds")
        .and_then(|s| s.parse::<u64>().ok())
        .filter(|&s| s > 0)
        .map_or(MAX_TIMEOUT_SECS, |s| s.min(MAX_TIMEOUT_SECS));
    let kind = st
        .objects
        .iter()
        .find(|((r, _, _), _)| *r == filter.resource)
        .map(|(_, v)| v)
        .or_else(|| {
            st.history
                .iter()
                .find(|e| e.key.0 == filter.resource)
                .map(|e| &e.object)
        })
        .and_then(|v| v["kind"].as_str())
        .unwrap_or_default()
        .to_string();
    let mut watch = Watch {
        state: shared.clone(),
        pending: VecDeque::new(),
        rx: st.events.subscribe(),
        last: from,
        deadline: Instant::now() + Duration::from_secs(secs),
        bookmarks: query_param(query, "allowWatchBookmarks").is_some_and(|v| v == "true"),
        api_version: api_version(&filter.resource),
        kind,
        done: false,
        filter,
    };
    if initial {
        // The current state as ADDED events, then the changes after it.
        for (key, obj) in &st.objects {
            if watch.filter.covers(key) && watch.filter.selects(obj) {
                watch.pending.push_back(line("ADDED", obj));
            }
        }
        watch.last = watch.last.max(st.resource_version);
        if send_initial.as_deref() == Some("true") {
            let end = watch.bookmark(json!({"k8s.io/initial-events-end": "true"}));
            watch.pending.push_back(end);
        }
    } else if from < st.compacted {
        // Like the API server: the watch opens, then fails with an ERROR event (410 Expired),
        // which tells the client to list again.
        watch.pending.push_back(expired(from, st.compacted));
        watch.done = true;
    } else {
        for event in &st.history {
            watch.accept(event);
        }
        watch.last = watch.last.max(st.resource_version);
    }
    let stream = futures::stream::unfold(watch, |mut watch| async move {
        let line = watch.next().await?;
        Some((Ok::<_, Infallible>(Frame::data(line)), watch))
    });
    Ok(Response::builder()
        .status(200)
        .header("content-type", "application/json")
        .body(StreamBody::new(stream).boxed())
        .unwrap())
}
