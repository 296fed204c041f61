//! `tidex serve`, `submit`, `plan` and `simulate`: wiring of the engine's
//! scheduler to specs on disk, the real runtime and a small HTTP endpoint.
//!
//! `tidex serve` listens on 127.0.0.1 (default port 7878) for
//! `POST /submit?job=NAME[&priority=urgent]`, `GET /metrics` (Prometheus
//! text) and `GET /status` (JSON), and writes the address it bound to
//! `serve.addr` beside the state database, where `tidex submit` finds it.

use chrono::{DateTime, Utc};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tidex_engine::runtime::{run_job, Progress, RunOptions};
use tidex_engine::scheduler::clock::{Clock, RealClock};
use tidex_engine::scheduler::cron::Schedule;
use tidex_engine::scheduler::fair::{JobThrottle, SharedLimiter};
use tidex_engine::scheduler::grant::{Pool, RunMeta};
use tidex_engine::scheduler::planner::{self, Estimate, PlanEntry, PlanInput};
use tidex_engine::scheduler::sim::{simulate, Report, Trace};
use tidex_engine::scheduler::split::{split_laggards, split_to};
use tidex_engine::scheduler::surge::SurgeDetector;
use tidex_engine::scheduler::Strategy;
use tidex_engine::spec::{JobSpec, Priority};
use tidex_engine::state::StateStore;
use tidex_engine::{BuildContext, Error, Registry};

/// Runs of history the planner reads per job.
const HISTORY_RUNS: usize = 5;
/// Interval over which arrivals are counted for surge detection.
const SURGE_BUCKET_SECS: i64 = 300;

/// A loaded job spec.
struct Loaded {
    path: PathBuf,
    hash: String,
    spec: JobSpec,
    schedule: Option<Schedule>,
}

fn schedule_of(spec: &JobSpec) -> Option<Schedule> {
    spec.schedule
        .as_ref()
        .and_then(|s| Schedule::compile(s).ok())
}

/// Loads every `*.toml` spec in `dir`; bad specs are reported (file, line,
/// field) and skipped.
fn load_dir(
    registry: &Registry,
    dir: &Path,
    report: &mut dyn FnMut(String),
) -> Result<BTreeMap<String, Loaded>, Error> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| Error::Config(format!("cannot read job directory {}: {e}", dir.display())))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    paths.sort();
    let mut jobs = BTreeMap::new();
    for path in paths {
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        let name = path.display().to_string();
        let spec = match JobSpec::parse(&text)
            .map_err(|e| e.in_file(&name))
            .and_then(|s| {
                registry
                    .validate(&s)
                    .map(|_| s)
                    .map_err(|e| e.in_file(&name))
            }) {
            Ok(s) => s,
            Err(e) => {
                report(format!("skipping invalid job spec: {e}"));
                continue;
            }
        };
        if let Some(other) = jobs.get(&spec.job.name) {
            let other: &Loaded = other;
            report(format!(
                "skipping {name}: job `{}` is already defined by {}",
                spec.job.name,
                other.path.display()
            ));
            continue;
        }
        jobs.insert(
            spec.job.name.clone(),
            Loaded {
                path,
                hash: spec.fingerprint(),
                schedule: schedule_of(&spec),
                spec,
            },
        );
    }
    Ok(jobs)
}

fn estimate(state: &StateStore, job: &str) -> Result<Option<Estimate>, Error> {
    Ok(Estimate::from_history(
        &state.part_history(job, HISTORY_RUNS)?,
    ))
}

fn plan_input(l: &Loaded, fire: DateTime<Utc>, est: Option<Estimate>) -> PlanInput {
    PlanInput {
        job: l.spec.job.name.clone(),
        priority: l.schedule.as_ref().map_or(Priority::Normal, |s| s.priority),
        fire,
        window_start: l.schedule.as_ref().and_then(|s| s.window_start(fire)),
        deadline: l.schedule.as_ref().and_then(|s| s.deadline(fire)),
        max_workers: l.spec.limits.parallelism,
        estimate: est,
        size_hint_secs: None,
    }
}

// ---------------------------------------------------------------------------
// tidex plan

