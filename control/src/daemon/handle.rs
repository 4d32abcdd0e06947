//! The engine runs on a thread of its own (a current-thread tokio runtime: netlink calls are
//! async), which serialises every change; API handlers on the multithreaded runtime talk to it
//! through `EngineHandle`, a cloneable channel, and await the answer.

use std::net::IpAddr;
use std::sync::Arc;
use std::thread::JoinHandle;

use tokio::sync::{mpsc, oneshot};

use crate::api::{ConntrackView, EndpointView, FdbView, PruneReport, StatsView};
use crate::cluster::records::Remotes;
use crate::cluster::Cluster;
use crate::daemon::engine::{Engine, EngineError, Restored};
use crate::daemon::plumbing::Plumbing;
use crate::model::{Endpoint, EndpointSpec, Network, NetworkInspect, NetworkSpec};

type Reply<T> = oneshot::Sender<Result<T, EngineError>>;

/// One request to the engine.
enum Command {
    CreateNetwork(NetworkSpec, Reply<NetworkInspect>),
    RemoveNetwork(String, Reply<String>),
    Prune(Reply<PruneReport>),
    List(Reply<Vec<NetworkInspect>>),
    Inspect(String, Reply<NetworkInspect>),
    Connect(EndpointSpec, Reply<EndpointView>),
    Disconnect(String, String, Reply<()>),
    Endpoints(Reply<Vec<EndpointView>>),
    Stats(Reply<StatsView>),
    Conntrack(Reply<Vec<ConntrackView>>),
    Fdb(Reply<Vec<FdbView>>),
    SetRemotes(Remotes, Reply<()>),
    Overlays(Reply<Vec<(Network, Vec<Endpoint>)>>),
}

/// A cloneable way to the engine; the engine stops when the last handle is dropped. With a
/// cluster, changes to overlay networks go through the cluster store first.
#[derive(Clone, Debug)]
pub struct EngineHandle {
    local: LocalEngine,
    cluster: Option<Arc<Cluster>>,
}

/// The engine without the cluster: changes stay on this host. The cluster store's own
/// changes are applied through it.
#[derive(Clone, Debug)]
pub struct LocalEngine {
    tx: mpsc::Sender<Command>,
}

/// Starts the engine thread: `open` builds the engine there (restoring state and starting
/// forwarding). Returns once it is serving, or the error that stopped it.
pub fn spawn<P, F, Fut>(open: F) -> Result<(EngineHandle, Restored, JoinHandle<()>), EngineError>
where
    P: Plumbing + 'static,
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<(Engine<P>, Restored), EngineError>>,
{
    let (tx, mut rx) = mpsc::channel::<Command>(256);
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let thread = std::thread::Builder::new()
        .name("sluice-engine".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = ready_tx.send(Err(EngineError::Plumbing(
                        crate::daemon::plumbing::PlumbingError::EngineThread {
                            what: "engine runtime",
                            source: e,
                        },
                    )));
                    return;
                }
            };
            rt.block_on(async move {
                let mut engine = match open().await {
                    Ok((engine, restored)) => {
                        let _ = ready_tx.send(Ok(restored));
                        engine
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                while let Some(cmd) = rx.recv().await {
                    serve(&mut engine, cmd).await;
                }
                engine.shutdown();
            });
        })
        .map_err(|e| {
            EngineError::Plumbing(crate::daemon::plumbing::PlumbingError::EngineThread {
                what: "engine thread",
                source: e,
            })
        })?;
    match ready_rx.recv() {
        Ok(Ok(restored)) => Ok((
            EngineHandle {
                local: LocalEngine { tx },
                cluster: None,
            },
            restored,
            thread,
        )),
        Ok(Err(e)) => {
            let _ = thread.join();
            Err(e)
        }
        Err(_) => {
            let _ = thread.join();
            Err(EngineError::ShuttingDown)
        }
    }
}

