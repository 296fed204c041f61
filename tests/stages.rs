//! Stages end to end. Golden files pin data-in/data-out behaviour:
//! `fixtures/golden/<stage>/{input.csv, job.toml, expected.csv}`.

mod common;
use common::*;

/// Runs a golden job in a scratch copy of its directory; returns the output.
fn golden(name: &str, env: &[(&str, &str)]) -> (String, String) {
    let s = Scratch::new();
    let dir = fixtures().join("golden").join(name);
    for f in ["input.csv", "job.toml"] {
        std::fs::copy(dir.join(f), s.path(f)).unwrap();
    }
    let mut cmd = s.cmd();
    cmd.args(["run", "job.toml"]);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let got = std::fs::read_to_string(s.path("out/masked.csv")).unwrap();
    let expected = std::fs::read_to_string(dir.join("expected.csv")).unwrap();
    (got, expected)
}

#[test]
fn mask_golden_file() {
    // The pseudonyms in expected.csv were checked against Python's hmac module.
    let (got, expected) = golden(
        "mask",
        &[("TIDEX_TEST_MASK_KEY", "golden-key-0123456789abcdef")],
    );
    assert_eq!(got, expected);
}

#[test]
fn mask_from_the_one_liner_equals_the_stage() {
    let s = Scratch::new();
    let src = fixtures().join("people.csv");
    let o = s.ok(&[
        "copy",
        src.to_str().unwrap(),
        "m.csv",
        "--mask",
        "phone=phone",
        "--mask",
        "name=name",
        "--json",
    ]);
    assert_eq!(summary(&o)["rows"], 1000);
    let b = read_batches(&s.path("m.csv"));
    let phones = column_text(&b, "phone");
    assert!(
        phones.iter().all(|p| p.len() == 11 && &p[3..7] == "****"),
        "{:?}",
        &phones[..3]
    );
    let names = column_text(&b, "name");
    assert!(
        names.iter().all(|n| n.chars().skip(1).all(|c| c == '*')),
        "{:?}",
        &names[..3]
    );
    // Unmasked columns pass through.
    assert_eq!(column_text(&b, "id")[0], "1");
}

#[test]
fn mask_errors_name_the_stage_and_column() {
    let s = Scratch::new();
    let src = fixtures().join("people.csv");
    let out = s.run(&[
        "copy",
        src.to_str().unwrap(),
        "m.csv",
        "--mask",
        "telephone=phone",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("stage 0 (mask): no column `telephone`"),
        "{}",
        stderr(&out)
    );
    let out = s.run(&[
        "copy",
        src.to_str().unwrap(),
        "m.csv",
        "--mask",
        "id=pseudonym",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("pseudonym rules need `key"),
        "{}",
        stderr(&out)
    );
    let out = s.run(&[
        "copy",
        src.to_str().unwrap(),
        "m.csv",
        "--mask",
        "id=pseudonym",
        "--mask-key",
        "env:TIDEX_NO_SUCH_KEY",
    ]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains("TIDEX_NO_SUCH_KEY") && err.contains("not set"),
        "{err}"
    );
}
