//! The schema registry: JSON Schemas per event type and version, migrations between
//! consecutive versions, and compatibility checks when a version is registered.
//!
//! # Files
//!
//! ```text
//! schemas/
//!   OrderCreated/
//!     config.json        optional: {"compatibility": "BACKWARD"} (the default)
//!     v1.json            JSON Schema of `data` in version v1
//!     v2.json
//!     v1-to-v2.json      the migration v1 → v2: {"ops": [{"op": "add", "path": "/quantity", "value": 0}]}
//! ```
//!
//! Versions are consecutive from v1, and every version after the first has its migration file
//! (possibly `{"ops": []}`). Schemas are compiled once, when the registry is built, with the
//! `jsonschema` crate without network or file access: a `$ref` to anything outside the schema
//! is an error. See [`migration`] for the operations and [`Compatibility`] for the modes.
//!
//! # In Redis
//!
//! `evstream schema push <dir>` stores every file in the hash `evstream:schemas` (field = the
//! file's path relative to the directory, e.g. `OrderCreated/v2.json`, value = its text) and
//! increments `evstream:schemas:revision`, in one transaction. A registered version can never
//! change; a new one is checked against those already registered. Processes load the registry
//! from there ([`load`]) or from a directory ([`Registry::from_dir`]); the shipper and the
//! consumer follow it from either the same way (`schema/source.rs`: a directory is read once,
//! the registry in Redis is reloaded when its revision moves).
//!
//! ```
//! use evstream::schema::Registry;
//!
//! let registry = Registry::from_dir(std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../schemas")))?;
//! let mut data = serde_json::json!({"orderId": "42", "symbol": "AAPL"});
//! let version = registry.upgrade("OrderCreated", 1, &mut data)?;
//! assert_eq!(version, 2);
//! assert_eq!(data["quantity"], 0);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod compat;
pub mod migration;
mod source;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use serde_json::Value;

pub use compat::Compatibility;
pub use migration::Migration;
pub(crate) use source::Source;

use crate::error::SchemaError;

/// The Redis hash holding the registry's files.
pub use crate::keys::SCHEMAS as REDIS_KEY;
/// The Redis counter incremented by every push.
pub use crate::keys::SCHEMAS_REVISION as REDIS_REVISION_KEY;

/// A migration step written in Rust, for what [`migration::Op`]s cannot express. It runs after
/// the step's data operations.
pub type Hook = Arc<dyn Fn(&mut Value) -> Result<(), String> + Send + Sync>;

/// Why an event's `data` cannot be brought to the latest version.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SchemaFailure {
    /// No schema is registered for the type.
    #[error("event type {0:?} has no registered schema")]
    UnknownType(String),
    /// The version is not registered.
    #[error("{event_type} v{version} is not registered (latest: v{latest})")]
    UnknownVersion {
        /// The type.
        event_type: String,
        /// The version asked for.
        version: u32,
        /// The latest registered one.
        latest: u32,
    },
    /// `data` does not match its version's schema.
    #[error("{event_type} v{version}: data does not match the schema: {message}")]
    Invalid {
        /// The type.
        event_type: String,
        /// Its version.
        version: u32,
        /// The first violation.
        message: String,
    },
    /// A version newer than the one the handler reads, in a type whose versions are not
    /// registered as forward-compatible: nothing says the reader can read it.
    #[error(
        "{event_type} v{version} is not forward-compatible with v{reader}, which this handler \
         reads ({event_type} is registered as {compatibility}): upgrade the handler to read \
         v{version}, or register {event_type} as FORWARD or FULL"
    )]
    NotForwardCompatible {
        /// The type.
        event_type: String,
        /// The event's version.
        version: u32,
        /// The newest version the handler reads.
        reader: u32,
        /// The type's registered mode.
        compatibility: Compatibility,
    },
    /// A newer version, registered as forward-compatible, whose data the reader's schema
    /// still refuses (a non-transitive mode only checked it against the version before).
    #[error(
        "{event_type} v{version} data does not match v{reader}, which this handler reads: \
         {message}; upgrade the handler to read v{version}, or register {event_type} as \
         FORWARD_TRANSITIVE or FULL_TRANSITIVE"
    )]
    Unreadable {
        /// The type.
        event_type: String,
        /// The event's version.
        version: u32,
        /// The newest version the handler reads.
        reader: u32,
        /// The first violation of the reader's schema.
        message: String,
    },
    /// A migration step failed.
    #[error("{event_type} v{from} → v{}: migration failed: {message}", from + 1)]
    MigrationFailed {
        /// The type.
        event_type: String,
        /// The version migrated from.
        from: u32,
        /// What went wrong.
        message: String,
    },
}

