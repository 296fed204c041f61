//! Per-core throughput of the stage kernels, next to the raw crates:
//! AES-256-GCM and SM4-GCM (raw `seal` and the `encrypt` stage on a batch),
//! BLAKE3, and zstd levels 1 and 3 on CSV text; and the framed file
//! format's writers (`FrameWriter`, `ZstdBlockWriter`) on one thread and on
//! every core, next to the raw crate on the same 1 MiB chunks.
//!
//!     cargo bench -p tidex-engine --bench kernels
//!
//! Compare SM4 with `openssl speed -evp sm4-ctr` on the same machine.

use arrow::array::{ArrayRef, Int64Array, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::record_batch::RecordBatch;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use std::io::Write;
use std::sync::Arc;
use tidex_engine::dirty::{ErrorBudget, Rejects};
use tidex_engine::spec::ErrorsSection;
use tidex_engine::stages::crypt::{Algorithm, Cipher};
use tidex_engine::stages::frame::{FrameKey, FrameOptions, FrameWriter, ZstdBlockWriter};
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

criterion_group!(
    benches,
    raw_ciphers,
    encrypt_stage,
    hash_and_compress,
    frame_writers
);
criterion_main!(benches);