async fn serve<P: Plumbing>(en: &mut Engine<P>, cmd: Command) {
    match cmd {
        Command::CreateNetwork(spec, r) => drop(r.send(en.create_network(spec).await)),
        Command::RemoveNetwork(key, r) => drop(r.send(en.remove_network(&key).await)),
        Command::Prune(r) => drop(r.send(en.prune().await)),
        Command::List(r) => drop(r.send(Ok(en.list()))),
        Command::Inspect(key, r) => drop(r.send(en.inspect(&key))),
        Command::Connect(spec, r) => drop(r.send(en.connect(spec).await)),
        Command::Disconnect(net, ep, r) => drop(r.send(en.disconnect(&net, &ep).await)),
        Command::Endpoints(r) => drop(r.send(Ok(en.endpoints()))),
        Command::Stats(r) => drop(r.send(Ok(en.stats()))),
        Command::Conntrack(r) => drop(r.send(Ok(en.conntrack()))),
        Command::Fdb(r) => drop(r.send(Ok(en.fdb()))),
        Command::SetRemotes(remotes, r) => drop(r.send(en.set_remotes(remotes))),
        Command::Overlays(r) => drop(r.send(Ok(en.overlays()))),
    }
}

impl LocalEngine {
    async fn call<T>(&self, make: impl FnOnce(Reply<T>) -> Command) -> Result<T, EngineError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(make(tx))
            .await
            .map_err(|_| EngineError::ShuttingDown)?;
        rx.await.map_err(|_| EngineError::ShuttingDown)?
    }

    /// `network create` on this host.
    pub async fn create_network(&self, spec: NetworkSpec) -> Result<NetworkInspect, EngineError> {
        self.call(|r| Command::CreateNetwork(spec, r)).await
    }

    /// `network rm` on this host; returns the removed network's name.
    pub async fn remove_network(&self, key: String) -> Result<String, EngineError> {
        self.call(|r| Command::RemoveNetwork(key, r)).await
    }

    /// `network prune` on this host.
    pub async fn prune(&self) -> Result<PruneReport, EngineError> {
        self.call(Command::Prune).await
    }

    /// `network ls`.
    pub async fn list(&self) -> Result<Vec<NetworkInspect>, EngineError> {
        self.call(Command::List).await
    }

    /// `network inspect`.
    pub async fn inspect(&self, key: String) -> Result<NetworkInspect, EngineError> {
        self.call(|r| Command::Inspect(key, r)).await
    }

    /// `network connect` on this host.
    pub async fn connect(&self, spec: EndpointSpec) -> Result<EndpointView, EngineError> {
        self.call(|r| Command::Connect(spec, r)).await
    }

    /// `network disconnect` on this host.
    pub async fn disconnect(&self, network: String, endpoint: String) -> Result<(), EngineError> {
        self.call(|r| Command::Disconnect(network, endpoint, r))
            .await
    }

    /// Replaces the overlay endpoints of other hosts.
    pub async fn set_remotes(&self, remotes: Remotes) -> Result<(), EngineError> {
        self.call(|r| Command::SetRemotes(remotes, r)).await
    }

    /// The overlay networks and their endpoints on this host.
    pub async fn overlays(&self) -> Result<Vec<(Network, Vec<Endpoint>)>, EngineError> {
        self.call(Command::Overlays).await
    }
}

impl EngineHandle {
    /// This handle with overlay changes made cluster-wide through `cluster`.
    pub fn with_cluster(self, cluster: Arc<Cluster>) -> EngineHandle {
        EngineHandle {
            cluster: Some(cluster),
            ..self
        }
    }

    /// Whether overlay networks span hosts (sluiced has a cluster store).
    pub fn clustered(&self) -> bool {
        self.cluster.is_some()
    }

    /// The addresses (both families) reserved across the cluster in overlay network `name`;
    /// none without a cluster store.
    pub async fn reserved_in_cluster(&self, name: &str) -> Result<Vec<IpAddr>, EngineError> {
        match &self.cluster {
            Some(c) => Ok(c.reserved(name).await?),
            None => Ok(Vec::new()),
        }
    }

