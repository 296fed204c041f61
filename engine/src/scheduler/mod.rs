//! The scheduler: static plans for tides, dynamic rebalancing for surges,
//! one pool of workers.
//!
//! ```text
//!  [schedule] cron/window ─► cron.rs: fire times, deadlines, catch-up
//!  state store history    ─► planner.rs: partitions + workers per run, predicted start/finish
//!  runs waiting for work  ─► rebalance.rs: which run a free worker serves; which partition lags
//!  arrivals per hour      ─► surge.rs: EWMA forecast, surge when above it by k sigmas
//!  fair.rs: global + per-job rate limits shared fairly between running jobs
//!  sim.rs: the event-driven engine on a virtual clock (tidex simulate, plan predictions)
//!  grant.rs: the same decisions handing real workers to real runs (tidex serve)
//!  split.rs: partitions that lagged in a job's last run are split before its next
//! ```
//!
//! Everything that depends on time takes it from a [`clock::Clock`], so
//! tests and simulations run on a virtual clock, deterministically.

pub mod clock;
pub mod cron;
pub mod fair;
pub mod grant;
pub mod planner;
pub mod rebalance;
pub mod sim;
pub mod split;
pub mod surge;

pub use rebalance::Strategy;
