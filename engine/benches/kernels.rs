//! Per-core throughput of the stage kernels, next to the raw crates:
//! AES-256-GCM and SM4-GCM (raw `seal` and the `encrypt` stage on a batch),
//! BLAKE3, and zstd levels 1 and 3 on CSV text; the framed file format's
//! writers (`FrameWriter`, `ZstdBlockWriter`) on one thread and on every
//! core, next to the raw crate on the same 1 MiB chunks; and the `dedupe`
//! stage (keys claimed within a run; keys looked up in the index of earlier
//! runs, 10 million keys by default, `TIDEX_BENCH_DEDUPE_KEYS` to change).
//!
//!     cargo bench -p tidex-engine --bench kernels
//!     cargo bench -p tidex-engine --bench kernels -- --save-baseline main
//!     cargo bench -p tidex-engine --bench kernels -- --baseline main
//!
//! (`bash benches/criterion.sh save|compare NAME` does both crates.)
//!
//! Compare SM4 with `openssl speed -evp sm4-ctr` on the same machine.

use arrow::array::{ArrayRef, Int64Array, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::record_batch::RecordBatch;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tidex_engine::connector::CommittedPart;
use tidex_engine::dirty::{ErrorBudget, Rejects};
use tidex_engine::spec::ErrorsSection;
use tidex_engine::stage::{StagePlan, StageRun};
use tidex_engine::stages::crypt::{Algorithm, Cipher};
use tidex_engine::stages::frame::{FrameKey, FrameOptions, FrameWriter, ZstdBlockWriter};
use tidex_engine::state::{NewRun, RunStatus, StateStore, Totals};
use tidex_engine::{JobSpec, Registry};

fn raw_ciphers(c: &mut Criterion) {
    let data = vec![0x5au8; 64 << 10];
    let mut g = c.benchmark_group("cipher_raw_64KiB");
    g.throughput(Throughput::Bytes(data.len() as u64));
    for (name, alg, key) in [
        ("aes-256-gcm", Algorithm::Aes256Gcm, vec![7u8; 32]),
        ("sm4-gcm", Algorithm::Sm4Gcm, vec![7u8; 16]),
    ] {
        let cipher = Cipher::new(alg, &key).unwrap();
        g.bench_function(name, |b| b.iter(|| cipher.seal(&[1u8; 12], b"aad", &data)));
    }
    g.finish();
}

fn batch(rows: usize) -> RecordBatch {
    let ids: Vec<String> = (0..rows).map(|i| format!("1101011990{:08}", i)).collect();
    let phones: Vec<String> = (0..rows).map(|i| format!("138{:08}", i)).collect();
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, true),
        Field::new("id_card", DataType::Utf8, true),
        Field::new("phone", DataType::Utf8, true),
    ]));
    let cols: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from_iter_values(0..rows as i64)),
        Arc::new(StringArray::from(ids)),
        Arc::new(StringArray::from(phones)),
    ];
    RecordBatch::try_new(schema, cols).unwrap()
}

fn encrypt_stage(c: &mut Criterion) {
    std::env::set_var("TIDEX_BENCH_AES", "00".repeat(32));
    std::env::set_var("TIDEX_BENCH_SM4", "00".repeat(16));
    let input = batch(16384);
    let plain: usize = ["id_card", "phone"]
        .iter()
        .map(|n| input.column_by_name(n).unwrap().get_array_memory_size())
        .sum();
    let mut g = c.benchmark_group("encrypt_stage_16384_rows");
    g.throughput(Throughput::Bytes(plain as u64));
    let registry = Registry::new();
    for (alg, env) in [
        ("aes-256-gcm", "TIDEX_BENCH_AES"),
        ("sm4-gcm", "TIDEX_BENCH_SM4"),
    ] {
        let spec = JobSpec::parse(&format!(
            "[job]\nname = \"b\"\n[source]\ntype = \"csv\"\nurl = \"x.csv\"\n[[stage]]\ntype = \"encrypt\"\nalgorithm = \"{alg}\"\nkey_id = \"k\"\nkey = \"env:{env}\"\ncolumns = [\"id_card\", \"phone\"]\n[sink]\ntype = \"csv\"\nurl = \"y.csv\"\n"
        ))
        .unwrap();
        let plans = registry.build_stages(&spec, input.schema()).unwrap();
        let mut stage = plans[0].start().unwrap();
        let budget = Arc::new(ErrorBudget::new(&ErrorsSection::default(), 0));
        let mut rejects = Rejects::new(budget, "bench", 0, 0);
        g.bench_with_input(BenchmarkId::from_parameter(alg), &input, |b, input| {
            b.iter(|| stage.process(input.clone(), &mut rejects).unwrap())
        });
    }
    g.finish();
}

