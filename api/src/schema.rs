//! Hand-written schema pieces: where the derived schema is not what the API server should see.

use k8s_openapi::api::core::v1::NodeSelector;
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde_json::{Value, json};

use crate::lvmcluster::{MAX_PATH_LEN, MAX_PATHS};

/// A resource.Quantity as Kubernetes' own CRDs describe it: an int or a string in quantity syntax.
pub fn quantity_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "pattern": r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$",
        "x-kubernetes-int-or-string": true,
    })
}

/// Device paths: absolute, unique, bounded (the bounds keep the CEL rules over them cheap).
pub fn paths_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "array",
        "items": {"type": "string", "minLength": 2, "maxLength": MAX_PATH_LEN, "pattern": "^/[^\\s]*[^/\\s]$"},
        "maxItems": MAX_PATHS,
        "x-kubernetes-list-type": "set",
    })
}

/// Upstream `NodeSelector`, with list and string bounds added. The immutability rule compares the
/// whole selector (`self == oldSelf`), and the API server refuses a CRD whose rules may cost more
/// than its budget; unbounded lists and strings make that estimate unbounded.
pub fn node_selector_schema(generator: &mut SchemaGenerator) -> Schema {
    let mut schema = NodeSelector::json_schema(generator).to_value();
    bound(&mut schema, &["nodeSelectorTerms"], 16);
    for list in ["matchExpressions", "matchFields"] {
        let term = &["nodeSelectorTerms", "*", list];
        bound(&mut schema, term, 32);
        bound(&mut schema, &[term[0], term[1], term[2], "*", "values"], 64);
        max_length(&mut schema, &[term[0], term[1], term[2], "*", "key"], 317);
        max_length(
            &mut schema,
            &[term[0], term[1], term[2], "*", "operator"],
            16,
        );
        max_length(
            &mut schema,
            &[term[0], term[1], term[2], "*", "values", "*"],
            253,
        );
    }
    Schema::try_from(schema).expect("node selector schema is an object")
}

/// Walks `path` (property names, `*` for list items), resolving `$ref`s is not needed because the
/// CRD generator inlines subschemas.
fn node_at<'a>(schema: &'a mut Value, path: &[&str]) -> &'a mut Value {
    path.iter().fold(schema, |s, key| match *key {
        "*" => &mut s["items"],
        name => &mut s["properties"][name],
    })
}

fn bound(schema: &mut Value, path: &[&str], max_items: usize) {
    let node = node_at(schema, path);
    assert!(
        node.get("type").is_some(),
        "node selector schema lacks {path:?}"
    );
    node["maxItems"] = json!(max_items);
}

fn max_length(schema: &mut Value, path: &[&str], max: usize) {
    let node = node_at(schema, path);
    assert!(
        node.get("type").is_some(),
        "node selector schema lacks {path:?}"
    );
    node["maxLength"] = json!(max);
}
