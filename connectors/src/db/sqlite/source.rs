//! SQLite source: a table (or a query) read as integer key ranges.
//!
//! The plan (key ranges over min..max of the partition key, incremental
//! marks) is made once and stored with the run, so a resumed run reads the
//! same partitions. Each partition runs its `SELECT` on a thread of its own
//! with its own read-only connection: rusqlite's row cursor borrows its
//! statement, which borrows its connection, so the cursor cannot be kept
//! in the reader between batches. The thread streams batches (and dirty
//! rows) through a small bounded channel, so memory stays bounded.

use super::types::{self, Cell, Kind};
use super::{table_columns, DbFile, TableColumn};
use crate::db::{
    range_predicate, split_range, DbPlanState, DbSourceConfig, Dialect, Ident, SourceTarget,
};
use arrow::array::{
    ArrayRef, BinaryBuilder, BooleanBuilder, Date32Builder, Decimal128Builder, Float64Builder,
    Int64Builder, StringBuilder, Time64MicrosecondBuilder, TimestampMicrosecondBuilder,
};
use arrow::datatypes::{Field, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use rusqlite::types::{Value, ValueRef};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::Arc;
use tidex_engine::dirty::{DirtyRow, Rejects};
use tidex_engine::error::Location;
use tidex_engine::{
    BuildContext, ConnectorConfig, Error, PartitionInfo, Result, Source, SourceFactory,
    SourceReader, SpecError,
};

/// Registers `[source] type = "sqlite"` (the spec section is
/// [`DbSourceConfig`]).
pub(crate) struct SqliteSourceFactory;

impl SourceFactory for SqliteSourceFactory {
    fn kind(&self) -> &'static str {
        "sqlite"
    }

    fn validate(&self, cfg: &ConnectorConfig) -> Result<(), SpecError> {
        let c: DbSourceConfig = cfg.parse()?;
        c.resolve(cfg)?;
        DbFile::from_url(cfg, &c.url)?;
        Ok(())
    }

    fn build(&self, cfg: &ConnectorConfig, ctx: &BuildContext) -> Result<Arc<dyn Source>> {
        let c: DbSourceConfig = cfg.parse()?;
        let target = c.resolve(cfg)?;
        let db = DbFile::from_url(cfg, &c.url)?;
        let conn = db.open_read()?;
        let read = describe_read(&db, &conn, &target)?;
        let state = match DbPlanState::load(ctx.source_state.interrupted.as_deref()) {
            Some(s) => s,
            None => plan(&db, &conn, &read, &target, ctx)?,
        };
        let plan = Arc::new(ReadPlan {
            db,
            read,
            state,
            batch_rows: ctx.batch_rows.max(1),
        });
        let infos = plan.partition_infos();
        Ok(Arc::new(SqliteSource { plan, infos }))
    }
}

/// One column read.
#[derive(Debug, Clone)]
struct ReadColumn {
    name: String,
    quoted: String,
    kind: Kind,
}

/// The partition key.
#[derive(Debug, Clone)]
struct Key {
    name: String,
    quoted: String,
    /// The table's INTEGER PRIMARY KEY (the rowid): never NULL, never
    /// anything but an integer, so ranges need no type guard.
    is_rowid: bool,
}

/// What is read, resolved against the database.
#[derive(Debug, Clone)]
struct Read {
    /// The table's name as written, or `query`.
    what: String,
    /// Whether `what` is a table (else a query).
    is_table: bool,
    /// The `FROM` clause: the quoted table or the parenthesized query.
    from: String,
    /// The query alone, when it can run unwrapped.
    bare_query: Option<String>,
    columns: Vec<ReadColumn>,
    key: Option<Key>,
    /// Quoted incremental cursor column.
    cursor: Option<String>,
    /// The rowid expression to select for row locations, when the table
    /// has one.
    rowid: Option<&'static str>,
}

