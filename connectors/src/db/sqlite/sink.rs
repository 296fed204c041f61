//! SQLite sink: one transaction per partition, recorded in
//! `_tidex_commits` by the same transaction.
//!
//! SQLite has one writer at a time, so a partition's transaction holds the
//! write lock from its first row to its commit. The sink's own partitions
//! take turns in-process (a waiting partition's reader fills its channel
//! and pauses); the busy timeout only covers other programs writing the
//! same file. Rows are inserted batch by batch as they arrive with cached
//! multi-row `INSERT` statements, so memory stays bounded.

use super::types::{write_date, write_time, write_timestamp};
use super::{marker_table, table_columns, DbFile};
use crate::db::{
    committed_part, DbMode, DbSinkConfig, Dialect, Ident, SinkTarget, TableName, MARKER_TABLE,
};
use arrow::array::{
    Array, ArrayRef, AsArray, BinaryArray, BinaryViewArray, BooleanArray, Decimal128Array,
    Decimal256Array, FixedSizeBinaryArray, Float64Array, Int64Array, LargeBinaryArray,
    LargeStringArray, StringArray, StringViewArray, UInt64Array,
};
use arrow::compute::cast;
use arrow::datatypes::{DataType, FieldRef, Int64Type, SchemaRef, TimeUnit};
use arrow::json::writer::{make_encoder, EncoderOptions, NullableEncoder};
use arrow::record_batch::RecordBatch;
use rusqlite::types::Null;
use rusqlite::Statement;
use std::sync::{Arc, Condvar, Mutex};
use tidex_engine::error::Location;
use tidex_engine::{
    BuildContext, CommittedPart, ConnectorConfig, Error, PartitionInfo, PartitionWriter,
    PublishJournal, Result, RunInfo, Sink, SinkFactory, SpecError,
};

/// Most rows one `INSERT` carries (fewer when the columns are many: SQLite
/// takes at most 32766 parameters).
const MAX_ROWS_PER_INSERT: usize = 256;
const MAX_PARAMS: usize = 32_766;

/// Registers `[sink] type = "sqlite"` (the spec section is
/// [`DbSinkConfig`]).
pub(crate) struct SqliteSinkFactory;

impl SinkFactory for SqliteSinkFactory {
    fn kind(&self) -> &'static str {
        "sqlite"
    }

    fn validate(&self, cfg: &ConnectorConfig) -> Result<(), SpecError> {
        let c: DbSinkConfig = cfg.parse()?;
        c.resolve(cfg)?;
        DbFile::from_url(cfg, &c.url)?;
        Ok(())
    }

    fn build(&self, cfg: &ConnectorConfig, ctx: &BuildContext) -> Result<Arc<dyn Sink>> {
        let c: DbSinkConfig = cfg.parse()?;
        let target = c.resolve(cfg)?;
        let db = DbFile::from_url(cfg, &c.url)?;
        Ok(Arc::new(SqliteSink {
            marker: marker_table(&target.table),
            db,
            target,
            job: ctx.job.clone(),
            turn: Arc::new(Turn::default()),
        }))
    }
}

/// A SQLite sink.
struct SqliteSink {
    db: DbFile,
    target: SinkTarget,
    /// Quoted `_tidex_commits` beside the target table.
    marker: String,
    job: String,
    turn: Arc<Turn>,
}

/// The sink's write turn: one partition at a time holds SQLite's write
/// lock, the others wait here rather than on the busy timeout.
#[derive(Default)]
struct Turn {
    taken: Mutex<bool>,
    freed: Condvar,
}

/// Holding the turn; dropping it gives the turn back.
struct TurnHeld(Arc<Turn>);

impl Turn {
    fn take(self: &Arc<Self>) -> TurnHeld {
        let mut taken = self.taken.lock().unwrap_or_else(|e| e.into_inner());
        while *taken {
            taken = self.freed.wait(taken).unwrap_or_else(|e| e.into_inner());
        }
        *taken = true;
        TurnHeld(self.clone())
    }
}

impl Drop for TurnHeld {
    fn drop(&mut self) {
        *self.0.taken.lock().unwrap_or_else(|e| e.into_inner()) = false;
        self.0.freed.notify_one();
    }
}

