//! Name resolution for endpoints, kept in step with the state: after every change the
//! embedded resolvers (127.0.0.11 in each sandbox on a user network) get the new name table,
//! and the resolv.conf and hosts files of the sandboxes involved are rewritten.

use std::net::IpAddr;
use std::path::PathBuf;

use crate::cluster::records::Remotes;
use crate::dns::files::{hosts, link_hosts, resolv_conf, EndpointFiles, FilesError, ResolvConf};
use crate::dns::names::{is_user_network, NameTable, RemoteName, RemoteNames};
use crate::dns::server::{upstreams_from, DnsServer};
use crate::model::{Endpoint, Placement, Sandbox};
use crate::state::State;

/// The resolvers and the per-endpoint files.
pub struct Names {
    server: DnsServer,
    host: ResolvConf,
    state_dir: PathBuf,
    /// Endpoints of other hosts (overlay networks of a cluster), resolved like local ones.
    remote: RemoteNames,
}

impl Names {
    /// Resolvers forwarding to `host`'s nameservers; files under `state_dir`.
    pub fn new(state_dir: PathBuf, host: ResolvConf) -> Names {
        Names {
            server: DnsServer::new(upstreams_from(&host.nameservers)),
            host,
            state_dir,
            remote: RemoteNames::new(),
        }
    }

    /// Takes the other hosts' endpoints (from the cluster store); the next `sync` serves them.
    pub fn set_remotes(&mut self, remotes: &Remotes) {
        self.remote = remotes
            .iter()
            .map(|(net, eps)| {
                let names = eps
                    .iter()
                    .map(|e| RemoteName {
                        name: e.name.clone(),
                        aliases: e.aliases.clone(),
                        ip: e.ip,
                        ip6: e.ip6,
                    })
                    .collect();
                (net.clone(), names)
            })
            .collect();
    }

    /// Where an endpoint's files are.
    pub fn files(&self, endpoint_id: &str) -> EndpointFiles {
        EndpointFiles::under(&self.state_dir, endpoint_id)
    }

    /// The text of `e`'s resolv.conf and hosts in `state`; fails on a `--link` to an endpoint
    /// that is not there (checked before a connect is plumbed).
    pub fn texts(&self, state: &State, e: &Endpoint) -> Result<(String, String), FilesError> {
        let embedded = state.endpoints().any(|o| {
            o.spec.sandbox == e.spec.sandbox
                && state
                    .network(&o.network_id)
                    .is_ok_and(|n| is_user_network(&n.spec.name, n.spec.driver))
        });
        let on_user_net = state
            .network(&e.network_id)
            .is_ok_and(|n| is_user_network(&n.spec.name, n.spec.driver));
        let links = if on_user_net {
            Vec::new()
        } else {
            link_hosts(state, e)?
        };
        Ok((
            resolv_conf(&e.spec.names, &self.host, embedded)?,
            hosts(&e.spec.names, e.host_ip(), &e.spec.name, &links)?,
        ))
    }

    /// Brings resolvers and files in line with `state` for the sandboxes in `touched` (all
    /// sandboxes when `None`). Problems are logged: names are a convenience of a connected
    /// endpoint, never a reason to undo its connection.
    pub fn sync(&self, state: &State, touched: Option<&[&Sandbox]>) {
        let mut table = NameTable::with_remote(state, &self.remote);
        for e in state.endpoints() {
            if !e.spec.names.dns.is_empty() {
                let servers: Vec<IpAddr> =
                    e.spec.names.dns.iter().copied().map(IpAddr::V4).collect();
                table.set_upstreams(&e.spec.sandbox, upstreams_from(&servers));
            }
        }
        for (sandbox, err) in self.server.sync(table) {
            tracing::warn!("embedded resolver for {sandbox}: {err}");
        }
        for e in state.endpoints() {
            if touched.is_some_and(|t| !t.contains(&&e.spec.sandbox))
                || e.spec.placement != Placement::Sandbox
            {
                continue;
            }
            let written = self
                .texts(state, e)
                .and_then(|(r, h)| self.files(&e.id).write(&r, &h));
            if let Err(err) = written {
                tracing::warn!("files of endpoint {}: {err}", e.spec.name);
            }
        }
    }

    /// Removes a gone endpoint's files.
    pub fn forget(&self, endpoint_id: &str) {
        if let Err(err) = self.files(endpoint_id).remove() {
            tracing::warn!("files of endpoint {endpoint_id}: {err}");
        }
    }
}
