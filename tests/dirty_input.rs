//! Dirty input: under `fail` the run stops naming file, row and column
//! (exit code 3); under `skip` bad rows go to the dead-letter output with
//! the reason, counts are reported, and the error limit stops the run.

mod common;
use common::*;

const SCHEMA: &str = r#"["id:int64", "name:utf8", "phone:utf8", "dept_code:int32", "amount:decimal(10,2)", "created_at:timestamp"]"#;

fn csv_spec(s: &Scratch, policy: &str, extra: &str) -> std::path::PathBuf {
    s.write(
        "job.toml",
        &format!(
            "[job]\nname = \"dirty\"\n[source]\ntype = \"csv\"\nurl = {:?}\nschema = {SCHEMA}\n[sink]\ntype = \"parquet\"\nurl = \"out/clean.parquet\"\n[errors]\npolicy = \"{policy}\"\ndead_letter = \"dead/\"\n{extra}",
            fixtures().join("dirty/people_dirty.csv").to_str().unwrap()
        ),
    )
}

fn dead_letters(s: &Scratch) -> Vec<serde_json::Value> {
    let mut v = Vec::new();
    for f in data_files(&s.path("dead")) {
        for line in std::fs::read_to_string(f).unwrap().lines() {
            v.push(serde_json::from_str(line).unwrap());
        }
    }
    v
}

