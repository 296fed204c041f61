//! What a person sees: the progress bar (or log lines), run summaries and
//! the run history table.

use indicatif::{ProgressBar, ProgressStyle};
use std::sync::atomic::Ordering;
use std::sync::mpsc::{channel, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tidex_engine::runtime::{Progress, RunSummary};
use tidex_engine::state::RunRecord;

/// A background thread that reports progress until stopped.
pub struct Watcher {
    /// Dropping it wakes the thread at once: a run does not wait out the
    /// rest of a 100 ms tick before it ends.
    stop: Option<Sender<()>>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl Watcher {
    /// Stops reporting.
    pub fn stop(mut self) {
        self.stop.take();
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

fn human_bytes(n: u64) -> String {
    indicatif::DecimalBytes(n).to_string()
}

fn human_count(n: u64) -> String {
    indicatif::HumanCount(n).to_string()
}

/// Reports progress: a bar on a terminal, a log line every 5 s otherwise.
pub fn watch(progress: Arc<Progress>, bar: bool, what: String) -> Watcher {
    watch_every(progress, bar, what, Duration::from_millis(100))
}

/// [`watch`], updating every `tick`.
fn watch_every(progress: Arc<Progress>, bar: bool, what: String, tick: Duration) -> Watcher {
    let (stop, stopped) = channel::<()>();
    let handle = std::thread::spawn(move || {
        let started = Instant::now();
        let pb = bar.then(|| {
            let pb = ProgressBar::new(0);
            pb.set_style(
                ProgressStyle::with_template("{spinner} [{elapsed_precise}] [{bar:30}] {decimal_bytes}/{decimal_total_bytes} {decimal_bytes_per_sec} ETA {eta} {msg}")
                    .expect("valid template")
                    .progress_chars("=> "),
            );
            pb
        });
        let mut last_log = Instant::now();
        while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(tick) {
            let rows = progress.rows.load(Ordering::Relaxed);
            let bytes = progress.bytes_in.load(Ordering::Relaxed);
            let total = progress.total_bytes.load(Ordering::Relaxed);
            let done = progress.partitions_done.load(Ordering::Relaxed);
            let parts = progress.partitions_total.load(Ordering::Relaxed);
            let dirty = progress.dirty.load(Ordering::Relaxed);
            let msg = format!(
                "{} rows, {done}/{parts} partitions{}",
                human_count(rows),
                if dirty > 0 {
                    format!(", {dirty} dirty")
                } else {
                    String::new()
                }
            );
            if let Some(pb) = &pb {
                pb.set_length(total);
                pb.set_position(bytes.min(total));
                pb.set_message(msg);
            } else if last_log.elapsed() >= Duration::from_secs(5) {
                last_log = Instant::now();
                let secs = started.elapsed().as_secs_f64().max(1e-3);
                let pct = if total > 0 {
                    bytes as f64 * 100.0 / total as f64
                } else {
                    0.0
                };
                eprintln!(
                    "progress: {what}: {pct:.1}% {} of {}, {msg}, {:.1} MB/s",
                    human_bytes(bytes),
                    human_bytes(total),
                    bytes as f64 / 1e6 / secs
                );
            }
        }
        if let Some(pb) = pb {
            pb.finish_and_clear();
        }
    });
    Watcher {
        stop: Some(stop),
        handle: Some(handle),
    }
}

/// Prints a run summary for people.
pub fn print_summary(s: &RunSummary) {
    let resumed = if s.resumed {
        format!(
            " (resumed; {} partitions were already committed)",
            s.partitions_skipped
        )
    } else {
        String::new()
    };
    println!("job {} run {} completed{resumed}", s.job, s.run_id);
    println!("  {} -> {}", s.source, s.output);
    let cut = match s.partitions_split {
        0 => String::new(),
        n => format!(" ({n} made by cutting lagging partitions)"),
    };
    println!(
        "  rows: {}   dirty rows: {}   partitions: {}{cut}",
        human_count(s.rows),
        human_count(s.dirty_rows),
        s.partitions
    );
    println!(
        "  read: {}   written: {}   time: {:.2} s   throughput: {:.1} MB/s, {} rows/s",
        human_bytes(s.bytes_in),
        human_bytes(s.bytes_out),
        s.duration_secs,
        s.mb_per_sec,
        human_count(s.rows_per_sec as u64)
    );
    for st in &s.stages {
        if st.dropped > 0 {
            println!(
                "  {}: {} rows dropped as duplicates",
                st.kind,
                human_count(st.dropped)
            );
        }
        if let Some(note) = &st.note {
            println!("  {}: {note}", st.kind);
        }
    }
    if let Some(d) = &s.dead_letter {
        println!("  rejected rows are in {d}");
    }
}

/// Prints run history as a table.
pub fn print_runs(runs: &[RunRecord]) {
    if runs.is_empty() {
        println!("no runs recorded yet");
        return;
    }
    println!(
        "{:>5}  {:<24} {:<10} {:<24} {:>12} {:>8} {:>7}  OUTPUT",
        "RUN", "JOB", "STATUS", "STARTED", "ROWS", "DIRTY", "PARTS"
    );
    for r in runs {
        let out = r
            .output
            .clone()
            .or_else(|| r.error.clone())
            .unwrap_or_default();
        println!(
            "{:>5}  {:<24} {:<10} {:<24} {:>12} {:>8} {:>7}  {}",
            r.run_id,
            r.job,
            r.status,
            r.started_at,
            human_count(r.rows.max(0) as u64),
            r.dirty_rows,
            format!("{}/{}", r.partitions_done, r.partitions),
            out
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stopping_does_not_wait_for_the_next_tick() {
        let w = watch_every(
            Arc::new(Progress::default()),
            false,
            "test".into(),
            Duration::from_secs(3600),
        );
        let t = Instant::now();
        w.stop();
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "stop() waited {:?} for a tick of an hour",
            t.elapsed()
        );
    }
}
