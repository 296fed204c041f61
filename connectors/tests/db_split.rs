//! Database sources split a partition's key range in two (the scheduler
//! splits partitions that lagged), read every row exactly once after the
//! split, and keep the split in the stored plan so a resumed run reads the
//! same partitions. Runs against the local PostgreSQL and MariaDB, and a
//! SQLite file.

use arrow::array::AsArray;
use arrow::datatypes::Int64Type;
use std::process::Command;
use std::sync::Arc;
use tidex_engine::dirty::{ErrorBudget, Rejects};
use tidex_engine::spec::ErrorsSection;
use tidex_engine::{BuildContext, JobSpec, Source, SourceState};

fn sh(program: &str, args: &[&str]) {
    let out = Command::new(program).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn read_ids(s: &dyn Source) -> Vec<i64> {
    let budget = Arc::new(ErrorBudget::new(&ErrorsSection::default(), 0));
    let mut ids = Vec::new();
    for p in 0..s.partitions().len() {
        let mut rejects = Rejects::new(budget.clone(), "split", 1, p);
        let mut reader = s.open(p).unwrap();
        while let Some(b) = reader.next_batch(&mut rejects).unwrap() {
            let col = b.column(0).as_primitive::<Int64Type>();
            ids.extend((0..col.len()).map(|i| col.value(i)));
        }
    }
    ids.sort();
    ids
}

/// The key range `[id LO..=HI]` at the end of a partition label.
fn range(label: &str) -> (i64, i64) {
    let inner = label.rsplit_once("[id ").unwrap().1.trim_end_matches(']');
    let (lo, hi) = inner.split_once("..=").unwrap();
    (lo.parse().unwrap(), hi.parse().unwrap())
}

/// Builds the source, splits its second partition, and checks rows,
/// labels and the resumed plan.
fn check_split(source_section: &str) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let spec = JobSpec::parse(&format!(
        "[job]\nname = \"split\"\n[source]\n{source_section}\npartitions = 3\n[sink]\ntype = \"csv\"\nurl = \"unused.csv\"\n"
    ))
    .unwrap();
    let registry = tidex_connectors::registry();
    let ctx = |state| BuildContext::for_spec(&spec, rt.handle().clone(), state);
    let source = registry
        .build_source(&spec, &ctx(SourceState::default()))
        .unwrap();
    assert_eq!(source.partitions().len(), 3);
    let before = read_ids(source.as_ref());
    assert_eq!(before, (1..=1000).collect::<Vec<_>>());
    let split = source.split(1).expect("a key range splits");
    let labels: Vec<&str> = split
        .partitions()
        .iter()
        .map(|p| p.label.as_str())
        .collect();
    assert_eq!(labels.len(), 4, "{labels:?}");
    let (lo, hi) = range(&source.partitions()[1].label);
    let mid = lo + (hi - lo) / 2;
    assert_eq!(range(labels[1]), (lo, mid), "{labels:?}");
    assert_eq!(range(labels[2]), (mid + 1, hi), "{labels:?}");
    assert_eq!(labels[0], source.partitions()[0].label);
    assert_eq!(labels[3], source.partitions()[2].label);
    assert_eq!(read_ids(split.as_ref()), before, "every row once");
    let resumed = registry
        .build_source(
            &spec,
            &ctx(SourceState {
                previous: None,
                interrupted: split.state(),
            }),
        )
        .unwrap();
    assert_eq!(resumed.partitions(), split.partitions());
    // A single key cannot be split further.
    let mut s: Arc<dyn Source> = split;
    while let Some(next) = s.split(0) {
        s = next;
    }
    assert!(s.partitions()[0].label.ends_with("[id 1..=1]"));
}

#[test]
fn postgres_source_splits_a_key_range_and_reads_every_row_once() {
    let schema = format!("tidex_split_{}", std::process::id());
    let sql = format!(
        "DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema};
         CREATE TABLE {schema}.t (id bigint PRIMARY KEY, name text);
         INSERT INTO {schema}.t SELECT i, 'n' || i FROM generate_series(1, 1000) i;"
    );
    let psql = |sql: &str| {
        sh(
            "psql",
            &[
                "-h",
                "127.0.0.1",
                "-U",
                "postgres",
                "-d",
                "test",
                "-v",
                "ON_ERROR_STOP=1",
                "-qc",
                sql,
            ],
        )
    };
    psql(&sql);
    let result = std::panic::catch_unwind(|| {
        check_split(&format!(
            "type = \"postgres\"\nurl = \"postgres://postgres@127.0.0.1:5432/test\"\ntable = \"{schema}.t\""
        ))
    });
    psql(&format!("DROP SCHEMA {schema} CASCADE"));
    result.unwrap();
}

#[test]
fn mariadb_source_splits_a_key_range_and_reads_every_row_once() {
    let db = format!("tidex_split_{}", std::process::id());
    let mariadb = |sql: &str| sh("mariadb", &["-h127.0.0.1", "-uroot", "-e", sql]);
    mariadb(&format!(
        "DROP DATABASE IF EXISTS {db}; CREATE DATABASE {db};
         CREATE TABLE {db}.t (id BIGINT PRIMARY KEY, name TEXT);
         INSERT INTO {db}.t SELECT seq, CONCAT('n', seq) FROM {db}.seq_1_to_1000;"
    ));
    let result = std::panic::catch_unwind(|| {
        check_split(&format!(
            "type = \"mysql\"\nurl = \"mysql://root@127.0.0.1:3306/{db}\"\ntable = \"t\""
        ))
    });
    mariadb(&format!("DROP DATABASE {db}"));
    result.unwrap();
}

#[cfg(feature = "sqlite")]
#[test]
fn sqlite_source_splits_a_key_range_and_reads_every_row_once() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src.db");
    rusqlite::Connection::open(&src)
        .unwrap()
        .execute_batch(
            "CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT);
             WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 1000)
             INSERT INTO t SELECT i, 'n' || i FROM n;",
        )
        .unwrap();
    check_split(&format!(
        "type = \"sqlite\"\nurl = \"sqlite://{}\"\ntable = \"t\"",
        src.display()
    ));
}