#[test]
fn csv_fail_policy_names_file_row_and_column() {
    let s = Scratch::new();
    let spec = csv_spec(&s, "fail", "");
    let out = s.run(&["run", spec.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("people_dirty.csv, row 4, byte offset 143, column `dept_code`: \"10x\" is not a valid int32"), "{err}");
    // Nothing was published.
    assert!(!s.path("out/clean.parquet").exists());
}

#[test]
fn csv_skip_policy_routes_each_bad_row_with_its_reason() {
    let s = Scratch::new();
    let spec = csv_spec(&s, "skip", "");
    let o = s.ok(&["run", spec.to_str().unwrap(), "--json"]);
    let sum = summary(&o);
    assert_eq!(sum["rows"], 4);
    assert_eq!(sum["dirty_rows"], 6);
    let ids = column_text(&read_batches(&s.path("out/clean.parquet")), "id");
    assert_eq!(ids, ["1", "2", "8", "10"]);
    let dead = dead_letters(&s);
    let reasons: Vec<(u64, String, String)> = dead
        .iter()
        .map(|d| {
            (
                d["location"]["row"].as_u64().unwrap(),
                d["location"]["column"].as_str().unwrap_or("").to_string(),
                d["reason"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let expect = [
        (4, "dept_code", "is not a valid int32"),
        (5, "", "expected 6 fields, found 5"),
        (6, "amount", "has 3 decimal places"),
        (7, "created_at", "is not a timestamp"),
        (8, "", "expected 6 fields, found 7"),
        (10, "name", "invalid UTF-8"),
    ];
    assert_eq!(reasons.len(), expect.len(), "{reasons:?}");
    for ((row, col, reason), (erow, ecol, ereason)) in reasons.iter().zip(expect) {
        assert_eq!((*row, col.as_str()), (erow, ecol), "{reasons:?}");
        assert!(reason.contains(ereason), "{reason} lacks {ereason}");
    }
    // The raw values travel with the reason.
    assert_eq!(dead[0]["values"][3], "10x");
}

#[test]
fn error_limit_stops_the_run() {
    let s = Scratch::new();
    let spec = csv_spec(&s, "skip", "max_rows = 2\n");
    let out = s.run(&["run", spec.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("error limit exceeded: 3 dirty rows (errors.max_rows = 2)"),
        "{}",
        stderr(&out)
    );
    assert!(!s.path("out/clean.parquet").exists());
    let spec = csv_spec(&s, "skip", "max_percent = 50.0\n");
    let out = s.run(&["run", spec.to_str().unwrap(), "--restart"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("errors.max_percent = 50"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn jsonl_bad_lines_fail_or_go_to_dead_letter() {
    let s = Scratch::new();
    let src = fixtures().join("dirty/people_dirty.jsonl");
    let spec = |policy: &str| {
        s.write(
            "j.toml",
            &format!(
                "[job]\nname = \"j\"\n[source]\ntype = \"jsonl\"\nurl = {:?}\nschema = [\"id:int64\", \"name:utf8\", \"amount:float64\"]\n[sink]\ntype = \"csv\"\nurl = \"out/j.csv\"\n[errors]\npolicy = \"{policy}\"\ndead_letter = \"dead/\"\n",
                src.to_str().unwrap()
            ),
        )
    };
    let out = s.run(&["run", spec("fail").to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(3));
    assert!(
        stderr(&out).contains("people_dirty.jsonl, row 3, byte offset 88"),
        "{}",
        stderr(&out)
    );
    let o = s.ok(&["run", spec("skip").to_str().unwrap(), "--json", "--restart"]);
    assert_eq!(summary(&o)["rows"], 3);
    assert_eq!(summary(&o)["dirty_rows"], 3);
    let dead = dead_letters(&s);
    let rows: Vec<u64> = dead
        .iter()
        .map(|d| d["location"]["row"].as_u64().unwrap())
        .collect();
    assert_eq!(rows, [3, 4, 5]);
    assert!(
        dead[2]["reason"].as_str().unwrap().contains("nickname"),
        "unknown fields are errors: {}",
        dead[2]
    );
    assert_eq!(
        column_text(&read_batches(&s.path("out/j.csv")), "id"),
        ["1", "2", "6"]
    );
}

#[test]
fn truncated_parquet_is_a_data_error_naming_the_file() {
    let s = Scratch::new();
    let src = fixtures().join("dirty/truncated.parquet");
    let out = s.run(&["copy", src.to_str().unwrap(), "out.parquet"]);
    assert_eq!(out.status.code(), Some(3));
    assert!(
        stderr(&out).contains("truncated.parquet: not a readable Parquet file"),
        "{}",
        stderr(&out)
    );
    // Under skip, the readable files are delivered and the broken one is dead-lettered.
    std::fs::create_dir_all(s.path("in")).unwrap();
    std::fs::copy(&src, s.path("in/a-truncated.parquet")).unwrap();
    std::fs::copy(
        fixtures().join("people.parquet"),
        s.path("in/b-good.parquet"),
    )
    .unwrap();
    let o = s.ok(&[
        "copy",
        "in/",
        "out.parquet",
        "--on-error",
        "skip",
        "--dead-letter",
        "dead",
        "--json",
        "--restart",
    ]);
    assert_eq!(summary(&o)["rows"], 1000);
    assert_eq!(summary(&o)["dirty_rows"], 1);
    let dead = dead_letters(&s);
    assert!(
        dead[0]["reason"]
            .as_str()
            .unwrap()
            .contains("not a readable Parquet file"),
        "{}",
        dead[0]
    );
    assert_eq!(dead[0]["location"]["file"], "in/a-truncated.parquet");
}

#[test]
fn corrupt_parquet_pages_are_rejected_by_row_group() {
    let s = Scratch::new();
    let src = fixtures().join("dirty/corrupt_pages.parquet");
    let out = s.run(&["copy", src.to_str().unwrap(), "out.parquet"]);
    assert_eq!(out.status.code(), Some(3));
    assert!(
        stderr(&out).contains("corrupt_pages.parquet, row 1: row group 0 is corrupt"),
        "{}",
        stderr(&out)
    );
    let o = s.ok(&[
        "copy",
        src.to_str().unwrap(),
        "out.parquet",
        "--on-error",
        "skip",
        "--dead-letter",
        "dead",
        "--json",
        "--restart",
    ]);
    assert_eq!(summary(&o)["rows"], 0);
    assert_eq!(
        summary(&o)["dirty_rows"],
        1000,
        "the row group's rows are counted"
    );
}

#[test]
fn inference_keeps_leading_zero_codes_and_check_digits() {
    let s = Scratch::new();
    s.write("codes.csv", "postcode,id_card,account\n010000,11010119900307123X,6222021234567890123\n100000,110101199003071234,6222021234567890124\n");
    s.ok(&["copy", "codes.csv", "codes.parquet"]);
    let b = read_batches(&s.path("codes.parquet"));
    for c in ["postcode", "id_card", "account"] {
        assert_eq!(
            b[0].schema().field_with_name(c).unwrap().data_type(),
            &arrow::datatypes::DataType::Utf8,
            "{c}"
        );
    }
    assert_eq!(column_text(&b, "postcode"), ["010000", "100000"]);
}
