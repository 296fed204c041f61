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
    let got = std::fs::read_to_string(s.path("out/output.csv")).unwrap();
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

#[test]
fn sql_golden_file_with_chained_stages_and_mask_functions() {
    // Pseudonyms checked against Python's hmac module; every other value by hand.
    let (got, expected) = golden(
        "sql",
        &[("TIDEX_TEST_MASK_KEY", "golden-key-0123456789abcdef")],
    );
    assert_eq!(got, expected);
}

#[test]
fn dedupe_keep_first_golden_file() {
    let (got, expected) = golden("dedupe-first", &[]);
    assert_eq!(got, expected);
}

#[test]
fn dedupe_keep_last_golden_file() {
    let (got, expected) = golden("dedupe-last", &[]);
    assert_eq!(got, expected);
}

fn sql_job(s: &Scratch, query: &str) -> std::path::PathBuf {
    let src = fixtures().join("people.csv");
    s.write(
        "job.toml",
        &format!(
            "[job]\nname = \"sql-check\"\n[source]\ntype = \"csv\"\nurl = {:?}\n[[stage]]\ntype = \"sql\"\nquery = \"\"\"\n{query}\n\"\"\"\n[sink]\ntype = \"csv\"\nurl = \"out.csv\"\n",
            src.to_str().unwrap()
        ),
    )
}

