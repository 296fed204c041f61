//! SQLite source and sink, end to end through the `tidex` binary: every
//! mapped type survives SQLite → Parquet → SQLite; tables split into key
//! ranges; incremental runs deliver exactly the new rows; a killed
//! SQLite → SQLite job resumes without duplicates; upsert, truncate-insert
//! and append; identifiers from URLs cannot inject SQL; a value that does
//! not fit its column is a dirty row with its rowid and column; missing
//! files, tables and columns are named.

mod common;
use arrow::datatypes::{DataType, TimeUnit};
use common::*;
use rusqlite::types::ValueRef;
use std::path::Path;

fn db(path: &Path, sql: &str) {
    rusqlite::Connection::open(path)
        .unwrap()
        .execute_batch(sql)
        .unwrap();
}

fn one<T: rusqlite::types::FromSql>(path: &Path, sql: &str) -> T {
    rusqlite::Connection::open(path)
        .unwrap()
        .query_row(sql, [], |r| r.get(0))
        .unwrap()
}

/// Every row of `table`, each value with its storage class, sorted: equal
/// dumps mean equal content, type for type.
fn dump(path: &Path, table: &str) -> Vec<String> {
    let c = rusqlite::Connection::open(path).unwrap();
    let mut stmt = c.prepare(&format!("SELECT * FROM \"{table}\"")).unwrap();
    let n = stmt.column_count();
    let mut rows: Vec<String> = stmt
        .query_map([], |r| {
            Ok((0..n)
                .map(|i| match r.get_ref(i).unwrap() {
                    ValueRef::Null => "NULL".to_string(),
                    ValueRef::Integer(v) => format!("i:{v}"),
                    ValueRef::Real(v) => format!("r:{v:?}"),
                    ValueRef::Text(t) => format!("t:{}", String::from_utf8_lossy(t)),
                    ValueRef::Blob(b) => format!("b:{b:02x?}"),
                })
                .collect::<Vec<_>>()
                .join("|"))
        })
        .unwrap()
        .map(|r| r.unwrap())
        .collect();
    rows.sort();
    rows
}

/// `name type` of each column of `table`.
fn decls(path: &Path, table: &str) -> Vec<String> {
    let c = rusqlite::Connection::open(path).unwrap();
    let mut stmt = c
        .prepare("SELECT name, type FROM pragma_table_info(?1)")
        .unwrap();
    stmt.query_map([table], |r| {
        Ok(format!(
            "{} {}",
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?
        ))
    })
    .unwrap()
    .map(|r| r.unwrap())
    .collect()
}

fn ints(path: &Path, sql: &str) -> Vec<i64> {
    let c = rusqlite::Connection::open(path).unwrap();
    let mut stmt = c.prepare(sql).unwrap();
    stmt.query_map([], |r| r.get(0))
        .unwrap()
        .map(|r| r.unwrap())
        .collect()
}

