//! zstd-compressed CSV and JSON lines: written by extension or option, read
//! back by extension, single files and directories of parts.

mod common;
use common::*;

#[test]
fn csv_and_jsonl_round_trip_through_zstd() {
    let s = Scratch::new();
    let expected = fixture_fingerprint();
    for (src, zst, back) in [
        ("people.csv", "p.csv.zst", "b1.parquet"),
        ("people.jsonl", "p.jsonl.zst", "b2.parquet"),
    ] {
        s.ok(&["copy", fixtures().join(src).to_str().unwrap(), zst]);
        let raw = std::fs::read(s.path(zst)).unwrap();
        assert_eq!(
            &raw[..4],
            &[0x28, 0xb5, 0x2f, 0xfd],
            "{zst} is a zstd frame"
        );
        assert!(
            raw.len() * 2 < std::fs::metadata(fixtures().join(src)).unwrap().len() as usize,
            "{zst} is compressed"
        );
        s.ok(&["copy", zst, back]);
        assert_eq!(fingerprint(&read_batches(&s.path(back))), expected, "{zst}");
    }
}

#[test]
fn compressed_parts_concatenate_and_read_back_in_order() {
    let s = Scratch::new();
    let src = fixtures().join("people.csv");
    for (url, name) in [("zparts/", "dir"), ("one.csv.zst", "file")] {
        let spec = s.write(
            &format!("{name}.toml"),
            &format!(
                "[job]\nname = \"z-{name}\"\n[source]\ntype = \"csv\"\nurl = {:?}\nsplit_size = \"16KB\"\n[sink]\ntype = \"csv\"\nurl = \"{url}\"\ncompression = \"zstd\"\ncompression_level = 3\n",
                src.to_str().unwrap()
            ),
        );
        let sum = summary(&s.ok(&["run", spec.to_str().unwrap(), "--json"]));
        assert!(sum["partitions"].as_u64().unwrap() >= 5);
        let back = format!("{name}.parquet");
        s.ok(&["copy", url, &back]);
        let b = read_batches(&s.path(&back));
        assert_eq!(
            column_text(&b, "id"),
            (1..=1000).map(|i| i.to_string()).collect::<Vec<_>>(),
            "{name}"
        );
    }
    assert!(data_files(&s.path("zparts"))
        .iter()
        .all(|p| p.to_string_lossy().ends_with(".csv.zst")));
}

#[test]
fn truncated_zstd_is_a_data_error() {
    let s = Scratch::new();
    s.ok(&[
        "copy",
        fixtures().join("people.csv").to_str().unwrap(),
        "p.csv.zst",
    ]);
    let raw = std::fs::read(s.path("p.csv.zst")).unwrap();
    std::fs::write(s.path("cut.csv.zst"), &raw[..raw.len() - 20]).unwrap();
    let out = s.run(&["copy", "cut.csv.zst", "o.parquet"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("cut.csv.zst") && stderr(&out).contains("truncated"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_corrupted_byte_fails_the_frame_checksum() {
    let s = Scratch::new();
    s.ok(&[
        "copy",
        fixtures().join("people.csv").to_str().unwrap(),
        "p.csv.zst",
    ]);
    let mut raw = std::fs::read(s.path("p.csv.zst")).unwrap();
    let mid = raw.len() / 2;
    raw[mid] ^= 0x01;
    std::fs::write(s.path("bad.csv.zst"), &raw).unwrap();
    let out = s.run(&["copy", "bad.csv.zst", "o.parquet", "--parallelism", "1"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains("bad.csv.zst"), "{}", stderr(&out));
}

#[test]
fn compress_flag_equals_the_sink_options() {
    let s = Scratch::new();
    let src = fixtures().join("people.csv");
    let text = stdout(&s.ok(&[
        "copy",
        src.to_str().unwrap(),
        "o.csv.zst",
        "--compress",
        "zstd:5",
        "--print-spec",
    ]));
    assert!(
        text.contains("compression = \"zstd\"\ncompression_level = 5"),
        "{text}"
    );
    s.ok(&[
        "copy",
        src.to_str().unwrap(),
        "o.csv.zst",
        "--compress",
        "zstd:5",
    ]);
    s.ok(&["copy", "o.csv.zst", "o.parquet"]);
    assert_eq!(
        fingerprint(&read_batches(&s.path("o.parquet"))),
        fixture_fingerprint()
    );
    let out = s.run(&[
        "copy",
        src.to_str().unwrap(),
        "o.csv",
        "--compress",
        "brotli",
    ]);
    assert_eq!(out.status.code(), Some(2));
}
