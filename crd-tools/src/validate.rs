//! Validates an object against a CRD version's `openAPIV3Schema` the way the API server does:
//! defaulting, then the structural checks (types, enums, patterns, bounds, required fields, unknown
//! fields, list-type uniqueness), then every `x-kubernetes-validations` CEL rule, with `oldSelf`
//! correlated as the API server correlates it (map lists by key, never by index).
//!
//! It exists so the schema can be proven to refuse bad objects without a cluster; the CEL library
//! (kube-cel) provides Kubernetes' extension functions such as `quantity()`.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube_cel::KubeCelExt;
use kube_cel::cel::objects::Key;
use kube_cel::cel::{Context, Program, Value as CelValue};
use serde_json::{Map, Value};

/// One refusal, phrased like the API server's: the field path, then what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub path: String,
    pub message: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// The schema of one served version of a CRD.
pub struct SchemaValidator {
    schema: Value,
}

impl SchemaValidator {
    /// The validator for `version` of `crd`; panics when the CRD has no such version or schema,
    /// which is a bug in the generator, not in the object under test.
    pub fn new(crd: &CustomResourceDefinition, version: &str) -> Self {
        let v = crd
            .spec
            .versions
            .iter()
            .find(|v| v.name == version)
            .expect("version served");
        let schema = v
            .schema
            .as_ref()
            .and_then(|s| s.open_api_v3_schema.as_ref())
            .expect("schema");
        Self {
            schema: serde_json::to_value(schema).expect("schema serializes"),
        }
    }

    /// Validates a create: returns the defaulted object, or every error found.
    pub fn create(&self, obj: &Value) -> Result<Value, Vec<FieldError>> {
        self.check(obj, None)
    }

    /// Validates an update of `old` (as stored) to `obj`, transition rules included.
    pub fn update(&self, obj: &Value, old: &Value) -> Result<Value, Vec<FieldError>> {
        let old = default(&self.schema, old);
        self.check(obj, Some(&old))
    }

    fn check(&self, obj: &Value, old: Option<&Value>) -> Result<Value, Vec<FieldError>> {
        let obj = default(&self.schema, obj);
        let mut errors = Vec::new();
        // apiVersion, kind and metadata are validated by the API server itself, not the schema.
        let mut body = obj.clone();
        if let Some(m) = body.as_object_mut() {
            for k in ["apiVersion", "kind", "metadata"] {
                m.remove(k);
            }
        }
        structural(&self.schema, &body, "", &mut errors);
        if errors.is_empty() {
            // Like the API server, CEL runs only on objects that passed the structural checks.
            let ctx = context();
            let mut programs = HashMap::new();
            cel_walk(
                &self.schema,
                &body,
                old,
                "",
                &ctx,
                &mut programs,
                &mut errors,
            );
        }
        if errors.is_empty() {
            Ok(obj)
        } else {
            Err(errors)
        }
    }
}

/// The structural checks alone (no defaulting, no CEL) of `value` against a schema node: used to
/// prove that every `default` in a schema is itself valid, as the API server requires.
pub fn check_value(schema: &Value, value: &Value, path: &str) -> Vec<FieldError> {
    let mut errors = Vec::new();
    structural(schema, value, path, &mut errors);
    errors
}

/// A field set to null that its schema does not allow: the API server drops it, or defaults it
/// when the schema has a default (apiextensions' PruneNonNullableNullsWithoutDefaults, then
/// defaulting), before any validation. So `thinPoolConfig: null` is the field removed.
fn null_field(out: &mut serde_json::Map<String, Value>, key: &str, schema: &Value) {
    if out.get(key).is_some_and(Value::is_null)
        && schema.get("nullable") != Some(&Value::Bool(true))
    {
        match schema.get("default") {
            Some(d) => {
                out.insert(key.to_string(), d.clone());
            }
            None => {
                out.remove(key);
            }
        }
    }
}

