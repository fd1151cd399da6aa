//! Migrations as data: the steps that turn a payload of version N into version N + 1.
//!
//! A migration file `v<N>-to-v<N+1>.json` holds `{"ops": [ … ]}`, applied in order to `data`.
//! Paths are JSON Pointers (RFC 6901) into the payload; the parent of a path must exist.
//!
//! | op | fields | effect |
//! |---|---|---|
//! | `add` | `path`, `value` | sets the field to `value` if it is absent (a new field with a default) |
//! | `set` | `path`, `value` | sets the field to `value` in every case |
//! | `rename` | `from`, `path` | moves the field (absent: nothing to do) |
//! | `remove` | `path` | removes the field if present |
//! | `convert` | `path`, `to` | converts the field's value to `string`, `number`, `integer` or `boolean` |

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One step of a migration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Op {
    /// Adds a field with a default value if it is absent.
    Add {
        /// Where.
        path: String,
        /// The default.
        value: Value,
    },
    /// Sets a field, present or not.
    Set {
        /// Where.
        path: String,
        /// The value.
        value: Value,
    },
    /// Moves a field.
    Rename {
        /// The old place.
        from: String,
        /// The new place.
        path: String,
    },
    /// Removes a field.
    Remove {
        /// Where.
        path: String,
    },
    /// Converts a field's value to another JSON type.
    Convert {
        /// Where.
        path: String,
        /// `string`, `number`, `integer` or `boolean`.
        to: Target,
    },
}

/// The JSON types `convert` can produce.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    /// A string (numbers and booleans print as JSON does).
    String,
    /// A floating-point number (from a number or a numeric string).
    Number,
    /// An integer (from an integral number or string).
    Integer,
    /// `true`/`false` (from the strings `"true"`/`"false"`, or 0/1).
    Boolean,
}

/// The contents of one migration file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Migration {
    /// The steps, in order.
    pub ops: Vec<Op>,
}

/// Splits a JSON Pointer into its parent pointer and last key.
fn split(path: &str) -> Result<(&str, String), String> {
    if !path.starts_with('/') {
        return Err(format!(
            "path {path:?} is not a JSON Pointer (it must start with '/')"
        ));
    }
    let at = path.rfind('/').unwrap_or(0);
    let key = path[at + 1..].replace("~1", "/").replace("~0", "~");
    Ok((&path[..at], key))
}

fn parent<'v>(
    data: &'v mut Value,
    path: &str,
) -> Result<&'v mut serde_json::Map<String, Value>, String> {
    let (parent, _) = split(path)?;
    data.pointer_mut(parent)
        .and_then(Value::as_object_mut)
        .ok_or_else(|| format!("the parent of {path} is not an object in this payload"))
}

impl Migration {
    /// Checks that every path is a JSON Pointer.
    pub fn check(&self) -> Result<(), String> {
        for op in &self.ops {
            match op {
                Op::Add { path, .. }
                | Op::Set { path, .. }
                | Op::Remove { path }
                | Op::Convert { path, .. } => {
                    split(path)?;
                }
                Op::Rename { from, path } => {
                    split(from)?;
                    split(path)?;
                }
            }
        }
        Ok(())
    }

    /// Applies the steps to `data`.
    pub fn apply(&self, data: &mut Value) -> Result<(), String> {
        for op in &self.ops {
            match op {
                Op::Add { path, value } => {
                    let (_, key) = split(path)?;
                    parent(data, path)?
                        .entry(key)
                        .or_insert_with(|| value.clone());
                }
                Op::Set { path, value } => {
                    let (_, key) = split(path)?;
                    parent(data, path)?.insert(key, value.clone());
                }
                Op::Rename { from, path } => {
                    let (_, old) = split(from)?;
                    let moved = parent(data, from)?.remove(&old);
                    if let Some(moved) = moved {
                        let (_, new) = split(path)?;
                        parent(data, path)?.insert(new, moved);
                    }
                }
                Op::Remove { path } => {
                    let (_, key) = split(path)?;
                    if let Ok(object) = parent(data, path) {
                        object.remove(&key);
                    }
                }
                Op::Convert { path, to } => {
                    if let Some(value) = data.pointer_mut(path) {
                        *value = convert(value, *to)
                            .ok_or_else(|| format!("cannot convert {path} = {value} to {to:?}"))?;
                    }
                }
            }
        }
        Ok(())
    }
}

fn convert(value: &Value, to: Target) -> Option<Value> {
    match (to, value) {
        (Target::String, Value::String(_)) => Some(value.clone()),
        (Target::String, Value::Number(_) | Value::Bool(_)) => {
            Some(Value::String(value.to_string()))
        }
        (Target::Number, Value::Number(n)) => n.as_f64().map(Value::from),
        (Target::Number, Value::String(s)) => s
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|f| f.is_finite())
            .map(Value::from),
        (Target::Integer, Value::Number(n)) => n.as_i64().map(Value::from).or_else(|| {
            n.as_f64()
                .filter(|f| f.fract() == 0.0 && f.abs() < 9.0e15)
                .map(|f| Value::from(f as i64))
        }),
        (Target::Integer, Value::String(s)) => s.trim().parse::<i64>().ok().map(Value::from),
        (Target::Boolean, Value::Bool(_)) => Some(value.clone()),
        (Target::Boolean, Value::String(s)) => match s.as_str() {
            "true" => Some(Value::Bool(true)),
            "false" => Some(Value::Bool(false)),
            _ => None,
        },
        (Target::Boolean, Value::Number(n)) => match n.as_i64() {
            Some(0) => Some(Value::Bool(false)),
            Some(1) => Some(Value::Bool(true)),
            _ => None,
        },
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn every_op_does_what_the_table_says() {
        let migration: Migration = serde_json::from_value(json!({"ops": [
            {"op": "add", "path": "/quantity", "value": 0},
            {"op": "add", "path": "/kept", "value": 9},
            {"op": "set", "path": "/currency", "value": "USD"},
            {"op": "rename", "from": "/px", "path": "/price"},
            {"op": "remove", "path": "/legacy"},
            {"op": "convert", "path": "/price", "to": "number"},
            {"op": "convert", "path": "/lots", "to": "integer"},
            {"op": "convert", "path": "/urgent", "to": "boolean"}
        ]}))
        .unwrap();
        migration.check().unwrap();
        let mut data =
            json!({"kept": 1, "px": "12.5", "legacy": true, "lots": 3.0, "urgent": "true"});
        migration.apply(&mut data).unwrap();
        assert_eq!(
            data,
            json!({"quantity": 0, "kept": 1, "currency": "USD", "price": 12.5, "lots": 3, "urgent": true})
        );
        let mut bad = json!({"price": "n/a"});
        let error = migration.apply(&mut bad).unwrap_err();
        assert!(error.contains("/price"), "{error}");
    }

    #[test]
    fn paths_must_be_pointers() {
        let migration = Migration {
            ops: vec![Op::Remove {
                path: "legacy".into(),
            }],
        };
        assert!(migration.check().unwrap_err().contains("JSON Pointer"));
    }
}
