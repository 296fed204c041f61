//! The state store: run history, committed partitions and publish steps in
//! an embedded SQLite file (default `./.tidex/state.db`).
//!
//! A partition counts as delivered only once its row is here; the sink's
//! staged output and this row are written in that order, so a crash between
//! the two re-runs the partition into the same staging name and nothing is
//! delivered twice.

use crate::connector::{CommittedPart, PublishJournal, RunInfo, SourceState};
use crate::error::{Error, Result};
use rusqlite::{params, Connection, OptionalExtension};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Status of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunStatus {
    /// Partitions are being processed (or the process died doing so).
    Running,
    /// All partitions committed; the output is being made visible.
    Publishing,
    /// Done; the output is visible.
    Completed,
    /// Stopped by an error; resumable.
    Failed,
    /// Thrown away by `--restart`.
    Discarded,
}

impl RunStatus {
    fn as_str(self) -> &'static str {
        match self {
            RunStatus::Running => "running",
            RunStatus::Publishing => "publishing",
            RunStatus::Completed => "completed",
            RunStatus::Failed => "failed",
            RunStatus::Discarded => "discarded",
        }
    }
}

/// A row of run history.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RunRecord {
    /// Run id.
    pub run_id: i64,
    /// Job name.
    pub job: String,
    /// `running`, `publishing`, `completed`, `failed` or `discarded`.
    pub status: String,
    /// Start time (RFC 3339, UTC).
    pub started_at: String,
    /// End time, when ended.
    pub finished_at: Option<String>,
    /// Partitions planned.
    pub partitions: i64,
    /// Partitions committed.
    pub partitions_done: i64,
    /// Rows delivered.
    pub rows: i64,
    /// Input bytes read.
    pub bytes_in: i64,
    /// Output bytes written.
    pub bytes_out: i64,
    /// Rows rejected.
    pub dirty_rows: i64,
    /// Providing department.
    pub owner: Option<String>,
    /// Declared purpose.
    pub purpose: Option<String>,
    /// Where the output went.
    pub output: Option<String>,
    /// Why it failed.
    pub error: Option<String>,
}

/// What [`StateStore::begin`] decided.
#[derive(Debug)]
pub struct Begin {
    /// The run to execute.
    pub run: RunInfo,
    /// Partitions already committed by the interrupted run being resumed.
    pub committed: Vec<(CommittedPart, u64, u64)>,
    /// A run discarded by `--restart`, whose staged output must be removed.
    pub discarded: Option<i64>,
}

/// Facts about a run recorded when it starts.
#[derive(Debug, Clone)]
pub struct NewRun<'a> {
    /// Job name.
    pub job: &'a str,
    /// Fingerprint of the spec text.
    pub spec_hash: &'a str,
    /// Fingerprint of the partition plan.
    pub plan_hash: &'a str,
    /// Providing department.
    pub owner: Option<&'a str>,
    /// Declared purpose.
    pub purpose: Option<&'a str>,
    /// Partitions planned.
    pub partitions: usize,
    /// What the source asked to remember (see `Source::state`).
    pub source_state: Option<&'a str>,
}

/// The embedded state store.
pub struct StateStore {
    path: PathBuf,
    conn: Mutex<Connection>,
}

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS runs (
    run_id INTEGER PRIMARY KEY AUTOINCREMENT,
    job TEXT NOT NULL,
    spec_hash TEXT NOT NULL,
    plan_hash TEXT NOT NULL,
    status TEXT NOT NULL,
    pid INTEGER,
    started_at TEXT NOT NULL,
    finished_at TEXT,
    owner TEXT,
    purpose TEXT,
    partitions INTEGER NOT NULL,
    rows INTEGER NOT NULL DEFAULT 0,
    bytes_in INTEGER NOT NULL DEFAULT 0,
    bytes_out INTEGER NOT NULL DEFAULT 0,
    dirty_rows INTEGER NOT NULL DEFAULT 0,
    output TEXT,
    error TEXT,
    publish_step TEXT,
    source_state TEXT
);
CREATE INDEX IF NOT EXISTS runs_job ON runs(job, run_id);
CREATE TABLE IF NOT EXISTS parts (
    run_id INTEGER NOT NULL REFERENCES runs(run_id),
    part_index INTEGER NOT NULL,
    location TEXT NOT NULL,
    rows INTEGER NOT NULL,
    bytes_in INTEGER NOT NULL,
    bytes_out INTEGER NOT NULL,
    dirty_rows INTEGER NOT NULL,
    committed_at TEXT NOT NULL,
    PRIMARY KEY (run_id, part_index)
);
CREATE TABLE IF NOT EXISTS part_data (
    run_id INTEGER NOT NULL REFERENCES runs(run_id),
    part_index INTEGER NOT NULL,
    stage INTEGER NOT NULL,
    data BLOB NOT NULL,
    PRIMARY KEY (run_id, part_index, stage)
);
"#;

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn pid_alive(pid: i64) -> bool {
    pid > 0 && i64::from(std::process::id()) != pid && Path::new(&format!("/proc/{pid}")).exists()
}

