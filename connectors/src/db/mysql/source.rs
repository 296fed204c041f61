//! The MySQL source: a table (optionally projected) or a query, split into
//! ranges of an integer or date/time key, each read on its own connection
//! as a stream of rows, and optionally limited to the rows an incremental
//! cursor has moved past since the last completed run.
//!
//! The plan (ranges and cursor marks) is stored with the run; a resumed run
//! reads it back instead of planning again, so it reads exactly the rows
//! its interrupted attempt was going to read.

use super::types::{self, Builder, Cell, KeyForm, Kind};
use super::{qualified, Endpoint, KIND};
use crate::db::{range_predicate, DbPlanState, DbSourceConfig, Dialect, Ident, TableName};
use arrow::datatypes::{Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Params, Row, Value};
use std::collections::HashSet;
use std::sync::Arc;
use tidex_engine::dirty::{DirtyRow, Rejects};
use tidex_engine::error::Location;
use tidex_engine::{
    BuildContext, ConnectorConfig, Error, PartitionInfo, Result, Source, SourceFactory,
    SourceReader, SpecError,
};
use tokio::sync::mpsc;

/// Registers `[source] type = "mysql"`.
pub struct MysqlSourceFactory;

impl SourceFactory for MysqlSourceFactory {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn validate(&self, cfg: &ConnectorConfig) -> Result<(), SpecError> {
        let c: DbSourceConfig = cfg.parse()?;
        let t = c.resolve(cfg)?;
        Endpoint::new(cfg, &t.conn).map(|_| ())
    }

    fn build(&self, cfg: &ConnectorConfig, ctx: &BuildContext) -> Result<Arc<dyn Source>> {
        let c: DbSourceConfig = cfg.parse()?;
        let t = c.resolve(cfg)?;
        let ep = Endpoint::new(cfg, &t.conn)?;
        let mut conn = ep.connect(&ctx.io)?;
        let planned = plan(&ep, &mut conn, &t, ctx);
        let _ = ctx.io.block_on(conn.disconnect());
        Ok(Arc::new(planned?))
    }
}

/// A column that bounds partitions or marks increments.
#[derive(Debug, Clone)]
struct KeyCol {
    name: Ident,
    form: KeyForm,
}

impl KeyCol {
    fn quoted(&self) -> String {
        self.name.quoted(Dialect::Mysql)
    }
}

/// A planned MySQL source.
#[derive(Clone)]
pub struct MysqlSource {
    ep: Endpoint,
    io: tokio::runtime::Handle,
    batch_rows: usize,
    schema: SchemaRef,
    kinds: Vec<Kind>,
    /// `SELECT <columns> FROM <table or derived query>`.
    select: String,
    key: Option<KeyCol>,
    cursor: Option<KeyCol>,
    plan: DbPlanState,
    /// The cursor has not moved since the last run: read nothing.
    nothing_new: bool,
    infos: Vec<PartitionInfo>,
    /// The table read, `None` for a query.
    table: Option<TableName>,
    /// The partition key's position among the columns read, to name a
    /// dirty row by its key.
    key_index: Option<usize>,
    /// What is read, for partition labels.
    what: String,
}

