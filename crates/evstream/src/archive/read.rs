//! Reading an archive back: its manifest and the [`Record`]s of its files (`evstream trace`
//! and `evstream export` use it; DuckDB, pandas and Polars read the files directly).

use std::path::Path;

use parquet::file::reader::{FileReader, SerializedFileReader};
use parquet::record::{Row, RowAccessor};

use super::manifest::{self, ManifestRecord};
use super::record::{Kind, Record};
use super::store::{ArchiveStore, LocalDir, MANIFEST};
use crate::error::ArchiveError;

/// An archive directory opened for reading: nothing is written or locked, so it can be read
/// while an archiver writes it (the manifest names only files in place).
#[derive(Debug)]
pub struct ArchiveReader {
    store: LocalDir,
    files: Vec<ManifestRecord>,
}

impl ArchiveReader {
    /// Reads the manifest of the archive in `dir` (a line being written is left out).
    pub fn open(dir: &Path) -> Result<Self, ArchiveError> {
        let store = LocalDir::open(dir);
        let bytes = store.read_manifest()?;
        if bytes.is_empty() && !dir.join(MANIFEST).exists() {
            return Err(ArchiveError::Io {
                what: "reading the manifest of",
                path: dir.to_owned(),
                source: std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "no manifest.jsonl: not an evstream archive (evstream archive --dir DIR writes one)",
                ),
            });
        }
        let (files, _) =
            manifest::parse(&bytes).map_err(|(line, reason)| ArchiveError::Manifest {
                path: dir.join(MANIFEST),
                line,
                reason,
            })?;
        Ok(Self { store, files })
    }

    /// What each file holds, in the order they were recorded.
    pub fn files(&self) -> &[ManifestRecord] {
        &self.files
    }

    /// The records of one file, in stream order.
    pub fn read(&self, file: &ManifestRecord) -> Result<Vec<Record>, ArchiveError> {
        read_file(&self.store.local_path(&file.file), file.kind)
    }

    /// Every record of every file `wanted` selects (by what the manifest says it holds).
    pub fn read_where(
        &self,
        wanted: impl Fn(&ManifestRecord) -> bool,
    ) -> Result<Vec<Record>, ArchiveError> {
        let mut records = Vec::new();
        for file in self.files.iter().filter(|f| wanted(f)) {
            records.extend(self.read(file)?);
        }
        Ok(records)
    }
}

/// The records of the Parquet file `path` (an archive file, or one `evstream export`
/// wrote), read as entries of `kind`.
pub fn read_file(path: &Path, kind: Kind) -> Result<Vec<Record>, ArchiveError> {
    let error = |source| ArchiveError::Parquet {
        path: path.to_owned(),
        source,
    };
    let opened = std::fs::File::open(path).map_err(|source| ArchiveError::Io {
        what: "opening",
        path: path.to_owned(),
        source,
    })?;
    let reader = SerializedFileReader::new(opened).map_err(error)?;
    let rows = reader.metadata().file_metadata().num_rows();
    let mut records = Vec::with_capacity(usize::try_from(rows).unwrap_or(0));
    for row in reader.get_row_iter(None).map_err(error)? {
        let row = row.map_err(error)?;
        records.push(from_row(&row, kind).map_err(error)?);
    }
    Ok(records)
}

/// A row of the schema ([`super::file::SCHEMA`]) as a record.
fn from_row(row: &Row, kind: Kind) -> Result<Record, parquet::errors::ParquetError> {
    let text = |i: usize| -> Result<Option<String>, parquet::errors::ParquetError> {
        Ok(match row.get_string(i) {
            Ok(s) => Some(s.clone()),
            Err(_) => None,
        })
    };
    let number = |i: usize| row.get_long(i).ok();
    let partition = u16::try_from(row.get_int(0)?).unwrap_or(u16::MAX);
    let entry_id = row
        .get_string(1)?
        .parse()
        .map_err(parquet::errors::ParquetError::General)?;
    Ok(Record {
        kind,
        partition,
        entry_id,
        event_id: text(2)?,
        event_type: text(3)?,
        version: text(4)?,
        correlation_id: text(5)?,
        timestamp_ns: number(6),
        producer_id: text(7)?,
        sequence: number(8),
        data: text(9)?,
        extra: text(10)?,
    })
}