/// Prints the coming tide: each recurring job's next run after `at`.
pub fn plan(
    registry: &Registry,
    state_path: &Path,
    dir: &Path,
    at: Option<&str>,
    workers: usize,
    json: bool,
) -> Result<(), Error> {
    let at = match at {
        Some(t) => parse_time(t)?,
        None => Utc::now(),
    };
    let state = StateStore::open(state_path)?;
    let jobs = load_dir(registry, dir, &mut |m| eprintln!("warning: {m}"))?;
    let mut inputs = Vec::new();
    for l in jobs.values() {
        let Some(fire) = l.schedule.as_ref().and_then(|s| s.next_after(at)) else {
            continue;
        };
        if fire - at > chrono::Duration::hours(24) {
            continue;
        }
        inputs.push(plan_input(l, fire, estimate(&state, &l.spec.job.name)?));
    }
    let entries = planner::plan(&inputs, workers);
    if json {
        for e in &entries {
            println!(
                "{}",
                serde_json::to_string(e).map_err(|e| Error::Internal(e.to_string()))?
            );
        }
    } else {
        print_plan(&entries, at, workers);
    }
    Ok(())
}

fn parse_time(t: &str) -> Result<DateTime<Utc>, Error> {
    DateTime::parse_from_rfc3339(t)
        .map(|d| d.with_timezone(&Utc))
        .map_err(|e| {
            Error::Config(format!(
                "--at {t:?}: expected an RFC 3339 time such as 2026-11-22T01:00:00+08:00 ({e})"
            ))
        })
}

fn print_plan(entries: &[PlanEntry], at: DateTime<Utc>, workers: usize) {
    println!(
        "tide after {} on {workers} workers: {} runs",
        at.to_rfc3339(),
        entries.len()
    );
    println!(
        "{:<28} {:<7} {:>5} {:>7} {:>10} {:>8}  {:<20} {:<20} {:<20} note",
        "job", "prio", "parts", "workers", "work s", "history", "start", "finish", "deadline"
    );
    let fmt = |t: DateTime<Utc>| t.format("%Y-%m-%d %H:%M:%SZ").to_string();
    for e in entries {
        println!(
            "{:<28} {:<7} {:>5} {:>7} {:>10.0} {:>8}  {:<20} {:<20} {:<20} {}",
            e.job,
            e.priority.as_str(),
            e.partitions,
            e.workers,
            e.work_secs,
            if e.history_runs == 0 {
                "none".to_string()
            } else {
                format!("{} runs", e.history_runs)
            },
            fmt(e.start),
            fmt(e.finish),
            e.deadline.map_or("-".into(), fmt),
            if e.misses_window { "MISSES WINDOW" } else { "" }
        );
    }
    let misses = entries.iter().filter(|e| e.misses_window).count();
    if misses > 0 {
        println!("{misses} run(s) predicted to miss their window");
    }
}

// ---------------------------------------------------------------------------
// tidex simulate

