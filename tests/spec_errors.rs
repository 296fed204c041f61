//! `tidex validate` and spec errors: every error names the line and field
//! and says what is expected; invalid specs exit with code 2.

mod common;
use common::*;

fn validate(s: &Scratch, file: &str) -> (i32, String) {
    let out = s.run(&["validate", fixtures().join(file).to_str().unwrap()]);
    (out.status.code().unwrap(), stderr(&out) + &stdout(&out))
}

#[test]
fn bundled_job_specs_are_valid() {
    let s = Scratch::new();
    for f in [
        "jobs/people-daily.toml",
        "jobs/dirty-csv-skip.toml",
        "jobs/jsonl-to-csv.toml",
    ] {
        let (code, text) = validate(&s, f);
        assert_eq!(code, 0, "{f}: {text}");
        assert!(text.contains(": ok"), "{text}");
    }
}

#[test]
fn unknown_field_names_line_field_and_expected_fields() {
    let (code, text) = validate(&Scratch::new(), "jobs/invalid/unknown-field.toml");
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("unknown-field.toml:7:1"), "{text}");
    assert!(text.contains("`source.delimitr`"), "{text}");
    assert!(
        text.contains("expected one of") && text.contains("`delimiter`"),
        "{text}"
    );
}

#[test]
fn wrong_type_names_line_and_field() {
    let (code, text) = validate(&Scratch::new(), "jobs/invalid/wrong-type.toml");
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("wrong-type.toml:13:"), "{text}");
    assert!(
        text.contains("`limits.parallelism`") && text.contains("invalid type"),
        "{text}"
    );
}

#[test]
fn unknown_connector_lists_known_ones() {
    let (code, text) = validate(&Scratch::new(), "jobs/invalid/unknown-connector.toml");
    assert_eq!(code, 2, "{text}");
    assert!(text.contains(":5:"), "{text}");
    assert!(
        text.contains(
            "unknown source type `excel`; known source types: csv, jsonl, parquet, arrow"
        ),
        "{text}"
    );
}

#[test]
fn missing_source_is_an_error() {
    let (code, text) = validate(&Scratch::new(), "jobs/invalid/missing-source.toml");
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("missing [source] section"), "{text}");
}

#[test]
fn connector_option_errors_point_at_their_line() {
    let s = Scratch::new();
    let spec = s.write(
        "bad.toml",
        "[job]\nname = \"x\"\n\n[source]\ntype = \"csv\"\nurl = \"a.csv\"\n\n[sink]\ntype = \"csv\"\nurl = \"b.csv\"\ncompression = \"snappy\"\n",
    );
    let out = s.run(&["validate", spec.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let text = stderr(&out);
    assert!(
        text.contains("bad.toml:11:") && text.contains("`sink.compression`"),
        "{text}"
    );
    let spec = s.write("bad2.toml", "[job]\nname = \"x\"\n\n[source]\ntype = \"csv\"\nurl = \"a.csv\"\nschema = [\"id:integer\"]\n\n[sink]\ntype = \"csv\"\nurl = \"b.csv\"\n");
    let text = stderr(&s.run(&["validate", spec.to_str().unwrap()]));
    assert!(
        text.contains("bad2.toml:7:") && text.contains("unknown type `integer`"),
        "{text}"
    );
}

#[test]
fn unknown_stage_types_are_refused() {
    let s = Scratch::new();
    let spec = s.write("st.toml", "[job]\nname = \"x\"\n[source]\ntype = \"csv\"\nurl = \"a.csv\"\n[[stage]]\ntype = \"pivot\"\n[sink]\ntype = \"csv\"\nurl = \"b.csv\"\n");
    let out = s.run(&["validate", spec.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("unknown stage type `pivot`"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn stage_option_errors_point_at_their_line() {
    let s = Scratch::new();
    let base = "[job]\nname = \"x\"\n\n[source]\ntype = \"csv\"\nurl = \"a.csv\"\n\n[[stage]]\ntype = \"mask\"\ncolumns = { phone = \"passport\" }\n\n[sink]\ntype = \"csv\"\nurl = \"b.csv\"\n";
    let spec = s.write("m.toml", base);
    let text = stderr(&s.run(&["validate", spec.to_str().unwrap()]));
    assert!(
        text.contains("m.toml:10:13") && text.contains("unknown mask kind `passport`"),
        "{text}"
    );
    let spec = s.write("m2.toml", &base.replace("columns = ", "colums = "));
    let text = stderr(&s.run(&["validate", spec.to_str().unwrap()]));
    assert!(
        text.contains("m2.toml:10:1") && text.contains("unknown field `colums`"),
        "{text}"
    );
}
