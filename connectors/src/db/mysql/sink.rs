//! The MySQL sink: creates the table from the Arrow schema when missing,
//! writes each partition in its own InnoDB transaction with multi-row
//! prepared INSERTs (or `INSERT … ON DUPLICATE KEY UPDATE` for upserts),
//! and commits the partition's marker row in `_tidex_commits` in that same
//! transaction. A resumed run asks the marker table which partitions the
//! database already holds, so none is written twice.

use super::types::{self, Prepared};
use super::{qualified, server_error_code, Endpoint, KIND};
use crate::db::{committed_part, DbMode, DbSinkConfig, Dialect, Ident, TableName, MARKER_TABLE};
use arrow::datatypes::{FieldRef, SchemaRef};
use arrow::record_batch::RecordBatch;
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Params, Value};
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use tidex_engine::{
    BuildContext, CommittedPart, ConnectorConfig, Error, PartitionInfo, PartitionWriter,
    PublishJournal, Result, RunInfo, Sink, SinkFactory, SpecError,
};

/// MySQL's limit on placeholders in one statement is 65535; stay below.
const MAX_PLACEHOLDERS: usize = 60_000;
/// Rows per INSERT at most.
const MAX_ROWS: usize = 1000;
/// Parameter bytes per INSERT to aim for, well under max_allowed_packet.
const TARGET_BYTES: usize = 4 << 20;
/// "Table doesn't exist".
const ER_NO_SUCH_TABLE: u16 = 1146;

/// Registers `[sink] type = "mysql"`.
pub struct MysqlSinkFactory;

impl SinkFactory for MysqlSinkFactory {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn validate(&self, cfg: &ConnectorConfig) -> Result<(), SpecError> {
        let c: DbSinkConfig = cfg.parse()?;
        let t = c.resolve(cfg)?;
        Endpoint::new(cfg, &t.conn).map(|_| ())
    }

    fn build(&self, cfg: &ConnectorConfig, ctx: &BuildContext) -> Result<Arc<dyn Sink>> {
        let c: DbSinkConfig = cfg.parse()?;
        let t = c.resolve(cfg)?;
        let ep = Endpoint::new(cfg, &t.conn)?;
        let db = ep.database_of(&t.table)?;
        let table = qualified(&db, &t.table);
        let markers = TableName {
            schema: Some(db.clone()),
            name: Ident(MARKER_TABLE.into()),
        };
        Ok(Arc::new(MysqlSink {
            ep,
            io: ctx.io.clone(),
            job: ctx.job.clone(),
            db,
            table,
            markers,
            mode: t.mode,
            key: t.key,
            create: t.create,
        }))
    }
}

/// A MySQL table as a sink.
pub struct MysqlSink {
    ep: Endpoint,
    io: tokio::runtime::Handle,
    job: String,
    db: Ident,
    table: TableName,
    markers: TableName,
    mode: DbMode,
    key: Vec<Ident>,
    create: bool,
}

impl MysqlSink {
    fn q(&self) -> String {
        self.table.quoted(Dialect::Mysql)
    }

    fn m(&self) -> String {
        self.markers.quoted(Dialect::Mysql)
    }

    fn exec(&self, conn: &mut Conn, what: &str, sql: &str, params: Params) -> Result<()> {
        self.io
            .block_on(conn.exec_drop(sql, params))
            .map_err(|e| self.ep.error(what, e))
    }

    fn with_conn<T>(&self, f: impl FnOnce(&mut Conn) -> Result<T>) -> Result<T> {
        let mut conn = self.ep.connect(&self.io)?;
        let out = f(&mut conn);
        let _ = self.io.block_on(conn.disconnect());
        out
    }

    /// The target's columns, lower-cased; `None` when it does not exist.
    fn existing_columns(&self, conn: &mut Conn) -> Result<Option<BTreeSet<String>>> {
        let cols: Vec<String> = self
            .io
            .block_on(conn.exec(
                "SELECT COLUMN_NAME FROM information_schema.COLUMNS \
                 WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ?",
                (self.db.0.as_str(), self.table.name.0.as_str()),
            ))
            .map_err(|e| {
                self.ep
                    .error(&format!("looking up table {}", self.table), e)
            })?;
        Ok((!cols.is_empty()).then(|| cols.iter().map(|c| c.to_lowercase()).collect()))
    }