const TYPES_TABLE: &str = r#"
CREATE TABLE t (
    id INTEGER PRIMARY KEY,
    i INTEGER, f REAL, s TEXT, b BLOB, ok BOOLEAN,
    d DECIMAL TEXT(38,10), day DATE, ts TIMESTAMP, tm TIME
);
INSERT INTO t VALUES
 (1, 9223372036854775807, 1.5, '', x'00ff', 1,
  '9999999999999999999999999999.9999999999', '1969-07-20',
  '1900-01-01 00:00:00.000000', '00:00:00.000000'),
 (2, -9223372036854775808, 'NaN', '中文测试 ✓', x'', 0,
  '-0.0000000001', '9999-12-31',
  '9999-12-31 23:59:59.999999', '23:59:59.999999'),
 (3, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
 (4, 0, 1e999, 'NULL', NULL, NULL,
  '0.0000000000', '2000-02-29',
  '1969-12-31 23:59:59.999999', '12:34:56.789000'),
 (5, -1, -2.5e-300, 'a "quoted" ''value''', x'e4b8ad', 1,
  '-12345678901234567890.1234567890', '0001-01-01',
  '2262-04-11 23:47:16.854775', '01:02:03.000004');
"#;

#[test]
fn every_mapped_type_round_trips_sqlite_parquet_sqlite() {
    let s = Scratch::new();
    let src = s.path("src.db");
    db(&src, TYPES_TABLE);
    let o = s.ok(&["copy", "sqlite://src.db?table=t", "t.parquet", "--json"]);
    assert_eq!(summary(&o)["rows"], 5);

    let batches = read_batches(&s.path("t.parquet"));
    let schema = batches[0].schema();
    let types: Vec<(String, DataType)> = schema
        .fields()
        .iter()
        .map(|f| (f.name().clone(), f.data_type().clone()))
        .collect();
    let us = TimeUnit::Microsecond;
    let expect = [
        ("id", DataType::Int64),
        ("i", DataType::Int64),
        ("f", DataType::Float64),
        ("s", DataType::Utf8),
        ("b", DataType::Binary),
        ("ok", DataType::Boolean),
        ("d", DataType::Decimal128(38, 10)),
        ("day", DataType::Date32),
        ("ts", DataType::Timestamp(us, None)),
        ("tm", DataType::Time64(us)),
    ];
    assert_eq!(
        types,
        expect
            .iter()
            .map(|(n, t)| (n.to_string(), t.clone()))
            .collect::<Vec<_>>()
    );
    // Values as Arrow holds them: NaN, empty string vs NULL, exact decimals.
    assert_eq!(column_text(&batches, "f")[1], "NaN");
    assert_eq!(column_text(&batches, "f")[3], "inf");
    assert_eq!(
        column_text(&batches, "s")[..4],
        ["", "中文测试 ✓", "<null>", "NULL"]
    );
    assert_eq!(
        column_text(&batches, "d")[0],
        "9999999999999999999999999999.9999999999"
    );
    assert_eq!(column_text(&batches, "day")[0], "1969-07-20");
    assert_eq!(column_text(&batches, "ts")[0], "1900-01-01T00:00:00");
    assert_eq!(
        column_text(&batches, "ok")[..3],
        ["true", "false", "<null>"]
    );

    // Back into a new SQLite table: same declared types, same values.
    s.ok(&["copy", "t.parquet", "sqlite://dst.db?table=t"]);
    let dst = s.path("dst.db");
    assert_eq!(dump(&dst, "t"), dump(&src, "t"));
    assert_eq!(decls(&dst, "t"), decls(&src, "t"));
    assert_eq!(dump(&dst, "t").len(), 5);
    // NaN stays NaN (SQLite would store a NaN REAL as NULL).
    assert_eq!(one::<String>(&dst, "SELECT f FROM t WHERE id = 2"), "NaN");
}

#[test]
fn lenient_stored_forms_read_exactly() {
    // What other programs write: NUMERIC-affinity decimals stored as REAL
    // or INTEGER, 'T' timestamps and unix seconds, untyped expressions.
    let s = Scratch::new();
    db(
        &s.path("src.db"),
        "CREATE TABLE u (id INTEGER PRIMARY KEY, dd DECIMAL(10,2), ts DATETIME, n);
         INSERT INTO u VALUES (1, 12.34, '2024-05-06T07:08:09', 5),
                              (2, 7, 1700000000, 6),
                              (3, 0.1, '2024-05-06 07:08:09.5+08:00', 7);",
    );
    s.ok(&["copy", "sqlite://src.db?table=u", "u.parquet"]);
    let b = read_batches(&s.path("u.parquet"));
    assert_eq!(
        b[0].schema().field(1).data_type(),
        &DataType::Decimal128(10, 2)
    );
    assert_eq!(b[0].schema().field(3).data_type(), &DataType::Int64);
    assert_eq!(column_text(&b, "dd"), ["12.34", "7.00", "0.10"]);
    assert_eq!(
        column_text(&b, "ts"),
        [
            "2024-05-06T07:08:09",
            "2023-11-14T22:13:20",
            "2024-05-05T23:08:09.500"
        ]
    );
    // A query: expressions have no declared type, the first row decides.
    let spec = s.write(
        "q.toml",
        "[job]\nname = \"q\"\n[source]\ntype = \"sqlite\"\nurl = \"sqlite://src.db\"\nquery = \"SELECT id, n * 2 AS twice, dd FROM u WHERE id <> 2\"\n[sink]\ntype = \"parquet\"\nurl = \"q.parquet\"\n",
    );
    s.ok(&["run", spec.to_str().unwrap()]);
    let b = read_batches(&s.path("q.parquet"));
    assert_eq!(b[0].schema().field(1).data_type(), &DataType::Int64);
    assert_eq!(
        b[0].schema().field(2).data_type(),
        &DataType::Decimal128(10, 2)
    );
    assert_eq!(column_text(&b, "twice"), ["10", "14"]);
}

#[test]
fn people_fixture_round_trips_through_sqlite() {
    let s = Scratch::new();
    let people = fixtures().join("people.parquet");
    let abs = format!("sqlite://{}?table=people", s.path("people.db").display());
    assert!(abs.starts_with("sqlite:///"));
    s.ok(&["copy", people.to_str().unwrap(), &abs]);
    assert_eq!(
        one::<i64>(&s.path("people.db"), "SELECT count(*) FROM people"),
        1000
    );
    // The relative form names the same file.
    s.ok(&["copy", "sqlite://people.db?table=people", "back.parquet"]);
    assert_eq!(
        fingerprint(&read_batches(&s.path("back.parquet"))),
        fixture_fingerprint()
    );
}

fn numbers_table(path: &Path, table: &str, rows: u64) {
    db(
        path,
        &format!(
            "CREATE TABLE {table} (id INTEGER PRIMARY KEY, grp INTEGER, v TEXT);
             WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {rows})
             INSERT INTO {table} SELECT i, CASE WHEN i % 7 = 0 THEN NULL ELSE i % 100 END,
                                       'value-' || i FROM n;"
        ),
    );
}