/// Applies schema defaults top-down; a defaulted object gets its own nested defaults too. Nulls
/// the schema does not allow are dropped or defaulted first, as the API server does.
pub fn default(schema: &Value, value: &Value) -> Value {
    match value {
        Value::Object(obj) => {
            let mut out = obj.clone();
            if let Some(props) = schema.get("properties").and_then(Value::as_object) {
                for (k, s) in props {
                    null_field(&mut out, k, s);
                }
                for (k, s) in props {
                    if !out.contains_key(k)
                        && let Some(d) = s.get("default")
                    {
                        out.insert(k.clone(), d.clone());
                    }
                }
                for (k, v) in out.iter_mut() {
                    if let Some(s) = props.get(k) {
                        *v = default(s, v);
                    }
                }
            } else if let Some(add) = schema.get("additionalProperties").filter(|a| a.is_object()) {
                let keys: Vec<String> = out.keys().cloned().collect();
                for k in keys {
                    null_field(&mut out, &k, add);
                }
                for v in out.values_mut() {
                    *v = default(add, v);
                }
            }
            Value::Object(out)
        }
        Value::Array(items) => match schema.get("items") {
            Some(s) => Value::Array(items.iter().map(|i| default(s, i)).collect()),
            None => value.clone(),
        },
        _ => value.clone(),
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

fn short(v: &Value) -> String {
    let s = v.to_string();
    if s.len() > 80 {
        format!("{}...", &s[..77])
    } else {
        s
    }
}

fn invalid(errors: &mut Vec<FieldError>, path: &str, v: &Value, why: String) {
    errors.push(FieldError {
        path: path.into(),
        message: format!("Invalid value: {}: {why}", short(v)),
    });
}

fn structural(schema: &Value, v: &Value, path: &str, errors: &mut Vec<FieldError>) {
    let get = |k: &str| schema.get(k);
    let num = |k: &str| get(k).and_then(Value::as_f64);
    if v.is_null() {
        if get("nullable") != Some(&Value::Bool(true)) {
            errors.push(FieldError {
                path: path.into(),
                message: "Invalid value: null: must not be null".into(),
            });
        }
        return;
    }
    let int_or_string = get("x-kubernetes-int-or-string") == Some(&Value::Bool(true));
    let ty = get("type").and_then(Value::as_str);
    let type_ok = match (ty, int_or_string) {
        (_, true) => v.is_string() || v.is_i64() || v.is_u64(),
        (Some("object"), _) => v.is_object(),
        (Some("array"), _) => v.is_array(),
        (Some("string"), _) => v.is_string(),
        (Some("integer"), _) => v.is_i64() || v.is_u64(),
        (Some("number"), _) => v.is_number(),
        (Some("boolean"), _) => v.is_boolean(),
        _ => true,
    };
    if !type_ok {
        let want = if int_or_string {
            "integer or string"
        } else {
            ty.unwrap_or("?")
        };
        invalid(
            errors,
            path,
            v,
            format!("{path} in body must be of type {want}"),
        );
        return;
    }
    if let Some(allowed) = get("enum").and_then(Value::as_array)
        && !allowed.contains(v)
    {
        let list: Vec<String> = allowed.iter().map(Value::to_string).collect();
        errors.push(FieldError {
            path: path.into(),
            message: format!(
                "Unsupported value: {}: supported values: {}",
                short(v),
                list.join(", ")
            ),
        });
    }
    match v {
        Value::String(s) => {
            let len = s.chars().count() as f64;
            if num("minLength").is_some_and(|m| len < m) {
                invalid(
                    errors,
                    path,
                    v,
                    format!(
                        "{path} in body should be at least {} chars long",
                        num("minLength").unwrap()
                    ),
                );
            }
            if num("maxLength").is_some_and(|m| len > m) {
                errors.push(FieldError {
                    path: path.into(),
                    message: format!(
                        "Too long: may not be longer than {}",
                        num("maxLength").unwrap()
                    ),
                });
            }
            if let Some(p) = get("pattern").and_then(Value::as_str) {
                let re = regex::Regex::new(p)
                    .unwrap_or_else(|e| panic!("schema pattern {p} at {path}: {e}"));
                if !re.is_match(s) {
                    invalid(
                        errors,
                        path,
                        v,
                        format!("{path} in body should match '{p}'"),
                    );
                }
            }
        }
        Value::Number(n) => {
            let x = n.as_f64().unwrap_or_default();
            if let Some(m) = num("minimum").filter(|m| x < *m) {
                invalid(
                    errors,
                    path,
                    v,
                    format!("{path} in body should be greater than or equal to {m}"),
                );
            }
            if let Some(m) = num("maximum").filter(|m| x > *m) {
                invalid(
                    errors,
                    path,
                    v,
                    format!("{path} in body should be less than or equal to {m}"),
                );
            }
        }
        Value::Array(items) => {
            let n = items.len() as f64;
            if let Some(m) = num("minItems").filter(|m| n < *m) {
                invalid(
                    errors,
                    path,
                    v,
                    format!("{path} in body should have at least {m} items"),
                );
            }
            if let Some(m) = num("maxItems").filter(|m| n > *m) {
                errors.push(FieldError {
                    path: path.into(),
                    message: format!("Too many: {n}: must have at most {m} items"),
                });
            }
            list_uniqueness(schema, items, path, errors);
            if let Some(item_schema) = get("items") {
                for (i, item) in items.iter().enumerate() {
                    structural(item_schema, item, &format!("{path}[{i}]"), errors);
                }
            }
        }
        Value::Object(obj) => object(schema, obj, path, errors),
        _ => {}
    }
}

fn object(schema: &Value, obj: &Map<String, Value>, path: &str, errors: &mut Vec<FieldError>) {
    if let Some(m) = schema
        .get("maxProperties")
        .and_then(Value::as_f64)
        .filter(|m| obj.len() as f64 > *m)
    {
        errors.push(FieldError {
            path: path.into(),
            message: format!("Too many: {}: must have at most {m} items", obj.len()),
        });
    }
    for req in schema
        .get("required")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let key = req.as_str().unwrap_or_default();
        if !obj.contains_key(key) {
            errors.push(FieldError {
                path: join(path, key),
                message: "Required value".into(),
            });
        }
    }
    let props = schema.get("properties").and_then(Value::as_object);
    let additional = schema.get("additionalProperties").filter(|a| a.is_object());
    let preserve = schema.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true));
    for (k, child) in obj {
        let p = join(path, k);
        match (props.and_then(|ps| ps.get(k)), additional) {
            (Some(s), _) | (None, Some(s)) => structural(s, child, &p, errors),
            // With no properties at all the object is free-form (e.g. `{}` status types).
            (None, None) if !preserve && props.is_some_and(|ps| !ps.is_empty()) => {
                errors.push(FieldError {
                    path: p,
                    message: "field not declared in schema".into(),
                })
            }
            (None, None) => {}
        }
    }
}

