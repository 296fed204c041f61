//! Every file source paired with every file sink, through the real binary:
//! the output holds exactly the fixture's rows, whatever the formats.

mod common;
use common::*;

const SOURCES: [&str; 4] = [
    "people.csv",
    "people.jsonl",
    "people.parquet",
    "people.arrow",
];
const SINKS: [&str; 4] = ["parquet", "arrow", "csv", "jsonl"];

#[test]
fn every_source_to_every_sink_as_single_file() {
    let expected = fixture_fingerprint();
    assert_eq!(expected.len(), 1000);
    for src in SOURCES {
        for sink in SINKS {
            let s = Scratch::new();
            let out = format!("out/people.{sink}");
            let o = s.ok(&[
                "copy",
                fixtures().join(src).to_str().unwrap(),
                &out,
                "--json",
            ]);
            assert_eq!(summary(&o)["rows"], 1000, "{src} -> {sink}");
            let got = fingerprint(&read_batches(&s.path(&out)));
            assert_eq!(got, expected, "{src} -> {sink}");
        }
    }
}

#[test]
fn every_sink_as_directory_of_parts_with_split_input() {
    let expected = fixture_fingerprint();
    for sink in SINKS {
        let s = Scratch::new();
        // Small splits so the one fixture file becomes several partitions.
        let spec = s.write(
            "job.toml",
            &format!(
                "[job]\nname = \"parts-{sink}\"\n[source]\ntype = \"csv\"\nurl = {:?}\nsplit_size = \"16KB\"\n[sink]\ntype = \"{sink}\"\nurl = \"out/parts/\"\n[limits]\nbatch_rows = 100\nparallelism = 3\n",
                fixtures().join("people.csv").to_str().unwrap()
            ),
        );
        let o = s.ok(&["run", spec.to_str().unwrap(), "--json"]);
        let sum = summary(&o);
        assert!(sum["partitions"].as_u64().unwrap() >= 5, "{sum}");
        let files = data_files(&s.path("out/parts"));
        assert_eq!(
            files.len() as u64,
            sum["partitions"].as_u64().unwrap(),
            "{files:?}"
        );
        assert_eq!(
            fingerprint(&read_batches(&s.path("out/parts"))),
            expected,
            "{sink}"
        );
        // No staging left behind.
        assert!(!s.path("out/.parts.tidex").exists());
    }
}

#[test]
fn csv_with_quoted_newlines_splits_only_at_record_boundaries() {
    let s = Scratch::new();
    let mut body = String::from("id,note\n");
    for i in 0..3000 {
        body += &format!("{i},\"line one\nline two, with comma {i}\"\n");
    }
    s.write("notes.csv", &body);
    let spec = s.write(
        "job.toml",
        "[job]\nname = \"notes\"\n[source]\ntype = \"csv\"\nurl = \"notes.csv\"\nsplit_size = \"8KB\"\n[sink]\ntype = \"parquet\"\nurl = \"out/notes.parquet\"\n",
    );
    let o = s.ok(&["run", spec.to_str().unwrap(), "--json"]);
    assert!(summary(&o)["partitions"].as_u64().unwrap() > 3);
    let b = read_batches(&s.path("out/notes.parquet"));
    let ids = column_text(&b, "id");
    assert_eq!(ids.len(), 3000);
    let notes = column_text(&b, "note");
    assert!(
        notes
            .iter()
            .all(|n| n.starts_with("line one\nline two, with comma ")),
        "{:?}",
        &notes[..3]
    );
}

#[test]
fn glob_source_reads_every_matching_file() {
    let s = Scratch::new();
    s.write("data/a.csv", "id,v\n1,a\n2,b\n");
    s.write("data/b.csv", "id,v\n3,c\n");
    s.write("data/skip.txt.bak", "nope");
    let o = s.ok(&["copy", "data/*.csv", "out.jsonl", "--json"]);
    assert_eq!(summary(&o)["rows"], 3);
    let mut ids = column_text(&read_batches(&s.path("out.jsonl")), "id");
    ids.sort();
    assert_eq!(ids, ["1", "2", "3"]);
}