/// Replays a trace with one strategy or all three.
pub fn simulate_cmd(
    trace: &Path,
    workers: Option<usize>,
    strategy: &str,
    json: bool,
) -> Result<(), Error> {
    let text = std::fs::read_to_string(trace)
        .map_err(|e| Error::Config(format!("cannot read trace {}: {e}", trace.display())))?;
    let t = Trace::parse(&text)?;
    let workers = workers.unwrap_or(t.workers);
    let strategies: Vec<Strategy> = if strategy == "all" {
        vec![Strategy::Static, Strategy::Dynamic, Strategy::Combined]
    } else {
        vec![strategy.parse().map_err(Error::Config)?]
    };
    let reports: Vec<Report> = strategies
        .into_iter()
        .map(|s| simulate(&t, workers, s))
        .collect::<Result<_, _>>()?;
    if json {
        for r in &reports {
            println!(
                "{}",
                serde_json::to_string(r).map_err(|e| Error::Internal(e.to_string()))?
            );
        }
        return Ok(());
    }
    println!(
        "{:<9} {:>7} {:>6} {:>12} {:>13} {:>16} {:>11} {:>7} {:>7} {:>9}",
        "strategy",
        "workers",
        "runs",
        "makespan h",
        "window misses",
        "urgent p95 s",
        "utilisation",
        "splits",
        "surges",
        "max queue"
    );
    for r in &reports {
        println!(
            "{:<9} {:>7} {:>6} {:>12.2} {:>8}/{:<4} {:>16.1} {:>10.1}% {:>7} {:>7} {:>9}",
            r.strategy,
            r.workers,
            r.runs,
            r.makespan_secs / 3600.0,
            r.window_misses,
            r.tide_runs,
            r.urgent_p95_secs,
            100.0 * r.utilisation,
            r.splits,
            r.surges,
            r.max_queue_depth
        );
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// tidex serve

/// Options of `tidex serve`.
pub struct ServeOpts {
    /// Directory of job specs.
    pub dir: PathBuf,
    /// Workers in the shared pool.
    pub workers: usize,
    /// Address to listen on.
    pub listen: String,
    /// How workers are handed out.
    pub strategy: Strategy,
    /// Global cap on input bytes per second.
    pub max_bytes_per_sec: Option<u64>,
    /// Global cap on rows per second.
    pub max_rows_per_sec: Option<u64>,
    /// How often specs are rescanned and schedules checked.
    pub poll: Duration,
}

#[derive(Debug, Clone)]
struct Request {
    job: String,
    priority: Option<Priority>,
    fire: Option<DateTime<Utc>>,
    why: &'static str,
}

#[derive(Debug, Default, Clone, serde::Serialize)]
struct Metrics {
    runs_waiting: usize,
    runs_running: usize,
    runs_completed: u64,
    runs_failed: u64,
    surges: u64,
    arrivals_forecast: f64,
    jobs: Vec<String>,
    running: Vec<String>,
}

struct Shared {
    metrics: Mutex<Metrics>,
    inbox: Mutex<Vec<Request>>,
    pool: Arc<Pool>,
}

/// `tidex serve`: runs until SIGTERM or Ctrl-C.
pub fn serve(registry: Registry, state_path: &Path, o: ServeOpts) -> Result<(), Error> {
    let registry = Arc::new(registry);
    let clock: Arc<dyn Clock> = Arc::new(RealClock);
    let state = Arc::new(StateStore::open(state_path)?);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("tidex-io")
        .enable_all()
        .build()
        .map_err(|e| Error::io("starting the I/O runtime", e))?;
    let shutdown = Arc::new(AtomicBool::new(false));
    {
        let shutdown = shutdown.clone();
        rt.spawn(async move {
            let mut term =
                match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::error!("cannot listen for SIGTERM: {e}");
                        return;
                    }
                };
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            eprintln!("shutting down: partitions in flight finish or stay resumable");
            shutdown.store(true, Ordering::Relaxed);
        });
    }
    let pool = Pool::new(o.workers, o.strategy, clock.clone());
    let bytes = Arc::new(SharedLimiter::new(o.max_bytes_per_sec, clock.clone()));
    let rows = Arc::new(SharedLimiter::new(o.max_rows_per_sec, clock.clone()));
    let shared = Arc::new(Shared {
        metrics: Mutex::new(Metrics::default()),
        inbox: Mutex::new(Vec::new()),
        pool: pool.clone(),
    });
    let listener = std::net::TcpListener::bind(&o.listen)
        .map_err(|e| Error::io(format!("listening on {}", o.listen), e))?;
    let addr = listener
        .local_addr()
        .map_err(|e| Error::io("reading the listening address", e))?;
    let addr_file = addr_file(state_path);
    std::fs::write(&addr_file, addr.to_string())
        .map_err(|e| Error::io(format!("writing {}", addr_file.display()), e))?;
    eprintln!(
        "tidex serve: jobs from {}, {} workers ({}), listening on http://{addr}",
        o.dir.display(),
        o.workers,
        o.strategy.as_str()
    );
    {
        let shared = shared.clone();
        std::thread::Builder::new()
            .name("tidex-http".into())
            .spawn(move || http_loop(listener, shared))
            .map_err(|e| Error::io("starting the HTTP thread", e))?;
    }

    let mut jobs: BTreeMap<String, Loaded> = BTreeMap::new();
    let mut queue: VecDeque<Request> = VecDeque::new();
    let mut running: HashMap<String, std::thread::JoinHandle<bool>> = HashMap::new();
    let mut surge = SurgeDetector::default();
    let mut bucket_end = clock.now() + chrono::Duration::seconds(SURGE_BUCKET_SECS);
    let mut bucket_work = 0.0;
    let mut first = true;
    let mut warned = std::collections::HashSet::new();
    loop {
        let now = clock.now();
        // 1. Specs: added, changed and removed files, without a restart.
        let fresh = load_dir(&registry, &o.dir, &mut |m| {
            // Once per problem, not once per rescan.
            if warned.insert(m.clone()) {
                tracing::warn!("{m}")
            }
        })?;
        for (name, l) in &fresh {
            match jobs.get(name) {
                None => tracing::info!(job = %name, spec = %l.path.display(), "job loaded"),
                Some(old) if old.hash != l.hash => {
                    tracing::info!(job = %name, spec = %l.path.display(), "job reloaded")
                }
                _ => {}
            }
            if l.schedule.as_ref().is_some_and(|s| s.recurring())
                && state.last_fire(name)?.is_none()
            {
                // A new job starts with its next fire time, not its past.
                state.set_last_fire(name, now)?;
            }
        }
        for name in jobs.keys() {
            if !fresh.contains_key(name) {
                tracing::info!(job = %name, "job removed");
            }
        }
        jobs = fresh;
        queue.retain(|r| jobs.contains_key(&r.job));
        if first {
            first = false;
            for job in state.interrupted_jobs()? {
                if jobs.contains_key(&job) {
                    tracing::info!(job = %job, "resuming interrupted run");
                    queue.push_back(Request {
                        job,
                        priority: None,
                        fire: None,
                        why: "resume",
                    });
                }
            }
        }
        // 2. Schedules, with catch-up after downtime.
        for (name, l) in &jobs {
            let Some(s) = l.schedule.as_ref().filter(|s| s.recurring()) else {
                continue;
            };
            let last = state.last_fire(name)?.unwrap_or(now);
            let Some(newest) = s.fires_between(last, now, 1).pop() else {
                continue;
            };
            let due = s.due(last, now);
            if due.len() > 1
                || due
                    .first()
                    .is_some_and(|f| now - *f > chrono::Duration::seconds(60))
            {
                tracing::info!(job = %name, runs = due.len(), "catching up on missed fire times");
            }
            for fire in due {
                queue.push_back(Request {
                    job: name.clone(),
                    priority: None,
                    fire: Some(fire),
                    why: "schedule",
                });
            }
            state.set_last_fire(name, newest)?;
        }
        // 3. Submitted runs.
        for r in std::mem::take(&mut *shared.inbox.lock().unwrap_or_else(|p| p.into_inner())) {
            if jobs.contains_key(&r.job) {
                queue.push_back(r);
            }
        }
        // 4. Finished runs.
        let mut done = Vec::new();
        for (name, h) in &running {
            if h.is_finished() {
                done.push(name.clone());
            }
        }
        for name in done {
            if let Some(h) = running.remove(&name) {
                let ok = h.join().unwrap_or(false);
                let mut m = shared.metrics.lock().unwrap_or_else(|p| p.into_inner());
                if ok {
                    m.runs_completed += 1;
                } else {
                    m.runs_failed += 1;
                }
            }
        }
        if shutdown.load(Ordering::Relaxed) {
            break;
        }
        // 5. Start what can start: one run per job at a time; runs starting
        //    together are planned together.
        let mut starting: Vec<Request> = Vec::new();
        let mut later = VecDeque::new();
        while let Some(r) = queue.pop_front() {
            if running.contains_key(&r.job) || starting.iter().any(|s| s.job == r.job) {
                later.push_back(r);
            } else {
                starting.push(r);
            }
        }
        queue = later;
        if !starting.is_empty() {
            let mut inputs = Vec::new();
            for r in &starting {
                let l = &jobs[&r.job];
                let mut input = plan_input(l, r.fire.unwrap_or(now), estimate(&state, &r.job)?);
                if r.fire.is_none() {
                    input.deadline = None;
                    input.window_start = None;
                }
                if let Some(p) = r.priority {
                    input.priority = p;
                }
                if r.why == "submitted" {
                    // Tides are planned; a surge is unplanned work.
                    bucket_work += input
                        .estimate
                        .as_ref()
                        .map_or(planner::DEFAULT_WORK_SECS, |e| e.work_secs);
                }
                inputs.push(input);
            }
            for e in planner::plan(&inputs, o.workers) {
                let Some(r) = starting.iter().find(|r| r.job == e.job) else {
                    continue;
                };
                let l = &jobs[&e.job];
                tracing::info!(
                    job = %e.job, why = r.why, priority = e.priority.as_str(), workers = e.workers,
                    planned_partitions = e.partitions, history_runs = e.history_runs,
                    predicted_finish = %e.finish.to_rfc3339(), misses_window = e.misses_window,
                    "starting run"
                );
                let run = RunCtx {
                    spec: l.spec.clone(),
                    meta: RunMeta {
                        job: e.job.clone(),
                        priority: e.priority,
                        deadline: e.deadline,
                        allot: e.workers,
                        max_workers: l.spec.limits.parallelism,
                        part_secs: e.work_secs / e.partitions.max(1) as f64,
                    },
                    planned_partitions: e.partitions,
                    registry: registry.clone(),
                    state: state.clone(),
                    pool: pool.clone(),
                    bytes: bytes.clone(),
                    rows: rows.clone(),
                    cancel: shutdown.clone(),
                    io: rt.handle().clone(),
                };
                let h = std::thread::Builder::new()
                    .name(format!("tidex-run-{}", e.job))
                    .spawn(move || run.go())
                    .map_err(|e| Error::io("starting a run thread", e))?;
                running.insert(e.job.clone(), h);
            }
        }
        // 6. Surges and metrics.
        while now >= bucket_end {
            let v = surge.observe(bucket_work);
            if v.surge {
                tracing::warn!(
                    arrived = v.arrived,
                    forecast = v.forecast,
                    threshold = v.threshold,
                    "surge: work arriving above the forecast"
                );
            }
            bucket_work = 0.0;
            bucket_end += chrono::Duration::seconds(SURGE_BUCKET_SECS);
        }
        {
            let mut m = shared.metrics.lock().unwrap_or_else(|p| p.into_inner());
            m.runs_waiting = queue.len();
            m.runs_running = running.len();
            m.surges = surge.surges;
            m.arrivals_forecast = surge.forecast();
            m.jobs = jobs.keys().cloned().collect();
            m.running = running.keys().cloned().collect();
        }
        let step = Duration::from_millis(100);
        let mut slept = Duration::ZERO;
        while slept < o.poll && !shutdown.load(Ordering::Relaxed) {
            if !shared
                .inbox
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .is_empty()
            {
                break;
            }
            std::thread::sleep(step);
            slept += step;
        }
    }
    // Shutdown: runs see the flag at their next batch or partition boundary.
    let left = running.len();
    for (_, h) in running {
        let _ = h.join();
    }
    let _ = std::fs::remove_file(&addr_file);
    rt.shutdown_background();
    eprintln!("tidex serve stopped; {left} run(s) were in flight and are resumable");
    Ok(())
}

