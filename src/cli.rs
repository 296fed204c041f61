//! Commands and their exit codes.

use crate::report;
use crate::sched;
use clap::{Parser, Subcommand, ValueEnum};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;
use tidex_engine::runtime::{run_job, Progress, RunOptions};
use tidex_engine::spec::JobSpec;
use tidex_engine::state::StateStore;
use tidex_engine::{BuildContext, Error, ErrorKind, Registry};

/// Exit codes, documented in the README.
pub mod exit {
    /// Success.
    pub const OK: i32 = 0;
    /// A bug in tidex.
    pub const INTERNAL: i32 = 1;
    /// Invalid job spec or arguments.
    pub const SPEC: i32 = 2;
    /// Bad input data.
    pub const DATA: i32 = 3;
    /// Storage or service failure.
    pub const IO: i32 = 4;
    /// Interrupted; the run is resumable.
    pub const CANCELLED: i32 = 5;
}

#[derive(Parser)]
#[command(
    name = "tidex",
    version,
    about = "tidex moves data between departments: fast, resumable, audited."
)]
struct Cli {
    /// State database (run history, checkpoints).
    #[arg(
        long,
        global = true,
        env = "TIDEX_STATE",
        default_value = ".tidex/state.db"
    )]
    state: PathBuf,
    /// More log output (-v info, -vv debug).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum OnError {
    Fail,
    Skip,
}

#[derive(Clone, Copy, ValueEnum)]
enum Mode {
    Overwrite,
    Append,
    Fail,
}

impl Mode {
    /// The sink's `mode` value in a spec.
    fn as_str(self) -> &'static str {
        match self {
            Mode::Overwrite => "overwrite",
            Mode::Append => "append",
            Mode::Fail => "fail",
        }
    }
}

#[derive(clap::Args)]
struct RunFlags {
    /// Discard an interrupted run of this job instead of resuming it.
    #[arg(long)]
    restart: bool,
    /// Print the run summary as JSON on stdout.
    #[arg(long)]
    json: bool,
    /// Never draw a progress bar (log lines instead).
    #[arg(long)]
    no_progress: bool,
}

