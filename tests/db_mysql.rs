//! MySQL/MariaDB source and sink against the server on 127.0.0.1:3306
//! (user root, no password): every mapped type round-trips MariaDB →
//! Parquet → MariaDB, the people fixture goes in and comes back, reads are
//! partitioned and incremental, a killed load resumes with every row
//! exactly once, upsert and truncate-insert behave, and bad names,
//! unreachable servers, wrong credentials, missing tables and columns are
//! clear errors that never show a password. Each test works in its own
//! database, dropped at the end.

mod common;
use common::*;
use mysql_async::prelude::Queryable;

const SERVER: &str = "mysql://root@127.0.0.1:3306";

/// A database of its own for one test, dropped when the test ends.
struct TestDb {
    name: String,
    rt: tokio::runtime::Runtime,
    /// Users created by the test, dropped with the database.
    users: Vec<String>,
}

impl TestDb {
    fn new(test: &str) -> TestDb {
        let name = format!("tidex_t_{}_{test}", std::process::id());
        let db = TestDb {
            name,
            rt: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap(),
            users: Vec::new(),
        };
        db.admin(&format!("DROP DATABASE IF EXISTS `{}`", db.name));
        db.admin(&format!(
            "CREATE DATABASE `{}` CHARACTER SET utf8mb4",
            db.name
        ));
        db
    }

    /// `mysql://root@127.0.0.1:3306/<db>` plus `rest`.
    fn url(&self, rest: &str) -> String {
        format!("{SERVER}/{}{rest}", self.name)
    }

    fn conn(&self, db: Option<&str>) -> mysql_async::Conn {
        let url = match db {
            Some(d) => format!("{SERVER}/{d}"),
            None => SERVER.to_string(),
        };
        self.rt.block_on(async {
            let mut c = mysql_async::Conn::from_url(url).await.unwrap();
            c.query_drop("SET NAMES utf8mb4").await.unwrap();
            c.query_drop("SET time_zone = '+00:00'").await.unwrap();
            c
        })
    }

