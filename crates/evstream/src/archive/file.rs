//! One archive file being written: the columns of its rows, row groups written as they fill,
//! the footer on close.
//!
//! The columns are a [`Record`]'s, in the order of [`SCHEMA`].

use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parquet::basic::{Compression, ZstdLevel};
use parquet::data_type::{ByteArray, ByteArrayType, Int32Type, Int64Type};
use parquet::file::metadata::KeyValue;
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::types::{ColumnPath, Type};

use super::record::Record;
use crate::error::ArchiveError;
use crate::redis::EntryId;

/// The files' schema, in Parquet's message syntax. Column order is part of the format.
pub(crate) const SCHEMA: &str = "message evstream_entry {
  REQUIRED INT32 partition;
  REQUIRED BYTE_ARRAY entry_id (UTF8);
  OPTIONAL BYTE_ARRAY event_id (UTF8);
  OPTIONAL BYTE_ARRAY event_type (UTF8);
  OPTIONAL BYTE_ARRAY version (UTF8);
  OPTIONAL BYTE_ARRAY correlation_id (UTF8);
  OPTIONAL INT64 timestamp_ns;
  OPTIONAL BYTE_ARRAY producer_id (UTF8);
  OPTIONAL INT64 sequence;
  OPTIONAL BYTE_ARRAY data (UTF8);
  OPTIONAL BYTE_ARRAY extra (UTF8);
}";

/// The version of the files' layout, in each file's footer (`evstream.archive.format`).
pub(crate) const FORMAT_VERSION: &str = "1";

/// Rows buffered before they are written as a row group...
const ROW_GROUP_ROWS: usize = 65_536;

/// ... or bytes of values, whichever comes first: what an open file holds in memory.
const ROW_GROUP_BYTES: usize = 16 << 20;

/// A nullable column: its values and one definition level per row (1 present, 0 null).
#[derive(Debug, Default)]
struct Nullable<T> {
    values: Vec<T>,
    levels: Vec<i16>,
}

impl<T> Nullable<T> {
    fn push(&mut self, value: Option<T>) {
        self.levels.push(i16::from(value.is_some()));
        self.values.extend(value);
    }

    fn clear(&mut self) {
        self.values.clear();
        self.levels.clear();
    }
}

/// The rows not yet written, column by column.
#[derive(Debug, Default)]
struct Columns {
    partition: Vec<i32>,
    entry_id: Vec<ByteArray>,
    /// `event_id`, `event_type`, `version`, `correlation_id`, `producer_id`.
    text: [Nullable<ByteArray>; 5],
    timestamp_ns: Nullable<i64>,
    sequence: Nullable<i64>,
    data: Nullable<ByteArray>,
    extra: Nullable<ByteArray>,
    /// Bytes of the values buffered, to estimate the file's size.
    bytes: usize,
}

impl Columns {
    fn rows(&self) -> usize {
        self.partition.len()
    }

    fn push(&mut self, record: Record) {
        let bytes = |value: Option<String>| value.map(|v| ByteArray::from(v.into_bytes()));
        self.partition.push(i32::from(record.partition));
        self.entry_id
            .push(ByteArray::from(record.entry_id.to_string().into_bytes()));
        let strings = [
            record.event_id,
            record.event_type,
            record.version,
            record.correlation_id,
            record.producer_id,
        ];
        for (column, value) in self.text.iter_mut().zip(strings) {
            self.bytes += value.as_ref().map_or(0, String::len);
            column.push(bytes(value));
        }
        self.timestamp_ns.push(record.timestamp_ns);
        self.sequence.push(record.sequence);
        for (column, value) in [
            (&mut self.data, record.data),
            (&mut self.extra, record.extra),
        ] {
            self.bytes += value.as_ref().map_or(0, String::len);
            column.push(bytes(value));
        }
        self.bytes += 48;
    }

    fn clear(&mut self) {
        self.partition.clear();
        self.entry_id.clear();
        for column in &mut self.text {
            column.clear();
        }
        self.timestamp_ns.clear();
        self.sequence.clear();
        self.data.clear();
        self.extra.clear();
        self.bytes = 0;
    }
}

/// What a closed file holds (a line of the manifest, less where it went).
#[derive(Debug, Clone)]
pub(crate) struct Written {
    /// The staged file, complete and synced.
    pub(crate) staged: PathBuf,
    pub(crate) rows: u64,
    pub(crate) first_id: EntryId,
    pub(crate) last_id: EntryId,
    pub(crate) min_timestamp_ns: Option<i64>,
    pub(crate) max_timestamp_ns: Option<i64>,
}

