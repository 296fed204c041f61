//! Workers for real runs: the pool `tidex serve` shares between all the
//! runs it executes. Every run registers here; each of its worker threads
//! asks for a grant before it starts a partition and gives it back when
//! the partition is committed (or abandoned), so workers change hands only
//! at partition boundaries, never mid-commit. Which waiting run gets a
//! freed worker is decided by [`super::rebalance::choose`], the same code
//! the simulator runs.

use super::clock::Clock;
use super::rebalance::{choose, RunView, Strategy};
use crate::spec::Priority;
use chrono::{DateTime, Utc};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

/// What the pool knows about a run when it registers.
#[derive(Debug, Clone)]
pub struct RunMeta {
    /// Job name.
    pub job: String,
    /// Priority.
    pub priority: Priority,
    /// End of its window, if any.
    pub deadline: Option<DateTime<Utc>>,
    /// Workers the plan allotted.
    pub allot: usize,
    /// Most workers at once (its `parallelism`).
    pub max_workers: usize,
    /// Predicted seconds per partition.
    pub part_secs: f64,
}

#[derive(Debug)]
struct Entry {
    meta: RunMeta,
    arrival: DateTime<Utc>,
    waiting: usize,
    running: usize,
    pending: usize,
}

#[derive(Debug, Default)]
struct State {
    busy: usize,
    next_key: u64,
    runs: BTreeMap<u64, Entry>,
}

/// A snapshot for metrics.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct PoolStats {
    /// Workers in the pool.
    pub workers: usize,
    /// Workers processing a partition.
    pub busy: usize,
    /// Partitions of registered runs not started yet.
    pub queued_partitions: usize,
    /// Registered runs.
    pub runs: usize,
}

/// The shared pool of workers.
pub struct Pool {
    workers: usize,
    strategy: Strategy,
    clock: Arc<dyn Clock>,
    state: Mutex<State>,
    freed: Condvar,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("workers", &self.workers)
            .field("strategy", &self.strategy)
            .finish_non_exhaustive()
    }
}

/// A run's membership of the pool; dropping it leaves the pool.
#[derive(Debug)]
pub struct Ticket {
    pool: Arc<Pool>,
    key: u64,
}

/// A granted worker; dropping it gives the worker back.
#[derive(Debug)]
pub struct Grant {
    pool: Arc<Pool>,
    key: u64,
}

impl Pool {
    /// How free workers are handed out.
    pub fn strategy(&self) -> Strategy {
        self.strategy
    }