/// Finds the table or query's columns and their types, the partition key
/// and the cursor; errors name the database, table and column.
fn describe_read(db: &DbFile, conn: &rusqlite::Connection, t: &SourceTarget) -> Result<Read> {
    let find = |cols: &[TableColumn], name: &Ident| {
        cols.iter()
            .find(|c| c.name.eq_ignore_ascii_case(&name.0))
            .cloned()
    };
    let quote = |name: &str| Ident(name.to_string()).quoted(Dialect::Ansi);
    let (what, is_table, from, bare, all, rowid) = if let Some(table) = &t.table {
        let cols = table_columns(conn, table)
            .map_err(|e| db.error(format_args!("reading the columns of `{table}`"), e))?;
        if cols.is_empty() {
            return Err(db.config(format_args!("no table or view named `{table}`")));
        }
        let from = table.quoted(Dialect::Ansi);
        // A user column may shadow one of rowid's names; WITHOUT ROWID
        // tables and views have none.
        let rowid = ["rowid", "_rowid_", "oid"].into_iter().find(|alias| {
            !cols.iter().any(|c| c.name.eq_ignore_ascii_case(alias))
                && conn.prepare(&format!("SELECT {alias} FROM {from}")).is_ok()
        });
        (table.to_string(), true, from, None, cols, rowid)
    } else {
        let query = t.query.clone().unwrap_or_default();
        let stmt = conn
            .prepare(&query)
            .map_err(|e| db.error("preparing the query", e))?;
        if !stmt.readonly() || stmt.column_count() == 0 {
            return Err(db.config("the query must be a SELECT that returns columns"));
        }
        let names: Vec<String> = stmt.column_names().map(|s| s.to_string()).collect();
        drop(stmt);
        let decls = query_decls(conn, &query, names.len());
        let cols = names
            .into_iter()
            .zip(decls)
            .map(|(name, decl)| TableColumn {
                name,
                decl,
                pk: 0,
                hidden: 0,
            })
            .collect();
        let from = format!("({query}) AS \"_tidex_query\"");
        ("query".to_string(), false, from, Some(query), cols, None)
    };
    let of = if is_table {
        format!("table `{what}`")
    } else {
        "the query".to_string()
    };
    let picked: Vec<TableColumn> = match &t.columns {
        Some(names) => names
            .iter()
            .map(|n| {
                find(&all, n).ok_or_else(|| db.config(format_args!("{of} has no column `{n}`")))
            })
            .collect::<Result<_>>()?,
        None => all.iter().filter(|c| c.hidden != 1).cloned().collect(),
    };
    let mut columns: Vec<ReadColumn> = picked
        .iter()
        .map(|c| ReadColumn {
            name: c.name.clone(),
            quoted: quote(&c.name),
            kind: Kind::from_decl(&c.decl).unwrap_or(Kind::Utf8),
        })
        .collect();
    // Columns without a usable declared type: the first row decides.
    let undeclared: Vec<usize> = picked
        .iter()
        .enumerate()
        .filter(|(_, c)| Kind::from_decl(&c.decl).is_none())
        .map(|(i, _)| i)
        .collect();
    if !undeclared.is_empty() {
        let list: Vec<&str> = undeclared
            .iter()
            .map(|&i| columns[i].quoted.as_str())
            .collect();
        let sql = format!("SELECT {} FROM {from} LIMIT 1", list.join(", "));
        let first: Option<Vec<Value>> = conn
            .prepare(&sql)
            .and_then(|mut s| {
                let mut rows = s.query([])?;
                match rows.next()? {
                    Some(r) => Ok(Some(
                        (0..list.len())
                            .map(|j| r.get::<_, Value>(j))
                            .collect::<rusqlite::Result<_>>()?,
                    )),
                    None => Ok(None),
                }
            })
            .map_err(|e| db.error(format_args!("reading the first row of {of}"), e))?;
        for (n, &i) in undeclared.iter().enumerate() {
            let v = first.as_ref().map(|row| ValueRef::from(&row[n]));
            columns[i].kind = Kind::from_value(v);
        }
    }
    let key = match &t.partition_by {
        Some(k) => {
            let c = find(&all, k)
                .ok_or_else(|| db.config(format_args!("partition_by: {of} has no column `{k}`")))?;
            let kind = Kind::from_decl(&c.decl)
                .or_else(|| columns.iter().find(|r| r.name == c.name).map(|r| r.kind));
            if kind != Some(Kind::Int64) {
                return Err(db.config(format_args!(
                    "partition_by: column `{}` of {of} is declared {:?}; sqlite partitions by an integer column",
                    c.name,
                    c.decl
                )));
            }
            Some(Key {
                quoted: quote(&c.name),
                is_rowid: is_rowid_alias(&all, &c) && rowid.is_some(),
                name: c.name,
            })
        }
        None if is_table && rowid.is_some() => {
            all.iter().find(|c| is_rowid_alias(&all, c)).map(|c| Key {
                name: c.name.clone(),
                quoted: quote(&c.name),
                is_rowid: true,
            })
        }
        None => None,
    };
    let cursor = match &t.cursor {
        Some(k) => {
            let c = find(&all, k).ok_or_else(|| {
                db.config(format_args!("incremental: {of} has no cursor column `{k}`"))
            })?;
            Some(quote(&c.name))
        }
        None => None,
    };
    let bare_query = bare.filter(|_| t.columns.is_none() && key.is_none() && cursor.is_none());
    Ok(Read {
        what,
        is_table,
        from,
        bare_query,
        columns,
        key,
        cursor,
        rowid,
    })
}

