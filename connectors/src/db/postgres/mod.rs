//! PostgreSQL source and sink (tokio-postgres).
//!
//! The source reads each partition with `COPY (SELECT …) TO STDOUT (FORMAT
//! binary)` and decodes the rows straight into Arrow builders
//! ([`decode`]). Partitions are ranges of an integer, date or timestamp key
//! (`partition_by`, else the table's single-column integer primary key).
//!
//! The sink writes each partition with `COPY … FROM STDIN (FORMAT binary)`
//! inside one transaction, which also records the partition in the target's
//! `_tidex_commits` table: a partition is in the table entirely or not at
//! all, and a resumed run skips partitions the target already has
//! ([`encode`]).

pub mod decode;
pub mod encode;

use super::{
    committed_part, db_error, range_predicate, redact, split_range, DbMode, DbPlanState,
    DbSinkConfig, DbSourceConfig, Dialect, Ident, SinkTarget, SourceTarget, TableName,
    MARKER_TABLE,
};
use arrow::array::BooleanArray;
use arrow::datatypes::{Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use bytes::Bytes;
use decode::{oid, PgColumn, RowDecoder};
use futures::{SinkExt, StreamExt};
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use tidex_engine::dirty::{DirtyRow, Rejects};
use tidex_engine::error::Location;
use tidex_engine::{
    BuildContext, CommittedPart, ConnectorConfig, Error, PartitionInfo, PartitionWriter,
    PublishJournal, Registry, Result, RunInfo, Sink, SinkFactory, Source, SourceFactory,
    SourceReader, SpecError,
};
use tokio_postgres::{Client, CopyInSink, CopyOutStream, NoTls};

const KIND: &str = "postgres";
const Q: Dialect = Dialect::Ansi;

/// Registers `type = "postgres"` as a source and a sink.
pub fn register(r: &mut Registry) {
    r.register_source(PgSourceFactory);
    r.register_sink(PgSinkFactory);
}

/// A readable message for a driver error: the server's own message and
/// detail when there is one, else the error with its cause.
fn pg_msg(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        let mut m = format!("{}: {}", db.severity(), db.message());
        if let Some(d) = db.detail() {
            m += &format!(" ({d})");
        }
        return m;
    }
    let mut m = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        m += &format!(": {s}");
        src = s.source();
    }
    m
}

fn err(url: &url::Url, what: &str, e: &tokio_postgres::Error) -> Error {
    db_error(KIND, url, what, pg_msg(e))
}

async fn connect(url: &url::Url) -> Result<Client> {
    let (client, conn) = tokio_postgres::connect(url.as_str(), NoTls)
        .await
        .map_err(|e| err(url, "cannot connect", &e))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(client)
}

/// The columns of a relation (table, view) in order.
async fn columns_of(client: &Client, url: &url::Url, rel: &str) -> Result<Vec<PgColumn>> {
    let rows = client
        .query(
            "SELECT a.attname::text,
                    CASE WHEN t.typtype = 'e' THEN 25
                         WHEN t.typtype = 'd' THEN t.typbasetype::int8
                         ELSE a.atttypid::int8 END,
                    CASE WHEN t.typtype = 'd' THEN t.typtypmod ELSE a.atttypmod END,
                    CASE WHEN b.typcategory = 'A' THEN b.typelem::int8 ELSE 0 END,
                    format_type(a.atttypid, a.atttypmod),
                    a.attnotnull
             FROM pg_attribute a
             JOIN pg_type t ON t.oid = a.atttypid
             JOIN pg_type b ON b.oid = CASE WHEN t.typtype = 'd' THEN t.typbasetype ELSE t.oid END
             WHERE a.attrelid = $1::text::regclass AND a.attnum > 0 AND NOT a.attisdropped
             ORDER BY a.attnum",
            &[&rel],
        )
        .await
        .map_err(|e| err(url, &format!("reading the columns of {rel}"), &e))?;
    Ok(rows
        .iter()
        .map(|r| PgColumn {
            name: r.get(0),
            oid: r.get::<_, i64>(1) as u32,
            typmod: r.get(2),
            elem: r.get::<_, i64>(3) as u32,
            type_name: r.get(4),
            not_null: r.get(5),
        })
        .collect())
}

async fn table_exists(client: &Client, url: &url::Url, table: &TableName) -> Result<bool> {
    relation_exists(client, url, &table.quoted(Q)).await
}

/// Whether a (quoted) relation name resolves.
async fn relation_exists(client: &Client, url: &url::Url, quoted: &str) -> Result<bool> {
    let row = client
        .query_one("SELECT to_regclass($1::text)::text", &[&quoted])
        .await
        .map_err(|e| err(url, &format!("looking up {quoted}"), &e))?;
    Ok(row.get::<_, Option<String>>(0).is_some())
}

/// How a partition key or cursor is turned into an integer and back into
/// a literal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeyKind {
    Int,
    Date,
    Timestamp,
    TimestampTz,
}