fn list_uniqueness(schema: &Value, items: &[Value], path: &str, errors: &mut Vec<FieldError>) {
    let keys = |item: &Value| -> Value {
        match schema
            .get("x-kubernetes-list-map-keys")
            .and_then(Value::as_array)
        {
            Some(ks) => Value::Object(
                ks.iter()
                    .filter_map(Value::as_str)
                    .map(|k| (k.to_string(), item.get(k).cloned().unwrap_or(Value::Null)))
                    .collect(),
            ),
            None => item.clone(),
        }
    };
    let kind = schema.get("x-kubernetes-list-type").and_then(Value::as_str);
    if !matches!(kind, Some("map") | Some("set")) {
        return;
    }
    let mut seen: Vec<Value> = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let k = keys(item);
        if seen.contains(&k) {
            errors.push(FieldError {
                path: format!("{path}[{i}]"),
                message: format!("Duplicate value: {}", short(&k)),
            });
        }
        seen.push(k);
    }
}

/// Finds the old item that corresponds to `item` in a list, as the API server does: by key in a
/// map list; never for other lists (their items are not correlatable).
fn correlate<'a>(schema: &Value, item: &Value, old_list: Option<&'a Value>) -> Option<&'a Value> {
    if schema.get("x-kubernetes-list-type").and_then(Value::as_str) != Some("map") {
        return None;
    }
    let keys: Vec<&str> = schema
        .get("x-kubernetes-list-map-keys")?
        .as_array()?
        .iter()
        .filter_map(Value::as_str)
        .collect();
    old_list?
        .as_array()?
        .iter()
        .find(|o| keys.iter().all(|k| o.get(*k) == item.get(*k)))
}

fn cel_walk(
    schema: &Value,
    v: &Value,
    old: Option<&Value>,
    path: &str,
    ctx: &Context,
    programs: &mut HashMap<String, Program>,
    errors: &mut Vec<FieldError>,
) {
    for rule in schema
        .get("x-kubernetes-validations")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        eval_rule(schema, rule, v, old, path, ctx, programs, errors);
    }
    match v {
        Value::Object(obj) => {
            let props = schema.get("properties").and_then(Value::as_object);
            let additional = schema.get("additionalProperties").filter(|a| a.is_object());
            for (k, child) in obj {
                if let Some(s) = props.and_then(|p| p.get(k)).or(additional) {
                    let old_child = old.and_then(|o| o.get(k));
                    cel_walk(s, child, old_child, &join(path, k), ctx, programs, errors);
                }
            }
        }
        Value::Array(items) => {
            if let Some(s) = schema.get("items") {
                for (i, item) in items.iter().enumerate() {
                    let old_item = correlate(schema, item, old);
                    cel_walk(
                        s,
                        item,
                        old_item,
                        &format!("{path}[{i}]"),
                        ctx,
                        programs,
                        errors,
                    );
                }
            }
        }
        _ => {}
    }
}