/// The declared type a created table gives an Arrow type, `None` when
/// SQLite cannot hold it.
///
/// Decimals are declared `DECIMAL TEXT(p,s)`: a plain `DECIMAL(p,s)` has
/// NUMERIC affinity, and SQLite would turn the exact text into a float.
fn declared_type(dt: &DataType) -> Option<String> {
    Some(match dt {
        DataType::Int8
        | DataType::Int16
        | DataType::Int32
        | DataType::Int64
        | DataType::UInt8
        | DataType::UInt16
        | DataType::UInt32
        | DataType::UInt64 => "INTEGER".into(),
        DataType::Float16 | DataType::Float32 | DataType::Float64 => "REAL".into(),
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View | DataType::Null => "TEXT".into(),
        DataType::Binary
        | DataType::LargeBinary
        | DataType::BinaryView
        | DataType::FixedSizeBinary(_) => "BLOB".into(),
        DataType::Boolean => "BOOLEAN".into(),
        DataType::Decimal32(p, s)
        | DataType::Decimal64(p, s)
        | DataType::Decimal128(p, s)
        | DataType::Decimal256(p, s) => format!("DECIMAL TEXT({p},{s})"),
        DataType::Date32 | DataType::Date64 => "DATE".into(),
        DataType::Timestamp(_, _) => "TIMESTAMP".into(),
        DataType::Time32(_) | DataType::Time64(_) => "TIME".into(),
        DataType::List(_)
        | DataType::LargeList(_)
        | DataType::FixedSizeList(_, _)
        | DataType::ListView(_)
        | DataType::LargeListView(_)
        | DataType::Struct(_)
        | DataType::Map(_, _) => "TEXT".into(),
        DataType::Dictionary(_, v) => return declared_type(v),
        _ => return None,
    })
}

fn quote(name: &str) -> String {
    Ident(name.to_string()).quoted(Dialect::Ansi)
}

impl SqliteSink {
    fn table(&self) -> String {
        self.target.table.quoted(Dialect::Ansi)
    }

    fn origin(&self) -> String {
        format!("{}:{}", self.db.shown, self.target.table)
    }

    /// Checks every incoming column can be stored, naming those that
    /// cannot.
    fn check_schema(&self, schema: &SchemaRef) -> Result<()> {
        if schema.fields().is_empty() {
            return Err(self.db.config("the incoming data has no columns"));
        }
        for f in schema.fields() {
            if declared_type(f.data_type()).is_none() {
                return Err(self.db.config(format_args!(
                    "column `{}` has type {}, which the sqlite sink cannot store",
                    f.name(),
                    f.data_type()
                )));
            }
            if f.name().contains('\0') {
                return Err(self.db.config(format_args!(
                    "column name {:?} contains a NUL character",
                    f.name()
                )));
            }
        }
        Ok(())
    }

    /// `INSERT INTO t (cols) VALUES (?,…)×rows`, with the upsert clause.
    fn insert_sql(&self, schema: &SchemaRef, rows: usize) -> String {
        let names: Vec<String> = schema.fields().iter().map(|f| quote(f.name())).collect();
        let one = format!("({})", vec!["?"; names.len()].join(","));
        let mut sql = format!(
            "INSERT INTO {} ({}) VALUES {}",
            self.table(),
            names.join(", "),
            vec![one.as_str(); rows].join(",")
        );
        if self.target.mode == DbMode::Upsert {
            let keys: Vec<String> = self
                .target
                .key
                .iter()
                .map(|k| k.quoted(Dialect::Ansi))
                .collect();
            let is_key = |name: &str| {
                self.target
                    .key
                    .iter()
                    .any(|k| k.0.eq_ignore_ascii_case(name))
            };
            let sets: Vec<String> = schema
                .fields()
                .iter()
                .filter(|f| !is_key(f.name()))
                .map(|f| {
                    let c = quote(f.name());
                    format!("{c} = excluded.{c}")
                })
                .collect();
            sql += &format!(" ON CONFLICT ({}) DO ", keys.join(", "));
            if sets.is_empty() {
                sql += "NOTHING";
            } else {
                sql += &format!("UPDATE SET {}", sets.join(", "));
            }
        }
        sql
    }

