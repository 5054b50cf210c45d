//! TokenReviews and SubjectAccessReviews, answered as kube-apiserver answers them: a token the
//! test registered authenticates (with `system:authenticated` added, as the union authenticator
//! does), and an access review is decided by RBAC over the Roles, ClusterRoles and bindings
//! stored in the double. Neither review is stored.
//!
//! Not modelled: the bootstrap policy (a real cluster lets every authenticated user `get
//! /healthz`, `/version` and so on through `system:public-info-viewer`; here only what a test
//! seeds applies), aggregated ClusterRoles (`aggregationRule` is not expanded: seed the rules
//! the controller manager would have aggregated), LocalSubjectAccessReviews and
//! SelfSubjectAccessReviews, token audiences (every token is audience-agnostic, like a static
//! token file's).

use http::{Method, StatusCode};
use serde_json::{Value, json};

use crate::{ApiDouble, ResponseBody, State, Target, json_response, status_response};

const TOKEN_REVIEWS: &str = "apis/authentication.k8s.io/v1/tokenreviews";
const SUBJECT_ACCESS_REVIEWS: &str = "apis/authorization.k8s.io/v1/subjectaccessreviews";
const RBAC: &str = "apis/rbac.authorization.k8s.io/v1";

/// Who a registered token authenticates as.
#[derive(Clone, Debug)]
pub(crate) struct User {
    username: String,
    uid: String,
    groups: Vec<String>,
}

impl User {
    fn new(username: &str, groups: impl IntoIterator<Item = String>) -> Self {
        let mut groups: Vec<String> = groups.into_iter().collect();
        // kube-apiserver adds it to every authenticated user, whatever the authenticator.
        if !groups.iter().any(|g| g == "system:authenticated") {
            groups.push("system:authenticated".into());
        }
        User {
            username: username.into(),
            uid: stable_uid(username),
            groups,
        }
    }
}

/// The same uid for the same username in every run and every double (FNV-1a of the name), in a
/// range the double's object uids (`...-8000-...`) never use.
fn stable_uid(username: &str) -> String {
    let hash = username.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    format!("00000000-0000-4000-a000-{:012x}", hash & 0xffff_ffff_ffff)
}

impl ApiDouble {
    /// Registers a bearer token that TokenReviews authenticate as `username` in `groups` (and
    /// `system:authenticated`, which kube-apiserver adds to every authenticated user). The uid is
    /// derived from the username, so it is the same for every token of that user.
    pub fn add_token(&self, token: &str, username: &str, groups: &[&str]) {
        let user = User::new(username, groups.iter().map(|g| g.to_string()));
        self.state.lock().unwrap().tokens.insert(token.into(), user);
    }

    /// Registers a bearer token of the ServiceAccount `namespace/name`: TokenReviews authenticate
    /// it as `system:serviceaccount:<namespace>:<name>` in `system:serviceaccounts`,
    /// `system:serviceaccounts:<namespace>` and `system:authenticated`, as the API server does.
    /// The ServiceAccount need not be stored in the double.
    pub fn add_service_account_token(&self, token: &str, namespace: &str, name: &str) {
        let user = User::new(
            &format!("system:serviceaccount:{namespace}:{name}"),
            [
                "system:serviceaccounts".to_string(),
                format!("system:serviceaccounts:{namespace}"),
            ],
        );
        self.state.lock().unwrap().tokens.insert(token.into(), user);
    }
}