/// The dead-letter reason of an event newer than its handler reads and not readable as a
/// version it reads (the `EventsUnreadable` alert counts it).
pub const UNREADABLE_VERSION: &str = "unreadable_version";

impl SchemaFailure {
    /// The dead letter reason code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::UnknownType(_) => "unknown_type",
            Self::UnknownVersion { .. } => "unknown_version",
            Self::Invalid { .. } => "invalid_schema",
            Self::MigrationFailed { .. } => "migration_failed",
            Self::NotForwardCompatible { .. } | Self::Unreadable { .. } => UNREADABLE_VERSION,
        }
    }
}

struct Version {
    validator: jsonschema::Validator,
    /// The migration to the next version, if there is one.
    to_next: Option<Migration>,
    hook: Option<Hook>,
}

struct TypeSchemas {
    compatibility: Compatibility,
    /// v1 at index 0.
    versions: Vec<Version>,
}

/// Every event type's schemas, compiled; see the [module documentation](self).
pub struct Registry {
    types: BTreeMap<String, TypeSchemas>,
    files: BTreeMap<String, String>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map()
            .entries(self.types.iter().map(|(t, s)| (t, s.versions.len())))
            .finish()
    }
}

/// One line of `evstream schema list`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TypeSummary {
    /// The event type.
    pub event_type: String,
    /// Registered versions (1 ..= latest).
    pub latest: u32,
    /// Its compatibility mode.
    pub compatibility: Compatibility,
}

fn parse_version(name: &str) -> Option<u32> {
    name.strip_prefix('v')?.parse().ok().filter(|v| *v >= 1)
}

impl Registry {
    /// Loads and checks every file under `dir`; the error lists every problem found.
    pub fn from_dir(dir: &Path) -> Result<Self, SchemaError> {
        let mut files = BTreeMap::new();
        let read_dir = |path: &Path| {
            std::fs::read_dir(path).map_err(|source| SchemaError::Io {
                path: path.to_owned(),
                source,
            })
        };
        for type_dir in read_dir(dir)? {
            let type_dir = type_dir.map_err(|source| SchemaError::Io {
                path: dir.to_owned(),
                source,
            })?;
            if !type_dir.path().is_dir() {
                continue;
            }
            for file in read_dir(&type_dir.path())? {
                let path = file
                    .map_err(|source| SchemaError::Io {
                        path: type_dir.path(),
                        source,
                    })?
                    .path();
                let text = std::fs::read_to_string(&path).map_err(|source| SchemaError::Io {
                    path: path.clone(),
                    source,
                })?;
                let relative = path.strip_prefix(dir).unwrap_or(&path);
                files.insert(relative.to_string_lossy().replace('\\', "/"), text);
            }
        }
        Self::from_files(files)
    }

