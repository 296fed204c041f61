//! Splitting lagging partitions of real runs. Before a run starts, the
//! partitions that lagged far behind their siblings in the job's last run
//! ([`super::rebalance::laggards_in`], the rule the simulator applies while
//! partitions run) are remembered by label in the state store, and every
//! run that plans a partition with a remembered label asks its source to
//! split it ([`crate::Source::split`]: key ranges halve, byte ranges cut at
//! a record boundary). A resumed run keeps the plan it started with.

use super::rebalance::laggards_in;
use crate::connector::Source;
use crate::error::Result;
use crate::state::StateStore;
use std::collections::BTreeSet;
use std::sync::Arc;

/// The source to run `job` with: `source` with its remembered laggards
/// split. Returns it and the labels of the partitions that were split.
pub fn split_laggards(
    state: &StateStore,
    job: &str,
    mut source: Arc<dyn Source>,
) -> Result<(Arc<dyn Source>, Vec<String>)> {
    let mut hints: BTreeSet<String> = state.split_hints(job)?.into_iter().collect();
    // The last run learns only when it planned the same partitions.
    if let Some(last) = state.part_history(job, 1)?.first() {
        if last.len() == source.partitions().len() && last.iter().all(|p| p.secs > 0.0) {
            let secs: Vec<f64> = last.iter().map(|p| p.secs).collect();
            for i in laggards_in(&secs) {
                let label = source.partitions()[i].label.clone();
                tracing::info!(job, partition = %label, secs = secs[i], "partition lagged its siblings; it is split from now on");
                state.add_split_hint(job, &label)?;
                hints.insert(label);
            }
        }
    }
    // From the end, so the indices still to split stay where they are.
    let targets: Vec<usize> = source
        .partitions()
        .iter()
        .filter(|p| hints.contains(&p.label))
        .map(|p| p.index)
        .rev()
        .collect();
    let mut split = Vec::new();
    for i in targets {
        let label = source.partitions()[i].label.clone();
        if let Some(s) = source.split(i) {
            source = s;
            split.push(label);
        }
    }
    Ok((source, split))
}

/// `source` split until it has at least `target` partitions (the count
/// the planner chose), halving each partition in turn, as far as the
/// source can split. A source that cannot split is returned as it is.
pub fn split_to(mut source: Arc<dyn Source>, target: usize) -> Arc<dyn Source> {
    let target = target.min(super::planner::MAX_PARTITIONS);
    loop {
        let before = source.partitions().len();
        if before >= target {
            return source;
        }
        // One pass halves every partition once, from the end so the
        // indices still to split stay where they are.
        for i in (0..before).rev() {
            if source.partitions().len() >= target {
                break;
            }
            if let Some(s) = source.split(i) {
                source = s;
            }
        }
        if source.partitions().len() == before {
            return source;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connector::{CommittedPart, PartitionInfo, SourceReader};
    use crate::state::{NewRun, RunStatus, Totals};
    use arrow::datatypes::{Schema, SchemaRef};

    /// Integer key ranges, inclusive.
    struct Ranges(Vec<(i64, i64)>, Vec<PartitionInfo>);

    impl Ranges {
        fn source(r: Vec<(i64, i64)>) -> Arc<dyn Source> {
            let infos = r
                .iter()
                .enumerate()
                .map(|(index, (lo, hi))| PartitionInfo {
                    index,
                    label: format!("t[{lo}..={hi}]"),
                    bytes: 0,
                })
                .collect();
            Arc::new(Ranges(r, infos))
        }
    }

    impl Source for Ranges {
        fn schema(&self) -> SchemaRef {
            Arc::new(Schema::empty())
        }
        fn partitions(&self) -> &[PartitionInfo] {
            &self.1
        }
        fn open(&self, _: usize) -> Result<Box<dyn SourceReader>> {
            Err(crate::Error::Internal("not read in this test".into()))
        }
        fn describe(&self) -> String {
            "ranges".into()
        }
        fn split(&self, i: usize) -> Option<Arc<dyn Source>> {
            let (lo, hi) = *self.0.get(i)?;
            if hi <= lo {
                return None;
            }
            let mid = lo + (hi - lo) / 2;
            let mut r = self.0.clone();
            r.splice(i..=i, [(lo, mid), (mid + 1, hi)]);
            Some(Ranges::source(r))
        }
    }

    fn finished_run(st: &StateStore, secs: &[f64]) {
        let b = st
            .begin(
                &NewRun {
                    job: "j",
                    spec_hash: "s",
                    plan_hash: "p",
                    owner: None,
                    purpose: None,
                    partitions: secs.len(),
                    source_state: None,
                },
                false,
            )
            .unwrap();
        for (i, s) in secs.iter().enumerate() {
            let part = CommittedPart {
                index: i,
                location: format!("p{i}"),
                rows: 1,
                bytes: 1,
            };
            st.commit_part(b.run.run_id, &part, 1, 0).unwrap();
            st.set_part_secs(b.run.run_id, i, *s).unwrap();
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

    #[test]
    fn split_to_reaches_the_planned_count_as_far_as_the_source_can() {
        let s = split_to(Ranges::source(vec![(1, 100), (101, 200)]), 7);
        let labels: Vec<&str> = s.partitions().iter().map(|p| p.label.as_str()).collect();
        assert_eq!(labels.len(), 7, "{labels:?}");
        assert_eq!(labels[0], "t[1..=50]");
        assert_eq!(labels[6], "t[176..=200]");
        // Three keys split into three partitions at most.
        assert_eq!(
            split_to(Ranges::source(vec![(1, 3)]), 10)
                .partitions()
                .len(),
            3
        );
        assert_eq!(
            split_to(Ranges::source(vec![(1, 3)]), 1).partitions().len(),
            1
        );
    }

    #[test]
    fn a_partition_that_lagged_is_split_in_every_later_run() {
        let dir = tempfile::tempdir().unwrap();
        let st = StateStore::open(dir.path().join("s.db")).unwrap();
        let fresh = || Ranges::source(vec![(1, 100), (101, 200), (201, 300), (301, 400)]);
        // No history: nothing to split.
        let (s, split) = split_laggards(&st, "j", fresh()).unwrap();
        assert!(split.is_empty());
        assert_eq!(s.partitions().len(), 4);
        // The third partition took ten times as long as the others.
        finished_run(&st, &[40.0, 45.0, 420.0, 41.0]);
        let (s, split) = split_laggards(&st, "j", fresh()).unwrap();
        assert_eq!(split, ["t[201..=300]"]);
        let labels: Vec<&str> = s.partitions().iter().map(|p| p.label.as_str()).collect();
        assert_eq!(
            labels,
            [
                "t[1..=100]",
                "t[101..=200]",
                "t[201..=250]",
                "t[251..=300]",
                "t[301..=400]"
            ]
        );
        // That run had five partitions, which no longer match the fresh
        // plan's four: the remembered label still splits it.
        finished_run(&st, &[40.0, 45.0, 200.0, 210.0, 41.0]);
        let (s, split) = split_laggards(&st, "j", fresh()).unwrap();
        assert_eq!(split, ["t[201..=300]"]);
        assert_eq!(s.partitions().len(), 5);
        // Even partitions are left alone.
        let dir = tempfile::tempdir().unwrap();
        let st = StateStore::open(dir.path().join("s.db")).unwrap();
        finished_run(&st, &[40.0, 45.0, 50.0, 41.0]);
        assert!(split_laggards(&st, "j", fresh()).unwrap().1.is_empty());
    }
}