fn parquet_ids(path: &Path) -> Vec<i64> {
    let mut v: Vec<i64> = column_text(&read_batches(path), "id")
        .iter()
        .map(|x| x.parse().unwrap())
        .collect();
    v.sort();
    v
}

/// Asserts `ids` holds each of `1..=n` exactly once, naming what is
/// missing or repeated.
fn assert_each_once(mut ids: Vec<i64>, n: i64, what: &str) {
    ids.sort();
    let mut dup = Vec::new();
    for w in ids.windows(2) {
        if w[0] == w[1] {
            dup.push(w[0]);
        }
    }
    let missing: Vec<i64> = (1..=n).filter(|i| ids.binary_search(i).is_err()).collect();
    let extra: Vec<i64> = ids
        .iter()
        .copied()
        .filter(|i| !(1..=n).contains(i))
        .collect();
    assert!(
        dup.is_empty() && missing.is_empty() && extra.is_empty(),
        "{what}: {} rows; missing {:?}, repeated {:?}, unexpected {:?}",
        ids.len(),
        &missing[..missing.len().min(20)],
        &dup[..dup.len().min(20)],
        &extra[..extra.len().min(20)]
    );
}

#[test]
fn tables_split_into_key_ranges() {
    let s = Scratch::new();
    numbers_table(&s.path("src.db"), "big", 10_000);
    // Keys that are no integer: they must still be read, exactly once.
    db(
        &s.path("src.db"),
        "INSERT INTO big VALUES (10001, 'x', 'text key'), (10002, 2.5, 'fraction key');",
    );
    let job = |name: &str, extra: &str| {
        s.write(
            &format!("{name}.toml"),
            &format!(
                "[job]\nname = \"{name}\"\n[source]\ntype = \"sqlite\"\nurl = \"sqlite://src.db?table=big\"\n{extra}\n[sink]\ntype = \"parquet\"\nurl = \"{name}/\"\n[limits]\nbatch_rows = 1000\nparallelism = 2\n"
            ),
        )
    };
    let by_id = job("by_id", "partitions = 5\ncolumns = [\"id\", \"v\"]");
    let sum = summary(&s.ok(&["run", by_id.to_str().unwrap(), "--json"]));
    assert_eq!(sum["partitions"], 5, "{sum}");
    assert_eq!(sum["rows"], 10_002);
    assert!(sum["source"]
        .as_str()
        .unwrap()
        .contains("sqlite://src.db table big"));
    assert_each_once(parquet_ids(&s.path("by_id")), 10_002, "by id");

    // A plain integer column with NULLs, text and fractions as the key.
    let by_grp = job(
        "by_grp",
        "partition_by = \"grp\"\npartitions = 4\ncolumns = [\"id\", \"v\"]",
    );
    let sum = summary(&s.ok(&["run", by_grp.to_str().unwrap(), "--json"]));
    assert_eq!(sum["partitions"], 4, "{sum}");
    assert_each_once(parquet_ids(&s.path("by_grp")), 10_002, "by grp");

    // Without an integer key: one partition.
    db(
        &s.path("src.db"),
        "CREATE TABLE nokey (name TEXT); INSERT INTO nokey VALUES ('a'), ('b');",
    );
    let sum = summary(&s.ok(&[
        "copy",
        "sqlite://src.db?table=nokey&partitions=4",
        "nokey.parquet",
        "--json",
    ]));
    assert_eq!(sum["partitions"], 1);
    assert_eq!(sum["rows"], 2);
}