// Parsed once per process: the size of the largest variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// Run a job spec (resuming its interrupted run, if any).
    Run {
        /// The job spec (TOML).
        job: PathBuf,
        #[command(flatten)]
        flags: RunFlags,
    },
    /// Check a job spec without running it.
    Validate {
        /// The job spec (TOML).
        job: PathBuf,
    },
    /// Copy SOURCE to SINK, inferring formats from the URLs; the same as
    /// running the job spec `--print-spec` shows.
    Copy {
        /// Source URL: a file, directory or glob (people.csv, data/*.jsonl, s3://b/k.parquet).
        source: String,
        /// Sink URL: a file (out.parquet) or a directory of Parquet parts (out/).
        sink: String,
        /// Print the equivalent job spec and exit.
        #[arg(long)]
        print_spec: bool,
        /// Job name (default: derived from the two URLs, so reruns resume).
        #[arg(long)]
        name: Option<String>,
        /// What to do with bad rows.
        #[arg(long, value_enum)]
        on_error: Option<OnError>,
        /// Directory for rejected rows (required with --on-error skip).
        #[arg(long)]
        dead_letter: Option<String>,
        /// Stop after this many rejected rows.
        #[arg(long)]
        max_errors: Option<u64>,
        /// What to do with existing output.
        #[arg(long, value_enum)]
        mode: Option<Mode>,
        /// Sink compression (zstd, snappy, lz4, none).
        #[arg(long)]
        compression: Option<String>,
        /// zstd level for the sink (1-22).
        #[arg(long)]
        compression_level: Option<i32>,
        /// Compress the output: zstd or zstd:LEVEL (the same as
        /// --compression zstd --compression-level LEVEL).
        #[arg(long, value_name = "zstd[:LEVEL]")]
        compress: Option<String>,
        /// Worker threads.
        #[arg(long)]
        parallelism: Option<usize>,
        /// Rows per batch.
        #[arg(long)]
        batch_rows: Option<usize>,
        /// Cap on input bytes per second, e.g. 200MB.
        #[arg(long)]
        max_bytes_per_sec: Option<String>,
        /// Mask a column: COLUMN=RULE, e.g. phone=phone, name=name,
        /// id_card=id_card:6:4 (repeatable; see the mask stage).
        #[arg(long, value_name = "COLUMN=RULE")]
        mask: Vec<String>,
        /// Key for pseudonym masks: env:NAME or file:PATH.
        #[arg(long)]
        mask_key: Option<String>,
        /// Transform with a SQL query over table `input` (the sql stage),
        /// e.g. "SELECT id, upper(name) AS name FROM input WHERE amount > 0".
        #[arg(long, value_name = "QUERY")]
        sql: Option<String>,
        /// Deliver each key once: comma-separated key columns (the dedupe stage).
        #[arg(long, value_name = "COLUMNS")]
        dedupe: Option<String>,
        /// With --dedupe: keep the row with the greatest value of COLUMN
        /// instead of the first.
        #[arg(long, value_name = "COLUMN", requires = "dedupe")]
        dedupe_last_by: Option<String>,
        /// With --dedupe: also drop keys delivered by earlier runs of this copy.
        #[arg(long, requires = "dedupe")]
        across_runs: bool,
        /// Encrypt every output file whole: aes-256-gcm or sm4-gcm (needs
        /// --key; the sink's `encrypt` option). `tidex decrypt` restores.
        #[arg(long, value_name = "ALGORITHM")]
        encrypt: Option<String>,
        /// Key for --encrypt: a key file, or env:NAME / file:PATH.
        #[arg(long, value_name = "FILE")]
        key: Option<String>,
        /// Key id written into encrypted files (default: the key file's
        /// name without its extension, or the variable's name).
        #[arg(long)]
        key_id: Option<String>,
        /// Copy files of any type as they are (the blobs source and sink),
        /// even when they look tabular; the same as a `blobs:` prefix on
        /// the source.
        #[arg(long)]
        blobs: bool,
        #[command(flatten)]
        flags: RunFlags,
    },
    /// Restore files that tidex encrypted (and compressed): one `.tenc`
    /// file, or a whole output tree (decrypting `.tenc` files, unpacking
    /// `.zst` files a blob sink compressed, restoring copies from its
    /// manifest and checking every BLAKE3 in it).
    Decrypt {
        /// A `.tenc` file or a directory tidex wrote (local, memory://, s3://).
        source: String,
        /// Local destination: a file, or a new directory for a tree.
        dest: String,
        /// The key: a key file, or env:NAME / file:PATH.
        #[arg(long, value_name = "FILE")]
        key: Option<String>,
        /// The key's id (default: the key file's name without its
        /// extension, or the variable's name); must match the files'.
        #[arg(long)]
        key_id: Option<String>,
        /// Print what was restored as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show run history from the state store.
    Runs {
        /// Only this job.
        #[arg(long)]
        job: Option<String>,
        /// How many runs.
        #[arg(long, default_value_t = 20)]
        limit: usize,
        /// JSON lines instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Print the first rows of any source URL.
    Head {
        /// A file, directory or glob.
        url: String,
        /// Rows to show.
        #[arg(short = 'n', long, default_value_t = 10)]
        rows: usize,
    },
    /// Run every job spec in a directory on its [schedule], with one shared
    /// pool of workers, until SIGTERM; accepts `tidex submit`.
    Serve {
        /// Directory of job specs (*.toml), rescanned while serving.
        #[arg(default_value = "jobs")]
        dir: PathBuf,
        /// Workers shared by all runs (default: the number of cores).
        #[arg(long)]
        workers: Option<usize>,
        /// Address for submit, /metrics and /status (port 0: any free port).
        #[arg(long, default_value = "127.0.0.1:7878")]
        listen: String,
        /// How workers are handed out: static, dynamic or combined.
        #[arg(long, default_value = "combined")]
        strategy: String,
        /// Global cap on input bytes per second, shared fairly by running jobs.
        #[arg(long)]
        max_bytes_per_sec: Option<String>,
        /// Global cap on rows per second, shared fairly by running jobs.
        #[arg(long)]
        max_rows_per_sec: Option<u64>,
        /// Seconds between rescans of the directory and the schedules.
        #[arg(long, default_value_t = 1.0)]
        poll_secs: f64,
    },
    /// Ask the running `tidex serve` for an ad-hoc run of a job.
    Submit {
        /// Job name.
        job: String,
        /// urgent, normal or bulk (default: the job's [schedule] priority).
        #[arg(long)]
        priority: Option<String>,
        /// Address of tidex serve (default: the one it wrote beside the state).
        #[arg(long, env = "TIDEX_SERVER")]
        server: Option<String>,
    },
    /// Print the coming tide: each scheduled job's next run, its partitions,
    /// workers, predicted start and finish, and predicted window misses.
    Plan {
        /// Directory of job specs.
        #[arg(default_value = "jobs")]
        dir: PathBuf,
        /// Plan the tide after this time (RFC 3339; default now).
        #[arg(long)]
        at: Option<String>,
        /// Workers in the pool (default: the number of cores).
        #[arg(long)]
        workers: Option<usize>,
        /// JSON lines instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Replay a workload trace on a virtual clock and report makespan,
    /// window misses and urgent p95 completion time.
    Simulate {
        /// The trace (TOML), e.g. fixtures/traces/default.toml.
        #[arg(long)]
        trace: PathBuf,
        /// Workers (default: the trace's).
        #[arg(long)]
        workers: Option<usize>,
        /// static, dynamic, combined, or all three.
        #[arg(long, default_value = "all")]
        strategy: String,
        /// JSON lines instead of a table.
        #[arg(long)]
        json: bool,
    },
}

fn exit_code(e: &Error) -> i32 {
    match e.kind() {
        ErrorKind::Spec => exit::SPEC,
        ErrorKind::Data => exit::DATA,
        ErrorKind::Io => exit::IO,
        ErrorKind::Cancelled => exit::CANCELLED,
        ErrorKind::Internal => exit::INTERNAL,
    }
}

fn fail(e: &Error) -> i32 {
    eprintln!("error: {e}");
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        eprintln!("  caused by: {s}");
        src = s.source();
    }
    match e.kind() {
        ErrorKind::Data => eprintln!("hint: fix the input, or set [errors] policy = \"skip\" with a dead_letter directory to route bad rows aside"),
        ErrorKind::Cancelled => eprintln!("hint: the run is resumable: run the same job again to continue"),
        _ => {}
    }
    exit_code(e)
}

/// Entry point; returns the process exit code.
pub fn main() -> i32 {
    let cli = Cli::parse();
    let level = match cli.verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("TIDEX_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let registry = tidex_connectors::registry();
    let result = match &cli.command {
        Command::Validate { job } => validate(&registry, job),
        Command::Run { job, flags } => {
            load(&registry, job).and_then(|spec| run(&registry, &cli, spec, flags))
        }
        Command::Copy {
            source,
            sink,
            print_spec,
            flags,
            ..
        } => match copy_spec(&cli.command) {
            Ok(text) if *print_spec => {
                print!("{text}");
                Ok(())
            }
            Ok(text) => JobSpec::parse(&text)
                .map_err(Error::from)
                .and_then(|spec| registry.validate(&spec).map(|_| spec).map_err(Error::from))
                .inspect_err(|_| tracing::debug!(%source, %sink, "generated spec:\n{text}"))
                .and_then(|spec| run(&registry, &cli, spec, flags)),
            Err(e) => Err(e),
        },
        Command::Decrypt {
            source,
            dest,
            key,
            key_id,
            json,
        } => decrypt(source, dest, key.as_deref(), key_id.as_deref(), *json),
        Command::Runs { job, limit, json } => runs(&cli, job.as_deref(), *limit, *json),
        Command::Head { url, rows } => head(&registry, url, *rows),
        Command::Serve {
            dir,
            workers,
            listen,
            strategy,
            max_bytes_per_sec,
            max_rows_per_sec,
            poll_secs,
        } => serve_opts(
            dir,
            *workers,
            listen,
            strategy,
            max_bytes_per_sec,
            *max_rows_per_sec,
            *poll_secs,
        )
        .and_then(|o| sched::serve(registry, &cli.state, o)),
        Command::Submit {
            job,
            priority,
            server,
        } => sched::submit(&cli.state, server.as_deref(), job, priority.as_deref()),
        Command::Plan {
            dir,
            at,
            workers,
            json,
        } => sched::plan(
            &registry,
            &cli.state,
            dir,
            at.as_deref(),
            workers.unwrap_or_else(default_workers),
            *json,
        ),
        Command::Simulate {
            trace,
            workers,
            strategy,
            json,
        } => sched::simulate_cmd(trace, *workers, strategy, *json),
    };
    match result {
        Ok(()) => exit::OK,
        Err(e) => fail(&e),
    }
}

fn read_spec(path: &PathBuf) -> Result<String, Error> {
    std::fs::read_to_string(path)
        .map_err(|e| Error::Config(format!("cannot read job spec {}: {e}", path.display())))
}

fn load(registry: &Registry, path: &PathBuf) -> Result<JobSpec, Error> {
    let text = read_spec(path)?;
    let name = path.display().to_string();
    let spec = JobSpec::parse(&text).map_err(|e| e.in_file(&name))?;
    registry.validate(&spec).map_err(|e| e.in_file(&name))?;
    Ok(spec)
}

/// Checks a spec, then plans its stages against the source's schema (which
/// reads file headers or asks the database), so that a query naming a
/// missing column fails here rather than in the run.
fn validate(registry: &Registry, path: &PathBuf) -> Result<(), Error> {
    let spec = load(registry, path)?;
    let rt = io_runtime()?;
    let ctx = BuildContext::for_spec(&spec, rt.handle().clone(), Default::default());
    let head = format!(
        "{}: ok (job `{}`: {} {} -> {} {}",
        path.display(),
        spec.job.name,
        spec.source.kind(),
        toml_url(&spec, "source"),
        spec.sink.kind(),
        toml_url(&spec, "sink"),
    );
    // The spec is valid; whether its data can be reached here is another
    // matter (a spec is often checked away from the node that runs it).
    let source = match registry.build_source(&spec, &ctx) {
        Ok(s) => s,
        Err(e) => {
            println!("{head})");
            eprintln!("note: the stages were not checked against the source's schema: {e}");
            rt.shutdown_background();
            return Ok(());
        }
    };
    let stages = registry.build_stages(&spec, source.schema())?;
    let schema = stages
        .last()
        .map_or_else(|| source.schema(), |s| s.output_schema());
    println!(
        "{head}; {} partitions, {} stages, {} columns delivered)",
        source.partitions().len(),
        stages.len(),
        schema.fields().len(),
    );
    rt.shutdown_background();
    Ok(())
}

fn toml_url(spec: &JobSpec, section: &str) -> String {
    let v: toml::Value = toml::from_str(&spec.text).unwrap_or(toml::Value::Boolean(false));
    v.get(section)
        .and_then(|s| s.get("url"))
        .and_then(|u| u.as_str())
        .unwrap_or("")
        .to_string()
}

fn io_runtime() -> Result<tokio::runtime::Runtime, Error> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("tidex-io")
        .enable_all()
        .build()
        .map_err(|e| Error::io("starting the I/O runtime", e))
}

fn run(registry: &Registry, cli: &Cli, spec: JobSpec, flags: &RunFlags) -> Result<(), Error> {
    let rt = io_runtime()?;
    let state = StateStore::open(&cli.state)?;
    let ctx = BuildContext::for_spec(
        &spec,
        rt.handle().clone(),
        state.source_state(&spec.job.name, flags.restart)?,
    );
    let source = registry.build_source(&spec, &ctx)?;
    let stages = registry.build_stages(&spec, source.schema())?;
    let sink = registry.build_sink(&spec, &ctx)?;
    let opts = RunOptions {
        restart: flags.restart,
        ..Default::default()
    };
    let cancel = opts.cancel.clone();
    rt.spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            eprintln!("\ninterrupted: finishing partitions in flight; run again to resume");
            cancel.store(true, std::sync::atomic::Ordering::Relaxed);
        }
    });
    let progress = Arc::new(Progress::default());
    let bar = !flags.no_progress && std::io::stderr().is_terminal();
    let watcher = report::watch(
        progress.clone(),
        bar,
        format!("{} -> {}", source.describe(), sink.describe()),
    );
    let result = run_job(&spec, source, &stages, sink, &state, &opts, &progress);
    watcher.stop();
    let summary = result?;
    if flags.json {
        println!(
            "{}",
            serde_json::to_string(&summary).map_err(|e| Error::Internal(e.to_string()))?
        );
    } else {
        report::print_summary(&summary);
    }
    // Nothing is in flight any more; do not wait for idle I/O threads.
    rt.shutdown_background();
    Ok(())
}