impl StateStore {
    /// Opens (creating if needed) the state database at `path`.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| Error::io(format!("creating state directory {}", dir.display()), e))?;
        }
        let err = |e| Error::State {
            path: path.display().to_string(),
            source: e,
        };
        let conn = Connection::open(&path).map_err(err)?;
        conn.busy_timeout(std::time::Duration::from_secs(10))
            .map_err(err)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(err)?;
        // NORMAL: in WAL mode a commit still survives the process being
        // killed; FULL would add a disk flush per partition (the staged
        // parts themselves are not flushed either).
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(err)?;
        conn.execute_batch(SCHEMA).map_err(err)?;
        // State files written before `source_state` existed.
        let has_source_state: bool = conn
            .query_row(
                "SELECT COUNT(*) > 0 FROM pragma_table_info('runs') WHERE name = 'source_state'",
                [],
                |r| r.get(0),
            )
            .map_err(err)?;
        if !has_source_state {
            conn.execute_batch("ALTER TABLE runs ADD COLUMN source_state TEXT")
                .map_err(err)?;
        }
        // Seconds per partition (the scheduler's history) and the
        // scheduler's last handled fire time per job, added with `tidex serve`.
        let has_secs: bool = conn
            .query_row(
                "SELECT COUNT(*) > 0 FROM pragma_table_info('parts') WHERE name = 'secs'",
                [],
                |r| r.get(0),
            )
            .map_err(err)?;
        if !has_secs {
            conn.execute_batch("ALTER TABLE parts ADD COLUMN secs REAL")
                .map_err(err)?;
        }
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS schedule_fires (job TEXT PRIMARY KEY, last_fire TEXT NOT NULL);
             CREATE TABLE IF NOT EXISTS split_hints (job TEXT NOT NULL, label TEXT NOT NULL, PRIMARY KEY (job, label));
             CREATE TABLE IF NOT EXISTS run_splits (run_id INTEGER NOT NULL REFERENCES runs(run_id), seq INTEGER NOT NULL, part_index INTEGER NOT NULL, at INTEGER NOT NULL, PRIMARY KEY (run_id, seq));",
        )
        .map_err(err)?;
        Ok(StateStore {
            path,
            conn: Mutex::new(conn),
        })
    }

    /// Path of the database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn with<T>(&self, f: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> Result<T> {
        let conn = self
            .conn
            .lock()
            .map_err(|_| Error::Internal("state store lock poisoned".into()))?;
        f(&conn).map_err(|e| Error::State {
            path: self.path.display().to_string(),
            source: e,
        })
    }

    /// Starts a run of a job: resumes its interrupted run when there is one
    /// (unless `restart`), else starts a new one.
    pub fn begin(&self, new: &NewRun<'_>, restart: bool) -> Result<Begin> {
        let last: Option<(i64, String, String, Option<i64>)> = self.with(|c| {
            c.query_row(
                "SELECT run_id, status, plan_hash, pid FROM runs WHERE job = ?1 ORDER BY run_id DESC LIMIT 1",
                params![new.job],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .optional()
        })?;
        let mut discarded = None;
        if let Some((run_id, status, plan_hash, pid)) = last {
            let unfinished = matches!(status.as_str(), "running" | "publishing" | "failed");
            if unfinished && status != "failed" && pid.is_some_and(pid_alive) {
                return Err(Error::Config(format!(
                    "job `{}` is already running (run {run_id}, process {})",
                    new.job,
                    pid.unwrap_or_default()
                )));
            }
            if unfinished && restart {
                self.with(|c| {
                    c.execute(
                        "UPDATE runs SET status = 'discarded', finished_at = ?2 WHERE run_id = ?1",
                        params![run_id, now()],
                    )
                })?;
                discarded = Some(run_id);
            } else if unfinished {
                if plan_hash != new.plan_hash {
                    return Err(Error::Config(format!(
                        "job `{}` has an interrupted run ({run_id}) over different input (files were added, removed or changed size); \
                         run again with --restart to discard it and start over",
                        new.job
                    )));
                }
                let status = if status == "publishing" {
                    "publishing"
                } else {
                    "running"
                };
                self.with(|c| {
                    c.execute(
                        "UPDATE runs SET status = ?2, pid = ?3, error = NULL, finished_at = NULL WHERE run_id = ?1",
                        params![run_id, status, std::process::id()],
                    )
                })?;
                let committed = self.committed(run_id)?;
                return Ok(Begin {
                    run: RunInfo {
                        job: new.job.to_string(),
                        run_id,
                        resumed: true,
                        partitions: new.partitions,
                    },
                    committed,
                    discarded: None,
                });
            }
        }
        let run_id = self.with(|c| {
            c.execute(
                "INSERT INTO runs (job, spec_hash, plan_hash, status, pid, started_at, owner, purpose, partitions, source_state)
                 VALUES (?1, ?2, ?3, 'running', ?4, ?5, ?6, ?7, ?8, ?9)",
                params![new.job, new.spec_hash, new.plan_hash, std::process::id(), now(), new.owner, new.purpose, new.partitions as i64, new.source_state],
            )?;
            Ok(c.last_insert_rowid())
        })?;
        Ok(Begin {
            run: RunInfo {
                job: new.job.to_string(),
                run_id,
                resumed: false,
                partitions: new.partitions,
            },
            committed: Vec::new(),
            discarded,
        })
    }

    /// What earlier runs of `job` recorded for its source: the last
    /// completed run's state, and the interrupted run's (which the next run
    /// resumes unless `restart`).
    pub fn source_state(&self, job: &str, restart: bool) -> Result<SourceState> {
        self.with(|c| {
            let previous: Option<String> = c
                .query_row(
                    "SELECT source_state FROM runs WHERE job = ?1 AND status = 'completed' ORDER BY run_id DESC LIMIT 1",
                    params![job],
                    |r| r.get(0),
                )
                .optional()?
                .flatten();
            let interrupted: Option<String> = if restart {
                None
            } else {
                c.query_row(
                    "SELECT status, source_state FROM runs WHERE job = ?1 ORDER BY run_id DESC LIMIT 1",
                    params![job],
                    |r| Ok((r.get::<_, String>(0)?, r.get::<_, Option<String>>(1)?)),
                )
                .optional()?
                .filter(|(status, _)| matches!(status.as_str(), "running" | "publishing" | "failed"))
                .and_then(|(_, state)| state)
            };
            Ok(SourceState {
                previous,
                interrupted,
            })
        })
    }

    /// Committed parts of a run, with their input bytes and dirty rows.
    pub fn committed(&self, run_id: i64) -> Result<Vec<(CommittedPart, u64, u64)>> {
        self.with(|c| {
            let mut st = c.prepare(
                "SELECT part_index, location, rows, bytes_out, bytes_in, dirty_rows FROM parts WHERE run_id = ?1 ORDER BY part_index",
            )?;
            let rows = st.query_map(params![run_id], |r| {
                Ok((
                    CommittedPart {
                        index: r.get::<_, i64>(0)? as usize,
                        location: r.get(1)?,
                        rows: r.get::<_, i64>(2)? as u64,
                        bytes: r.get::<_, i64>(3)? as u64,
                    },
                    r.get::<_, i64>(4)? as u64,
                    r.get::<_, i64>(5)? as u64,
                ))
            })?;
            rows.collect()
        })
    }

    /// Records a committed partition.
    pub fn commit_part(
        &self,
        run_id: i64,
        part: &CommittedPart,
        bytes_in: u64,
        dirty: u64,
    ) -> Result<()> {
        self.with(|c| {
            c.execute(
                "INSERT OR REPLACE INTO parts (run_id, part_index, location, rows, bytes_in, bytes_out, dirty_rows, committed_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![run_id, part.index as i64, part.location, part.rows as i64, bytes_in as i64, part.bytes as i64, dirty as i64, now()],
            )
        })?;
        Ok(())
    }

    /// Stores what stage `stage` keeps with partition `part` of a run. It
    /// is written before the sink commits and counts only once the part is
    /// recorded as committed; a partition that is processed again replaces it.
    pub fn put_part_data(&self, run_id: i64, part: usize, stage: usize, data: &[u8]) -> Result<()> {
        self.with(|c| {
            c.execute(
                "INSERT OR REPLACE INTO part_data (run_id, part_index, stage, data) VALUES (?1, ?2, ?3, ?4)",
                params![run_id, part as i64, stage as i64, data],
            )
        })?;
        Ok(())
    }

    /// Calls `f(run_id, data)` for what stage `stage` of `job` kept with
    /// every delivered partition: the committed partitions of completed (or
    /// publishing) runs after `after_run`, and those of `current_run`.
    /// Partitions that never committed and runs thrown away are left out.
    /// One blob is in memory at a time.
    pub fn for_each_part_data(
        &self,
        job: &str,
        stage: usize,
        after_run: i64,
        current_run: i64,
        mut f: impl FnMut(i64, &[u8]) -> Result<()>,
    ) -> Result<()> {
        let keys: Vec<(i64, i64)> = self.with(|c| {
            let mut st = c.prepare(
                "SELECT d.run_id, d.part_index FROM part_data d
                 JOIN runs r ON r.run_id = d.run_id
                 JOIN parts p ON p.run_id = d.run_id AND p.part_index = d.part_index
                 WHERE r.job = ?1 AND d.stage = ?2 AND d.run_id > ?3
                   AND (r.status IN ('completed', 'publishing') OR r.run_id = ?4)
                 ORDER BY d.run_id, d.part_index",
            )?;
            let rows = st.query_map(params![job, stage as i64, after_run, current_run], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })?;
            rows.collect()
        })?;
        for (run_id, part) in keys {
            let data: Vec<u8> = self.with(|c| {
                c.query_row(
                    "SELECT data FROM part_data WHERE run_id = ?1 AND part_index = ?2 AND stage = ?3",
                    params![run_id, part, stage as i64],
                    |r| r.get(0),
                )
            })?;
            f(run_id, &data)?;
        }
        Ok(())
    }

    /// Drops stage data of `job` up to and including `up_to_run`, once a
    /// stage has folded it into its own store.
    pub fn drop_part_data(&self, job: &str, stage: usize, up_to_run: i64) -> Result<()> {
        self.with(|c| {
            c.execute(
                "DELETE FROM part_data WHERE stage = ?2 AND run_id <= ?3
                 AND run_id IN (SELECT run_id FROM runs WHERE job = ?1)",
                params![job, stage as i64, up_to_run],
            )
        })?;
        Ok(())
    }

    /// The newest completed (or publishing) run of `job` other than `current_run`.
    pub fn last_delivered_run(&self, job: &str, current_run: i64) -> Result<Option<i64>> {
        self.with(|c| {
            c.query_row(
                "SELECT MAX(run_id) FROM runs WHERE job = ?1 AND run_id <> ?2 AND status IN ('completed', 'publishing')",
                params![job, current_run],
                |r| r.get(0),
            )
        })
    }

    /// Marks a run as publishing.
    pub fn set_status(&self, run_id: i64, status: RunStatus) -> Result<()> {
        self.with(|c| {
            c.execute(
                "UPDATE runs SET status = ?2 WHERE run_id = ?1",
                params![run_id, status.as_str()],
            )
        })?;
        Ok(())
    }

    /// Ends a run with its totals.
    pub fn finish(
        &self,
        run_id: i64,
        status: RunStatus,
        totals: &Totals,
        output: Option<&str>,
        error: Option<&str>,
    ) -> Result<()> {
        self.with(|c| {
            c.execute(
                "UPDATE runs SET status = ?2, finished_at = ?3, rows = ?4, bytes_in = ?5, bytes_out = ?6, dirty_rows = ?7,
                 output = COALESCE(?8, output), error = ?9, pid = NULL WHERE run_id = ?1",
                params![
                    run_id,
                    status.as_str(),
                    now(),
                    totals.rows as i64,
                    totals.bytes_in as i64,
                    totals.bytes_out as i64,
                    totals.dirty as i64,
                    output,
                    error
                ],
            )
        })?;
        Ok(())
    }

    /// Run history, newest first.
    pub fn runs(&self, job: Option<&str>, limit: usize) -> Result<Vec<RunRecord>> {
        self.with(|c| {
            let mut st = c.prepare(
                "SELECT r.run_id, r.job, r.status, r.started_at, r.finished_at, r.partitions,
                        (SELECT COUNT(*) FROM parts p WHERE p.run_id = r.run_id),
                        r.rows, r.bytes_in, r.bytes_out, r.dirty_rows, r.owner, r.purpose, r.output, r.error
                 FROM runs r WHERE (?1 IS NULL OR r.job = ?1) ORDER BY r.run_id DESC LIMIT ?2",
            )?;
            let rows = st.query_map(params![job, limit as i64], |r| {
                Ok(RunRecord {
                    run_id: r.get(0)?,
                    job: r.get(1)?,
                    status: r.get(2)?,
                    started_at: r.get(3)?,
                    finished_at: r.get(4)?,
                    partitions: r.get(5)?,
                    partitions_done: r.get(6)?,
                    rows: r.get(7)?,
                    bytes_in: r.get(8)?,
                    bytes_out: r.get(9)?,
                    dirty_rows: r.get(10)?,
                    owner: r.get(11)?,
                    purpose: r.get(12)?,
                    output: r.get(13)?,
                    error: r.get(14)?,
                })
            })?;
            rows.collect()
        })
    }

    /// Records how long a committed partition took on its worker.
    pub fn set_part_secs(&self, run_id: i64, index: usize, secs: f64) -> Result<()> {
        self.with(|c| {
            c.execute(
                "UPDATE parts SET secs = ?3 WHERE run_id = ?1 AND part_index = ?2",
                params![run_id, index as i64, secs],
            )
        })?;
        Ok(())
    }

    /// Partitions (rows, input bytes, seconds) of the job's last `runs`
    /// completed runs, newest run first: what the planner predicts from.
    pub fn part_history(
        &self,
        job: &str,
        runs: usize,
    ) -> Result<Vec<Vec<crate::scheduler::planner::PartRecord>>> {
        self.with(|c| {
            let mut ids = c.prepare(
                "SELECT run_id FROM runs WHERE job = ?1 AND status = 'completed' ORDER BY run_id DESC LIMIT ?2",
            )?;
            let ids: Vec<i64> = ids
                .query_map(params![job, runs as i64], |r| r.get(0))?
                .collect::<rusqlite::Result<_>>()?;
            let mut parts = c.prepare(
                "SELECT rows, bytes_in, COALESCE(secs, 0) FROM parts WHERE run_id = ?1 ORDER BY part_index",
            )?;
            ids.iter()
                .map(|id| {
                    parts
                        .query_map(params![id], |r| {
                            Ok(crate::scheduler::planner::PartRecord {
                                rows: r.get::<_, i64>(0)? as u64,
                                bytes: r.get::<_, i64>(1)? as u64,
                                secs: r.get(2)?,
                            })
                        })?
                        .collect()
                })
                .collect()
        })
    }

    /// The last fire time `tidex serve` handled for a job.
    pub fn last_fire(&self, job: &str) -> Result<Option<chrono::DateTime<chrono::Utc>>> {
        let t: Option<String> = self.with(|c| {
            c.query_row(
                "SELECT last_fire FROM schedule_fires WHERE job = ?1",
                params![job],
                |r| r.get(0),
            )
            .optional()
        })?;
        Ok(
            t.and_then(|t| chrono::DateTime::parse_from_rfc3339(&t).ok())
                .map(|t| t.with_timezone(&chrono::Utc)),
        )
    }

    /// Records the last fire time handled for a job.
    pub fn set_last_fire(&self, job: &str, t: chrono::DateTime<chrono::Utc>) -> Result<()> {
        self.with(|c| {
            c.execute(
                "INSERT INTO schedule_fires (job, last_fire) VALUES (?1, ?2)
                 ON CONFLICT(job) DO UPDATE SET last_fire = excluded.last_fire",
                params![job, t.to_rfc3339()],
            )
        })?;
        Ok(())
    }

    /// Labels of partitions the scheduler splits whenever a run of `job`
    /// plans them (they lagged far behind their siblings before).
    pub fn split_hints(&self, job: &str) -> Result<Vec<String>> {
        self.with(|c| {
            let mut st =
                c.prepare("SELECT label FROM split_hints WHERE job = ?1 ORDER BY label")?;
            let rows = st.query_map(params![job], |r| r.get(0))?;
            rows.collect()
        })
    }

    /// Remembers that partitions labelled `label` of `job` are to be split.
    pub fn add_split_hint(&self, job: &str, label: &str) -> Result<()> {
        self.with(|c| {
            c.execute(
                "INSERT OR IGNORE INTO split_hints (job, label) VALUES (?1, ?2)",
                params![job, label],
            )
        })?;
        Ok(())
    }

    /// Records that partition `part` of a run was cut at `at` while it ran,
    /// its rest becoming partition `partitions - 1` (see
    /// `Source::split_at`); a resumed run replays the cuts in order.
    pub fn add_run_split(
        &self,
        run_id: i64,
        part: usize,
        at: u64,
        partitions: usize,
    ) -> Result<()> {
        self.with(|c| {
            let tx = c.unchecked_transaction()?;
            tx.execute(
                "INSERT INTO run_splits (run_id, seq, part_index, at)
                 VALUES (?1, (SELECT COUNT(*) FROM run_splits WHERE run_id = ?1), ?2, ?3)",
                params![run_id, part as i64, at as i64],
            )?;
            tx.execute(
                "UPDATE runs SET partitions = ?2 WHERE run_id = ?1",
                params![run_id, partitions as i64],
            )?;
            tx.commit()
        })
    }

    /// The cuts made while a run ran, in the order they were made.
    pub fn run_splits(&self, run_id: i64) -> Result<Vec<(usize, u64)>> {
        self.with(|c| {
            let mut st =
                c.prepare("SELECT part_index, at FROM run_splits WHERE run_id = ?1 ORDER BY seq")?;
            let rows = st.query_map(params![run_id], |r| {
                Ok((r.get::<_, i64>(0)? as usize, r.get::<_, i64>(1)? as u64))
            })?;
            rows.collect()
        })
    }

    /// Jobs whose newest run was interrupted (still marked running or
    /// publishing by no live process, or cancelled): a restarted service
    /// resumes them.
    pub fn interrupted_jobs(&self) -> Result<Vec<String>> {
        let rows: Vec<(String, String, Option<i64>, Option<String>)> = self.with(|c| {
            let mut st = c.prepare(
                "SELECT r.job, r.status, r.pid, r.error FROM runs r
                 WHERE r.run_id = (SELECT MAX(run_id) FROM runs x WHERE x.job = r.job)",
            )?;
            let rows = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?;
            rows.collect()
        })?;
        Ok(rows
            .into_iter()
            .filter(|(_, status, pid, error)| match status.as_str() {
                "running" | "publishing" => !pid.is_some_and(pid_alive),
                "failed" => error.as_deref() == Some("run cancelled"),
                _ => false,
            })
            .map(|(job, ..)| job)
            .collect())
    }

    /// The publish journal of a run.
    pub fn journal(&self, run_id: i64) -> Journal<'_> {
        Journal {
            store: self,
            run_id,
        }
    }
}