impl KeyKind {
    fn of(col: &PgColumn) -> Option<KeyKind> {
        Some(match col.oid {
            oid::INT2 | oid::INT4 | oid::INT8 => KeyKind::Int,
            oid::DATE => KeyKind::Date,
            oid::TIMESTAMP => KeyKind::Timestamp,
            oid::TIMESTAMPTZ => KeyKind::TimestampTz,
            _ => return None,
        })
    }

    /// SQL giving the column as an int8 (days or microseconds since 1970).
    fn as_int(self, col: &str) -> String {
        match self {
            KeyKind::Int => format!("{col}::int8"),
            KeyKind::Date => format!("({col} - DATE '1970-01-01')::int8"),
            KeyKind::Timestamp | KeyKind::TimestampTz => {
                format!("(extract(epoch from {col}) * 1000000)::int8")
            }
        }
    }

    /// A literal for an integer form made by [`Self::as_int`]: only digits
    /// and a formatted date reach the SQL text.
    fn literal(self, v: i64) -> String {
        match self {
            KeyKind::Int => v.to_string(),
            KeyKind::Date => {
                let d = chrono::DateTime::from_timestamp(v.saturating_mul(86_400), 0)
                    .map(|t| t.format("%Y-%m-%d").to_string())
                    .unwrap_or_else(|| "infinity".into());
                format!("DATE '{d}'")
            }
            KeyKind::Timestamp | KeyKind::TimestampTz => {
                let t = chrono::DateTime::from_timestamp_micros(v)
                    .map(|t| t.format("%Y-%m-%d %H:%M:%S%.6f").to_string())
                    .unwrap_or_else(|| "infinity".into());
                if self == KeyKind::TimestampTz {
                    format!("TIMESTAMPTZ '{t}+00'")
                } else {
                    format!("TIMESTAMP '{t}'")
                }
            }
        }
    }

    /// Human-readable form for labels.
    fn show(self, v: i64) -> String {
        match self {
            KeyKind::Int => v.to_string(),
            _ => {
                let l = self.literal(v);
                l[l.find('\'').unwrap_or(0)..]
                    .trim_matches('\'')
                    .to_string()
            }
        }
    }
}

/// `[source] type = "postgres"`.
pub struct PgSourceFactory;

/// A planned PostgreSQL source.
pub struct PgSource {
    target: SourceTarget,
    io: tokio::runtime::Handle,
    schema: SchemaRef,
    oids: Vec<(u32, u32)>,
    /// One `COPY … TO STDOUT` statement per partition.
    statements: Vec<String>,
    infos: Vec<PartitionInfo>,
    plan: DbPlanState,
    layout: Arc<Layout>,
    batch_rows: usize,
    what: String,
}

fn find_col<'a>(cols: &'a [PgColumn], name: &Ident, rel: &str) -> Result<&'a PgColumn> {
    cols.iter().find(|c| c.name == name.0).ok_or_else(|| {
        Error::Config(format!(
            "{KIND}: column `{name}` does not exist in {rel}; it has: {}",
            cols.iter()
                .map(|c| c.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))
    })
}

impl SourceFactory for PgSourceFactory {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn validate(&self, cfg: &ConnectorConfig) -> Result<(), SpecError> {
        cfg.parse::<DbSourceConfig>()?.resolve(cfg).map(|_| ())
    }

