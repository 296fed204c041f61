//! SQLite source and sink (`type = "sqlite"`, `sqlite://path.db?table=t`).
//!
//! The source reads a table or a query, split into integer key ranges that
//! are each read on their own read-only connection and streamed into Arrow
//! batches ([`source`]). The sink creates the table when missing and writes
//! each partition in one transaction that also records the partition in
//! `_tidex_commits`, so a resumed run never delivers it twice ([`sink`]).
//! Declared types and value conversions live in [`types`].

mod sink;
mod source;
mod types;

use std::path::PathBuf;
use std::time::Duration;
use tidex_engine::{ConnectorConfig, Error, Registry, SpecError};

/// Registers the sqlite source and sink.
pub fn register(r: &mut Registry) {
    r.register_source(source::SqliteSourceFactory);
    r.register_sink(sink::SqliteSinkFactory);
}

/// How long a connection waits for another writer's lock. The sink's own
/// partitions take turns in-process, so this only covers other programs.
const BUSY_TIMEOUT: Duration = Duration::from_secs(60);

/// The database file a `sqlite://` URL names.
#[derive(Debug, Clone)]
pub(crate) struct DbFile {
    /// The path to open.
    path: PathBuf,
    /// The path as written in the URL, for messages and labels.
    shown: String,
}

impl DbFile {
    /// The file of `sqlite://relative/path.db?…` or `sqlite:///abs/path.db?…`,
    /// taken from the URL text as written: `url::Url` would percent-encode
    /// the path and add a leading `/` to a relative one.
    fn from_url(cfg: &ConnectorConfig, url: &str) -> Result<DbFile, SpecError> {
        let rest = url
            .get(..9)
            .filter(|s| s.eq_ignore_ascii_case("sqlite://"))
            .map(|_| &url[9..])
            .ok_or_else(|| {
                cfg.error(
                    "url",
                    "expected sqlite://relative/path.db or sqlite:///absolute/path.db",
                )
            })?;
        let shown = rest.split_once('?').map_or(rest, |(p, _)| p);
        if shown.is_empty() || shown.ends_with('/') {
            return Err(cfg.error("url", "names no database file"));
        }
        Ok(DbFile {
            path: PathBuf::from(shown),
            shown: shown.to_string(),
        })
    }

    /// `sqlite://path`, for descriptions.
    fn url(&self) -> String {
        format!("sqlite://{}", self.shown)
    }

    /// A driver error while doing `what` on this database.
    fn error(&self, what: impl std::fmt::Display, e: rusqlite::Error) -> Error {
        Error::io(format!("sqlite ({}): {what}", self.shown), e)
    }

    /// A configuration problem found at this database (a missing table or
    /// column).
    fn config(&self, what: impl std::fmt::Display) -> Error {
        Error::Config(format!("sqlite ({}): {what}", self.shown))
    }

    /// Opens the existing database read-only, so a mistyped path is an
    /// error naming it instead of a new empty database.
    fn open_read(&self) -> Result<rusqlite::Connection, Error> {
        use rusqlite::OpenFlags;
        if !self.path.is_file() {
            return Err(Error::Config(format!(
                "sqlite: no such database file: {}",
                self.shown
            )));
        }
        let conn = rusqlite::Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| self.error("opening the database", e))?;
        self.configure(&conn)?;
        Ok(conn)
    }

    /// Opens the database for writing; `create` makes a missing file.
    fn open_write(&self, create: bool) -> Result<rusqlite::Connection, Error> {
        use rusqlite::OpenFlags;
        let mut flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        if create {
            flags |= OpenFlags::SQLITE_OPEN_CREATE;
        } else if !self.path.is_file() {
            return Err(Error::Config(format!(
                "sqlite: no such database file: {}",
                self.shown
            )));
        }
        let conn = rusqlite::Connection::open_with_flags(&self.path, flags)
            .map_err(|e| self.error("opening the database", e))?;
        self.configure(&conn)?;
        Ok(conn)
    }

    fn configure(&self, conn: &rusqlite::Connection) -> Result<(), Error> {
        conn.busy_timeout(BUSY_TIMEOUT)
            .map_err(|e| self.error("setting the busy timeout", e))?;
        // Reading the schema fails here, with the path, when the file is
        // not a database at all.
        conn.query_row("PRAGMA schema_version", [], |r| r.get::<_, i64>(0))
            .map_err(|e| self.error("reading the schema", e))?;
        Ok(())
    }
}