/// Whether `c` is the table's INTEGER PRIMARY KEY, an alias of the rowid.
fn is_rowid_alias(all: &[TableColumn], c: &TableColumn) -> bool {
    c.pk == 1
        && c.decl.eq_ignore_ascii_case("INTEGER")
        && all.iter().filter(|x| x.pk > 0).count() == 1
}

/// Declared types of a query's output columns: a column taken straight
/// from a table keeps its table's declaration. SQLite shows them through
/// a temporary view (writable even on a read-only connection); when that
/// fails, every column is undeclared.
fn query_decls(conn: &rusqlite::Connection, query: &str, n: usize) -> Vec<String> {
    let probe = || -> rusqlite::Result<Vec<String>> {
        conn.execute_batch("DROP VIEW IF EXISTS temp.\"_tidex_probe\"")?;
        conn.execute(&format!("CREATE TEMP VIEW \"_tidex_probe\" AS {query}"), [])?;
        let decls = conn
            .prepare("SELECT type FROM pragma_table_xinfo('_tidex_probe', 'temp')")?
            .query_map([], |r| {
                Ok(r.get::<_, Option<String>>(0)?.unwrap_or_default())
            })?
            .collect::<rusqlite::Result<Vec<_>>>();
        conn.execute_batch("DROP VIEW IF EXISTS temp.\"_tidex_probe\"")?;
        decls
    };
    match probe() {
        Ok(d) if d.len() == n => d,
        _ => vec![String::new(); n],
    }
}

/// Text form of a mark (a cursor value), `None` for NULL.
fn mark_text(db: &DbFile, v: ValueRef<'_>) -> Result<Option<String>> {
    Ok(match v {
        ValueRef::Null => None,
        ValueRef::Integer(i) => Some(i.to_string()),
        ValueRef::Real(f) => Some(f.to_string()),
        ValueRef::Text(t) => Some(String::from_utf8_lossy(t).into_owned()),
        ValueRef::Blob(_) => {
            return Err(db.config("incremental: the cursor column holds a blob"));
        }
    })
}

/// A mark bound as a parameter: an integer when it is one (an integer
/// cursor), else text (an ISO timestamp, which compares as text).
fn mark_value(mark: &str) -> Value {
    match mark.parse::<i64>() {
        Ok(i) => Value::Integer(i),
        Err(_) => match mark.parse::<f64>() {
            Ok(f) if f.is_finite() && mark.contains('.') => Value::Real(f),
            _ => Value::Text(mark.to_string()),
        },
    }
}

/// Whether mark `a` is past mark `b`.
fn mark_after(a: &str, b: &str) -> bool {
    match (a.parse::<f64>(), b.parse::<f64>()) {
        (Ok(x), Ok(y)) => match (a.parse::<i64>(), b.parse::<i64>()) {
            (Ok(i), Ok(j)) => i > j,
            _ => x > y,
        },
        _ => a > b,
    }
}

