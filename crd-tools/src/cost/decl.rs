//! The CEL type of a schema node as kube-apiserver derives it (`SchemaDeclType`), with the two
//! numbers the cost estimator reads: the largest size a value can have (`max_elements`: string
//! bytes, list items, map entries) and the smallest it can serialize to (`min_size`, which bounds
//! how many copies fit in one request when nothing else does).

use std::collections::BTreeMap;
use std::rc::Rc;

use serde_json::Value;

/// The largest request the API server accepts; every unbounded size is derived from it.
pub const MAX_REQUEST_SIZE_BYTES: u64 = 3 * 1024 * 1024;

// Serialized sizes the server assumes (k8s.io/apiserver/pkg/cel/types.go).
const MIN_STRING_SIZE: u64 = 2; // ""
const MIN_BOOL_SIZE: u64 = 4; // true
const MIN_NUMBER_SIZE: u64 = 1; // 0
const MIN_DURATION_SIZE_JSON: u64 = 4; // "0s"
const MAX_DURATION_SIZE_JSON: u64 = 32;
const JSON_DATE_SIZE: u64 = 12; // "2006-01-02"
const MIN_DATETIME_SIZE_JSON: u64 = 22; // "2006-01-02T15:04:05Z"
const MAX_DATETIME_SIZE_JSON: u64 = 37; // "2006-01-02T15:04:05.999999999+07:00"

#[derive(Debug)]
pub enum Kind {
    /// An object with known properties (CEL struct); keys are the escaped CEL field names.
    Object(BTreeMap<String, Rc<Decl>>),
    List(Rc<Decl>),
    /// additionalProperties: a map from string keys.
    Map(Rc<Decl>),
    /// x-kubernetes-int-or-string: the server types it `dyn`, whatever bounds it has.
    Dyn,
    String,
    Bytes,
    Int,
    Double,
    Bool,
    Timestamp,
    Duration,
}

#[derive(Debug)]
pub struct Decl {
    pub kind: Kind,
    pub max_elements: u64,
    pub min_size: u64,
}

impl Decl {
    fn new(kind: Kind, max_elements: u64, min_size: u64) -> Rc<Self> {
        Rc::new(Self {
            kind,
            max_elements,
            min_size,
        })
    }

    /// The key type of a map: the server's plain `StringType`, whose size it does not bound.
    pub fn map_key() -> Rc<Self> {
        Self::new(Kind::String, 0, MIN_STRING_SIZE)
    }
}

fn uint(schema: &Value, key: &str) -> Option<u64> {
    schema
        .get(key)
        .and_then(Value::as_i64)
        .map(|v| v.max(0) as u64)
}

fn is_true(schema: &Value, key: &str) -> bool {
    schema.get(key) == Some(&Value::Bool(true))
}

/// `estimateMaxArrayItemsFromMinSize`: items of `min` bytes plus a comma, inside `[]`.
fn max_list_items(min: u64) -> u64 {
    (MAX_REQUEST_SIZE_BYTES - 2) / (min + 1)
}

/// `estimateMaxAdditionalPropertiesFromMinSize`: `"":` and a comma around each value, inside `{}`.
fn max_map_entries(min: u64) -> u64 {
    (MAX_REQUEST_SIZE_BYTES - 2) / (min + 6)
}

/// `maxCardinality`: how many values of at least `min_size` bytes fit in one request; the
/// number of times a rule may run when a list or map above it is unbounded.
pub fn max_cardinality(min_size: u64) -> u64 {
    MAX_REQUEST_SIZE_BYTES / (min_size + 1)
}

/// The CEL type of `schema`; `None` where the server gives CEL no access (no type and not
/// int-or-string, e.g. x-kubernetes-preserve-unknown-fields alone). `resource_root` adds the
/// fields every resource root has (apiVersion, kind, metadata.name/generateName).
pub fn decl_type(schema: &Value, resource_root: bool) -> Option<Rc<Decl>> {
    if is_true(schema, "x-kubernetes-int-or-string") {
        // The smallest serialized int-or-string is `0`; its largest string the whole request.
        return Some(Decl::new(Kind::Dyn, MAX_REQUEST_SIZE_BYTES - 2, 1));
    }
    let ty = schema.get("type").and_then(Value::as_str);
    let ty = if resource_root { Some("object") } else { ty };
    match ty? {
        "array" => {
            let items = schema.get("items")?;
            let elem = decl_type(items, is_true(items, "x-kubernetes-embedded-resource"))?;
            let max = uint(schema, "maxItems").unwrap_or_else(|| max_list_items(elem.min_size));
            Some(Decl::new(Kind::List(elem), max, 2))
        }
        "object" => {
            if let Some(add) = schema.get("additionalProperties").filter(|a| a.is_object()) {
                let value = decl_type(add, is_true(add, "x-kubernetes-embedded-resource"))?;
                let max = uint(schema, "maxProperties")
                    .unwrap_or_else(|| max_map_entries(value.min_size));
                return Some(Decl::new(Kind::Map(value), max, 2));
            }
            Some(object(schema, resource_root))
        }
        "string" => Some(string(schema)),
        "boolean" => Some(Decl::new(Kind::Bool, 0, MIN_BOOL_SIZE)),
        "number" => Some(Decl::new(Kind::Double, 0, MIN_NUMBER_SIZE)),
        "integer" => Some(Decl::new(Kind::Int, 0, MIN_NUMBER_SIZE)),
        _ => None,
    }
}