    fn build(&self, cfg: &ConnectorConfig, ctx: &BuildContext) -> Result<Arc<dyn Source>> {
        let target = cfg.parse::<DbSourceConfig>()?.resolve(cfg)?;
        let io = ctx.io.clone();
        let t = target.clone();
        let parallelism = ctx.parallelism;
        let interrupted = DbPlanState::load(ctx.source_state.interrupted.as_deref());
        let previous = DbPlanState::load(ctx.source_state.previous.as_deref());
        let built = io.block_on(async move {
            let url = &t.conn;
            let client = connect(url).await?;
            // The relation to read, and its columns with their type modifiers.
            let (rel, all_cols, what) = match (&t.table, &t.query) {
                (Some(table), _) => {
                    if !table_exists(&client, url, table).await? {
                        return Err(Error::Config(format!(
                            "{KIND} ({}): table {table} does not exist",
                            redact(url)
                        )));
                    }
                    let rel = table.quoted(Q);
                    let cols = columns_of(&client, url, &rel).await?;
                    (rel, cols, format!("table {table}"))
                }
                (None, Some(query)) => {
                    // A temporary view gives the query's columns with their
                    // exact types (numeric precision included).
                    client
                        .batch_execute("BEGIN")
                        .await
                        .map_err(|e| err(url, "starting a transaction", &e))?;
                    let view = format!("CREATE TEMP VIEW _tidex_query AS {query}");
                    let cols = match client.batch_execute(&view).await {
                        Ok(()) => columns_of(&client, url, "pg_temp._tidex_query").await,
                        Err(e) => Err(err(url, "the query failed", &e)),
                    };
                    let _ = client.batch_execute("ROLLBACK").await;
                    (format!("({query}) AS _tidex_q"), cols?, "query".to_string())
                }
                (None, None) => unreachable!("resolve requires a table or a query"),
            };
            let cols: Vec<PgColumn> = match &t.columns {
                Some(names) => names
                    .iter()
                    .map(|n| find_col(&all_cols, n, &what).cloned())
                    .collect::<Result<_>>()?,
                None => all_cols.clone(),
            };
            let mut fields = Vec::new();
            for c in &cols {
                let f = decode::arrow_field(&c.name, c.oid, c.typmod, c.elem).ok_or_else(|| {
                    Error::Config(format!(
                        "{KIND} ({}): column `{}` has type {}, which tidex cannot read; cast it in a query (e.g. `{}::text`)",
                        redact(url),
                        c.name,
                        c.type_name,
                        c.name
                    ))
                })?;
                fields.push(f);
            }
            // The partition key: given, or the single-column integer primary key.
            let key = match &t.partition_by {
                Some(k) => {
                    let c = find_col(&all_cols, k, &what)?;
                    let kind = KeyKind::of(c).ok_or_else(|| {
                        Error::Config(format!(
                            "{KIND}: partition_by column `{k}` has type {}; it must be an integer, date or timestamp",
                            c.type_name
                        ))
                    })?;
                    Some((k.clone(), kind, c.not_null))
                }
                None if t.table.is_some() => {
                    let pk = client
                        .query(
                            "SELECT a.attname::text FROM pg_index i
                             JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)
                             WHERE i.indrelid = $1::text::regclass AND i.indisprimary",
                            &[&rel],
                        )
                        .await
                        .map_err(|e| err(url, "reading the primary key", &e))?;
                    if pk.len() == 1 {
                        let name = Ident(pk[0].get(0));
                        let c = find_col(&all_cols, &name, &what)?;
                        (KeyKind::of(c) == Some(KeyKind::Int)).then_some((name, KeyKind::Int, true))
                    } else {
                        None
                    }
                }
                None => None,
            };
            let cursor = match &t.cursor {
                Some(c) => {
                    let col = find_col(&all_cols, c, &what)?;
                    let kind = KeyKind::of(col).ok_or_else(|| {
                        Error::Config(format!(
                            "{KIND}: incremental cursor `{c}` has type {}; it must be an integer, date or timestamp",
                            col.type_name
                        ))
                    })?;
                    Some((c.clone(), kind))
                }
                None => None,
            };
            // The plan: reused from the interrupted run, else made now.
            let plan = match interrupted {
                Some(p) => p,
                None => {
                    let mut plan = DbPlanState::default();
                    let mut incr = String::new();
                    if let Some((c, kind)) = &cursor {
                        plan.mark_from = previous.and_then(|p| p.mark_to);
                        let qc = c.quoted(Q);
                        let row = client
                            .query_one(&format!("SELECT max({}) FROM {rel}", kind.as_int(&qc)), &[])
                            .await
                            .map_err(|e| err(url, "reading the cursor's high-water mark", &e))?;
                        let max: Option<i64> = row.get(0);
                        let from: Option<i64> = plan.mark_from.as_deref().and_then(|s| s.parse().ok());
                        plan.mark_to = match (from, max) {
                            (Some(f), Some(m)) if m > f => Some(m.to_string()),
                            (Some(f), _) => Some(f.to_string()),
                            (None, m) => m.map(|m| m.to_string()),
                        };
                        incr = incremental_predicate(&qc, *kind, &plan);
                    }
                    let n = t.partitions.unwrap_or(parallelism.max(1) * 4);
                    if let Some((k, kind, _)) = &key {
                        let qk = k.quoted(Q);
                        let sql = format!(
                            "SELECT min({e}), max({e}) FROM {rel}{w}",
                            e = kind.as_int(&qk),
                            w = if incr.is_empty() { String::new() } else { format!(" WHERE {incr}") }
                        );
                        let row = client
                            .query_one(&sql, &[])
                            .await
                            .map_err(|e| err(url, "reading the partition key's range", &e))?;
                        if let (Some(lo), Some(hi)) = (row.get::<_, Option<i64>>(0), row.get::<_, Option<i64>>(1)) {
                            plan.ranges = split_range(lo, hi, n);
                        }
                    }
                    if t.table.is_some() {
                        let row = client
                            .query_one("SELECT pg_relation_size($1::text::regclass)", &[&rel])
                            .await
                            .map_err(|e| err(url, "reading the table size", &e))?;
                        plan.bytes = row.get::<_, i64>(0).max(0) as u64 / plan.ranges.len().max(1) as u64;
                    }
                    plan
                }
            };
            Ok::<_, Error>((rel, cols, fields, key, cursor, plan, what))
        })?;
        let (rel, cols, fields, key, cursor, plan, what) = built;
        let select: Vec<String> = cols
            .iter()
            .map(|c| Ident(c.name.clone()).quoted(Q))
            .collect();
        let select = select.join(", ");
        let incr = cursor
            .as_ref()
            .map(|(c, kind)| incremental_predicate(&c.quoted(Q), *kind, &plan))
            .unwrap_or_default();
        let incr_label = match (&cursor, &plan.mark_to) {
            (Some((c, kind)), Some(to)) => {
                let show = |s: &Option<String>| {
                    s.as_deref()
                        .and_then(|v| v.parse().ok())
                        .map(|v| kind.show(v))
                };
                match show(&plan.mark_from) {
                    Some(f) => format!(
                        " ({c} > {f} ..= {})",
                        show(&Some(to.clone())).unwrap_or_default()
                    ),
                    None => format!(" ({c} ..= {})", show(&Some(to.clone())).unwrap_or_default()),
                }
            }
            _ => String::new(),
        };
        let layout = Layout {
            base: match &target.table {
                Some(t) => t.to_string(),
                None => "query".to_string(),
            },
            table: target.table.is_some(),
            rel,
            select,
            key,
            incr,
            incr_label,
        };
        let (statements, infos) = layout.partitions(&plan);
        Ok(Arc::new(PgSource {
            what: format!("{} {what}", redact(&target.conn)),
            target,
            io: ctx.io.clone(),
            schema: Arc::new(Schema::new(fields)),
            oids: cols.iter().map(|c| (c.oid, c.elem)).collect(),
            statements,
            infos,
            plan,
            layout: Arc::new(layout),
            batch_rows: ctx.batch_rows,
        }))
    }
}