/// The answer to a request for a review resource; `None` for any other resource.
pub(crate) fn answer(
    st: &State,
    method: &Method,
    t: &Target,
    body: &Value,
) -> Option<http::Response<ResponseBody>> {
    let kind = match t.resource.as_str() {
        TOKEN_REVIEWS => "TokenReview",
        SUBJECT_ACCESS_REVIEWS => "SubjectAccessReview",
        _ => return None,
    };
    // Both are cluster-scoped and create-only.
    if t.namespace.is_some() {
        return Some(status_response(
            StatusCode::NOT_FOUND,
            "NotFound",
            format!("the server could not find the requested resource ({kind} is cluster-scoped)"),
        ));
    }
    if *method != Method::POST || t.name.is_some() {
        return Some(status_response(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            format!("{kind}s can only be created"),
        ));
    }
    if !body.is_object() {
        return Some(status_response(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            format!("not a {kind}: {body}"),
        ));
    }
    let mut review = body.clone();
    let (api_version, result) = if kind == "TokenReview" {
        (
            "authentication.k8s.io/v1",
            token_review(st, &review["spec"]),
        )
    } else {
        (
            "authorization.k8s.io/v1",
            subject_access_review(st, &review["spec"]),
        )
    };
    Some(match result {
        Ok(status) => {
            review["kind"] = json!(kind);
            review["apiVersion"] = json!(api_version);
            review["status"] = status;
            json_response(StatusCode::CREATED, &review)
        }
        Err((code, reason, message)) => status_response(code, reason, message),
    })
}

/// A review's status, or the failure the API server answers instead (code, reason, message).
type Answer = Result<Value, (StatusCode, &'static str, String)>;

fn token_review(st: &State, spec: &Value) -> Answer {
    let token = spec["token"].as_str().unwrap_or("");
    // The API server's registry rejects it before any authenticator runs.
    if token.is_empty() {
        return Err((
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "token is required for TokenReview in authentication".into(),
        ));
    }
    let Some(user) = st.tokens.get(token) else {
        // An unknown token is a review that says so, not an HTTP error.
        return Ok(json!({"authenticated": false, "user": {}, "error": "invalid bearer token"}));
    };
    let mut status = json!({
        "authenticated": true,
        "user": {"username": user.username, "uid": user.uid, "groups": user.groups},
    });
    // Audience-agnostic tokens are valid for whatever audiences the reviewer asks about.
    if let Some(audiences) = spec["audiences"].as_array().filter(|a| !a.is_empty()) {
        status["audiences"] = json!(audiences);
    }
    Ok(status)
}

/// What the review asks about (the request attributes of the RBAC authorizer).
enum Attributes<'a> {
    Resource {
        group: &'a str,
        resource: &'a str,
        subresource: &'a str,
        verb: &'a str,
        namespace: &'a str,
        name: &'a str,
    },
    NonResource {
        path: &'a str,
        verb: &'a str,
    },
}

fn present(v: &Value) -> Option<&Value> {
    Some(v).filter(|v| !v.is_null())
}

fn strs(v: &Value) -> impl Iterator<Item = &str> {
    v.as_array().into_iter().flatten().filter_map(Value::as_str)
}

fn subject_access_review(st: &State, spec: &Value) -> Answer {
    let user = spec["user"].as_str().unwrap_or("");
    let groups: Vec<&str> = strs(&spec["groups"]).collect();
    let resource = present(&spec["resourceAttributes"]);
    let non_resource = present(&spec["nonResourceAttributes"]);
    // The API server's validation, with its messages; a failure is 422 Invalid.
    let mut errors = Vec::new();
    match (resource, non_resource) {
        (None, None) => errors.push(
            "spec: Invalid value: null: exactly one of nonResourceAttributes or \
             resourceAttributes must be specified"
                .to_string(),
        ),
        (Some(_), Some(n)) => errors.push(format!(
            "spec: Invalid value: {n}: exactly one of nonResourceAttributes or \
             resourceAttributes must be specified"
        )),
        _ => {}
    }
    if user.is_empty() && groups.is_empty() {
        errors.push(
            "spec.user: Invalid value: \"\": at least one of user or group must be specified"
                .into(),
        );
    }
    if !errors.is_empty() {
        let errors = match errors.as_slice() {
            [one] => one.clone(),
            many => format!("[{}]", many.join(", ")),
        };
        return Err((
            StatusCode::UNPROCESSABLE_ENTITY,
            "Invalid",
            format!("SubjectAccessReview.authorization.k8s.io \"\" is invalid: {errors}"),
        ));
    }
    fn s<'a>(v: &'a Value, field: &str) -> &'a str {
        v[field].as_str().unwrap_or("")
    }
    let attributes = match (resource, non_resource) {
        (Some(r), _) => Attributes::Resource {
            group: s(r, "group"),
            resource: s(r, "resource"),
            subresource: s(r, "subresource"),
            verb: s(r, "verb"),
            namespace: s(r, "namespace"),
            name: s(r, "name"),
        },
        (None, Some(n)) => Attributes::NonResource {
            path: s(n, "path"),
            verb: s(n, "verb"),
        },
        (None, None) => unreachable!("validated above"),
    };
    let (allowed, reason) = authorize(st, user, &groups, &attributes);
    let mut status = json!({"allowed": allowed});
    if let Some(reason) = reason {
        status["reason"] = json!(reason);
    }
    Ok(status)
}