    /// Builds the registry from file texts keyed by relative path (`OrderCreated/v1.json`).
    pub fn from_files(files: BTreeMap<String, String>) -> Result<Self, SchemaError> {
        let mut problems = Vec::new();
        // type → (config, versions, migrations)
        type Parts = (
            Option<Value>,
            BTreeMap<u32, Value>,
            BTreeMap<u32, Migration>,
        );
        let mut parts: BTreeMap<String, Parts> = BTreeMap::new();
        for (path, text) in &files {
            let Some((event_type, name)) = path.split_once('/') else {
                problems.push(format!("{path}: expected <EventType>/<file>"));
                continue;
            };
            let entry = parts.entry(event_type.to_owned()).or_default();
            let Some(stem) = name.strip_suffix(".json") else {
                problems.push(format!("{path}: not a .json file"));
                continue;
            };
            let value: Value = match serde_json::from_str(text) {
                Ok(value) => value,
                Err(error) => {
                    problems.push(format!("{path}: not valid JSON: {error}"));
                    continue;
                }
            };
            if stem == "config" {
                entry.0 = Some(value);
            } else if let Some((from, to)) = stem.split_once("-to-") {
                match (parse_version(from), parse_version(to)) {
                    (Some(from), Some(to)) if to == from + 1 => {
                        match serde_json::from_value::<Migration>(value) {
                            Ok(migration) => match migration.check() {
                                Ok(()) => {
                                    entry.2.insert(from, migration);
                                }
                                Err(error) => problems.push(format!("{path}: {error}")),
                            },
                            Err(error) => {
                                problems.push(format!("{path}: invalid migration: {error}"))
                            }
                        }
                    }
                    _ => problems.push(format!(
                        "{path}: migrations go from vN to vN+1 (e.g. v1-to-v2.json)"
                    )),
                }
            } else if let Some(version) = parse_version(stem) {
                entry.1.insert(version, value);
            } else {
                problems.push(format!(
                    "{path}: unknown file (expected config.json, vN.json or vN-to-vN+1.json)"
                ));
            }
        }

        let mut types = BTreeMap::new();
        for (event_type, (config, schemas, migrations)) in parts {
            let compatibility = match config.map(|c| c.get("compatibility").cloned()) {
                None | Some(None) => Compatibility::default(),
                Some(Some(mode)) => match serde_json::from_value(mode) {
                    Ok(mode) => mode,
                    Err(_) => {
                        problems.push(format!(
                            "{event_type}/config.json: compatibility must be one of BACKWARD, BACKWARD_TRANSITIVE, FORWARD, FORWARD_TRANSITIVE, FULL, FULL_TRANSITIVE, NONE"
                        ));
                        Compatibility::default()
                    }
                },
            };
            let latest = schemas.keys().next_back().copied().unwrap_or(0);
            if schemas.is_empty() {
                problems.push(format!(
                    "{event_type}: no schema (expected {event_type}/v1.json)"
                ));
                continue;
            }
            if schemas.len() as u32 != latest {
                let missing: Vec<String> = (1..=latest)
                    .filter(|v| !schemas.contains_key(v))
                    .map(|v| format!("v{v}"))
                    .collect();
                problems.push(format!(
                    "{event_type}: versions must be consecutive from v1; missing {}",
                    missing.join(", ")
                ));
                continue;
            }
            for from in migrations.keys() {
                if *from >= latest {
                    problems.push(format!(
                        "{event_type}/v{from}-to-v{}.json: there is no v{}",
                        from + 1,
                        from + 1
                    ));
                }
            }
            let mut versions = Vec::new();
            let mut ok = true;
            for (version, schema) in &schemas {
                if *version > 1 && !migrations.contains_key(&(version - 1)) {
                    problems.push(format!(
                        "{event_type}: v{version} needs the migration {event_type}/v{}-to-v{version}.json (it may be {{\"ops\": []}})",
                        version - 1
                    ));
                    ok = false;
                }
                let previous: Vec<&Value> = schemas.range(..version).map(|(_, s)| s).collect();
                let steps: Vec<&Migration> =
                    (1..*version).filter_map(|v| migrations.get(&v)).collect();
                if steps.len() == previous.len() {
                    problems.extend(compat::check(
                        &event_type,
                        compatibility,
                        &previous,
                        &steps,
                        schema,
                    ));
                }
                match jsonschema::validator_for(schema) {
                    Ok(validator) => versions.push(Version {
                        validator,
                        to_next: migrations.get(version).cloned(),
                        hook: None,
                    }),
                    Err(error) => {
                        problems.push(format!(
                            "{event_type}/v{version}.json: not a usable JSON Schema: {error}"
                        ));
                        ok = false;
                    }
                }
            }
            if ok {
                types.insert(
                    event_type,
                    TypeSchemas {
                        compatibility,
                        versions,
                    },
                );
            }
        }
        if problems.is_empty() {
            Ok(Self { types, files })
        } else {
            Err(SchemaError::Invalid { problems })
        }
    }

    /// The files the registry was built from, by relative path.
    pub fn files(&self) -> &BTreeMap<String, String> {
        &self.files
    }

