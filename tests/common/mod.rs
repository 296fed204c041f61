//! Helpers for the end-to-end tests: run the real `tidex` binary in a
//! scratch directory and read back what it wrote.
#![allow(dead_code)]

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::DataType;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The repository's fixtures directory.
pub fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

/// A scratch directory with its own state store.
pub struct Scratch {
    pub dir: tempfile::TempDir,
}

impl Scratch {
    pub fn new() -> Self {
        Scratch {
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    pub fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    /// A `tidex` command running in the scratch directory.
    pub fn cmd(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_tidex"));
        c.current_dir(self.dir.path())
            .env("TIDEX_STATE", self.path(".tidex/state.db"))
            .env_remove("TIDEX_LOG");
        c
    }

    /// Runs tidex with `args`; returns the output.
    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd().args(args).output().expect("running tidex")
    }

    /// Runs tidex and asserts success.
    pub fn ok(&self, args: &[&str]) -> Output {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "tidex {args:?} failed: {}\n{}",
            stderr(&out),
            stdout(&out)
        );
        out
    }

    /// Writes a file under the scratch directory.
    pub fn write(&self, name: &str, body: &str) -> PathBuf {
        let p = self.path(name);
        if let Some(d) = p.parent() {
            std::fs::create_dir_all(d).unwrap();
        }
        std::fs::write(&p, body).unwrap();
        p
    }
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The JSON summary printed by `--json`.
pub fn summary(o: &Output) -> serde_json::Value {
    let text = stdout(o);
    let line = text
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .unwrap_or_else(|| panic!("no JSON summary in {text}"));
    serde_json::from_str(line).unwrap()
}

/// Every data file under `path` (or `path` itself), sorted, skipping hidden ones.
pub fn data_files(path: &Path) -> Vec<PathBuf> {
    if path.is_file() {
        return vec![path.to_path_buf()];
    }
    let mut v: Vec<PathBuf> = std::fs::read_dir(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| !p.file_name().unwrap().to_string_lossy().starts_with('.'))
        .collect();
    v.sort();
    v
}

/// Reads any output (file or directory of parts) written by tidex.
pub fn read_batches(path: &Path) -> Vec<RecordBatch> {
    let mut out = Vec::new();
    for f in data_files(path) {
        let ext = f.extension().unwrap().to_string_lossy().to_string();
        let file = std::fs::File::open(&f).unwrap();
        match ext.as_str() {
            "parquet" => {
                let r =
                    parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
                        .unwrap()
                        .build()
                        .unwrap();
                out.extend(r.map(|b| b.unwrap()));
            }
            "arrow" => {
                let r = arrow::ipc::reader::FileReader::try_new(file, None).unwrap();
                out.extend(r.map(|b| b.unwrap()));
            }
            "csv" => {
                let fmt = arrow::csv::reader::Format::default().with_header(true);
                let (schema, _) = fmt
                    .infer_schema(std::fs::File::open(&f).unwrap(), Some(10_000))
                    .unwrap();
                // Read every column as text: the comparison is on values as written.
                let schema = arrow::datatypes::Schema::new(
                    schema
                        .fields()
                        .iter()
                        .map(|fl| arrow::datatypes::Field::new(fl.name(), DataType::Utf8, true))
                        .collect::<Vec<_>>(),
                );
                let r = arrow::csv::ReaderBuilder::new(schema.into())
                    .with_header(true)
                    .build(file)
                    .unwrap();
                out.extend(r.map(|b| b.unwrap()));
            }
            "jsonl" => {
                let mut reader = std::io::BufReader::new(std::fs::File::open(&f).unwrap());
                let (schema, _) =
                    arrow::json::reader::infer_json_schema(&mut reader, None).unwrap();
                let r = arrow::json::ReaderBuilder::new(schema.into())
                    .build(std::io::BufReader::new(file))
                    .unwrap();
                out.extend(r.map(|b| b.unwrap()));
            }
            other => panic!("unexpected output file {} ({other})", f.display()),
        }
    }
    out
}

/// Values of column `name` rendered as text, across batches.
pub fn column_text(batches: &[RecordBatch], name: &str) -> Vec<String> {
    let mut v = Vec::new();
    for b in batches {
        let col = b
            .column_by_name(name)
            .unwrap_or_else(|| panic!("no column {name} in {:?}", b.schema()));
        let col = arrow::compute::cast(col, &DataType::Utf8).unwrap();
        let s = col.as_string::<i32>();
        for i in 0..s.len() {
            v.push(if s.is_null(i) {
                "<null>".to_string()
            } else {
                s.value(i).to_string()
            });
        }
    }
    v
}

/// `id|name|phone|id_card` of every row, sorted: a content fingerprint that
/// survives every format.
pub fn fingerprint(batches: &[RecordBatch]) -> Vec<String> {
    let cols: Vec<Vec<String>> = ["id", "name", "phone", "id_card"]
        .iter()
        .map(|c| column_text(batches, c))
        .collect();
    let mut rows: Vec<String> = (0..cols[0].len())
        .map(|i| {
            cols.iter()
                .map(|c| c[i].as_str())
                .collect::<Vec<_>>()
                .join("|")
        })
        .collect();
    rows.sort();
    rows
}

/// The same fingerprint straight from the fixture CSV.
pub fn fixture_fingerprint() -> Vec<String> {
    let text = std::fs::read_to_string(fixtures().join("people.csv")).unwrap();
    let mut rows: Vec<String> = text
        .lines()
        .skip(1)
        .map(|l| l.split(',').take(4).collect::<Vec<_>>().join("|"))
        .collect();
    rows.sort();
    rows
}

/// Partitions committed so far in the scratch directory's state store.
pub fn committed_parts(s: &Scratch) -> i64 {
    let db = s.path(".tidex/state.db");
    if !db.exists() {
        return 0;
    }
    let Ok(conn) = rusqlite::Connection::open(&db) else {
        return 0;
    };
    conn.query_row("SELECT COUNT(*) FROM parts", [], |r| r.get(0))
        .unwrap_or(0)
}

/// Starts `tidex run SPEC` and kills it with SIGKILL as soon as `ready`
/// holds (checked every 20 ms); fails if the run ends first or nothing
/// happens in 60 s.
pub fn kill_when(s: &Scratch, spec: &Path, ready: impl Fn() -> bool) {
    use std::time::{Duration, Instant};
    let mut child = s
        .cmd()
        .args(["run", spec.to_str().unwrap(), "--no-progress"])
        .spawn()
        .unwrap();
    let t = Instant::now();
    while !ready() {
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "the run was not ready to be killed within 60 s"
        );
        if let Some(st) = child.try_wait().unwrap() {
            panic!("run finished before it could be killed: {st}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
}

/// Runs SQL with psql against the local PostgreSQL (`test` database) and
/// returns its unaligned output; fails the test if psql fails.
pub fn psql(sql: &str) -> String {
    let o = Command::new("psql")
        .args([
            "-h",
            "127.0.0.1",
            "-U",
            "postgres",
            "-d",
            "test",
            "-v",
            "ON_ERROR_STOP=1",
            "-qAt",
            "-c",
            sql,
        ])
        .output()
        .expect("psql runs");
    assert!(
        o.status.success(),
        "psql failed: {sql}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

/// `count:md5` over the sorted text of the rows of a PostgreSQL `select`.
pub fn pg_checksum(select: &str) -> String {
    psql(&format!(
        "SELECT count(*) || ':' || coalesce(md5(string_agg(r, '|' ORDER BY r)), '') FROM (SELECT x::text AS r FROM ({select}) x) y"
    ))
}

/// Relative path → BLAKE3 of every file under `root`.
pub fn tree_hashes(root: &Path) -> std::collections::BTreeMap<String, String> {
    fn walk(root: &Path, dir: &Path, out: &mut std::collections::BTreeMap<String, String>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(root, &p, out);
            } else {
                let rel = p.strip_prefix(root).unwrap().to_string_lossy().to_string();
                let data = std::fs::read(&p).unwrap();
                out.insert(rel, blake3::hash(&data).to_hex().to_string());
            }
        }
    }
    let mut out = std::collections::BTreeMap::new();
    walk(root, root, &mut out);
    out
}
