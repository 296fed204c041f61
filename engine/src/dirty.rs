//! Dirty rows: what happens to a row that cannot be read as declared.
//!
//! Under `policy = "fail"` the first one stops the run with its location.
//! Under `skip` it is written, with the reason, to a per-partition JSON-lines
//! file in the dead-letter directory. That file is committed together with
//! the partition (temporary name, then rename), so a resumed run never
//! reports a rejected row twice. A shared budget enforces the error limit.

use crate::error::{Error, Location, Result};
use crate::spec::{ErrorsSection, Policy};
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// One rejected row (or an unreadable block of rows).
#[derive(Debug, Clone)]
pub struct DirtyRow {
    /// Where it was found.
    pub location: Location,
    /// Why it was rejected.
    pub reason: String,
    /// The row's fields as read, when they could be read.
    pub values: Option<Vec<String>>,
    /// How many input rows this rejection stands for (1 for a row; the row
    /// count of a corrupt block when known).
    pub rows: u64,
}

impl DirtyRow {
    /// A single rejected row.
    pub fn row(location: Location, reason: impl Into<String>) -> Self {
        DirtyRow {
            location,
            reason: reason.into(),
            values: None,
            rows: 1,
        }
    }

    /// Attaches the row's raw field values.
    pub fn with_values(mut self, values: Vec<String>) -> Self {
        self.values = Some(values);
        self
    }
}

/// The job-wide error budget, shared by every partition of a run.
#[derive(Debug)]
pub struct ErrorBudget {
    policy: Policy,
    max_rows: Option<u64>,
    max_percent: Option<f64>,
    dead_letter: Option<PathBuf>,
    dirty: AtomicU64,
    good: AtomicU64,
}

impl ErrorBudget {
    /// A budget for the spec's `[errors]`; `already_dirty` counts the rows
    /// rejected by partitions committed before a resume.
    pub fn new(errors: &ErrorsSection, already_dirty: u64) -> Self {
        ErrorBudget {
            policy: errors.policy,
            max_rows: errors.max_rows,
            max_percent: errors.max_percent,
            dead_letter: errors.dead_letter.as_ref().map(PathBuf::from),
            dirty: AtomicU64::new(already_dirty),
            good: AtomicU64::new(0),
        }
    }

    /// Rows rejected so far in this run.
    pub fn dirty(&self) -> u64 {
        self.dirty.load(Ordering::Relaxed)
    }

    /// Counts rows that were read cleanly (for `max_percent`).
    pub fn add_good(&self, rows: u64) {
        self.good.fetch_add(rows, Ordering::Relaxed);
    }

    fn dead_letter_display(&self) -> String {
        self.dead_letter
            .as_ref()
            .map_or_else(|| "(none)".into(), |p| p.display().to_string())
    }

    fn check_rows(&self, dirty: u64) -> Result<()> {
        if let Some(max) = self.max_rows {
            if dirty > max {
                return Err(Error::ErrorLimit {
                    dirty,
                    limit: format!("errors.max_rows = {max}"),
                    dead_letter: self.dead_letter_display(),
                });
            }
        }
        Ok(())
    }

    /// Checks `max_percent` once the run has read everything.
    pub fn check_final(&self, total_rows: u64) -> Result<()> {
        let dirty = self.dirty();
        self.check_rows(dirty)?;
        if let Some(max) = self.max_percent {
            let total = total_rows.max(1) as f64;
            let pct = dirty as f64 * 100.0 / total;
            if pct > max {
                return Err(Error::ErrorLimit {
                    dirty,
                    limit: format!("{pct:.2}% of {total_rows} rows > errors.max_percent = {max}"),
                    dead_letter: self.dead_letter_display(),
                });
            }
        }
        Ok(())
    }
}

/// Collects the rejected rows of one partition.
pub struct Rejects {
    budget: Arc<ErrorBudget>,
    job: String,
    run_id: i64,
    partition: usize,
    file: Option<(PathBuf, PathBuf, std::io::BufWriter<std::fs::File>)>,
    count: u64,
}

impl Rejects {
    /// Rejects for `partition` of run `run_id`.
    pub fn new(budget: Arc<ErrorBudget>, job: &str, run_id: i64, partition: usize) -> Self {
        Rejects {
            budget,
            job: job.to_string(),
            run_id,
            partition,
            file: None,
            count: 0,
        }
    }