/// The RBAC authorizer (behind kube-apiserver's `system:masters` bypass): ClusterRoleBindings,
/// then for a namespaced resource the RoleBindings of its namespace; the first rule that allows
/// decides. RBAC never denies, so a request no rule allows is just not allowed, with the errors
/// met on the way (bindings of this user to missing roles) as the reason.
fn authorize(
    st: &State,
    user: &str,
    groups: &[&str],
    attributes: &Attributes,
) -> (bool, Option<String>) {
    // The API server's privileged-group authorizer, ahead of RBAC; it gives no reason.
    if groups.contains(&"system:masters") {
        return (true, None);
    }
    let mut errors = Vec::new();
    let bindings = |kind: &'static str, resource: &str, namespace: Option<&str>| {
        let resource = format!("{RBAC}/{resource}");
        st.objects
            .iter()
            .filter(move |((r, ns, _), _)| *r == resource && ns.as_deref() == namespace)
            .map(move |(_, binding)| (kind, binding))
            .collect::<Vec<_>>()
    };
    let mut candidates = bindings("ClusterRoleBinding", "clusterrolebindings", None);
    if let Attributes::Resource { namespace, .. } = attributes
        && !namespace.is_empty()
    {
        candidates.extend(bindings("RoleBinding", "rolebindings", Some(namespace)));
    }
    for (kind, binding) in candidates {
        // A ClusterRoleBinding's subjects and role have no namespace to default to.
        let namespace = binding["metadata"]["namespace"].as_str().unwrap_or("");
        let Some(subject) = binding["subjects"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|s| applies_to(s, user, groups, namespace))
        else {
            continue;
        };
        let role_ref = &binding["roleRef"];
        let rules = match role_rules(st, role_ref, namespace) {
            Ok(rules) => rules,
            Err(e) => {
                errors.push(e);
                continue;
            }
        };
        if rules.iter().any(|rule| rule_allows(rule, attributes)) {
            let name = binding["metadata"]["name"].as_str().unwrap_or("");
            let binding_name = if kind == "RoleBinding" {
                format!("{name}/{namespace}")
            } else {
                name.to_string()
            };
            let reason = format!(
                "RBAC: allowed by {kind} {binding_name:?} of {} {:?} to {}",
                role_ref["kind"].as_str().unwrap_or(""),
                role_ref["name"].as_str().unwrap_or(""),
                describe_subject(subject, namespace),
            );
            return (true, Some(reason));
        }
    }
    let reason = match errors.as_slice() {
        [] => None,
        [one] => Some(format!("RBAC: {one}")),
        many => Some(format!("RBAC: [{}]", many.join(", "))),
    };
    (false, reason)
}

/// Whether a binding subject is the user; a ServiceAccount without a namespace is in the
/// binding's (none for a ClusterRoleBinding: it matches nobody).
fn applies_to(subject: &Value, user: &str, groups: &[&str], binding_namespace: &str) -> bool {
    let name = subject["name"].as_str().unwrap_or("");
    match subject["kind"].as_str() {
        Some("User") => user == name,
        Some("Group") => groups.contains(&name),
        Some("ServiceAccount") => {
            let namespace = subject["namespace"]
                .as_str()
                .filter(|n| !n.is_empty())
                .unwrap_or(binding_namespace);
            !namespace.is_empty() && user == format!("system:serviceaccount:{namespace}:{name}")
        }
        _ => false,
    }
}