#[test]
fn incremental_runs_deliver_exactly_the_new_rows() {
    let s = Scratch::new();
    let src = s.path("src.db");
    db(
        &src,
        "CREATE TABLE events (id INTEGER PRIMARY KEY, v TEXT, updated_at INTEGER);
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 100)
         INSERT INTO events SELECT i, 'v' || i, i FROM n;",
    );
    let spec = s.write(
        "inc.toml",
        "[job]\nname = \"inc\"\n[source]\ntype = \"sqlite\"\nurl = \"sqlite://src.db?table=events\"\nincremental = { cursor = \"updated_at\" }\npartitions = 3\n[sink]\ntype = \"sqlite\"\nurl = \"sqlite://out.db?table=events\"\nmode = \"append\"\n",
    );
    let run = || summary(&s.ok(&["run", spec.to_str().unwrap(), "--json"]));
    let out = s.path("out.db");
    let sum = run();
    assert_eq!(sum["rows"], 100);
    assert_eq!(
        ints(&out, "SELECT id FROM events ORDER BY id"),
        (1..=100).collect::<Vec<_>>()
    );

    // New rows, and an old row updated.
    db(
        &src,
        "WITH RECURSIVE n(i) AS (SELECT 101 UNION ALL SELECT i + 1 FROM n WHERE i < 150)
         INSERT INTO events SELECT i, 'v' || i, i FROM n;
         UPDATE events SET v = 'changed', updated_at = 200 WHERE id = 5;",
    );
    let sum = run();
    assert_eq!(sum["rows"], 51, "{sum}");
    let mut second: Vec<i64> = (101..=150).collect();
    second.push(5);
    second.sort();
    assert_eq!(
        ints(
            &out,
            "SELECT id FROM events WHERE id > 100 OR v = 'changed' ORDER BY id"
        ),
        second
    );
    assert_eq!(one::<i64>(&out, "SELECT count(*) FROM events"), 151);

    // Nothing new: nothing delivered.
    assert_eq!(run()["rows"], 0);
    db(
        &src,
        "INSERT INTO events VALUES (151, 'late', 300), (152, 'later', 301);",
    );
    assert_eq!(run()["rows"], 2);
    assert_eq!(one::<i64>(&out, "SELECT count(*) FROM events"), 153);
    assert_eq!(
        one::<i64>(&out, "SELECT count(DISTINCT id) FROM events"),
        152
    );

    // A text timestamp cursor works the same way.
    db(
        &src,
        "CREATE TABLE log (id INTEGER PRIMARY KEY, at TIMESTAMP);
         INSERT INTO log VALUES (1, '2024-01-01 00:00:00'), (2, '2024-01-02 00:00:00');",
    );
    let spec = s.write(
        "log.toml",
        "[job]\nname = \"log\"\n[source]\ntype = \"sqlite\"\nurl = \"sqlite://src.db?table=log&cursor=at\"\n[sink]\ntype = \"sqlite\"\nurl = \"sqlite://out.db?table=log\"\n",
    );
    let run = || summary(&s.ok(&["run", spec.to_str().unwrap(), "--json"]));
    assert_eq!(run()["rows"], 2);
    db(
        &src,
        "INSERT INTO log VALUES (3, '2024-01-02 00:00:00.5'), (4, '2023-12-31 00:00:00');",
    );
    // Row 4 is older than the mark: an incremental load does not see it.
    assert_eq!(run()["rows"], 1);
    assert_eq!(ints(&out, "SELECT id FROM log ORDER BY id"), [1, 2, 3]);
}

