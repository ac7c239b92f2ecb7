//! Example HTTP API that sluice loads data into, with seeded fault
//! injection.
//!
//! The server stores what it receives in SQLite:
//!
//! - `PUT /any/path` upserts a JSON body keyed by the request path exactly as
//!   received (still percent-encoded, without the query): 201 when the path
//!   is new, 200 when it existed. A body that is not valid JSON gets 400.
//! - `POST /collection` inserts a row with a generated id: 201 with
//!   `{"id": N}`.
//! - `GET /path` returns a stored body (200) or 404; `DELETE /path` returns
//!   204 or 404.
//! - `GET /_stats` returns the [`Stats`] as JSON.
//! - Any other method gets 405.
//!
//! Before serving a request, the server may inject a fault from its
//! [`FaultPlan`]: 500, 503, 429 with `Retry-After`, a stall followed by 503,
//! a TCP reset without a response, or 503 for every request inside an outage
//! window. A faulted request changes nothing in the database. `/_stats` is
//! never faulted.
//!
//! [`compare_csv`] checks a database against the CSV file loaded into it, and
//! [`read_resources`], [`read_write_counts`] and [`read_posts`] let tests
//! inspect a database while the server runs or after it stops.
//!
//! ```no_run
//! # async fn example() -> anyhow::Result<()> {
//! use sluice_target::{start, FaultPlan, TargetConfig};
//!
//! let mut config = TargetConfig::new("/tmp/target.db");
//! config.faults = FaultPlan { seed: 7, rate_503: 0.2, ..FaultPlan::default() };
//! let target = start(config).await?;
//! println!("listening on {}", target.url());
//! target.shutdown().await;
//! # Ok(())
//! # }
//! ```

mod compare;
mod db;
mod faults;
mod path_template;
mod routes;
mod server;
mod stats;
mod store;

pub use compare::{
    compare_csv, CompareOptions, Comparison, Difference, InvalidRow, RowRef, LISTED_PROBLEMS,
};
pub use db::{read_posts, read_resources, read_write_counts, PostedRow};
pub use faults::{Fault, FaultPlan, Outage, DEFAULT_RETRY_AFTER_SECS, DEFAULT_STALL_FOR};
pub use path_template::{encode_path_value, PathTemplate};
pub use routes::{MAX_BODY_BYTES, STATS_PATH};
pub use server::{start, RunningTarget, TargetConfig, SHUTDOWN_GRACE};
pub use stats::{FaultCounts, Stats};