/// Plans a source: schema from the statement's metadata, the key and
/// cursor columns, the cursor marks and the key ranges.
fn plan(
    ep: &Endpoint,
    conn: &mut Conn,
    t: &crate::db::SourceTarget,
    ctx: &BuildContext,
) -> Result<MysqlSource> {
    let io = &ctx.io;
    let columns = t.columns.as_ref().map(|cols| {
        cols.iter()
            .map(|c| c.quoted(Dialect::Mysql))
            .collect::<Vec<_>>()
            .join(", ")
    });
    let select_list = columns.as_deref().unwrap_or("*");
    let (from, what, table) = match (&t.table, &t.query) {
        (Some(table), _) => {
            let db = ep.database_of(table)?;
            let q = qualified(&db, table);
            (q.quoted(Dialect::Mysql), q.to_string(), Some((db, q)))
        }
        (None, Some(query)) => (
            format!("({query}) AS `_tidex_q`"),
            "query".to_string(),
            None,
        ),
        (None, None) => return Err(Error::Internal("resolve gives a table or a query".into())),
    };
    let select = format!("SELECT {select_list} FROM {from}");
    let reading = format!("reading {what}");

    // Schema, from the prepared statement's column metadata.
    let stmt = io
        .block_on(conn.prep(select.as_str()))
        .map_err(|e| ep.error(&reading, e))?;
    let is_mariadb = io
        .block_on(conn.query_first::<String, _>("SELECT VERSION()"))
        .map_err(|e| ep.error("asking the server version", e))?
        .is_some_and(|v| v.contains("MariaDB"));
    let json_cols = match &table {
        Some((db, q)) if is_mariadb => mariadb_json_columns(io, conn, db, &q.name),
        _ => HashSet::new(),
    };
    let mut fields = Vec::new();
    let mut kinds = Vec::new();
    for col in stmt.columns().iter() {
        let name = col.name_str().into_owned();
        let is_json = table.is_some() && json_cols.contains(col.org_name_str().as_ref());
        let kind = types::kind_of(col, is_json).map_err(|ty| {
            Error::Config(format!(
                "{KIND} ({}): {what}: column `{name}` has type {ty}, which tidex cannot read; leave it out with `columns` or convert it in a query",
                ep.redacted()
            ))
        })?;
        fields.push(types::field(&name, kind));
        kinds.push(kind);
    }
    let _ = io.block_on(conn.close(stmt));
    let schema = Arc::new(Schema::new(fields));

    // The key: as configured, else a table's single-column integer primary key.
    let key_name = match (&t.partition_by, &table) {
        (Some(k), _) => Some(k.clone()),
        (None, Some((db, q))) => primary_key(ep, io, conn, db, &q.name)?,
        (None, None) => None,
    };
    let key = match key_name {
        Some(name) => {
            let form = key_form(ep, io, conn, &from, &name, &what, "partition_by")?;
            match form {
                Some(form) => Some(KeyCol { name, form }),
                None if t.partition_by.is_some() => {
                    return Err(Error::Config(format!(
                        "{KIND} ({}): {what}: partition_by column `{name}` is neither an integer nor a date/time column",
                        ep.redacted()
                    )))
                }
                // A primary key that cannot bound ranges: one partition.
                None => None,
            }
        }
        None => None,
    };
    let cursor = match &t.cursor {
        Some(name) => match key_form(ep, io, conn, &from, name, &what, "incremental cursor")? {
            Some(form) => Some(KeyCol {
                name: name.clone(),
                form,
            }),
            None => {
                return Err(Error::Config(format!(
                    "{KIND} ({}): {what}: incremental cursor `{name}` must be an integer or a date/time column",
                    ep.redacted()
                )))
            }
        },
        None => None,
    };

    let parts = t.partitions.unwrap_or(ctx.parallelism.max(1) * 4).max(1);
    let state = match DbPlanState::load(ctx.source_state.interrupted.as_deref()) {
        // A resumed run reads exactly what its interrupted attempt planned.
        Some(s) => s,
        None => {
            let mut s = DbPlanState::default();
            if let Some(c) = &cursor {
                let prev =
                    DbPlanState::load(ctx.source_state.previous.as_deref()).and_then(|p| p.mark_to);
                let from_mark = prev.as_deref().map(|m| parse_mark(ep, c, m)).transpose()?;
                let sql = format!("SELECT MAX({}) FROM {from}", c.quoted());
                let max = first_row(ep, io, conn, &sql, Params::Empty, &reading)?;
                let max = read_key(ep, c, max.first(), &what)?;
                s.mark_from = prev;
                s.mark_to = match (from_mark, max) {
                    (Some(f), Some(m)) if m > f => Some(c.form.format(m)),
                    (None, Some(m)) => Some(c.form.format(m)),
                    _ => s.mark_from.clone(),
                };
            }
            let nothing = cursor.is_some() && s.mark_to == s.mark_from;
            if let (Some(k), false) = (&key, nothing) {
                let (pred, params) = cursor_predicate(ep, cursor.as_ref(), &s)?;
                let sql = format!(
                    "SELECT MIN({k}), MAX({k}) FROM {from}{}",
                    pred.map(|p| format!(" WHERE {p}")).unwrap_or_default(),
                    k = k.quoted()
                );
                let row = first_row(ep, io, conn, &sql, params, &reading)?;
                let lo = read_key(ep, k, row.first(), &what)?;
                let hi = read_key(ep, k, row.get(1), &what)?;
                if let (Some(lo), Some(hi)) = (lo, hi) {
                    s.ranges = crate::db::split_range(lo, hi, parts);
                }
            }
            if let Some((db, q)) = &table {
                let n = s.ranges.len().max(1) as u64;
                s.bytes = table_bytes(io, conn, db, &q.name) / n;
            }
            s
        }
    };
    let nothing_new = cursor.is_some() && state.mark_to == state.mark_from;
    let infos = infos(
        labels(&what, key.as_ref(), cursor.as_ref(), &state, nothing_new),
        state.bytes,
    );
    let key_index = key.as_ref().and_then(|k| {
        schema
            .fields()
            .iter()
            .position(|f| f.name().eq_ignore_ascii_case(&k.name.0))
    });
    Ok(MysqlSource {
        ep: ep.clone(),
        io: ctx.io.clone(),
        batch_rows: ctx.batch_rows.max(1),
        schema,
        kinds,
        select,
        key,
        cursor,
        plan: state,
        nothing_new,
        infos,
        table: table.map(|(_, q)| q),
        key_index,
        what: what.to_string(),
    })
}

