//! The L2 learning bridge: one bridge domain per network, forwarding frames by destination MAC
//! and VLAN.
//!
//! [`fdb`] holds the forwarding database the workers of a network share. A worker uses it once
//! per batch:
//!
//! ```
//! use sluice_dataplane::bridge::{Fdb, FdbParams, Learn, SourceCheck};
//! use sluice_dataplane::frame::PortId;
//! use sluice_dataplane::time::Millis;
//! use sluice_dataplane::wire::MacAddr;
//!
//! let fdb = Fdb::new(FdbParams::default());
//! let now = Millis(1_000); // read once per batch
//! let batch = [(PortId(1), MacAddr([2, 0, 0, 0, 0, 1]), MacAddr([2, 0, 0, 0, 0, 2]))];
//! let mut pending = Vec::new(); // a preallocated buffer in the worker
//! {
//!     let fdb = fdb.read(); // the batch's only read lock
//!     for (ingress, src, dst) in batch {
//!         match fdb.check_source(0, src, ingress, now) {
//!             SourceCheck::Known => {}
//!             SourceCheck::Learn => pending.push(Learn { vlan: 0, mac: src, port: ingress }),
//!             SourceCheck::Full | SourceCheck::StaticElsewhere | SourceCheck::Group => continue,
//!         }
//!         let _out = fdb.lookup(0, dst); // None: flood
//!     }
//! } // the read guard must be gone before `learn` takes the write lock
//! let summary = fdb.learn(&pending, now);
//! assert_eq!(summary.inserted, 1);
//! ```

pub mod fdb;
mod mactable;

pub use fdb::{Fdb, FdbEntry, FdbParams, FdbReader, Learn, LearnSummary, SourceCheck};