struct RunCtx {
    spec: JobSpec,
    meta: RunMeta,
    planned_partitions: usize,
    registry: Arc<Registry>,
    state: Arc<StateStore>,
    pool: Arc<Pool>,
    bytes: Arc<SharedLimiter>,
    rows: Arc<SharedLimiter>,
    cancel: Arc<AtomicBool>,
    io: tokio::runtime::Handle,
}

impl RunCtx {
    fn go(self) -> bool {
        let job = self.spec.job.name.clone();
        match self.run() {
            Ok(s) => {
                tracing::info!(job = %job, run = s.run_id, rows = s.rows, secs = s.duration_secs, "run completed");
                true
            }
            Err(Error::Cancelled) => {
                tracing::info!(job = %job, "run interrupted by shutdown; it resumes on the next start");
                false
            }
            Err(e) => {
                tracing::error!(job = %job, "run failed: {e}");
                false
            }
        }
    }

    fn run(&self) -> Result<tidex_engine::runtime::RunSummary, Error> {
        let spec = &self.spec;
        let ctx = BuildContext {
            io: self.io.clone(),
            batch_rows: spec.limits.batch_rows,
            policy: spec.errors.policy,
            parallelism: self.meta.allot,
            job: spec.job.name.clone(),
            source_state: self.state.source_state(&spec.job.name, false)?,
        };
        // A resumed run keeps the partitions it started with.
        let resuming = self
            .state
            .runs(Some(&spec.job.name), 1)?
            .first()
            .is_some_and(|r| matches!(r.status.as_str(), "running" | "publishing" | "failed"));
        let mut source = self.registry.build_source(spec, &ctx)?;
        if !resuming {
            let (s, split) = split_laggards(&self.state, &spec.job.name, source)?;
            source = split_to(s, self.planned_partitions);
            if !split.is_empty() {
                tracing::info!(job = %spec.job.name, partitions = ?split, "split partitions that lagged in the last run");
            }
        }
        tracing::info!(
            job = %spec.job.name,
            planned = self.planned_partitions,
            partitions = source.partitions().len(),
            "partitions (sources that cannot split keep their own)"
        );
        let stages = self.registry.build_stages(spec, source.schema())?;
        let sink = self.registry.build_sink(spec, &ctx)?;
        let ticket = self.pool.register(self.meta.clone());
        let throttle = JobThrottle::join(
            &spec.job.name,
            self.bytes.clone(),
            spec.limits.max_bytes_per_sec.map(|b| b.0),
            self.rows.clone(),
            spec.limits.max_rows_per_sec,
        );
        let opts = RunOptions {
            restart: false,
            cancel: self.cancel.clone(),
            gate: Some(Arc::new(ticket)),
            throttle: Some(Arc::new(throttle)),
            // Static plans never split a running partition.
            never_split: !self.pool.strategy().splits(),
        };
        run_job(
            spec,
            source,
            &stages,
            sink,
            &self.state,
            &opts,
            &Progress::default(),
        )
    }
}