    fn admin(&self, sql: &str) {
        let mut c = self.conn(None);
        self.rt
            .block_on(c.query_drop(sql))
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    /// Runs statements in the test database.
    fn exec(&self, sql: &str) {
        let mut c = self.conn(Some(&self.name));
        self.rt
            .block_on(c.query_drop(sql))
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    /// Rows of a query as text (`<null>` for NULL).
    fn rows(&self, sql: &str) -> Vec<Vec<String>> {
        let mut c = self.conn(Some(&self.name));
        let rows: Vec<mysql_async::Row> = self
            .rt
            .block_on(c.query(sql))
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        rows.into_iter()
            .map(|r| {
                r.unwrap()
                    .into_iter()
                    .map(|v| match v {
                        mysql_async::Value::NULL => "<null>".to_string(),
                        mysql_async::Value::Bytes(b) => String::from_utf8_lossy(&b).into_owned(),
                        other => other.as_sql(true),
                    })
                    .collect()
            })
            .collect()
    }

    fn count(&self, sql: &str) -> i64 {
        self.rows(sql)[0][0].parse().unwrap()
    }

    fn ids(&self, table: &str) -> Vec<i64> {
        self.rows(&format!("SELECT id FROM `{table}` ORDER BY id"))
            .iter()
            .map(|r| r[0].parse().unwrap())
            .collect()
    }

    fn user(&mut self, user: &str, password: &str) {
        for host in ["%", "localhost", "127.0.0.1"] {
            self.admin(&format!(
                "CREATE USER IF NOT EXISTS '{user}'@'{host}' IDENTIFIED BY '{password}'"
            ));
            self.admin(&format!(
                "GRANT ALL ON `{}`.* TO '{user}'@'{host}'",
                self.name
            ));
        }
        self.users.push(user.to_string());
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let mut c = self.conn(None);
        let _ = self
            .rt
            .block_on(c.query_drop(format!("DROP DATABASE IF EXISTS `{}`", self.name)));
        for u in &self.users {
            for host in ["%", "localhost", "127.0.0.1"] {
                let _ = self
                    .rt
                    .block_on(c.query_drop(format!("DROP USER IF EXISTS '{u}'@'{host}'")));
            }
        }
    }
}

fn run_spec(s: &Scratch, name: &str, body: &str) -> std::process::Output {
    let p = s.write(name, body);
    s.run(&["run", p.to_str().unwrap(), "--json", "--no-progress"])
}

fn ok_spec(s: &Scratch, name: &str, body: &str) -> serde_json::Value {
    let out = run_spec(s, name, body);
    assert!(
        out.status.success(),
        "{name} failed: {}\n{}",
        stderr(&out),
        stdout(&out)
    );
    summary(&out)
}

#[test]
fn people_fixture_goes_in_and_comes_back_partitioned() {
    let db = TestDb::new("people");
    let s = Scratch::new();
    let fixture = fixtures().join("people.parquet");
    // `key=id` makes id the primary key of the created table.
    let sum = summary(&s.ok(&[
        "copy",
        fixture.to_str().unwrap(),
        &db.url("?table=people&key=id"),
        "--json",
    ]));
    assert_eq!(sum["rows"], 1000, "{sum}");
    assert_eq!(db.count("SELECT COUNT(*) FROM people"), 1000);
    let pk = db.rows(&format!(
        "SELECT COLUMN_NAME FROM information_schema.KEY_COLUMN_USAGE WHERE TABLE_SCHEMA = '{}' \
         AND TABLE_NAME = 'people' AND CONSTRAINT_NAME = 'PRIMARY'",
        db.name
    ));
    assert_eq!(pk, vec![vec!["id".to_string()]]);

    // Back out, split into four ranges of the integer primary key.
    let sum = summary(&s.ok(&[
        "copy",
        &db.url("?table=people&partitions=4"),
        "out/people/",
        "--json",
    ]));
    assert_eq!(sum["partitions"], 4, "{sum}");
    assert_eq!(sum["rows"], 1000, "{sum}");
    assert!(sum["source"].as_str().unwrap().contains("people"), "{sum}");
    let batches = read_batches(&s.path("out/people"));
    assert_eq!(fingerprint(&batches), fixture_fingerprint());
    let mut ids: Vec<i64> = column_text(&batches, "id")
        .iter()
        .map(|x| x.parse().unwrap())
        .collect();
    ids.sort();
    assert_eq!(ids, (1..=1000).collect::<Vec<_>>());

    // A projection, split by a DATETIME column, through a mariadb:// URL.
    let p = s.write(
        "proj.toml",
        &format!(
            "[job]\nname = \"proj\"\n[source]\ntype = \"mysql\"\nurl = \"{}\"\ntable = \"people\"\ncolumns = [\"id\", \"name\"]\npartition_by = \"created_at\"\npartitions = 3\n[sink]\ntype = \"parquet\"\nurl = \"out/proj.parquet\"\n",
            db.url("").replace("mysql://", "mariadb://")
        ),
    );
    let sum = summary(&s.ok(&["run", p.to_str().unwrap(), "--json"]));
    assert_eq!(sum["partitions"], 3, "{sum}");
    let b = read_batches(&s.path("out/proj.parquet"));
    assert_eq!(b[0].schema().fields().len(), 2);
    let mut ids: Vec<i64> = column_text(&b, "id")
        .iter()
        .map(|x| x.parse().unwrap())
        .collect();
    ids.sort();
    assert_eq!(ids, (1..=1000).collect::<Vec<_>>());
    let q = s.write(
        "query.toml",
        &format!(
            "[job]\nname = \"query\"\n[source]\ntype = \"mysql\"\nurl = \"{}\"\nquery = \"SELECT id, name FROM people WHERE id <= 10\"\npartition_by = \"id\"\npartitions = 2\n[sink]\ntype = \"csv\"\nurl = \"out/q.csv\"\n",
            db.url("")
        ),
    );
    let sum = summary(&s.ok(&["run", q.to_str().unwrap(), "--json"]));
    assert_eq!(sum["rows"], 10, "{sum}");
    assert_eq!(sum["partitions"], 2, "{sum}");
    assert_eq!(
        column_text(&read_batches(&s.path("out/q.csv")), "name")[0],
        "史芳"
    );
}

/// Each column, as text that does not depend on the column's exact type
/// (a TIMESTAMP and the DATETIME(6) it becomes print alike).
const NORMALIZED: &str =
    "id, b, i8, u8, i16, u16, i24, u24, i32, u32, i64, u64, f, d, dec65, dec38, \
     dt, DATE_FORMAT(dtm, '%Y-%m-%d %H:%i:%s.%f'), DATE_FORMAT(ts, '%Y-%m-%d %H:%i:%s.%f'), \
     TIME_FORMAT(tm, '%H:%i:%s.%f'), yr, s, txt, en, st, j, HEX(bin), HEX(bl), bits + 0";

#[test]
fn every_type_round_trips_mariadb_parquet_mariadb() {
    let db = TestDb::new("types");
    db.exec(
        "CREATE TABLE src (
            id INT PRIMARY KEY, b BOOL, i8 TINYINT, u8 TINYINT UNSIGNED,
            i16 SMALLINT, u16 SMALLINT UNSIGNED, i24 MEDIUMINT, u24 MEDIUMINT UNSIGNED,
            i32 INT, u32 INT UNSIGNED, i64 BIGINT, u64 BIGINT UNSIGNED,
            f FLOAT, d DOUBLE, dec65 DECIMAL(65,30), dec38 DECIMAL(38,10),
            dt DATE, dtm DATETIME(6), ts TIMESTAMP(6) NULL, tm TIME(6), yr YEAR,
            s VARCHAR(50), txt TEXT, en ENUM('a','b'), st SET('x','y'), j JSON,
            bin VARBINARY(16), bl BLOB, bits BIT(5)
        ) CHARACTER SET utf8mb4",
    );
    db.exec(
        "INSERT INTO src VALUES
        (1, 1, -128, 255, -32768, 65535, -8388608, 16777215, -2147483648, 4294967295,
         -9223372036854775808, 18446744073709551615, 3.5, 1.7976931348623157e308,
         99999999999999999999999999999999999.999999999999999999999999999999,
         9999999999999999999999999999.9999999999,
         '1000-01-01', '1000-01-01 00:00:00.000000', '1970-01-01 00:00:01.000000', '00:00:00',
         1901, '', 'quote '' dq \" back \\\\ nl \\n tab \\t end', 'a', 'x,y', '{\"k\": [1, 2, \"三\"]}',
         X'00FF10', X'', b'10101'),
        (2, 0, 127, 0, 32767, 0, 8388607, 0, 2147483647, 0,
         9223372036854775807, 0, -1.25e10, -2.2250738585072014e-308,
         -99999999999999999999999999999999999.999999999999999999999999999999,
         -9999999999999999999999999999.9999999999,
         '9999-12-31', '9999-12-31 23:59:59.999999', '2038-01-19 03:14:07.999999', '23:59:59.999999',
         2155, '中文字符', '😀 emoji 𝄞', 'b', '', '[]',
         X'', X'DEADBEEF00', b'00000'),
        (3, NULL, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 0,
         0.000000000000000000000000000001, 0.0000000001,
         '1969-07-20', '1901-12-13 20:45:52.123456', '2000-02-29 12:00:00.5', '12:34:56.000001',
         2000, 'NULL', '', 'a', 'y', 'null', X'0000', X'00', b'1'),
        (4, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
         NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL)",
    );
    let s = Scratch::new();
    s.ok(&["copy", &db.url("?table=src"), "out/types.parquet"]);

    // The Parquet file carries the mapped Arrow types.
    let batches = read_batches(&s.path("out/types.parquet"));
    let schema = batches[0].schema();
    let ty = |c: &str| schema.field_with_name(c).unwrap().data_type().to_string();
    assert_eq!(ty("b"), "Boolean");
    assert_eq!(ty("i24"), "Int32");
    assert_eq!(ty("u64"), "UInt64");
    assert_eq!(ty("dec65"), "Decimal256(65, 30)");
    assert_eq!(ty("dec38"), "Decimal128(38, 10)");
    assert_eq!(ty("dt"), "Date32");
    assert_eq!(ty("dtm"), "Timestamp(µs)");
    assert!(ty("ts").contains("UTC"), "{}", ty("ts"));
    assert_eq!(ty("tm"), "Time64(µs)");
    assert_eq!(ty("yr"), "Int16");
    assert_eq!(ty("bits"), "UInt64");
    assert_eq!(ty("bin"), "Binary");
    assert_eq!(ty("en"), "Utf8");
    assert_eq!(
        schema
            .field_with_name("j")
            .unwrap()
            .metadata()
            .get("ARROW:extension:name")
            .map(String::as_str),
        Some("arrow.json")
    );
    let decs = column_text(&batches, "dec65");
    assert!(decs.contains(&format!("-{}.{}", "9".repeat(35), "9".repeat(30))));
    assert_eq!(column_text(&batches, "s")[0], "");
    assert_eq!(column_text(&batches, "s")[3], "<null>");

    // And back into a table tidex creates.
    s.ok(&["copy", "out/types.parquet", &db.url("?table=back&key=id")]);
    let json_check = db.count(&format!(
        "SELECT COUNT(*) FROM information_schema.CHECK_CONSTRAINTS WHERE CONSTRAINT_SCHEMA = '{}' \
         AND TABLE_NAME = 'back' AND CHECK_CLAUSE = 'json_valid(`j`)'",
        db.name
    ));
    assert_eq!(json_check, 1, "the JSON column is created as JSON");
    let created = db.rows(&format!(
        "SELECT COLUMN_TYPE FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = '{}' \
         AND TABLE_NAME = 'back' AND COLUMN_NAME IN ('dec65', 'dtm', 'tm') ORDER BY COLUMN_NAME",
        db.name
    ));
    assert_eq!(
        created,
        vec![
            vec!["decimal(65,30)".to_string()],
            vec!["datetime(6)".to_string()],
            vec!["time(6)".to_string()]
        ]
    );
    let original = db.rows(&format!("SELECT {NORMALIZED} FROM src ORDER BY id"));
    let copied = db.rows(&format!("SELECT {NORMALIZED} FROM back ORDER BY id"));
    assert_eq!(original.len(), 4);
    assert_eq!(original, copied);
    // Spot checks, so equal-but-wrong cannot pass.
    assert_eq!(copied[1][21], "中文字符");
    assert_eq!(copied[1][22], "😀 emoji 𝄞");
    assert_eq!(copied[0][21], "");
    assert_eq!(copied[3][21], "<null>");
    assert_eq!(copied[2][21], "NULL");
    assert_eq!(copied[0][17], "1000-01-01 00:00:00.000000");
    assert_eq!(copied[1][18], "2038-01-19 03:14:07.999999");
    assert_eq!(copied[0][15], "9999999999999999999999999999.9999999999");
    assert_eq!(copied[0][28], "21");
    assert_eq!(copied[1][27], "DEADBEEF00");
}

#[test]
fn zero_dates_and_long_times_are_dirty_rows() {
    let db = TestDb::new("dirty");
    db.exec(
        "SET SESSION sql_mode = '';
         CREATE TABLE d (id INT PRIMARY KEY, day DATE, t TIME);
         INSERT INTO d VALUES (1, '2024-01-02', '01:00:00'), (2, '0000-00-00', '02:00:00'),
                              (3, '2024-01-03', '25:00:00'), (4, NULL, NULL);",
    );
    let s = Scratch::new();
    let spec = |policy: &str| {
        format!(
            "[job]\nname = \"dirty-{policy}\"\n[source]\ntype = \"mysql\"\nurl = \"{}\"\n[sink]\ntype = \"jsonl\"\nurl = \"out/{policy}.jsonl\"\n[errors]\npolicy = \"{policy}\"\ndead_letter = \"out/dead/\"\n",
            db.url("?table=d")
        )
    };
    let sum = ok_spec(&s, "skip.toml", &spec("skip"));
    assert_eq!(sum["rows"], 2, "{sum}");
    assert_eq!(sum["dirty_rows"], 2, "{sum}");
    let mut dead = String::new();
    for f in data_files(&s.path("out/dead")) {
        dead += &std::fs::read_to_string(f).unwrap();
    }
    let lines: Vec<serde_json::Value> = dead
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2, "{dead}");
    let zero = lines
        .iter()
        .find(|l| l["reason"].as_str().unwrap().contains("zero date"))
        .unwrap_or_else(|| panic!("{dead}"));
    assert_eq!(zero["location"]["column"], "day", "{zero}");
    assert!(
        zero["location"]["file"]
            .as_str()
            .unwrap()
            .contains(&format!("{}.d", db.name)),
        "{zero}"
    );
    assert!(
        zero["reason"].as_str().unwrap().contains("id = 2"),
        "{zero}"
    );
    assert_eq!(zero["values"][1], "0000-00-00", "{zero}");
    assert!(dead.contains("25:00:00"), "{dead}");
    let ids = column_text(&read_batches(&s.path("out/skip.jsonl")), "id");
    assert_eq!(ids, vec!["1", "4"]);

