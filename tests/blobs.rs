//! Blobs and per-file encryption end to end: trees of arbitrary files
//! round-trip byte for byte through `tidex copy --compress --encrypt` and
//! `tidex decrypt` (BLAKE3 compared); every kind of tampering, a wrong key
//! or key id fails with an error naming the file and leaves no plaintext at
//! the destination; paths that would escape the sink's prefix are refused;
//! identical content is stored once within a run and not again across
//! runs; a killed blob copy resumes and delivers every file once.

mod common;
use common::*;

const AES_KEY: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f\n";
const SM4_KEY: &str = "00112233445566778899aabbccddeeff\n";

/// Deterministic bytes: text-like (compressible) or noise.
fn bytes(n: usize, seed: u64, text: bool) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E3779B97F4A7C15) | 1;
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        if text {
            let line = format!(
                "{},王伟,138{:08},{}.{:02}\n",
                x % 100_000,
                x % 1_000_000,
                x % 900,
                x % 100
            );
            out.extend_from_slice(line.as_bytes());
        } else {
            out.extend_from_slice(&x.to_le_bytes());
        }
    }
    out.truncate(n);
    out
}

/// A tree with nested folders, empty files, Chinese names, a duplicate
/// and one large file of `large` bytes.
fn make_tree(s: &Scratch, root: &str, large: usize) {
    let w = |rel: &str, data: &[u8]| {
        let p = s.path(&format!("{root}/{rel}"));
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, data).unwrap();
    };
    w("readme.txt", b"exchange of records and files\n");
    w("empty.bin", b"");
    w("a/b/c/deep.json", b"{\"k\": 1}\n");
    w("a/b/empty-too", b"");
    w("中文/报告 2026.txt", "民政局 数据交换\n".as_bytes());
    w("中文/照片.jpg", &bytes(300_000, 1, false));
    w(
        "copies/readme-again.txt",
        b"exchange of records and files\n",
    );
    w("data/people.csv", &bytes(2_000_000, 2, true));
    w("data/big.bin", &{
        // Half noise, half text: compression and encryption both see work.
        let mut v = bytes(large / 2, 3, false);
        v.extend(bytes(large - large / 2, 4, true));
        v
    });
}

#[test]
fn blob_tree_round_trips_through_copy_compress_encrypt_and_decrypt() {
    for (alg, key, large) in [
        ("aes-256-gcm", AES_KEY, 32 << 20),
        ("sm4-gcm", SM4_KEY, 6 << 20),
    ] {
        let s = Scratch::new();
        s.write("k.key", key);
        make_tree(&s, "src", large);
        let sum = summary(&s.ok(&[
            "copy",
            "src/",
            "enc/",
            "--compress",
            "zstd:1",
            "--encrypt",
            alg,
            "--key",
            "k.key",
            "--json",
        ]));
        assert_eq!(
            sum["source"].as_str().unwrap(),
            "src/ (9 files, blobs)",
            "{sum}"
        );
        // Only ciphertext at the target, under the original names plus .tenc;
        // the duplicate is stored once, under the first of its paths.
        let enc = tree_hashes(&s.path("enc"));
        assert!(enc.contains_key("中文/报告 2026.txt.tenc"), "{enc:?}");
        assert!(enc.contains_key("copies/readme-again.txt.tenc"), "{enc:?}");
        assert!(!enc.contains_key("readme.txt.tenc"), "{enc:?}");
        let raw = std::fs::read(s.path("enc/data/people.csv.tenc")).unwrap();
        assert_eq!(&raw[..4], b"TXEF");
        assert!(
            !raw.windows(6).any(|w| w == "王伟".as_bytes()),
            "plaintext in the encrypted output"
        );
        // Compressed inside: the text-like file shrank.
        assert!(raw.len() < 1_000_000, "{}", raw.len());
        let manifest = std::fs::read_to_string(s.path("enc/_tidex_manifest.jsonl")).unwrap();
        assert!(
            manifest.contains("\"path\":\"readme.txt\"")
                && manifest
                    .contains("\"stored\":\"copies/readme-again.txt.tenc\",\"status\":\"copy\""),
            "{manifest}"
        );
        s.ok(&["decrypt", "enc/", "back/", "--key", "k.key"]);
        assert_eq!(
            tree_hashes(&s.path("back")),
            tree_hashes(&s.path("src")),
            "{alg}"
        );
    }
}