/// A column of a table, from `pragma_table_xinfo`.
#[derive(Debug, Clone)]
struct TableColumn {
    name: String,
    decl: String,
    /// Position in the primary key (1-based), 0 when not part of it.
    pk: i64,
    /// 1 for hidden columns of virtual tables, which `SELECT *` skips.
    hidden: i64,
}

/// The columns of `table` (empty when there is no such table or view).
fn table_columns(
    conn: &rusqlite::Connection,
    table: &crate::db::TableName,
) -> rusqlite::Result<Vec<TableColumn>> {
    let map = |r: &rusqlite::Row<'_>| {
        Ok(TableColumn {
            name: r.get(0)?,
            decl: r.get::<_, Option<String>>(1)?.unwrap_or_default(),
            pk: r.get(2)?,
            hidden: r.get(3)?,
        })
    };
    match &table.schema {
        Some(schema) => conn
            .prepare("SELECT name, type, pk, hidden FROM pragma_table_xinfo(?1, ?2)")?
            .query_map([&table.name.0, &schema.0], map)?
            .collect(),
        None => conn
            .prepare("SELECT name, type, pk, hidden FROM pragma_table_xinfo(?1)")?
            .query_map([&table.name.0], map)?
            .collect(),
    }
}

/// The quoted name of the marker table beside `table`.
fn marker_table(table: &crate::db::TableName) -> String {
    use crate::db::{Dialect, Ident, MARKER_TABLE};
    crate::db::TableName {
        schema: table.schema.clone(),
        name: Ident(MARKER_TABLE.to_string()),
    }
    .quoted(Dialect::Ansi)
}

#[cfg(test)]
mod tests {
    use arrow::array::{AsArray, Int64Array, RecordBatch, StringArray};
    use arrow::datatypes::{DataType, Field, Int64Type, Schema};
    use std::sync::Arc;
    use tidex_engine::dirty::{ErrorBudget, Rejects};
    use tidex_engine::spec::{ErrorsSection, Policy};
    use tidex_engine::{BuildContext, JobSpec, RunInfo, SourceState};

    fn ctx(rt: &tokio::runtime::Runtime, state: SourceState) -> BuildContext {
        BuildContext {
            io: rt.handle().clone(),
            batch_rows: 3,
            policy: Policy::Fail,
            parallelism: 1,
            job: "j".into(),
            source_state: state,
        }
    }

    fn spec(dir: &std::path::Path, source: &str, sink: &str) -> JobSpec {
        let d = dir.display();
        JobSpec::parse(&format!(
            "[job]\nname = \"j\"\n[source]\ntype = \"sqlite\"\nurl = \"sqlite://{d}/src.db\"\n{source}\n[sink]\ntype = \"sqlite\"\nurl = \"sqlite://{d}/dst.db\"\ntable = \"out\"\n{sink}\n"
        ))
        .unwrap()
    }

    fn run(job: &str, run_id: i64, resumed: bool) -> RunInfo {
        RunInfo {
            job: job.into(),
            run_id,
            resumed,
            partitions: 2,
        }
    }