    let out = run_spec(&s, "fail.toml", &spec("fail"));
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    // Partitions run in parallel: either bad row may be the one that stops the run.
    let err = stderr(&out);
    assert!(
        (err.contains("column `day`") && err.contains("id = 2"))
            || (err.contains("column `t`") && err.contains("id = 3")),
        "{err}"
    );
}

#[test]
fn incremental_runs_deliver_exactly_the_new_rows() {
    let db = TestDb::new("incr");
    db.exec(
        "CREATE TABLE ev (id BIGINT PRIMARY KEY, updated_at DATETIME(6), v VARCHAR(10));
         INSERT INTO ev VALUES (1, '2024-01-01 00:00:00', 'a'), (2, '2024-01-02 00:00:00', 'b'),
                               (3, '1960-01-03 00:00:00.5', 'c');",
    );
    let s = Scratch::new();
    let body = format!(
        "[job]\nname = \"incr\"\n[source]\ntype = \"mysql\"\nurl = \"{}\"\ntable = \"ev\"\npartitions = 2\nincremental = {{ cursor = \"updated_at\" }}\n[sink]\ntype = \"jsonl\"\nurl = \"out/ev.jsonl\"\n",
        db.url("")
    );
    let ids = |s: &Scratch| -> Vec<String> {
        let mut v = column_text(&read_batches(&s.path("out/ev.jsonl")), "id");
        v.sort();
        v
    };
    let sum = ok_spec(&s, "incr.toml", &body);
    assert_eq!(sum["rows"], 3, "{sum}");
    assert_eq!(ids(&s), vec!["1", "2", "3"]);

    db.exec(
        "INSERT INTO ev VALUES (4, '2024-02-01 00:00:00.000001', 'd'), (5, '2030-01-01', 'e');
         UPDATE ev SET updated_at = '2024-03-01', v = 'b2' WHERE id = 2;",
    );
    let sum = ok_spec(&s, "incr.toml", &body);
    assert_eq!(sum["rows"], 3, "{sum}");
    assert_eq!(ids(&s), vec!["2", "4", "5"]);
    assert!(column_text(&read_batches(&s.path("out/ev.jsonl")), "v").contains(&"b2".into()));

    // Nothing new: an empty run.
    let sum = ok_spec(&s, "incr.toml", &body);
    assert_eq!(sum["rows"], 0, "{sum}");

    // An older cursor value is not new; a later one is.
    db.exec(
        "INSERT INTO ev VALUES (6, '2029-12-31', 'old'), (7, '2030-01-01 00:00:00.000001', 'f');",
    );
    let sum = ok_spec(&s, "incr.toml", &body);
    assert_eq!(sum["rows"], 1, "{sum}");
    assert_eq!(ids(&s), vec!["7"]);
}