fn object(schema: &Value, resource_root: bool) -> Rc<Decl> {
    let required: Vec<&str> = schema
        .get("required")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    let mut fields = BTreeMap::new();
    // An object is at least `{}`, plus each required property that has no default.
    let mut min_size = 2;
    let mut props: Vec<(String, Value)> = schema
        .get("properties")
        .and_then(Value::as_object)
        .map(|p| p.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
        .unwrap_or_default();
    if resource_root {
        // apiVersion, kind and metadata.name/generateName are always readable at a resource root.
        let string = serde_json::json!({"type": "string"});
        let meta = serde_json::json!({"type": "object", "properties": {"name": string, "generateName": string}});
        for (name, s) in [
            ("apiVersion", &string),
            ("kind", &string),
            ("metadata", &meta),
        ] {
            props.retain(|(k, _)| k != name);
            props.push((name.to_string(), s.clone()));
        }
    }
    for (name, prop) in &props {
        let Some(field) = decl_type(prop, is_true(prop, "x-kubernetes-embedded-resource")) else {
            continue;
        };
        if required.contains(&name.as_str()) && prop.get("default").is_none() {
            min_size += name.len() as u64 + field.min_size + 4;
        }
        if let Some(escaped) = escape(name) {
            fields.insert(escaped, field);
        }
    }
    Decl::new(Kind::Object(fields), 0, min_size)
}

fn string(schema: &Value) -> Rc<Decl> {
    let max_length = uint(schema, "maxLength");
    match schema.get("format").and_then(Value::as_str) {
        Some("byte") => Decl::new(
            Kind::Bytes,
            max_length.unwrap_or(MAX_REQUEST_SIZE_BYTES - 2),
            MIN_STRING_SIZE,
        ),
        Some("duration") => Decl::new(
            Kind::Duration,
            MAX_DURATION_SIZE_JSON,
            MIN_DURATION_SIZE_JSON,
        ),
        Some("date") => Decl::new(Kind::Timestamp, JSON_DATE_SIZE, JSON_DATE_SIZE),
        Some("date-time") => Decl::new(
            Kind::Timestamp,
            MAX_DATETIME_SIZE_JSON,
            MIN_DATETIME_SIZE_JSON,
        ),
        _ => {
            // maxLength counts characters; a character may take four bytes, and sizes are bytes.
            let max = match (max_length, schema.get("enum").and_then(Value::as_array)) {
                (Some(n), _) => n * 4,
                (None, Some(values)) if !values.is_empty() => values
                    .iter()
                    .filter_map(Value::as_str)
                    .map(|s| s.len() as u64)
                    .max()
                    .unwrap_or(0),
                _ => MAX_REQUEST_SIZE_BYTES - 2,
            };
            Decl::new(Kind::String, max, MIN_STRING_SIZE)
        }
    }
}

const CEL_RESERVED: &[&str] = &[
    "true",
    "false",
    "null",
    "in",
    "as",
    "break",
    "const",
    "continue",
    "else",
    "for",
    "function",
    "if",
    "import",
    "let",
    "loop",
    "package",
    "namespace",
    "return",
    "var",
    "void",
    "while",
];

/// The CEL name of a property (`apiservercel.Escape`): reserved words become `__word__`, and `_`
/// runs, `.`, `-` and `/` are spelled out; `None` for names CEL cannot reach.
pub fn escape(name: &str) -> Option<String> {
    if CEL_RESERVED.contains(&name) {
        return Some(format!("__{name}__"));
    }
    let first = name.chars().next()?;
    if !(first.is_ascii_alphabetic() || first == '_') {
        return None;
    }
    let mut out = String::new();
    let mut rest = name;
    while let Some(c) = rest.chars().next() {
        if rest.starts_with("__") {
            out.push_str("__underscores__");
            rest = &rest[2..];
            continue;
        }
        match c {
            '.' => out.push_str("__dot__"),
            '-' => out.push_str("__dash__"),
            '/' => out.push_str("__slash__"),
            c if c.is_ascii_alphanumeric() || c == '_' => out.push(c),
            _ => return None,
        }
        rest = &rest[c.len_utf8()..];
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn bounds_come_from_the_schema_or_from_the_request_size() {
        let s = decl_type(&json!({"type": "string", "maxLength": 32}), false).unwrap();
        assert_eq!(
            s.max_elements, 128,
            "maxLength counts characters of up to 4 bytes"
        );
        let s = decl_type(&json!({"type": "string"}), false).unwrap();
        assert_eq!(s.max_elements, MAX_REQUEST_SIZE_BYTES - 2);
        let s = decl_type(
            &json!({"type": "string", "enum": ["Host", "Static"]}),
            false,
        )
        .unwrap();
        assert_eq!(s.max_elements, 6);
        let d = decl_type(
            &json!({"x-kubernetes-int-or-string": true, "maxLength": 8}),
            false,
        )
        .unwrap();
        assert_eq!(
            d.max_elements,
            MAX_REQUEST_SIZE_BYTES - 2,
            "int-or-string ignores maxLength"
        );
        let l = decl_type(
            &json!({"type": "array", "items": {"type": "string"}}),
            false,
        )
        .unwrap();
        assert_eq!(l.max_elements, (MAX_REQUEST_SIZE_BYTES - 2) / 3);
        let o = decl_type(
            &json!({"type": "object", "required": ["name"], "properties": {"name": {"type": "string"}}}),
            false,
        )
        .unwrap();
        assert_eq!(o.min_size, 2 + 4 + 2 + 4);
    }

    #[test]
    fn property_names_are_escaped_like_the_server_does() {
        assert_eq!(
            escape("a-b.c/d").as_deref(),
            Some("a__dash__b__dot__c__slash__d")
        );
        assert_eq!(escape("namespace").as_deref(), Some("__namespace__"));
        assert_eq!(escape("x__y").as_deref(), Some("x__underscores__y"));
        assert_eq!(escape("1abc"), None);
    }
}