fn toml_str(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

/// A TOML key: bare when it can be, quoted otherwise.
fn toml_key(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        s.to_string()
    } else {
        toml_str(s)
    }
}

/// The sink's codec and level from `--compress zstd[:LEVEL]`, else from
/// `--compression` and `--compression-level`.
fn sink_compression(
    compress: &Option<String>,
    compression: &Option<String>,
    compression_level: Option<i32>,
) -> Result<(Option<String>, Option<i32>), Error> {
    let Some(c) = compress else {
        return Ok((compression.clone(), compression_level));
    };
    let (codec, level) = c
        .split_once(':')
        .map_or((c.as_str(), None), |(a, b)| (a, Some(b)));
    if codec != "zstd" {
        return Err(Error::Config(format!(
            "--compress {c:?}: expected zstd or zstd:LEVEL"
        )));
    }
    let level = match level {
        Some(l) => Some(
            l.parse::<i32>()
                .map_err(|_| Error::Config(format!("--compress {c:?}: {l:?} is not a level")))?,
        ),
        None => compression_level,
    };
    Ok((Some("zstd".to_string()), level))
}

/// The job spec equivalent to a `tidex copy` command line.
fn copy_spec(cmd: &Command) -> Result<String, Error> {
    let Command::Copy {
        source,
        sink,
        name,
        on_error,
        dead_letter,
        max_errors,
        mode,
        compression,
        compression_level,
        compress,
        parallelism,
        batch_rows,
        max_bytes_per_sec,
        mask,
        mask_key,
        sql,
        dedupe,
        dedupe_last_by,
        across_runs,
        encrypt,
        key,
        key_id,
        blobs,
        ..
    } = cmd
    else {
        unreachable!("copy_spec is only called for copy")
    };
    let encrypt_option = match (encrypt, key) {
        (None, None) => None,
        (None, Some(_)) => {
            return Err(Error::Config(
                "--key is the key for --encrypt; add --encrypt aes-256-gcm or sm4-gcm".into(),
            ))
        }
        (Some(_), None) => return Err(Error::Config("--encrypt needs --key FILE".into())),
        (Some(alg), Some(k)) => {
            let (key_ref, id) = key_ref(k, key_id.as_deref())?;
            Some(format!(
                "encrypt = {{ algorithm = {}, key_id = {}, key = {} }}\n",
                toml_str(alg),
                toml_str(&id),
                toml_str(&key_ref)
            ))
        }
    };
    let (source, blob_copy) = match source.strip_prefix("blobs:") {
        Some(rest) => (&rest.to_string(), true),
        None => (source, *blobs),
    };
    let blob_copy = blob_copy || {
        let rt = io_runtime()?;
        tidex_connectors::is_blob_source(source, rt.handle())?
    };
    if blob_copy {
        return blob_copy_spec(cmd, source, sink, encrypt_option);
    }
    let unknown = |url: &str, what: &str| {
        Error::Config(format!(
            "cannot tell the {what} format of {url:?} from its name; use a known extension (.csv, .jsonl, .parquet, .arrow{}) or write a job spec",
            if what == "sink" { ", or a directory ending in /" } else { "" }
        ))
    };
    let src_kind = match tidex_connectors::kind_for_url(source, false) {
        Some(k) => k,
        None if source.ends_with('/') => {
            let rt = io_runtime()?;
            tidex_connectors::detect_dir_kind(source, rt.handle())?
                .ok_or_else(|| unknown(source, "source"))?
        }
        None => return Err(unknown(source, "source")),
    };
    let dst_kind =
        tidex_connectors::kind_for_url(sink, true).ok_or_else(|| unknown(sink, "sink"))?;
    let name = name.clone().unwrap_or_else(|| {
        let h = blake3::hash(format!("{source}\0{sink}").as_bytes()).to_hex();
        format!("copy-{}", &h[..12])
    });
    let mut t = String::from("# generated by `tidex copy`\n");
    t += &format!("[job]\nname = {}\n\n", toml_str(&name));
    t += &format!(
        "[source]\ntype = {}\nurl = {}\n\n",
        toml_str(src_kind),
        toml_str(source)
    );
    if let Some(q) = sql {
        t += &format!("[[stage]]\ntype = \"sql\"\nquery = {}\n", toml_str(q));
        if let Some(k) = mask_key {
            t += &format!("key = {}\n", toml_str(k));
        }
        t += "\n";
    }
    if let Some(d) = dedupe {
        let cols: Vec<String> = d
            .split(',')
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .map(toml_str)
            .collect();
        t += &format!(
            "[[stage]]\ntype = \"dedupe\"\ncolumns = [{}]\n",
            cols.join(", ")
        );
        if let Some(o) = dedupe_last_by {
            t += &format!("keep = \"last\"\norder_by = {}\n", toml_str(o));
        }
        if *across_runs {
            t += "across_runs = true\n";
        }
        t += "\n";
    }
    if !mask.is_empty() {
        let mut cols = Vec::new();
        for m in mask {
            let (col, rule) = m.split_once('=').ok_or_else(|| {
                Error::Config(format!(
                    "--mask {m:?}: expected COLUMN=RULE, e.g. phone=phone"
                ))
            })?;
            cols.push(format!("{} = {}", toml_key(col), toml_str(rule)));
        }
        t += &format!(
            "[[stage]]\ntype = \"mask\"\ncolumns = {{ {} }}\n",
            cols.join(", ")
        );
        if let Some(k) = mask_key {
            t += &format!("key = {}\n", toml_str(k));
        }
        t += "\n";
    }
    t += &format!(
        "[sink]\ntype = {}\nurl = {}\n",
        toml_str(dst_kind),
        toml_str(sink)
    );
    if let Some(m) = mode {
        t += &format!("mode = {}\n", toml_str(m.as_str()));
    }
    let (compression, compression_level) =
        sink_compression(compress, compression, *compression_level)?;
    if let Some(c) = &compression {
        t += &format!("compression = {}\n", toml_str(c));
    }
    if let Some(l) = compression_level {
        t += &format!("compression_level = {l}\n");
    }
    if let Some(e) = &encrypt_option {
        t += e;
    }
    if parallelism.is_some() || batch_rows.is_some() || max_bytes_per_sec.is_some() {
        t += "\n[limits]\n";
        if let Some(b) = batch_rows {
            t += &format!("batch_rows = {b}\n");
        }
        if let Some(p) = parallelism {
            t += &format!("parallelism = {p}\n");
        }
        if let Some(m) = max_bytes_per_sec {
            t += &format!("max_bytes_per_sec = {}\n", toml_str(m));
        }
    }
    if on_error.is_some() || dead_letter.is_some() || max_errors.is_some() {
        t += "\n[errors]\n";
        if let Some(p) = on_error {
            t += &format!(
                "policy = {}\n",
                toml_str(match p {
                    OnError::Fail => "fail",
                    OnError::Skip => "skip",
                })
            );
        }
        if let Some(m) = max_errors {
            t += &format!("max_rows = {m}\n");
        }
        if let Some(d) = dead_letter {
            t += &format!("dead_letter = {}\n", toml_str(d));
        }
    }
    Ok(t)
}