#[test]
fn split_input_into_one_file_of_every_format() {
    let expected = fixture_fingerprint();
    for sink in SINKS {
        let s = Scratch::new();
        let spec = s.write(
            "job.toml",
            &format!(
                "[job]\nname = \"one-{sink}\"\n[source]\ntype = \"csv\"\nurl = {:?}\nsplit_size = \"16KB\"\n[sink]\ntype = \"{sink}\"\nurl = \"out/people.{sink}\"\n[limits]\nbatch_rows = 100\nparallelism = 3\n",
                fixtures().join("people.csv").to_str().unwrap()
            ),
        );
        let sum = summary(&s.ok(&["run", spec.to_str().unwrap(), "--json"]));
        assert!(sum["partitions"].as_u64().unwrap() >= 5, "{sum}");
        let out = s.path(&format!("out/people.{sink}"));
        assert_eq!(fingerprint(&read_batches(&out)), expected, "{sink}");
        if sink == "csv" {
            let text = std::fs::read_to_string(&out).unwrap();
            assert_eq!(text.matches("id,name,phone").count(), 1, "one header");
        }
        // Input order is kept across partitions.
        let ids = column_text(&read_batches(&out), "id");
        assert_eq!(
            ids,
            (1..=1000).map(|i| i.to_string()).collect::<Vec<_>>(),
            "{sink}"
        );
    }
}

#[test]
fn csv_tokenizer_handles_crlf_blank_lines_quotes_and_chunk_boundaries() {
    // Large enough (> 8 MiB) that records straddle the reader's chunk boundaries.
    let s = Scratch::new();
    let mut body = String::from("id,text,n\r\n");
    let mut expected = Vec::new();
    for i in 0..300_000u32 {
        let text = match i % 5 {
            0 => format!("plain value {i} 中文"),
            1 => format!("comma, inside {i}"),
            2 => format!("quote \"{i}\" inside"),
            3 => format!("line\nbreak {i}"),
            _ => String::new(),
        };
        let field = if text.contains([',', '"', '\n']) {
            format!("\"{}\"", text.replace('"', "\"\""))
        } else {
            text.clone()
        };
        body += &format!(
            "{i},{field},{}{}",
            i * 7,
            if i % 2 == 0 { "\r\n" } else { "\n" }
        );
        if i % 1000 == 0 {
            body += "\r\n"; // blank lines are skipped
        }
        expected.push((
            i.to_string(),
            if text.is_empty() {
                "<null>".to_string()
            } else {
                text
            },
            (i * 7).to_string(),
        ));
    }
    assert!(body.len() > 9 << 20);
    s.write("t.csv", &body);
    let spec = s.write("job.toml", "[job]\nname = \"tok\"\n[source]\ntype = \"csv\"\nurl = \"t.csv\"\nsplit_size = 0\n[sink]\ntype = \"parquet\"\nurl = \"t.parquet\"\n");
    let sum = summary(&s.ok(&["run", spec.to_str().unwrap(), "--json"]));
    assert_eq!(sum["rows"], 300_000);
    let b = read_batches(&s.path("t.parquet"));
    let (ids, texts, ns) = (
        column_text(&b, "id"),
        column_text(&b, "text"),
        column_text(&b, "n"),
    );
    for (k, (id, text, n)) in expected.iter().enumerate() {
        assert_eq!((&ids[k], &texts[k], &ns[k]), (id, text, n), "row {k}");
    }
}

#[test]
fn quoted_line_breaks_beyond_the_inference_sample_are_never_cut() {
    // The first 4 MiB (the sample) has no multi-line fields; later rows do.
    let s = Scratch::new();
    let mut body = String::from("id,note\n");
    let mut id = 0u32;
    while body.len() < 5 << 20 {
        body += &format!("{id},plain note {id}\n");
        id += 1;
    }
    let plain = id;
    for _ in 0..20_000 {
        body += &format!("{id},\"line one\nline two, with comma {id}\"\n");
        id += 1;
    }
    s.write("notes.csv", &body);
    let spec = s.write(
        "job.toml",
        "[job]\nname = \"late-multiline\"\n[source]\ntype = \"csv\"\nurl = \"notes.csv\"\nschema = [\"id:utf8\", \"note:utf8\"]\nsplit_size = \"128KB\"\n[sink]\ntype = \"parquet\"\nurl = \"out/notes.parquet\"\n",
    );
    let sum = summary(&s.ok(&["run", spec.to_str().unwrap(), "--json"]));
    assert!(sum["partitions"].as_u64().unwrap() > 40, "{sum}");
    assert_eq!(sum["rows"], id);
    let b = read_batches(&s.path("out/notes.parquet"));
    let (ids, notes) = (column_text(&b, "id"), column_text(&b, "note"));
    for (k, (i, n)) in ids.iter().zip(&notes).enumerate() {
        assert_eq!(i, &k.to_string());
        if (k as u32) >= plain {
            assert_eq!(n, &format!("line one\nline two, with comma {k}"), "row {k}");
        }
    }
}