fn infos(labels: Vec<String>, bytes: u64) -> Vec<PartitionInfo> {
    labels
        .into_iter()
        .enumerate()
        .map(|(index, label)| PartitionInfo {
            index,
            label,
            bytes,
        })
        .collect()
}

fn labels(
    what: &str,
    key: Option<&KeyCol>,
    cursor: Option<&KeyCol>,
    s: &DbPlanState,
    nothing_new: bool,
) -> Vec<String> {
    if nothing_new {
        let c = cursor.map_or("cursor", |c| c.name.0.as_str());
        let after = s.mark_from.as_deref().unwrap_or("nothing");
        return vec![format!("{what}[{c} > {after}: nothing new]")];
    }
    match key {
        Some(k) if !s.ranges.is_empty() => s
            .ranges
            .iter()
            .map(|(lo, hi)| {
                format!(
                    "{what}[{} {}..={}]",
                    k.name,
                    k.form.format(*lo),
                    k.form.format(*hi)
                )
            })
            .collect(),
        _ => vec![what.to_string()],
    }
}

fn parse_mark(ep: &Endpoint, c: &KeyCol, mark: &str) -> Result<i64> {
    c.form.parse(mark).ok_or_else(|| {
        Error::Config(format!(
            "{KIND} ({}): the last run's high-water mark {mark:?} does not fit cursor `{}`; was the cursor column changed?",
            ep.redacted(),
            c.name
        ))
    })
}

/// `cursor > from AND cursor <= to`, with its parameters.
fn cursor_predicate(
    ep: &Endpoint,
    cursor: Option<&KeyCol>,
    s: &DbPlanState,
) -> Result<(Option<String>, Vec<Value>)> {
    let Some(c) = cursor else {
        return Ok((None, Vec::new()));
    };
    let mut params = Vec::new();
    let mut conds = Vec::new();
    if let Some(from) = &s.mark_from {
        conds.push(format!("{} > ?", c.quoted()));
        params.push(c.form.param(parse_mark(ep, c, from)?));
    }
    match &s.mark_to {
        Some(to) => {
            conds.push(format!("{} <= ?", c.quoted()));
            params.push(c.form.param(parse_mark(ep, c, to)?));
        }
        None => conds.push("1 = 0".into()),
    }
    Ok((Some(conds.join(" AND ")), params))
}