#[test]
fn sql_query_errors_surface_in_validate() {
    let s = Scratch::new();
    let cases = [
        ("SELECT id, nope FROM input", "No field named nope"),
        (
            "SELECT dept_code, count(*) FROM input GROUP BY dept_code",
            "GROUP BY",
        ),
        ("SELECT * FROM input ORDER BY id", "ORDER BY"),
        ("SELECT * FROM input LIMIT 5", "LIMIT"),
        ("SELECT 1", "FROM input"),
        ("SELECT pseudonym(name) FROM input", "needs `key"),
        ("SELEC id FROM input", "SQL syntax"),
    ];
    for (query, needle) in cases {
        let spec = sql_job(&s, query);
        let out = s.run(&["validate", spec.to_str().unwrap()]);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{query}: {err}");
        assert!(
            err.contains("sql") && err.contains(needle),
            "{query}: {err}"
        );
    }
    let spec = sql_job(
        &s,
        "SELECT id, upper(name) AS name FROM input WHERE id > 10",
    );
    let out = s.ok(&["validate", spec.to_str().unwrap()]);
    assert!(
        stdout(&out).contains("1 stages, 2 columns delivered"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn sql_rows_the_query_fails_on_are_dirty_rows_and_the_rest_go_on() {
    let s = Scratch::new();
    s.write("in.csv", "id,code\n1,12\n2,abc\n3,7\n");
    let o = s.ok(&[
        "copy",
        "in.csv",
        "out.csv",
        "--sql",
        "SELECT id, CAST(code AS INT) * 2 AS code FROM input",
        "--on-error",
        "skip",
        "--dead-letter",
        "dead/",
        "--json",
    ]);
    let sum = summary(&o);
    assert_eq!(sum["rows"], 2);
    assert_eq!(sum["dirty_rows"], 1);
    let out = std::fs::read_to_string(s.path("out.csv")).unwrap();
    assert_eq!(out, "id,code\n1,24\n3,14\n");
    let dead: String = data_files(&s.path("dead"))
        .iter()
        .map(|p| std::fs::read_to_string(p).unwrap())
        .collect();
    assert!(dead.contains("abc") && dead.contains("sql"), "{dead}");
    // Under the default policy the same input fails with a data error.
    let out = s.run(&[
        "copy",
        "in.csv",
        "out2.csv",
        "--sql",
        "SELECT id, CAST(code AS INT) AS code FROM input",
    ]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
}

#[test]
fn sql_and_dedupe_from_the_one_liner_equal_the_stages() {
    let s = Scratch::new();
    let src = fixtures().join("people.csv");
    let args = [
        "copy",
        src.to_str().unwrap(),
        "o.csv",
        "--sql",
        "SELECT id, dept_code, mask_phone(phone) AS phone FROM input WHERE id <= 100",
        "--dedupe",
        "dept_code",
        "--dedupe-last-by",
        "id",
    ];
    let spec = stdout(&s.ok(&[&args[..], &["--print-spec"]].concat()));
    assert!(
        spec.contains("type = \"sql\"") && spec.contains("type = \"dedupe\""),
        "{spec}"
    );
    assert!(spec.contains("order_by = \"id\""), "{spec}");
    let o = s.ok(&[&args[..], &["--json"]].concat());
    let b = read_batches(&s.path("o.csv"));
    let depts = column_text(&b, "dept_code");
    let mut unique = depts.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(depts.len(), unique.len(), "one row per department");
    assert_eq!(summary(&o)["rows"], depts.len() as u64);
    assert_eq!(
        summary(&o)["stages"][0]["dropped"],
        100 - depts.len() as u64
    );
    // keep last by id: each department's greatest id among the first 100.
    let people = read_batches(&src);
    let (ids, all_depts) = (
        column_text(&people, "id"),
        column_text(&people, "dept_code"),
    );
    for (id, dept) in column_text(&b, "id").iter().zip(&depts) {
        let newest = ids
            .iter()
            .zip(&all_depts)
            .filter(|(i, d)| *d == dept && i.parse::<i64>().unwrap() <= 100)
            .map(|(i, _)| i.parse::<i64>().unwrap())
            .max()
            .unwrap();
        assert_eq!(id.parse::<i64>().unwrap(), newest, "dept {dept}");
    }
    assert!(column_text(&b, "phone").iter().all(|p| &p[3..7] == "****"));
}

/// `copies` copies of the fixture's rows, one after another, in one CSV.
fn repeated_people(s: &Scratch, name: &str, copies: usize) {
    let text = std::fs::read_to_string(fixtures().join("people.csv")).unwrap();
    let (header, body) = text.split_once('\n').unwrap();
    let mut out = format!("{header}\n");
    for _ in 0..copies {
        out += body;
    }
    s.write(name, &out);
}

fn dedupe_job(
    s: &Scratch,
    name: &str,
    input: &str,
    extra: &str,
    limits: &str,
) -> std::path::PathBuf {
    s.write(
        "job.toml",
        &format!(
            "[job]\nname = \"{name}\"\n[source]\ntype = \"csv\"\nurl = \"{input}\"\nsplit_size = \"24KB\"\n\
             [[stage]]\ntype = \"dedupe\"\ncolumns = [\"id_card\", \"id\"]\n{extra}\n\
             [sink]\ntype = \"parquet\"\nurl = \"out/\"\n[limits]\nbatch_rows = 100\nparallelism = 2\n{limits}\n"
        ),
    )
}

fn sorted_ids(s: &Scratch) -> Vec<i64> {
    let mut v: Vec<i64> = column_text(&read_batches(&s.path("out")), "id")
        .iter()
        .map(|x| x.parse().unwrap())
        .collect();
    v.sort();
    v
}

#[test]
fn dedupe_across_partitions_of_one_run_delivers_every_key_once() {
    let s = Scratch::new();
    repeated_people(&s, "in.csv", 3);
    let spec = dedupe_job(&s, "dd-parts", "in.csv", "", "");
    let o = s.ok(&["run", spec.to_str().unwrap(), "--json"]);
    let sum = summary(&o);
    assert!(sum["partitions"].as_u64().unwrap() >= 4, "{sum}");
    assert_eq!(sum["rows"], 1000);
    assert_eq!(sum["stages"][0]["dropped"], 2000);
    assert_eq!(sorted_ids(&s), (1..=1000).collect::<Vec<_>>());
}

#[test]
fn dedupe_across_runs_delivers_only_new_keys_over_three_runs() {
    let s = Scratch::new();
    let text = std::fs::read_to_string(fixtures().join("people.csv")).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let write = |from: usize, to: usize| {
        let mut body = format!("{}\n", lines[0]);
        for l in &lines[from..=to] {
            body += l;
            body += "\n";
        }
        s.write("in.csv", &body);
    };
    let spec = dedupe_job(&s, "dd-runs", "in.csv", "across_runs = true", "");
    let mut delivered = Vec::new();
    for (from, to, new_rows) in [(1, 400, 400), (201, 700, 300), (1, 1000, 300)] {
        write(from, to);
        let o = s.ok(&["run", spec.to_str().unwrap(), "--json"]);
        let sum = summary(&o);
        assert_eq!(sum["rows"], new_rows, "run over rows {from}..={to}: {sum}");
        assert_eq!(
            sum["stages"][0]["dropped"],
            (to - from + 1 - new_rows) as u64
        );
        delivered.extend(sorted_ids(&s));
    }
    delivered.sort();
    assert_eq!(
        delivered,
        (1..=1000).collect::<Vec<_>>(),
        "every key exactly once"
    );
    // Earlier runs' keys now live in the sorted index, not the state store.
    let conn = rusqlite::Connection::open(s.path(".tidex/state.db")).unwrap();
    let left: i64 = conn
        .query_row("SELECT COUNT(*) FROM part_data WHERE run_id < 3", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(left, 0);
}

#[test]
fn dedupe_resumed_after_a_kill_loses_nothing_and_delivers_nothing_twice() {
    let s = Scratch::new();
    repeated_people(&s, "in.csv", 6);
    let spec = dedupe_job(&s, "dd-kill", "in.csv", "", "max_bytes_per_sec = \"150KB\"");
    kill_when(&s, &spec, || committed_parts(&s) >= 3);
    let o = s.ok(&["run", spec.to_str().unwrap(), "--json"]);
    let sum = summary(&o);
    assert_eq!(sum["resumed"], true, "{sum}");
    assert_eq!(sum["rows"], 1000, "{sum}");
    assert_eq!(sorted_ids(&s), (1..=1000).collect::<Vec<_>>());
}