fn addr_file(state_path: &Path) -> PathBuf {
    state_path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .map_or_else(|| PathBuf::from("serve.addr"), |p| p.join("serve.addr"))
}

fn http_loop(listener: std::net::TcpListener, shared: Arc<Shared>) {
    for conn in listener.incoming() {
        let Ok(mut conn) = conn else { continue };
        let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
        let (status, body) = handle(&mut conn, &shared);
        let ctype = if body.starts_with('{') {
            "application/json"
        } else {
            "text/plain; version=0.0.4"
        };
        let _ = write!(
            conn,
            "HTTP/1.0 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
    }
}

fn handle(conn: &mut std::net::TcpStream, shared: &Shared) -> (&'static str, String) {
    let mut reader = BufReader::new(conn);
    let mut line = String::new();
    if reader.read_line(&mut line).is_err() {
        return (
            "400 Bad Request",
            "{\"error\":\"unreadable request\"}".into(),
        );
    }
    // Skip the headers.
    loop {
        let mut h = String::new();
        match reader.read_line(&mut h) {
            Ok(0) | Err(_) => break,
            Ok(_) if h == "\r\n" || h == "\n" => break,
            Ok(_) => {}
        }
    }
    let mut parts = line.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let params: HashMap<String, String> = query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (decode(k), decode(v)))
        .collect();
    let m = shared
        .metrics
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    match (method, path) {
        ("POST", "/submit") => {
            let Some(job) = params.get("job") else {
                return ("400 Bad Request", "{\"error\":\"missing job\"}".into());
            };
            let priority = match params.get("priority").map(|p| p.parse::<Priority>()) {
                Some(Err(e)) => return ("400 Bad Request", json_err(&e)),
                Some(Ok(p)) => Some(p),
                None => None,
            };
            if !m.jobs.contains(job) {
                return (
                    "404 Not Found",
                    json_err(&format!(
                        "no job `{job}` is loaded; known jobs: {}",
                        m.jobs.join(", ")
                    )),
                );
            }
            shared
                .inbox
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(Request {
                    job: job.clone(),
                    priority,
                    fire: None,
                    why: "submitted",
                });
            (
                "202 Accepted",
                serde_json::json!({"job": job, "queued": true}).to_string(),
            )
        }
        ("GET", "/metrics") => {
            let p = shared.pool.stats();
            let util = p.busy as f64 / p.workers.max(1) as f64;
            let body = format!(
                "# TYPE tidex_workers gauge\ntidex_workers {}\n\
                 # TYPE tidex_workers_busy gauge\ntidex_workers_busy {}\n\
                 # TYPE tidex_worker_utilisation gauge\ntidex_worker_utilisation {util}\n\
                 # TYPE tidex_queue_depth gauge\ntidex_queue_depth {}\n\
                 # TYPE tidex_runs_waiting gauge\ntidex_runs_waiting {}\n\
                 # TYPE tidex_runs_running gauge\ntidex_runs_running {}\n\
                 # TYPE tidex_runs_completed_total counter\ntidex_runs_completed_total {}\n\
                 # TYPE tidex_runs_failed_total counter\ntidex_runs_failed_total {}\n\
                 # TYPE tidex_surges_total counter\ntidex_surges_total {}\n\
                 # TYPE tidex_arrivals_forecast gauge\ntidex_arrivals_forecast {}\n",
                p.workers,
                p.busy,
                p.queued_partitions + m.runs_waiting,
                m.runs_waiting,
                m.runs_running,
                m.runs_completed,
                m.runs_failed,
                m.surges,
                m.arrivals_forecast
            );
            ("200 OK", body)
        }
        ("GET", "/status") => (
            "200 OK",
            serde_json::json!({"metrics": m, "pool": shared.pool.stats()}).to_string(),
        ),
        _ => ("404 Not Found", json_err("unknown endpoint")),
    }
}