    fn create_table(&self, conn: &mut Conn, schema: &SchemaRef) -> Result<()> {
        let keys: BTreeSet<String> = self.key.iter().map(|k| k.0.to_lowercase()).collect();
        let mut defs = Vec::new();
        for f in schema.fields() {
            let is_key = keys.contains(&f.name().to_lowercase());
            let ty = types::sql_type(f, is_key).map_err(|e| {
                Error::Config(format!(
                    "{KIND} ({}): cannot create table {}: column `{}`: {e}",
                    self.ep.redacted(),
                    self.table,
                    f.name()
                ))
            })?;
            let null = if is_key { " NOT NULL" } else { "" };
            defs.push(format!(
                "{} {ty}{null}",
                Ident(f.name().clone()).quoted(Dialect::Mysql)
            ));
        }
        if !self.key.is_empty() {
            defs.push(format!(
                "PRIMARY KEY ({})",
                self.key
                    .iter()
                    .map(|k| k.quoted(Dialect::Mysql))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        let collation = self.binary_collation(conn)?;
        let sql = format!(
            "CREATE TABLE IF NOT EXISTS {} ({}) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE={collation}",
            self.q(),
            defs.join(", ")
        );
        self.exec(
            conn,
            &format!("creating table {}", self.table),
            &sql,
            Params::Empty,
        )
    }

    /// A binary collation without trailing-space padding where the server
    /// has one, so keys that differ in case or trailing spaces stay apart.
    fn binary_collation(&self, conn: &mut Conn) -> Result<&'static str> {
        let version: String = self
            .io
            .block_on(conn.query_first("SELECT VERSION()"))
            .map_err(|e| self.ep.error("asking the server version", e))?
            .unwrap_or_default();
        let major: u32 = version
            .split('.')
            .next()
            .and_then(|m| m.parse().ok())
            .unwrap_or(0);
        Ok(if version.contains("MariaDB") {
            "utf8mb4_nopad_bin"
        } else if major >= 8 {
            "utf8mb4_0900_bin"
        } else {
            "utf8mb4_bin"
        })
    }

    /// Upserts need a unique index on exactly the key columns, or every
    /// row would simply be appended.
    fn check_upsert_key(&self, conn: &mut Conn) -> Result<()> {
        let rows: Vec<(String, String)> = self
            .io
            .block_on(conn.exec(
                "SELECT INDEX_NAME, COLUMN_NAME FROM information_schema.STATISTICS \
                 WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? AND NON_UNIQUE = 0",
                (self.db.0.as_str(), self.table.name.0.as_str()),
            ))
            .map_err(|e| {
                self.ep
                    .error(&format!("looking up the keys of {}", self.table), e)
            })?;
        let mut indexes: HashMap<String, BTreeSet<String>> = HashMap::new();
        for (index, col) in rows {
            indexes.entry(index).or_default().insert(col.to_lowercase());
        }
        let want: BTreeSet<String> = self.key.iter().map(|k| k.0.to_lowercase()).collect();
        if indexes.values().any(|cols| *cols == want) {
            return Ok(());
        }
        Err(Error::Config(format!(
            "{KIND} ({}): upsert into {} on key ({}) needs a PRIMARY KEY or UNIQUE index on exactly those columns",
            self.ep.redacted(),
            self.table,
            self.key
                .iter()
                .map(|k| k.0.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )))
    }

    fn marker_count(&self, conn: &mut Conn, run: &RunInfo) -> Result<u64> {
        let n: Option<u64> = self
            .io
            .block_on(conn.exec_first(
                format!(
                    "SELECT COUNT(*) FROM {} WHERE job = ? AND run_id = ?",
                    self.m()
                ),
                (run.job.as_str(), run.run_id),
            ))
            .map_err(|e| self.ep.error("reading commit markers", e))?;
        Ok(n.unwrap_or(0))
    }
}

impl Sink for MysqlSink {
    fn prepare(
        &self,
        run: &RunInfo,
        schema: &SchemaRef,
        committed: &[CommittedPart],
    ) -> Result<()> {
        self.with_conn(|conn| {
            let names: BTreeSet<String> = schema
                .fields()
                .iter()
                .map(|f| f.name().to_lowercase())
                .collect();
            let missing_keys: Vec<&str> = self
                .key
                .iter()
                .filter(|k| !names.contains(&k.0.to_lowercase()))
                .map(|k| k.0.as_str())
                .collect();
            if !missing_keys.is_empty() {
                return Err(Error::Config(format!(
                    "{KIND} ({}): key column(s) {} are not in the incoming data",
                    self.ep.redacted(),
                    missing_keys.join(", ")
                )));
            }
            match self.existing_columns(conn)? {
                None if self.create => self.create_table(conn, schema)?,
                None => {
                    return Err(Error::Config(format!(
                        "{KIND} ({}): table {} does not exist and create = false",
                        self.ep.redacted(),
                        self.table
                    )))
                }
                Some(existing) => {
                    let missing: Vec<&str> = schema
                        .fields()
                        .iter()
                        .filter(|f| !existing.contains(&f.name().to_lowercase()))
                        .map(|f| f.name().as_str())
                        .collect();
                    if !missing.is_empty() {
                        return Err(Error::Config(format!(
                            "{KIND} ({}): table {} has no column(s) {}, which the incoming data has",
                            self.ep.redacted(),
                            self.table,
                            missing.join(", ")
                        )));
                    }
                }
            }
            if self.mode == DbMode::Upsert {
                self.check_upsert_key(conn)?;
            }
            self.exec(
                conn,
                "creating the commit marker table",
                &format!(
                    "CREATE TABLE IF NOT EXISTS {} (job VARCHAR(200) NOT NULL, run_id BIGINT NOT NULL, \
                     part INT NOT NULL, `rows` BIGINT NOT NULL, PRIMARY KEY (job, run_id, part)) \
                     ENGINE=InnoDB DEFAULT CHARSET=utf8mb4",
                    self.m()
                ),
                Params::Empty,
            )?;
            let delete_job = format!("DELETE FROM {} WHERE job = ?", self.m());
            if !run.resumed {
                self.exec(
                    conn,
                    "clearing old commit markers",
                    &delete_job,
                    Params::Positional(vec![run.job.as_str().into()]),
                )?;
            }
            if self.mode == DbMode::TruncateInsert
                && committed.is_empty()
                && self.marker_count(conn, run)? == 0
            {
                // TRUNCATE commits on its own; that is safe because it is
                // repeated on resume for as long as no partition committed.
                self.exec(
                    conn,
                    &format!("emptying table {}", self.table),
                    &format!("TRUNCATE TABLE {}", self.q()),
                    Params::Empty,
                )?;
                self.exec(
                    conn,
                    "clearing old commit markers",
                    &delete_job,
                    Params::Positional(vec![run.job.as_str().into()]),
                )?;
            }
            Ok(())
        })
    }

    fn committed_at_target(&self, run: &RunInfo) -> Result<Vec<CommittedPart>> {
        self.with_conn(|conn| {
            let rows: std::result::Result<Vec<(i64, i64)>, _> = self.io.block_on(conn.exec(
                format!(
                    "SELECT part, `rows` FROM {} WHERE job = ? AND run_id = ? ORDER BY part",
                    self.m()
                ),
                (run.job.as_str(), run.run_id),
            ));
            let rows = match rows {
                Ok(r) => r,
                Err(e) if server_error_code(&e) == Some(ER_NO_SUCH_TABLE) => Vec::new(),
                Err(e) => return Err(self.ep.error("reading commit markers", e)),
            };
            Ok(rows
                .into_iter()
                .map(|(part, rows)| committed_part(&self.table, part as usize, rows as u64, 0))
                .collect())
        })
    }

    fn open(
        &self,
        run: &RunInfo,
        partition: &PartitionInfo,
        schema: SchemaRef,
    ) -> Result<Box<dyn PartitionWriter>> {
        let mut conn = self.ep.connect(&self.io)?;
        self.io
            .block_on(conn.query_drop("START TRANSACTION"))
            .map_err(|e| self.ep.error("starting a transaction", e))?;
        let fields: Vec<FieldRef> = schema.fields().iter().cloned().collect();
        let cols: Vec<String> = fields
            .iter()
            .map(|f| Ident(f.name().clone()).quoted(Dialect::Mysql))
            .collect();
        let head = format!("INSERT INTO {} ({}) VALUES ", self.q(), cols.join(", "));
        let tail = if self.mode == DbMode::Upsert {
            let keys: BTreeSet<String> = self.key.iter().map(|k| k.0.to_lowercase()).collect();
            let mut updates: Vec<String> = fields
                .iter()
                .zip(&cols)
                .filter(|(f, _)| !keys.contains(&f.name().to_lowercase()))
                .map(|(_, c)| format!("{c} = VALUES({c})"))
                .collect();
            if updates.is_empty() {
                // Only key columns: a duplicate changes nothing.
                updates.push(format!("{c} = {c}", c = cols[0]));
            }
            format!(" ON DUPLICATE KEY UPDATE {}", updates.join(", "))
        } else {
            String::new()
        };
        let row = format!("({})", vec!["?"; fields.len()].join(","));
        let max_rows = pow2_floor(MAX_ROWS.min(MAX_PLACEHOLDERS / fields.len().max(1)).max(1));
        Ok(Box::new(MysqlWriter {
            conn: Some(conn),
            io: self.io.clone(),
            ep: self.ep.clone(),
            table: self.table.clone(),
            markers: self.m(),
            job: run.job.clone(),
            run_id: run.run_id,
            index: partition.index,
            uuid: types::uuid_columns(&fields),
            fields,
            head,
            tail,
            row,
            chunk: max_rows,
            sql: HashMap::new(),
            rows: 0,
            bytes: 0,
        }))
    }

    fn publish(
        &self,
        _run: &RunInfo,
        _schema: &SchemaRef,
        _parts: &[CommittedPart],
        _journal: &dyn PublishJournal,
    ) -> Result<String> {
        // Every partition is already committed in the table.
        Ok(self.describe())
    }

    fn discard(&self, run_id: i64) -> Result<()> {
        self.with_conn(|conn| {
            let n: std::result::Result<Option<u64>, _> = self.io.block_on(conn.exec_first(
                format!("SELECT COUNT(*) FROM {} WHERE job = ? AND run_id = ?", self.m()),
                (self.job.as_str(), run_id),
            ));
            let n = match n {
                Ok(n) => n.unwrap_or(0),
                Err(e) if server_error_code(&e) == Some(ER_NO_SUCH_TABLE) => return Ok(()),
                Err(e) => return Err(self.ep.error("reading commit markers", e)),
            };
            if n > 0 {
                tracing::warn!(
                    table = %self.table,
                    run = run_id,
                    partitions = n,
                    "discarding run {run_id}: the rows its {n} committed partition(s) wrote stay in {}",
                    self.table
                );
            }
            self.exec(
                conn,
                "clearing commit markers",
                &format!("DELETE FROM {} WHERE job = ? AND run_id = ?", self.m()),
                Params::Positional(vec![self.job.as_str().into(), run_id.into()]),
            )
        })
    }

    fn describe(&self) -> String {
        format!(
            "{} table {}",
            self.ep.redacted(),
            self.ep.table_label(&self.table)
        )
    }
}

fn pow2_floor(n: usize) -> usize {
    1 << (usize::BITS - 1 - n.max(1).leading_zeros())
}

/// Writes one partition in one transaction.
struct MysqlWriter {
    conn: Option<Conn>,
    io: tokio::runtime::Handle,
    ep: Endpoint,
    table: TableName,
    markers: String,
    job: String,
    run_id: i64,
    index: usize,
    fields: Vec<FieldRef>,
    uuid: Vec<bool>,
    head: String,
    tail: String,
    /// `(?,?,…)`: one row's placeholders.
    row: String,
    /// Rows per INSERT: a power of two under the row and placeholder
    /// limits, lowered when rows are so wide that a statement would pass
    /// [`TARGET_BYTES`].
    chunk: usize,
    /// INSERT statements by row count (powers of two, so only a few are
    /// ever prepared; the driver caches them by text).
    sql: HashMap<usize, String>,
    rows: u64,
    bytes: u64,
}

impl MysqlWriter {
    fn sql_for(&mut self, n: usize) -> String {
        self.sql
            .entry(n)
            .or_insert_with(|| {
                let mut s = String::with_capacity(
                    self.head.len() + n * (self.row.len() + 1) + self.tail.len(),
                );
                s.push_str(&self.head);
                for i in 0..n {
                    if i > 0 {
                        s.push(',');
                    }
                    s.push_str(&self.row);
                }
                s.push_str(&self.tail);
                s
            })
            .clone()
    }

    fn insert(&mut self, n: usize, params: Vec<Value>) -> Result<()> {
        let sql = self.sql_for(n);
        let conn = self
            .conn
            .as_mut()
            .ok_or_else(|| Error::Internal("writer used after commit".into()))?;
        self.io
            .block_on(conn.exec_drop(sql, Params::Positional(params)))
            .map_err(|e| {
                self.ep.error(
                    &format!("writing to {} (partition {})", self.table, self.index),
                    e,
                )
            })
    }
}

impl PartitionWriter for MysqlWriter {
    fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        let (url, table) = (self.ep.redacted(), self.table.to_string());
        let bad = |e: String| Error::Config(format!("{KIND} ({url}): {table}: {e}"));
        let prepared = Prepared::new(&self.fields, batch.columns()).map_err(bad)?;
        let mut cols = prepared.cols().map_err(bad)?;
        let total = batch.num_rows();
        let ncols = self.fields.len();
        let mut sizes = Vec::with_capacity(self.chunk);
        let mut start = 0;
        while start < total {
            let left = total - start;
            // Full chunks, then the remainder in powers of two.
            let mut n = if left >= self.chunk {
                self.chunk
            } else {
                pow2_floor(left)
            };
            let mut params = Vec::with_capacity(n * ncols);
            sizes.clear();
            let mut bytes = 0;
            for r in start..start + n {
                let size = cols.push_row(r, &self.uuid, &mut params).map_err(bad)?;
                sizes.push(size);
                bytes += size as usize;
                if bytes > TARGET_BYTES && sizes.len() < n {
                    // Wide rows: send what fits and use smaller statements
                    // from now on.
                    n = pow2_floor(sizes.len());
                    self.chunk = n;
                    params.truncate(n * ncols);
                    break;
                }
            }
            self.bytes += sizes[..n].iter().sum::<u64>();
            self.insert(n, params)?;
            start += n;
        }
        self.rows += total as u64;
        Ok(())
    }

    fn commit(mut self: Box<Self>) -> Result<CommittedPart> {
        let mut conn = self
            .conn
            .take()
            .ok_or_else(|| Error::Internal("writer committed twice".into()))?;
        let marker = format!(
            "INSERT INTO {} (job, run_id, part, `rows`) VALUES (?, ?, ?, ?)",
            self.markers
        );
        let res = self.io.block_on(async {
            conn.exec_drop(
                marker,
                (self.job.as_str(), self.run_id, self.index as i64, self.rows),
            )
            .await?;
            conn.query_drop("COMMIT").await
        });
        if let Err(e) = res {
            let _ = self.io.block_on(conn.disconnect());
            return Err(self.ep.error(
                &format!("committing partition {} to {}", self.index, self.table),
                e,
            ));
        }
        let _ = self.io.block_on(conn.disconnect());
        Ok(committed_part(
            &self.table,
            self.index,
            self.rows,
            self.bytes,
        ))
    }

    fn abort(mut self: Box<Self>) {
        if let Some(mut conn) = self.conn.take() {
            let _ = self.io.block_on(async {
                let _ = conn.query_drop("ROLLBACK").await;
                conn.disconnect().await
            });
        }
    }
}