/// People-like CSV rows that do not repeat (a repeated sample would make
/// zstd look far faster than on real data).
fn csv_text(len: usize) -> Vec<u8> {
    let mut data = Vec::with_capacity(len);
    let mut x: u64 = 42;
    let mut next = || {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        x >> 33
    };
    let names = [
        "王伟", "李娜", "张敏", "刘洋", "陈静", "杨磊", "黄艳", "赵杰",
    ];
    let mut i = 0u64;
    while data.len() < len {
        let row = format!(
            "{i},{},1{:010},{:06}{:08}{:04},{},{}.{:02},2024-{:02}-{:02} {:02}:{:02}:{:02},城市{}路{}号\n",
            names[(next() % 8) as usize],
            next() % 10_000_000_000,
            100000 + next() % 900000,
            19400101 + next() % 660000,
            next() % 10000,
            100 + next() % 900,
            next() % 100000,
            next() % 100,
            1 + next() % 12,
            1 + next() % 28,
            next() % 24,
            next() % 60,
            next() % 60,
            next() % 100,
            next() % 1000
        );
        data.extend_from_slice(row.as_bytes());
        i += 1;
    }
    data
}

fn hash_and_compress(c: &mut Criterion) {
    let data = csv_text(4 << 20);
    let mut g = c.benchmark_group("csv_text_4MiB");
    g.throughput(Throughput::Bytes(data.len() as u64));
    g.bench_function("blake3", |b| b.iter(|| blake3::hash(&data)));
    for level in [1, 3] {
        g.bench_function(format!("zstd-{level}"), |b| {
            b.iter(|| zstd::bulk::compress(&data, level).unwrap())
        });
    }
    g.finish();
}

/// The framed writers on 8 MiB: sealing per core (threads = 1) beside the
/// raw crate sealing the same 1 MiB chunks, then on every core; block zstd
/// per core and on every core; BLAKE3 as the blob sink runs it.
fn frame_writers(c: &mut Criterion) {
    let data = csv_text(8 << 20);
    let cores = tidex_engine::stages::frame::default_threads();
    let mut g = c.benchmark_group("frame_8MiB");
    g.throughput(Throughput::Bytes(data.len() as u64));
    g.sample_size(10);
    for (name, alg) in [
        ("aes-256-gcm", Algorithm::Aes256Gcm),
        ("sm4-gcm", Algorithm::Sm4Gcm),
    ] {
        let raw = Cipher::new(alg, &vec![7u8; alg.key_len()]).unwrap();
        g.bench_function(format!("{name}/raw-crate-1MiB-chunks"), |b| {
            let mut buf = data.clone();
            b.iter(|| {
                for (i, ch) in buf.chunks_mut(1 << 20).enumerate() {
                    let mut n = [0u8; 12];
                    n[7] = i as u8;
                    std::hint::black_box(raw.seal_in_place(&n, b"hdr", ch));
                }
            })
        });
        let key = FrameKey::new("bench", vec![7u8; alg.key_len()]).unwrap();
        for threads in [1, cores] {
            g.bench_function(format!("{name}/frame-writer-{threads}-threads"), |b| {
                b.iter(|| {
                    let opts = FrameOptions {
                        threads,
                        ..FrameOptions::new(alg)
                    };
                    let mut w = FrameWriter::new(Vec::with_capacity(9 << 20), &key, opts).unwrap();
                    w.write_all(&data).unwrap();
                    w.finish().unwrap()
                })
            });
        }
    }
    for level in [1, 3] {
        g.bench_function(format!("zstd-{level}/raw-crate-1MiB-blocks"), |b| {
            let mut z = zstd::bulk::Compressor::new(level).unwrap();
            b.iter(|| {
                for ch in data.chunks(1 << 20) {
                    std::hint::black_box(z.compress(ch).unwrap());
                }
            })
        });
        for threads in [1, cores] {
            g.bench_function(
                format!("zstd-{level}/block-writer-{threads}-threads"),
                |b| {
                    b.iter(|| {
                        let mut z = ZstdBlockWriter::new(Vec::new(), level, threads).unwrap();
                        z.write_all(&data).unwrap();
                        z.finish().unwrap()
                    })
                },
            );
        }
    }
    g.bench_function("blake3/incremental-1MiB-updates", |b| {
        b.iter(|| {
            let mut h = blake3::Hasher::new();
            for ch in data.chunks(1 << 20) {
                h.update(ch);
            }
            h.finalize()
        })
    });
    g.finish();
}

