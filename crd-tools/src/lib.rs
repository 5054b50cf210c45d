//! Offline tooling for the CRDs: rendering `crds/`, and validating objects against a CRD's schema
//! and CEL rules the way the API server does, so bad objects are proven refused without a cluster;
//! and estimating the cost of those rules as the API server does before it accepts a CRD.

pub mod cost;
pub mod render;
pub mod validate;
