//! Leader election through a coordination.k8s.io Lease, so two operator replicas never reconcile
//! at once. The decision is a pure function of the lease; the API server's resourceVersion check
//! makes concurrent takeovers safe (one replace wins, the other gets 409 Conflict).

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, PostParams};

#[derive(Debug, PartialEq, Eq)]
pub enum Decision {
    /// We hold the lease: renew it.
    Renew,
    /// Nobody holds it, or the holder stopped renewing: take it over.
    Acquire,
    /// Someone else holds a live lease.
    Wait,
}

pub fn decide(spec: Option<&LeaseSpec>, identity: &str, now: Timestamp) -> Decision {
    let Some(spec) = spec else {
        return Decision::Acquire;
    };
    match spec.holder_identity.as_deref() {
        Some(h) if h == identity => Decision::Renew,
        None | Some("") => Decision::Acquire,
        Some(_) => {
            let renewed = spec
                .renew_time
                .as_ref()
                .map(|t| t.0)
                .unwrap_or(Timestamp::UNIX_EPOCH);
            let ttl = SignedDuration::from_secs(spec.lease_duration_seconds.unwrap_or(15).into());
            if renewed.checked_add(ttl).is_ok_and(|expiry| expiry < now) {
                Decision::Acquire
            } else {
                Decision::Wait
            }
        }
    }
}

pub struct LeaderElector {
    api: Api<Lease>,
    name: String,
    identity: String,
    pub lease_duration: Duration,
}

impl LeaderElector {
    pub fn new(api: Api<Lease>, name: &str, identity: &str, lease_duration: Duration) -> Self {
        Self {
            api,
            name: name.into(),
            identity: identity.into(),
            lease_duration,
        }
    }

    /// One round: true when we hold the lease afterwards.
    pub async fn try_acquire_or_renew(&self) -> Result<bool, kube::Error> {
        let now = Timestamp::now();
        let current = self.api.get_opt(&self.name).await?;
        let spec = current.as_ref().and_then(|l| l.spec.as_ref());
        let decision = decide(spec, &self.identity, now);
        if decision == Decision::Wait {
            return Ok(false);
        }
        let mut new_spec = spec.cloned().unwrap_or_default();
        if decision == Decision::Acquire {
            new_spec.holder_identity = Some(self.identity.clone());
            new_spec.acquire_time = Some(MicroTime(now));
            new_spec.lease_transitions =
                Some(new_spec.lease_transitions.unwrap_or(0) + i32::from(current.is_some()));
        }
        new_spec.renew_time = Some(MicroTime(now));
        new_spec.lease_duration_seconds = Some(self.lease_duration.as_secs() as i32);
        let result = match current {
            Some(mut lease) => {
                lease.spec = Some(new_spec);
                self.api
                    .replace(&self.name, &PostParams::default(), &lease)
                    .await
            }
            None => {
                let mut lease = Lease {
                    spec: Some(new_spec),
                    ..Default::default()
                };
                lease.metadata.name = Some(self.name.clone());
                self.api.create(&PostParams::default(), &lease).await
            }
        };
        match result {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(holder: &str, renewed: i64) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(holder.into()),
            renew_time: Some(MicroTime(Timestamp::from_second(renewed).unwrap())),
            lease_duration_seconds: Some(15),
            ..Default::default()
        }
    }

    #[test]
    fn decisions() {
        let now = Timestamp::from_second(1000).unwrap();
        assert_eq!(decide(None, "me", now), Decision::Acquire);
        assert_eq!(decide(Some(&lease("me", 990)), "me", now), Decision::Renew);
        assert_eq!(
            decide(Some(&lease("other", 990)), "me", now),
            Decision::Wait
        );
        assert_eq!(
            decide(Some(&lease("other", 980)), "me", now),
            Decision::Acquire,
            "expired 5 s ago"
        );
        assert_eq!(decide(Some(&lease("", 999)), "me", now), Decision::Acquire);
    }
}