fn describe_subject(subject: &Value, binding_namespace: &str) -> String {
    let kind = subject["kind"].as_str().unwrap_or("");
    let name = subject["name"].as_str().unwrap_or("");
    if kind == "ServiceAccount" {
        let namespace = subject["namespace"]
            .as_str()
            .filter(|n| !n.is_empty())
            .unwrap_or(binding_namespace);
        format!("{kind} {:?}", format!("{name}/{namespace}"))
    } else {
        format!("{kind} {name:?}")
    }
}

/// The rules of a binding's role, or the error the API server's rule resolver reports.
fn role_rules(st: &State, role_ref: &Value, binding_namespace: &str) -> Result<Vec<Value>, String> {
    let name = role_ref["name"].as_str().unwrap_or("");
    let (key, what) = match role_ref["kind"].as_str().unwrap_or("") {
        "ClusterRole" => ((format!("{RBAC}/clusterroles"), None), "clusterrole"),
        "Role" => (
            (format!("{RBAC}/roles"), Some(binding_namespace.to_string())),
            "role",
        ),
        other => return Err(format!("unsupported role reference kind: {other:?}")),
    };
    let role = st
        .objects
        .get(&(key.0, key.1, name.to_string()))
        .ok_or_else(|| format!("{what}.rbac.authorization.k8s.io {name:?} not found"))?;
    Ok(role["rules"].as_array().cloned().unwrap_or_default())
}