/// The encodings of every column chunk of a Parquet file, by column name.
fn parquet_encodings(
    path: &std::path::Path,
) -> std::collections::BTreeMap<String, std::collections::BTreeSet<String>> {
    use parquet::file::reader::FileReader;
    let r = parquet::file::reader::SerializedFileReader::new(std::fs::File::open(path).unwrap())
        .unwrap();
    let mut out = std::collections::BTreeMap::<_, std::collections::BTreeSet<String>>::new();
    for rg in r.metadata().row_groups() {
        for c in rg.columns() {
            out.entry(c.column_path().string())
                .or_default()
                .extend(c.encodings().map(|e| format!("{e:?}")));
        }
    }
    out
}

#[test]
fn parquet_columns_get_delta_encodings_where_they_shrink_them() {
    let s = Scratch::new();
    // id: a sequence; code: a few values; name: mostly distinct strings;
    // phone and amount: random, in a narrow range (34 and 24 bits); at:
    // timestamps over 30 years (about 50 bits, too wide to gain).
    let mut csv = String::from("id,code,name,phone,amount,at\n");
    let mut x: u64 = 12345;
    let mut rows = Vec::new();
    for i in 1..=5000u64 {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let name = format!("name-{}", x >> 40);
        let phone = 13_000_000_000 + (x >> 33) % 1_000_000_000;
        let amount = format!("{}.{:02}", (x >> 20) % 100_000, (x >> 10) % 100);
        let at = chrono::DateTime::from_timestamp(946_684_800 + ((x >> 8) % 946_080_000) as i64, 0)
            .unwrap()
            .format("%Y-%m-%d %H:%M:%S");
        csv.push_str(&format!("{i},{},{name},{phone},{amount},{at}\n", i % 7));
        rows.push(vec![
            i.to_string(),
            (i % 7).to_string(),
            name,
            phone.to_string(),
            amount,
        ]);
    }
    let src = s.write("in.csv", &csv);
    let check_values = |out: &std::path::Path| {
        let b = read_batches(out);
        let cols: Vec<Vec<String>> = ["id", "code", "name", "phone", "amount"]
            .iter()
            .map(|c| column_text(&b, c))
            .collect();
        for (i, row) in rows.iter().enumerate() {
            let got: Vec<&String> = cols.iter().map(|c| &c[i]).collect();
            assert_eq!(got, row.iter().collect::<Vec<_>>(), "row {i}");
        }
        assert_eq!(cols[0].len(), rows.len());
        assert_eq!(column_text(&b, "at").len(), rows.len());
    };

    s.ok(&["copy", src.to_str().unwrap(), "out/compact.parquet"]);
    let out = s.path("out/compact.parquet");
    check_values(&out);
    let enc = parquet_encodings(&out);
    assert!(enc["id"].contains("DELTA_BINARY_PACKED"), "{enc:?}");
    assert!(enc["name"].contains("DELTA_LENGTH_BYTE_ARRAY"), "{enc:?}");
    assert!(enc["code"].contains("RLE_DICTIONARY"), "{enc:?}");
    assert!(enc["phone"].contains("DELTA_BINARY_PACKED"), "{enc:?}");
    assert!(enc["amount"].contains("DELTA_BINARY_PACKED"), "{enc:?}");
    assert!(
        enc["at"].contains("PLAIN") && !enc["at"].iter().any(|e| e.starts_with("DELTA")),
        "values spread too wide stay plain: {enc:?}"
    );

    // `parquet_encodings = "plain"`: only what every reader knows.
    let spec = s.write(
        "plain.toml",
        &format!(
            "[job]\nname = \"plain\"\n\n[source]\ntype = \"csv\"\nurl = \"{}\"\n\n\
             [sink]\ntype = \"parquet\"\nurl = \"out/plain.parquet\"\nparquet_encodings = \"plain\"\n",
            src.display()
        ),
    );
    s.ok(&["run", spec.to_str().unwrap()]);
    let out = s.path("out/plain.parquet");
    check_values(&out);
    let enc = parquet_encodings(&out);
    assert!(
        enc.values().flatten().all(|e| !e.starts_with("DELTA")),
        "{enc:?}"
    );
    assert!(enc["code"].contains("RLE_DICTIONARY"), "{enc:?}");

    // A value it does not know is refused, naming the field.
    let bad = s.write(
        "bad.toml",
        &std::fs::read_to_string(&spec)
            .unwrap()
            .replace("\"plain\"\n", "\"tiny\"\n"),
    );
    let o = s.run(&["validate", bad.to_str().unwrap()]);
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(
        err.contains("parquet_encodings") && err.contains("tiny"),
        "{err}"
    );
}