/// How a plan's key ranges become partitions: one `COPY` each.
struct Layout {
    base: String,
    table: bool,
    rel: String,
    select: String,
    key: Option<(Ident, KeyKind, bool)>,
    incr: String,
    incr_label: String,
}

impl Layout {
    fn partitions(&self, plan: &DbPlanState) -> (Vec<String>, Vec<PartitionInfo>) {
        let mut statements = Vec::new();
        let mut infos = Vec::new();
        let ranges: Vec<Option<(i64, i64)>> = match (&self.key, plan.ranges.is_empty()) {
            (Some(_), false) => plan.ranges.iter().copied().map(Some).collect(),
            _ => vec![None],
        };
        for (i, r) in ranges.iter().enumerate() {
            let mut preds = Vec::new();
            let mut label = self.base.clone();
            if let (Some((k, kind, not_null)), Some((lo, hi))) = (&self.key, r) {
                preds.push(range_predicate(
                    &k.quoted(Q),
                    &kind.literal(*lo),
                    &kind.literal(*hi),
                    i == 0 && !not_null,
                ));
                label += &format!("[{k} {}..={}]", kind.show(*lo), kind.show(*hi));
            }
            if !self.incr.is_empty() {
                preds.push(self.incr.clone());
            }
            label += &self.incr_label;
            let (rel, select) = (&self.rel, &self.select);
            let sql = if preds.is_empty() && self.table {
                format!("COPY {rel} ({select}) TO STDOUT (FORMAT binary)")
            } else {
                format!(
                    "COPY (SELECT {select} FROM {rel}{}) TO STDOUT (FORMAT binary)",
                    if preds.is_empty() {
                        String::new()
                    } else {
                        format!(" WHERE {}", preds.join(" AND "))
                    }
                )
            };
            statements.push(sql);
            infos.push(PartitionInfo {
                index: i,
                label,
                bytes: plan.bytes,
            });
        }
        (statements, infos)
    }
}

/// `cursor > from AND cursor <= to`; the first run (no `from`) also reads
/// rows whose cursor is NULL.
fn incremental_predicate(col: &str, kind: KeyKind, plan: &DbPlanState) -> String {
    let parse = |s: &Option<String>| s.as_deref().and_then(|v| v.parse::<i64>().ok());
    match (parse(&plan.mark_from), parse(&plan.mark_to)) {
        (Some(f), Some(t)) => format!(
            "({col} > {} AND {col} <= {})",
            kind.literal(f),
            kind.literal(t)
        ),
        (None, Some(t)) => format!("({col} <= {} OR {col} IS NULL)", kind.literal(t)),
        (Some(f), None) => format!("({col} > {})", kind.literal(f)),
        (None, None) => String::new(),
    }
}

impl Source for PgSource {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn partitions(&self) -> &[PartitionInfo] {
        &self.infos
    }

    fn open(&self, partition: usize) -> Result<Box<dyn SourceReader>> {
        let cols = self
            .schema
            .fields()
            .iter()
            .zip(&self.oids)
            .map(|(f, (o, e))| decode::Col::new(f, *o, *e, self.batch_rows))
            .collect();
        Ok(Box::new(PgReader {
            url: self.target.conn.clone(),
            io: self.io.clone(),
            sql: self.statements[partition].clone(),
            label: self.infos[partition].label.clone(),
            schema: self.schema.clone(),
            decoder: RowDecoder::new(cols),
            client: None,
            stream: None,
            pending: Vec::new(),
            bytes: 0,
            rows_before: 0,
            batch_rows: self.batch_rows,
            done: false,
        }))
    }

    fn describe(&self) -> String {
        self.what.clone()
    }

    fn state(&self) -> Option<String> {
        Some(self.plan.store())
    }