    /// Creates the target table, or checks the existing one has every
    /// incoming column.
    fn ensure_table(&self, conn: &rusqlite::Connection, schema: &SchemaRef) -> Result<()> {
        let table = &self.target.table;
        let existing = table_columns(conn, table).map_err(|e| {
            self.db
                .error(format_args!("reading the columns of `{table}`"), e)
        })?;
        let incoming = |name: &str| {
            schema
                .fields()
                .iter()
                .any(|f| f.name().eq_ignore_ascii_case(name))
        };
        if let Some(k) = self.target.key.iter().find(|k| !incoming(&k.0)) {
            return Err(self.db.config(format_args!(
                "key column `{k}` is not in the incoming data (columns: {})",
                schema
                    .fields()
                    .iter()
                    .map(|f| f.name().as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        if existing.is_empty() {
            if !self.target.create {
                return Err(self.db.config(format_args!(
                    "no table named `{table}` (and create = false)"
                )));
            }
            let mut defs: Vec<String> = schema
                .fields()
                .iter()
                .map(|f| {
                    let decl = declared_type(f.data_type()).unwrap_or_else(|| "TEXT".into());
                    // A NULL in an INTEGER PRIMARY KEY would silently get a
                    // new rowid; refuse it like other databases do.
                    let key = self
                        .target
                        .key
                        .iter()
                        .any(|k| k.0.eq_ignore_ascii_case(f.name()));
                    let not_null = if key { " NOT NULL" } else { "" };
                    format!("{} {decl}{not_null}", quote(f.name()))
                })
                .collect();
            if !self.target.key.is_empty() {
                let keys: Vec<String> = self
                    .target
                    .key
                    .iter()
                    .map(|k| k.quoted(Dialect::Ansi))
                    .collect();
                defs.push(format!("PRIMARY KEY ({})", keys.join(", ")));
            }
            let sql = format!("CREATE TABLE {} ({})", self.table(), defs.join(", "));
            conn.execute_batch(&sql)
                .map_err(|e| self.db.error(format_args!("creating table `{table}`"), e))?;
            tracing::info!(table = %table, db = %self.db.shown, "created table");
            return Ok(());
        }
        let missing: Vec<&str> = schema
            .fields()
            .iter()
            .map(|f| f.name().as_str())
            .filter(|n| !existing.iter().any(|c| c.name.eq_ignore_ascii_case(n)))
            .collect();
        if !missing.is_empty() {
            return Err(self.db.config(format_args!(
                "table `{table}` has no column{} {}; add {} or leave {} out",
                if missing.len() > 1 { "s" } else { "" },
                missing
                    .iter()
                    .map(|m| format!("`{m}`"))
                    .collect::<Vec<_>>()
                    .join(", "),
                if missing.len() > 1 { "them" } else { "it" },
                if missing.len() > 1 {
                    "those columns"
                } else {
                    "that column"
                },
            )));
        }
        Ok(())
    }

    fn marker_exists(&self, conn: &rusqlite::Connection) -> Result<bool> {
        let t = TableName {
            schema: self.target.table.schema.clone(),
            name: Ident(MARKER_TABLE.to_string()),
        };
        table_columns(conn, &t)
            .map(|c| !c.is_empty())
            .map_err(|e| self.db.error("looking for the commit markers", e))
    }
}

impl Sink for SqliteSink {
    fn prepare(
        &self,
        run: &RunInfo,
        schema: &SchemaRef,
        committed: &[CommittedPart],
    ) -> Result<()> {
        self.check_schema(schema)?;
        let db = &self.db;
        let conn = db.open_write(true)?;
        conn.execute_batch(&format!(
            "CREATE TABLE IF NOT EXISTS {} (job TEXT NOT NULL, run_id INTEGER NOT NULL, \
             part INTEGER NOT NULL, rows INTEGER NOT NULL, PRIMARY KEY (job, run_id, part))",
            self.marker
        ))
        .map_err(|e| db.error(format_args!("creating {MARKER_TABLE}"), e))?;
        self.ensure_table(&conn, schema)?;
        if self.target.mode == DbMode::Upsert {
            // Compiling the statement checks the conflict target has a
            // PRIMARY KEY or UNIQUE index.
            conn.prepare(&self.insert_sql(schema, 1)).map_err(|e| {
                db.config(format_args!(
                    "upsert on ({}) needs a PRIMARY KEY or UNIQUE index on exactly those columns of `{}`: {e}",
                    self.target.key.iter().map(|k| k.0.as_str()).collect::<Vec<_>>().join(", "),
                    self.target.table
                ))
            })?;
        }
        if !run.resumed {
            conn.execute(
                &format!("DELETE FROM {} WHERE job = ?1", self.marker),
                [&run.job],
            )
            .map_err(|e| db.error("clearing old commit markers", e))?;
        }
        if self.target.mode == DbMode::TruncateInsert && committed.is_empty() {
            let _turn = self.turn.take();
            let truncate = || -> rusqlite::Result<()> {
                conn.execute_batch("BEGIN IMMEDIATE")?;
                let done: i64 = conn.query_row(
                    &format!(
                        "SELECT count(*) FROM {} WHERE job = ?1 AND run_id = ?2",
                        self.marker
                    ),
                    rusqlite::params![run.job, run.run_id],
                    |r| r.get(0),
                )?;
                if done == 0 {
                    conn.execute(&format!("DELETE FROM {}", self.table()), [])?;
                    conn.execute(
                        &format!("DELETE FROM {} WHERE job = ?1", self.marker),
                        [&run.job],
                    )?;
                }
                conn.execute_batch("COMMIT")
            };
            if let Err(e) = truncate() {
                let _ = conn.execute_batch("ROLLBACK");
                return Err(db.error(format_args!("emptying `{}`", self.target.table), e));
            }
        }
        Ok(())
    }

    fn committed_at_target(&self, run: &RunInfo) -> Result<Vec<CommittedPart>> {
        if !self.db.path.is_file() {
            return Ok(Vec::new());
        }
        let conn = self.db.open_read()?;
        if !self.marker_exists(&conn)? {
            return Ok(Vec::new());
        }
        let table = self.target.table.to_string();
        conn.prepare(&format!(
            "SELECT part, rows FROM {} WHERE job = ?1 AND run_id = ?2 ORDER BY part",
            self.marker
        ))
        .and_then(|mut s| {
            s.query_map(rusqlite::params![run.job, run.run_id], |r| {
                let part: i64 = r.get(0)?;
                let rows: i64 = r.get(1)?;
                Ok(committed_part(&table, part as usize, rows as u64, 0))
            })?
            .collect()
        })
        .map_err(|e| self.db.error("reading the commit markers", e))
    }

    fn open(
        &self,
        run: &RunInfo,
        partition: &PartitionInfo,
        schema: SchemaRef,
    ) -> Result<Box<dyn PartitionWriter>> {
        let conn = self.db.open_write(false)?;
        let cols = schema.fields().len();
        let chunk_rows = (MAX_PARAMS / cols).clamp(1, MAX_ROWS_PER_INSERT);
        Ok(Box::new(SqliteWriter {
            sql_chunk: self.insert_sql(&schema, chunk_rows),
            sql_one: self.insert_sql(&schema, 1),
            marker_sql: format!(
                "INSERT INTO {} (job, run_id, part, rows) VALUES (?1, ?2, ?3, ?4)",
                self.marker
            ),
            chunk_rows,
            conn,
            db: self.db.clone(),
            origin: self.origin(),
            table: self.target.table.to_string(),
            turn: self.turn.clone(),
            held: None,
            job: run.job.clone(),
            run_id: run.run_id,
            index: partition.index,
            rows: 0,
            text: String::new(),
            json: Vec::new(),
        }))
    }

    fn publish(
        &self,
        run: &RunInfo,
        _schema: &SchemaRef,
        parts: &[CommittedPart],
        _journal: &dyn PublishJournal,
    ) -> Result<String> {
        // Every partition is already visible: each committed in its own
        // transaction.
        let rows: u64 = parts.iter().map(|p| p.rows).sum();
        tracing::info!(run = run.run_id, rows, "sqlite sink: run complete");
        Ok(self.describe())
    }

    fn discard(&self, run_id: i64) -> Result<()> {
        if !self.db.path.is_file() {
            return Ok(());
        }
        let conn = self.db.open_write(false)?;
        if !self.marker_exists(&conn)? {
            return Ok(());
        }
        let n = conn
            .execute(
                &format!("DELETE FROM {} WHERE job = ?1 AND run_id = ?2", self.marker),
                rusqlite::params![self.job, run_id],
            )
            .map_err(|e| self.db.error("deleting commit markers", e))?;
        if n > 0 {
            tracing::warn!(
                run = run_id,
                partitions = n,
                table = %self.target.table,
                "discarded run: the rows its {n} committed partitions wrote stay in the table"
            );
        }
        Ok(())
    }

    fn describe(&self) -> String {
        format!("{} table {}", self.db.url(), self.target.table)
    }
}

/// Writes one partition in one transaction.
struct SqliteWriter {
    conn: rusqlite::Connection,
    db: DbFile,
    origin: String,
    table: String,
    sql_chunk: String,
    sql_one: String,
    marker_sql: String,
    chunk_rows: usize,
    turn: Arc<Turn>,
    /// Held from the first write (or the commit) until commit or abort,
    /// together with SQLite's write lock.
    held: Option<TurnHeld>,
    job: String,
    run_id: i64,
    index: usize,
    rows: u64,
    /// Scratch for values written as text.
    text: String,
    json: Vec<u8>,
}

impl SqliteWriter {
    fn begin(&mut self) -> Result<()> {
        if self.held.is_none() {
            let held = self.turn.take();
            self.conn
                .execute_batch("BEGIN IMMEDIATE")
                .map_err(|e| self.db.error("starting a write transaction", e))?;
            self.held = Some(held);
        }
        Ok(())
    }
}

/// A column of a batch, viewed as what it is written as.
enum Col<'a> {
    Null,
    Int(&'a Int64Array),
    UInt(&'a UInt64Array),
    Float(&'a Float64Array),
    Bool(&'a BooleanArray),
    Str(&'a StringArray),
    LargeStr(&'a LargeStringArray),
    StrView(&'a StringViewArray),
    Bin(&'a BinaryArray),
    LargeBin(&'a LargeBinaryArray),
    BinView(&'a BinaryViewArray),
    FixedBin(&'a FixedSizeBinaryArray),
    Dec128(&'a Decimal128Array),
    Dec256(&'a Decimal256Array),
    /// Days (Date32) or milliseconds (Date64) since the epoch.
    Date(&'a Int64Array, bool),
    Timestamp(&'a Int64Array, TimeUnit),
    Time(&'a Int64Array, TimeUnit),
    Json(NullableEncoder<'a>),
}

/// Recasts a column to the array it is read from: small integers and
/// floats widened, dates and times as their integers, dictionaries
/// unpacked. Temporal casts to integers keep the stored values (a zoned
/// timestamp stays UTC).
fn normalize(a: &ArrayRef) -> std::result::Result<ArrayRef, arrow::error::ArrowError> {
    Ok(match a.data_type() {
        DataType::Dictionary(_, v) => normalize(&cast(a, v)?)?,
        DataType::Int8
        | DataType::Int16
        | DataType::Int32
        | DataType::UInt8
        | DataType::UInt16
        | DataType::UInt32
        | DataType::Date64
        | DataType::Timestamp(_, _)
        | DataType::Time64(_) => cast(a, &DataType::Int64)?,
        DataType::Date32 | DataType::Time32(_) => {
            cast(&cast(a, &DataType::Int32)?, &DataType::Int64)?
        }
        DataType::Float16 | DataType::Float32 => cast(a, &DataType::Float64)?,
        DataType::Decimal32(p, s) | DataType::Decimal64(p, s) => {
            cast(a, &DataType::Decimal128(*p, *s))?
        }
        _ => a.clone(),
    })
}

/// The value type behind a dictionary.
fn value_type(dt: &DataType) -> &DataType {
    match dt {
        DataType::Dictionary(_, v) => value_type(v),
        other => other,
    }
}

fn view<'a>(
    field: &'a FieldRef,
    a: &'a ArrayRef,
    json: &'a EncoderOptions,
) -> std::result::Result<Col<'a>, arrow::error::ArrowError> {
    Ok(match value_type(field.data_type()) {
        DataType::Null => Col::Null,
        DataType::UInt64 => Col::UInt(a.as_primitive()),
        DataType::Date32 => Col::Date(a.as_primitive::<Int64Type>(), false),
        DataType::Date64 => Col::Date(a.as_primitive::<Int64Type>(), true),
        DataType::Timestamp(u, _) => Col::Timestamp(a.as_primitive::<Int64Type>(), *u),
        DataType::Time32(u) | DataType::Time64(u) => Col::Time(a.as_primitive::<Int64Type>(), *u),
        DataType::Float16 | DataType::Float32 | DataType::Float64 => Col::Float(a.as_primitive()),
        DataType::Int8
        | DataType::Int16
        | DataType::Int32
        | DataType::Int64
        | DataType::UInt8
        | DataType::UInt16
        | DataType::UInt32 => Col::Int(a.as_primitive()),
        DataType::Boolean => Col::Bool(a.as_boolean()),
        DataType::Utf8 => Col::Str(a.as_string()),
        DataType::LargeUtf8 => Col::LargeStr(a.as_string()),
        DataType::Utf8View => Col::StrView(a.as_string_view()),
        DataType::Binary => Col::Bin(a.as_binary()),
        DataType::LargeBinary => Col::LargeBin(a.as_binary()),
        DataType::BinaryView => Col::BinView(a.as_binary_view()),
        DataType::FixedSizeBinary(_) => Col::FixedBin(a.as_fixed_size_binary()),
        DataType::Decimal32(..) | DataType::Decimal64(..) | DataType::Decimal128(..) => {
            Col::Dec128(a.as_primitive())
        }
        DataType::Decimal256(..) => Col::Dec256(a.as_primitive()),
        _ => Col::Json(make_encoder(field, a.as_ref(), json)?),
    })
}

/// Binds row `i` of `col` to parameter `idx`; the error is why the value
/// cannot be stored.
fn bind(
    stmt: &mut Statement<'_>,
    idx: usize,
    col: &mut Col<'_>,
    i: usize,
    text: &mut String,
    json: &mut Vec<u8>,
) -> std::result::Result<(), BindError> {
    macro_rules! nullable {
        ($a:expr, $v:expr) => {
            if $a.is_null(i) {
                stmt.raw_bind_parameter(idx, Null)?
            } else {
                stmt.raw_bind_parameter(idx, $v)?
            }
        };
    }
    macro_rules! as_text {
        ($a:expr, $write:expr) => {
            if $a.is_null(i) {
                stmt.raw_bind_parameter(idx, Null)?
            } else {
                text.clear();
                $write.map_err(BindError::Value)?;
                stmt.raw_bind_parameter(idx, text.as_str())?
            }
        };
    }
    match col {
        Col::Null => stmt.raw_bind_parameter(idx, Null)?,
        Col::Int(a) => nullable!(a, a.value(i)),
        Col::UInt(a) => {
            if a.is_null(i) {
                stmt.raw_bind_parameter(idx, Null)?
            } else {
                let v = i64::try_from(a.value(i)).map_err(|_| {
                    BindError::Value(format!(
                        "{} does not fit SQLite's 64-bit signed INTEGER",
                        a.value(i)
                    ))
                })?;
                stmt.raw_bind_parameter(idx, v)?
            }
        }
        Col::Float(a) => {
            if a.is_null(i) {
                stmt.raw_bind_parameter(idx, Null)?
            } else if a.value(i).is_nan() {
                // SQLite stores a NaN REAL as NULL; the text keeps it.
                stmt.raw_bind_parameter(idx, "NaN")?
            } else {
                stmt.raw_bind_parameter(idx, a.value(i))?
            }
        }
        Col::Bool(a) => nullable!(a, a.value(i) as i64),
        Col::Str(a) => nullable!(a, a.value(i)),
        Col::LargeStr(a) => nullable!(a, a.value(i)),
        Col::StrView(a) => nullable!(a, a.value(i)),
        Col::Bin(a) => nullable!(a, a.value(i)),
        Col::LargeBin(a) => nullable!(a, a.value(i)),
        Col::BinView(a) => nullable!(a, a.value(i)),
        Col::FixedBin(a) => nullable!(a, a.value(i)),
        Col::Dec128(a) => nullable!(a, a.value_as_string(i)),
        Col::Dec256(a) => nullable!(a, a.value_as_string(i)),
        Col::Date(a, millis) => {
            let v = a.value(i);
            let days = if *millis { v.div_euclid(86_400_000) } else { v };
            as_text!(a, write_date(days, text))
        }
        Col::Timestamp(a, unit) => as_text!(a, write_timestamp(a.value(i), *unit, text)),
        Col::Time(a, unit) => as_text!(a, write_time(a.value(i), *unit, text)),
        Col::Json(enc) => {
            if enc.is_null(i) {
                stmt.raw_bind_parameter(idx, Null)?
            } else {
                json.clear();
                enc.encode(i, json);
                let s = std::str::from_utf8(json)
                    .map_err(|_| BindError::Value("JSON encoding produced invalid UTF-8".into()))?;
                stmt.raw_bind_parameter(idx, s)?
            }
        }
    }
    Ok(())
}

enum BindError {
    Sql(rusqlite::Error),
    Value(String),
}

impl From<rusqlite::Error> for BindError {
    fn from(e: rusqlite::Error) -> Self {
        BindError::Sql(e)
    }
}

impl PartitionWriter for SqliteWriter {
    fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        self.begin()?;
        let schema = batch.schema();
        let fields: Vec<FieldRef> = schema.fields().iter().cloned().collect();
        let arrays = batch
            .columns()
            .iter()
            .map(normalize)
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| Error::Internal(format!("sqlite sink: preparing a batch: {e}")))?;
        let json_opts = EncoderOptions::default().with_explicit_nulls(true);
        let mut cols = fields
            .iter()
            .zip(&arrays)
            .map(|(f, a)| view(f, a, &json_opts))
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| Error::Internal(format!("sqlite sink: encoding a batch: {e}")))?;
        let (n, width) = (batch.num_rows(), cols.len());
        let Self {
            conn,
            db,
            origin,
            sql_chunk,
            sql_one,
            chunk_rows,
            text,
            json,
            ..
        } = self;
        let fail = |e: BindError, row: usize, col: Option<usize>| match e {
            BindError::Sql(e) => db.error("inserting rows", e),
            BindError::Value(reason) => Error::bad_data(
                Location {
                    file: origin.clone(),
                    row: None,
                    byte_offset: None,
                    column: col.map(|j| fields[j].name().clone()),
                },
                format!("row {} of a batch: {reason}", row + 1),
            ),
        };
        let mut r = 0;
        while n - r >= *chunk_rows {
            let mut stmt = conn
                .prepare_cached(sql_chunk)
                .map_err(|e| db.error("preparing the insert", e))?;
            for k in 0..*chunk_rows {
                for (j, col) in cols.iter_mut().enumerate() {
                    bind(&mut stmt, k * width + j + 1, col, r + k, text, json)
                        .map_err(|e| fail(e, r + k, Some(j)))?;
                }
            }
            stmt.raw_execute().map_err(|e| fail(e.into(), r, None))?;
            r += *chunk_rows;
        }
        if r < n {
            let mut stmt = conn
                .prepare_cached(sql_one)
                .map_err(|e| db.error("preparing the insert", e))?;
            for i in r..n {
                for (j, col) in cols.iter_mut().enumerate() {
                    bind(&mut stmt, j + 1, col, i, text, json).map_err(|e| fail(e, i, Some(j)))?;
                }
                stmt.raw_execute().map_err(|e| fail(e.into(), i, None))?;
            }
        }
        self.rows += n as u64;
        Ok(())
    }

    fn commit(mut self: Box<Self>) -> Result<CommittedPart> {
        self.begin()?;
        let marker = self
            .conn
            .execute(
                &self.marker_sql,
                rusqlite::params![self.job, self.run_id, self.index as i64, self.rows as i64],
            )
            .and_then(|_| self.conn.execute_batch("COMMIT"));
        if let Err(e) = marker {
            let _ = self.conn.execute_batch("ROLLBACK");
            return Err(self.db.error(
                format_args!("committing partition {} to `{}`", self.index, self.table),
                e,
            ));
        }
        self.held = None;
        Ok(committed_part(&self.table, self.index, self.rows, 0))
    }

    fn abort(mut self: Box<Self>) {
        if self.held.is_some() {
            let _ = self.conn.execute_batch("ROLLBACK");
        }
        self.held = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::datatypes::Field;

    #[test]
    fn every_common_type_has_a_declared_type() {
        assert_eq!(declared_type(&DataType::UInt32).as_deref(), Some("INTEGER"));
        assert_eq!(
            declared_type(&DataType::Decimal128(38, 10)).as_deref(),
            Some("DECIMAL TEXT(38,10)")
        );
        assert_eq!(
            declared_type(&DataType::Dictionary(
                Box::new(DataType::Int32),
                Box::new(DataType::Utf8)
            ))
            .as_deref(),
            Some("TEXT")
        );
        assert_eq!(
            declared_type(&DataType::List(Arc::new(Field::new(
                "x",
                DataType::Int64,
                true
            ))))
            .as_deref(),
            Some("TEXT")
        );
        assert_eq!(declared_type(&DataType::Duration(TimeUnit::Second)), None);
    }
}