#[test]
fn single_files_of_zero_one_chunk_and_many_chunks_round_trip() {
    let s = Scratch::new();
    s.write("k.key", SM4_KEY);
    for (name, n) in [
        ("zero.bin", 0),
        ("one-chunk.bin", 1 << 20),
        ("many.bin", (3 << 20) + 1),
    ] {
        let data = bytes(n, n as u64, false);
        std::fs::write(s.path(name), &data).unwrap();
        let out = format!("enc-{name}/");
        s.ok(&["copy", name, &out, "--encrypt", "sm4-gcm", "--key", "k.key"]);
        let enc = s.path(&format!("enc-{name}/{name}.tenc"));
        let chunks = n.div_ceil(1 << 20).max(1);
        assert_eq!(
            std::fs::metadata(&enc).unwrap().len() as usize,
            33 + 1 + n + 16 * chunks,
            "{name}: header, ciphertext and one tag per chunk"
        );
        let back = format!("{name}.back");
        s.ok(&["decrypt", enc.to_str().unwrap(), &back, "--key", "k.key"]);
        assert_eq!(std::fs::read(s.path(&back)).unwrap(), data, "{name}");
    }
}

/// Decrypting must fail with exit code 3 and an error naming the file, and
/// leave nothing at the destination.
fn assert_refused(s: &Scratch, file: &str, key: &str, extra: &[&str], why: &str) {
    let mut args = vec!["decrypt", file, "out.bin", "--key", key];
    args.extend_from_slice(extra);
    let o = s.run(&args);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(3), "{why}: {err}");
    assert!(err.contains(file), "{why}: the error names the file: {err}");
    assert!(!s.path("out.bin").exists(), "{why}: no plaintext written");
    assert!(
        !s.path("out.bin.tidex-partial").exists(),
        "{why}: no partial plaintext left"
    );
}