/// A key given on the command line, as a key reference and its id: a
/// plain path is a key file, whose name (without extension) is the default
/// id; `env:NAME` defaults to NAME.
fn key_ref(key: &str, key_id: Option<&str>) -> Result<(String, String), Error> {
    let key_ref = if key.starts_with("env:") || key.starts_with("file:") {
        key.to_string()
    } else {
        format!("file:{key}")
    };
    let id = match key_id {
        Some(id) => id.to_string(),
        None => {
            let name = key_ref
                .strip_prefix("env:")
                .or_else(|| key_ref.strip_prefix("file:"))
                .unwrap_or(&key_ref);
            let file = std::path::Path::new(name);
            file.file_stem()
                .or(file.file_name())
                .map(|s| s.to_string_lossy().to_string())
                .unwrap_or_default()
        }
    };
    if id.is_empty() || id.len() > 255 {
        return Err(Error::Config(format!(
            "key id {id:?}: give --key-id, a name of 1 to 255 bytes"
        )));
    }
    Ok((key_ref, id))
}

/// The job spec of a blob copy: a `blobs` source and sink.
fn blob_copy_spec(
    cmd: &Command,
    source: &str,
    sink: &str,
    encrypt_option: Option<String>,
) -> Result<String, Error> {
    let Command::Copy {
        name,
        mode,
        compression,
        compression_level,
        compress,
        parallelism,
        max_bytes_per_sec,
        mask,
        ..
    } = cmd
    else {
        unreachable!("blob_copy_spec is only called for copy")
    };
    if !mask.is_empty() {
        return Err(Error::Config(
            "--mask works on columns of records; a blob copy has none".into(),
        ));
    }
    if tidex_connectors::kind_for_url(sink, true).is_some_and(|k| k != "parquet")
        || (!sink.ends_with('/') && tidex_connectors::files_kind_for_name(sink).is_some())
    {
        return Err(Error::Config(format!(
            "{source:?} is copied as files of any type (blobs: not one tabular format tidex reads as records), so the sink is a directory: end {sink:?} with /"
        )));
    }
    let name = name.clone().unwrap_or_else(|| {
        let h = blake3::hash(format!("{source}\0{sink}").as_bytes()).to_hex();
        format!("copy-{}", &h[..12])
    });
    let mut t = String::from("# generated by `tidex copy` (files of any type: blobs)\n");
    t += &format!("[job]\nname = {}\n\n", toml_str(&name));
    t += &format!("[source]\ntype = \"blobs\"\nurl = {}\n\n", toml_str(source));
    t += &format!("[sink]\ntype = \"blobs\"\nurl = {}\n", toml_str(sink));
    if let Some(m) = mode {
        t += &format!("mode = {}\n", toml_str(m.as_str()));
    }
    let (codec, level) = sink_compression(compress, compression, *compression_level)?;
    if let Some(c) = codec {
        t += &format!("compression = {}\n", toml_str(&c));
    }
    if let Some(l) = level {
        t += &format!("compression_level = {l}\n");
    }
    if let Some(e) = encrypt_option {
        t += &e;
    }
    if parallelism.is_some() || max_bytes_per_sec.is_some() {
        t += "\n[limits]\n";
        if let Some(p) = parallelism {
            t += &format!("parallelism = {p}\n");
        }
        if let Some(m) = max_bytes_per_sec {
            t += &format!("max_bytes_per_sec = {}\n", toml_str(m));
        }
    }
    Ok(t)
}

