//! Where archive files and the manifest live: [`ArchiveStore`], and [`LocalDir`], a local
//! directory.
//!
//! The archiver writes each file in a local staging directory, then hands it to the store,
//! which makes it appear under its final name whole or not at all; only then is the file
//! recorded in the manifest. An object store (S3, GCS, Azure, through the `object_store`
//! crate) fits the same contract: `publish` is one PUT (or a multipart upload completed at
//! the end: an object appears whole or not at all), `list` and `remove` are LIST and DELETE,
//! and the manifest, which objects cannot append to, is one small object per record under
//! `manifest/`, read back in name order (`docs/history.md`).

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::error::ArchiveError;

/// Where the archive's files and manifest are kept.
pub trait ArchiveStore: std::fmt::Debug + Send {
    /// A local directory for files being written (same file system as the store's files
    /// where that matters, for an atomic rename).
    fn staging(&self) -> &Path;
    /// Makes the complete, synced file `staged` the archive file `key` (a relative path with
    /// `/` separators), atomically and durably; returns its size in bytes.
    fn publish(&self, staged: &Path, key: &str) -> Result<u64, ArchiveError>;
    /// Every archive file's key (files ending in `.parquet`, outside the staging area).
    fn list(&self) -> Result<Vec<String>, ArchiveError>;
    /// Deletes the file `key`.
    fn remove(&self, key: &str) -> Result<(), ArchiveError>;
    /// A local path to read the file `key` from.
    fn local_path(&self, key: &str) -> PathBuf;
    /// The manifest's bytes (empty when there is none yet).
    fn read_manifest(&self) -> Result<Vec<u8>, ArchiveError>;
    /// Appends one line (ending in `\n`) to the manifest, durably.
    fn append_manifest(&mut self, line: &[u8]) -> Result<(), ArchiveError>;
    /// Cuts the manifest to its first `len` bytes (a torn last line after a crash).
    fn truncate_manifest(&mut self, len: u64) -> Result<(), ArchiveError>;
}

/// An archive in a local directory: the files under `events/` and `dlq/`, the manifest
/// `manifest.jsonl`, files being written in `.staging/`, and `.lock`, held while an archiver
/// writes.
#[derive(Debug)]
pub struct LocalDir {
    root: PathBuf,
    staging: PathBuf,
    manifest: Option<File>,
    /// Held (locked) for the archiver's life.
    _lock: Option<File>,
}

/// The manifest's file name in the archive directory.
pub const MANIFEST: &str = "manifest.jsonl";

fn io<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> ArchiveError + 'a {
    move |source| ArchiveError::Io {
        what,
        path: path.to_owned(),
        source,
    }
}

impl LocalDir {
    /// Opens `root` to read it (`trace`, `export`): no lock, nothing written.
    pub fn open(root: &Path) -> Self {
        Self {
            root: root.to_owned(),
            staging: root.join(".staging"),
            manifest: None,
            _lock: None,
        }
    }

    /// Opens `root` to write it, creating it if needed, and takes its lock: one archiver per
    /// archive. Anything left in the staging directory (files a killed archiver was writing)
    /// is deleted.
    pub fn lock(root: &Path) -> Result<Self, ArchiveError> {
        fs::create_dir_all(root).map_err(io("creating", root))?;
        let lock_path = root.join(".lock");
        let lock = File::create(&lock_path).map_err(io("creating", &lock_path))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                return Err(ArchiveError::Locked {
                    dir: root.to_owned(),
                })
            }
            Err(fs::TryLockError::Error(e)) => return Err(io("locking", &lock_path)(e)),
        }
        let staging = root.join(".staging");
        if staging.exists() {
            fs::remove_dir_all(&staging).map_err(io("cleaning", &staging))?;
        }
        fs::create_dir_all(&staging).map_err(io("creating", &staging))?;
        let manifest_path = root.join(MANIFEST);
        let manifest = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(&manifest_path)
            .map_err(io("opening", &manifest_path))?;
        Ok(Self {
            root: root.to_owned(),
            staging,
            manifest: Some(manifest),
            _lock: Some(lock),
        })
    }

    /// The archive's directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn manifest_path(&self) -> PathBuf {
        self.root.join(MANIFEST)
    }
}