    /// Every event type with its latest version and mode.
    pub fn summary(&self) -> Vec<TypeSummary> {
        self.types
            .iter()
            .map(|(event_type, schemas)| TypeSummary {
                event_type: event_type.clone(),
                latest: schemas.versions.len() as u32,
                compatibility: schemas.compatibility,
            })
            .collect()
    }

    /// The latest version of `event_type`.
    pub fn latest(&self, event_type: &str) -> Option<u32> {
        self.types.get(event_type).map(|s| s.versions.len() as u32)
    }

    /// The compatibility mode `event_type` is registered with.
    pub fn compatibility(&self, event_type: &str) -> Option<Compatibility> {
        self.types.get(event_type).map(|s| s.compatibility)
    }

    /// Adds a Rust step to the migration from `from_version` to the next.
    pub fn set_hook(
        &mut self,
        event_type: &str,
        from_version: u32,
        hook: Hook,
    ) -> Result<(), SchemaFailure> {
        let step = self.version_mut(event_type, from_version)?;
        step.hook = Some(hook);
        Ok(())
    }

    fn version_mut(
        &mut self,
        event_type: &str,
        version: u32,
    ) -> Result<&mut Version, SchemaFailure> {
        let schemas = self
            .types
            .get_mut(event_type)
            .ok_or_else(|| SchemaFailure::UnknownType(event_type.to_owned()))?;
        let latest = schemas.versions.len() as u32;
        schemas
            .versions
            .get_mut(version.wrapping_sub(1) as usize)
            .ok_or_else(|| SchemaFailure::UnknownVersion {
                event_type: event_type.to_owned(),
                version,
                latest,
            })
    }

    fn versions(&self, event_type: &str, version: u32) -> Result<&[Version], SchemaFailure> {
        let schemas = self
            .types
            .get(event_type)
            .ok_or_else(|| SchemaFailure::UnknownType(event_type.to_owned()))?;
        let latest = schemas.versions.len() as u32;
        if version == 0 || version > latest {
            return Err(SchemaFailure::UnknownVersion {
                event_type: event_type.to_owned(),
                version,
                latest,
            });
        }
        Ok(&schemas.versions[version as usize - 1..])
    }

    /// Checks `data` against the schema of `event_type` `version`.
    pub fn validate(
        &self,
        event_type: &str,
        version: u32,
        data: &Value,
    ) -> Result<(), SchemaFailure> {
        let versions = self.versions(event_type, version)?;
        let validator = &versions[0].validator;
        if validator.is_valid(data) {
            return Ok(());
        }
        let message = validator
            .validate(data)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        Err(SchemaFailure::Invalid {
            event_type: event_type.to_owned(),
            version,
            message,
        })
    }

    /// Validates `data` as `event_type` `version`, then migrates it in place to the latest
    /// version, which it returns.
    pub fn upgrade(
        &self,
        event_type: &str,
        version: u32,
        data: &mut Value,
    ) -> Result<u32, SchemaFailure> {
        self.upgrade_to(event_type, version, u32::MAX, data)
    }

    /// Validates `data` as `event_type` `version`, then migrates it in place up to `target`
    /// (at most the latest version), and returns the version it now has: what a reader of
    /// `target` is given for an older event. A `version` above `target` is left as it is
    /// (see [`read_as`](Self::read_as) for reading newer data).
    pub fn upgrade_to(
        &self,
        event_type: &str,
        version: u32,
        target: u32,
        data: &mut Value,
    ) -> Result<u32, SchemaFailure> {
        self.validate(event_type, version, data)?;
        let versions = self.versions(event_type, version)?;
        // `versions[0]` is `version`; each step is the migration out of one of them.
        let steps = (target.saturating_sub(version) as usize).min(versions.len() - 1);
        for (step, from) in versions[..steps].iter().zip(version..) {
            let failed = |message: String| SchemaFailure::MigrationFailed {
                event_type: event_type.to_owned(),
                from,
                message,
            };
            if let Some(migration) = &step.to_next {
                migration.apply(data).map_err(failed)?;
            }
            if let Some(hook) = &step.hook {
                hook(data).map_err(failed)?;
            }
        }
        Ok(version + steps as u32)
    }

