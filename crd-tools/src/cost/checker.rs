//! Type-checks one CEL rule against the schema node it sits on and estimates its worst-case cost
//! the way kube-apiserver 1.32 does when a CRD is written: cel-go v0.22's `checker.Cost` with
//! Kubernetes' library estimator (`k8s.io/apiserver/pkg/cel/library/cost.go`) and the schema size
//! estimator (`apiextensions-apiserver/.../schema/cel/compilation.go`).
//!
//! The estimate is a property of the expression's shape and the schema's bounds, never of data:
//! every string is as long as `maxLength` (or the request) allows, every list as long as
//! `maxItems` allows, and a comprehension costs its range size times its body.

use std::rc::Rc;

use kube_cel::cel::common::ast::{EntryExpr, Expr, IdedExpr, LiteralValue};

use super::decl::{Decl, Kind};

// cel-go's cost constants (common/cost.go, checker/cost.go).
const STRING_TRAVERSAL: f64 = 0.1;
const REGEX_STRING_LENGTH: f64 = 0.25;
const SELECT_AND_IDENT: u64 = 1;
const CREATE_LIST: u64 = 10;
const CREATE_MAP: u64 = 30;
/// The accumulator of macro comprehensions (cel-go's `__result__`); cel-go gives it no path.
const ACCUMULATOR: &str = "@result";

/// A CEL type, as far as cost and overload choice need it.
#[derive(Clone, Debug)]
pub enum Ty {
    Dyn,
    Null,
    Bool,
    Int,
    Uint,
    Double,
    String,
    Bytes,
    Duration,
    Timestamp,
    Type,
    List(Box<Ty>),
    Map(Box<Ty>, Box<Ty>),
    /// A schema object (CEL struct kind): selecting a field costs one more unit than on dyn.
    Object(Rc<Decl>),
    /// Library types: Quantity, URL, IP, CIDR.
    Opaque(&'static str),
}

impl Ty {
    pub fn of(decl: &Rc<Decl>) -> Ty {
        match &decl.kind {
            Kind::Object(_) => Ty::Object(decl.clone()),
            Kind::List(e) => Ty::List(Box::new(Ty::of(e))),
            Kind::Map(v) => Ty::Map(Box::new(Ty::String), Box::new(Ty::of(v))),
            Kind::Dyn => Ty::Dyn,
            Kind::String => Ty::String,
            Kind::Bytes => Ty::Bytes,
            Kind::Int => Ty::Int,
            Kind::Double => Ty::Double,
            Kind::Bool => Ty::Bool,
            Kind::Timestamp => Ty::Timestamp,
            Kind::Duration => Ty::Duration,
        }
    }

    fn name(&self) -> String {
        match self {
            Ty::Dyn => "dyn".into(),
            Ty::Null => "null_type".into(),
            Ty::Bool => "bool".into(),
            Ty::Int => "int".into(),
            Ty::Uint => "uint".into(),
            Ty::Double => "double".into(),
            Ty::String => "string".into(),
            Ty::Bytes => "bytes".into(),
            Ty::Duration => "google.protobuf.Duration".into(),
            Ty::Timestamp => "google.protobuf.Timestamp".into(),
            Ty::Type => "type".into(),
            Ty::List(e) => format!("list({})", e.name()),
            Ty::Map(k, v) => format!("map({}, {})", k.name(), v.name()),
            Ty::Object(_) => "object".into(),
            Ty::Opaque(n) => (*n).into(),
        }
    }

    /// Whether a value of this type may be passed where `want` is expected (dyn fits anything).
    fn fits(&self, want: &Ty) -> bool {
        match (self, want) {
            (Ty::Dyn, _) | (_, Ty::Dyn) => true,
            (Ty::List(a), Ty::List(b)) => a.fits(b),
            (Ty::Map(ak, av), Ty::Map(bk, bv)) => ak.fits(bk) && av.fits(bv),
            (Ty::Object(a), Ty::Object(b)) => Rc::ptr_eq(a, b),
            (Ty::Opaque(a), Ty::Opaque(b)) => a == b,
            (a, b) => std::mem::discriminant(a) == std::mem::discriminant(b),
        }
    }

    fn is(&self, want: &Ty) -> bool {
        !matches!(self, Ty::Dyn) && self.fits(want)
    }

    fn numeric(&self) -> bool {
        matches!(self, Ty::Dyn | Ty::Int | Ty::Uint | Ty::Double)
    }

    /// cel-go's `isScalar`: types whose size is fixed, so an unknown size is 1, not unbounded.
    fn scalar(&self) -> bool {
        matches!(
            self,
            Ty::Bool | Ty::Double | Ty::Duration | Ty::Int | Ty::Timestamp | Ty::Uint
        )
    }

