//! Example HTTP API that sluice loads data into, with seeded fault
//! injection.
//!
//! The server stores what it receives in SQLite:
//!
//! - `PUT /any/path` upserts a JSON body keyed by the request path exactly as
//!   received (still percent-encoded, without the query): 201 when the path
//!   is new, 200 when it existed. A body that is not valid JSON gets 400.
//! - `POST /collection` inserts a row with a generated id: 201 with
//!   `{"id": N}`. With an `Idempotency-Key` header (1 to 255 bytes of
//!   visible ASCII), the row is inserted once per key. A repeat with the same
//!   path and body inserts nothing and gets the stored response with
//!   `Idempotent-Replayed: true`. Reusing the key with another path or body
//!   gets 422, and a request sent while another with the same key is being
//!   served gets 409. Without the header every POST inserts a row. PUT, GET
//!   and DELETE ignore the header.
//! - `GET /path` returns a stored body (200) or 404; `DELETE /path` returns
//!   204 or 404.
//! - `GET /_stats` returns the [`Stats`] as JSON.
//! - Any other method gets 405.
//!
//! Before serving a request, the server may inject a fault from its
//! [`FaultPlan`]: 500, 503, 429 with `Retry-After`, a stall followed by 503,
//! a TCP reset without a response, or 503 for every request inside an outage
//! window. These faulted requests change nothing in the database. A lost
//! response is the exception: the server serves the request and commits its
//! write, then resets the connection instead of responding, so the client
//! sees a connection error for a write that happened. `/_stats` is never
//! faulted.
//!
//! [`start_proxy`] puts the same faults in front of any HTTP API, such as
//! this target or PocketBase. Its stalls and lost responses forward the
//! request first, so the upstream may commit writes whose responses the
//! client never gets.
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
mod idempotency;
mod path_template;
mod proxy;
mod routes;
mod server;
mod stats;
mod store;

pub use compare::{
    compare_csv, CompareOptions, Comparison, Difference, InvalidRow, RowRef, LISTED_PROBLEMS,
};
pub use db::{read_posts, read_resources, read_write_counts, PostedRow};
pub use faults::{Fault, FaultPlan, Outage, DEFAULT_RETRY_AFTER_SECS, DEFAULT_STALL_FOR};
pub use idempotency::{IDEMPOTENCY_KEY, IDEMPOTENT_REPLAYED, MAX_IDEMPOTENCY_KEY_BYTES};
pub use path_template::{encode_path_value, PathTemplate};
pub use proxy::{start_proxy, ProxyConfig, RunningProxy, PROXY_STATS_PATH};
pub use routes::{MAX_BODY_BYTES, STATS_PATH};
pub use server::{start, RunningTarget, TargetConfig, SHUTDOWN_GRACE};
pub use stats::{FaultCounts, Stats};
