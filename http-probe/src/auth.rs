//! Who may read `/metrics`: the API server decides. A bearer token is checked with a TokenReview,
//! and the user it names with a SubjectAccessReview for the request's verb on its non-resource
//! path, as controller-runtime's `WithAuthenticationAndAuthorization` filter does; a ClusterRole
//! with `nonResourceURLs: ["/metrics"]` and verb `get` grants it.
//!
//! Verdicts are cached for a short while, keyed by a SHA-256 of the token (the token itself is
//! neither kept nor logged): Prometheus scrapes every 30 s, and each scrape would otherwise cost
//! two API requests.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hyper::header::HeaderValue;
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::authorization::v1::{
    NonResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use kube::Api;
use kube::api::PostParams;
use tracing::{debug, warn};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Allowed,
    /// No token, or one the API server does not accept: 401.
    Unauthenticated,
    /// A user without the permission: 403.
    Forbidden,
    /// The API server could not be asked: 503, not cached.
    Unavailable,
}

/// How long verdicts are kept: a revoked permission keeps working for up to `allowed`, a new
/// grant (or a token that was not yet valid) takes effect within `denied`.
#[derive(Debug, Clone, Copy)]
pub struct CacheTtl {
    pub allowed: Duration,
    pub denied: Duration,
}

impl Default for CacheTtl {
    fn default() -> Self {
        CacheTtl {
            allowed: Duration::from_secs(60),
            denied: Duration::from_secs(10),
        }
    }
}

/// Entries kept at most; past it, expired ones go, and if none has expired, all do (a flood of
/// random tokens must not grow memory).
const MAX_ENTRIES: usize = 1024;

type Key = [u8; 32];

pub struct Authorizer {
    client: kube::Client,
    ttl: CacheTtl,
    cache: Mutex<HashMap<Key, (Verdict, Instant)>>,
}

impl Authorizer {
    pub fn new(client: kube::Client) -> Self {
        Self::with_ttl(client, CacheTtl::default())
    }

    pub fn with_ttl(client: kube::Client, ttl: CacheTtl) -> Self {
        Authorizer {
            client,
            ttl,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// The verdict on a request with this `Authorization` header for `verb` on `path`.
    pub async fn check(&self, header: Option<&HeaderValue>, path: &str, verb: &str) -> Verdict {
        let Some(token) = header.and_then(bearer) else {
            return Verdict::Unauthenticated;
        };
        let key = cache_key(token, path, verb);
        if let Some(v) = self.cached(&key) {
            return v;
        }
        let verdict = self.review(token, path, verb).await;
        if verdict != Verdict::Unavailable {
            self.remember(key, verdict);
        }
        verdict
    }

    fn cached(&self, key: &Key) -> Option<Verdict> {
        let cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        cache
            .get(key)
            .filter(|(_, until)| Instant::now() < *until)
            .map(|(v, _)| *v)
    }

    fn remember(&self, key: Key, verdict: Verdict) {
        let ttl = match verdict {
            Verdict::Allowed => self.ttl.allowed,
            _ => self.ttl.denied,
        };
        let now = Instant::now();
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() >= MAX_ENTRIES {
            cache.retain(|_, (_, until)| now < *until);
            if cache.len() >= MAX_ENTRIES {
                cache.clear();
            }
        }
        cache.insert(key, (verdict, now + ttl));
    }

    async fn review(&self, token: &str, path: &str, verb: &str) -> Verdict {
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: Some(token.to_string()),
                audiences: None,
            },
            ..Default::default()
        };
        let pp = PostParams::default();
        let review = match Api::<TokenReview>::all(self.client.clone())
            .create(&pp, &review)
            .await
        {
            Ok(r) => r,
            Err(e) => {
                warn!(error = %e, "TokenReview for a metrics request failed");
                return Verdict::Unavailable;
            }
        };
        let status = review.status.unwrap_or_default();
        let user = match (status.authenticated, status.user) {
            (Some(true), Some(user)) => user,
            _ => {
                debug!(path, "metrics request with a token the API server rejects");
                return Verdict::Unauthenticated;
            }
        };
        let access = SubjectAccessReview {
            spec: SubjectAccessReviewSpec {
                user: user.username.clone(),
                groups: user.groups,
                uid: user.uid,
                extra: user.extra,
                non_resource_attributes: Some(NonResourceAttributes {
                    path: Some(path.to_string()),
                    verb: Some(verb.to_string()),
                }),
                resource_attributes: None,
            },
            ..Default::default()
        };
        match Api::<SubjectAccessReview>::all(self.client.clone())
            .create(&pp, &access)
            .await
        {
            Ok(r) if r.status.as_ref().is_some_and(|s| s.allowed) => Verdict::Allowed,
            Ok(_) => {
                debug!(user = ?user.username, path, verb, "metrics request not authorized");
                Verdict::Forbidden
            }
            Err(e) => {
                warn!(error = %e, "SubjectAccessReview for a metrics request failed");
                Verdict::Unavailable
            }
        }
    }
}

/// The token of `Authorization: Bearer <token>` (the scheme is case-insensitive, RFC 6750).
fn bearer(header: &HeaderValue) -> Option<&str> {
    let value = header.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

fn cache_key(token: &str, path: &str, verb: &str) -> Key {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    for part in [token, path, verb] {
        ctx.update(part.as_bytes());
        ctx.update(&[0]);
    }
    let mut key = [0u8; 32];
    key.copy_from_slice(ctx.finish().as_ref());
    key
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_tokens_only() {
        let h = |s: &'static str| HeaderValue::from_static(s);
        assert_eq!(bearer(&h("Bearer abc")), Some("abc"));
        assert_eq!(bearer(&h("bearer  abc ")), Some("abc"));
        assert_eq!(bearer(&h("Basic abc")), None);
        assert_eq!(bearer(&h("Bearer ")), None);
        assert_eq!(bearer(&h("Bearer")), None);
    }

    #[test]
    fn cache_keys_separate_token_path_and_verb() {
        assert_ne!(
            cache_key("a", "/metrics", "get"),
            cache_key("b", "/metrics", "get")
        );
        assert_ne!(
            cache_key("a", "/metrics", "get"),
            cache_key("a", "/metricsx", "get")
        );
        assert_ne!(cache_key("ab", "c", "get"), cache_key("a", "bc", "get"));
    }
}