    /// The common type of two branches. A list of dyn (the empty `[]` a macro starts from) takes
    /// the other list's element type, as cel-go's type inference does for the accumulator.
    fn join(a: &Ty, b: &Ty) -> Ty {
        match (a, b) {
            (Ty::List(x), Ty::List(y)) => Ty::List(Box::new(match (&**x, &**y) {
                (Ty::Dyn, t) | (t, Ty::Dyn) => t.clone(),
                (x, y) => Ty::join(x, y),
            })),
            (Ty::Dyn, _) | (_, Ty::Dyn) => Ty::Dyn,
            (x, y) if x.fits(y) => x.clone(),
            _ => Ty::Dyn,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Size {
    pub min: u64,
    pub max: u64,
}

impl Size {
    const UNKNOWN: Size = Size {
        min: 0,
        max: u64::MAX,
    };
    fn fixed(n: u64) -> Size {
        Size { min: n, max: n }
    }
    fn union(self, o: Size) -> Size {
        Size {
            min: self.min.min(o.min),
            max: self.max.max(o.max),
        }
    }
    fn add(self, o: Size) -> Size {
        Size {
            min: self.min.saturating_add(o.min),
            max: self.max.saturating_add(o.max),
        }
    }
    /// `MultiplyByCostFactor`: rounded up, saturating.
    fn factor(self, f: f64) -> u64 {
        factor(self.max, f)
    }
}

fn factor(x: u64, f: f64) -> u64 {
    let v = (x as f64 * f).ceil();
    if v >= 18446744073709551615.0 {
        u64::MAX
    } else {
        v as u64
    }
}

/// What the walk knows of an expression: its type, worst-case cost, a size CEL computed from the
/// expression itself (literals, results of sized calls) and its field path from a variable
/// (`self`, `spec`, `@items`, ...), through which the schema bounds its size.
#[derive(Clone, Debug)]
struct Node {
    ty: Ty,
    cost: u64,
    size: Option<Size>,
    path: Option<Vec<String>>,
}

impl Node {
    fn new(ty: Ty, cost: u64) -> Self {
        Self {
            ty,
            cost,
            size: None,
            path: None,
        }
    }
}

#[derive(Clone, Debug)]
struct Local {
    name: String,
    ty: Ty,
    path: Option<Vec<String>>,
    size: Option<Size>,
}

/// The result of checking one expression: its type and worst-case cost per evaluation.
#[derive(Debug, Clone)]
pub struct Checked {
    pub ty_name: String,
    pub is_bool: bool,
    pub is_string: bool,
    pub max_cost: u64,
    pub uses_old_self: bool,
}

/// Checks `source` with `self` (and `oldSelf`) typed as `root`. An error ends the check and the
/// walk with it, so scopes are only unwound on success.
pub fn check(source: &str, root: &Rc<Decl>) -> Result<Checked, String> {
    let parsed = kube_cel::cel::Program::compile(source).map_err(|e| {
        let text = e.to_string();
        format!("compilation failed: ERROR: <input>: {}", text.trim())
    })?;
    let mut c = Coster {
        root: root.clone(),
        scopes: Vec::new(),
        uses_old_self: false,
    };
    let node = c
        .eval(parsed.expression())
        .map_err(|e| format!("compilation failed: ERROR: <input>: {e}"))?;
    Ok(Checked {
        ty_name: node.ty.name(),
        is_bool: matches!(node.ty, Ty::Bool),
        is_string: matches!(node.ty, Ty::String),
        max_cost: node.cost,
        uses_old_self: c.uses_old_self,
    })
}

struct Coster {
    root: Rc<Decl>,
    scopes: Vec<Local>,
    uses_old_self: bool,
}

fn sum(costs: impl IntoIterator<Item = u64>) -> u64 {
    costs.into_iter().fold(0, u64::saturating_add)
}

fn path_plus(path: &Option<Vec<String>>, part: &str) -> Vec<String> {
    let mut p = path.clone().unwrap_or_default();
    p.push(part.to_string());
    p
}

impl Coster {
    fn local(&self, name: &str) -> Option<&Local> {
        self.scopes.iter().rev().find(|l| l.name == name)
    }

    /// The schema's bound for a path (the server's `sizeEstimator`): the first element is the
    /// variable and is skipped, as the server does, so every path walks from the rule's node.
    fn schema_size(&self, path: &Option<Vec<String>>) -> Option<Size> {
        let path = path.as_ref().filter(|p| !p.is_empty())?;
        if path[0] == ACCUMULATOR {
            return None;
        }
        let mut node = self.root.clone();
        for part in &path[1..] {
            node = match (part.as_str(), &node.kind) {
                ("@items" | "@values", Kind::List(e) | Kind::Map(e)) => e.clone(),
                ("@keys", Kind::Map(_)) => Decl::map_key(),
                (field, Kind::Object(fields)) => fields.get(field)?.clone(),
                _ => return None,
            };
        }
        Some(Size {
            min: 0,
            max: node.max_elements,
        })
    }

    /// cel-go's `sizeEstimate`: computed, else from the schema, else 1 for fixed-size types.
    fn size(&self, n: &Node) -> Size {
        n.size
            .or_else(|| self.schema_size(&n.path))
            .unwrap_or(if n.ty.scalar() {
                Size::fixed(1)
            } else {
                Size::UNKNOWN
            })
    }

    /// The Kubernetes library's `sizeEstimate`: like cel-go's but without the scalar fallback.
    fn lib_size(&self, n: &Node) -> Size {
        n.size
            .or_else(|| self.schema_size(&n.path))
            .unwrap_or(Size::UNKNOWN)
    }

    fn eval(&mut self, e: &IdedExpr) -> Result<Node, String> {
        match &e.expr {
            Expr::Literal(l) => Ok(literal(l)),
            Expr::Ident(name) => self.ident(name),
            Expr::Select(s) => {
                let operand = self.eval(&s.operand)?;
                if s.test {
                    // has(): Kubernetes sets PresenceTestHasCost(false).
                    self.field_type(&operand.ty, &s.field)?;
                    return Ok(Node::new(Ty::Bool, operand.cost));
                }
                let ty = self.field_type(&operand.ty, &s.field)?;
                let extra = match operand.ty {
                    Ty::Map(..) | Ty::Object(_) => SELECT_AND_IDENT,
                    _ => 0,
                };
                Ok(Node {
                    ty,
                    cost: operand.cost.saturating_add(extra),
                    size: None,
                    path: Some(path_plus(&operand.path, &s.field)),
                })
            }
            Expr::List(l) => {
                let mut elem = None::<Ty>;
                let mut cost = CREATE_LIST;
                for item in &l.elements {
                    let n = self.eval(item)?;
                    cost = cost.saturating_add(n.cost);
                    elem = Some(match elem {
                        None => n.ty,
                        Some(t) => Ty::join(&t, &n.ty),
                    });
                }
                Ok(Node {
                    ty: Ty::List(Box::new(elem.unwrap_or(Ty::Dyn))),
                    cost,
                    size: Some(Size::fixed(l.elements.len() as u64)),
                    path: None,
                })
            }
            Expr::Map(m) => {
                let mut cost = CREATE_MAP;
                let (mut kt, mut vt) = (None::<Ty>, None::<Ty>);
                for entry in &m.entries {
                    if let EntryExpr::MapEntry(me) = &entry.expr {
                        let k = self.eval(&me.key)?;
                        let v = self.eval(&me.value)?;
                        cost = sum([cost, k.cost, v.cost]);
                        kt = Some(kt.map_or(k.ty.clone(), |t| Ty::join(&t, &k.ty)));
                        vt = Some(vt.map_or(v.ty.clone(), |t| Ty::join(&t, &v.ty)));
                    }
                }
                Ok(Node {
                    ty: Ty::Map(
                        Box::new(kt.unwrap_or(Ty::Dyn)),
                        Box::new(vt.unwrap_or(Ty::Dyn)),
                    ),
                    cost,
                    size: Some(Size::fixed(m.entries.len() as u64)),
                    path: None,
                })
            }
            // Message construction: CRD rules have no message types to build.
            Expr::Struct(s) => Err(format!("undeclared reference to '{}'", s.type_name)),
            Expr::Comprehension(c) => self.comprehension(c),
            Expr::Call(call) => {
                // cel.bind(name, init, body) is a macro in cel-go; this parser leaves it a call.
                if call.func_name == "bind"
                    && matches!(call.target.as_deref(), Some(IdedExpr { expr: Expr::Ident(t), .. }) if t == "cel")
                    && call.args.len() == 3
                {
                    return self.bind(&call.args);
                }
                let target = match &call.target {
                    Some(t) => Some(self.eval(t)?),
                    None => None,
                };
                let mut args = Vec::with_capacity(call.args.len());
                for a in &call.args {
                    args.push(self.eval(a)?);
                }
                self.call(&call.func_name, target, args)
            }
            Expr::Unspecified => Err("unsupported expression".into()),
        }
    }

    fn ident(&mut self, name: &str) -> Result<Node, String> {
        if let Some(l) = self.local(name) {
            return Ok(Node {
                ty: l.ty.clone(),
                cost: SELECT_AND_IDENT,
                size: l.size,
                path: l.path.clone(),
            });
        }
        let ty = match name {
            "self" => Ty::of(&self.root),
            "oldSelf" => {
                self.uses_old_self = true;
                Ty::of(&self.root)
            }
            "int" | "uint" | "double" | "bool" | "string" | "bytes" | "list" | "map"
            | "null_type" | "type" | "dyn" => Ty::Type,
            _ => return Err(format!("undeclared reference to '{name}'")),
        };
        Ok(Node {
            ty,
            cost: SELECT_AND_IDENT,
            size: None,
            path: Some(vec![name.to_string()]),
        })
    }

    fn field_type(&self, ty: &Ty, field: &str) -> Result<Ty, String> {
        match ty {
            Ty::Object(decl) => match &decl.kind {
                Kind::Object(fields) => fields
                    .get(field)
                    .map(Ty::of)
                    .ok_or_else(|| format!("undefined field '{field}'")),
                _ => Err(format!("undefined field '{field}'")),
            },
            Ty::Map(_, v) => Ok((**v).clone()),
            Ty::Dyn => Ok(Ty::Dyn),
            other => Err(format!(
                "type '{}' does not support field selection",
                other.name()
            )),
        }
    }

    fn bind(&mut self, args: &[IdedExpr]) -> Result<Node, String> {
        let Expr::Ident(var) = &args[0].expr else {
            return Err("cel.bind() variable must be a simple name".into());
        };
        let init = self.eval(&args[1])?;
        self.scopes.push(Local {
            name: var.clone(),
            ty: init.ty.clone(),
            path: init.path.clone(),
            size: init.size,
        });
        let body = self.eval(&args[2])?;
        self.scopes.pop();
        // Binds keep the cost of their (empty) iteration range: a list literal.
        Ok(Node {
            ty: body.ty,
            cost: sum([CREATE_LIST, init.cost, body.cost]),
            size: body.size,
            path: None,
        })
    }

    fn comprehension(
        &mut self,
        c: &kube_cel::cel::common::ast::ComprehensionExpr,
    ) -> Result<Node, String> {
        let range = self.eval(&c.iter_range)?;
        let init = self.eval(&c.accu_init)?;
        let (iter_ty, iter_path) = match &range.ty {
            Ty::List(e) => ((**e).clone(), Some(path_plus(&range.path, "@items"))),
            Ty::Map(k, _) => ((**k).clone(), Some(path_plus(&range.path, "@keys"))),
            Ty::Dyn => (Ty::Dyn, None),
            other => {
                return Err(format!(
                    "expression of type '{}' cannot be the range of a comprehension (must be list, map, or dynamic)",
                    other.name()
                ));
            }
        };
        self.scopes.push(Local {
            name: c.accu_var.clone(),
            ty: init.ty.clone(),
            path: Some(vec![c.accu_var.clone()]),
            size: init.size,
        });
        self.scopes.push(Local {
            name: c.iter_var.clone(),
            ty: iter_ty,
            path: iter_path,
            size: None,
        });
        let cond = self.eval(&c.loop_cond)?;
        let step = self.eval(&c.loop_step)?;
        self.scopes.pop();
        // The accumulator takes the step's type: `[]` grows into a list of the items added.
        if let Some(acc) = self.scopes.last_mut() {
            acc.ty = Ty::join(&step.ty, &init.ty);
        }
        let result = self.eval(&c.result)?;
        self.scopes.pop();
        let count = self.size(&range);
        let per_item = cond.cost.saturating_add(step.cost);
        Ok(Node {
            ty: result.ty,
            cost: sum([
                range.cost,
                init.cost,
                result.cost,
                count.max.saturating_mul(per_item),
            ]),
            size: Some(count),
            path: None,
        })
    }

    fn call(&mut self, name: &str, target: Option<Node>, args: Vec<Node>) -> Result<Node, String> {
        let args_cost = sum(args.iter().map(|a| a.cost));
        let target_cost = target.as_ref().map_or(0, |t| t.cost);
        let base = args_cost.saturating_add(target_cost);
        let no_overload = || {
            let mut sig: Vec<String> = target.iter().map(|t| t.ty.name()).collect();
            sig.extend(args.iter().map(|a| a.ty.name()));
            format!(
                "found no matching overload for '{name}' applied to '({})'",
                sig.join(", ")
            )
        };
        let done = |ty: Ty, cost: u64| Ok(Node::new(ty, base.saturating_add(cost)));
        match (name, target.as_ref(), args.len()) {
            ("_&&_" | "_||_", None, 2) => {
                if !(args[0].ty.fits(&Ty::Bool) && args[1].ty.fits(&Ty::Bool)) {
                    return Err(no_overload());
                }
                Ok(Node::new(Ty::Bool, args_cost))
            }
            ("_?_:_", None, 3) => {
                if !args[0].ty.fits(&Ty::Bool) {
                    return Err(no_overload());
                }
                let size = self.size(&args[1]).union(self.size(&args[2]));
                Ok(Node {
                    ty: Ty::join(&args[1].ty, &args[2].ty),
                    cost: args[0].cost.saturating_add(args[1].cost.max(args[2].cost)),
                    size: Some(size),
                    path: None,
                })
            }
            ("!_" | "@not_strictly_false", None, 1) => {
                if !args[0].ty.fits(&Ty::Bool) {
                    return Err(no_overload());
                }
                done(Ty::Bool, 1)
            }
            ("-_", None, 1) => {
                if !args[0].ty.numeric() && !args[0].ty.fits(&Ty::Duration) {
                    return Err(no_overload());
                }
                done(args[0].ty.clone(), 1)
            }
            ("_==_" | "_!=_", None, 2) => {
                let smallest = self.size(&args[0]).max.min(self.size(&args[1]).max);
                done(Ty::Bool, factor(smallest, STRING_TRAVERSAL))
            }
            ("_<_" | "_<=_" | "_>_" | "_>=_", None, 2) => {
                let (a, b) = (&args[0].ty, &args[1].ty);
                let mut cost = None::<u64>;
                if a.fits(&Ty::String) && b.fits(&Ty::String)
                    || a.fits(&Ty::Bytes) && b.fits(&Ty::Bytes)
                {
                    let smallest = self.size(&args[0]).max.min(self.size(&args[1]).max);
                    cost = Some(factor(smallest, STRING_TRAVERSAL));
                }
                let ordered =
                    |t: &Ty| t.numeric() || matches!(t, Ty::Bool | Ty::Timestamp | Ty::Duration);
                if (a.numeric() && b.numeric()) || (ordered(a) && ordered(b) && a.fits(b)) {
                    cost = Some(cost.unwrap_or(0).max(1));
                }
                match cost {
                    Some(c) => done(Ty::Bool, c),
                    None => Err(no_overload()),
                }
            }
            ("_+_", None, 2) => self.add(&args, base, no_overload),
            ("_-_" | "_*_" | "_/_" | "_%_", None, 2) => {
                let (a, b) = (&args[0].ty, &args[1].ty);
                let ty = if a.is(&Ty::Timestamp) || b.is(&Ty::Timestamp) {
                    if name == "_-_" && a.is(&Ty::Timestamp) && b.is(&Ty::Timestamp) {
                        Ty::Duration
                    } else {
                        Ty::Timestamp
                    }
                } else if a.numeric() && b.numeric() {
                    if matches!(a, Ty::Dyn) {
                        b.clone()
                    } else {
                        a.clone()
                    }
                } else if a.fits(&Ty::Duration) && b.fits(&Ty::Duration) {
                    Ty::Duration
                } else {
                    return Err(no_overload());
                };
                done(ty, 1)
            }
            ("_[_]", None, 2) => {
                let container = &args[0];
                let (ty, part) = match &container.ty {
                    Ty::List(e) => ((**e).clone(), "@items"),
                    Ty::Map(_, v) => ((**v).clone(), "@values"),
                    // Both overloads apply; cel-go records the path of the last (the map's).
                    Ty::Dyn => (Ty::Dyn, "@values"),
                    _ => return Err(no_overload()),
                };
                Ok(Node {
                    ty,
                    cost: base.saturating_add(1),
                    size: None,
                    path: Some(path_plus(&container.path, part)),
                })
            }
            ("@in", None, 2) => match &args[1].ty {
                Ty::List(_) | Ty::Dyn => done(Ty::Bool, self.size(&args[1]).max.max(1)),
                Ty::Map(..) => done(Ty::Bool, 1),
                _ => Err(no_overload()),
            },
            ("size", _, _) => {
                let of = target.as_ref().or(args.first()).ok_or_else(no_overload)?;
                if !matches!(
                    of.ty,
                    Ty::Dyn | Ty::String | Ty::Bytes | Ty::List(_) | Ty::Map(..)
                ) {
                    return Err(no_overload());
                }
                done(Ty::Int, 1)
            }
            ("matches", Some(t), 1) => {
                self.want(&[&t.ty, &args[0].ty], &Ty::String, no_overload)?;
                let s = factor(self.size(t).max.saturating_add(1), STRING_TRAVERSAL);
                let r = self.size(&args[0]).factor(REGEX_STRING_LENGTH);
                done(Ty::Bool, s.saturating_mul(r))
            }
            ("matches", None, 2) => {
                self.want(&[&args[0].ty, &args[1].ty], &Ty::String, no_overload)?;
                done(Ty::Bool, 1)
            }
            ("contains", Some(t), 1) => {
                self.want(&[&t.ty, &args[0].ty], &Ty::String, no_overload)?;
                let s = self.size(t).factor(STRING_TRAVERSAL);
                let sub = self.size(&args[0]).factor(STRING_TRAVERSAL);
                done(Ty::Bool, s.saturating_mul(sub))
            }
            ("startsWith" | "endsWith", Some(t), 1) => {
                self.want(&[&t.ty, &args[0].ty], &Ty::String, no_overload)?;
                done(Ty::Bool, self.size(&args[0]).factor(STRING_TRAVERSAL))
            }
            ("string" | "bytes", None, 1) => {
                let a = &args[0];
                let from = if name == "string" {
                    Ty::Bytes
                } else {
                    Ty::String
                };
                let mut cost = 1;
                let mut size = None;
                if a.ty.fits(&from) {
                    // bytes_to_string / string_to_bytes traverse their argument; with a dyn
                    // argument that overload is a candidate, and the most expensive one counts.
                    let s = self.size(a);
                    cost =
                        s.factor(STRING_TRAVERSAL)
                            .max(if matches!(a.ty, Ty::Dyn) { 1 } else { 0 });
                    size = Some(s);
                }
                let ty = if name == "string" {
                    Ty::String
                } else {
                    Ty::Bytes
                };
                Ok(Node {
                    ty,
                    cost: base.saturating_add(cost),
                    size,
                    path: None,
                })
            }
            ("dyn", None, 1) => {
                let a = &args[0];
                Ok(Node {
                    ty: Ty::Dyn,
                    cost: base.saturating_add(1),
                    size: a.size,
                    path: a.path.clone(),
                })
            }
            ("int", None, 1) => done(Ty::Int, 1),
            ("uint", None, 1) => done(Ty::Uint, 1),
            ("double", None, 1) => done(Ty::Double, 1),
            ("bool", None, 1) => done(Ty::Bool, 1),
            ("type", None, 1) => done(Ty::Type, 1),
            ("duration", None, 1) => done(Ty::Duration, 1),
            ("timestamp", None, 1) => done(Ty::Timestamp, 1),
            _ => self.library(name, target.as_ref(), &args, base, no_overload),
        }
    }

    fn want(&self, tys: &[&Ty], want: &Ty, err: impl Fn() -> String) -> Result<(), String> {
        if tys.iter().all(|t| t.fits(want)) {
            Ok(())
        } else {
            Err(err())
        }
    }

    fn add(&self, args: &[Node], base: u64, err: impl Fn() -> String) -> Result<Node, String> {
        let (a, b) = (&args[0].ty, &args[1].ty);
        let joined = self.size(&args[0]).add(self.size(&args[1]));
        let mut cost = None::<u64>;
        let mut size = None::<Size>;
        let mut ty = None::<Ty>;
        let mut candidate = |c: u64, s: Option<Size>, t: Ty| {
            cost = Some(cost.map_or(c, |x| x.max(c)));
            if let Some(s) = s {
                size = Some(size.map_or(s, |x| x.union(s)));
            }
            ty = Some(match ty.take() {
                None => t,
                Some(_) => Ty::Dyn,
            });
        };
        if a.fits(&Ty::String) && b.fits(&Ty::String) {
            candidate(joined.factor(STRING_TRAVERSAL), Some(joined), Ty::String);
        }
        if a.fits(&Ty::Bytes) && b.fits(&Ty::Bytes) {
            candidate(joined.factor(STRING_TRAVERSAL), Some(joined), Ty::Bytes);
        }
        if matches!(a, Ty::List(_) | Ty::Dyn) && matches!(b, Ty::List(_) | Ty::Dyn) {
            candidate(1, Some(joined), Ty::join(a, b));
        }
        if a.numeric() && b.numeric() {
            candidate(
                1,
                None,
                if matches!(a, Ty::Dyn) {
                    b.clone()
                } else {
                    a.clone()
                },
            );
        }
        if (a.fits(&Ty::Duration) || a.fits(&Ty::Timestamp))
            && (b.fits(&Ty::Duration) || b.fits(&Ty::Timestamp))
            && !(matches!(a, Ty::Dyn) && matches!(b, Ty::Dyn))
        {
            candidate(
                1,
                None,
                if a.is(&Ty::Timestamp) || b.is(&Ty::Timestamp) {
                    Ty::Timestamp
                } else {
                    Ty::Duration
                },
            );
        }
        let (Some(cost), Some(ty)) = (cost, ty) else {
            return Err(err());
        };
        Ok(Node {
            ty,
            cost: base.saturating_add(cost),
            size,
            path: None,
        })
    }

    /// Kubernetes' CEL library and the cel-go extensions it enables (strings, lists, regex, url,
    /// ip, cidr, quantity), with the cost the library's estimator gives each.
    fn library(
        &self,
        name: &str,
        target: Option<&Node>,
        args: &[Node],
        base: u64,
        err: impl Fn() -> String,
    ) -> Result<Node, String> {
        let node = |ty: Ty, cost: u64, size: Option<Size>| {
            Ok(Node {
                ty,
                cost: base.saturating_add(cost),
                size,
                path: None,
            })
        };
        let string_target = |t: Option<&Node>| -> Result<Size, String> {
            match t {
                Some(t) if t.ty.fits(&Ty::String) => Ok(self.lib_size(t)),
                _ => Err(err()),
            }
        };
        let quantity = Ty::Opaque("kubernetes.Quantity");
        match name {
            "quantity" | "isQuantity" if target.is_none() && args.len() == 1 => {
                if !args[0].ty.fits(&Ty::String) {
                    return Err(err());
                }
                let cost = self.lib_size(&args[0]).factor(STRING_TRAVERSAL);
                node(
                    if name == "quantity" {
                        quantity
                    } else {
                        Ty::Bool
                    },
                    cost,
                    None,
                )
            }
            "compareTo" | "isGreaterThan" | "isLessThan" | "add" | "sub"
                if target.is_some() && args.len() == 1 =>
            {
                let t = target.unwrap();
                if !t.ty.fits(&quantity)
                    || !args[0].ty.fits(&quantity) && !matches!(name, "add" | "sub")
                {
                    return Err(err());
                }
                let ty = match name {
                    "compareTo" => Ty::Int,
                    "add" | "sub" => quantity,
                    _ => Ty::Bool,
                };
                node(ty, 1, None)
            }
            "sign" | "asInteger" | "isInteger" | "asApproximateFloat"
                if target.is_some_and(|t| t.ty.fits(&quantity)) && args.is_empty() =>
            {
                let ty = match name {
                    "sign" | "asInteger" => Ty::Int,
                    "isInteger" => Ty::Bool,
                    _ => Ty::Double,
                };
                node(ty, 1, None)
            }
            "isSorted" | "sum" | "max" | "min" | "indexOf" | "lastIndexOf" if target.is_some() => {
                let t = target.unwrap();
                let list_size = self.lib_size(t);
                match &t.ty {
                    Ty::List(elem) => {
                        let mut per = 1u64;
                        if matches!(**elem, Ty::String | Ty::Bytes) {
                            let item = Node {
                                ty: (**elem).clone(),
                                cost: 0,
                                size: None,
                                path: t.path.as_ref().map(|_| path_plus(&t.path, "@items")),
                            };
                            per = per.saturating_add(self.lib_size(&item).factor(STRING_TRAVERSAL));
                        }
                        let ty = match name {
                            "isSorted" => Ty::Bool,
                            "indexOf" | "lastIndexOf" => Ty::Int,
                            _ => (**elem).clone(),
                        };
                        node(ty, list_size.max.saturating_mul(per), None)
                    }
                    Ty::String | Ty::Dyn if matches!(name, "indexOf" | "lastIndexOf") => {
                        node(Ty::Int, list_size.factor(STRING_TRAVERSAL), None)
                    }
                    _ => Err(err()),
                }
            }
            "lowerAscii" | "upperAscii" | "substring" | "trim" => {
                let s = string_target(target)?;
                node(Ty::String, s.factor(STRING_TRAVERSAL), Some(s))
            }
            "replace" if args.len() >= 2 => {
                let s = string_target(target)?;
                let from = self.lib_size(&args[0]);
                let with = self.lib_size(&args[1]);
                node(
                    Ty::String,
                    s.factor(2.0 * STRING_TRAVERSAL),
                    Some(replaced(s, from, with)),
                )
            }
            "split" => {
                let s = string_target(target)?;
                node(
                    Ty::List(Box::new(Ty::String)),
                    s.factor(2.0 * STRING_TRAVERSAL),
                    Some(Size { min: 0, max: s.max }),
                )
            }
            "join" => {
                let t = target.ok_or_else(&err)?;
                let Ty::List(_) = &t.ty else {
                    return Err(err());
                };
                let list = self.lib_size(t);
                let item = Node {
                    ty: Ty::String,
                    cost: 0,
                    size: None,
                    path: t.path.as_ref().map(|_| path_plus(&t.path, "@items")),
                };
                let mut s = Size {
                    min: list.min.saturating_mul(self.lib_size(&item).min),
                    max: list.max.saturating_mul(self.lib_size(&item).max),
                };
                if let Some(sep) = args.first() {
                    let sep = self.lib_size(sep);
                    s = s.add(Size {
                        min: sep.min.saturating_mul(list.min.saturating_sub(1)),
                        max: sep.max.saturating_mul(list.max.saturating_sub(1)),
                    });
                }
                node(Ty::String, s.factor(STRING_TRAVERSAL), Some(s))
            }
            "find" | "findAll" if !args.is_empty() => {
                let s = string_target(target)?;
                let str_cost = factor(s.max.saturating_add(1), STRING_TRAVERSAL);
                let re = self.lib_size(&args[0]).factor(REGEX_STRING_LENGTH);
                let ty = if name == "find" {
                    Ty::String
                } else {
                    Ty::List(Box::new(Ty::String))
                };
                node(
                    ty,
                    str_cost.saturating_mul(re),
                    Some(Size { min: 0, max: s.max }),
                )
            }
            "url" | "isURL" | "ip" | "isIP" | "cidr" | "isCIDR"
                if target.is_none() && args.len() == 1 =>
            {
                if !args[0].ty.fits(&Ty::String) {
                    return Err(err());
                }
                let cost = match name {
                    "isURL" => 1,
                    _ => self.lib_size(&args[0]).factor(STRING_TRAVERSAL),
                };
                let ty = match name {
                    "url" => Ty::Opaque("kubernetes.URL"),
                    "ip" => Ty::Opaque("net.IP"),
                    "cidr" => Ty::Opaque("net.CIDR"),
                    _ => Ty::Bool,
                };
                node(ty, cost, None)
            }
            "getScheme" | "getHost" | "getHostname" | "getPort" | "getEscapedPath" => {
                node(Ty::String, 1, None)
            }
            "getQuery" => node(
                Ty::Map(
                    Box::new(Ty::String),
                    Box::new(Ty::List(Box::new(Ty::String))),
                ),
                1,
                None,
            ),
            "masked"
            | "prefixLength"
            | "family"
            | "isUnspecified"
            | "isLoopback"
            | "isLinkLocalMulticast"
            | "isLinkLocalUnicast"
            | "isGlobalUnicast" => {
                let ty = match name {
                    "masked" => Ty::Opaque("net.CIDR"),
                    "prefixLength" | "family" => Ty::Int,
                    _ => Ty::Bool,
                };
                node(ty, 1, None)
            }
            "charAt" => node(Ty::String, 1, None),
            "format" => node(Ty::String, 1, None),
            "reverse" | "distinct" | "flatten" | "slice" | "sort" => {
                let t = target.ok_or_else(&err)?;
                node(t.ty.clone(), 1, None)
            }
            _ => Err(format!("undeclared reference to '{name}'")),
        }
    }
}

/// The size of `s.replace(from, with)` (the library's estimate).
fn replaced(s: Size, from: Size, with: Size) -> Size {
    let (count_max, kept_max) = if from.min == 0 {
        (s.max.saturating_add(1), s.max)
    } else if with.max <= from.min {
        (0, s.max)
    } else {
        ((s.max as f64 / from.min as f64).ceil() as u64, 0)
    };
    let (count_min, kept_min) = if from.max == 0 {
        (s.min.saturating_add(1), s.min)
    } else if from.max <= with.min {
        (0, s.min)
    } else {
        ((s.min as f64 / from.max as f64).ceil() as u64, 0)
    };
    Size {
        min: count_min.saturating_mul(with.min).saturating_add(kept_min),
        max: count_max.saturating_mul(with.max).saturating_add(kept_max),
    }
}

fn literal(l: &LiteralValue) -> Node {
    let (ty, size) = match l {
        LiteralValue::Boolean(_) => (Ty::Bool, None),
        LiteralValue::Bytes(b) => (Ty::Bytes, Some(Size::fixed(b.inner().len() as u64))),
        LiteralValue::Double(_) => (Ty::Double, None),
        LiteralValue::Int(_) => (Ty::Int, None),
        LiteralValue::Null => (Ty::Null, None),
        LiteralValue::String(s) => (
            Ty::String,
            Some(Size::fixed(s.inner().chars().count() as u64)),
        ),
        LiteralValue::UInt(_) => (Ty::Uint, None),
    };
    Node {
        ty,
        cost: 0,
        size,
        path: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cost::decl::decl_type;
    use serde_json::json;

    fn root() -> Rc<Decl> {
        decl_type(
            &json!({"type": "object", "properties": {
                "n": {"type": "integer"},
                "s": {"type": "string", "maxLength": 10},
                "q": {"x-kubernetes-int-or-string": true},
                "l": {"type": "array", "maxItems": 5, "items": {"type": "string", "maxLength": 2}},
                "m": {"type": "object", "maxProperties": 3, "additionalProperties": {"type": "string", "maxLength": 1}},
            }}),
            false,
        )
        .unwrap()
    }

    fn cost(rule: &str) -> u64 {
        let c = check(rule, &root()).unwrap_or_else(|e| panic!("{rule}: {e}"));
        assert!(c.is_bool, "{rule} is {}", c.ty_name);
        c.max_cost
    }

    #[test]
    fn rules_are_type_checked_against_the_schema() {
        let err = |rule: &str| check(rule, &root()).unwrap_err();
        assert!(err("self.x == 1").contains("undefined field 'x'"));
        assert!(
            err("quantity(self.n).isInteger()").contains("no matching overload for 'quantity'")
        );
        assert!(err("self.s.matches(1)").contains("no matching overload for 'matches'"));
        assert!(err("nope(self.s)").contains("undeclared reference to 'nope'"));
        assert!(!check("self.n + 1", &root()).unwrap().is_bool);
        assert!(
            check("cel.bind(x, self.n, x > 1)", &root())
                .unwrap()
                .is_bool
        );
        assert!(
            check("self.l.filter(x, x == 'a').size() < 2", &root())
                .unwrap()
                .is_bool
        );
    }

    #[test]
    fn costs_follow_the_sizes_the_schema_allows() {
        // `self.s` is 40 bytes at most (10 characters of up to 4 bytes): 4 to compare.
        assert_eq!(cost("self.s == 'abc'"), 2 + 1);
        assert_eq!(cost("self.s.startsWith('ab')"), 2 + 1);
        // all(): range 5 × (condition 2 + step: && 1 + size() 2 + < 1).
        assert_eq!(cost("self.l.all(x, x.size() < 3)"), 2 + 1 + 5 * (2 + 4));
        // `in` a list costs its length; in a map, one lookup.
        assert_eq!(cost("'a' in self.l"), 5 + 2);
        assert_eq!(cost("'a' in self.m"), 1 + 2);
        // An int-or-string is as long as the request, whatever its bounds.
        assert_eq!(cost("quantity(self.q).isInteger()"), 314_573 + 2 + 1);
        // has() is free but for its operand (PresenceTestHasCost(false)).
        assert_eq!(cost("has(self.n)"), 1);
        // Binding a parse once: a list literal's 10, the parse, then the body.
        assert_eq!(
            cost("cel.bind(v, quantity(self.q), v.isInteger() && v.isInteger())"),
            10 + 314_575 + 2 + 2
        );
    }
}