/// Plans a fresh run: the incremental marks, then key ranges over the rows
/// those marks select.
fn plan(
    db: &DbFile,
    conn: &rusqlite::Connection,
    read: &Read,
    t: &SourceTarget,
    ctx: &BuildContext,
) -> Result<DbPlanState> {
    let mut state = DbPlanState::default();
    if let Some(cursor) = &read.cursor {
        state.mark_from =
            DbPlanState::load(ctx.source_state.previous.as_deref()).and_then(|s| s.mark_to);
        let max = conn
            .query_row(
                &format!("SELECT max({cursor}) FROM {}", read.from),
                [],
                |r| Ok(mark_text(db, r.get_ref(0)?)),
            )
            .map_err(|e| db.error("reading the cursor's high-water mark", e))??;
        state.mark_to = match (&state.mark_from, max) {
            (Some(from), Some(max)) if mark_after(&max, from) => Some(max),
            (Some(from), _) => Some(from.clone()),
            (None, max) => max,
        };
    }
    if let Some(key) = &read.key {
        let k = &key.quoted;
        let mut conds = cursor_condition(read, &state);
        if !key.is_rowid {
            conds.push(format!("typeof({k}) = 'integer'"));
        }
        let sql = format!(
            "SELECT min({k}), max({k}) FROM {} WHERE {}",
            read.from,
            where_clause(&conds)
        );
        let params = mark_params(&state);
        let bounds: (Option<i64>, Option<i64>) = conn
            .prepare(&sql)
            .and_then(|mut s| {
                bind(&mut s, &params)?;
                let mut rows = s.raw_query();
                let row = rows.next()?.ok_or(rusqlite::Error::QueryReturnedNoRows)?;
                Ok((row.get(0)?, row.get(1)?))
            })
            .map_err(|e| db.error(format_args!("reading the range of `{}`", key.name), e))?;
        if let (Some(min), Some(max)) = bounds {
            let n = t.partitions.unwrap_or(ctx.parallelism.max(1) * 4);
            state.ranges = split_range(min, max, n);
        }
    }
    let size = std::fs::metadata(&db.path).map(|m| m.len()).unwrap_or(0);
    state.bytes = size / state.ranges.len().max(1) as u64;
    Ok(state)
}

/// The incremental conditions (cursor above the last mark, at most this
/// run's), with `:mark_from`/`:mark_to` parameters.
fn cursor_condition(read: &Read, state: &DbPlanState) -> Vec<String> {
    let Some(c) = &read.cursor else {
        return Vec::new();
    };
    match (&state.mark_from, &state.mark_to) {
        (_, None) => vec!["0".to_string()],
        (None, Some(_)) => vec![format!("{c} <= :mark_to")],
        (Some(_), Some(_)) => vec![format!("{c} > :mark_from"), format!("{c} <= :mark_to")],
    }
}

fn mark_params(state: &DbPlanState) -> Vec<(&'static str, Value)> {
    let mut p = Vec::new();
    if let Some(m) = &state.mark_from {
        p.push((":mark_from", mark_value(m)));
    }
    if let Some(m) = &state.mark_to {
        p.push((":mark_to", mark_value(m)));
    }
    p
}

fn where_clause(conds: &[String]) -> String {
    if conds.is_empty() {
        "1".to_string()
    } else {
        conds.join(" AND ")
    }
}

/// Binds the named parameters the statement uses.
fn bind(stmt: &mut rusqlite::Statement<'_>, params: &[(&str, Value)]) -> rusqlite::Result<()> {
    for (name, v) in params {
        if stmt.parameter_index(name)?.is_some() {
            stmt.raw_bind_parameter(*name, v)?;
        }
    }
    Ok(())
}

/// Everything a partition reader needs, shared with its thread.
#[derive(Debug, Clone)]
struct ReadPlan {
    db: DbFile,
    read: Read,
    state: DbPlanState,
    batch_rows: usize,
}

impl ReadPlan {
    /// `people.db:people`, the `file` of row locations.
    fn origin(&self) -> String {
        format!("{}:{}", self.db.shown, self.read.what)
    }

    fn partition_infos(&self) -> Vec<PartitionInfo> {
        let key = self.read.key.as_ref();
        match (key, self.state.ranges.is_empty()) {
            (Some(k), false) => self
                .state
                .ranges
                .iter()
                .enumerate()
                .map(|(i, (lo, hi))| PartitionInfo {
                    index: i,
                    label: format!("{}[{} {lo}..={hi}]", self.origin(), k.name),
                    bytes: self.state.bytes,
                })
                .collect(),
            _ => vec![PartitionInfo {
                index: 0,
                label: self.origin(),
                bytes: self.state.bytes,
            }],
        }
    }