fn markers(db: &TestDb) -> i64 {
    let exists = db.count(&format!(
        "SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = '{}' AND TABLE_NAME = '_tidex_commits'",
        db.name
    ));
    if exists == 0 {
        return 0;
    }
    db.count("SELECT COUNT(*) FROM _tidex_commits")
}

#[test]
fn killed_load_resumes_with_every_row_exactly_once() {
    let db = TestDb::new("resume");
    let s = Scratch::new();
    let rows = 40_000u64;
    let mut body = String::from("id,name,amount\n");
    for i in 1..=rows {
        body += &format!("{i},name-{i},{}.{:02}\n", i % 1000, i % 100);
    }
    s.write("big.csv", &body);
    let spec = |rate: &str| {
        format!(
            "[job]\nname = \"load\"\n[source]\ntype = \"csv\"\nurl = \"big.csv\"\nsplit_size = \"64KB\"\n[sink]\ntype = \"mysql\"\nurl = \"{}\"\nkey = [\"id\"]\n[limits]\nbatch_rows = 500\nparallelism = 2\n{rate}",
            db.url("?table=loaded")
        )
    };
    let slow = s.write("slow.toml", &spec("max_rows_per_sec = 8000\n"));
    kill_when(&s, &slow, || markers(&db) >= 1);
    let before = db.count("SELECT COUNT(*) FROM loaded");
    assert!(before > 0 && (before as u64) < rows, "{before}");

    let fast = s.write("fast.toml", &spec(""));
    let sum = summary(&s.ok(&["run", fast.to_str().unwrap(), "--json"]));
    assert_eq!(sum["resumed"], true, "{sum}");
    assert!(sum["partitions_skipped"].as_i64().unwrap() >= 1, "{sum}");
    assert_eq!(sum["rows"], rows, "{sum}");
    assert_eq!(db.ids("loaded"), (1..=rows as i64).collect::<Vec<_>>());
    assert_eq!(
        db.rows("SELECT name, amount FROM loaded WHERE id = 12345"),
        vec![vec!["name-12345".to_string(), "345.45".to_string()]]
    );
}