    /// Rows this partition rejected.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Rejects a row: an error under `fail` (or past the limit), else the
    /// row goes to the dead-letter file.
    pub fn reject(&mut self, row: DirtyRow) -> Result<()> {
        if self.budget.policy == Policy::Fail {
            return Err(Error::bad_data(row.location, row.reason));
        }
        let Some(dir) = &self.budget.dead_letter else {
            return Err(Error::Internal("skip policy without dead_letter".into()));
        };
        if self.file.is_none() {
            std::fs::create_dir_all(dir).map_err(|e| {
                Error::io(
                    format!("creating dead-letter directory {}", dir.display()),
                    e,
                )
            })?;
            let name = format!(
                "{}-run{}-part{:05}.jsonl",
                sanitize(&self.job),
                self.run_id,
                self.partition
            );
            let final_path = dir.join(&name);
            let tmp = dir.join(format!(".{name}.tmp"));
            let f = std::fs::File::create(&tmp)
                .map_err(|e| Error::io(format!("creating {}", tmp.display()), e))?;
            self.file = Some((tmp, final_path, std::io::BufWriter::new(f)));
        }
        let (tmp, _, w) = self.file.as_mut().expect("opened above");
        let rec = serde_json::json!({
            "job": self.job,
            "run": self.run_id,
            "partition": self.partition,
            "location": row.location,
            "reason": row.reason,
            "rows": row.rows,
            "values": row.values,
        });
        serde_json::to_writer(&mut *w, &rec)
            .map_err(|e| Error::io(format!("writing {}", tmp.display()), e))?;
        w.write_all(b"\n")
            .map_err(|e| Error::io(format!("writing {}", tmp.display()), e))?;
        self.count += row.rows;
        let total = self.budget.dirty.fetch_add(row.rows, Ordering::Relaxed) + row.rows;
        self.budget.check_rows(total)
    }

    /// Makes the dead-letter file visible; called when the partition commits.
    pub fn commit(mut self) -> Result<u64> {
        if let Some((tmp, path, mut w)) = self.file.take() {
            w.flush()
                .map_err(|e| Error::io(format!("writing {}", tmp.display()), e))?;
            w.get_ref()
                .sync_all()
                .map_err(|e| Error::io(format!("syncing {}", tmp.display()), e))?;
            drop(w);
            std::fs::rename(&tmp, &path)
                .map_err(|e| Error::io(format!("renaming {}", tmp.display()), e))?;
        }
        Ok(self.count)
    }
}

impl Drop for Rejects {
    fn drop(&mut self) {
        // Not committed: the partition will be read again, so its rejects
        // will be written again. Give back the budget and remove the file.
        if let Some((tmp, _, _)) = self.file.take() {
            let _ = std::fs::remove_file(tmp);
            self.budget.dirty.fetch_sub(self.count, Ordering::Relaxed);
        }
    }
}

fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors(policy: Policy, dir: &std::path::Path, max_rows: Option<u64>) -> ErrorsSection {
        ErrorsSection {
            policy,
            max_rows,
            max_percent: None,
            dead_letter: Some(dir.display().to_string()),
        }
    }

    #[test]
    fn fail_policy_turns_first_reject_into_error() {
        let dir = tempfile::tempdir().unwrap();
        let budget = Arc::new(ErrorBudget::new(&errors(Policy::Fail, dir.path(), None), 0));
        let mut r = Rejects::new(budget, "j", 1, 0);
        let loc = Location {
            file: "a.csv".into(),
            row: Some(3),
            byte_offset: None,
            column: Some("x".into()),
        };
        let err = r.reject(DirtyRow::row(loc, "not an integer")).unwrap_err();
        assert_eq!(err.to_string(), "a.csv, row 3, column `x`: not an integer");
    }

    #[test]
    fn skip_writes_dead_letter_on_commit_and_enforces_limit() {
        let dir = tempfile::tempdir().unwrap();
        let budget = Arc::new(ErrorBudget::new(
            &errors(Policy::Skip, dir.path(), Some(1)),
            0,
        ));
        let mut r = Rejects::new(budget.clone(), "j", 7, 2);
        r.reject(DirtyRow::row(Location::default(), "bad")).unwrap();
        assert_eq!(
            std::fs::read_dir(dir.path())
                .unwrap()
                .filter(|e| !e
                    .as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .starts_with('.'))
                .count(),
            0
        );
        assert_eq!(r.commit().unwrap(), 1);
        let body = std::fs::read_to_string(dir.path().join("j-run7-part00002.jsonl")).unwrap();
        assert!(body.contains("\"reason\":\"bad\""));
        let mut r2 = Rejects::new(budget, "j", 7, 3);
        assert!(matches!(
            r2.reject(DirtyRow::row(Location::default(), "bad")),
            Err(Error::ErrorLimit { dirty: 2, .. })
        ));
    }

    #[test]
    fn uncommitted_rejects_are_given_back() {
        let dir = tempfile::tempdir().unwrap();
        let budget = Arc::new(ErrorBudget::new(&errors(Policy::Skip, dir.path(), None), 0));
        let mut r = Rejects::new(budget.clone(), "j", 1, 0);
        r.reject(DirtyRow::row(Location::default(), "bad")).unwrap();
        drop(r);
        assert_eq!(budget.dirty(), 0);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
