//! docker's libnetwork remote network driver and remote IPAM driver, served by sluiced on a
//! Unix socket of its own (`/run/docker/plugins/sluice.sock`: the file name is the driver name
//! docker knows it by). `docker network create -d sluice --ipam-driver sluice` then gives
//! containers an interface on sluice's userspace bridge.
//!
//! - [`protocol`]: the JSON bodies of every call, as dockerd 20.10 sends them.
//! - [`ipam`]: the `sluice` IPAM driver's pools and addresses, persisted in a JSON file.
//! - [`driver`]: what each call does to sluice's engine.
//! - [`server`]: the HTTP routes.

pub mod driver;
pub mod ipam;
pub mod protocol;
pub mod server;

/// Where dockerd looks for a plugin socket named `sluice` (`-d sluice`).
pub const DEFAULT_PLUGIN_SOCKET: &str = "/run/docker/plugins/sluice.sock";