#[test]
fn upsert_updates_and_truncate_insert_replaces() {
    let db = TestDb::new("modes");
    let s = Scratch::new();
    s.write("a.csv", "id,name\n1,one\n2,two\n3,three\n");
    s.write("b.csv", "id,name\n2,TWO\n4,four\n");
    let spec = |file: &str, table: &str, mode: &str| {
        format!(
            "[job]\nname = \"{table}-{mode}\"\n[source]\ntype = \"csv\"\nurl = \"{file}\"\n[sink]\ntype = \"mysql\"\nurl = \"{}\"\ntable = \"{table}\"\nmode = \"{mode}\"\nkey = [\"id\"]\n",
            db.url("")
        )
    };
    ok_spec(&s, "u1.toml", &spec("a.csv", "up", "append"));
    let sum = ok_spec(&s, "u2.toml", &spec("b.csv", "up", "upsert"));
    assert_eq!(sum["rows"], 2, "{sum}");
    assert_eq!(
        db.rows("SELECT id, name FROM up ORDER BY id"),
        vec![
            vec!["1".to_string(), "one".into()],
            vec!["2".into(), "TWO".into()],
            vec!["3".into(), "three".into()],
            vec!["4".into(), "four".into()],
        ]
    );
    // Appending a key that exists is refused by the primary key.
    let out = run_spec(&s, "u3.toml", &spec("b.csv", "up", "append"));
    assert!(!out.status.success());
    assert!(stderr(&out).contains("Duplicate"), "{}", stderr(&out));

    ok_spec(&s, "t1.toml", &spec("a.csv", "tr", "truncate-insert"));
    assert_eq!(db.ids("tr"), vec![1, 2, 3]);
    ok_spec(&s, "t2.toml", &spec("b.csv", "tr", "truncate-insert"));
    assert_eq!(db.ids("tr"), vec![2, 4]);
    // Upserting needs a unique key on the key columns.
    db.exec("CREATE TABLE nokey (id BIGINT, name TEXT)");
    let out = run_spec(&s, "n.toml", &spec("b.csv", "nokey", "upsert"));
    assert!(!out.status.success());
    assert!(stderr(&out).contains("UNIQUE"), "{}", stderr(&out));
    // An existing table must have every incoming column.
    db.exec("CREATE TABLE narrow (id BIGINT PRIMARY KEY)");
    let out = run_spec(&s, "w.toml", &spec("b.csv", "narrow", "append"));
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("no column(s) name"),
        "{}",
        stderr(&out)
    );
    assert_eq!(db.count("SELECT COUNT(*) FROM narrow"), 0);
}