    /// Halves the key range; the ranges are the stored plan, so a resumed
    /// run reads the split partitions too.
    fn split(&self, partition: usize) -> Option<Arc<dyn Source>> {
        self.layout.key.as_ref()?;
        let mut plan = self.plan.clone();
        crate::db::split_planned_range(&mut plan, partition)?;
        let (statements, infos) = self.layout.partitions(&plan);
        Some(Arc::new(PgSource {
            target: self.target.clone(),
            io: self.io.clone(),
            schema: self.schema.clone(),
            oids: self.oids.clone(),
            statements,
            infos,
            plan,
            layout: self.layout.clone(),
            batch_rows: self.batch_rows,
            what: self.what.clone(),
        }))
    }
}

struct PgReader {
    url: url::Url,
    io: tokio::runtime::Handle,
    sql: String,
    label: String,
    schema: SchemaRef,
    decoder: RowDecoder,
    client: Option<Client>,
    stream: Option<Pin<Box<CopyOutStream>>>,
    pending: Vec<u8>,
    bytes: u64,
    rows_before: u64,
    batch_rows: usize,
    done: bool,
}

impl PgReader {
    fn fill(&mut self) -> Result<bool> {
        let url = &self.url;
        if self.stream.is_none() {
            let sql = &self.sql;
            let (client, stream) = self.io.block_on(async {
                let client = connect(url).await?;
                // A bulk read gains nothing from JIT-compiling its scan.
                client
                    .batch_execute("SET jit = off")
                    .await
                    .map_err(|e| err(url, "configuring the session", &e))?;
                let stream = client
                    .copy_out(sql.as_str())
                    .await
                    .map_err(|e| err(url, "reading", &e))?;
                Ok::<_, Error>((client, stream))
            })?;
            self.client = Some(client);
            self.stream = Some(Box::pin(stream));
        }
        let stream = self.stream.as_mut().expect("started");
        let dec = &mut self.decoder;
        let pending = &mut self.pending;
        let bytes = &mut self.bytes;
        let max = self.batch_rows;
        let bad = |e: String| db_error(KIND, url, "malformed COPY data", e);
        self.io.block_on(async {
            loop {
                if !pending.is_empty() {
                    let used = dec.decode(pending, max).map_err(bad)?;
                    pending.drain(..used);
                }
                if dec.rows >= max || dec.finished {
                    return Ok(false);
                }
                match stream.next().await {
                    Some(Ok(chunk)) => {
                        *bytes += chunk.len() as u64;
                        if pending.is_empty() {
                            let used = dec.decode(&chunk, max).map_err(bad)?;
                            pending.extend_from_slice(&chunk[used..]);
                        } else {
                            pending.extend_from_slice(&chunk);
                        }
                    }
                    Some(Err(e)) => return Err(err(url, "reading", &e)),
                    None => {
                        if !pending.is_empty() || !dec.finished {
                            return Err(bad("the COPY stream ended in the middle of a row".into()));
                        }
                        return Ok(true);
                    }
                }
            }
        })
    }
}

impl SourceReader for PgReader {
    fn next_batch(&mut self, rejects: &mut Rejects) -> Result<Option<RecordBatch>> {
        if self.done {
            return Ok(None);
        }
        let eof = self.fill()?;
        if eof || self.decoder.finished {
            self.done = true;
            self.stream = None;
            self.client = None;
        }
        let n = self.decoder.rows;
        if n == 0 {
            return Ok(None);
        }
        let arrays = self.decoder.cols.iter_mut().map(|c| c.finish()).collect();
        self.decoder.rows = 0;
        let mut batch = RecordBatch::try_new(self.schema.clone(), arrays)
            .map_err(|e| Error::Internal(format!("building a batch: {e}")))?;
        let rejected = std::mem::take(&mut self.decoder.rejected);
        if !rejected.is_empty() {
            let mut keep = vec![true; n];
            for (row, col, reason) in rejected {
                keep[row] = false;
                rejects.reject(DirtyRow::row(
                    Location {
                        file: self.label.clone(),
                        row: Some(self.rows_before + row as u64 + 1),
                        byte_offset: None,
                        column: Some(self.schema.field(col).name().clone()),
                    },
                    reason,
                ))?;
            }
            batch = arrow::compute::filter_record_batch(&batch, &BooleanArray::from(keep))
                .map_err(|e| Error::Internal(e.to_string()))?;
        }
        self.rows_before += n as u64;
        Ok(Some(batch))
    }

    fn bytes_read(&self) -> u64 {
        self.bytes
    }
}

/// `[sink] type = "postgres"`.
pub struct PgSinkFactory;

/// A PostgreSQL table being written.
pub struct PgSink {
    target: SinkTarget,
    io: tokio::runtime::Handle,
    /// The target's columns in the incoming schema's order (set by prepare).
    columns: OnceLock<Vec<PgColumn>>,
}

impl SinkFactory for PgSinkFactory {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn validate(&self, cfg: &ConnectorConfig) -> Result<(), SpecError> {
        cfg.parse::<DbSinkConfig>()?.resolve(cfg).map(|_| ())
    }