fn json_err(e: &str) -> String {
    serde_json::json!({ "error": e }).to_string()
}

fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(if b[i] == b'+' { b' ' } else { b[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

// ---------------------------------------------------------------------------
// tidex submit

/// `tidex submit JOB`: asks the running service for an ad-hoc run.
pub fn submit(
    state_path: &Path,
    server: Option<&str>,
    job: &str,
    priority: Option<&str>,
) -> Result<(), Error> {
    let addr = match server {
        Some(s) => s.to_string(),
        None => {
            let f = addr_file(state_path);
            std::fs::read_to_string(&f)
                .map_err(|e| {
                    Error::io(
                        format!(
                            "no running `tidex serve` found ({} unreadable); start one or pass --server",
                            f.display()
                        ),
                        e,
                    )
                })?
                .trim()
                .to_string()
        }
    };
    let mut target = format!("/submit?job={}", encode(job));
    if let Some(p) = priority {
        target += &format!("&priority={}", encode(p));
    }
    let mut conn = std::net::TcpStream::connect(&addr)
        .map_err(|e| Error::io(format!("connecting to tidex serve at {addr}"), e))?;
    write!(
        conn,
        "POST {target} HTTP/1.0\r\nHost: {addr}\r\nContent-Length: 0\r\n\r\n"
    )
    .map_err(|e| Error::io(format!("sending to {addr}"), e))?;
    let mut resp = String::new();
    conn.read_to_string(&mut resp)
        .map_err(|e| Error::io(format!("reading from {addr}"), e))?;
    let (head, body) = resp.split_once("\r\n\r\n").unwrap_or((&resp, ""));
    let status = head.split_whitespace().nth(1).unwrap_or("");
    let message = serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(String::from))
        .unwrap_or_else(|| body.to_string());
    match status {
        "202" => {
            println!("submitted `{job}` to tidex serve at {addr}");
            Ok(())
        }
        "404" | "400" => Err(Error::Config(message)),
        _ => Err(Error::io(
            format!("tidex serve at {addr} answered {status}"),
            message,
        )),
    }
}