    /// Checks that `data` of `event_type` `version` can be read as the older version
    /// `reader`, as Avro's and Confluent's reader schemas read newer data: `version` must be
    /// registered, `data` valid for it, the type registered as forward-compatible (`FORWARD`,
    /// `FULL` or their transitive variants: every new version was checked to be readable by
    /// older readers when it was pushed), and `data` valid for `reader`'s schema. That last
    /// check is what makes a non-transitive mode safe for a reader more than one version
    /// behind, which its push never checked. Fields `reader` does not know are left in
    /// `data`: an open schema allows them, and a reader ignores them.
    pub fn read_as(
        &self,
        event_type: &str,
        version: u32,
        reader: u32,
        data: &Value,
    ) -> Result<(), SchemaFailure> {
        self.validate(event_type, version, data)?;
        if reader >= version {
            return Ok(());
        }
        let compatibility = self
            .compatibility(event_type)
            .ok_or_else(|| SchemaFailure::UnknownType(event_type.to_owned()))?;
        if !compatibility.is_forward() {
            return Err(SchemaFailure::NotForwardCompatible {
                event_type: event_type.to_owned(),
                version,
                reader,
                compatibility,
            });
        }
        self.validate(event_type, reader, data)
            .map_err(|failure| match failure {
                SchemaFailure::Invalid { message, .. } => SchemaFailure::Unreadable {
                    event_type: event_type.to_owned(),
                    version,
                    reader,
                    message,
                },
                other => other,
            })
    }

    /// Problems with registering `self` over the already `registered` registry: a registered
    /// file that changed or is missing here. (New versions were checked for compatibility
    /// when `self` was built.)
    pub fn conflicts_with(&self, registered: &Registry) -> Vec<String> {
        let mut problems = Vec::new();
        for (path, text) in &registered.files {
            match self.files.get(path) {
                None => problems.push(format!("{path} is registered but missing here; registered versions cannot be removed")),
                Some(mine) if serde_json::from_str::<Value>(mine).ok() != serde_json::from_str::<Value>(text).ok() => {
                    problems.push(format!("{path} differs from the registered one; a registered version cannot change (add a new version instead)"))
                }
                Some(_) => {}
            }
        }
        problems
    }
}

/// Loads the registry stored in Redis by `evstream schema push` (empty if none was pushed).
pub async fn load<C>(connection: &mut C) -> Result<Registry, SchemaError>
where
    C: redis::aio::ConnectionLike + Send,
{
    let files: BTreeMap<String, String> = redis::cmd("HGETALL")
        .arg(REDIS_KEY)
        .query_async(connection)
        .await
        .map_err(|source| SchemaError::Redis { source })?;
    Registry::from_files(files)
}

