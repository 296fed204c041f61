//! The library API end to end on `memory://`: a spec, the registry, the
//! runtime and the state store, with no files on disk but the state.

use object_store::{ObjectStoreExt, PutPayload};
use std::sync::Arc;
use tidex_connectors::files::location::Location;
use tidex_engine::runtime::{run_job, Progress, RunOptions};
use tidex_engine::state::StateStore;
use tidex_engine::{BuildContext, JobSpec};

#[test]
fn csv_in_memory_to_parquet_in_memory() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let input = Location::parse("memory://in/people.csv").unwrap();
    let mut csv = String::from("id,name\n");
    for i in 0..5000 {
        csv += &format!("{i},n{i}\n");
    }
    let (store, path) = (input.store.clone(), input.path.clone());
    rt.block_on(async move { store.put(&path, PutPayload::from(csv.into_bytes())).await })
        .unwrap();

    let spec = JobSpec::parse(
        "[job]\nname = \"mem\"\n[source]\ntype = \"csv\"\nurl = \"memory://in/people.csv\"\nsplit_size = \"8KB\"\n[sink]\ntype = \"parquet\"\nurl = \"memory://out/people.parquet\"\n[limits]\nbatch_rows = 1000\n",
    )
    .unwrap();
    let registry = tidex_connectors::registry();
    registry.validate(&spec).unwrap();
    let ctx = BuildContext {
        io: rt.handle().clone(),
        batch_rows: 1000,
        policy: spec.errors.policy,
        parallelism: 2,
        job: "mem".into(),
        source_state: Default::default(),
    };
    let source = registry.build_source(&spec, &ctx).unwrap();
    assert!(source.partitions().len() > 3, "split into byte ranges");
    let sink = registry.build_sink(&spec, &ctx).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let state = StateStore::open(dir.path().join("state.db")).unwrap();
    let summary = run_job(
        &spec,
        source,
        &[],
        sink,
        &state,
        &RunOptions::default(),
        &Arc::new(Progress::default()),
    )
    .unwrap();
    assert_eq!(summary.rows, 5000);
    assert_eq!(summary.output, "memory://out/people.parquet");

    let out = Location::parse("memory://out/people.parquet").unwrap();
    let (store, path) = (out.store.clone(), out.path.clone());
    let bytes = rt
        .block_on(async move { store.get(&path).await.unwrap().bytes().await })
        .unwrap();
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(bytes)
        .unwrap()
        .build()
        .unwrap();
    let rows: usize = reader.map(|b| b.unwrap().num_rows()).sum();
    assert_eq!(rows, 5000);
    // Staging was cleaned up: only the output remains under memory://out/.
    let listed = out
        .list_under(rt.handle(), &object_store::path::Path::from("out"))
        .unwrap();
    assert_eq!(listed.len(), 1, "{listed:?}");
}
