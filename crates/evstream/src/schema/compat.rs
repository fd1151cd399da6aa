//! Compatibility between schema versions, after Confluent Schema Registry's modes.
//!
//! Schemas are compared structurally on what matters to a reader of `data`: the top-level
//! `properties` with their `type`s, `required`, and whether `additionalProperties` is
//! `false` (closed). Writer data of an older version is first taken through the migration
//! chain, because that is what a consumer reads.
//!
//! - `BACKWARD`: the new version reads data written with the previous one (migrated).
//! - `FORWARD`: the previous version reads data written with the new one (as is: an old
//!   consumer does not know the new migrations).
//! - `FULL`: both. `NONE`: no check.
//! - `*_TRANSITIVE`: against every earlier version, not only the previous one.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::migration::{Migration, Op, Target};

/// A compatibility mode.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Compatibility {
    /// New versions read data of the previous one. The default, as in Confluent's registry.
    #[default]
    Backward,
    /// New versions read data of every earlier one.
    BackwardTransitive,
    /// The previous version reads data of the new one.
    Forward,
    /// Every earlier version reads data of the new one.
    ForwardTransitive,
    /// Backward and forward against the previous version.
    Full,
    /// Backward and forward against every earlier version.
    FullTransitive,
    /// No check.
    None,
}

impl Compatibility {
    /// Whether older readers were checked to read every new version (`FORWARD`, `FULL` and
    /// their transitive variants): what lets a consumer read newer data as the version it
    /// knows.
    pub fn is_forward(self) -> bool {
        self.directions().1
    }

    /// The mode's name as written in `config.json` (`FULL_TRANSITIVE`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Backward => "BACKWARD",
            Self::BackwardTransitive => "BACKWARD_TRANSITIVE",
            Self::Forward => "FORWARD",
            Self::ForwardTransitive => "FORWARD_TRANSITIVE",
            Self::Full => "FULL",
            Self::FullTransitive => "FULL_TRANSITIVE",
            Self::None => "NONE",
        }
    }

    fn directions(self) -> (bool, bool, bool) {
        // (backward, forward, transitive)
        match self {
            Self::Backward => (true, false, false),
            Self::BackwardTransitive => (true, false, true),
            Self::Forward => (false, true, false),
            Self::ForwardTransitive => (false, true, true),
            Self::Full => (true, true, false),
            Self::FullTransitive => (true, true, true),
            Self::None => (false, false, false),
        }
    }
}

impl std::fmt::Display for Compatibility {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// JSON types, as a set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Types(u8);

const NULL: u8 = 1;
const BOOLEAN: u8 = 2;
const INTEGER: u8 = 4;
const NUMBER: u8 = 8; // non-integral numbers
const STRING: u8 = 16;
const ARRAY: u8 = 32;
const OBJECT: u8 = 64;
const ANY: u8 = 127;

impl Types {
    fn of_schema(schema: &Value) -> Self {
        let name = |n: &str| match n {
            "null" => NULL,
            "boolean" => BOOLEAN,
            "integer" => INTEGER,
            "number" => INTEGER | NUMBER,
            "string" => STRING,
            "array" => ARRAY,
            "object" => OBJECT,
            _ => ANY,
        };
        match schema.get("type") {
            Some(Value::String(n)) => Types(name(n)),
            Some(Value::Array(names)) => Types(
                names
                    .iter()
                    .filter_map(Value::as_str)
                    .fold(0, |set, n| set | name(n)),
            ),
            _ => match schema
                .get("const")
                .map(|v| Self::of_value(v).0)
                .or_else(|| {
                    schema
                        .get("enum")
                        .and_then(Value::as_array)
                        .map(|values| values.iter().fold(0, |set, v| set | Self::of_value(v).0))
                }) {
                Some(set) => Types(set),
                None => Types(ANY),
            },
        }
    }