/// Stores `registry` in Redis after checking it against what is registered there; returns
/// the files that were new.
pub async fn push<C>(connection: &mut C, registry: &Registry) -> Result<Vec<String>, SchemaError>
where
    C: redis::aio::ConnectionLike + Send,
{
    let registered = load(connection).await?;
    let problems = registry.conflicts_with(&registered);
    if !problems.is_empty() {
        return Err(SchemaError::Invalid { problems });
    }
    let added: Vec<String> = registry
        .files
        .keys()
        .filter(|path| !registered.files.contains_key(*path))
        .cloned()
        .collect();
    if added.is_empty() {
        return Ok(added);
    }
    let mut pipe = redis::pipe();
    pipe.atomic();
    let mut hset = redis::cmd("HSET");
    hset.arg(REDIS_KEY);
    for path in &added {
        hset.arg(path).arg(&registry.files[path]);
    }
    pipe.add_command(hset)
        .ignore()
        .incr(REDIS_REVISION_KEY, 1)
        .ignore();
    pipe.query_async::<()>(connection)
        .await
        .map_err(|source| SchemaError::Redis { source })?;
    Ok(added)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// `Order` v1 (`id`), v2 (+ optional `venue` with a default), v3 (+ optional `desk`), in
    /// `mode`.
    fn registry(mode: &str) -> Registry {
        let schema = |fields: &[&str]| {
            let properties: serde_json::Map<String, Value> = fields
                .iter()
                .map(|f| ((*f).to_owned(), json!({"type": "string"})))
                .collect();
            json!({"type": "object", "required": ["id"], "properties": properties}).to_string()
        };
        let add = |field: &str| {
            json!({"ops": [{"op": "add", "path": format!("/{field}"), "value": "x"}]}).to_string()
        };
        let files = [
            (
                "Order/config.json",
                json!({"compatibility": mode}).to_string(),
            ),
            ("Order/v1.json", schema(&["id"])),
            ("Order/v2.json", schema(&["id", "venue"])),
            ("Order/v1-to-v2.json", add("venue")),
            ("Order/v3.json", schema(&["id", "venue", "desk"])),
            ("Order/v2-to-v3.json", add("desk")),
        ];
        Registry::from_files(files.map(|(p, t)| (p.to_owned(), t)).into()).unwrap()
    }

    #[test]
    fn upgrade_to_stops_at_the_readers_version() {
        let registry = registry("FULL");
        let mut data = json!({"id": "1"});
        assert_eq!(registry.upgrade_to("Order", 1, 2, &mut data), Ok(2));
        assert_eq!(data, json!({"id": "1", "venue": "x"}));
        let mut data = json!({"id": "1"});
        assert_eq!(registry.upgrade_to("Order", 1, 9, &mut data), Ok(3));
        assert_eq!(data, json!({"id": "1", "venue": "x", "desk": "x"}));
        let mut data = json!({"id": "1"});
        assert_eq!(registry.upgrade_to("Order", 1, 1, &mut data), Ok(1));
        assert_eq!(data, json!({"id": "1"}));
    }

    #[test]
    fn newer_data_is_read_as_an_older_version_only_when_forward_compatible() {
        let data = json!({"id": "1", "venue": "v", "desk": "d"});
        for mode in ["FORWARD", "FULL", "FORWARD_TRANSITIVE", "FULL_TRANSITIVE"] {
            assert_eq!(
                registry(mode).read_as("Order", 3, 2, &data),
                Ok(()),
                "{mode}"
            );
            assert_eq!(
                registry(mode).read_as("Order", 3, 1, &data),
                Ok(()),
                "{mode}"
            );
        }
        for mode in ["BACKWARD", "BACKWARD_TRANSITIVE", "NONE"] {
            let failure = registry(mode).read_as("Order", 3, 2, &data).unwrap_err();
            assert_eq!(failure.code(), "unreadable_version");
            let message = failure.to_string();
            assert!(
                message.starts_with(
                    "Order v3 is not forward-compatible with v2, which this handler reads"
                ) && message.contains(&format!("registered as {mode}"))
                    && message.contains("upgrade the handler to read v3"),
                "{message}"
            );
        }
        // Data that fails its own version's schema is invalid, whatever the reader.
        let failure = registry("FULL")
            .read_as("Order", 3, 2, &json!({"venue": "v"}))
            .unwrap_err();
        assert_eq!(failure.code(), "invalid_schema");
        // A version nobody registered is unknown, not unreadable: a reload may learn it.
        let failure = registry("FULL").read_as("Order", 4, 2, &data).unwrap_err();
        assert_eq!(failure.code(), "unknown_version");
    }

    #[test]
    fn newer_data_failing_the_readers_schema_is_unreadable() {
        // The push-time check compares fields and types, not every constraint: v1 limits
        // `id` to 3 characters, v2 does not.
        let files = [
            ("Order/config.json", json!({"compatibility": "FORWARD"})),
            (
                "Order/v1.json",
                json!({"type": "object", "required": ["id"],
                       "properties": {"id": {"type": "string", "maxLength": 3}}}),
            ),
            (
                "Order/v2.json",
                json!({"type": "object", "required": ["id"],
                       "properties": {"id": {"type": "string"}}}),
            ),
            ("Order/v1-to-v2.json", json!({"ops": []})),
        ];
        let registry =
            Registry::from_files(files.map(|(p, v)| (p.to_owned(), v.to_string())).into()).unwrap();
        assert_eq!(
            registry.read_as("Order", 2, 1, &json!({"id": "123"})),
            Ok(())
        );
        let failure = registry
            .read_as("Order", 2, 1, &json!({"id": "12345"}))
            .unwrap_err();
        assert_eq!(failure.code(), "unreadable_version");
        let message = failure.to_string();
        assert!(
            message.starts_with("Order v2 data does not match v1, which this handler reads")
                && message.contains("upgrade the handler to read v2"),
            "{message}"
        );
    }
}