/// Run totals written when a run ends.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct Totals {
    /// Rows delivered.
    pub rows: u64,
    /// Input bytes.
    pub bytes_in: u64,
    /// Output bytes.
    pub bytes_out: u64,
    /// Rows rejected.
    pub dirty: u64,
}

/// [`PublishJournal`] backed by the state store.
pub struct Journal<'a> {
    store: &'a StateStore,
    run_id: i64,
}

impl PublishJournal for Journal<'_> {
    fn step(&self) -> Result<Option<String>> {
        self.store.with(|c| {
            c.query_row(
                "SELECT publish_step FROM runs WHERE run_id = ?1",
                params![self.run_id],
                |r| r.get(0),
            )
        })
    }

    fn record(&self, step: &str) -> Result<()> {
        self.store.with(|c| {
            c.execute(
                "UPDATE runs SET publish_step = ?2 WHERE run_id = ?1",
                params![self.run_id, step],
            )
        })?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new_run<'a>(plan: &'a str) -> NewRun<'a> {
        NewRun {
            job: "j",
            spec_hash: "s",
            plan_hash: plan,
            owner: None,
            purpose: None,
            partitions: 3,
            source_state: Some(plan),
        }
    }

    #[test]
    fn source_state_of_last_completed_and_interrupted_runs() {
        let dir = tempfile::tempdir().unwrap();
        let s = StateStore::open(dir.path().join("state.db")).unwrap();
        assert!(s.source_state("j", false).unwrap().previous.is_none());
        let r1 = s.begin(&new_run("one"), false).unwrap().run;
        s.finish(
            r1.run_id,
            RunStatus::Completed,
            &Totals::default(),
            None,
            None,
        )
        .unwrap();
        let r2 = s.begin(&new_run("two"), false).unwrap().run;
        s.finish(r2.run_id, RunStatus::Failed, &Totals::default(), None, None)
            .unwrap();
        let st = s.source_state("j", false).unwrap();
        assert_eq!(st.previous.as_deref(), Some("one"));
        assert_eq!(st.interrupted.as_deref(), Some("two"));
        assert!(s.source_state("j", true).unwrap().interrupted.is_none());
    }

    #[test]
    fn interrupted_run_resumes_with_its_committed_parts() {
        let dir = tempfile::tempdir().unwrap();
        let st = StateStore::open(dir.path().join("state.db")).unwrap();
        let b = st.begin(&new_run("p"), false).unwrap();
        assert!(!b.run.resumed);
        let part = CommittedPart {
            index: 1,
            location: "x".into(),
            rows: 5,
            bytes: 10,
        };
        st.commit_part(b.run.run_id, &part, 100, 0).unwrap();
        // The process "dies": the run stays `running`.
        st.finish(
            b.run.run_id,
            RunStatus::Failed,
            &Totals::default(),
            None,
            Some("killed"),
        )
        .unwrap();
        let b2 = st.begin(&new_run("p"), false).unwrap();
        assert!(b2.run.resumed);
        assert_eq!(b2.run.run_id, b.run.run_id);
        assert_eq!(b2.committed.len(), 1);
        assert_eq!(b2.committed[0].0, part);
    }

    #[test]
    fn part_history_and_fire_times_for_the_scheduler() {
        let dir = tempfile::tempdir().unwrap();
        let st = StateStore::open(dir.path().join("state.db")).unwrap();
        assert!(st.part_history("j", 5).unwrap().is_empty());
        for secs in [10.0, 20.0] {
            let b = st.begin(&new_run("p"), false).unwrap();
            for i in 0..2 {
                let part = CommittedPart {
                    index: i,
                    location: format!("x{i}"),
                    rows: 5,
                    bytes: 10,
                };
                st.commit_part(b.run.run_id, &part, 100, 0).unwrap();
                st.set_part_secs(b.run.run_id, i, secs).unwrap();
            }
            st.finish(
                b.run.run_id,
                RunStatus::Completed,
                &Totals::default(),
                None,
                None,
            )
            .unwrap();
        }
        let h = st.part_history("j", 5).unwrap();
        assert_eq!(h.len(), 2);
        assert_eq!(h[0][0].secs, 20.0, "newest first");
        assert_eq!(h[1][1].bytes, 100);
        assert!(st.last_fire("j").unwrap().is_none());
        let t = chrono::DateTime::parse_from_rfc3339("2026-11-21T02:00:00Z")
            .unwrap()
            .with_timezone(&chrono::Utc);
        st.set_last_fire("j", t).unwrap();
        st.set_last_fire("j", t).unwrap();
        assert_eq!(st.last_fire("j").unwrap(), Some(t));
        // A run cancelled by a shutdown is resumed by the next service.
        let b = st.begin(&new_run("p"), false).unwrap();
        st.finish(
            b.run.run_id,
            RunStatus::Failed,
            &Totals::default(),
            None,
            Some("run cancelled"),
        )
        .unwrap();
        assert_eq!(st.interrupted_jobs().unwrap(), ["j"]);
    }

    #[test]
    fn completed_run_starts_new_one_and_restart_discards() {
        let dir = tempfile::tempdir().unwrap();
        let st = StateStore::open(dir.path().join("state.db")).unwrap();
        let b = st.begin(&new_run("p"), false).unwrap();
        st.finish(
            b.run.run_id,
            RunStatus::Completed,
            &Totals::default(),
            Some("out"),
            None,
        )
        .unwrap();
        let b2 = st.begin(&new_run("p"), false).unwrap();
        assert!(!b2.run.resumed);
        assert_ne!(b2.run.run_id, b.run.run_id);
        st.finish(
            b2.run.run_id,
            RunStatus::Failed,
            &Totals::default(),
            None,
            Some("x"),
        )
        .unwrap();
        let err = st.begin(&new_run("changed"), false).unwrap_err();
        assert!(err.to_string().contains("--restart"), "{err}");
        let b3 = st.begin(&new_run("changed"), true).unwrap();
        assert_eq!(b3.discarded, Some(b2.run.run_id));
        assert_eq!(st.runs(Some("j"), 10).unwrap()[1].status, "discarded");
    }
}
