//! Exactly-once output and resume: a run killed with SIGKILL and run again
//! skips its committed partitions, and the output holds every input row
//! exactly once; a completed job's rerun starts a new run; `--restart`
//! discards an interrupted one; sink modes behave as documented.

mod common;
use common::*;

fn big_csv(s: &Scratch, rows: u64) {
    let mut body = String::with_capacity(rows as usize * 40);
    body += "id,name,amount\n";
    for i in 1..=rows {
        body += &format!("{i},name-{i},{}.{:02}\n", i % 1000, i % 100);
    }
    s.write("big.csv", &body);
}

fn spec(s: &Scratch, sink_url: &str, rate: &str) -> std::path::PathBuf {
    s.write(
        "job.toml",
        &format!(
            "[job]\nname = \"resumable\"\n[source]\ntype = \"csv\"\nurl = \"big.csv\"\nsplit_size = \"64KB\"\n[sink]\ntype = \"parquet\"\nurl = \"{sink_url}\"\n[limits]\nbatch_rows = 500\nparallelism = 2\n{rate}"
        ),
    )
}

fn ids(path: &std::path::Path) -> Vec<i64> {
    let mut v: Vec<i64> = column_text(&read_batches(path), "id")
        .iter()
        .map(|x| x.parse().unwrap())
        .collect();
    v.sort();
    v
}

fn kill_midway(s: &Scratch, spec: &std::path::Path) {
    kill_when(s, spec, || committed_parts(s) >= 2);
}

#[test]
fn killed_run_resumes_and_delivers_every_row_exactly_once() {
    for sink in ["out/parts/", "out/one.parquet"] {
        let s = Scratch::new();
        let rows = 60_000;
        big_csv(&s, rows);
        // Slow enough to be killed midway: ~2.3 MB at 600 KB/s.
        let slow = spec(&s, sink, "max_bytes_per_sec = \"600KB\"\n");
        kill_midway(&s, &slow);
        assert!(
            !s.path(sink).exists(),
            "nothing is published before the run completes"
        );
        let done_before = committed_parts(&s);
        // Resume at full speed (the limit is not part of the plan).
        let fast = spec(&s, sink, "");
        let o = s.ok(&["run", fast.to_str().unwrap(), "--json"]);
        let sum = summary(&o);
        assert_eq!(sum["resumed"], true, "{sum}");
        assert!(
            sum["partitions_skipped"].as_i64().unwrap() >= done_before,
            "{sum}"
        );
        assert_eq!(sum["rows"], rows);
        assert_eq!(
            ids(&s.path(sink)),
            (1..=rows as i64).collect::<Vec<_>>(),
            "{sink}"
        );
        // Staging is cleaned up.
        let staging: Vec<_> = std::fs::read_dir(s.path("out"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert!(
            staging
                .iter()
                .all(|n| !n.to_string_lossy().contains(".tidex")),
            "{staging:?}"
        );
    }
}

#[test]
fn rerun_of_completed_job_starts_new_run_and_overwrites() {
    let s = Scratch::new();
    big_csv(&s, 5000);
    let sp = spec(&s, "out/parts/", "");
    let first = summary(&s.ok(&["run", sp.to_str().unwrap(), "--json"]));
    let parts_before = data_files(&s.path("out/parts")).len();
    big_csv(&s, 3000);
    let second = summary(&s.ok(&["run", sp.to_str().unwrap(), "--json"]));
    assert_ne!(first["run_id"], second["run_id"]);
    assert_eq!(second["resumed"], false);
    // Overwrite: exactly the second run's rows, none of the first run's parts.
    assert_eq!(ids(&s.path("out/parts")), (1..=3000).collect::<Vec<_>>());
    assert!(data_files(&s.path("out/parts")).len() <= parts_before);
    let runs = stdout(&s.ok(&["runs", "--json"]));
    assert_eq!(runs.lines().count(), 2, "{runs}");
    assert!(
        runs.lines().all(|l| l.contains("\"status\":\"completed\"")),
        "{runs}"
    );
}

#[test]
fn changed_input_needs_restart_and_restart_discards() {
    let s = Scratch::new();
    big_csv(&s, 60_000);
    let slow = spec(&s, "out/p/", "max_bytes_per_sec = \"600KB\"\n");
    kill_midway(&s, &slow);
    big_csv(&s, 70_000);
    let fast = spec(&s, "out/p/", "");
    let out = s.run(&["run", fast.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("--restart"), "{}", stderr(&out));
    let sum = summary(&s.ok(&["run", fast.to_str().unwrap(), "--restart", "--json"]));
    assert_eq!(sum["resumed"], false);
    assert_eq!(ids(&s.path("out/p")), (1..=70_000).collect::<Vec<_>>());
    assert!(stdout(&s.ok(&["runs"])).contains("discarded"));
}

#[test]
fn append_and_fail_modes() {
    let s = Scratch::new();
    s.write("a.csv", "id,v\n1,a\n2,b\n");
    for sink in [
        "out/t.parquet",
        "out/t.csv",
        "out/t.jsonl",
        "out/t.arrow",
        "out/dir/",
    ] {
        s.ok(&["copy", "a.csv", sink, "--mode", "append"]);
        s.ok(&["copy", "a.csv", sink, "--mode", "append"]);
        let b = read_batches(&s.path(sink));
        let mut ids = column_text(&b, "id");
        ids.sort();
        assert_eq!(ids, ["1", "1", "2", "2"], "{sink}");
        let out = s.run(&["copy", "a.csv", sink, "--mode", "fail"]);
        assert_eq!(out.status.code(), Some(2), "{sink}: {}", stderr(&out));
        assert!(stderr(&out).contains("already exists"), "{}", stderr(&out));
    }
}
