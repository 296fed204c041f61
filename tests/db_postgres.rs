//! PostgreSQL source and sink against the real server on 127.0.0.1:5432:
//! every mapped type round-trips through Parquet, partitions and
//! incremental cursors deliver every row exactly once, a killed run
//! resumes without doubling a partition, identifiers cannot inject SQL,
//! and connection errors name the connector without leaking passwords.
//!
//! Each test works in its own schema, dropped at the end.

mod common;
use common::*;
use std::process::Command;

const PG: &str = "postgres://postgres@127.0.0.1:5432/test";

/// A schema of its own, dropped when the test ends.
struct Schema(String);

impl Schema {
    fn new(name: &str) -> Self {
        let s = format!("tidex_t_{}_{name}", std::process::id());
        psql(&format!(
            "DROP SCHEMA IF EXISTS {s} CASCADE; CREATE SCHEMA {s}"
        ));
        Schema(s)
    }

    fn url(&self, table: &str) -> String {
        format!("{PG}?table={}.{table}", self.0)
    }

    fn t(&self, table: &str) -> String {
        format!("{}.{table}", self.0)
    }
}

impl Drop for Schema {
    fn drop(&mut self) {
        let _ = Command::new("psql")
            .args([
                "-h",
                "127.0.0.1",
                "-U",
                "postgres",
                "-d",
                "test",
                "-qc",
                &format!("DROP SCHEMA IF EXISTS {} CASCADE", self.0),
            ])
            .output();
    }
}

const ALL_TYPES: &str = "
    id bigint PRIMARY KEY, s smallint, i integer, f4 real, f8 double precision,
    n numeric(12,2), big numeric(38,10), nu numeric, t text, v varchar(10), c char(3), b boolean,
    d date, tm time, ts timestamp, tz timestamptz, iv interval, u uuid, j json, jb jsonb,
    by bytea, ai integer[], at text[], an numeric(6,2)[]";