fn read_key(ep: &Endpoint, k: &KeyCol, v: Option<&Value>, what: &str) -> Result<Option<i64>> {
    k.form.read(v.unwrap_or(&Value::NULL)).map_err(|e| {
        Error::Config(format!(
            "{KIND} ({}): {what}: column `{}`: {e}",
            ep.redacted(),
            k.name
        ))
    })
}

fn first_row(
    ep: &Endpoint,
    io: &tokio::runtime::Handle,
    conn: &mut Conn,
    sql: &str,
    params: impl Into<Params>,
    what: &str,
) -> Result<Vec<Value>> {
    let params = params.into();
    let row: Option<Row> = io
        .block_on(conn.exec_first(sql, params))
        .map_err(|e| ep.error(what, e))?;
    Ok(row.map(Row::unwrap).unwrap_or_default())
}

/// Whether column `name` of `from` can bound ranges, from its metadata.
fn key_form(
    ep: &Endpoint,
    io: &tokio::runtime::Handle,
    conn: &mut Conn,
    from: &str,
    name: &Ident,
    what: &str,
    role: &str,
) -> Result<Option<KeyForm>> {
    let sql = format!("SELECT {} FROM {from}", name.quoted(Dialect::Mysql));
    let stmt = io
        .block_on(conn.prep(sql))
        .map_err(|e| ep.error(&format!("{what}: {role} `{name}`"), e))?;
    let form = stmt
        .columns()
        .first()
        .and_then(|c| types::kind_of(c, false).ok())
        .and_then(Kind::key_form);
    let _ = io.block_on(conn.close(stmt));
    Ok(form)
}

/// A table's primary key, when it is a single column.
fn primary_key(
    ep: &Endpoint,
    io: &tokio::runtime::Handle,
    conn: &mut Conn,
    db: &Ident,
    table: &Ident,
) -> Result<Option<Ident>> {
    let cols: Vec<String> = io
        .block_on(conn.exec(
            "SELECT COLUMN_NAME FROM information_schema.KEY_COLUMN_USAGE \
             WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? AND CONSTRAINT_NAME = 'PRIMARY'",
            (db.0.as_str(), table.0.as_str()),
        ))
        .map_err(|e| ep.error("looking up the primary key", e))?;
    Ok(match cols.as_slice() {
        [one] => Some(Ident(one.clone())),
        _ => None,
    })
}

/// MariaDB stores JSON as LONGTEXT with a `json_valid(col)` check; those
/// columns are JSON. Best effort: without the check table, nothing is.
fn mariadb_json_columns(
    io: &tokio::runtime::Handle,
    conn: &mut Conn,
    db: &Ident,
    table: &Ident,
) -> HashSet<String> {
    let clauses: Vec<String> = io
        .block_on(conn.exec(
            "SELECT CHECK_CLAUSE FROM information_schema.CHECK_CONSTRAINTS \
             WHERE CONSTRAINT_SCHEMA = ? AND TABLE_NAME = ?",
            (db.0.as_str(), table.0.as_str()),
        ))
        .unwrap_or_default();
    clauses
        .iter()
        .filter_map(|c| {
            let inner = c.strip_prefix("json_valid(`")?.strip_suffix("`)")?;
            Some(inner.replace("``", "`"))
        })
        .collect()
}