#[test]
fn arrow_lists_uuids_and_intervals_at_the_sink() {
    use arrow::array::{
        Array, ArrayRef, FixedSizeBinaryArray, Int32Array, IntervalDayTimeArray, ListArray,
    };
    use arrow::datatypes::{DataType, Field, Int32Type, IntervalDayTime, Schema};
    use std::collections::HashMap;
    use std::sync::Arc;
    let db = TestDb::new("arrow");
    let s = Scratch::new();
    let uuid_field = Field::new("u", DataType::FixedSizeBinary(16), true).with_metadata(
        HashMap::from([("ARROW:extension:name".into(), "arrow.uuid".into())]),
    );
    let list = ListArray::from_iter_primitive::<Int32Type, _, _>(vec![
        Some(vec![Some(1), Some(2), None]),
        None,
    ]);
    let uuids = FixedSizeBinaryArray::try_from_sparse_iter_with_size(
        vec![Some((0u8..16).collect::<Vec<u8>>()), None].into_iter(),
        16,
    )
    .unwrap();
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int32, false),
        Field::new("l", list.data_type().clone(), true),
        uuid_field,
    ]));
    let cols: Vec<ArrayRef> = vec![
        Arc::new(Int32Array::from(vec![1, 2])),
        Arc::new(list),
        Arc::new(uuids),
    ];
    let batch = arrow::record_batch::RecordBatch::try_new(schema.clone(), cols).unwrap();
    let f = std::fs::File::create(s.path("in.arrow")).unwrap();
    let mut w = arrow::ipc::writer::FileWriter::try_new(f, &schema).unwrap();
    w.write(&batch).unwrap();
    w.finish().unwrap();
    s.ok(&["copy", "in.arrow", &db.url("?table=la")]);
    assert_eq!(
        db.rows("SELECT id, l, u FROM la ORDER BY id"),
        vec![
            vec![
                "1".to_string(),
                "[1,2,null]".into(),
                "00010203-0405-0607-0809-0a0b0c0d0e0f".into()
            ],
            vec!["2".into(), "<null>".into(), "<null>".into()],
        ]
    );
    assert_eq!(
        db.rows(&format!(
            "SELECT DATA_TYPE FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = '{}' \
             AND TABLE_NAME = 'la' AND COLUMN_NAME = 'u'",
            db.name
        )),
        vec![vec!["char".to_string()]]
    );

    let ischema = Arc::new(Schema::new(vec![Field::new(
        "span",
        DataType::Interval(arrow::datatypes::IntervalUnit::DayTime),
        true,
    )]));
    let ib = arrow::record_batch::RecordBatch::try_new(
        ischema.clone(),
        vec![Arc::new(IntervalDayTimeArray::from(vec![
            IntervalDayTime::new(1, 0),
        ]))],
    )
    .unwrap();
    let f = std::fs::File::create(s.path("iv.arrow")).unwrap();
    let mut w = arrow::ipc::writer::FileWriter::try_new(f, &ischema).unwrap();
    w.write(&ib).unwrap();
    w.finish().unwrap();
    let out = s.run(&["copy", "iv.arrow", &db.url("?table=iv")]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("mysql") && err.contains("`span`") && err.contains("interval"),
        "{err}"
    );
}