const ALL_ROWS: &str = "
    (1, 1, 2, 1.5, 'NaN', 1234567890.12, 9999999999999999999999999999.9999999999,
     123456789012345678901234567890.123456789, '中文名字', '', 'ab', true,
     '1900-01-01', '23:59:59.999999', '1969-12-31 23:59:59.5', '9999-12-31 23:59:59.999999+00',
     '1 year 2 mons 3 days 04:05:06.7', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '{\"a\": 1}',
     '{\"b\": [1, 2], \"名\": null}', '\\xdeadbeef00', '{1,NULL,3}', '{\"x\",\"中\",NULL}', '{1.50,-2.25}'),
    (2, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
     NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
    (3, -32768, -2147483648, -1e30, 1e300, -9999999999.99, -9999999999999999999999999999.9999999999,
     'NaN', 'tab\there \"quoted\" line\nbreak', 'x', '   ', false,
     '0001-01-01', '00:00', '0001-01-01 00:00:00', '1970-01-01 00:00:00+00', '-1 days -00:00:00.000001',
     '00000000-0000-0000-0000-000000000000', 'null', '[]', '\\x', '{}', '{}', '{}'),
    (4, 32767, 2147483647, 'Infinity', '-Infinity', 0.01, 0.0000000001, '-0.000000000000000000001',
     repeat('长', 1000), '0123456789', 'xyz', NULL, '2262-04-11', '12:00', '2038-01-19 03:14:08',
     '1901-12-13 20:45:52+08', '0', 'ffffffff-ffff-ffff-ffff-ffffffffffff', '{}', '{}',
     '\\x00ff', '{NULL}', '{\"\"}', NULL)";

/// Columns normalized so a table created from the Parquet file compares
/// equal to the original (json becomes jsonb, char/varchar become text).
const NORMALIZED: &str = "id, s, i, f4, f8, n, big, nu::numeric, t, v::text, rtrim(c::text), b, d, tm, ts, tz, iv, u, j::jsonb, jb, by, ai, at, an";

#[test]
fn every_type_round_trips_through_parquet() {
    let s = Schema::new("types");
    psql(&format!(
        "CREATE TABLE {t} ({ALL_TYPES}); INSERT INTO {t} VALUES {ALL_ROWS}",
        t = s.t("src")
    ));
    let x = Scratch::new();
    let o = x.ok(&["copy", &s.url("src"), "out/types.parquet", "--json"]);
    assert_eq!(summary(&o)["rows"], 4);
    let batches = read_batches(&x.path("out/types.parquet"));
    let schema = batches[0].schema();
    let ty = |c: &str| schema.field_with_name(c).unwrap().data_type().to_string();
    assert_eq!(ty("n"), "Decimal128(12, 2)");
    assert_eq!(ty("big"), "Decimal128(38, 10)");
    assert_eq!(ty("nu"), "Utf8");
    assert_eq!(ty("tz"), "Timestamp(µs, \"+00:00\")");
    assert_eq!(ty("ai"), "List(Int32)");
    assert_eq!(ty("u"), "FixedSizeBinary(16)");
    let texts = column_text(&batches, "nu");
    assert!(
        texts.contains(&"123456789012345678901234567890.123456789".to_string()),
        "{texts:?}"
    );
    assert!(texts.contains(&"NaN".to_string()));
    let ts = column_text(&batches, "ts");
    assert!(
        ts.iter().any(|v| v.starts_with("1969-12-31T23:59:59.5")),
        "{ts:?}"
    );
    let v = column_text(&batches, "v");
    assert!(
        v.contains(&String::new()),
        "empty string kept apart from NULL: {v:?}"
    );

    // Back into PostgreSQL: a new table created from the Parquet schema.
    x.ok(&["copy", "out/types.parquet", &s.url("back")]);
    let want = pg_checksum(&format!("SELECT {NORMALIZED} FROM {}", s.t("src")));
    let got = pg_checksum(&format!("SELECT {NORMALIZED} FROM {}", s.t("back")));
    assert!(want.starts_with("4:"), "{want}");
    assert_eq!(got, want);
    // Types came back too (interval and unconstrained numeric included).
    let types = psql(&format!(
        "SELECT string_agg(format_type(atttypid, atttypmod), ',' ORDER BY attnum) FROM pg_attribute WHERE attrelid = '{}'::regclass AND attnum > 0",
        s.t("back")
    ));
    assert!(
        types.contains("numeric(12,2),numeric(38,10),numeric,text"),
        "{types}"
    );
    assert!(
        types.contains("interval,uuid,jsonb,jsonb,bytea,integer[],text[],numeric(6,2)[]"),
        "{types}"
    );

    // And into an existing table of the original types.
    psql(&format!(
        "CREATE TABLE {} (LIKE {})",
        s.t("same"),
        s.t("src")
    ));
    x.ok(&["copy", "out/types.parquet", &s.url("same")]);
    let got = pg_checksum(&format!("SELECT {NORMALIZED} FROM {}", s.t("same")));
    assert_eq!(got, want);
}

#[test]
fn fixture_round_trips_and_reads_in_key_ranges() {
    let s = Schema::new("people");
    let x = Scratch::new();
    let people = fixtures().join("people.parquet");
    x.ok(&["copy", people.to_str().unwrap(), &s.url("people")]);
    assert_eq!(
        psql(&format!("SELECT count(*) FROM {}", s.t("people"))),
        "1000"
    );
    let o = x.ok(&[
        "copy",
        &format!("{}&partition_by=id&partitions=5", s.url("people")),
        "out/people.parquet",
        "--json",
        "--name",
        "pg-people",
    ]);
    let sum = summary(&o);
    assert_eq!(sum["rows"], 1000);
    assert_eq!(sum["partitions"], 5, "{sum}");
    assert!(!o.stdout.is_empty());
    let got = fingerprint(&read_batches(&x.path("out/people.parquet")));
    assert_eq!(got, fixture_fingerprint());
    // A query and a projection.
    let o = x.ok(&[
        "copy",
        &format!(
            "{PG}?query=SELECT id, name FROM {} WHERE id <= 10",
            s.t("people")
        ),
        "out/q.csv",
        "--json",
    ]);
    assert_eq!(summary(&o)["rows"], 10);
    let body = std::fs::read_to_string(x.path("out/q.csv")).unwrap();
    assert!(body.starts_with("id,name\n"), "{body}");
}

#[test]
fn partition_key_with_nulls_loses_no_row() {
    let s = Schema::new("nullkey");
    psql(&format!(
        "CREATE TABLE {t} (k int, v text); INSERT INTO {t} SELECT CASE WHEN g % 10 = 0 THEN NULL ELSE g END, 'v' || g FROM generate_series(1, 1000) g",
        t = s.t("t")
    ));
    let x = Scratch::new();
    let o = x.ok(&[
        "copy",
        &format!("{}&partition_by=k&partitions=7", s.url("t")),
        "out/t.parquet",
        "--json",
    ]);
    assert_eq!(summary(&o)["partitions"], 7);
    assert_eq!(summary(&o)["rows"], 1000);
}

fn write_spec(x: &Scratch, name: &str, body: &str) -> String {
    x.write(name, body).to_str().unwrap().to_string()
}

#[test]
fn incremental_runs_read_only_new_rows() {
    let s = Schema::new("incr");
    psql(&format!(
        "CREATE TABLE {t} (id int PRIMARY KEY, updated_at timestamptz, v text);
         INSERT INTO {t} SELECT g, TIMESTAMPTZ '2026-01-01' + g * interval '1 second', 'a' FROM generate_series(1, 50) g",
        t = s.t("t")
    ));
    let x = Scratch::new();
    let spec = write_spec(
        &x,
        "incr.toml",
        &format!(
            "[job]\nname = \"incr\"\n[source]\ntype = \"postgres\"\nurl = \"{PG}\"\ntable = \"{}\"\nincremental = {{ cursor = \"updated_at\" }}\n[sink]\ntype = \"parquet\"\nurl = \"out/batch.parquet\"\n",
            s.t("t")
        ),
    );
    let ids = |x: &Scratch| -> Vec<i64> {
        let mut v: Vec<i64> = column_text(&read_batches(&x.path("out/batch.parquet")), "id")
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        v.sort();
        v
    };
    x.ok(&["run", &spec]);
    assert_eq!(ids(&x), (1..=50).collect::<Vec<_>>());
    // New rows and an update move past the mark; older rows do not.
    psql(&format!(
        "INSERT INTO {t} SELECT g, TIMESTAMPTZ '2026-02-01' + g * interval '1 second', 'b' FROM generate_series(51, 60) g;
         UPDATE {t} SET updated_at = TIMESTAMPTZ '2026-03-01', v = 'changed' WHERE id = 7",
        t = s.t("t")
    ));
    x.ok(&["run", &spec]);
    let mut want: Vec<i64> = (51..=60).collect();
    want.insert(0, 7);
    assert_eq!(ids(&x), want);
    // Nothing new: an empty delivery.
    let o = x.ok(&["run", &spec, "--json"]);
    assert_eq!(summary(&o)["rows"], 0);
}

#[test]
fn killed_postgres_to_postgres_run_resumes_exactly_once() {
    let s = Schema::new("resume");
    psql(&format!(
        "CREATE TABLE {t} (id bigint PRIMARY KEY, name text, amount numeric(12,2));
         INSERT INTO {t} SELECT g, 'name-' || g, g % 1000 + 0.25 FROM generate_series(1, 20000) g",
        t = s.t("src")
    ));
    let x = Scratch::new();
    let spec = |rate: &str| {
        write_spec(
            &x,
            "job.toml",
            &format!(
                "[job]\nname = \"pg-resume\"\n[source]\ntype = \"postgres\"\nurl = \"{}\"\npartitions = 10\n[sink]\ntype = \"postgres\"\nurl = \"{}\"\n[limits]\nbatch_rows = 500\nparallelism = 2\n{rate}",
                s.url("src"),
                s.url("dst")
            ),
        )
    };
    let slow = spec("max_rows_per_sec = 4000");
    kill_when(&x, std::path::Path::new(&slow), || committed_parts(&x) >= 3);
    // Forget one committed partition in the state store, as if the process
    // had died between the table's commit and the state store's.
    let conn = rusqlite::Connection::open(x.path(".tidex/state.db")).unwrap();
    conn.execute(
        "DELETE FROM parts WHERE part_index = (SELECT MIN(part_index) FROM parts)",
        [],
    )
    .unwrap();
    drop(conn);
    // Rows added meanwhile beyond the planned key range are not read by
    // the resumed run: it keeps its plan.
    psql(&format!(
        "INSERT INTO {t} VALUES (50000, 'late', 1)",
        t = s.t("src")
    ));
    let fast = spec("");
    let o = x.ok(&["run", &fast, "--json"]);
    let sum = summary(&o);
    assert_eq!(sum["resumed"], true, "{sum}");
    assert_eq!(sum["rows"], 20000, "{sum}");
    assert_eq!(
        psql(&format!(
            "SELECT count(*) || ' ' || count(DISTINCT id) || ' ' || sum(amount) FROM {}",
            s.t("dst")
        )),
        psql(&format!(
            "SELECT count(*) || ' ' || count(DISTINCT id) || ' ' || sum(amount) FROM {} WHERE id <= 20000",
            s.t("src")
        ))
    );
    // The next run is a new one and sees the late row (append mode).
    let o = x.ok(&["run", &fast, "--json"]);
    assert_eq!(summary(&o)["rows"], 20001);
}

#[test]
fn upsert_and_truncate_insert() {
    let s = Schema::new("modes");
    psql(&format!(
        "CREATE TABLE {t} (id int PRIMARY KEY, v text); INSERT INTO {t} VALUES (1, 'old'), (2, 'old')",
        t = s.t("dst")
    ));
    let x = Scratch::new();
    x.write("in.csv", "id,v\n2,new\n3,new\n");
    x.ok(&[
        "copy",
        "in.csv",
        &format!("{}&mode=upsert&key=id", s.url("dst")),
    ]);
    assert_eq!(
        psql(&format!(
            "SELECT string_agg(id || '=' || v, ',' ORDER BY id) FROM {}",
            s.t("dst")
        )),
        "1=old,2=new,3=new"
    );
    x.ok(&[
        "copy",
        "in.csv",
        &format!("{}&mode=truncate-insert", s.url("dst")),
        "--name",
        "trunc",
    ]);
    assert_eq!(
        psql(&format!(
            "SELECT string_agg(id || '=' || v, ',' ORDER BY id) FROM {}",
            s.t("dst")
        )),
        "2=new,3=new"
    );
    // Upsert on a column without a unique index is refused up front.
    let o = x.run(&[
        "copy",
        "in.csv",
        &format!("{}&mode=upsert&key=v", s.url("dst")),
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("unique index"), "{}", stderr(&o));
}

#[test]
fn identifiers_cannot_inject_sql() {
    let s = Schema::new("inject");
    psql(&format!(
        "CREATE TABLE {t} (id int); CREATE TABLE {x} (id int)",
        t = s.t("people"),
        x = s.t("x")
    ));
    let x = Scratch::new();
    for url in [
        format!("{PG}?table={}.people;drop table {}", s.0, s.t("x")),
        format!(
            "{PG}?table={}.people&partition_by=id;drop table {}",
            s.0,
            s.t("x")
        ),
        format!("{PG}?table={}.people\"; drop table x; --", s.0),
    ] {
        let o = x.run(&["copy", &url, "out.parquet"]);
        assert_eq!(o.status.code(), Some(2), "{url}: {}", stderr(&o));
        assert!(
            stderr(&o).contains("not a valid identifier"),
            "{}",
            stderr(&o)
        );
    }
    x.write("in.csv", "id\n1\n");
    let o = x.run(&[
        "copy",
        "in.csv",
        &format!("{PG}?table={}.x;drop table {}", s.0, s.t("people")),
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert_eq!(
        psql(&format!(
            "SELECT count(*) FROM pg_tables WHERE schemaname = '{}'",
            s.0
        )),
        "2"
    );
}

#[test]
fn errors_name_the_connector_and_hide_the_password() {
    let s = Schema::new("errs");
    psql(&format!(
        "CREATE TABLE {} (id int, v numeric(12,2), t timestamp)",
        s.t("t")
    ));
    psql(&format!(
        "INSERT INTO {} VALUES (1, 1.5, now()), (2, 'NaN', now()), (3, 2, 'infinity')",
        s.t("t")
    ));
    let x = Scratch::new();
    let o = x.run(&[
        "copy",
        "postgres://bob:sekrit-pw@127.0.0.1:1/test?table=t",
        "out.parquet",
    ]);
    let e = stderr(&o);
    assert_eq!(o.status.code(), Some(4), "{e}");
    assert!(
        e.contains("postgres") && e.contains("cannot connect"),
        "{e}"
    );
    assert!(!e.contains("sekrit-pw"), "{e}");
    let o = x.run(&[
        "copy",
        "postgres://no_such_role_tidex:sekrit-pw@127.0.0.1:5432/test?table=t",
        "out.parquet",
    ]);
    let e = stderr(&o);
    assert!(e.contains("no_such_role_tidex"), "{e}");
    assert!(!e.contains("sekrit-pw"), "{e}");
    let o = x.run(&["copy", &s.url("missing"), "out.parquet"]);
    assert!(stderr(&o).contains("does not exist"), "{}", stderr(&o));
    let spec = write_spec(
        &x,
        "cols.toml",
        &format!(
            "[job]\nname = \"cols\"\n[source]\ntype = \"postgres\"\nurl = \"{}\"\ncolumns = [\"id\", \"nope\"]\n[sink]\ntype = \"parquet\"\nurl = \"o.parquet\"\n",
            s.url("t")
        ),
    );
    let o = x.run(&["run", &spec]);
    assert!(
        stderr(&o).contains("column `nope` does not exist"),
        "{}",
        stderr(&o)
    );
    // NaN in numeric(12,2) and an infinite timestamp cannot be Arrow
    // values: the run fails naming row and column, or dead-letters them.
    let o = x.run(&["copy", &s.url("t"), "o.parquet"]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert!(stderr(&o).contains("column `v`"), "{}", stderr(&o));
    let o = x.ok(&[
        "copy",
        &s.url("t"),
        "o2.parquet",
        "--on-error",
        "skip",
        "--dead-letter",
        "dead",
        "--json",
    ]);
    assert_eq!(summary(&o)["rows"], 1);
    assert_eq!(summary(&o)["dirty_rows"], 2);
    let dead: String = std::fs::read_dir(x.path("dead"))
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap_or_default())
        .collect();
    assert!(
        dead.contains("infinity") && dead.contains("\"column\":\"t\""),
        "{dead}"
    );
}