/// `rows` people keys (id card numbers) from `start` on, all distinct.
fn keys(start: u64, rows: usize) -> RecordBatch {
    keys_of((start..start + rows as u64).collect())
}

/// The people keys numbered `ids`.
fn keys_of(ids: Vec<u64>) -> RecordBatch {
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, true),
        Field::new("id_card", DataType::Utf8, true),
    ]));
    let cards: Vec<String> = ids
        .iter()
        .map(|i| format!("{:06}{:012}", 110101 + i % 7, i))
        .collect();
    let cols: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from_iter_values(ids.iter().map(|&i| i as i64))),
        Arc::new(StringArray::from(cards)),
    ];
    RecordBatch::try_new(schema, cols).unwrap()
}

fn dedupe_plan(across_runs: bool) -> Arc<dyn StagePlan> {
    let spec = JobSpec::parse(&format!(
        "[job]\nname = \"bench\"\n[source]\ntype = \"csv\"\nurl = \"x.csv\"\n[[stage]]\ntype = \"dedupe\"\ncolumns = [\"id_card\"]\nacross_runs = {across_runs}\n[sink]\ntype = \"csv\"\nurl = \"y.csv\"\n"
    ))
    .unwrap();
    Registry::new()
        .build_stages(&spec, keys(0, 1).schema())
        .unwrap()
        .remove(0)
}

/// Starts a run of job `bench` in the store and the stage's part of it.
fn begin(store: &StateStore, plan: &dyn StagePlan) -> i64 {
    let new = NewRun {
        job: "bench",
        spec_hash: "bench",
        plan_hash: "bench",
        owner: None,
        purpose: None,
        partitions: 1,
        source_state: None,
    };
    let run_id = store.begin(&new, true).unwrap().run.run_id;
    stage_begin(store, plan, run_id);
    run_id
}

fn stage_begin(store: &StateStore, plan: &dyn StagePlan, run_id: i64) {
    plan.begin(&StageRun {
        state: store,
        job: "bench",
        run_id,
        stage: 0,
        committed: &[],
    })
    .unwrap();
}

fn rejects() -> Rejects {
    let budget = Arc::new(ErrorBudget::new(&ErrorsSection::default(), 0));
    Rejects::new(budget, "bench", 0, 0)
}

const DEDUPE_BATCH: usize = 16384;

/// Keys claimed within one run (`keep = "first"`): every key new, so each
/// row is hashed, claimed and delivered. The run is begun afresh (untimed)
/// every 64 batches, so the claim set stays small and the same batches can
/// be replayed.
fn dedupe_within_run(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let store = StateStore::open(dir.path().join("state.db")).unwrap();
    let plan = dedupe_plan(false);
    let batches: Vec<RecordBatch> = (0..64)
        .map(|i| keys(i * DEDUPE_BATCH as u64, DEDUPE_BATCH))
        .collect();
    let run_id = begin(&store, plan.as_ref());
    let mut rejects = rejects();
    let mut g = c.benchmark_group("dedupe_16384_rows");
    g.throughput(Throughput::Elements(DEDUPE_BATCH as u64));
    g.bench_function("new_keys_within_run", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            // Criterion calls this more than once: every call starts from
            // an empty claim set, or replayed batches would all be duplicates.
            stage_begin(&store, plan.as_ref(), run_id);
            let mut stage = plan.start().unwrap();
            for i in 0..iters as usize {
                if i > 0 && i % batches.len() == 0 {
                    stage_begin(&store, plan.as_ref(), run_id);
                    stage = plan.start().unwrap();
                }
                let t0 = Instant::now();
                let out = stage
                    .process(batches[i % batches.len()].clone(), &mut rejects)
                    .unwrap();
                total += t0.elapsed();
                assert_eq!(out.num_rows(), DEDUPE_BATCH);
            }
            total
        })
    });
    g.finish();
}