fn decrypt(
    source: &str,
    dest: &str,
    key: Option<&str>,
    key_id: Option<&str>,
    json: bool,
) -> Result<(), Error> {
    let frame_key = match key {
        Some(k) => {
            let (key_ref, id) = key_ref(k, key_id)?;
            Some(
                tidex_engine::stages::frame::FrameKey::load(&id, &key_ref)
                    .map_err(|e| Error::Config(format!("--key: {e}")))?,
            )
        }
        None => None,
    };
    let rt = io_runtime()?;
    let started = std::time::Instant::now();
    let r =
        tidex_connectors::blobs::restore::decrypt(source, dest, frame_key.as_ref(), rt.handle())?;
    if json {
        println!(
            "{}",
            serde_json::to_string(&r).map_err(|e| Error::Internal(e.to_string()))?
        );
    } else {
        println!(
            "restored {} files ({} decrypted, {} copies), {} bytes, into {} in {:.2}s",
            r.files,
            r.decrypted,
            r.copies,
            r.bytes,
            r.output,
            started.elapsed().as_secs_f64()
        );
    }
    rt.shutdown_background();
    Ok(())
}

fn runs(cli: &Cli, job: Option<&str>, limit: usize, json: bool) -> Result<(), Error> {
    let state = StateStore::open(&cli.state)?;
    let runs = state.runs(job, limit)?;
    if json {
        for r in &runs {
            println!(
                "{}",
                serde_json::to_string(r).map_err(|e| Error::Internal(e.to_string()))?
            );
        }
    } else {
        report::print_runs(&runs);
    }
    Ok(())
}