#[test]
fn killed_sqlite_to_sqlite_job_resumes_with_every_row_once() {
    let s = Scratch::new();
    let rows = 20_000;
    numbers_table(&s.path("src.db"), "big", rows);
    let spec = |rate: &str| {
        s.write(
            "job.toml",
            &format!(
                "[job]\nname = \"copy-big\"\n[source]\ntype = \"sqlite\"\nurl = \"sqlite://src.db?table=big\"\npartitions = 8\n[sink]\ntype = \"sqlite\"\nurl = \"sqlite://dst.db?table=big\"\n[limits]\nbatch_rows = 500\nparallelism = 2\n{rate}"
            ),
        )
    };
    let slow = spec("max_rows_per_sec = 4000\n");
    kill_when(&s, &slow, || committed_parts(&s) >= 1);
    let dst = s.path("dst.db");
    let before: i64 = one(&dst, "SELECT count(*) FROM big");
    assert!(
        before > 0 && before < rows as i64,
        "{before} rows before the resume"
    );

    let fast = spec("");
    let sum = summary(&s.ok(&["run", fast.to_str().unwrap(), "--json"]));
    assert_eq!(sum["resumed"], true, "{sum}");
    assert!(sum["partitions_skipped"].as_i64().unwrap() >= 1, "{sum}");
    assert_eq!(sum["rows"], rows);
    assert_eq!(one::<i64>(&dst, "SELECT count(*) FROM big"), rows as i64);
    assert_each_once(
        ints(&dst, "SELECT id FROM big"),
        rows as i64,
        "after resume",
    );
    assert_eq!(dump(&dst, "big"), dump(&s.path("src.db"), "big"));
    // Every partition has its marker.
    assert_eq!(one::<i64>(&dst, "SELECT count(*) FROM _tidex_commits"), 8);
}