/// The table's size on disk, for progress estimates (0 when unknown).
fn table_bytes(io: &tokio::runtime::Handle, conn: &mut Conn, db: &Ident, table: &Ident) -> u64 {
    io.block_on(conn.exec_first::<Option<u64>, _, _>(
        "SELECT DATA_LENGTH FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ?",
        (db.0.as_str(), table.0.as_str()),
    ))
    .ok()
    .flatten()
    .flatten()
    .unwrap_or(0)
}

impl MysqlSource {
    /// The statement and parameters that read partition `index`.
    fn statement(&self, index: usize) -> Result<(String, Vec<Value>)> {
        let mut conds = Vec::new();
        let mut params = Vec::new();
        if let (Some(k), Some((lo, hi))) = (&self.key, self.plan.ranges.get(index)) {
            conds.push(range_predicate(&k.quoted(), "?", "?", index == 0));
            params.push(k.form.param(*lo));
            params.push(k.form.param(*hi));
        }
        let (pred, cparams) = cursor_predicate(&self.ep, self.cursor.as_ref(), &self.plan)?;
        if let Some(p) = pred {
            conds.push(p);
            params.extend(cparams);
        }
        let sql = if conds.is_empty() {
            self.select.clone()
        } else {
            format!("{} WHERE {}", self.select, conds.join(" AND "))
        };
        Ok((sql, params))
    }
}

impl Source for MysqlSource {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn partitions(&self) -> &[PartitionInfo] {
        &self.infos
    }

    fn open(&self, partition: usize) -> Result<Box<dyn SourceReader>> {
        let label = self.infos[partition].label.clone();
        let mut reader = MysqlReader {
            ep: self.ep.clone(),
            schema: self.schema.clone(),
            kinds: self.kinds.clone(),
            label,
            key_index: self.key_index,
            rx: None,
            task: None,
            row_no: 0,
            bytes: 0,
        };
        if self.nothing_new {
            return Ok(Box::new(reader));
        }
        let (sql, params) = self.statement(partition)?;
        let conn = self.ep.connect(&self.io)?;
        // Rows are fetched on the I/O runtime and handed over in chunks of
        // one batch; the channel holds one chunk, so memory stays bounded
        // and a slow consumer stops the fetch.
        let (tx, rx) = mpsc::channel(1);
        let task = self
            .io
            .spawn(stream_rows(conn, sql, params, self.batch_rows, tx));
        reader.rx = Some(rx);
        reader.task = Some(task);
        Ok(Box::new(reader))
    }

    fn describe(&self) -> String {
        match &self.table {
            Some(t) => format!("{} table {}", self.ep.redacted(), self.ep.table_label(t)),
            None => format!("{} query", self.ep.redacted()),
        }
    }

    fn state(&self) -> Option<String> {
        Some(self.plan.store())
    }

    /// Halves the key range; the ranges are the stored plan, so a resumed
    /// run reads the split partitions too.
    fn split(&self, partition: usize) -> Option<Arc<dyn Source>> {
        if self.nothing_new {
            return None;
        }
        self.key.as_ref()?;
        let mut s = self.clone();
        crate::db::split_planned_range(&mut s.plan, partition)?;
        s.infos = infos(
            labels(&s.what, s.key.as_ref(), s.cursor.as_ref(), &s.plan, false),
            s.plan.bytes,
        );
        Some(Arc::new(s))
    }
}

type Chunk = std::result::Result<Vec<Row>, mysql_async::Error>;