#[test]
fn injected_table_names_are_rejected_before_anything_runs() {
    let db = TestDb::new("inject");
    db.exec("CREATE TABLE people (id INT PRIMARY KEY); CREATE TABLE x (id INT); INSERT INTO people VALUES (1);");
    let s = Scratch::new();
    s.write("a.csv", "id\n5\n");
    for (src, dst) in [
        (
            db.url("?table=people;drop table x"),
            "out/x.csv".to_string(),
        ),
        ("a.csv".to_string(), db.url("?table=people;drop table x")),
        (
            db.url("?table=people`;drop table x"),
            "out/y.csv".to_string(),
        ),
    ] {
        let out = s.run(&["copy", &src, &dst]);
        assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
        assert!(
            stderr(&out).contains("not a valid identifier"),
            "{}",
            stderr(&out)
        );
    }
    assert_eq!(
        db.count("SELECT COUNT(*) FROM x"),
        0,
        "table x still exists"
    );
    assert_eq!(db.ids("people"), vec![1]);
}

#[test]
fn connection_and_name_errors_name_the_connector_and_hide_the_password() {
    let mut db = TestDb::new("errors");
    db.exec("CREATE TABLE t (id INT PRIMARY KEY, v INT); INSERT INTO t VALUES (1, 2);");
    let s = Scratch::new();
    let fails = |src: &str, want: &str| {
        let out = s.run(&["copy", src, "out/e.csv"]);
        assert!(!out.status.success(), "{src} should fail");
        let err = stderr(&out);
        assert!(err.contains("mysql ("), "{src}: {err}");
        assert!(err.contains(want), "{src}: wanted {want:?} in {err}");
        assert!(
            !err.contains("hunter2") && !stdout(&out).contains("hunter2"),
            "{err}"
        );
        err
    };
    fails("mysql://root@127.0.0.1:1/test?table=t", "127.0.0.1:1");
    fails(
        &format!(
            "mysql://tidex_nobody:hunter2@127.0.0.1:3306/{}?table=t",
            db.name
        ),
        "Access denied",
    );
    fails(
        &format!("{SERVER}/tidex_no_such_db_{}?table=t", std::process::id()),
        "Unknown database",
    );
    fails(&db.url("?table=missing"), "doesn't exist");
    let p = s.write(
        "col.toml",
        &format!(
            "[job]\nname = \"col\"\n[source]\ntype = \"mysql\"\nurl = \"{}\"\ntable = \"t\"\ncolumns = [\"id\", \"nope\"]\n[sink]\ntype = \"csv\"\nurl = \"out/c.csv\"\n",
            db.url("")
        ),
    );
    let out = s.run(&["run", p.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("mysql (") && stderr(&out).contains("nope"),
        "{}",
        stderr(&out)
    );

    // A real user with a password: it works and the password shows nowhere.
    let user = format!("tidex_u{}", std::process::id());
    db.user(&user, "hunter2");
    let url = format!("mysql://{user}:hunter2@127.0.0.1:3306/{}?table=t", db.name);
    let out = s.ok(&["copy", &url, "out/pw.csv", "--json", "-v"]);
    let sum = summary(&out);
    assert_eq!(sum["rows"], 1, "{sum}");
    assert!(sum["source"].as_str().unwrap().contains("***"), "{sum}");
    let all = format!("{}{}", stdout(&out), stderr(&out));
    assert!(!all.contains("hunter2"), "{all}");
    let runs = s.ok(&["runs", "--json"]);
    assert!(!stdout(&runs).contains("hunter2"), "{}", stdout(&runs));
    let state = std::fs::read(s.path(".tidex/state.db")).unwrap();
    assert!(
        !state.windows(7).any(|w| w == b"hunter2"),
        "the state store holds the password"
    );
    // Writing with the password is just as quiet.
    let dst = format!("mysql://{user}:hunter2@127.0.0.1:3306/{}?table=t2", db.name);
    let out = s.ok(&["copy", "out/pw.csv", &dst, "--json"]);
    assert!(!stdout(&out).contains("hunter2") && !stderr(&out).contains("hunter2"));
    assert_eq!(db.count("SELECT COUNT(*) FROM t2"), 1);
}

#[test]
fn wide_rows_go_in_smaller_statements_and_arrive_whole() {
    let db = TestDb::new("wide");
    db.exec(
        "CREATE TABLE big (id INT PRIMARY KEY, body LONGTEXT, raw LONGBLOB);
         INSERT INTO big SELECT seq, REPEAT(CONCAT('行', seq), 300000), REPEAT(UNHEX('00FF'), 200000)
         FROM seq_1_to_24;",
    );
    let s = Scratch::new();
    let sum = summary(&s.ok(&[
        "copy",
        &db.url("?table=big"),
        &db.url("?table=copy"),
        "--json",
    ]));
    assert_eq!(sum["rows"], 24, "{sum}");
    let digest = |t: &str| {
        db.rows(&format!(
            "SELECT COUNT(*), SUM(LENGTH(body)), MD5(GROUP_CONCAT(MD5(body), MD5(raw) ORDER BY id)) FROM `{t}`"
        ))
    };
    assert_eq!(digest("big")[0][0], "24");
    assert_eq!(digest("big"), digest("copy"));
}

#[test]
fn killed_read_resumes_with_the_plan_it_started_with() {
    let db = TestDb::new("readresume");
    db.exec(
        "CREATE TABLE src (id BIGINT PRIMARY KEY, v VARCHAR(20));
         INSERT INTO src SELECT seq, CONCAT('v', seq) FROM seq_1_to_40000;",
    );
    let s = Scratch::new();
    let spec = |rate: &str| {
        format!(
            "[job]\nname = \"read\"\n[source]\ntype = \"mysql\"\nurl = \"{}\"\npartitions = 8\n[sink]\ntype = \"parquet\"\nurl = \"out/read/\"\n[limits]\nbatch_rows = 500\nparallelism = 2\n{rate}",
            db.url("?table=src")
        )
    };
    let slow = s.write("slow.toml", &spec("max_rows_per_sec = 8000\n"));
    kill_when(&s, &slow, || committed_parts(&s) >= 2);
    // New rows move MAX(id): a fresh plan would have other ranges.
    db.exec("INSERT INTO src SELECT seq, 'late' FROM seq_40001_to_50000;");
    let fast = s.write("fast.toml", &spec(""));
    let sum = summary(&s.ok(&["run", fast.to_str().unwrap(), "--json"]));
    assert_eq!(sum["resumed"], true, "{sum}");
    assert!(sum["partitions_skipped"].as_i64().unwrap() >= 2, "{sum}");
    assert_eq!(sum["rows"], 40_000, "{sum}");
    let mut ids: Vec<i64> = column_text(&read_batches(&s.path("out/read")), "id")
        .iter()
        .map(|x| x.parse().unwrap())
        .collect();
    ids.sort();
    assert_eq!(ids, (1..=40_000).collect::<Vec<_>>());
}
