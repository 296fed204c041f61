//! The scheduler end to end: `tidex simulate` on the default trace,
//! `tidex plan` learning from a first run, and `tidex serve` picking up
//! added and removed specs, running submitted jobs, catching up on missed
//! fire times after a restart, and leaving resumable state on SIGTERM.

mod common;
use common::*;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

fn wait_for(what: &str, secs: u64, mut ok: impl FnMut() -> bool) {
    let t = Instant::now();
    while !ok() {
        assert!(
            t.elapsed() < Duration::from_secs(secs),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn csv(s: &Scratch, name: &str, rows: u64) {
    let mut body = String::from("id,name,amount\n");
    for i in 1..=rows {
        body += &format!("{i},name-{i},{}.{:02}\n", i % 1000, i % 100);
    }
    s.write(name, &body);
}

fn job(s: &Scratch, file: &str, name: &str, input: &str, extra: &str) -> std::path::PathBuf {
    s.write(
        &format!("jobs/{file}"),
        &format!(
            "[job]\nname = \"{name}\"\n[source]\ntype = \"csv\"\nurl = \"{input}\"\nsplit_size = \"64KB\"\n\
             [sink]\ntype = \"parquet\"\nurl = \"out/{name}/\"\n[limits]\nbatch_rows = 500\nparallelism = 2\n{extra}"
        ),
    )
}

struct Serve {
    child: Child,
}

impl Serve {
    fn start(s: &Scratch) -> Serve {
        let _ = std::fs::remove_file(s.path(".tidex/serve.addr"));
        std::fs::create_dir_all(s.path(".tidex")).unwrap();
        let log = std::fs::File::create(s.path("serve.log")).unwrap();
        let child = s
            .cmd()
            .args([
                "serve",
                "jobs",
                "--listen",
                "127.0.0.1:0",
                "--poll-secs",
                "0.2",
                "--workers",
                "2",
                "-v",
            ])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        wait_for("serve to listen", 60, || {
            s.path(".tidex/serve.addr").exists()
        });
        Serve { child }
    }

    fn terminate(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        assert!(std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success());
        let t = Instant::now();
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return st;
            }
            assert!(t.elapsed() < Duration::from_secs(60), "serve did not stop");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn db(s: &Scratch) -> rusqlite::Connection {
    rusqlite::Connection::open(s.path(".tidex/state.db")).unwrap()
}

fn runs_of(s: &Scratch, job: &str, status: &str) -> i64 {
    db(s)
        .query_row(
            "SELECT COUNT(*) FROM runs WHERE job = ?1 AND status = ?2",
            [job, status],
            |r| r.get(0),
        )
        .unwrap_or(0)
}

fn ids(path: &Path) -> Vec<i64> {
    let mut v: Vec<i64> = column_text(&read_batches(path), "id")
        .iter()
        .map(|x| x.parse().unwrap())
        .collect();
    v.sort();
    v
}

#[test]
fn simulate_default_trace_combined_beats_static_and_dynamic() {
    let s = Scratch::new();
    let trace = fixtures().join("traces/default.toml");
    let out = s.ok(&[
        "simulate",
        "--trace",
        trace.to_str().unwrap(),
        "--workers",
        "24",
        "--strategy",
        "all",
        "--json",
    ]);
    let reports: Vec<serde_json::Value> = stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let by = |name: &str| reports.iter().find(|r| r["strategy"] == name).unwrap();
    let (st, dy, co) = (by("static"), by("dynamic"), by("combined"));
    let f = |r: &serde_json::Value, k: &str| r[k].as_f64().unwrap();
    for other in [st, dy] {
        assert!(
            f(co, "window_misses") < f(other, "window_misses"),
            "{co} vs {other}"
        );
        assert!(
            f(co, "urgent_p95_secs") < f(other, "urgent_p95_secs"),
            "{co} vs {other}"
        );
        assert!(
            f(co, "makespan_secs") <= f(other, "makespan_secs"),
            "{co} vs {other}"
        );
        assert_eq!(co["runs"], other["runs"]);
    }
    assert!(
        f(co, "surges") >= 1.0,
        "the outage backlog is a surge: {co}"
    );
    assert_eq!(f(st, "splits"), 0.0);
    assert!(f(co, "splits") > 0.0);
}

#[test]
fn second_plan_uses_what_the_first_run_measured() {
    let s = Scratch::new();
    csv(&s, "in.csv", 20_000);
    job(
        &s,
        "nightly.toml",
        "nightly",
        "in.csv",
        "[schedule]\ncron = \"0 2 * * *\"\ntimezone = \"Asia/Shanghai\"\nwindow = \"02:00-06:00\"\npriority = \"bulk\"\n",
    );
    let plan = |s: &Scratch| -> serde_json::Value {
        let o = s.ok(&[
            "plan",
            "jobs",
            "--at",
            "2026-11-21T12:00:00+08:00",
            "--workers",
            "4",
            "--json",
        ]);
        serde_json::from_str(stdout(&o).lines().next().unwrap()).unwrap()
    };
    let first = plan(&s);
    assert_eq!(first["job"], "nightly");
    assert_eq!(first["history_runs"], 0);
    assert_eq!(first["work_secs"], 60.0, "no history: the default guess");
    assert_eq!(first["fire"], "2026-11-21T18:00:00Z");
    assert_eq!(first["deadline"], "2026-11-21T22:00:00Z");
    s.ok(&["run", "jobs/nightly.toml"]);
    let measured: f64 = db(&s)
        .query_row("SELECT SUM(secs) FROM parts", [], |r| r.get(0))
        .unwrap();
    assert!(measured > 0.0);
    let second = plan(&s);
    assert_eq!(second["history_runs"], 1);
    let predicted = second["work_secs"].as_f64().unwrap();
    assert!(
        (predicted - measured).abs() < 1e-6,
        "{predicted} vs {measured}"
    );
    // The table says so too.
    let table = stdout(&s.ok(&["plan", "jobs", "--at", "2026-11-21T12:00:00+08:00"]));
    assert!(table.contains("1 runs"), "{table}");
}

#[test]
fn bad_schedule_names_file_line_and_field() {
    let s = Scratch::new();
    csv(&s, "in.csv", 10);
    let p = job(
        &s,
        "bad.toml",
        "bad",
        "in.csv",
        "[schedule]\ncron = \"0 2 * * *\"\ntimezone = \"Asia/Beijing\"\n",
    );
    let out = s.run(&["validate", p.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(err.contains("bad.toml:15:"), "{err}");
    assert!(err.contains("`schedule.timezone`"), "{err}");
    assert!(err.contains("unknown time zone"), "{err}");
}

#[test]
fn serve_reloads_specs_runs_submissions_and_stops_gracefully() {
    let s = Scratch::new();
    csv(&s, "small.csv", 3000);
    csv(&s, "big.csv", 60_000);
    job(&s, "a.toml", "a", "small.csv", "");
    let serve = Serve::start(&s);
    s.ok(&["submit", "a"]);
    wait_for("a to complete", 60, || runs_of(&s, "a", "completed") == 1);
    assert_eq!(ids(&s.path("out/a")), (1..=3000).collect::<Vec<_>>());

    // Added without a restart.
    job(
        &s,
        "b.toml",
        "b",
        "small.csv",
        "[schedule]\npriority = \"urgent\"\n",
    );
    wait_for("b to be loaded", 30, || {
        s.run(&["submit", "b"]).status.success()
    });
    wait_for("b to complete", 60, || runs_of(&s, "b", "completed") == 1);

    // Changed without a restart: the next run uses the new spec.
    let changed = std::fs::read_to_string(s.path("jobs/b.toml"))
        .unwrap()
        .replace("out/b/", "out/b2/");
    s.write("jobs/b.toml", &changed);
    wait_for("the changed b to run", 60, || {
        // A submission that beat the rescan still writes to out/b/.
        if !s.path("out/b2").exists() {
            let _ = s.run(&["submit", "b"]);
            std::thread::sleep(Duration::from_millis(500));
        }
        s.path("out/b2").exists()
    });
    wait_for("b to complete again", 60, || {
        runs_of(&s, "b", "completed") >= 2
    });
    assert_eq!(ids(&s.path("out/b2")), (1..=3000).collect::<Vec<_>>());

    // Removed without a restart.
    std::fs::remove_file(s.path("jobs/a.toml")).unwrap();
    wait_for("a to be unloaded", 30, || {
        s.run(&["submit", "a"]).status.code() == Some(2)
    });
    let out = s.run(&["submit", "nope"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("no job `nope`"), "{}", stderr(&out));

    // SIGTERM during a slow run: committed partitions stay, the rest is resumable.
    job(
        &s,
        "c.toml",
        "c",
        "big.csv",
        "max_bytes_per_sec = \"400KB\"\n",
    );
    wait_for("c to be loaded", 30, || {
        s.run(&["submit", "c"]).status.success()
    });
    wait_for("c to commit a partition", 60, || committed_parts(&s) >= 5);
    let status = serve.terminate();
    assert!(status.success(), "{status}");
    let log = std::fs::read_to_string(s.path("serve.log")).unwrap();
    assert!(log.contains("resumable"), "{log}");
    assert!(!s.path("out/c").exists(), "nothing published mid-run");
    assert_eq!(runs_of(&s, "c", "failed"), 1, "{log}");
    let o = s.ok(&["run", "jobs/c.toml", "--json"]);
    let sum = summary(&o);
    assert_eq!(sum["resumed"], true, "{sum}");
    assert!(sum["partitions_skipped"].as_i64().unwrap() >= 1, "{sum}");
    assert_eq!(ids(&s.path("out/c")), (1..=60_000).collect::<Vec<_>>());
}

#[test]
fn serve_catches_up_on_missed_fire_times_after_a_restart() {
    let s = Scratch::new();
    csv(&s, "small.csv", 500);
    // Hourly jobs whose service was down for the last five hours.
    for (name, policy) in [("all", "all"), ("latest", "latest"), ("none", "none")] {
        job(
            &s,
            &format!("{name}.toml"),
            name,
            "small.csv",
            &format!(
                "[schedule]\ncron = \"0 * * * *\"\ntimezone = \"UTC\"\ncatch_up = \"{policy}\"\n"
            ),
        );
    }
    std::fs::create_dir_all(s.path(".tidex")).unwrap();
    tidex_state_with_last_fire(&s, &["all", "latest", "none"], 5);
    let serve = Serve::start(&s);
    wait_for("catch-up runs", 120, || {
        runs_of(&s, "all", "completed") >= 5 && runs_of(&s, "latest", "completed") >= 1
    });
    // Give a wrongly scheduled extra run the chance to show up.
    std::thread::sleep(Duration::from_secs(1));
    let status = serve.terminate();
    assert!(status.success());
    let total = |job: &str| -> i64 {
        db(&s)
            .query_row("SELECT COUNT(*) FROM runs WHERE job = ?1", [job], |r| {
                r.get(0)
            })
            .unwrap()
    };
    // The fire at the top of the current hour may be on time.
    assert!((5..=6).contains(&total("all")), "{}", total("all"));
    assert_eq!(total("latest"), 1);
    assert!(total("none") <= 1, "only an on-time fire runs");
    // The fire times are remembered: a restart does not run them again.
    let serve = Serve::start(&s);
    std::thread::sleep(Duration::from_secs(2));
    serve.terminate();
    assert!((5..=6).contains(&total("all")));
    assert_eq!(total("latest"), 1);
}

/// Creates the state store and records that each job's last fire time was
/// `hours` ago, as a service that went down then would have left it.
fn tidex_state_with_last_fire(s: &Scratch, jobs: &[&str], hours: i64) {
    // `tidex runs` creates the state database with its tables.
    s.ok(&["runs"]);
    let at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
        - hours * 3600
        - 60;
    let conn = db(s);
    for j in jobs {
        conn.execute(
            "INSERT INTO schedule_fires (job, last_fire) VALUES (?1, strftime('%Y-%m-%dT%H:%M:%SZ', ?2, 'unixepoch'))",
            rusqlite::params![j, at],
        )
        .unwrap();
    }
}

fn finished_at(s: &Scratch, job: &str) -> Option<String> {
    db(s)
        .query_row(
            "SELECT finished_at FROM runs WHERE job = ?1 AND status = 'completed'",
            [job],
            |r| r.get(0),
        )
        .ok()
}

fn http_get(s: &Scratch, path: &str) -> String {
    use std::io::{Read, Write};
    let addr = std::fs::read_to_string(s.path(".tidex/serve.addr")).unwrap();
    let mut c = std::net::TcpStream::connect(addr.trim()).unwrap();
    write!(c, "GET {path} HTTP/1.0\r\n\r\n").unwrap();
    let mut out = String::new();
    c.read_to_string(&mut out).unwrap();
    out
}

#[test]
fn serve_gives_urgent_work_the_next_free_worker_during_a_bulk_run() {
    let s = Scratch::new();
    csv(&s, "big.csv", 60_000);
    csv(&s, "small.csv", 2000);
    // The bulk run can use both workers of the pool, and does.
    job(
        &s,
        "bulk.toml",
        "bulk",
        "big.csv",
        "max_bytes_per_sec = \"500KB\"\n[schedule]\npriority = \"bulk\"\n",
    );
    job(
        &s,
        "query.toml",
        "query",
        "small.csv",
        "[schedule]\npriority = \"urgent\"\n",
    );
    let serve = Serve::start(&s);
    s.ok(&["submit", "bulk"]);
    wait_for("the bulk run to be under way", 60, || {
        committed_parts(&s) >= 2
    });
    let metrics = http_get(&s, "/metrics");
    assert!(metrics.contains("tidex_workers 2"), "{metrics}");
    assert!(metrics.contains("tidex_workers_busy"), "{metrics}");
    assert!(metrics.contains("tidex_queue_depth"), "{metrics}");
    assert!(metrics.contains("tidex_surges_total"), "{metrics}");
    s.ok(&["submit", "query"]);
    wait_for("both runs to complete", 120, || {
        finished_at(&s, "query").is_some() && finished_at(&s, "bulk").is_some()
    });
    let (q, b) = (
        finished_at(&s, "query").unwrap(),
        finished_at(&s, "bulk").unwrap(),
    );
    assert!(q < b, "urgent finished at {q}, bulk at {b}");
    wait_for("/status to count both runs", 30, || {
        http_get(&s, "/status").contains("\"runs_completed\":2")
    });
    assert!(serve.terminate().success());
    assert_eq!(ids(&s.path("out/bulk")), (1..=60_000).collect::<Vec<_>>());
}

#[test]
fn serve_applies_the_planned_partition_count_to_a_source_that_can_split() {
    let s = Scratch::new();
    let c = rusqlite::Connection::open(s.path("src.db")).unwrap();
    c.execute_batch(
        "CREATE TABLE people (id INTEGER PRIMARY KEY, name TEXT);
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 5000)
         INSERT INTO people SELECT i, 'name-' || i FROM n;",
    )
    .unwrap();
    drop(c);
    s.write(
        "jobs/db.toml",
        "[job]\nname = \"db\"\n[source]\ntype = \"sqlite\"\nurl = \"sqlite://src.db\"\ntable = \"people\"\npartitions = 1\n\
         [sink]\ntype = \"parquet\"\nurl = \"out/db/\"\n[limits]\nparallelism = 2\n",
    );
    let serve = Serve::start(&s);
    s.ok(&["submit", "db"]);
    wait_for("db to complete", 60, || runs_of(&s, "db", "completed") == 1);
    assert!(serve.terminate().success());
    // One partition as written; the planner asks for two per allotted worker.
    let parts: i64 = db(&s)
        .query_row("SELECT partitions FROM runs WHERE job = 'db'", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(parts, 4);
    assert_eq!(ids(&s.path("out/db")), (1..=5000).collect::<Vec<_>>());
}

/// A directory of two small CSV files and one big one, each read as one
/// partition, and a job over it whose big partition lags: reads are
/// throttled and a partition is cut once it has run 300 ms and more than
/// twice as long as the small ones took.
fn lagging_job(s: &Scratch, big_rows: u64) -> std::path::PathBuf {
    csv(s, "in/a-big.csv", big_rows);
    csv(s, "in/b-small.csv", 100);
    csv(s, "in/c-small.csv", 100);
    s.write(
        "jobs/lag.toml",
        "[job]\nname = \"lag\"\n[source]\ntype = \"csv\"\nurl = \"in/\"\nsplit_size = \"1GB\"\n\
         [sink]\ntype = \"parquet\"\nurl = \"out/lag/\"\n\
         [limits]\nbatch_rows = 2000\nparallelism = 2\nmax_bytes_per_sec = \"3MB\"\nsplit_lagging_after = \"300ms\"\n",
    )
}

fn lagging_ids(big_rows: u64) -> Vec<i64> {
    let mut v: Vec<i64> = (1..=big_rows as i64)
        .chain(1..=100)
        .chain(1..=100)
        .collect();
    v.sort();
    v
}

fn state_count(s: &Scratch, sql: &str) -> i64 {
    if !s.path(".tidex/state.db").exists() {
        return 0;
    }
    db(s).query_row(sql, [], |r| r.get(0)).unwrap_or(0)
}

#[test]
fn serve_splits_a_lagging_partition_while_it_runs() {
    let s = Scratch::new();
    let rows = 300_000;
    lagging_job(&s, rows);
    let serve = Serve::start(&s);
    s.ok(&["submit", "lag"]);
    wait_for("the run to complete", 120, || {
        runs_of(&s, "lag", "completed") == 1
    });
    assert!(serve.terminate().success());
    // The big file's partition was cut while it ran; its rest went to the
    // worker the small files left idle.
    let cuts = state_count(&s, "SELECT COUNT(*) FROM run_splits");
    assert!(cuts >= 1, "no partition was cut");
    let planned = state_count(&s, "SELECT partitions FROM runs WHERE job = 'lag'");
    assert_eq!(planned, 3 + cuts);
    assert_eq!(state_count(&s, "SELECT COUNT(*) FROM parts"), planned);
    let log = std::fs::read_to_string(s.path("serve.log")).unwrap();
    assert!(log.contains("its rest is a new partition"), "{log}");
    // Every row exactly once.
    assert_eq!(ids(&s.path("out/lag")), lagging_ids(rows));
}

#[test]
fn a_run_killed_after_a_cut_resumes_with_the_same_partitions() {
    let s = Scratch::new();
    let rows = 400_000;
    let spec = lagging_job(&s, rows);
    // Killed once a partition made by a cut is committed, with others
    // still running: the resumed run must know that partition, and that
    // the partition it was cut from now ends where the cut is.
    kill_when(&s, &spec, || {
        state_count(&s, "SELECT COUNT(*) FROM parts WHERE part_index >= 3") >= 1
    });
    assert_eq!(runs_of(&s, "lag", "completed"), 0);
    let out = s.ok(&["run", spec.to_str().unwrap(), "--no-progress", "--json"]);
    let sum = summary(&out);
    assert_eq!(sum["resumed"], true, "{sum}");
    assert!(sum["partitions"].as_u64().unwrap() > 3, "{sum}");
    assert!(sum["partitions_skipped"].as_u64().unwrap() >= 1, "{sum}");
    assert_eq!(ids(&s.path("out/lag")), lagging_ids(rows));
}

#[test]
fn split_lagging_after_off_never_cuts() {
    let s = Scratch::new();
    let rows = 150_000;
    let spec = lagging_job(&s, rows);
    let body = std::fs::read_to_string(&spec)
        .unwrap()
        .replace("\"300ms\"", "\"off\"");
    std::fs::write(&spec, body).unwrap();
    let out = s.ok(&["run", spec.to_str().unwrap(), "--no-progress", "--json"]);
    assert_eq!(summary(&out)["partitions"], 3);
    assert_eq!(state_count(&s, "SELECT COUNT(*) FROM run_splits"), 0);
    assert_eq!(ids(&s.path("out/lag")), lagging_ids(rows));
}

#[test]
fn a_lagging_json_lines_partition_is_cut_at_a_line_start() {
    let s = Scratch::new();
    let rows = 150_000;
    let lines = |n: u64| -> String {
        (1..=n)
            .map(|i| {
                format!(
                    "{{\"id\":{i},\"name\":\"name-{i}\",\"note\":\"{}\"}}\n",
                    "x".repeat((i % 7) as usize)
                )
            })
            .collect()
    };
    s.write("in/a-big.jsonl", &lines(rows));
    s.write("in/b-small.jsonl", &lines(100));
    s.write("in/c-small.jsonl", &lines(100));
    let spec = s.write(
        "jobs/lag.toml",
        "[job]\nname = \"lag\"\n[source]\ntype = \"jsonl\"\nurl = \"in/\"\nsplit_size = \"1GB\"\n\
         [sink]\ntype = \"parquet\"\nurl = \"out/lag/\"\n\
         [limits]\nbatch_rows = 2000\nparallelism = 2\nmax_bytes_per_sec = \"3MB\"\nsplit_lagging_after = \"300ms\"\n",
    );
    let out = s.ok(&["run", spec.to_str().unwrap(), "--no-progress", "--json"]);
    let sum = summary(&out);
    assert!(sum["partitions_split"].as_u64().unwrap_or(0) >= 1, "{sum}");
    assert!(state_count(&s, "SELECT COUNT(*) FROM run_splits") >= 1);
    // People see it too.
    let again = s.ok(&["run", spec.to_str().unwrap(), "--no-progress", "--restart"]);
    assert!(
        stdout(&again).contains("made by cutting lagging partitions"),
        "{}",
        stdout(&again)
    );
    let mut want: Vec<i64> = (1..=rows as i64).chain(1..=100).chain(1..=100).collect();
    want.sort();
    assert_eq!(ids(&s.path("out/lag")), want);
}

#[test]
fn a_lagging_parquet_partition_is_cut_between_row_groups() {
    let s = Scratch::new();
    let rows = 200_000;
    // Parquet inputs written by tidex: one file of 40 row groups, two small.
    for (name, n, groups) in [
        ("a-big", rows, 5000),
        ("b-small", 100, 100),
        ("c-small", 100, 100),
    ] {
        csv(&s, &format!("csv/{name}.csv"), n);
        let spec = s.write(
            &format!("make-{name}.toml"),
            &format!(
                "[job]\nname = \"make-{name}\"\n[source]\ntype = \"csv\"\nurl = \"csv/{name}.csv\"\n\
                 [sink]\ntype = \"parquet\"\nurl = \"in/{name}.parquet\"\nrow_group_rows = {groups}\n\
                 [limits]\nparallelism = 1\n"
            ),
        );
        s.ok(&["run", spec.to_str().unwrap(), "--no-progress"]);
    }
    let spec = s.write(
        "jobs/lag.toml",
        "[job]\nname = \"lag\"\n[source]\ntype = \"parquet\"\nurl = \"in/\"\nsplit_size = \"1GB\"\n\
         [sink]\ntype = \"parquet\"\nurl = \"out/lag/\"\n\
         [limits]\nbatch_rows = 1000\nparallelism = 2\nmax_rows_per_sec = 100000\nsplit_lagging_after = \"300ms\"\n",
    );
    let out = s.ok(&["run", spec.to_str().unwrap(), "--no-progress", "--json"]);
    let sum = summary(&out);
    assert!(sum["partitions_split"].as_u64().unwrap_or(0) >= 1, "{sum}");
    assert_eq!(
        sum["partitions"].as_u64().unwrap(),
        3 + sum["partitions_split"].as_u64().unwrap()
    );
    assert_eq!(ids(&s.path("out/lag")), lagging_ids(rows));
}
