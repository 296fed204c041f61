//! Per-core throughput of the connector kernels on people-like records:
//! the CSV source (parse and type conversion into Arrow), the Parquet sink
//! (zstd-1 encoding of those batches) and the PostgreSQL binary COPY
//! decoder (a COPY buffer made here from known rows, so no server is needed).
//!
//!     cargo bench -p tidex-connectors --bench kernels
//!     bash benches/criterion.sh save main      # then, after a change:
//!     bash benches/criterion.sh compare main
//!
//! Each kernel runs on one thread: the CSV source's partitions are read one
//! after another, the sink writes one partition.

use arrow::array::{Array, AsArray};
use arrow::datatypes::{Decimal128Type, Int32Type, Int64Type, TimestampMicrosecondType};
use arrow::record_batch::RecordBatch;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tidex_connectors::db::postgres::decode::{arrow_field, oid, Col, RowDecoder};
use tidex_connectors::db::postgres::encode::numeric_from_text;
use tidex_engine::connector::{BuildContext, PartitionInfo, RunInfo};
use tidex_engine::dirty::{ErrorBudget, Rejects};
use tidex_engine::spec::ErrorsSection;
use tidex_engine::JobSpec;

const SURNAMES: [&str; 12] = [
    "王", "李", "张", "刘", "陈", "杨", "黄", "赵", "吴", "周", "欧阳", "司马",
];
const GIVEN: [&str; 12] = [
    "伟", "芳", "娜", "秀英", "敏", "静", "丽", "强", "磊", "军", "子涵", "浩然",
];
const CITIES: [&str; 5] = [
    "北京市朝阳区",
    "上海市浦东新区",
    "广州市天河区",
    "杭州市西湖区",
    "成都市武侯区",
];

/// One people-like record, as benches/gen_people.py writes them: values do
/// not repeat (a repeated sample would flatter compression and parsing).
struct Person {
    id: i64,
    name: String,
    phone: String,
    id_card: String,
    dept: i32,
    amount: String,
    created: String,
    address: String,
}

fn people(n: usize) -> Vec<Person> {
    let mut x: u64 = 42;
    let mut next = move || {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        x >> 33
    };
    (1..=n as i64)
        .map(|id| {
            let r = next();
            let mut address = format!("{}人民路{}号", CITIES[(r % 5) as usize], 1 + next() % 999);
            match next() % 100 {
                0..=4 => {
                    address.push_str(&format!(",{}栋{}室", 1 + next() % 30, 101 + next() % 2899))
                }
                5 => address.push_str("\"东门\""),
                _ => {}
            }
            Person {
                id,
                name: format!(
                    "{}{}",
                    SURNAMES[(next() % 12) as usize],
                    GIVEN[(next() % 12) as usize]
                ),
                phone: format!("1{}{:09}", 3 + next() % 7, next() % 1_000_000_000),
                id_card: format!(
                    "{:06}{:04}{:02}{:02}{:03}{}",
                    110000 + next() % 900000,
                    1940 + next() % 67,
                    1 + next() % 12,
                    1 + next() % 28,
                    next() % 1000,
                    b"0123456789X"[(next() % 11) as usize] as char
                ),
                dept: 100 + (next() % 900) as i32,
                amount: format!("{}.{:02}", next() % 100_000, next() % 100),
                created: format!(
                    "{}-{:02}-{:02} {:02}:{:02}:{:02}",
                    2020 + next() % 6,
                    1 + next() % 12,
                    1 + next() % 28,
                    next() % 24,
                    next() % 60,
                    next() % 60
                ),
                address,
            }
        })
        .collect()
}

fn csv_text(rows: &[Person]) -> Vec<u8> {
    let mut out = b"id,name,phone,id_card,dept_code,amount,created_at,address\n".to_vec();
    for p in rows {
        let addr = if p.address.contains([',', '"']) {
            format!("\"{}\"", p.address.replace('"', "\"\""))
        } else {
            p.address.clone()
        };
        writeln!(
            out,
            "{},{},{},{},{},{},{},{}",
            p.id, p.name, p.phone, p.id_card, p.dept, p.amount, p.created, addr
        )
        .unwrap();
    }
    out
}