    /// A pool of `workers` handed out by `strategy`.
    pub fn new(workers: usize, strategy: Strategy, clock: Arc<dyn Clock>) -> Arc<Pool> {
        Arc::new(Pool {
            workers: workers.max(1),
            strategy,
            clock,
            state: Mutex::new(State::default()),
            freed: Condvar::new(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a run.
    pub fn register(self: &Arc<Self>, meta: RunMeta) -> Ticket {
        let now = self.clock.now();
        let mut st = self.lock();
        st.next_key += 1;
        let key = st.next_key;
        st.runs.insert(
            key,
            Entry {
                meta,
                arrival: now,
                waiting: 0,
                running: 0,
                pending: 0,
            },
        );
        Ticket {
            pool: self.clone(),
            key,
        }
    }

    /// Current numbers, for metrics.
    pub fn stats(&self) -> PoolStats {
        let st = self.lock();
        PoolStats {
            workers: self.workers,
            busy: st.busy,
            queued_partitions: st.runs.values().map(|e| e.pending).sum(),
            runs: st.runs.len(),
        }
    }
}

impl Ticket {
    /// Tells the pool how many partitions the run has left to start.
    pub fn set_pending(&self, n: usize) {
        let mut st = self.pool.lock();
        if let Some(e) = st.runs.get_mut(&self.key) {
            e.pending = n;
        }
    }

    /// Waits until the rebalancer gives this run a free worker; `None` when
    /// `cancel` is set first.
    pub fn acquire(&self, cancel: &AtomicBool) -> Option<Grant> {
        let pool = &self.pool;
        let mut st = pool.lock();
        st.runs.get_mut(&self.key)?.waiting += 1;
        loop {
            if cancel.load(Ordering::Relaxed) {
                if let Some(e) = st.runs.get_mut(&self.key) {
                    e.waiting -= 1;
                }
                pool.freed.notify_all();
                return None;
            }
            if st.busy < pool.workers {
                let now = pool.clock.now();
                let keys: Vec<u64> = st.runs.keys().copied().collect();
                let views: Vec<RunView> = st
                    .runs
                    .iter()
                    .map(|(k, e)| RunView {
                        key: *k,
                        priority: e.meta.priority,
                        arrival: e.arrival,
                        deadline: e.meta.deadline,
                        allot: e.meta.allot,
                        max_workers: e.meta.max_workers,
                        queued: e.waiting,
                        running: e.running,
                        remaining_secs: (e.pending + e.running) as f64 * e.meta.part_secs,
                    })
                    .collect();
                if choose(pool.strategy, &views, now).map(|i| keys[i]) == Some(self.key) {
                    st.busy += 1;
                    let e = st.runs.get_mut(&self.key)?;
                    e.waiting -= 1;
                    e.running += 1;
                    e.pending = e.pending.saturating_sub(1);
                    return Some(Grant {
                        pool: pool.clone(),
                        key: self.key,
                    });
                }
            }
            st = pool
                .freed
                .wait_timeout(st, Duration::from_millis(200))
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }
}

impl crate::runtime::PartitionGate for Ticket {
    fn acquire(&self, cancel: &AtomicBool) -> Option<Box<dyn std::any::Any + Send>> {
        Ticket::acquire(self, cancel).map(|g| Box::new(g) as Box<dyn std::any::Any + Send>)
    }
    fn pending(&self, n: usize) {
        self.set_pending(n)
    }
    fn added(&self, n: usize) {
        let mut st = self.pool.lock();
        if let Some(e) = st.runs.get_mut(&self.key) {
            e.pending += n;
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.pool.lock().runs.remove(&self.key);
        self.pool.freed.notify_all();
    }
}

impl Drop for Grant {
    fn drop(&mut self) {
        let mut st = self.pool.lock();
        st.busy = st.busy.saturating_sub(1);
        if let Some(e) = st.runs.get_mut(&self.key) {
            e.running = e.running.saturating_sub(1);
        }
        drop(st);
        self.pool.freed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::clock::RealClock;

    fn meta(job: &str, priority: Priority) -> RunMeta {
        RunMeta {
            job: job.into(),
            priority,
            deadline: None,
            allot: 2,
            max_workers: 2,
            part_secs: 1.0,
        }
    }

    #[test]
    fn a_freed_worker_goes_to_the_urgent_run_waiting_for_it() {
        let pool = Pool::new(1, Strategy::Combined, Arc::new(RealClock));
        let bulk = pool.register(meta("bulk", Priority::Bulk));
        bulk.set_pending(10);
        let cancel = AtomicBool::new(false);
        let held = bulk.acquire(&cancel).unwrap();
        let urgent = pool.register(meta("urgent", Priority::Urgent));
        urgent.set_pending(1);
        let order = Mutex::new(Vec::new());
        std::thread::scope(|s| {
            // Both wait for the one worker; the bulk waiter came first.
            s.spawn(|| {
                let g = bulk.acquire(&cancel).unwrap();
                order.lock().unwrap().push("bulk");
                drop(g);
            });
            while pool.lock().runs.values().map(|e| e.waiting).sum::<usize>() < 1 {
                std::thread::yield_now();
            }
            s.spawn(|| {
                let g = urgent.acquire(&cancel).unwrap();
                order.lock().unwrap().push("urgent");
                drop(g);
            });
            while pool.lock().runs.values().map(|e| e.waiting).sum::<usize>() < 2 {
                std::thread::yield_now();
            }
            // The bulk partition reaches its boundary.
            drop(held);
        });
        assert_eq!(*order.lock().unwrap(), ["urgent", "bulk"]);
        assert_eq!(pool.stats().busy, 0);
    }

    #[test]
    fn cancel_releases_a_waiter() {
        let pool = Pool::new(1, Strategy::Dynamic, Arc::new(RealClock));
        let a = pool.register(meta("a", Priority::Normal));
        let cancel = AtomicBool::new(false);
        let _held = a.acquire(&cancel).unwrap();
        cancel.store(true, Ordering::Relaxed);
        assert!(a.acquire(&cancel).is_none());
    }
}