    fn of_value(value: &Value) -> Self {
        Types(match value {
            Value::Null => NULL,
            Value::Bool(_) => BOOLEAN,
            Value::Number(n) if n.is_i64() || n.is_u64() => INTEGER,
            Value::Number(_) => NUMBER,
            Value::String(_) => STRING,
            Value::Array(_) => ARRAY,
            Value::Object(_) => OBJECT,
        })
    }

    fn accepts(self, other: Types) -> bool {
        other.0 & !self.0 == 0
    }

    fn describe(self) -> String {
        if self.0 == ANY {
            return "anything".to_owned();
        }
        let names = [
            (NULL, "null"),
            (BOOLEAN, "boolean"),
            (INTEGER | NUMBER, "number"),
            (INTEGER, "integer"),
            (STRING, "string"),
            (ARRAY, "array"),
            (OBJECT, "object"),
        ];
        let mut left = self.0;
        let mut out = Vec::new();
        for (bits, name) in names {
            if left & bits == bits {
                out.push(name);
                left &= !bits;
            }
        }
        out.join(" or ")
    }
}

/// What a schema says about the top level of `data`.
#[derive(Debug, Clone)]
struct Shape {
    properties: BTreeMap<String, Types>,
    required: BTreeSet<String>,
    closed: bool,
}

impl Shape {
    fn of(schema: &Value) -> Self {
        Self {
            properties: schema
                .get("properties")
                .and_then(Value::as_object)
                .map(|p| {
                    p.iter()
                        .map(|(k, v)| (k.clone(), Types::of_schema(v)))
                        .collect()
                })
                .unwrap_or_default(),
            required: schema
                .get("required")
                .and_then(Value::as_array)
                .map(|r| {
                    r.iter()
                        .filter_map(Value::as_str)
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default(),
            closed: schema.get("additionalProperties") == Some(&Value::Bool(false)),
        }
    }

    /// The shape of data of this shape after `migration` (top-level fields only).
    fn migrated(mut self, migration: &Migration) -> Self {
        let top = |path: &str| {
            path.strip_prefix('/')
                .filter(|k| !k.contains('/'))
                .map(str::to_owned)
        };
        for op in &migration.ops {
            match op {
                Op::Add { path, value } | Op::Set { path, value } => {
                    if let Some(key) = top(path) {
                        let entry = self.properties.entry(key.clone()).or_insert(Types(0));
                        if matches!(op, Op::Set { .. }) {
                            *entry = Types::of_value(value);
                        } else {
                            entry.0 |= Types::of_value(value).0;
                        }
                        self.required.insert(key);
                    }
                }
                Op::Rename { from, path } => {
                    if let (Some(old), Some(new)) = (top(from), top(path)) {
                        if let Some(types) = self.properties.remove(&old) {
                            self.properties.insert(new.clone(), types);
                        }
                        if self.required.remove(&old) {
                            self.required.insert(new);
                        }
                    }
                }
                Op::Remove { path } => {
                    if let Some(key) = top(path) {
                        self.properties.remove(&key);
                        self.required.remove(&key);
                    }
                }
                Op::Convert { path, to } => {
                    if let Some(key) = top(path) {
                        let types = match to {
                            Target::String => STRING,
                            Target::Number => INTEGER | NUMBER,
                            Target::Integer => INTEGER,
                            Target::Boolean => BOOLEAN,
                        };
                        self.properties.insert(key, Types(types));
                    }
                }
            }
        }
        self
    }
}

/// Why data of `writer` may not be readable with `reader`; empty when it is.
fn can_read(reader: &Shape, writer: &Shape) -> Vec<String> {
    let mut problems = Vec::new();
    for field in &reader.required {
        if !writer.required.contains(field) {
            problems.push(format!(
                "field {field:?} is required by the reader but the writer's data may lack it"
            ));
        }
    }
    for (field, reader_types) in &reader.properties {
        if let Some(writer_types) = writer.properties.get(field) {
            if !reader_types.accepts(*writer_types) {
                problems.push(format!(
                    "field {field:?} is {} in the writer's data but the reader accepts only {}",
                    writer_types.describe(),
                    reader_types.describe()
                ));
            }
        }
    }
    if !writer.closed {
        // Open content: the writer's data may carry any field it does not define, with any
        // value; a reader that constrains such a field may refuse that data.
        for (field, reader_types) in &reader.properties {
            if !writer.properties.contains_key(field) && reader_types.0 != ANY {
                problems.push(format!(
                    "field {field:?} is {} for the reader but the writer does not define it and allows any extra field (define it in the writer, or close the writer with additionalProperties: false)",
                    reader_types.describe()
                ));
            }
        }
    }
    if reader.closed {
        if !writer.closed {
            problems.push(
                "the reader allows no fields beyond its own (additionalProperties: false) but the writer allows any"
                    .to_owned(),
            );
        }
        for field in writer.properties.keys() {
            if !reader.properties.contains_key(field) {
                problems.push(format!(
                    "field {field:?} of the writer's data is not allowed by the reader"
                ));
            }
        }
    }
    problems
}

/// Checks registering `new` (version `versions.len() + 1`) after `versions` (the schemas of
/// v1…vN, and the migrations v1→v2, …, vN→vN+1 in `migrations`, one per earlier version).
/// Returns every problem, each naming the type, the versions and the field.
pub(crate) fn check(
    event_type: &str,
    mode: Compatibility,
    versions: &[&Value],
    migrations: &[&Migration],
    new: &Value,
) -> Vec<String> {
    let (backward, forward, transitive) = mode.directions();
    let n = versions.len();
    if n == 0 || (!backward && !forward) {
        return Vec::new();
    }
    let new_shape = Shape::of(new);
    let new_version = n + 1;
    let first = if transitive { 0 } else { n - 1 };
    let mut problems = Vec::new();
    for old in first..n {
        let old_version = old + 1;
        let old_shape = Shape::of(versions[old]);
        if backward {
            // Data of v(old) goes through the migrations v(old)→…→v(new).
            let migrated = migrations[old..n]
                .iter()
                .fold(old_shape.clone(), |shape, migration| {
                    shape.migrated(migration)
                });
            for problem in can_read(&new_shape, &migrated) {
                problems.push(format!(
                    "{event_type} v{new_version} cannot read v{old_version} data (BACKWARD): {problem}"
                ));
            }
        }
        if forward {
            for problem in can_read(&old_shape, &new_shape) {
                problems.push(format!(
                    "{event_type} v{old_version} cannot read v{new_version} data (FORWARD): {problem}"
                ));
            }
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn order_v1() -> Value {
        json!({"type": "object", "required": ["orderId", "symbol"],
               "properties": {"orderId": {"type": "string"}, "symbol": {"type": "string"},
                              "quantity": {"type": "number"}}})
    }

    fn order_v2() -> Value {
        json!({"type": "object", "required": ["orderId", "symbol", "quantity"],
               "properties": {"orderId": {"type": "string"}, "symbol": {"type": "string"},
                              "quantity": {"type": "number"}}})
    }

    fn add_quantity() -> Migration {
        serde_json::from_value(json!({"ops": [{"op": "add", "path": "/quantity", "value": 0}]}))
            .unwrap()
    }

    #[test]
    fn hand_written_cases_for_each_mode() {
        let v1 = order_v1();
        let v2 = order_v2();
        let none = Migration::default();
        let add = add_quantity();
        let check = |mode, migration: &Migration, new: &Value| {
            check("OrderCreated", mode, &[&v1], &[migration], new)
        };

        // A new required field: backward only with a migration that supplies it.
        assert!(check(Compatibility::Backward, &add, &v2).is_empty());
        let problems = check(Compatibility::Backward, &none, &v2);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].contains("OrderCreated v2 cannot read v1 data"),
            "{problems:?}"
        );
        assert!(problems[0].contains("\"quantity\""), "{problems:?}");
        // Old readers of v2 data: v1 is open and its required fields are still required.
        assert!(check(Compatibility::Forward, &none, &v2).is_empty());
        assert!(check(Compatibility::Full, &add, &v2).is_empty());
        assert!(check(
            Compatibility::None,
            &none,
            &json!({"type": "object", "required": ["x"]})
        )
        .is_empty());

        // Removing a required field breaks FORWARD (old readers need it), not BACKWARD.
        let v2_without_symbol = json!({"type": "object", "required": ["orderId"],
                                       "properties": {"orderId": {"type": "string"}}});
        assert!(check(Compatibility::Backward, &none, &v2_without_symbol).is_empty());
        let problems = check(Compatibility::Forward, &none, &v2_without_symbol);
        assert!(
            problems
                .iter()
                .any(|p| p.contains("v1 cannot read v2 data") && p.contains("\"symbol\"")),
            "{problems:?}"
        );

        // Narrowing a type breaks BACKWARD; widening integer to number does not.
        let narrowed = json!({"type": "object", "required": ["orderId", "symbol"],
                              "properties": {"orderId": {"type": "integer"}, "symbol": {"type": "string"}}});
        let problems = check(Compatibility::Backward, &none, &narrowed);
        assert!(
            problems
                .iter()
                .any(|p| p.contains("\"orderId\"") && p.contains("string")),
            "{problems:?}"
        );
        let ints = json!({"type": "object", "properties": {"n": {"type": "integer"}}});
        let numbers = json!({"type": "object", "properties": {"n": {"type": "number"}}});
        assert!(
            super::check("T", Compatibility::Backward, &[&ints], &[&none], &numbers).is_empty()
        );
        assert!(
            !super::check("T", Compatibility::Forward, &[&ints], &[&none], &numbers).is_empty()
        );

        // A field constrained by the reader that the open writer never defined may arrive with
        // any value (Confluent: property added to an open content model).
        let typed_new_field = json!({"type": "object", "required": ["orderId", "symbol"],
            "properties": {"orderId": {"type": "string"}, "symbol": {"type": "string"},
                           "venue": {"type": "string"}}});
        let problems = check(Compatibility::Backward, &none, &typed_new_field);
        assert!(
            problems
                .iter()
                .any(|p| p.contains("\"venue\"") && p.contains("any extra field")),
            "{problems:?}"
        );

        // A closed reader refuses fields it does not list.
        let closed = json!({"type": "object", "additionalProperties": false, "required": ["orderId", "symbol"],
                            "properties": {"orderId": {"type": "string"}, "symbol": {"type": "string"}}});
        let problems = check(Compatibility::Backward, &none, &closed);
        assert!(
            problems.iter().any(|p| p.contains("additionalProperties")),
            "{problems:?}"
        );
    }

    #[test]
    fn transitive_modes_check_every_earlier_version() {
        // v1 {a}, v2 {a, b?}, v3 requires b: fine against v2 if v2→v3 adds b, and against
        // v1 only if the chain from v1 supplies b too.
        let v1 =
            json!({"type": "object", "required": ["a"], "properties": {"a": {"type": "string"}}});
        let v2 = json!({"type": "object", "required": ["a", "b"],
                        "properties": {"a": {"type": "string"}, "b": {"type": "string"}}});
        let v3 = json!({"type": "object", "required": ["a", "b"],
                        "properties": {"a": {"type": "string"}, "b": {"type": "string"}}});
        let none = Migration::default();
        // v1→v2 has no migration: v2 itself was registered under NONE.
        assert!(check(
            "T",
            Compatibility::Backward,
            &[&v1, &v2],
            &[&none, &none],
            &v3
        )
        .is_empty());
        let problems = check(
            "T",
            Compatibility::BackwardTransitive,
            &[&v1, &v2],
            &[&none, &none],
            &v3,
        );
        assert!(
            problems
                .iter()
                .any(|p| p.contains("v3 cannot read v1 data")),
            "{problems:?}"
        );
    }
}