fn ctx(rt: &tokio::runtime::Runtime, spec: &JobSpec) -> BuildContext {
    BuildContext {
        io: rt.handle().clone(),
        batch_rows: spec.limits.batch_rows,
        policy: spec.errors.policy,
        parallelism: 2,
        job: spec.job.name.clone(),
        source_state: Default::default(),
    }
}

fn rejects() -> Rejects {
    let budget = Arc::new(ErrorBudget::new(&ErrorsSection::default(), 0));
    Rejects::new(budget, "bench", 0, 0)
}

/// A job reading `csv` with the people columns typed as tidex's CSV→Parquet
/// copy infers them, writing Parquet parts under `out`.
fn job(csv: &std::path::Path, out: &std::path::Path) -> JobSpec {
    JobSpec::parse(&format!(
        "[job]\nname = \"bench\"\n[source]\ntype = \"csv\"\nurl = \"{}\"\n\
         [sink]\ntype = \"parquet\"\nurl = \"{}/\"\ncompression = \"zstd\"\ncompression_level = 1\n",
        csv.display(),
        out.display()
    ))
    .unwrap()
}

/// Every batch of every partition, read on this thread.
fn read_all(source: &dyn tidex_engine::connector::Source) -> Vec<RecordBatch> {
    let mut rejects = rejects();
    let mut out = Vec::new();
    for p in 0..source.partitions().len() {
        let mut r = source.open(p).unwrap();
        while let Some(b) = r.next_batch(&mut rejects).unwrap() {
            out.push(b);
        }
    }
    out
}

fn csv_and_parquet(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("people.csv");
    let text = csv_text(&people(100_000));
    std::fs::write(&csv, &text).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let registry = tidex_connectors::registry();
    let spec = job(&csv, &dir.path().join("out"));
    let cx = ctx(&rt, &spec);
    let source = registry.build_source(&spec, &cx).unwrap();
    let batches = read_all(source.as_ref());
    let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
    assert_eq!(rows, 100_000, "the CSV source read every row");

    let mut g = c.benchmark_group("people_100k_rows");
    g.sample_size(10);
    g.throughput(Throughput::Bytes(text.len() as u64));
    g.bench_function("csv_parse", |b| {
        b.iter(|| {
            let source = registry.build_source(&spec, &cx).unwrap();
            read_all(source.as_ref())
        })
    });

    // The Parquet sink's encoding of the parsed batches (one partition,
    // zstd-1): open, write, commit. Each iteration is a run of its own;
    // its staged part is discarded outside the timing.
    let sink = registry.build_sink(&spec, &cx).unwrap();
    let schema = batches[0].schema();
    let mut run_id = 0i64;
    g.bench_function("parquet_encode_zstd1", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                run_id += 1;
                let run = RunInfo {
                    job: "bench".into(),
                    run_id,
                    resumed: false,
                    partitions: 1,
                };
                let part = PartitionInfo {
                    index: 0,
                    label: "bench".into(),
                    bytes: text.len() as u64,
                };
                sink.prepare(&run, &schema, &[]).unwrap();
                let t0 = Instant::now();
                let mut w = sink.open(&run, &part, schema.clone()).unwrap();
                for batch in &batches {
                    w.write(batch).unwrap();
                }
                let committed = w.commit().unwrap();
                total += t0.elapsed();
                assert_eq!(committed.rows, rows as u64);
                sink.discard(run_id).unwrap();
            }
            total
        })
    });
    g.finish();
}