/// Keys looked up in the memory-mapped index of earlier runs
/// (`across_runs = true`): one run delivers N keys (10 million by default),
/// the next run merges them into the index, then batches of keys that are
/// all in it (all dropped) and all not in it (all delivered) are timed.
fn dedupe_index(c: &mut Criterion) {
    let n: u64 = std::env::var("TIDEX_BENCH_DEDUPE_KEYS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000_000);
    let dir = tempfile::tempdir().unwrap();
    let store = StateStore::open(dir.path().join("state.db")).unwrap();
    let plan = dedupe_plan(true);
    let mut rejects = rejects();

    // Run 1 delivers keys 0..n, committed as the runtime would.
    let setup = Instant::now();
    let run1 = begin(&store, plan.as_ref());
    let mut stage = plan.start().unwrap();
    let mut start = 0;
    while start < n {
        let rows = (n - start).min(65536) as usize;
        stage.process(keys(start, rows), &mut rejects).unwrap();
        start += rows as u64;
    }
    let data = stage
        .commit_data()
        .unwrap()
        .expect("dedupe keeps its hashes");
    store.put_part_data(run1, 0, 0, &data).unwrap();
    let part = CommittedPart {
        index: 0,
        location: "bench".into(),
        rows: n,
        bytes: 0,
    };
    store.commit_part(run1, &part, 0, 0).unwrap();
    store
        .finish(run1, RunStatus::Completed, &Totals::default(), None, None)
        .unwrap();
    drop(data);
    drop(stage);
    // Run 2 merges them into the index.
    let run2 = begin(&store, plan.as_ref());
    eprintln!(
        "dedupe index of {n} keys built in {:.1} s",
        setup.elapsed().as_secs_f64()
    );

    // Keys spread over the whole index, so lookups touch all of it.
    let stride = (n / DEDUPE_BATCH as u64).max(1);
    let hits = keys_of((0..n).step_by(stride as usize).take(DEDUPE_BATCH).collect());
    let misses: Vec<RecordBatch> = (0..64)
        .map(|i| keys(n + i * DEDUPE_BATCH as u64, DEDUPE_BATCH))
        .collect();

    let mut g = c.benchmark_group(format!("dedupe_index_{n}_keys"));
    g.throughput(Throughput::Elements(hits.num_rows() as u64));
    let mut stage = plan.start().unwrap();
    g.bench_function("lookup_all_found", |b| {
        b.iter(|| {
            let out = stage.process(hits.clone(), &mut rejects).unwrap();
            assert_eq!(out.num_rows(), 0);
        })
    });
    g.throughput(Throughput::Elements(DEDUPE_BATCH as u64));
    g.bench_function("lookup_none_found", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            // Every call starts from an empty claim set (see above).
            stage_begin(&store, plan.as_ref(), run2);
            let mut stage = plan.start().unwrap();
            for i in 0..iters as usize {
                if i > 0 && i % misses.len() == 0 {
                    stage_begin(&store, plan.as_ref(), run2);
                    stage = plan.start().unwrap();
                }
                let t0 = Instant::now();
                let out = stage
                    .process(misses[i % misses.len()].clone(), &mut rejects)
                    .unwrap();
                total += t0.elapsed();
                assert_eq!(out.num_rows(), DEDUPE_BATCH);
            }
            total
        })
    });
    g.finish();
}

criterion_group!(
    benches,
    raw_ciphers,
    encrypt_stage,
    hash_and_compress,
    frame_writers,
    dedupe_within_run,
    dedupe_index
);
criterion_main!(benches);