    /// The `SELECT` of partition `index` and its parameters.
    fn select(&self, index: usize) -> (String, Vec<(&'static str, Value)>) {
        let r = &self.read;
        let mut params = mark_params(&self.state);
        let mut conds = cursor_condition(r, &self.state);
        if let (Some(key), Some(&(lo, hi))) = (&r.key, self.state.ranges.get(index)) {
            let k = &key.quoted;
            let first = index == 0;
            let mut p = range_predicate(k, ":lo", ":hi", first);
            // Rows whose key is not an integer (text, a fraction) fall
            // between or outside the integer ranges: the first partition
            // takes them all, the others none.
            if !key.is_rowid {
                p = if first {
                    format!("({p} OR typeof({k}) <> 'integer')")
                } else {
                    format!("({p} AND typeof({k}) = 'integer')")
                };
            }
            conds.push(p);
            params.push((":lo", Value::Integer(lo)));
            params.push((":hi", Value::Integer(hi)));
        }
        if let (Some(q), true) = (&r.bare_query, conds.is_empty()) {
            return (q.clone(), params);
        }
        let mut cols: Vec<&str> = r.columns.iter().map(|c| c.quoted.as_str()).collect();
        if let Some(rowid) = r.rowid {
            cols.push(rowid);
        }
        let sql = format!(
            "SELECT {} FROM {} WHERE {}",
            cols.join(", "),
            r.from,
            where_clause(&conds)
        );
        (sql, params)
    }

    fn schema(&self) -> SchemaRef {
        Arc::new(Schema::new(
            self.read
                .columns
                .iter()
                .map(|c| Field::new(&c.name, c.kind.data_type(), true))
                .collect::<Vec<_>>(),
        ))
    }
}

/// A planned SQLite source.
struct SqliteSource {
    plan: Arc<ReadPlan>,
    infos: Vec<PartitionInfo>,
}

impl Source for SqliteSource {
    fn schema(&self) -> SchemaRef {
        self.plan.schema()
    }

    fn partitions(&self) -> &[PartitionInfo] {
        &self.infos
    }

    fn open(&self, partition: usize) -> Result<Box<dyn SourceReader>> {
        if partition >= self.infos.len() {
            return Err(Error::Internal(format!(
                "sqlite source has no partition {partition}"
            )));
        }
        let plan = self.plan.clone();
        let schema = self.schema();
        let (tx, rx) = sync_channel(2);
        let thread = std::thread::Builder::new()
            .name(format!("tidex-sqlite-read-{partition}"))
            .spawn(move || {
                let result = produce(&plan, schema, partition, &tx);
                // The reader may be gone (it failed, or the run stopped).
                let _ = tx.send(match result {
                    Ok(()) => Msg::Done,
                    Err(e) => Msg::Fail(e),
                });
            })
            .map_err(|e| Error::io("starting a sqlite reader thread", e))?;
        Ok(Box::new(SqliteReader {
            rx: Some(rx),
            thread: Some(thread),
            bytes: 0,
            done: false,
        }))
    }

    fn describe(&self) -> String {
        let r = &self.plan.read;
        if r.is_table {
            format!("{} table {}", self.plan.db.url(), r.what)
        } else {
            format!("{} query", self.plan.db.url())
        }
    }

    fn state(&self) -> Option<String> {
        Some(self.plan.state.store())
    }

    /// Halves the key range; the ranges are the stored plan, so a resumed
    /// run reads the split partitions too.
    fn split(&self, partition: usize) -> Option<Arc<dyn Source>> {
        self.plan.read.key.as_ref()?;
        let mut plan = (*self.plan).clone();
        crate::db::split_planned_range(&mut plan.state, partition)?;
        let plan = Arc::new(plan);
        let infos = plan.partition_infos();
        Some(Arc::new(SqliteSource { plan, infos }))
    }
}

/// What a partition's reading thread sends.
enum Msg {
    /// A batch and the bytes its values took.
    Batch(RecordBatch, u64),
    Dirty(DirtyRow),
    Fail(Error),
    Done,
}

struct SqliteReader {
    rx: Option<Receiver<Msg>>,
    thread: Option<std::thread::JoinHandle<()>>,
    bytes: u64,
    done: bool,
}

impl SourceReader for SqliteReader {
    fn next_batch(&mut self, rejects: &mut Rejects) -> Result<Option<RecordBatch>> {
        if self.done {
            return Ok(None);
        }
        let rx = self.rx.as_ref().expect("receiver lives until drop");
        loop {
            match rx.recv() {
                Ok(Msg::Batch(b, bytes)) => {
                    self.bytes += bytes;
                    return Ok(Some(b));
                }
                Ok(Msg::Dirty(row)) => rejects.reject(row)?,
                Ok(Msg::Fail(e)) => {
                    self.done = true;
                    return Err(e);
                }
                Ok(Msg::Done) => {
                    self.done = true;
                    return Ok(None);
                }
                Err(_) => {
                    self.done = true;
                    return Err(Error::Internal(
                        "a sqlite reader thread stopped without finishing".into(),
                    ));
                }
            }
        }
    }