#[test]
fn tampering_wrong_keys_and_truncation_are_detected_and_name_the_file() {
    let s = Scratch::new();
    s.write("k.key", SM4_KEY);
    s.write("other.key", "ffeeddccbbaa99887766554433221100\n");
    // 2.5 chunks: chunk 0 and 1 full, chunk 2 short and last.
    std::fs::write(s.path("f.bin"), bytes((5 << 20) / 2, 9, false)).unwrap();
    s.ok(&[
        "copy",
        "f.bin",
        "enc/",
        "--encrypt",
        "sm4-gcm",
        "--key",
        "k.key",
    ]);
    let good = std::fs::read(s.path("enc/f.bin.tenc")).unwrap();
    let header = 33 + 1; // key id "k"
    let stride = (1 << 20) + 16;
    let body = &good[header..];
    let variants: Vec<(&str, Vec<u8>)> = vec![
        ("header bit", {
            let mut t = good.clone();
            t[6] ^= 0x01; // the flags byte
            t
        }),
        ("salt bit", {
            let mut t = good.clone();
            t[12] ^= 0x80;
            t
        }),
        ("chunk bit", {
            let mut t = good.clone();
            t[header + stride + 1000] ^= 0x04;
            t
        }),
        ("tag bit", {
            let mut t = good.clone();
            t[header + stride - 3] ^= 0x10;
            t
        }),
        ("truncated", good[..good.len() - 100].to_vec()),
        (
            "truncated at a chunk boundary",
            good[..header + 2 * stride].to_vec(),
        ),
        ("dropped chunk", {
            let mut t = good[..header].to_vec();
            t.extend_from_slice(&body[..stride]);
            t.extend_from_slice(&body[2 * stride..]);
            t
        }),
        ("swapped chunks", {
            let mut t = good[..header].to_vec();
            t.extend_from_slice(&body[stride..2 * stride]);
            t.extend_from_slice(&body[..stride]);
            t.extend_from_slice(&body[2 * stride..]);
            t
        }),
        ("appended bytes", {
            let mut t = good.clone();
            t.extend_from_slice(b"more");
            t
        }),
    ];
    for (why, data) in &variants {
        let name = format!("{}.tenc", why.replace(' ', "-"));
        std::fs::write(s.path(&name), data).unwrap();
        assert_refused(&s, &name, "k.key", &["--key-id", "k"], why);
    }
    assert_refused(
        &s,
        "enc/f.bin.tenc",
        "other.key",
        &["--key-id", "k"],
        "wrong key",
    );
    let o = s.run(&[
        "decrypt",
        "enc/f.bin.tenc",
        "out.bin",
        "--key",
        "other.key",
        "--key-id",
        "k",
    ]);
    assert!(stderr(&o).contains("wrong key"), "{}", stderr(&o));
    assert!(!stderr(&o).contains("ffeeddcc"), "the key never shows");
    assert_refused(
        &s,
        "enc/f.bin.tenc",
        "k.key",
        &["--key-id", "civil"],
        "wrong key id",
    );
    let o = s.run(&[
        "decrypt",
        "enc/f.bin.tenc",
        "out.bin",
        "--key",
        "k.key",
        "--key-id",
        "civil",
    ]);
    assert!(
        stderr(&o).contains("encrypted with key id `k`, but the key given is `civil`"),
        "{}",
        stderr(&o)
    );
    // The untouched file still decrypts.
    s.ok(&["decrypt", "enc/f.bin.tenc", "out.bin", "--key", "k.key"]);
    assert_eq!(
        std::fs::read(s.path("out.bin")).unwrap(),
        std::fs::read(s.path("f.bin")).unwrap()
    );
}

#[test]
fn a_tampered_file_in_a_tree_leaves_no_output_tree() {
    let s = Scratch::new();
    s.write("k.key", AES_KEY);
    make_tree(&s, "src", 3 << 20);
    s.ok(&[
        "copy",
        "src/",
        "enc/",
        "--encrypt",
        "aes-256-gcm",
        "--key",
        "k.key",
    ]);
    let victim = s.path("enc/data/big.bin.tenc");
    let mut raw = std::fs::read(&victim).unwrap();
    let at = raw.len() / 2;
    raw[at] ^= 1;
    std::fs::write(&victim, raw).unwrap();
    let o = s.run(&["decrypt", "enc/", "back/", "--key", "k.key"]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert!(stderr(&o).contains("big.bin.tenc"), "{}", stderr(&o));
    assert!(
        !s.path("back").exists(),
        "nothing restored from a tampered tree"
    );
}

fn blob_ipc(s: &Scratch, name: &str, paths: &[&str]) {
    use arrow::array::{ArrayRef, LargeBinaryArray, StringArray, UInt64Array};
    use std::sync::Arc;
    let schema = Arc::new(arrow::datatypes::Schema::new(vec![
        arrow::datatypes::Field::new("path", arrow::datatypes::DataType::Utf8, false),
        arrow::datatypes::Field::new("offset", arrow::datatypes::DataType::UInt64, false),
        arrow::datatypes::Field::new("size", arrow::datatypes::DataType::UInt64, false),
        arrow::datatypes::Field::new("chunk", arrow::datatypes::DataType::LargeBinary, false),
    ]));
    let n = paths.len();
    let cols: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from(paths.to_vec())),
        Arc::new(UInt64Array::from(vec![0; n])),
        Arc::new(UInt64Array::from(vec![4; n])),
        Arc::new(LargeBinaryArray::from(vec![&b"evil"[..]; n])),
    ];
    let batch = arrow::record_batch::RecordBatch::try_new(schema.clone(), cols).unwrap();
    let f = std::fs::File::create(s.path(name)).unwrap();
    let mut w = arrow::ipc::writer::FileWriter::try_new(f, &schema).unwrap();
    w.write(&batch).unwrap();
    w.finish().unwrap();
}