#[allow(clippy::too_many_arguments)]
fn eval_rule(
    schema: &Value,
    rule: &Value,
    v: &Value,
    old: Option<&Value>,
    path: &str,
    ctx: &Context,
    programs: &mut HashMap<String, Program>,
    errors: &mut Vec<FieldError>,
) {
    let text = rule.get("rule").and_then(Value::as_str).unwrap_or_default();
    let transition = text
        .split(|c: char| !c.is_alphanumeric() && c != '_')
        .any(|w| w == "oldSelf");
    if transition && old.is_none() {
        return; // transition rules apply to updates of a value that existed before
    }
    let program = programs.entry(text.to_string()).or_insert_with(|| {
        Program::compile(text)
            .unwrap_or_else(|e| panic!("rule `{text}` at {path} does not compile: {e}"))
    });
    let mut scope = ctx.new_inner_scope();
    scope.add_variable_from_value("self", to_cel(v));
    if let Some(o) = old {
        scope.add_variable_from_value("oldSelf", to_cel(o));
    }
    let at = match rule.get("fieldPath").and_then(Value::as_str) {
        Some(fp) => format!("{path}{fp}"),
        None => path.to_string(),
    };
    let message = rule
        .get("message")
        .and_then(Value::as_str)
        .map(str::to_string)
        .unwrap_or_else(|| format!("failed rule: {text}"));
    match program.execute(&scope) {
        Ok(CelValue::Bool(true)) => {}
        // The server names the schema type of the rule's node, not the value, as the "value".
        Ok(CelValue::Bool(false)) => {
            let node_type = Value::String(schema_type(schema).into());
            invalid(errors, &at, &node_type, message)
        }
        Ok(other) => panic!("rule `{text}` at {path} returned {other:?}, not a bool"),
        // The API server reports evaluation errors as refusals too; a rule that errors on a valid
        // object is a bug the tests must see, so keep the evaluator's words.
        Err(e) => invalid(
            errors,
            &at,
            v,
            format!("rule `{text}` could not be evaluated: {e}"),
        ),
    }
}

/// A node's `type` as the API server prints it in CEL refusals (empty for int-or-string).
fn schema_type(schema: &Value) -> &str {
    schema.get("type").and_then(Value::as_str).unwrap_or("")
}

/// Kubernetes' CEL environment, with what the `cel` crate lacks and our rules use: `type()` and
/// the type names it is compared with (`type(self.chunkSize) == int`). Types are represented by
/// their names, which is all an equality test can tell apart.
fn context() -> Context<'static> {
    let mut ctx = Context::default().with_all();
    ctx.add_function("type", cel_type);
    for name in [
        "int",
        "uint",
        "double",
        "bool",
        "string",
        "bytes",
        "list",
        "map",
        "null_type",
    ] {
        ctx.add_variable_from_value(name, CelValue::String(Arc::new(name.to_string())));
    }
    ctx
}

fn cel_type(v: CelValue) -> kube_cel::cel::ResolveResult {
    let name = match v {
        CelValue::Int(_) => "int",
        CelValue::UInt(_) => "uint",
        CelValue::Float(_) => "double",
        CelValue::Bool(_) => "bool",
        CelValue::String(_) => "string",
        CelValue::Bytes(_) => "bytes",
        CelValue::List(_) => "list",
        CelValue::Map(_) => "map",
        CelValue::Null => "null_type",
        other => {
            return Err(kube_cel::cel::ExecutionError::function_error(
                "type",
                format!("no type name for {other:?}"),
            ));
        }
    };
    Ok(CelValue::String(Arc::new(name.to_string())))
}

/// JSON as the API server hands it to CEL: every JSON integer is an `int` (int64), never a `uint`.
fn to_cel(v: &Value) -> CelValue {
    match v {
        Value::Null => CelValue::Null,
        Value::Bool(b) => CelValue::Bool(*b),
        Value::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => CelValue::Int(i),
            (None, Some(u)) => CelValue::UInt(u),
            _ => CelValue::Float(n.as_f64().unwrap_or_default()),
        },
        Value::String(s) => CelValue::String(Arc::new(s.clone())),
        Value::Array(items) => CelValue::List(Arc::new(items.iter().map(to_cel).collect())),
        Value::Object(fields) => CelValue::Map(kube_cel::cel::objects::Map {
            map: Arc::new(
                fields
                    .iter()
                    .map(|(k, v)| (Key::String(Arc::new(k.clone())), to_cel(v)))
                    .collect(),
            ),
        }),
    }
}