async fn stream_rows(
    mut conn: Conn,
    sql: String,
    params: Vec<Value>,
    chunk_rows: usize,
    tx: mpsc::Sender<Chunk>,
) {
    let params = if params.is_empty() {
        Params::Empty
    } else {
        Params::Positional(params)
    };
    let res: std::result::Result<(), mysql_async::Error> = async {
        let mut result = conn.exec_iter(sql, params).await?;
        let mut chunk = Vec::with_capacity(chunk_rows);
        while let Some(row) = result.next().await? {
            chunk.push(row);
            if chunk.len() == chunk_rows {
                let full = std::mem::replace(&mut chunk, Vec::with_capacity(chunk_rows));
                if tx.send(Ok(full)).await.is_err() {
                    // The reader is gone (cancelled or failed): dropping
                    // the connection abandons the rest of the result.
                    return Ok(());
                }
            }
        }
        drop(result);
        if !chunk.is_empty() {
            let _ = tx.send(Ok(chunk)).await;
        }
        Ok(())
    }
    .await;
    match res {
        Ok(()) => {
            let _ = conn.disconnect().await;
        }
        Err(e) => {
            let _ = tx.send(Err(e)).await;
        }
    }
}

struct MysqlReader {
    ep: Endpoint,
    schema: SchemaRef,
    kinds: Vec<Kind>,
    label: String,
    key_index: Option<usize>,
    rx: Option<mpsc::Receiver<Chunk>>,
    task: Option<tokio::task::JoinHandle<()>>,
    row_no: u64,
    bytes: u64,
}

impl Drop for MysqlReader {
    fn drop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

impl MysqlReader {
    fn convert(&mut self, rows: &[Row], rejects: &mut Rejects) -> Result<RecordBatch> {
        let fields = self.schema.fields();
        let mut builders: Vec<Builder> =
            fields.iter().map(|f| Builder::new(f, rows.len())).collect();
        let mut cells: Vec<Cell<'_>> = Vec::with_capacity(self.kinds.len());
        for row in rows {
            self.row_no += 1;
            cells.clear();
            let mut bad = None;
            for (i, kind) in self.kinds.iter().enumerate() {
                let v = row.as_ref(i).unwrap_or(&Value::NULL);
                self.bytes += types::wire_size(v);
                match types::decode(*kind, v) {
                    Ok(c) => cells.push(c),
                    Err(reason) => {
                        bad = Some((i, reason));
                        break;
                    }
                }
            }
            if let Some((i, reason)) = bad {
                let reason = match self.key_index.and_then(|k| row.as_ref(k).map(|v| (k, v))) {
                    Some((k, v)) => format!(
                        "{reason} (row with {} = {})",
                        fields[k].name(),
                        types::raw(self.kinds[k], v)
                    ),
                    None => reason,
                };
                let values = (0..self.kinds.len())
                    .map(|j| types::raw(self.kinds[j], row.as_ref(j).unwrap_or(&Value::NULL)))
                    .collect();
                rejects.reject(
                    DirtyRow::row(
                        Location {
                            file: self.label.clone(),
                            row: Some(self.row_no),
                            byte_offset: None,
                            column: Some(fields[i].name().clone()),
                        },
                        reason,
                    )
                    .with_values(values),
                )?;
                continue;
            }
            for (b, c) in builders.iter_mut().zip(cells.iter()) {
                b.append(*c)
                    .map_err(|e| Error::Internal(format!("{}: {e}", self.label)))?;
            }
        }
        let columns = builders.iter_mut().map(Builder::finish).collect();
        RecordBatch::try_new(self.schema.clone(), columns)
            .map_err(|e| Error::Internal(format!("{}: {e}", self.label)))
    }
}

impl SourceReader for MysqlReader {
    fn next_batch(&mut self, rejects: &mut Rejects) -> Result<Option<RecordBatch>> {
        loop {
            let Some(rx) = self.rx.as_mut() else {
                return Ok(None);
            };
            match rx.blocking_recv() {
                None => {
                    self.rx = None;
                    return Ok(None);
                }
                Some(Err(e)) => {
                    self.rx = None;
                    return Err(self.ep.error(&format!("reading {}", self.label), e));
                }
                Some(Ok(rows)) => {
                    let batch = self.convert(&rows, rejects)?;
                    if batch.num_rows() > 0 {
                        return Ok(Some(batch));
                    }
                }
            }
        }
    }

    fn bytes_read(&self) -> u64 {
        self.bytes
    }
}
