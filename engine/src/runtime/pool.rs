//! The work-stealing partition pool.
//!
//! Every worker owns a local deque; new work goes to a shared injector.
//! An idle worker takes from its own deque, then from the injector, then
//! steals from the other workers, so one slow partition never idles the
//! rest. The first error stops the pool: workers finish the task they hold
//! (a partition is never abandoned mid-commit) and take no more.

use crate::error::{Error, Result};
use crossbeam_deque::{Injector, Steal, Stealer, Worker};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;

/// A worker's next task: its own first, then the next from the shared queue
/// (one at a time, so partitions run roughly in plan order and an in-order
/// consumer such as single-file assembly keeps pace), then one stolen from
/// another worker.
fn find_task<T>(local: &Worker<T>, global: &Injector<T>, stealers: &[Stealer<T>]) -> Option<T> {
    local.pop().or_else(|| {
        std::iter::repeat_with(|| {
            global
                .steal()
                .or_else(|| stealers.iter().map(|s| s.steal()).collect())
        })
        .find(|s| !s.is_retry())
        .and_then(Steal::success)
    })
}

/// Tasks for [`run_queue`], to which running tasks may add more.
pub struct Queue<T> {
    injector: Injector<T>,
    /// Tasks queued or running; workers wait for more while it is not 0.
    outstanding: AtomicUsize,
}

impl<T> Queue<T> {
    /// A queue holding `tasks`.
    pub fn new(tasks: Vec<T>) -> Self {
        let injector = Injector::new();
        let outstanding = AtomicUsize::new(tasks.len());
        for t in tasks {
            injector.push(t);
        }
        Queue {
            injector,
            outstanding,
        }
    }

    /// Adds a task. Call it only while a task of this queue runs (a task
    /// splitting off part of its work), so no worker has left for lack of
    /// work.
    pub fn push(&self, task: T) {
        self.outstanding.fetch_add(1, Ordering::SeqCst);
        self.injector.push(task);
    }
}

/// Runs `work(worker_index, task)` for every task of `queue` on `workers`
/// threads; running tasks may add more. A worker with nothing to do waits
/// while any task is still running, and all leave once every task is done.
/// Stops taking tasks when `cancel` is set or a task fails; returns the
/// first error.
pub fn run_queue<T: Send>(
    queue: &Queue<T>,
    workers: usize,
    cancel: &AtomicBool,
    work: impl Fn(usize, T) -> Result<()> + Sync,
) -> Result<()> {
    let workers = workers.max(1);
    let locals: Vec<Worker<T>> = (0..workers).map(|_| Worker::new_fifo()).collect();
    let stealers: Vec<Stealer<T>> = locals.iter().map(|w| w.stealer()).collect();
    let first_error: Mutex<Option<Error>> = Mutex::new(None);
    let failed = AtomicBool::new(false);
    std::thread::scope(|s| {
        for (i, local) in locals.into_iter().enumerate() {
            let (stealers, work, first_error, failed) = (&stealers, &work, &first_error, &failed);
            std::thread::Builder::new()
                .name(format!("tidex-worker-{i}"))
                .spawn_scoped(s, move || {
                    while !failed.load(Ordering::Relaxed) && !cancel.load(Ordering::Relaxed) {
                        let Some(task) = find_task(&local, &queue.injector, stealers) else {
                            if queue.outstanding.load(Ordering::SeqCst) == 0 {
                                break;
                            }
                            // A running task may still split off more work.
                            std::thread::sleep(std::time::Duration::from_millis(5));
                            continue;
                        };
                        let result = work(i, task);
                        queue.outstanding.fetch_sub(1, Ordering::SeqCst);
                        if let Err(e) = result {
                            failed.store(true, Ordering::Relaxed);
                            let mut slot = first_error.lock().unwrap_or_else(|p| p.into_inner());
                            // A cancellation caused by another worker's error is not news.
                            if slot.is_none() || matches!(*slot, Some(Error::Cancelled)) {
                                *slot = Some(e);
                            }
                        }
                    }
                })
                .expect("spawning a worker thread");
        }
    });
    match first_error.into_inner().unwrap_or_else(|p| p.into_inner()) {
        Some(e) => Err(e),
        None if cancel.load(Ordering::Relaxed) => Err(Error::Cancelled),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_task_runs_once_and_slow_task_does_not_idle_others() {
        let done = Mutex::new(Vec::new());
        let by_worker = [AtomicUsize::new(0), AtomicUsize::new(0)];
        run_queue(
            &Queue::new((0..20).collect()),
            2,
            &AtomicBool::new(false),
            |w, t: u32| {
                if t == 0 {
                    std::thread::sleep(std::time::Duration::from_millis(200));
                }
                by_worker[w].fetch_add(1, Ordering::Relaxed);
                done.lock().unwrap().push(t);
                Ok(())
            },
        )
        .unwrap();
        let mut d = done.into_inner().unwrap();
        d.sort();
        assert_eq!(d, (0..20).collect::<Vec<_>>());
        // The worker stuck on task 0 did one task; the other did the rest.
        let counts: Vec<usize> = by_worker
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .collect();
        assert!(counts.contains(&19), "{counts:?}");
    }

    #[test]
    fn first_error_stops_the_pool() {
        let ran = AtomicUsize::new(0);
        let err = run_queue(
            &Queue::new((0..100).collect()),
            1,
            &AtomicBool::new(false),
            |_, t: u32| {
                ran.fetch_add(1, Ordering::Relaxed);
                if t == 3 {
                    Err(Error::Internal("boom".into()))
                } else {
                    Ok(())
                }
            },
        )
        .unwrap_err();
        assert!(err.to_string().contains("boom"));
        assert_eq!(ran.load(Ordering::Relaxed), 4);
    }

    #[test]
    fn tasks_added_by_a_running_task_run_on_idle_workers() {
        let queue = Queue::new(vec![0u32]);
        let done = Mutex::new(Vec::new());
        run_queue(&queue, 2, &AtomicBool::new(false), |w, t| {
            if t == 0 {
                // The other worker has found nothing yet and waits.
                std::thread::sleep(std::time::Duration::from_millis(50));
                queue.push(1);
                std::thread::sleep(std::time::Duration::from_millis(200));
            }
            done.lock().unwrap().push((t, w));
            Ok(())
        })
        .unwrap();
        let mut d = done.into_inner().unwrap();
        d.sort();
        assert_eq!(d.len(), 2);
        assert_ne!(
            d[0].1, d[1].1,
            "the added task ran on the idle worker: {d:?}"
        );
    }
}