/// A `COPY … TO STDOUT (FORMAT binary)` stream of the people rows, as
/// PostgreSQL sends it for a table of (int8, text, text, text, int4,
/// numeric(12,2), timestamp, text).
fn pg_copy_binary(rows: &[Person]) -> Vec<u8> {
    let mut out = b"PGCOPY\n\xff\r\n\0".to_vec();
    out.extend(0i32.to_be_bytes());
    out.extend(0i32.to_be_bytes());
    let field = |out: &mut Vec<u8>, v: &[u8]| {
        out.extend((v.len() as i32).to_be_bytes());
        out.extend(v);
    };
    let pg_epoch = chrono::NaiveDate::from_ymd_opt(2000, 1, 1)
        .unwrap()
        .and_hms_opt(0, 0, 0)
        .unwrap();
    let mut num = Vec::new();
    for p in rows {
        out.extend(8i16.to_be_bytes());
        field(&mut out, &p.id.to_be_bytes());
        field(&mut out, p.name.as_bytes());
        field(&mut out, p.phone.as_bytes());
        field(&mut out, p.id_card.as_bytes());
        field(&mut out, &p.dept.to_be_bytes());
        num.clear();
        numeric_from_text(&p.amount, &mut num).unwrap();
        field(&mut out, &num);
        let ts = chrono::NaiveDateTime::parse_from_str(&p.created, "%Y-%m-%d %H:%M:%S").unwrap();
        let micros = (ts - pg_epoch).num_microseconds().unwrap();
        field(&mut out, &micros.to_be_bytes());
        field(&mut out, p.address.as_bytes());
    }
    out.extend((-1i16).to_be_bytes());
    out
}

fn pg_columns() -> Vec<(arrow::datatypes::Field, u32)> {
    let numeric_12_2 = ((12 << 16) | 2) + 4;
    [
        ("id", oid::INT8, -1),
        ("name", oid::TEXT, -1),
        ("phone", oid::TEXT, -1),
        ("id_card", oid::TEXT, -1),
        ("dept_code", oid::INT4, -1),
        ("amount", oid::NUMERIC, numeric_12_2),
        ("created_at", oid::TIMESTAMP, -1),
        ("address", oid::TEXT, -1),
    ]
    .into_iter()
    .map(|(name, o, typmod)| (arrow_field(name, o, typmod, 0).unwrap(), o))
    .collect()
}

/// Decodes the whole stream into batches of `batch_rows`, as the source
/// does: finish the builders when a batch is full, then go on.
fn decode_all(data: &[u8], batch_rows: usize) -> Vec<Vec<arrow::array::ArrayRef>> {
    let mut dec = RowDecoder::new(
        pg_columns()
            .iter()
            .map(|(f, o)| Col::new(f, *o, 0, batch_rows))
            .collect(),
    );
    let mut pos = 0;
    let mut out = Vec::new();
    while !dec.finished {
        pos += dec.decode(&data[pos..], batch_rows).unwrap();
        assert!(dec.rejected.is_empty(), "{:?}", dec.rejected.first());
        if dec.rows > 0 && (dec.rows == batch_rows || dec.finished) {
            out.push(dec.cols.iter_mut().map(|c| c.finish()).collect());
            dec.rows = 0;
        }
    }
    assert_eq!(pos, data.len(), "the whole stream was consumed");
    out
}

fn pg_decode(c: &mut Criterion) {
    let rows = people(100_000);
    let data = pg_copy_binary(&rows);
    let batches = decode_all(&data, 16384);
    // The decoder must give back exactly what was encoded.
    let n: usize = batches.iter().map(|b| b[0].len()).sum();
    assert_eq!(n, rows.len());
    let first = &batches[0];
    assert_eq!(first[0].as_primitive::<Int64Type>().value(0), 1);
    assert_eq!(first[1].as_string::<i32>().value(0), rows[0].name);
    assert_eq!(first[4].as_primitive::<Int32Type>().value(0), rows[0].dept);
    let amount = first[5].as_primitive::<Decimal128Type>().value(0);
    assert_eq!(
        format!("{}.{:02}", amount / 100, amount % 100),
        rows[0].amount
    );
    assert!(first[6].as_primitive::<TimestampMicrosecondType>().value(0) > 0);
    assert_eq!(first[7].as_string::<i32>().value(0), rows[0].address);

    let mut g = c.benchmark_group("pg_copy_binary_100k_rows");
    g.sample_size(20);
    g.throughput(Throughput::Bytes(data.len() as u64));
    g.bench_function("decode", |b| b.iter(|| decode_all(&data, 16384)));
    g.finish();
}

criterion_group!(benches, csv_and_parquet, pg_decode);
criterion_main!(benches);
