//! sluice's daemon as a library: what `sluiced` runs (engine, state, store, DNS, plumbing, the
//! docker plugin) and what the end-to-end tests drive directly. The API types and client live
//! in `sluice-api` and the netlink layer in `sluice-netlink`; both are re-exported here under
//! their old paths.
#![deny(missing_docs)]
// No unsafe code: the few libc calls go through `sluice-sys`.
#![forbid(unsafe_code)]

pub mod cluster;
pub mod compile;
pub mod daemon;
pub mod dns;
pub mod driver;
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzz;
pub mod ipam;
pub mod ipam6;
pub mod plugins;
pub mod state;
pub mod store;

pub use sluice_api::{api, client, clock, model, naming, publish, validate};
pub use sluice_netlink as netlink;
