//! `tidex copy`: format inference, `--print-spec`, and that the one-liner is
//! a job like any other (same summary, same state, same history).

mod common;
use common::*;

#[test]
fn print_spec_is_the_job_copy_runs() {
    let s = Scratch::new();
    let src = fixtures().join("people.csv");
    let o = s.ok(&[
        "copy",
        src.to_str().unwrap(),
        "out/a.parquet",
        "--print-spec",
        "--on-error",
        "skip",
        "--dead-letter",
        "dead/",
        "--parallelism",
        "1",
    ]);
    let text = stdout(&o);
    assert!(
        text.contains("type = \"csv\"")
            && text.contains("type = \"parquet\"")
            && text.contains("policy = \"skip\""),
        "{text}"
    );
    assert!(
        !s.path("out/a.parquet").exists(),
        "--print-spec runs nothing"
    );
    let spec = s.write("copy.toml", &text);
    s.ok(&["validate", spec.to_str().unwrap()]);
    // Running the printed spec is the same job: it shares the copy's history.
    let a = summary(&s.ok(&[
        "copy",
        src.to_str().unwrap(),
        "out/a.parquet",
        "--on-error",
        "skip",
        "--dead-letter",
        "dead/",
        "--parallelism",
        "1",
        "--json",
    ]));
    let b = summary(&s.ok(&["run", spec.to_str().unwrap(), "--json"]));
    assert_eq!(a["job"], b["job"]);
    assert_eq!(a["rows"], b["rows"]);
    assert_eq!(
        b["run_id"].as_i64().unwrap(),
        a["run_id"].as_i64().unwrap() + 1
    );
}

#[test]
fn formats_are_inferred_from_urls() {
    let s = Scratch::new();
    let src = fixtures().join("people.jsonl");
    for (sink, kind) in [
        ("o.parquet", "parquet"),
        ("o.csv", "csv"),
        ("o.arrow", "arrow"),
        ("o.ndjson", "jsonl"),
        ("parts/", "parquet"),
    ] {
        let text = stdout(&s.ok(&["copy", src.to_str().unwrap(), sink, "--print-spec"]));
        assert!(
            text.contains(&format!("[sink]\ntype = \"{kind}\"")),
            "{sink}: {text}"
        );
    }
    let out = s.run(&["copy", "people.xlsx", "o.parquet"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("cannot tell the source format"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn missing_input_is_a_clear_error() {
    let s = Scratch::new();
    let out = s.run(&["copy", "nope.csv", "o.parquet"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("nope.csv: no such file"),
        "{}",
        stderr(&out)
    );
    let out = s.run(&["copy", "data/*.csv", "o.parquet"]);
    assert!(stderr(&out).contains("no files match"), "{}", stderr(&out));
}

#[test]
fn summary_and_history_report_the_run() {
    let s = Scratch::new();
    let src = fixtures().join("people.csv");
    let o = s.ok(&["copy", src.to_str().unwrap(), "people.parquet"]);
    let text = stdout(&o);
    assert!(
        text.contains("completed")
            && text.contains("rows: 1,000")
            && text.contains("dirty rows: 0")
            && text.contains("throughput"),
        "{text}"
    );
    let sum = summary(&s.ok(&["copy", src.to_str().unwrap(), "people.parquet", "--json"]));
    for key in [
        "rows",
        "bytes_in",
        "bytes_out",
        "partitions",
        "duration_secs",
        "mb_per_sec",
        "rows_per_sec",
        "dirty_rows",
    ] {
        assert!(sum.get(key).is_some(), "summary lacks {key}: {sum}");
    }
    assert_eq!(sum["bytes_in"], std::fs::metadata(&src).unwrap().len());
    let runs = stdout(&s.ok(&["runs"]));
    assert!(
        runs.contains("completed") && runs.contains("people.parquet") && runs.lines().count() == 3,
        "{runs}"
    );
}

#[test]
fn long_runs_log_progress_when_not_on_a_terminal() {
    let s = Scratch::new();
    let mut body = String::from("id,v\n");
    for i in 0..200_000 {
        body += &format!("{i},value-{i}\n");
    }
    s.write("p.csv", &body);
    // ~3 MB at 500 KB/s: about six seconds, so at least one progress line.
    let o = s.ok(&["copy", "p.csv", "p.parquet", "--max-bytes-per-sec", "500KB"]);
    let err = stderr(&o);
    assert!(
        err.contains("progress: ") && err.contains("% ") && err.contains("rows"),
        "{err}"
    );
}