#[test]
fn paths_that_escape_the_sink_prefix_are_rejected() {
    for evil in ["../x", "/tmp/x", "a/../../x", "a/./b", "..\\x"] {
        let s = Scratch::new();
        std::fs::create_dir_all(s.path("in")).unwrap();
        blob_ipc(&s, "in/rows.arrow", &["ok.txt", evil]);
        let spec = s.write(
            "j.toml",
            "[job]\nname = \"evil\"\n[source]\ntype = \"arrow\"\nurl = \"in/rows.arrow\"\n[sink]\ntype = \"blobs\"\nurl = \"out/inside/\"\n",
        );
        let o = s.run(&["run", spec.to_str().unwrap()]);
        assert_eq!(o.status.code(), Some(3), "{evil}: {}", stderr(&o));
        let err = stderr(&o);
        assert!(
            err.contains("would escape the sink's prefix") && err.contains(&format!("{evil:?}")),
            "{evil}: {err}"
        );
        assert!(!s.path("out/x").exists() && !s.path("x").exists());
        assert!(!s.path("out/inside").exists(), "{evil}: nothing published");
    }
}

fn manifest(s: &Scratch, dir: &str) -> Vec<serde_json::Value> {
    std::fs::read_to_string(s.path(&format!("{dir}/_tidex_manifest.jsonl")))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn statuses(m: &[serde_json::Value]) -> Vec<(String, String, String)> {
    m.iter()
        .map(|e| {
            (
                e["path"].as_str().unwrap().to_string(),
                e["status"].as_str().unwrap().to_string(),
                e["stored"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn identical_content_is_stored_once_within_a_run_and_across_runs() {
    let s = Scratch::new();
    s.write("in/a.txt", "same content\n");
    s.write("in/sub/b.txt", "same content\n");
    s.write("in/c.txt", "other\n");
    let spec = s.write(
        "j.toml",
        "[job]\nname = \"dedupe\"\n[source]\ntype = \"blobs\"\nurl = \"in/\"\n[sink]\ntype = \"blobs\"\nurl = \"out/\"\ncompression = \"zstd\"\ndedupe = true\n",
    );
    s.ok(&["run", spec.to_str().unwrap()]);
    let m = statuses(&manifest(&s, "out"));
    assert_eq!(
        m,
        [
            ("a.txt".into(), "written".into(), "a.txt.zst".into()),
            ("c.txt".into(), "written".into(), "c.txt.zst".into()),
            ("sub/b.txt".into(), "copy".into(), "a.txt.zst".into()),
        ]
    );
    assert!(!s.path("out/sub/b.txt.zst").exists(), "stored once");
    // The same files again, plus a new one and a copy of old content under
    // a new name: only the new content is written.
    s.write("in/d.txt", "new\n");
    s.write("in/e.txt", "other\n");
    let before = std::fs::metadata(s.path("out/a.txt.zst"))
        .unwrap()
        .modified()
        .unwrap();
    s.ok(&["run", spec.to_str().unwrap()]);
    let m = statuses(&manifest(&s, "out"));
    assert_eq!(
        m,
        [
            ("a.txt".into(), "delivered".into(), "a.txt.zst".into()),
            ("c.txt".into(), "delivered".into(), "c.txt.zst".into()),
            ("d.txt".into(), "written".into(), "d.txt.zst".into()),
            ("e.txt".into(), "delivered".into(), "c.txt.zst".into()),
            ("sub/b.txt".into(), "delivered".into(), "a.txt.zst".into()),
        ]
    );
    let after = std::fs::metadata(s.path("out/a.txt.zst"))
        .unwrap()
        .modified()
        .unwrap();
    assert_eq!(before, after, "delivered content is not written again");
    assert!(!s.path("out/e.txt.zst").exists());
    // A receiver restores every file of the latest run from what is there.
    s.ok(&["decrypt", "out/", "back/"]);
    assert_eq!(tree_hashes(&s.path("back")), tree_hashes(&s.path("in")));
    // dedupe keeps what earlier runs delivered, so overwrite is refused.
    let bad = s.write(
        "bad.toml",
        "[job]\nname = \"x\"\n[source]\ntype = \"blobs\"\nurl = \"in/\"\n[sink]\ntype = \"blobs\"\nurl = \"o2/\"\nmode = \"overwrite\"\ndedupe = true\n",
    );
    let o = s.run(&["validate", bad.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("needs mode = \"append\""),
        "{}",
        stderr(&o)
    );
}

#[test]
fn killed_blob_copy_resumes_and_delivers_every_file_once() {
    let s = Scratch::new();
    for i in 0..40 {
        std::fs::create_dir_all(s.path(&format!("in/d{}", i % 4))).unwrap();
        std::fs::write(
            s.path(&format!("in/d{}/f{i:02}.bin", i % 4)),
            bytes(60_000, i, i % 2 == 0),
        )
        .unwrap();
    }
    let spec = |rate: &str| {
        s.write(
            "j.toml",
            &format!("[job]\nname = \"blobs-resume\"\n[source]\ntype = \"blobs\"\nurl = \"in/\"\npartition_size = \"100KB\"\n[sink]\ntype = \"blobs\"\nurl = \"out/\"\n[limits]\nparallelism = 2\n{rate}"),
        )
    };
    let slow = spec("max_bytes_per_sec = \"300KB\"\n");
    kill_when(&s, &slow, || committed_parts(&s) >= 3);
    assert!(
        !s.path("out").exists(),
        "nothing published before the run completes"
    );
    let done = committed_parts(&s);
    let sum = summary(&s.ok(&["run", spec("").to_str().unwrap(), "--json"]));
    assert_eq!(sum["resumed"], true, "{sum}");
    assert!(sum["partitions_skipped"].as_i64().unwrap() >= done, "{sum}");
    let mut out = tree_hashes(&s.path("out"));
    assert!(out.remove("_tidex_manifest.jsonl").is_some());
    assert_eq!(out, tree_hashes(&s.path("in")));
    assert_eq!(manifest(&s, "out").len(), 40);
    assert!(!s.path(".out.tidex").exists(), "staging cleaned up");
}

#[test]
fn tabular_parts_are_encrypted_per_file_and_decrypt_back() {
    let s = Scratch::new();
    s.write("k.key", AES_KEY);
    let src = fixtures().join("people.csv");
    s.ok(&[
        "copy",
        src.to_str().unwrap(),
        "enc/",
        "--encrypt",
        "aes-256-gcm",
        "--key",
        "k.key",
        "--key-id",
        "civil-2026",
    ]);
    let parts: Vec<_> = std::fs::read_dir(s.path("enc"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    assert!(
        !parts.is_empty() && parts.iter().all(|p| p.ends_with(".parquet.tenc")),
        "{parts:?}"
    );
    let o = s.run(&["decrypt", "enc/", "back/", "--key", "k.key"]);
    assert_eq!(o.status.code(), Some(3), "the key id defaults to `k`");
    s.ok(&[
        "decrypt",
        "enc/",
        "back/",
        "--key",
        "k.key",
        "--key-id",
        "civil-2026",
    ]);
    assert_eq!(
        fingerprint(&read_batches(&s.path("back"))),
        fixture_fingerprint()
    );
    // A single-file target cannot be encrypted per part: a clear spec error.
    let o = s.run(&[
        "copy",
        src.to_str().unwrap(),
        "one.parquet",
        "--encrypt",
        "aes-256-gcm",
        "--key",
        "k.key",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("sink.encrypt"), "{}", stderr(&o));
}

/// Peak resident memory of a child, polled from /proc while it runs.
fn run_measuring_rss(s: &Scratch, args: &[&str]) -> u64 {
    let mut child = s.cmd().args(args).spawn().unwrap();
    let status_path = format!("/proc/{}/status", child.id());
    let mut peak = 0u64;
    loop {
        if let Ok(text) = std::fs::read_to_string(&status_path) {
            if let Some(kb) = text
                .lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<u64>().ok())
            {
                peak = peak.max(kb);
            }
        }
        if let Some(st) = child.try_wait().unwrap() {
            assert!(st.success(), "tidex {args:?} failed");
            return peak * 1024;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// Proves bounded memory on a 5 GB file (slow: run with `--ignored`).
#[test]
#[ignore]
fn five_gb_file_round_trips_in_bounded_memory() {
    let s = Scratch::new();
    s.write("k.key", AES_KEY);
    std::fs::create_dir_all(s.path("in")).unwrap();
    {
        use std::io::Write;
        let mut f = std::io::BufWriter::new(std::fs::File::create(s.path("in/huge.bin")).unwrap());
        let block = bytes(64 << 20, 5, false);
        for i in 0..80u8 {
            // 80 x 64 MiB = 5 GiB, each block distinct.
            let mut b = block.clone();
            b[0] = i;
            f.write_all(&b).unwrap();
        }
    }
    let enc = run_measuring_rss(
        &s,
        &[
            "copy",
            "in/",
            "enc/",
            "--compress",
            "zstd:1",
            "--encrypt",
            "aes-256-gcm",
            "--key",
            "k.key",
        ],
    );
    let dec = run_measuring_rss(&s, &["decrypt", "enc/", "back/", "--key", "k.key"]);
    eprintln!(
        "peak RSS: copy {} MiB, decrypt {} MiB",
        enc >> 20,
        dec >> 20
    );
    assert!(
        enc < 512 << 20 && dec < 512 << 20,
        "copy {enc}, decrypt {dec}"
    );
    assert_eq!(tree_hashes(&s.path("back")), tree_hashes(&s.path("in")));
}

#[test]
fn copy_copies_files_as_blobs_when_they_are_not_one_tabular_format() {
    let s = Scratch::new();
    s.write("csvs/a.csv", "id\n1\n");
    s.write("csvs/b.csv", "id\n2\n");
    s.write("mixed/a.csv", "id\n1\n");
    s.write("mixed/scan.pdf", "%PDF-1.7");
    s.write("scan.pdf", "%PDF-1.7");
    let kind = |args: &[&str]| {
        let mut a = vec!["copy"];
        a.extend_from_slice(args);
        a.push("--print-spec");
        let text = stdout(&s.ok(&a));
        text.split("[source]\ntype = \"")
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap()
            .to_string()
    };
    assert_eq!(kind(&["csvs/", "out/"]), "csv");
    assert_eq!(kind(&["csvs/", "out/", "--blobs"]), "blobs");
    assert_eq!(kind(&["blobs:csvs/", "out/"]), "blobs");
    assert_eq!(kind(&["mixed/", "out/"]), "blobs");
    assert_eq!(kind(&["scan.pdf", "out/"]), "blobs");
    assert_eq!(kind(&["mixed/*.pdf", "out/"]), "blobs");
    let o = s.run(&["copy", "mixed/", "out.parquet"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("end \"out.parquet\" with /"),
        "{}",
        stderr(&o)
    );
    let o = s.run(&["copy", "mixed/", "out/", "--key", "k.key"]);
    assert!(stderr(&o).contains("add --encrypt"), "{}", stderr(&o));
}