/// RBAC's `RuleAllows`.
fn rule_allows(rule: &Value, attributes: &Attributes) -> bool {
    let has = |field: &str, want: &str| strs(&rule[field]).any(|s| s == want || s == "*");
    match *attributes {
        Attributes::NonResource { path, verb } => {
            has("verbs", verb)
                && strs(&rule["nonResourceURLs"]).any(|url| {
                    url == "*"
                        || url == path
                        || (url.ends_with('*') && path.starts_with(url.trim_end_matches('*')))
                })
        }
        Attributes::Resource {
            group,
            resource,
            subresource,
            verb,
            name,
            ..
        } => {
            let combined = if subresource.is_empty() {
                resource.to_string()
            } else {
                format!("{resource}/{subresource}")
            };
            let resource_matches = strs(&rule["resources"]).any(|r| {
                r == "*"
                    || r == combined
                    // `*/scale` is every resource's scale subresource.
                    || (!subresource.is_empty() && r.strip_prefix("*/") == Some(subresource))
            });
            let names: Vec<&str> = strs(&rule["resourceNames"]).collect();
            has("verbs", verb)
                && has("apiGroups", group)
                && resource_matches
                && (names.is_empty() || names.contains(&name))
        }
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
    use k8s_openapi::api::authorization::v1::{
        NonResourceAttributes, ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
        SubjectAccessReviewStatus,
    };
    use kube::Api;
    use kube::api::PostParams;

    use super::*;

    async fn review_token(
        api: &ApiDouble,
        token: &str,
        audiences: Option<Vec<String>>,
    ) -> TokenReview {
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: Some(token.into()),
                audiences,
            },
            ..Default::default()
        };
        Api::all(api.client())
            .create(&PostParams::default(), &review)
            .await
            .expect("a TokenReview is answered")
    }

    async fn review_access(
        api: &ApiDouble,
        spec: SubjectAccessReviewSpec,
    ) -> SubjectAccessReviewStatus {
        let review = SubjectAccessReview {
            spec,
            ..Default::default()
        };
        Api::all(api.client())
            .create(&PostParams::default(), &review)
            .await
            .expect("a SubjectAccessReview is answered")
            .status
            .expect("with a status")
    }

    fn sa(namespace: &str, name: &str) -> String {
        format!("system:serviceaccount:{namespace}:{name}")
    }

    /// Whether `user` in `groups` may `verb` the non-resource `path`.
    async fn may_get(api: &ApiDouble, user: &str, groups: &[&str], verb: &str, path: &str) -> bool {
        let status = review_access(
            api,
            SubjectAccessReviewSpec {
                user: Some(user.into()).filter(|u: &String| !u.is_empty()),
                groups: Some(groups.iter().map(|g| g.to_string()).collect()),
                non_resource_attributes: Some(NonResourceAttributes {
                    path: Some(path.into()),
                    verb: Some(verb.into()),
                }),
                ..Default::default()
            },
        )
        .await;
        assert_ne!(status.denied, Some(true), "RBAC never denies");
        status.allowed
    }

    fn seed_cluster_role(api: &ApiDouble, name: &str, rules: Value) {
        api.seed(
            "apis/rbac.authorization.k8s.io/v1/clusterroles",
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": name}, "rules": rules}),
        );
    }

    fn seed_binding(
        api: &ApiDouble,
        namespace: Option<&str>,
        name: &str,
        role: (&str, &str),
        subjects: Value,
    ) {
        let (resource, kind) = match namespace {
            Some(_) => ("rolebindings", "RoleBinding"),
            None => ("clusterrolebindings", "ClusterRoleBinding"),
        };
        let mut metadata = json!({"name": name});
        if let Some(ns) = namespace {
            metadata["namespace"] = json!(ns);
        }
        api.seed(
            &format!("apis/rbac.authorization.k8s.io/v1/{resource}"),
            json!({
                "apiVersion": "rbac.authorization.k8s.io/v1", "kind": kind, "metadata": metadata,
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": role.0, "name": role.1},
                "subjects": subjects,
            }),
        );
    }

    #[tokio::test]
    async fn service_account_tokens_authenticate_and_unknown_ones_do_not() {
        let api = ApiDouble::new();
        api.add_service_account_token("sa-token", "monitoring", "prometheus");
        api.add_token("user-token", "alice", &["admins"]);

        let review = review_token(
            &api,
            "sa-token",
            Some(vec!["https://kubernetes.default.svc".into()]),
        )
        .await;
        let status = review.status.expect("a status");
        assert_eq!(status.authenticated, Some(true));
        assert_eq!(status.error, None);
        assert_eq!(
            status.audiences,
            Some(vec!["https://kubernetes.default.svc".to_string()])
        );
        let user = status.user.expect("the user");
        assert_eq!(
            user.username.as_deref(),
            Some("system:serviceaccount:monitoring:prometheus")
        );
        assert_eq!(
            user.groups,
            Some(vec![
                "system:serviceaccounts".to_string(),
                "system:serviceaccounts:monitoring".to_string(),
                "system:authenticated".to_string(),
            ])
        );
        let uid = user.uid.expect("a uid");
        // Stable: the same user gets the same uid again.
        let again = review_token(&api, "sa-token", None).await.status.unwrap();
        assert_eq!(again.user.unwrap().uid.as_deref(), Some(uid.as_str()));
        assert_eq!(again.audiences, None);

        let alice = review_token(&api, "user-token", None).await.status.unwrap();
        let alice = alice.user.unwrap();
        assert_eq!(alice.username.as_deref(), Some("alice"));
        assert_eq!(
            alice.groups,
            Some(vec![
                "admins".to_string(),
                "system:authenticated".to_string()
            ])
        );
        assert_ne!(alice.uid.as_deref(), Some(uid.as_str()));

        let unknown = review_token(&api, "forged", None).await.status.unwrap();
        assert_ne!(unknown.authenticated, Some(true));
        assert_eq!(unknown.error.as_deref(), Some("invalid bearer token"));
        assert!(unknown.user.unwrap_or_default().username.is_none());

        // No token at all is a bad request, as from the API server; and nothing is stored.
        let empty = TokenReview::default();
        match Api::<TokenReview>::all(api.client())
            .create(&PostParams::default(), &empty)
            .await
        {
            Err(kube::Error::Api(s)) => assert_eq!(s.code, 400),
            other => panic!("an empty token is a bad request: {other:?}"),
        }
        assert!(api.list(TOKEN_REVIEWS).is_empty());
        assert!(
            api.requests()
                .iter()
                .all(|r| r == "POST /apis/authentication.k8s.io/v1/tokenreviews")
        );
    }

    #[tokio::test]
    async fn a_cluster_role_binding_grants_non_resource_urls_to_its_subjects_only() {
        let api = ApiDouble::new();
        seed_cluster_role(
            &api,
            "metrics-reader",
            json!([{"nonResourceURLs": ["/metrics"], "verbs": ["get"]}]),
        );
        seed_binding(
            &api,
            None,
            "prometheus-metrics",
            ("ClusterRole", "metrics-reader"),
            json!([{"kind": "ServiceAccount", "name": "prometheus", "namespace": "monitoring"}]),
        );
        let prometheus = sa("monitoring", "prometheus");
        let groups = [
            "system:serviceaccounts",
            "system:serviceaccounts:monitoring",
            "system:authenticated",
        ];

        let status = review_access(
            &api,
            SubjectAccessReviewSpec {
                user: Some(prometheus.clone()),
                groups: Some(groups.iter().map(|g| g.to_string()).collect()),
                non_resource_attributes: Some(NonResourceAttributes {
                    path: Some("/metrics".into()),
                    verb: Some("get".into()),
                }),
                ..Default::default()
            },
        )
        .await;
        assert!(status.allowed);
        assert_eq!(
            status.reason.as_deref(),
            Some(
                "RBAC: allowed by ClusterRoleBinding \"prometheus-metrics\" of ClusterRole \
                 \"metrics-reader\" to ServiceAccount \"prometheus/monitoring\""
            )
        );
        assert!(!may_get(&api, &prometheus, &groups, "post", "/metrics").await);
        assert!(!may_get(&api, &prometheus, &groups, "get", "/healthz").await);
        assert!(!may_get(&api, &prometheus, &groups, "get", "/metrics/extra").await);
        assert!(!may_get(&api, &sa("monitoring", "other"), &groups, "get", "/metrics").await);
        assert!(!may_get(&api, &sa("default", "prometheus"), &[], "get", "/metrics").await);
        // A RoleBinding never grants non-resource URLs, even of a ClusterRole.
        seed_binding(
            &api,
            Some("monitoring"),
            "local",
            ("ClusterRole", "metrics-reader"),
            json!([{"kind": "ServiceAccount", "name": "other"}]),
        );
        assert!(!may_get(&api, &sa("monitoring", "other"), &[], "get", "/metrics").await);
        assert!(api.list(SUBJECT_ACCESS_REVIEWS).is_empty());
    }

    #[tokio::test]
    async fn groups_users_and_wildcards() {
        let api = ApiDouble::new();
        seed_cluster_role(
            &api,
            "metrics-all",
            json!([{"nonResourceURLs": ["/metrics*"], "verbs": ["*"]}]),
        );
        seed_binding(
            &api,
            None,
            "scrapers",
            ("ClusterRole", "metrics-all"),
            json!([{"kind": "Group", "name": "scrapers", "apiGroup": "rbac.authorization.k8s.io"}]),
        );
        assert!(may_get(&api, "anyone", &["scrapers"], "get", "/metrics").await);
        assert!(may_get(&api, "anyone", &["scrapers"], "post", "/metrics/extra").await);
        assert!(!may_get(&api, "anyone", &["scrapers"], "get", "/metric").await);
        assert!(!may_get(&api, "anyone", &["others"], "get", "/metrics").await);
        assert!(!may_get(&api, "scrapers", &[], "get", "/metrics").await);

        seed_binding(
            &api,
            None,
            "bob",
            ("ClusterRole", "metrics-all"),
            json!([{"kind": "User", "name": "bob"}]),
        );
        assert!(may_get(&api, "bob", &[], "get", "/metrics/extra").await);
        assert!(!may_get(&api, "bobby", &[], "get", "/metrics").await);
        // The superuser group, as the API server's privileged-group authorizer allows it.
        assert!(may_get(&api, "root", &["system:masters"], "delete", "/anything").await);
    }

    #[tokio::test]
    async fn a_role_binding_grants_in_its_namespace_only() {
        let api = ApiDouble::new();
        api.seed(
            "apis/rbac.authorization.k8s.io/v1/roles",
            json!({"metadata": {"name": "pod-reader", "namespace": "apps"}, "rules": [
                {"apiGroups": [""], "resources": ["pods", "pods/log"], "verbs": ["get", "list"]},
                {"apiGroups": ["apps"], "resources": ["deployments"], "resourceNames": ["web"], "verbs": ["get"]},
            ]}),
        );
        seed_binding(
            &api,
            Some("apps"),
            "read-pods",
            ("Role", "pod-reader"),
            json!([{"kind": "ServiceAccount", "name": "reader"}]),
        );
        let reader = sa("apps", "reader");
        let check = |group: &str,
                     resource: &str,
                     subresource: &str,
                     verb: &str,
                     namespace: &str,
                     name: &str| {
            let spec = SubjectAccessReviewSpec {
                user: Some(reader.clone()),
                resource_attributes: Some(ResourceAttributes {
                    group: Some(group.into()),
                    resource: Some(resource.into()),
                    subresource: Some(subresource.into()).filter(|s: &String| !s.is_empty()),
                    verb: Some(verb.into()),
                    namespace: Some(namespace.into()),
                    name: Some(name.into()).filter(|s: &String| !s.is_empty()),
                    ..Default::default()
                }),
                ..Default::default()
            };
            let api = api.clone();
            async move { review_access(&api, spec).await }
        };

        let allowed = check("", "pods", "", "list", "apps", "").await;
        assert!(allowed.allowed);
        assert_eq!(
            allowed.reason.as_deref(),
            Some(
                "RBAC: allowed by RoleBinding \"read-pods/apps\" of Role \"pod-reader\" to \
                 ServiceAccount \"reader/apps\""
            )
        );
        assert!(check("", "pods", "log", "get", "apps", "p").await.allowed);
        assert!(!check("", "pods", "exec", "get", "apps", "p").await.allowed);
        assert!(!check("", "pods", "", "delete", "apps", "p").await.allowed);
        assert!(!check("", "pods", "", "list", "other", "").await.allowed);
        assert!(!check("", "pods", "", "list", "", "").await.allowed);
        assert!(!check("apps", "pods", "", "list", "apps", "").await.allowed);
        assert!(
            check("apps", "deployments", "", "get", "apps", "web")
                .await
                .allowed
        );
        assert!(
            !check("apps", "deployments", "", "get", "apps", "db")
                .await
                .allowed
        );
        assert!(
            !check("apps", "deployments", "", "list", "apps", "")
                .await
                .allowed
        );

        // A RoleBinding of a ClusterRole grants it in the binding's namespace only.
        seed_cluster_role(
            &api,
            "node-reader",
            json!([{"apiGroups": ["*"], "resources": ["*"], "verbs": ["watch"]}]),
        );
        seed_binding(
            &api,
            Some("apps"),
            "watch-all",
            ("ClusterRole", "node-reader"),
            json!([{"kind": "ServiceAccount", "name": "reader", "namespace": "apps"}]),
        );
        assert!(
            check("storage.k8s.io", "csinodes", "", "watch", "apps", "")
                .await
                .allowed
        );
        assert!(
            !check("storage.k8s.io", "csinodes", "", "watch", "", "")
                .await
                .allowed
        );

        // A binding to a missing role grants nothing, and says why.
        seed_binding(
            &api,
            None,
            "dangling",
            ("ClusterRole", "missing"),
            json!([{"kind": "ServiceAccount", "name": "reader", "namespace": "apps"}]),
        );
        let denied = check("", "secrets", "", "get", "apps", "s").await;
        assert!(!denied.allowed);
        assert_eq!(
            denied.reason.as_deref(),
            Some("RBAC: clusterrole.rbac.authorization.k8s.io \"missing\" not found")
        );
    }

    #[tokio::test]
    async fn a_review_without_attributes_or_subject_is_invalid() {
        let api = ApiDouble::new();
        let reviews: Api<SubjectAccessReview> = Api::all(api.client());
        for spec in [
            SubjectAccessReviewSpec {
                user: Some("bob".into()),
                ..Default::default()
            },
            SubjectAccessReviewSpec {
                non_resource_attributes: Some(NonResourceAttributes {
                    path: Some("/metrics".into()),
                    verb: Some("get".into()),
                }),
                ..Default::default()
            },
        ] {
            let review = SubjectAccessReview {
                spec,
                ..Default::default()
            };
            match reviews.create(&PostParams::default(), &review).await {
                Err(kube::Error::Api(s)) => {
                    assert_eq!((s.code, s.reason.as_str()), (422, "Invalid"))
                }
                other => panic!("an incomplete review is invalid: {other:?}"),
            }
        }
    }
}