    /// Records in the cluster store that `user` (a docker network of this host) uses overlay
    /// network `name`; nothing without a cluster store.
    pub async fn use_overlay(&self, name: &str, user: &str) -> Result<(), EngineError> {
        match &self.cluster {
            Some(c) => Ok(c.add_user(name, user).await?),
            None => Ok(()),
        }
    }

    /// Drops the record of [`EngineHandle::use_overlay`]; how many users the overlay has left
    /// across the cluster (none without a cluster store).
    pub async fn leave_overlay(&self, name: &str, user: &str) -> Result<usize, EngineError> {
        match &self.cluster {
            Some(c) => Ok(c.drop_user(name, user).await?),
            None => Ok(0),
        }
    }

    /// The engine without the cluster.
    pub fn local(&self) -> LocalEngine {
        self.local.clone()
    }

    /// `network create`.
    pub async fn create_network(&self, spec: NetworkSpec) -> Result<NetworkInspect, EngineError> {
        match &self.cluster {
            Some(c) => c.create_network(&self.local, spec).await,
            None => self.local.create_network(spec).await,
        }
    }

    /// `network rm`; returns the removed network's name.
    pub async fn remove_network(&self, key: String) -> Result<String, EngineError> {
        match &self.cluster {
            Some(c) => c.remove_network(&self.local, key).await,
            None => self.local.remove_network(key).await,
        }
    }

    /// `network prune`.
    pub async fn prune(&self) -> Result<PruneReport, EngineError> {
        match &self.cluster {
            Some(c) => c.prune(&self.local).await,
            None => self.local.prune().await,
        }
    }

    /// `network ls`.
    pub async fn list(&self) -> Result<Vec<NetworkInspect>, EngineError> {
        self.local.list().await
    }

    /// `network inspect`.
    pub async fn inspect(&self, key: String) -> Result<NetworkInspect, EngineError> {
        match &self.cluster {
            Some(c) => c.inspect(&self.local, key).await,
            None => self.local.inspect(key).await,
        }
    }

    /// `network connect`.
    pub async fn connect(&self, spec: EndpointSpec) -> Result<EndpointView, EngineError> {
        match &self.cluster {
            Some(c) => c.connect(&self.local, spec).await,
            None => self.local.connect(spec).await,
        }
    }

    /// `network disconnect`.
    pub async fn disconnect(&self, network: String, endpoint: String) -> Result<(), EngineError> {
        match &self.cluster {
            Some(c) => c.disconnect(&self.local, network, endpoint).await,
            None => self.local.disconnect(network, endpoint).await,
        }
    }

    /// `ps`.
    pub async fn endpoints(&self) -> Result<Vec<EndpointView>, EngineError> {
        self.local.call(Command::Endpoints).await
    }

    /// `stats`.
    pub async fn stats(&self) -> Result<StatsView, EngineError> {
        self.local.call(Command::Stats).await
    }

    /// `conntrack ls`.
    pub async fn conntrack(&self) -> Result<Vec<ConntrackView>, EngineError> {
        self.local.call(Command::Conntrack).await
    }

    /// `fdb ls`.
    pub async fn fdb(&self) -> Result<Vec<FdbView>, EngineError> {
        self.local.call(Command::Fdb).await
    }
}

/// An engine thread over the fake plumbing with its state in `db`, for the plugins' tests.
#[cfg(test)]
pub(crate) fn spawn_fake(db: std::path::PathBuf) -> EngineHandle {
    let (engine, _, _) = spawn(move || async move {
        Engine::open(
            crate::store::Store::open(&db).expect("a fresh state file"),
            crate::daemon::plumbing::fake::Fake::default(),
            None,
            sluice_dataplane::config::NatConfig::default(),
            None,
        )
        .await
    })
    .expect("the engine starts");
    engine
}