/// A file being written, in the staging directory, until [`OpenFile::finish`].
pub(crate) struct OpenFile {
    writer: SerializedFileWriter<BufWriter<File>>,
    staged: PathBuf,
    columns: Columns,
    rows: u64,
    first_id: Option<EntryId>,
    last_id: EntryId,
    min_timestamp_ns: Option<i64>,
    max_timestamp_ns: Option<i64>,
}

impl std::fmt::Debug for OpenFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenFile")
            .field("staged", &self.staged)
            .field("rows", &self.rows)
            .finish_non_exhaustive()
    }
}

impl OpenFile {
    /// Starts a file at `staged` for entries of `stream` (a partition's key, or its dead
    /// letters').
    pub(crate) fn create(
        staged: &Path,
        stream: &str,
        zstd_level: i32,
    ) -> Result<Self, ArchiveError> {
        let io = |source| ArchiveError::Io {
            what: "creating",
            path: staged.to_owned(),
            source,
        };
        let file = File::create(staged).map_err(io)?;
        let schema = Arc::new(schema());
        let level = ZstdLevel::try_new(zstd_level).map_err(|e| parquet_error(staged, e))?;
        let properties = WriterProperties::builder()
            .set_compression(Compression::ZSTD(level))
            // Unique per entry: a dictionary only costs time before it is given up.
            .set_column_dictionary_enabled(ColumnPath::from("entry_id"), false)
            .set_column_dictionary_enabled(ColumnPath::from("event_id"), false)
            .set_column_dictionary_enabled(ColumnPath::from("timestamp_ns"), false)
            .set_column_dictionary_enabled(ColumnPath::from("sequence"), false)
            .set_column_dictionary_enabled(ColumnPath::from("data"), false)
            // Min/max per row group where readers filter (ids, times, types, orders);
            // none for the payloads, whose comparisons cost more than they save.
            .set_statistics_enabled(EnabledStatistics::Chunk)
            .set_column_statistics_enabled(ColumnPath::from("data"), EnabledStatistics::None)
            .set_column_statistics_enabled(ColumnPath::from("extra"), EnabledStatistics::None)
            .set_column_statistics_enabled(ColumnPath::from("event_id"), EnabledStatistics::None)
            .set_created_by(format!("evstream {}", env!("CARGO_PKG_VERSION")))
            .set_key_value_metadata(Some(vec![
                KeyValue::new(
                    "evstream.archive.format".to_owned(),
                    FORMAT_VERSION.to_owned(),
                ),
                KeyValue::new("evstream.stream".to_owned(), stream.to_owned()),
            ]))
            .build();
        let writer = SerializedFileWriter::new(BufWriter::new(file), schema, Arc::new(properties))
            .map_err(|e| parquet_error(staged, e))?;
        Ok(Self {
            writer,
            staged: staged.to_owned(),
            columns: Columns::default(),
            rows: 0,
            first_id: None,
            last_id: EntryId::default(),
            min_timestamp_ns: None,
            max_timestamp_ns: None,
        })
    }

    /// Adds one record (records come in stream order).
    pub(crate) fn push(&mut self, record: Record) -> Result<(), ArchiveError> {
        self.first_id.get_or_insert(record.entry_id);
        self.last_id = record.entry_id;
        self.rows += 1;
        let timestamp = record.timestamp_ns;
        self.columns.push(record);
        if let Some(t) = timestamp {
            self.min_timestamp_ns = Some(self.min_timestamp_ns.map_or(t, |m| m.min(t)));
            self.max_timestamp_ns = Some(self.max_timestamp_ns.map_or(t, |m| m.max(t)));
        }
        if self.columns.rows() >= ROW_GROUP_ROWS || self.columns.bytes >= ROW_GROUP_BYTES {
            self.flush()?;
        }
        Ok(())
    }

    /// Entries in the file.
    pub(crate) fn rows(&self) -> u64 {
        self.rows
    }

    /// The file's size so far: what is written plus an estimate of what is buffered (about a
    /// fifth of it, zstd on JSON).
    pub(crate) fn estimated_bytes(&self) -> u64 {
        (self.writer.bytes_written() + self.columns.bytes / 5) as u64
    }