    fn batch(ids: &[i64]) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, true),
            Field::new("name", DataType::Utf8, true),
        ]));
        let names: Vec<String> = ids.iter().map(|i| format!("n{i}")).collect();
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from(ids.to_vec())),
                Arc::new(StringArray::from(names)),
            ],
        )
        .unwrap()
    }

    fn count(path: &std::path::Path, sql: &str) -> i64 {
        rusqlite::Connection::open(path)
            .unwrap()
            .query_row(sql, [], |r| r.get(0))
            .unwrap()
    }

    #[test]
    fn sink_commits_markers_with_rows_and_finds_them_on_resume() {
        let dir = tempfile::tempdir().unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let reg = crate::registry();
        let spec = spec(dir.path(), "table = \"t\"", "mode = \"truncate-insert\"");
        let sink = reg
            .build_sink(&spec, &ctx(&rt, SourceState::default()))
            .unwrap();
        let b = batch(&[1, 2, 3]);
        let r = run("j", 7, false);
        sink.prepare(&r, &b.schema(), &[]).unwrap();
        let p0 = tidex_engine::PartitionInfo {
            index: 0,
            label: "a".into(),
            bytes: 0,
        };
        let p1 = tidex_engine::PartitionInfo {
            index: 1,
            label: "b".into(),
            bytes: 0,
        };
        let mut w = sink.open(&r, &p0, b.schema()).unwrap();
        w.write(&b).unwrap();
        let part = w.commit().unwrap();
        assert_eq!((part.rows, part.location.as_str()), (3, "out#0"));
        let mut w = sink.open(&r, &p1, b.schema()).unwrap();
        w.write(&batch(&[4, 5])).unwrap();
        w.abort();
        let dst = dir.path().join("dst.db");
        assert_eq!(count(&dst, "SELECT count(*) FROM out"), 3);
        // The process "died" before the state store recorded partition 0.
        let resumed = run("j", 7, true);
        let found = sink.committed_at_target(&resumed).unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!((found[0].index, found[0].rows), (0, 3));
        // Resuming with that part committed must not empty the table.
        sink.prepare(&resumed, &b.schema(), &found).unwrap();
        assert_eq!(count(&dst, "SELECT count(*) FROM out"), 3);
        // A new run of the job truncates and forgets the old markers.
        sink.prepare(&run("j", 8, false), &b.schema(), &[]).unwrap();
        assert_eq!(count(&dst, "SELECT count(*) FROM out"), 0);
        assert_eq!(count(&dst, "SELECT count(*) FROM _tidex_commits"), 0);
        assert!(sink.committed_at_target(&resumed).unwrap().is_empty());
        sink.discard(8).unwrap();
    }

    #[test]
    fn source_plans_ranges_and_reuses_an_interrupted_plan() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src.db");
        let c = rusqlite::Connection::open(&src).unwrap();
        c.execute_batch(
            "CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT);
             WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 10)
             INSERT INTO t SELECT i, 'n' || i FROM n;",
        )
        .unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let reg = crate::registry();
        let spec = spec(dir.path(), "table = \"t\"\npartitions = 3", "");
        let source = reg
            .build_source(&spec, &ctx(&rt, SourceState::default()))
            .unwrap();
        let labels: Vec<&str> = source
            .partitions()
            .iter()
            .map(|p| p.label.as_str())
            .collect();
        assert!(labels[0].ends_with("src.db:t[id 1..=3]"), "{labels:?}");
        assert_eq!(labels.len(), 3);
        let budget = Arc::new(ErrorBudget::new(&ErrorsSection::default(), 0));
        let mut ids = Vec::new();
        for p in 0..3 {
            let mut rejects = Rejects::new(budget.clone(), "j", 1, p);
            let mut reader = source.open(p).unwrap();
            while let Some(b) = reader.next_batch(&mut rejects).unwrap() {
                assert!(b.num_rows() <= 3);
                let col = b.column(0).as_primitive::<Int64Type>();
                ids.extend((0..col.len()).map(|i| col.value(i)));
            }
            assert!(reader.bytes_read() > 0);
        }
        assert_eq!(ids, (1..=10).collect::<Vec<_>>());
        // Rows added after the plan: a resumed run keeps the old plan.
        c.execute("INSERT INTO t VALUES (100, 'late')", []).unwrap();
        let state = SourceState {
            previous: None,
            interrupted: source.state(),
        };
        let again = reg.build_source(&spec, &ctx(&rt, state)).unwrap();
        assert_eq!(again.partitions(), source.partitions());
        let fresh = reg
            .build_source(&spec, &ctx(&rt, SourceState::default()))
            .unwrap();
        assert_ne!(fresh.partitions(), source.partitions());
    }

    #[test]
    fn sink_stores_other_arrow_types_as_documented() {
        use arrow::array::{
            Date64Array, DictionaryArray, Float32Array, LargeStringArray, Time32MillisecondArray,
            TimestampSecondArray, UInt64Array,
        };
        use arrow::datatypes::Int32Type;
        let dir = tempfile::tempdir().unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let reg = crate::registry();
        let spec = spec(dir.path(), "table = \"t\"", "");
        let sink = reg
            .build_sink(&spec, &ctx(&rt, SourceState::default()))
            .unwrap();
        let dict: DictionaryArray<Int32Type> = vec!["x", "y"].into_iter().collect();
        let cols: Vec<(&str, arrow::array::ArrayRef)> = vec![
            ("u", Arc::new(UInt64Array::from(vec![Some(7), None]))),
            ("f", Arc::new(Float32Array::from(vec![f32::NAN, 0.5]))),
            (
                "t",
                Arc::new(Time32MillisecondArray::from(vec![3_723_004, 0])),
            ),
            (
                "d",
                Arc::new(Date64Array::from(vec![86_400_000, -86_400_000])),
            ),
            (
                "z",
                Arc::new(TimestampSecondArray::from(vec![0, -1]).with_timezone("+08:00")),
            ),
            ("g", Arc::new(dict)),
            ("l", Arc::new(LargeStringArray::from(vec!["大", ""]))),
        ];
        let b = RecordBatch::try_from_iter(cols).unwrap();
        let r = run("j", 1, false);
        sink.prepare(&r, &b.schema(), &[]).unwrap();
        let p0 = tidex_engine::PartitionInfo {
            index: 0,
            label: "a".into(),
            bytes: 0,
        };
        let mut w = sink.open(&r, &p0, b.schema()).unwrap();
        w.write(&b).unwrap();
        w.commit().unwrap();
        let dst = dir.path().join("dst.db");
        let c = rusqlite::Connection::open(&dst).unwrap();
        let rows: Vec<String> = c
            .prepare("SELECT quote(u), quote(f), t, d, z, g, l FROM out ORDER BY rowid")
            .unwrap()
            .query_map([], |r| {
                Ok((0..7)
                    .map(|i| r.get::<_, Option<String>>(i).unwrap().unwrap_or_default())
                    .collect::<Vec<_>>()
                    .join("|"))
            })
            .unwrap()
            .map(|r| r.unwrap())
            .collect();
        assert_eq!(
            rows,
            [
                "7|'NaN'|01:02:03.004000|1970-01-02|1970-01-01 00:00:00.000000|x|大",
                "NULL|0.5|00:00:00.000000|1969-12-31|1969-12-31 23:59:59.000000|y|",
            ]
        );
        let decl: String = c
            .query_row(
                "SELECT sql FROM sqlite_master WHERE name = 'out'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(
            decl,
            "CREATE TABLE \"out\" (\"u\" INTEGER, \"f\" REAL, \"t\" TIME, \"d\" DATE, \"z\" TIMESTAMP, \"g\" TEXT, \"l\" TEXT)"
        );
        // A value SQLite cannot hold is an error naming the column.
        let big = RecordBatch::try_from_iter(vec![(
            "u",
            Arc::new(UInt64Array::from(vec![u64::MAX])) as arrow::array::ArrayRef,
        )])
        .unwrap();
        let r2 = run("j", 2, false);
        let mut w = sink.open(&r2, &p0, big.schema()).unwrap();
        let e = w.write(&big).unwrap_err().to_string();
        assert!(e.contains("column `u`") && e.contains("64-bit"), "{e}");
        w.abort();
    }
}
