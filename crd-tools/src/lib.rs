//! Offline tooling for the CRDs: rendering `crds/`, and validating objects against a CRD's schema
//! and CEL rules the way the API server does, so bad objects are proven refused without a cluster.

pub mod render;
pub mod validate;