/// Syncs a directory, so that a rename or a new file in it survives a crash.
fn sync_dir(dir: &Path) -> Result<(), ArchiveError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io("syncing", dir))
}

impl ArchiveStore for LocalDir {
    fn staging(&self) -> &Path {
        &self.staging
    }

    fn publish(&self, staged: &Path, key: &str) -> Result<u64, ArchiveError> {
        let target = self.local_path(key);
        let parent = target.parent().unwrap_or(&self.root);
        let new_dirs: Vec<&Path> = parent
            .ancestors()
            .take_while(|d| *d != self.root && !d.exists())
            .collect();
        fs::create_dir_all(parent).map_err(io("creating", parent))?;
        fs::rename(staged, &target).map_err(io("renaming", &target))?;
        // The file's own directory, then every directory this created, up to the root.
        sync_dir(parent)?;
        for dir in new_dirs {
            sync_dir(dir.parent().unwrap_or(&self.root))?;
        }
        let bytes = fs::metadata(&target).map_err(io("reading", &target))?.len();
        Ok(bytes)
    }

    fn list(&self) -> Result<Vec<String>, ArchiveError> {
        let mut keys = Vec::new();
        for kind in super::Kind::ALL {
            let dir = self.root.join(kind.dir());
            if dir.exists() {
                walk(&dir, &self.root, &mut keys)?;
            }
        }
        keys.sort();
        Ok(keys)
    }

    fn remove(&self, key: &str) -> Result<(), ArchiveError> {
        let path = self.local_path(key);
        fs::remove_file(&path).map_err(io("deleting", &path))
    }

    fn local_path(&self, key: &str) -> PathBuf {
        key.split('/')
            .fold(self.root.clone(), |p, part| p.join(part))
    }

    fn read_manifest(&self) -> Result<Vec<u8>, ArchiveError> {
        let path = self.manifest_path();
        let mut bytes = Vec::new();
        match File::open(&path) {
            Ok(mut file) => {
                file.read_to_end(&mut bytes).map_err(io("reading", &path))?;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io("reading", &path)(e)),
        }
        Ok(bytes)
    }

    fn append_manifest(&mut self, line: &[u8]) -> Result<(), ArchiveError> {
        let path = self.manifest_path();
        let file = self.manifest.as_mut().ok_or_else(|| ArchiveError::Io {
            what: "appending to",
            path: path.clone(),
            source: std::io::Error::other("the archive is open for reading only"),
        })?;
        file.write_all(line)
            .and_then(|()| file.sync_data())
            .map_err(io("appending to", &path))
    }

    fn truncate_manifest(&mut self, len: u64) -> Result<(), ArchiveError> {
        let path = self.manifest_path();
        if let Some(file) = self.manifest.as_mut() {
            file.set_len(len)
                .and_then(|()| file.seek(SeekFrom::End(0)).map(drop))
                .and_then(|()| file.sync_all())
                .map_err(io("repairing", &path))?;
        }
        Ok(())
    }
}

/// Every `.parquet` file under `dir`, as keys relative to `root`.
fn walk(dir: &Path, root: &Path, keys: &mut Vec<String>) -> Result<(), ArchiveError> {
    for entry in fs::read_dir(dir).map_err(io("listing", dir))? {
        let path = entry.map_err(io("listing", dir))?.path();
        if path.is_dir() {
            walk(&path, root, keys)?;
        } else if path.extension().is_some_and(|e| e == "parquet") {
            if let Ok(relative) = path.strip_prefix(root) {
                let parts: Vec<_> = relative.iter().map(|p| p.to_string_lossy()).collect();
                keys.push(parts.join("/"));
            }
        }
    }
    Ok(())
}
