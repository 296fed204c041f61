//! Round trips across databases through the real binary: PostgreSQL →
//! MariaDB → PostgreSQL and SQLite → PostgreSQL, content compared by a
//! checksum over sorted rows.

mod common;
use common::*;
use std::process::Command;

const PG: &str = "postgres://postgres@127.0.0.1:5432/test";

fn mariadb(sql: &str) -> String {
    let o = Command::new("mariadb")
        .args(["-h127.0.0.1", "-uroot", "-N", "-e", sql])
        .output()
        .expect("mariadb runs");
    assert!(
        o.status.success(),
        "mariadb failed: {sql}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

/// A PostgreSQL schema and a MariaDB database of the test's own.
struct Places {
    name: String,
}

impl Places {
    fn new(tag: &str) -> Self {
        let name = format!("tidex_x_{}_{tag}", std::process::id());
        psql(&format!(
            "DROP SCHEMA IF EXISTS {name} CASCADE; CREATE SCHEMA {name}"
        ));
        mariadb(&format!(
            "DROP DATABASE IF EXISTS {name}; CREATE DATABASE {name}"
        ));
        Places { name }
    }
    fn pg(&self, table: &str) -> String {
        format!("{PG}?table={}.{table}", self.name)
    }
    fn my(&self, table: &str) -> String {
        format!("mysql://root@127.0.0.1:3306/{}?table={table}", self.name)
    }
}

impl Drop for Places {
    fn drop(&mut self) {
        let _ = Command::new("psql")
            .args(["-h", "127.0.0.1", "-U", "postgres", "-d", "test", "-qc"])
            .arg(format!("DROP SCHEMA IF EXISTS {} CASCADE", self.name))
            .output();
        let _ = Command::new("mariadb")
            .args(["-h127.0.0.1", "-uroot", "-e"])
            .arg(format!("DROP DATABASE IF EXISTS {}", self.name))
            .output();
    }
}

#[test]
fn postgres_to_mariadb_to_postgres_keeps_every_value() {
    let p = Places::new("pmp");
    psql(&format!(
        "CREATE TABLE {n}.src (id bigint PRIMARY KEY, name text, amount numeric(12,2), big numeric(38,10),
            ts timestamp, d date, b boolean, f double precision, raw bytea, small smallint);
         INSERT INTO {n}.src VALUES
            (1, '王小明 😀', 1234567890.12, 9999999999999999999999999999.9999999999, '1969-07-20 20:17:40.123456',
             '1900-01-01', true, 1.5e-300, '\\x00ff10', -32768),
            (2, '', -0.01, -0.0000000001, '9999-12-31 23:59:59.999999', '9999-12-31', false, -0.0, '\\x', 32767),
            (3, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL);
         INSERT INTO {n}.src SELECT g, 'name-' || g, g * 1.25, g, TIMESTAMP '2026-01-01' + g * interval '1 minute',
            DATE '2026-01-01' + g, g % 2 = 0, g / 7.0, decode(md5(g::text), 'hex'), g % 100
            FROM generate_series(4, 3000) g",
        n = p.name
    ));
    let x = Scratch::new();
    let o = x.ok(&["copy", &p.pg("src"), &p.my("mid"), "--json"]);
    assert_eq!(summary(&o)["rows"], 3000);
    assert_eq!(
        mariadb(&format!("SELECT count(*) FROM {}.mid", p.name)),
        "3000"
    );
    let o = x.ok(&["copy", &p.my("mid"), &p.pg("back"), "--json"]);
    assert_eq!(summary(&o)["rows"], 3000);
    let cols = "id, name, amount, big, ts, d, b, f, raw, small";
    let want = pg_checksum(&format!("SELECT {cols} FROM {}.src", p.name));
    assert!(want.starts_with("3000:"), "{want}");
    assert_eq!(
        pg_checksum(&format!("SELECT {cols} FROM {}.back", p.name)),
        want
    );
}

#[test]
fn sqlite_to_postgres_and_back_out() {
    let p = Places::new("sqp");
    let x = Scratch::new();
    let people = fixtures().join("people.parquet");
    x.ok(&[
        "copy",
        people.to_str().unwrap(),
        "sqlite://people.db?table=people",
    ]);
    let o = x.ok(&[
        "copy",
        "sqlite://people.db?table=people",
        &p.pg("people"),
        "--json",
    ]);
    assert_eq!(summary(&o)["rows"], 1000);
    x.ok(&["copy", &p.pg("people"), "out/people.parquet"]);
    assert_eq!(
        fingerprint(&read_batches(&x.path("out/people.parquet"))),
        fixture_fingerprint()
    );
}