    fn flush(&mut self) -> Result<(), ArchiveError> {
        if self.columns.rows() == 0 {
            return Ok(());
        }
        let staged = self.staged.clone();
        let error = |e| parquet_error(&staged, e);
        let c = &self.columns;
        let mut group = self.writer.next_row_group().map_err(error)?;
        let mut index = 0;
        while let Some(mut column) = group.next_column().map_err(error)? {
            match index {
                0 => column
                    .typed::<Int32Type>()
                    .write_batch(&c.partition, None, None),
                1 => column
                    .typed::<ByteArrayType>()
                    .write_batch(&c.entry_id, None, None),
                2..=5 => {
                    let n = &c.text[index - 2];
                    column
                        .typed::<ByteArrayType>()
                        .write_batch(&n.values, Some(&n.levels), None)
                }
                6 => column.typed::<Int64Type>().write_batch(
                    &c.timestamp_ns.values,
                    Some(&c.timestamp_ns.levels),
                    None,
                ),
                7 => {
                    let n = &c.text[4];
                    column
                        .typed::<ByteArrayType>()
                        .write_batch(&n.values, Some(&n.levels), None)
                }
                8 => column.typed::<Int64Type>().write_batch(
                    &c.sequence.values,
                    Some(&c.sequence.levels),
                    None,
                ),
                9 => column.typed::<ByteArrayType>().write_batch(
                    &c.data.values,
                    Some(&c.data.levels),
                    None,
                ),
                _ => column.typed::<ByteArrayType>().write_batch(
                    &c.extra.values,
                    Some(&c.extra.levels),
                    None,
                ),
            }
            .map_err(error)?;
            column.close().map_err(error)?;
            index += 1;
        }
        group.close().map_err(error)?;
        self.columns.clear();
        Ok(())
    }

    /// Writes the last row group and the footer, and syncs the file to disk.
    pub(crate) fn finish(mut self) -> Result<Written, ArchiveError> {
        self.flush()?;
        let staged = self.staged.clone();
        self.writer.append_key_value_metadata(KeyValue::new(
            "evstream.last_entry_id".to_owned(),
            self.last_id.to_string(),
        ));
        let buffered = self
            .writer
            .into_inner()
            .map_err(|e| parquet_error(&staged, e))?;
        let io = |source| ArchiveError::Io {
            what: "writing",
            path: staged.clone(),
            source,
        };
        let file = buffered.into_inner().map_err(|e| io(e.into_error()))?;
        file.sync_all().map_err(io)?;
        Ok(Written {
            staged,
            rows: self.rows,
            first_id: self.first_id.unwrap_or_default(),
            last_id: self.last_id,
            min_timestamp_ns: self.min_timestamp_ns,
            max_timestamp_ns: self.max_timestamp_ns,
        })
    }
}

/// The files' schema.
pub(crate) fn schema() -> Type {
    parquet::schema::parser::parse_message_type(SCHEMA).expect("the archive's schema parses")
}

fn parquet_error(path: &Path, source: parquet::errors::ParquetError) -> ArchiveError {
    ArchiveError::Parquet {
        path: path.to_owned(),
        source,
    }
}
/// Writes records to one Parquet file with the archive's columns: what
/// `evstream export --format parquet` writes. The file appears under its name only once
/// complete (written beside it as `<name>.tmp`, synced, renamed).
#[derive(Debug)]
pub struct ParquetWriter {
    file: OpenFile,
    target: std::path::PathBuf,
}

impl ParquetWriter {
    /// Starts the file `path`, whose entries come from `stream` (named in its footer).
    pub fn create(path: &std::path::Path, stream: &str) -> Result<Self, ArchiveError> {
        let mut staged = path.as_os_str().to_owned();
        staged.push(".tmp");
        let file = OpenFile::create(std::path::Path::new(&staged), stream, 3)?;
        Ok(Self {
            file,
            target: path.to_owned(),
        })
    }

    /// Adds one record.
    pub fn push(&mut self, record: Record) -> Result<(), ArchiveError> {
        self.file.push(record)
    }

    /// Completes the file; returns how many records it holds.
    pub fn finish(self) -> Result<u64, ArchiveError> {
        let written = self.file.finish()?;
        std::fs::rename(&written.staged, &self.target).map_err(|source| ArchiveError::Io {
            what: "renaming",
            path: self.target.clone(),
            source,
        })?;
        Ok(written.rows)
    }
}