#[test]
fn upsert_truncate_insert_and_append_modes() {
    let s = Scratch::new();
    s.write("a.csv", "id,name\n1,a\n2,b\n3,c\n");
    s.write("b.csv", "id,name\n2,B\n4,d\n");
    let names = |db: &str| -> Vec<String> {
        let c = rusqlite::Connection::open(s.path(db)).unwrap();
        let mut st = c
            .prepare("SELECT id || ':' || name FROM t ORDER BY id, name")
            .unwrap();
        st.query_map([], |r| r.get(0))
            .unwrap()
            .map(|r| r.unwrap())
            .collect()
    };
    let up = "sqlite://up.db?table=t&mode=upsert&key=id";
    s.ok(&["copy", "a.csv", up]);
    s.ok(&["copy", "b.csv", up]);
    assert_eq!(names("up.db"), ["1:a", "2:B", "3:c", "4:d"]);
    assert_eq!(
        one::<String>(
            &s.path("up.db"),
            "SELECT sql FROM sqlite_master WHERE name = 't'"
        ),
        "CREATE TABLE \"t\" (\"id\" INTEGER NOT NULL, \"name\" TEXT, PRIMARY KEY (\"id\"))"
    );

    let tr = "sqlite://tr.db?table=t&mode=truncate-insert";
    s.ok(&["copy", "a.csv", tr]);
    s.ok(&["copy", "b.csv", tr]);
    assert_eq!(names("tr.db"), ["2:B", "4:d"]);
    // Rerunning the same job empties the table again.
    s.ok(&["copy", "b.csv", tr]);
    assert_eq!(names("tr.db"), ["2:B", "4:d"]);

    let ap = "sqlite://ap.db?table=t";
    s.ok(&["copy", "a.csv", ap]);
    s.ok(&["copy", "a.csv", ap]);
    assert_eq!(names("ap.db"), ["1:a", "1:a", "2:b", "2:b", "3:c", "3:c"]);

    // Upsert needs a unique key on the target.
    let out = s.run(&["copy", "b.csv", "sqlite://ap.db?table=t&mode=upsert&key=id"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("PRIMARY KEY or UNIQUE"),
        "{}",
        stderr(&out)
    );
    // An existing table must have every incoming column.
    s.write("c.csv", "id,name,extra\n9,z,1\n");
    let out = s.run(&["copy", "c.csv", ap]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("no column `extra`"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn identifiers_in_urls_cannot_inject_sql() {
    let s = Scratch::new();
    let src = s.path("src.db");
    db(
        &src,
        "CREATE TABLE people (id INTEGER); CREATE TABLE x (id INTEGER); INSERT INTO x VALUES (1);",
    );
    let out = s.run(&[
        "copy",
        "sqlite://src.db?table=people;drop table x",
        "out.parquet",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("not a valid identifier"),
        "{}",
        stderr(&out)
    );
    s.write("a.csv", "id\n1\n");
    let out = s.run(&["copy", "a.csv", "sqlite://src.db?table=t\";drop table x;--"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let out = s.run(&[
        "copy",
        "a.csv",
        "sqlite://src.db?table=t&key=id);drop table x;--&mode=upsert",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    // The database is untouched.
    assert_eq!(one::<i64>(&src, "SELECT count(*) FROM x"), 1);
    assert_eq!(
        one::<i64>(&src, "SELECT count(*) FROM sqlite_master"),
        2,
        "no table was created or dropped"
    );
    assert!(!s.path("out.parquet").exists());
}

#[test]
fn a_value_that_does_not_fit_is_a_dirty_row_with_rowid_and_column() {
    let s = Scratch::new();
    db(
        &s.path("src.db"),
        "CREATE TABLE t (id INTEGER PRIMARY KEY, n INTEGER, s TEXT);
         INSERT INTO t VALUES (1, 10, 'a'), (2, 'abc', 'b'), (3, 30, 'c');",
    );
    let out = s.run(&["copy", "sqlite://src.db?table=t", "out.parquet"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("src.db:t, row 2, column `n`: text \"abc\" is not an integer"),
        "{err}"
    );
    assert!(!s.path("out.parquet").exists());

    let o = s.ok(&[
        "copy",
        "sqlite://src.db?table=t",
        "out.parquet",
        "--on-error",
        "skip",
        "--dead-letter",
        "dead",
        "--json",
    ]);
    let sum = summary(&o);
    assert_eq!(
        (sum["rows"].as_i64(), sum["dirty_rows"].as_i64()),
        (Some(2), Some(1))
    );
    assert_eq!(parquet_ids(&s.path("out.parquet")), [1, 3]);
    let files = data_files(&s.path("dead"));
    assert_eq!(files.len(), 1);
    let text = std::fs::read_to_string(&files[0]).unwrap();
    let rec: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    assert_eq!(rec["location"]["file"], "src.db:t");
    assert_eq!(rec["location"]["row"], 2);
    assert_eq!(rec["location"]["column"], "n");
    assert_eq!(rec["values"], serde_json::json!(["2", "abc", "b"]));
}

#[test]
fn missing_database_table_and_column_are_named() {
    let s = Scratch::new();
    let out = s.run(&["copy", "sqlite://nope.db?table=t", "out.parquet"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("no such database file: nope.db"),
        "{}",
        stderr(&out)
    );
    assert!(
        !s.path("nope.db").exists(),
        "a typo must not create a database"
    );

    db(
        &s.path("src.db"),
        "CREATE TABLE t (id INTEGER PRIMARY KEY, n INTEGER);",
    );
    let out = s.run(&["copy", "sqlite://src.db?table=ghost", "out.parquet"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("sqlite (src.db): no table or view named `ghost`"),
        "{err}"
    );

    let spec = s.write(
        "cols.toml",
        "[job]\nname = \"cols\"\n[source]\ntype = \"sqlite\"\nurl = \"sqlite://src.db?table=t\"\ncolumns = [\"id\", \"nah\"]\n[sink]\ntype = \"parquet\"\nurl = \"out.parquet\"\n",
    );
    let out = s.run(&["run", spec.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("sqlite (src.db): table `t` has no column `nah`"),
        "{err}"
    );

    // A sink into a missing table with create = false.
    s.write("a.csv", "id\n1\n");
    let out = s.run(&["copy", "a.csv", "sqlite://src.db?table=other&create=false"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("no table named `other`"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn nested_values_are_stored_as_json_text() {
    let s = Scratch::new();
    s.write(
        "n.jsonl",
        "{\"id\":1,\"tags\":[\"a\",\"b\"],\"m\":{\"k\":1,\"z\":null}}\n{\"id\":2,\"tags\":null,\"m\":{\"k\":2,\"z\":\"引号\\\"\"}}\n",
    );
    s.ok(&["copy", "n.jsonl", "sqlite://n.db?table=n"]);
    let n = s.path("n.db");
    assert_eq!(decls(&n, "n"), ["id INTEGER", "m TEXT", "tags TEXT"]);
    assert_eq!(
        dump(&n, "n"),
        [
            "i:1|t:{\"k\":1,\"z\":null}|t:[\"a\",\"b\"]",
            "i:2|t:{\"k\":2,\"z\":\"引号\\\"\"}|NULL",
        ]
    );
}