    fn build(&self, cfg: &ConnectorConfig, ctx: &BuildContext) -> Result<Arc<dyn Sink>> {
        let target = cfg.parse::<DbSinkConfig>()?.resolve(cfg)?;
        Ok(Arc::new(PgSink {
            target,
            io: ctx.io.clone(),
            columns: OnceLock::new(),
        }))
    }
}

impl PgSink {
    fn marker(&self) -> String {
        let m = Ident(MARKER_TABLE.into());
        match &self.target.table.schema {
            Some(s) => format!("{}.{}", s.quoted(Q), m.quoted(Q)),
            None => m.quoted(Q),
        }
    }

    fn url(&self) -> &url::Url {
        &self.target.conn
    }
}

fn create_table_sql(table: &TableName, schema: &Schema, key: &[Ident]) -> Result<String> {
    let mut cols = Vec::new();
    for f in schema.fields() {
        let t = encode::pg_type_for(f).map_err(|e| Error::Config(format!("{KIND}: {e}")))?;
        let not_null = if key.iter().any(|k| &k.0 == f.name()) {
            " NOT NULL"
        } else {
            ""
        };
        cols.push(format!(
            "{} {t}{not_null}",
            Ident(f.name().clone()).quoted(Q)
        ));
    }
    if !key.is_empty() {
        cols.push(format!(
            "PRIMARY KEY ({})",
            key.iter()
                .map(|k| k.quoted(Q))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    Ok(format!(
        "CREATE TABLE {} ({})",
        table.quoted(Q),
        cols.join(", ")
    ))
}

impl Sink for PgSink {
    fn prepare(
        &self,
        run: &RunInfo,
        schema: &SchemaRef,
        committed: &[CommittedPart],
    ) -> Result<()> {
        let t = &self.target;
        let url = self.url();
        let cols = self.io.block_on(async {
            let client = connect(url).await?;
            let table = &t.table;
            if !table_exists(&client, url, table).await? {
                if !t.create {
                    return Err(Error::Config(format!(
                        "{KIND} ({}): table {table} does not exist (set create = true to create it)",
                        redact(url)
                    )));
                }
                let sql = create_table_sql(table, schema, &t.key)?;
                client
                    .batch_execute(&sql)
                    .await
                    .map_err(|e| err(url, &format!("creating table {table}"), &e))?;
                tracing::info!(table = %table, "created table");
            }
            let existing = columns_of(&client, url, &table.quoted(Q)).await?;
            let mut cols = Vec::new();
            let mut missing = Vec::new();
            for f in schema.fields() {
                match existing.iter().find(|c| &c.name == f.name()) {
                    Some(c) => cols.push(c.clone()),
                    None => missing.push(f.name().as_str()),
                }
            }
            if !missing.is_empty() {
                return Err(Error::Config(format!(
                    "{KIND} ({}): table {table} has no column {} (it has: {})",
                    redact(url),
                    missing.join(", "),
                    existing.iter().map(|c| c.name.as_str()).collect::<Vec<_>>().join(", ")
                )));
            }
            for k in &t.key {
                if !schema.fields().iter().any(|f| f.name() == &k.0) {
                    return Err(Error::Config(format!(
                        "{KIND}: key column `{k}` is not in the incoming data"
                    )));
                }
            }
            if t.mode == DbMode::Upsert {
                let keys: Vec<String> = t.key.iter().map(|k| k.0.clone()).collect();
                let row = client
                    .query_one(
                        "SELECT count(*) FROM pg_index i
                         WHERE i.indrelid = $1::text::regclass AND i.indisunique
                           AND (SELECT array_agg(a.attname::text ORDER BY a.attname)
                                FROM pg_attribute a
                                WHERE a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey))
                               = (SELECT array_agg(k ORDER BY k) FROM unnest($2::text[]) k)",
                        &[&table.quoted(Q), &keys],
                    )
                    .await
                    .map_err(|e| err(url, "reading unique indexes", &e))?;
                if row.get::<_, i64>(0) == 0 {
                    return Err(Error::Config(format!(
                        "{KIND}: upsert into {table} needs a primary key or unique index on ({})",
                        keys.join(", ")
                    )));
                }
            }
            let marker = self.marker();
            client
                .batch_execute(&format!(
                    "CREATE TABLE IF NOT EXISTS {marker} (job text NOT NULL, run_id bigint NOT NULL, part integer NOT NULL, \
                     rows bigint NOT NULL, committed_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (job, run_id, part))"
                ))
                .await
                .map_err(|e| err(url, "creating the commit marker table", &e))?;
            if !run.resumed {
                client
                    .execute(&format!("DELETE FROM {marker} WHERE job = $1"), &[&run.job])
                    .await
                    .map_err(|e| err(url, "clearing old commit markers", &e))?;
            }
            if t.mode == DbMode::TruncateInsert && committed.is_empty() {
                let row = client
                    .query_one(
                        &format!("SELECT count(*) FROM {marker} WHERE job = $1 AND run_id = $2"),
                        &[&run.job, &run.run_id],
                    )
                    .await
                    .map_err(|e| err(url, "reading commit markers", &e))?;
                if row.get::<_, i64>(0) == 0 {
                    client
                        .batch_execute(&format!(
                            "BEGIN; TRUNCATE {}; DELETE FROM {marker} WHERE job = {}; COMMIT",
                            table.quoted(Q),
                            quote_literal(&run.job)
                        ))
                        .await
                        .map_err(|e| err(url, &format!("truncating {table}"), &e))?;
                }
            }
            Ok(cols)
        })?;
        let _ = self.columns.set(cols);
        Ok(())
    }

    fn committed_at_target(&self, run: &RunInfo) -> Result<Vec<CommittedPart>> {
        let url = self.url();
        let marker = self.marker();
        let table = self.target.table.to_string();
        self.io.block_on(async {
            let client = connect(url).await?;
            let exists = relation_exists(&client, url, &marker).await?;
            if !exists {
                return Ok(Vec::new());
            }
            let rows = client
                .query(
                    &format!("SELECT part, rows FROM {marker} WHERE job = $1 AND run_id = $2"),
                    &[&run.job, &run.run_id],
                )
                .await
                .map_err(|e| err(url, "reading commit markers", &e))?;
            Ok(rows
                .iter()
                .map(|r| {
                    committed_part(
                        &table,
                        r.get::<_, i32>(0) as usize,
                        r.get::<_, i64>(1) as u64,
                        0,
                    )
                })
                .collect())
        })
    }

    fn open(
        &self,
        run: &RunInfo,
        partition: &PartitionInfo,
        schema: SchemaRef,
    ) -> Result<Box<dyn PartitionWriter>> {
        let cols = self
            .columns
            .get()
            .ok_or_else(|| Error::Internal("postgres sink opened before prepare".into()))?
            .clone();
        let url = self.url().clone();
        let t = &self.target;
        let names: Vec<String> = cols
            .iter()
            .map(|c| Ident(c.name.clone()).quoted(Q))
            .collect();
        let list = names.join(", ");
        let upsert = t.mode == DbMode::Upsert;
        let (client, sink) = self.io.block_on(async {
            let client = connect(&url).await?;
            client
                .batch_execute("BEGIN")
                .await
                .map_err(|e| err(&url, "starting a transaction", &e))?;
            let into = if upsert {
                client
                    .batch_execute(&format!(
                        "CREATE TEMP TABLE _tidex_stage ON COMMIT DROP AS SELECT {list} FROM {} WITH NO DATA",
                        t.table.quoted(Q)
                    ))
                    .await
                    .map_err(|e| err(&url, "creating the upsert staging table", &e))?;
                "_tidex_stage".to_string()
            } else {
                t.table.quoted(Q)
            };
            let mut sink = Box::pin(
                client
                    .copy_in::<_, Bytes>(&format!("COPY {into} ({list}) FROM STDIN (FORMAT binary)"))
                    .await
                    .map_err(|e| err(&url, &format!("writing {}", t.table), &e))?,
            );
            let mut header = Vec::with_capacity(19);
            header.extend_from_slice(b"PGCOPY\n\xff\r\n\0");
            header.extend(0i32.to_be_bytes());
            header.extend(0i32.to_be_bytes());
            sink.send(Bytes::from(header))
                .await
                .map_err(|e| err(&url, &format!("writing {}", t.table), &e))?;
            Ok::<_, Error>((client, sink))
        })?;
        let upsert_sql = upsert.then(|| {
            let keys: Vec<String> = t.key.iter().map(|k| k.quoted(Q)).collect();
            let updates: Vec<String> = names
                .iter()
                .filter(|n| !keys.contains(n))
                .map(|n| format!("{n} = EXCLUDED.{n}"))
                .collect();
            format!(
                "INSERT INTO {} ({list}) SELECT {list} FROM _tidex_stage ON CONFLICT ({}) DO {}",
                t.table.quoted(Q),
                keys.join(", "),
                if updates.is_empty() {
                    "NOTHING".to_string()
                } else {
                    format!("UPDATE SET {}", updates.join(", "))
                }
            )
        });
        let _ = schema;
        Ok(Box::new(PgWriter {
            url,
            io: self.io.clone(),
            client: Some(client),
            sink: Some(sink),
            cols,
            upsert_sql,
            marker: self.marker(),
            job: run.job.clone(),
            run_id: run.run_id,
            index: partition.index,
            label: partition.label.clone(),
            table: t.table.to_string(),
            rows: 0,
            bytes: 0,
            buf: Vec::new(),
        }))
    }

    fn publish(
        &self,
        run: &RunInfo,
        schema: &SchemaRef,
        parts: &[CommittedPart],
        journal: &dyn PublishJournal,
    ) -> Result<String> {
        let _ = (run, schema, journal);
        let rows: u64 = parts.iter().map(|p| p.rows).sum();
        Ok(format!(
            "{} table {} ({rows} rows {})",
            redact(self.url()),
            self.target.table,
            match self.target.mode {
                DbMode::Append => "appended",
                DbMode::TruncateInsert => "after truncate",
                DbMode::Upsert => "upserted",
            }
        ))
    }

    fn discard(&self, run_id: i64) -> Result<()> {
        let url = self.url();
        let marker = self.marker();
        if self.target.mode == DbMode::Append {
            tracing::warn!(
                "{KIND}: partitions the discarded run {run_id} committed stay in {} (append mode)",
                self.target.table
            );
        }
        self.io.block_on(async {
            let client = connect(url).await?;
            let exists = relation_exists(&client, url, &marker).await?;
            if exists {
                client
                    .execute(
                        &format!("DELETE FROM {marker} WHERE run_id = $1"),
                        &[&run_id],
                    )
                    .await
                    .map_err(|e| err(url, "clearing commit markers", &e))?;
            }
            Ok(())
        })
    }

    fn describe(&self) -> String {
        format!("{} table {}", redact(self.url()), self.target.table)
    }
}

fn quote_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

struct PgWriter {
    url: url::Url,
    io: tokio::runtime::Handle,
    client: Option<Client>,
    sink: Option<Pin<Box<CopyInSink<Bytes>>>>,
    cols: Vec<PgColumn>,
    upsert_sql: Option<String>,
    marker: String,
    job: String,
    run_id: i64,
    index: usize,
    label: String,
    table: String,
    rows: u64,
    bytes: u64,
    buf: Vec<u8>,
}

impl PartitionWriter for PgWriter {
    fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        let encs = batch
            .columns()
            .iter()
            .zip(&self.cols)
            .map(|(a, c)| {
                encode::encoder(a, c).map_err(|e| {
                    Error::Config(format!(
                        "{KIND}: column `{}` of {} ({}): {e}",
                        c.name, self.table, c.type_name
                    ))
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let ncols = (encs.len() as i16).to_be_bytes();
        let url = &self.url;
        let sink = self.sink.as_mut().expect("open");
        let buf = &mut self.buf;
        let io = &self.io;
        let mut send = |buf: &mut Vec<u8>| -> Result<()> {
            let chunk = Bytes::from(std::mem::take(buf));
            io.block_on(sink.send(chunk))
                .map_err(|e| err(url, "writing", &e))
        };
        for row in 0..batch.num_rows() {
            buf.extend_from_slice(&ncols);
            for (c, enc) in encs.iter().enumerate() {
                enc.write(row, buf).map_err(|e| {
                    Error::bad_data(
                        Location {
                            file: self.label.clone(),
                            row: Some(self.rows + row as u64 + 1),
                            byte_offset: None,
                            column: Some(self.cols[c].name.clone()),
                        },
                        format!("cannot be written to {}: {e}", self.table),
                    )
                })?;
            }
            if buf.len() >= 1 << 20 {
                self.bytes += buf.len() as u64;
                send(buf)?;
            }
        }
        if !buf.is_empty() {
            self.bytes += buf.len() as u64;
            send(buf)?;
        }
        self.rows += batch.num_rows() as u64;
        Ok(())
    }

    fn commit(mut self: Box<Self>) -> Result<CommittedPart> {
        let url = self.url.clone();
        let mut sink = self.sink.take().expect("open");
        let client = self.client.take().expect("open");
        let marker = self.marker.clone();
        let (job, run_id, index, rows) = (self.job.clone(), self.run_id, self.index, self.rows);
        let upsert = self.upsert_sql.clone();
        let table = self.table.clone();
        self.io.block_on(async move {
            sink.as_mut()
                .send(Bytes::from_static(b"\xff\xff"))
                .await
                .map_err(|e| err(&url, "writing", &e))?;
            let copied = sink
                .as_mut()
                .finish()
                .await
                .map_err(|e| err(&url, &format!("writing {table}"), &e))?;
            if copied != rows {
                return Err(Error::Internal(format!(
                    "{KIND}: COPY stored {copied} rows of {rows}"
                )));
            }
            if let Some(sql) = upsert {
                client
                    .batch_execute(&sql)
                    .await
                    .map_err(|e| err(&url, &format!("upserting into {table}"), &e))?;
            }
            client
                .execute(
                    &format!(
                        "INSERT INTO {marker} (job, run_id, part, rows) VALUES ($1, $2, $3, $4)"
                    ),
                    &[&job, &run_id, &(index as i32), &(rows as i64)],
                )
                .await
                .map_err(|e| err(&url, "recording the commit marker", &e))?;
            client
                .batch_execute("COMMIT")
                .await
                .map_err(|e| err(&url, &format!("committing to {table}"), &e))?;
            Ok(())
        })?;
        Ok(committed_part(&self.table, index, rows, self.bytes))
    }

    fn abort(mut self: Box<Self>) {
        // Dropping the COPY sink without finishing it aborts the COPY; the
        // transaction is rolled back when the connection closes.
        self.sink = None;
        if let Some(client) = self.client.take() {
            let _ = self.io.block_on(client.batch_execute("ROLLBACK"));
        }
    }
}

impl Drop for PgWriter {
    fn drop(&mut self) {
        self.sink = None;
        self.client = None;
    }
}