fn head(registry: &Registry, url: &str, rows: usize) -> Result<(), Error> {
    let kind = tidex_connectors::kind_for_url(url, false)
        .ok_or_else(|| Error::Config(format!("cannot tell the format of {url:?}")))?;
    let text = format!("[job]\nname = \"head\"\n[source]\ntype = {}\nurl = {}\n[sink]\ntype = \"jsonl\"\nurl = \"unused.jsonl\"\n", toml_str(kind), toml_str(url));
    let spec = JobSpec::parse(&text)?;
    let rt = io_runtime()?;
    let ctx = BuildContext {
        io: rt.handle().clone(),
        batch_rows: rows.clamp(1, 65536),
        policy: Default::default(),
        parallelism: 1,
        job: "head".into(),
        source_state: Default::default(),
    };
    let source = registry.build_source(&spec, &ctx)?;
    let budget = Arc::new(tidex_engine::dirty::ErrorBudget::new(&spec.errors, 0));
    let mut batches = Vec::new();
    let mut n = 0;
    for p in 0..source.partitions().len() {
        let mut rejects = tidex_engine::dirty::Rejects::new(budget.clone(), "head", 0, p);
        let mut reader = source.open(p)?;
        while n < rows {
            let Some(b) = reader.next_batch(&mut rejects)? else {
                break;
            };
            let take = b.num_rows().min(rows - n);
            n += take;
            batches.push(b.slice(0, take));
        }
        if n >= rows {
            break;
        }
    }
    let table = arrow::util::pretty::pretty_format_batches(&batches)
        .map_err(|e| Error::Internal(e.to_string()))?;
    println!("{table}");
    println!(
        "{} ({n} rows shown; schema: {})",
        source.describe(),
        source
            .schema()
            .fields()
            .iter()
            .map(|f| format!("{}: {}", f.name(), f.data_type()))
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(())
}

fn default_workers() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}

fn serve_opts(
    dir: &std::path::Path,
    workers: Option<usize>,
    listen: &str,
    strategy: &str,
    max_bytes_per_sec: &Option<String>,
    max_rows_per_sec: Option<u64>,
    poll_secs: f64,
) -> Result<sched::ServeOpts, Error> {
    let max_bytes_per_sec = match max_bytes_per_sec {
        Some(b) => Some(
            b.parse::<tidex_engine::spec::ByteSize>()
                .map_err(|e| Error::Config(format!("--max-bytes-per-sec: {e}")))?
                .0,
        ),
        None => None,
    };
    if !(0.05..=3600.0).contains(&poll_secs) {
        return Err(Error::Config(
            "--poll-secs: expected between 0.05 and 3600".into(),
        ));
    }
    Ok(sched::ServeOpts {
        dir: dir.to_path_buf(),
        workers: workers.unwrap_or_else(default_workers).max(1),
        listen: listen.to_string(),
        strategy: strategy.parse().map_err(Error::Config)?,
        max_bytes_per_sec,
        max_rows_per_sec,
        poll: std::time::Duration::from_secs_f64(poll_secs),
    })
}
