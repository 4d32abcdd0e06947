//! Name resolution for containers, as docker does it: an embedded resolver at 127.0.0.11
//! inside every sandbox attached to a user-defined network, answering the names and aliases of
//! the endpoints it shares a network with and forwarding everything else to the host's
//! resolvers; and the `resolv.conf` / `hosts` files a runtime bind-mounts (`--dns`,
//! `--add-host`, `--hostname`, and `--link` hosts entries on the default network).
//!
//! - [`wire`]: sans-IO DNS message parsing and reply building.
//! - [`names`]: the name table built from the state, and the per-query decision.
//! - [`server`]: the tokio resolvers, one socket pair per sandbox namespace.
//! - [`files`]: the container's resolv.conf and hosts files.

use std::net::Ipv4Addr;

pub mod files;
pub mod names;
pub mod server;
pub mod wire;

/// docker's embedded resolver address, the same in every sandbox (a loopback address, so it
/// needs no route and no firewall rule: the socket is bound inside the sandbox's namespace).
pub const RESOLVER_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 11);