    fn bytes_read(&self) -> u64 {
        self.bytes
    }
}

impl Drop for SqliteReader {
    fn drop(&mut self) {
        // Closing the channel makes a thread blocked on sending stop.
        drop(self.rx.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Arrow builders, one per column.
enum Builder {
    Int(Int64Builder),
    Float(Float64Builder),
    Str(StringBuilder),
    Bin(BinaryBuilder),
    Bool(BooleanBuilder),
    Dec(Decimal128Builder, u8, i8),
    Date(Date32Builder),
    Ts(TimestampMicrosecondBuilder),
    Time(Time64MicrosecondBuilder),
}

impl Builder {
    fn new(kind: Kind, cap: usize) -> Builder {
        match kind {
            Kind::Int64 => Builder::Int(Int64Builder::with_capacity(cap)),
            Kind::Float64 => Builder::Float(Float64Builder::with_capacity(cap)),
            Kind::Utf8 => Builder::Str(StringBuilder::with_capacity(cap, cap * 16)),
            Kind::Binary => Builder::Bin(BinaryBuilder::with_capacity(cap, cap * 16)),
            Kind::Boolean => Builder::Bool(BooleanBuilder::with_capacity(cap)),
            Kind::Decimal(p, s) => Builder::Dec(Decimal128Builder::with_capacity(cap), p, s),
            Kind::Date32 => Builder::Date(Date32Builder::with_capacity(cap)),
            Kind::Timestamp => Builder::Ts(TimestampMicrosecondBuilder::with_capacity(cap)),
            Kind::Time64 => Builder::Time(Time64MicrosecondBuilder::with_capacity(cap)),
        }
    }

    /// Appends a cell [`types::convert`] made for this builder's kind
    /// (which only ever makes the cell type the kind takes, or NULL).
    fn append(&mut self, cell: Cell<'_>) -> Result<()> {
        match (self, cell) {
            (Builder::Int(b), Cell::Int(v)) => b.append_value(v),
            (Builder::Int(b), Cell::Null) => b.append_null(),
            (Builder::Float(b), Cell::Float(v)) => b.append_value(v),
            (Builder::Float(b), Cell::Null) => b.append_null(),
            (Builder::Str(b), Cell::Str(v)) => b.append_value(v),
            (Builder::Str(b), Cell::Owned(v)) => b.append_value(v),
            (Builder::Str(b), Cell::Null) => b.append_null(),
            (Builder::Bin(b), Cell::Bytes(v)) => b.append_value(v),
            (Builder::Bin(b), Cell::Null) => b.append_null(),
            (Builder::Bool(b), Cell::Bool(v)) => b.append_value(v),
            (Builder::Bool(b), Cell::Null) => b.append_null(),
            (Builder::Dec(b, _, _), Cell::Decimal(v)) => b.append_value(v),
            (Builder::Dec(b, _, _), Cell::Null) => b.append_null(),
            (Builder::Date(b), Cell::Int(v)) if i32::try_from(v).is_ok() => {
                b.append_value(v as i32)
            }
            (Builder::Date(b), Cell::Null) => b.append_null(),
            (Builder::Ts(b), Cell::Int(v)) => b.append_value(v),
            (Builder::Ts(b), Cell::Null) => b.append_null(),
            (Builder::Time(b), Cell::Int(v)) => b.append_value(v),
            (Builder::Time(b), Cell::Null) => b.append_null(),
            (_, cell) => {
                return Err(Error::Internal(format!(
                    "sqlite source: a {cell:?} cell does not fit its column's builder"
                )))
            }
        }
        Ok(())
    }

    fn finish(&mut self) -> Result<ArrayRef> {
        Ok(match self {
            Builder::Int(b) => Arc::new(b.finish()),
            Builder::Float(b) => Arc::new(b.finish()),
            Builder::Str(b) => Arc::new(b.finish()),
            Builder::Bin(b) => Arc::new(b.finish()),
            Builder::Bool(b) => Arc::new(b.finish()),
            Builder::Dec(b, p, s) => Arc::new(
                b.finish()
                    .with_precision_and_scale(*p, *s)
                    .map_err(|e| Error::Internal(e.to_string()))?,
            ),
            Builder::Date(b) => Arc::new(b.finish()),
            Builder::Ts(b) => Arc::new(b.finish()),
            Builder::Time(b) => Arc::new(b.finish()),
        })
    }
}

/// Reuses the allocation of an emptied vector for cells borrowing the
/// next row (in-place collection keeps the buffer).
fn recycle<'b>(mut v: Vec<Cell<'_>>) -> Vec<Cell<'b>> {
    v.clear();
    v.into_iter().map(|_| Cell::Null).collect()
}

/// Runs partition `index`'s `SELECT` and sends its batches and dirty rows;
/// returns when done or when the reader hung up.
fn produce(plan: &ReadPlan, schema: SchemaRef, index: usize, tx: &SyncSender<Msg>) -> Result<()> {
    let db = &plan.db;
    let conn = db.open_read()?;
    let (sql, params) = plan.select(index);
    let mut stmt = conn
        .prepare(&sql)
        .map_err(|e| db.error(format_args!("preparing the read of {}", plan.read.what), e))?;
    bind(&mut stmt, &params).map_err(|e| db.error("binding parameters", e))?;
    let cols = &plan.read.columns;
    let n = cols.len();
    let cap = plan.batch_rows;
    let mut builders: Vec<Builder> = cols.iter().map(|c| Builder::new(c.kind, cap)).collect();
    let mut cells: Vec<Cell<'static>> = Vec::with_capacity(n);
    let (mut rows_in_batch, mut bytes, mut row_no) = (0usize, 0u64, 0u64);
    let mut rows = stmt.raw_query();
    let send_batch = |builders: &mut Vec<Builder>, bytes: u64| -> Result<bool> {
        let arrays = builders
            .iter_mut()
            .map(Builder::finish)
            .collect::<Result<Vec<_>>>()?;
        let batch = RecordBatch::try_new(schema.clone(), arrays)
            .map_err(|e| Error::Internal(e.to_string()))?;
        Ok(tx.send(Msg::Batch(batch, bytes)).is_ok())
    };
    loop {
        let row = match rows.next() {
            Ok(Some(r)) => r,
            Ok(None) => break,
            Err(e) => {
                return Err(db.error(format_args!("reading {}", plan.read.what), e));
            }
        };
        row_no += 1;
        let mut row_cells = recycle(std::mem::take(&mut cells));
        let mut bad = None;
        for (j, c) in cols.iter().enumerate() {
            let v = row.get_ref(j).map_err(|e| db.error("reading a value", e))?;
            bytes += types::value_size(v);
            match types::convert(c.kind, v) {
                Ok(cell) => row_cells.push(cell),
                Err(reason) => {
                    bad = Some((j, reason));
                    break;
                }
            }
        }
        if let Some((j, reason)) = bad {
            // The rowid where there is one, else the row's position in
            // this partition.
            let (row_num, reason) = match plan.read.rowid {
                Some(_) => match row.get_ref(n) {
                    Ok(ValueRef::Integer(id)) => (id as u64, reason),
                    _ => (row_no, reason),
                },
                None => (
                    row_no,
                    format!("{reason} (row {row_no} of partition {index})"),
                ),
            };
            let values = (0..n)
                .map(|k| row.get_ref(k).map(types::raw).unwrap_or_default())
                .collect();
            let location = Location {
                file: plan.origin(),
                row: Some(row_num),
                byte_offset: None,
                column: Some(cols[j].name.clone()),
            };
            cells = recycle(row_cells);
            if tx
                .send(Msg::Dirty(
                    DirtyRow::row(location, reason).with_values(values),
                ))
                .is_err()
            {
                return Ok(());
            }
            continue;
        }
        for (b, cell) in builders.iter_mut().zip(row_cells.drain(..)) {
            b.append(cell)?;
        }
        cells = recycle(row_cells);
        rows_in_batch += 1;
        if rows_in_batch == cap {
            if !send_batch(&mut builders, bytes)? {
                return Ok(());
            }
            rows_in_batch = 0;
            bytes = 0;
        }
    }
    if rows_in_batch > 0 {
        send_batch(&mut builders, bytes)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_compare_as_numbers_or_text() {
        assert!(mark_after("10", "9"));
        assert!(!mark_after("9", "10"));
        assert!(mark_after("2024-01-02 00:00:00", "2024-01-01 23:59:59"));
        assert_eq!(mark_value("42"), Value::Integer(42));
        assert_eq!(
            mark_value("2024-01-01 00:00:00"),
            Value::Text("2024-01-01 00:00:00".into())
        );
    }
}
