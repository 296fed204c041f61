//! The handshake by which a running reader agrees to stop early, for
//! connectors implementing [`crate::Splitter`].
//!
//! The runtime's lag monitor asks for a cut at a position; the reader
//! answers the next time it stands between two records (a relaxed atomic
//! load per record while nothing is asked). It accepts when it has not
//! passed the position, and from then on stops there. Both sides decide
//! under one lock, so a cut is either made before the reader gets there
//! or not at all.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::Duration;

/// How long the monitor waits for a busy reader to answer.
const ANSWER_WITHIN: Duration = Duration::from_secs(1);

#[derive(Debug, Default)]
struct CutState {
    asked: Option<u64>,
    answer: Option<bool>,
    finished: bool,
}

/// One reader's side of live splitting; see the module docs.
#[derive(Debug)]
pub struct LiveCut {
    asked: AtomicBool,
    position: AtomicU64,
    end: AtomicU64,
    state: Mutex<CutState>,
    answered: Condvar,
}

impl LiveCut {
    /// A reader that starts at `start` and ends at `end` (exclusive).
    pub fn new(start: u64, end: u64) -> Self {
        LiveCut {
            asked: AtomicBool::new(false),
            position: AtomicU64::new(start),
            end: AtomicU64::new(end),
            state: Mutex::new(CutState::default()),
            answered: Condvar::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, CutState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reader side: call between records with the position of the next
    /// one. Returns a new end when a cut was just accepted.
    #[inline]
    pub fn poll(&self, next: u64) -> Option<u64> {
        if !self.asked.load(Ordering::Acquire) {
            return None;
        }
        let mut st = self.lock();
        let at = st.asked.take()?;
        self.asked.store(false, Ordering::Release);
        let ok = next <= at && at < self.end.load(Ordering::Acquire);
        if ok {
            self.end.store(at, Ordering::Release);
        }
        st.answer = Some(ok);
        self.answered.notify_all();
        ok.then_some(at)
    }

    /// Reader side: roughly where reading has got to (published now and
    /// then, e.g. per batch, at a record boundary), for proposing cuts.
    pub fn publish(&self, position: u64) {
        self.position.store(position, Ordering::Relaxed);
    }

    /// Reader side: the partition is read to its end; later cuts fail.
    pub fn finish(&self) {
        let mut st = self.lock();
        st.finished = true;
        if st.asked.take().is_some() {
            self.asked.store(false, Ordering::Release);
            st.answer = Some(false);
            self.answered.notify_all();
        }
    }

    /// The last published position.
    pub fn position(&self) -> u64 {
        self.position.load(Ordering::Relaxed)
    }

    /// Where the reader will stop now.
    pub fn end(&self) -> u64 {
        self.end.load(Ordering::Acquire)
    }

    /// Monitor side: asks the reader to stop just before `at` and waits
    /// for its answer (at most a second, for a reader blocked on a slow
    /// sink; no answer is a refusal).
    pub fn request(&self, at: u64) -> bool {
        let mut st = self.lock();
        if st.finished || at >= self.end() {
            return false;
        }
        st.asked = Some(at);
        st.answer = None;
        self.asked.store(true, Ordering::Release);
        let (mut st, _) = self
            .answered
            .wait_timeout_while(st, ANSWER_WITHIN, |s| s.answer.is_none())
            .unwrap_or_else(|p| p.into_inner());
        match st.answer.take() {
            Some(ok) => ok,
            None => {
                // Withdrawn under the lock: the reader can no longer take it.
                st.asked = None;
                self.asked.store(false, Ordering::Release);
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn a_reader_accepts_a_cut_ahead_and_refuses_one_behind() {
        let cut = Arc::new(LiveCut::new(0, 1000));
        let reader = {
            let cut = cut.clone();
            std::thread::spawn(move || {
                // Records of 10 bytes; stops at the end in force.
                let mut pos = 0;
                let mut accepted = Vec::new();
                while pos < cut.end() {
                    if let Some(end) = cut.poll(pos) {
                        accepted.push(end);
                    }
                    pos += 10;
                    std::thread::sleep(Duration::from_micros(200));
                }
                cut.finish();
                (pos, accepted)
            })
        };
        std::thread::sleep(Duration::from_millis(2));
        assert!(cut.request(600), "a cut ahead of the reader is taken");
        assert!(!cut.request(700), "beyond the end in force");
        let (pos, accepted) = reader.join().unwrap();
        assert_eq!(pos, 600);
        assert_eq!(accepted, vec![600]);
        assert!(!cut.request(300), "a finished reader takes no cut");
    }

    #[test]
    fn a_cut_behind_the_reader_is_refused() {
        let cut = LiveCut::new(0, 1000);
        std::thread::scope(|s| {
            s.spawn(|| {
                while !cut.asked.load(Ordering::Acquire) {
                    std::thread::yield_now();
                }
                assert_eq!(cut.poll(500), None);
            });
            assert!(!cut.request(400));
        });
        assert_eq!(cut.end(), 1000);
    }
}
