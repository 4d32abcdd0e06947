//! The daemon's persistent state: networks and endpoints as JSON records in a redb database.
//! Every mutation validates against the in-memory state first, then writes its records in one
//! write transaction that is committed (durably) before the call returns; a refused request
//! writes nothing and a crash leaves either the whole change or none of it.

use std::path::Path;

use redb::{Database, ReadableTable, TableDefinition, WriteTransaction};
use serde::de::DeserializeOwned;
use serde::Serialize;
use sluice_dataplane::config::Ipv4Cidr;

use crate::model::{Endpoint, EndpointSpec, Network, NetworkSpec, Stamp};
use crate::state::{State, StateError};

const NETWORKS: TableDefinition<&str, &str> = TableDefinition::new("networks");
const ENDPOINTS: TableDefinition<&str, &str> = TableDefinition::new("endpoints");

/// Why the store refused or failed a request.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The request breaks a rule; nothing was written.
    #[error(transparent)]
    State(#[from] StateError),
    /// The database failed (open, transaction, I/O); boxed, redb's error is large.
    #[error("state database: {0}")]
    Db(Box<redb::Error>),
    /// A stored record cannot be read back; the database was written by something else.
    #[error("state database: bad {what} record {key}: {detail}")]
    Corrupt {
        /// `network` or `endpoint`.
        what: &'static str,
        /// The record's key.
        key: String,
        /// What is wrong with it.
        detail: String,
    },
    /// A record could not be encoded.
    #[error("state database: cannot encode record: {0}")]
    Encode(String),
}

fn db(e: impl Into<redb::Error>) -> StoreError {
    StoreError::Db(Box::new(e.into()))
}

fn put<T: Serialize>(
    txn: &WriteTransaction,
    table: TableDefinition<&str, &str>,
    key: &str,
    value: &T,
) -> Result<(), StoreError> {
    let json = serde_json::to_string(value).map_err(|e| StoreError::Encode(e.to_string()))?;
    let mut t = txn.open_table(table).map_err(db)?;
    t.insert(key, json.as_str()).map_err(db)?;
    Ok(())
}

fn delete(
    txn: &WriteTransaction,
    table: TableDefinition<&str, &str>,
    key: &str,
) -> Result<(), StoreError> {
    let mut t = txn.open_table(table).map_err(db)?;
    t.remove(key).map_err(db)?;
    Ok(())
}

fn load<T: DeserializeOwned>(
    db_: &Database,
    table: TableDefinition<&str, &str>,
    what: &'static str,
) -> Result<Vec<T>, StoreError> {
    let txn = db_.begin_read().map_err(db)?;
    let t = txn.open_table(table).map_err(db)?;
    let mut out = Vec::new();
    for item in t.iter().map_err(db)? {
        let (k, v) = item.map_err(db)?;
        out.push(
            serde_json::from_str(v.value()).map_err(|e| StoreError::Corrupt {
                what,
                key: k.value().to_string(),
                detail: e.to_string(),
            })?,
        );
    }
    Ok(out)
}

/// Opens (creating) a file only root reads and writes (0600, also when it existed with wider
/// permissions): the database and the docker plugin's pools hold names, namespace paths and
/// labels that are nobody else's business.
pub fn private_file(path: &Path, truncate: bool) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(truncate)
        .mode(0o600)
        .open(path)?;
    f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    Ok(f)
}

/// Creates the daemon's state directory, or narrows an existing one, to 0711: only root
/// lists or changes it; the per-endpoint files under it stay reachable for bind mounts
/// (see `EndpointFiles::write`).
pub fn prepare_state_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o711)
        .create(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o711))
}

/// The state plus the database it is kept in.
pub struct Store {
    db: Database,
    state: State,
}

impl Store {
    /// Opens (or creates) the database at `path` and loads the state; a new database (one
    /// without tables) starts with docker's predefined networks, written in one transaction.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        private_file(path, false).map_err(|e| db(redb::StorageError::Io(e)))?;
        let database = Database::create(path).map_err(db)?;
        let mut store = Store {
            db: database,
            state: State::new(),
        };
        let fresh = store
            .db
            .begin_read()
            .map_err(db)?
            .list_tables()
            .map_err(db)?
            .next()
            .is_none();
        store.state = if fresh {
            let defaults = State::with_defaults(Stamp::fresh);
            store.commit_txn(|txn| {
                txn.open_table(ENDPOINTS).map_err(db)?;
                for n in defaults.networks() {
                    put(txn, NETWORKS, &n.id, n)?;
                }
                Ok(())
            })?;
            defaults
        } else {
            let networks: Vec<Network> = load(&store.db, NETWORKS, "network")?;
            let endpoints: Vec<Endpoint> = load(&store.db, ENDPOINTS, "endpoint")?;
            State::from_parts(networks, endpoints)?
        };
        Ok(store)
    }

    /// Tells the rules which addresses sluice owns outside the networks (its uplink).
    pub fn set_own_addresses(&mut self, own: Vec<(String, Ipv4Cidr)>) {
        self.state.set_own_addresses(own);
    }

    /// The current state (what the daemon answers queries from).
    pub fn state(&self) -> &State {
        &self.state
    }

    /// Sets the range the daemon picks host ports from (`--host-port-range`); not stored, the
    /// picked ports are, with their endpoints.
    pub fn set_host_ports(&mut self, range: sluice_dataplane::config::PortRange) {
        self.state.set_host_ports(range);
    }

    /// Runs `f` in one write transaction and commits it; an error from `f` aborts it.
    fn commit_txn(
        &self,
        f: impl FnOnce(&WriteTransaction) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let txn = self.db.begin_write().map_err(db)?;
        f(&txn)?;
        txn.commit().map_err(db)
    }

    /// Validates `op` against a copy of the state; nothing is written until `commit`.
    fn prepare<T>(
        &self,
        op: impl FnOnce(&mut State) -> Result<T, StateError>,
        record: impl FnOnce(&T) -> Record,
    ) -> Result<Pending<T>, StoreError> {
        let mut next = self.state.clone();
        let value = op(&mut next)?;
        let record = record(&value);
        Ok(Pending {
            next,
            value,
            record,
        })
    }

    /// Writes a prepared change in one transaction and only then makes its state current.
    /// It must have been prepared against the current state (the daemon prepares and commits
    /// under one lock).
    pub fn commit<T>(&mut self, p: Pending<T>) -> Result<T, StoreError> {
        self.commit_txn(|txn| match &p.record {
            Record::PutNetwork(n) => put(txn, NETWORKS, &n.id, n),
            Record::DeleteNetwork(id) => delete(txn, NETWORKS, id),
            Record::PutEndpoint(e) => put(txn, ENDPOINTS, &e.id, e),
            Record::DeleteEndpoint(id) => delete(txn, ENDPOINTS, id),
        })?;
        self.state = p.next;
        Ok(p.value)
    }

    /// Prepares `docker network create`.
    pub fn prepare_create_network(
        &self,
        spec: NetworkSpec,
    ) -> Result<Pending<Network>, StoreError> {
        self.prepare(
            |s| s.create_network(spec, Stamp::fresh()).cloned(),
            |n| Record::PutNetwork(Box::new(n.clone())),
        )
    }

    /// Prepares `docker network rm`.
    pub fn prepare_remove_network(&self, key: &str) -> Result<Pending<Network>, StoreError> {
        self.prepare(
            |s| s.remove_network(key),
            |n| Record::DeleteNetwork(n.id.clone()),
        )
    }

    /// Prepares `docker network connect`: the endpoint with its address, port and names.
    pub fn prepare_connect(&self, spec: EndpointSpec) -> Result<Pending<Endpoint>, StoreError> {
        self.prepare(
            |s| s.connect(spec, Stamp::fresh()).cloned(),
            |e| Record::PutEndpoint(Box::new(e.clone())),
        )
    }

    /// Prepares `docker network disconnect`.
    pub fn prepare_disconnect(
        &self,
        network: &str,
        endpoint: &str,
    ) -> Result<Pending<Endpoint>, StoreError> {
        self.prepare(
            |s| s.disconnect(network, endpoint),
            |e| Record::DeleteEndpoint(e.id.clone()),
        )
    }

    /// `docker network create`, prepared and committed.
    pub fn create_network(&mut self, spec: NetworkSpec) -> Result<Network, StoreError> {
        let p = self.prepare_create_network(spec)?;
        self.commit(p)
    }

    /// `docker network rm`, prepared and committed.
    pub fn remove_network(&mut self, key: &str) -> Result<Network, StoreError> {
        let p = self.prepare_remove_network(key)?;
        self.commit(p)
    }

    /// `docker network connect`, prepared and committed.
    pub fn connect(&mut self, spec: EndpointSpec) -> Result<Endpoint, StoreError> {
        let p = self.prepare_connect(spec)?;
        self.commit(p)
    }

    /// `docker network disconnect`, prepared and committed.
    pub fn disconnect(&mut self, network: &str, endpoint: &str) -> Result<Endpoint, StoreError> {
        let p = self.prepare_disconnect(network, endpoint)?;
        self.commit(p)
    }
}

/// The record a change writes.
#[derive(Clone, Debug)]
enum Record {
    PutNetwork(Box<Network>),
    DeleteNetwork(String),
    PutEndpoint(Box<Endpoint>),
    DeleteEndpoint(String),
}

/// A validated change that is not written yet: the state it leads to and its result. The
/// daemon plumbs interfaces and the dataplane against `state()` and commits only if that
/// worked, so a failure anywhere leaves nothing half-applied.
#[derive(Debug)]
pub struct Pending<T> {
    next: State,
    value: T,
    record: Record,
}

impl<T> Pending<T> {
    /// The state after the change.
    pub fn state(&self) -> &State {
        &self.next
    }

    /// What the change made (the new network or endpoint, or the removed one).
    pub fn value(&self) -> &T {
        &self.value
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::state::tests::{ep, net};
    use std::path::PathBuf;
    use std::sync::atomic::{AtomicU32, Ordering};

    /// A database file in the temp dir, unique per test and run, removed on drop.
    pub(crate) struct TempDb(pub(crate) PathBuf);

    impl TempDb {
        pub(crate) fn new(tag: &str) -> TempDb {
            static N: AtomicU32 = AtomicU32::new(0);
            let n = N.fetch_add(1, Ordering::Relaxed);
            TempDb(std::env::temp_dir().join(format!(
                "sluice-store-{}-{tag}-{n}.redb",
                std::process::id()
            )))
        }
    }

    impl Drop for TempDb {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    fn file_bytes(p: &Path) -> Vec<u8> {
        std::fs::read(p).unwrap()
    }

    #[test]
    fn new_database_has_the_predefined_networks_and_keeps_them() {
        let f = TempDb::new("defaults");
        let first = Store::open(&f.0).unwrap().state().clone();
        let names: Vec<&str> = first.networks().map(|n| n.spec.name.as_str()).collect();
        assert_eq!(names.len(), 3);
        for p in crate::state::PREDEFINED {
            assert!(names.contains(&p), "{p}");
        }
        let again = Store::open(&f.0).unwrap().state().clone();
        assert_eq!(again, first, "ids are not regenerated on reopen");
    }

    #[test]
    fn database_and_state_dir_are_private() {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
        let f = TempDb::new("modes");
        std::fs::write(&f.0, b"").unwrap();
        std::fs::set_permissions(&f.0, std::fs::Permissions::from_mode(0o644)).unwrap();
        drop(Store::open(&f.0).unwrap());
        assert_eq!(
            mode(&f.0),
            0o600,
            "an existing world-readable database is narrowed"
        );
        let dir = f.0.with_extension("dir");
        prepare_state_dir(&dir.join("state")).unwrap();
        assert_eq!(mode(&dir.join("state")), 0o711);
        std::fs::set_permissions(dir.join("state"), std::fs::Permissions::from_mode(0o755))
            .unwrap();
        prepare_state_dir(&dir.join("state")).unwrap();
        assert_eq!(mode(&dir.join("state")), 0o711);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn picked_host_ports_survive_reopen() {
        let f = TempDb::new("hostports");
        let range = sluice_dataplane::config::PortRange {
            first: 50000,
            last: 50010,
        };
        let ports = |s: &Store| -> Vec<String> {
            s.state()
                .endpoints()
                .flat_map(|e| e.spec.publish.iter().map(ToString::to_string))
                .collect()
        };
        {
            let mut s = Store::open(&f.0).unwrap();
            s.set_host_ports(range);
            s.create_network(net("a", Some("10.7.0.0/24"))).unwrap();
            let mut web = ep("a", "web", 1);
            web.publish = vec!["80".parse().unwrap()];
            s.connect(web).unwrap();
            assert_eq!(ports(&s), ["50000:80/tcp"]);
        }
        let mut s = Store::open(&f.0).unwrap();
        s.set_host_ports(range);
        assert_eq!(ports(&s), ["50000:80/tcp"], "the picked port is stored");
        let mut api = ep("a", "api", 2);
        api.publish = vec!["80".parse().unwrap()];
        s.connect(api).unwrap();
        assert!(
            ports(&s).contains(&"50001:80/tcp".to_string()),
            "a port picked before the restart is not picked again: {:?}",
            ports(&s)
        );
    }

    #[test]
    fn state_survives_reopen() {
        let f = TempDb::new("reopen");
        let saved = {
            let mut s = Store::open(&f.0).unwrap();
            s.create_network(net("a", Some("10.7.0.0/24"))).unwrap();
            s.create_network(net("b", None)).unwrap();
            let mut web = ep("a", "web", 1);
            web.publish = vec!["8080:80".parse().unwrap()];
            web.mac = Some("02:00:00:00:00:07".parse().unwrap());
            s.connect(web).unwrap();
            s.connect(ep("a", "db", 2)).unwrap();
            s.connect(ep("b", "x", 3)).unwrap();
            s.disconnect("a", "db").unwrap();
            s.remove_network("b").unwrap_err();
            s.disconnect("b", "x").unwrap();
            s.remove_network("b").unwrap();
            s.state().clone()
        };
        let s = Store::open(&f.0).unwrap();
        assert_eq!(s.state(), &saved);
        assert_eq!(s.state().endpoints().count(), 1);
        let web = s.state().endpoints().next().unwrap();
        assert_eq!(web.mac.to_string(), "02:00:00:00:00:07");
        assert_eq!(web.spec.publish[0].to_string(), "8080:80/tcp");
        assert!(s.state().networks().all(|n| n.spec.name != "b"));
    }

    #[test]
    fn reopened_ipam_continues_where_it_was() {
        let f = TempDb::new("ipam");
        {
            let mut s = Store::open(&f.0).unwrap();
            s.create_network(net("a", Some("10.7.0.0/24"))).unwrap();
            assert_eq!(
                s.connect(ep("a", "one", 1))
                    .unwrap()
                    .ip
                    .unwrap()
                    .to_string(),
                "10.7.0.2"
            );
        }
        let mut s = Store::open(&f.0).unwrap();
        assert_eq!(
            s.connect(ep("a", "two", 2))
                .unwrap()
                .ip
                .unwrap()
                .to_string(),
            "10.7.0.3"
        );
    }

    /// A /64's addresses (allocated sparsely, no bitmap over the prefix), a static one far up
    /// among them, survive a reopen: neither is handed out again.
    #[test]
    fn reopened_v6_ipam_continues_where_it_was() {
        let f = TempDb::new("ipam6");
        let far: std::net::Ipv6Addr = "fd00:9::ffff:1".parse().unwrap();
        {
            let mut s = Store::open(&f.0).unwrap();
            let dual = crate::model::NetworkSpec {
                enable_ipv6: true,
                subnet6: Some("fd00:9::/64".parse().unwrap()),
                ..net("a", Some("10.7.0.0/24"))
            };
            s.create_network(dual).unwrap();
            let one = s.connect(ep("a", "one", 1)).unwrap();
            assert_eq!(one.ip6, Some("fd00:9::2".parse().unwrap()));
            let at_far = crate::model::EndpointSpec {
                ip6: Some(far),
                ..ep("a", "far", 2)
            };
            s.connect(at_far).unwrap();
        }
        let mut s = Store::open(&f.0).unwrap();
        let two = s.connect(ep("a", "two", 3)).unwrap();
        assert_eq!(two.ip6, Some("fd00:9::3".parse().unwrap()));
        let again = crate::model::EndpointSpec {
            ip6: Some(far),
            ..ep("a", "again", 4)
        };
        assert!(
            s.connect(again).is_err(),
            "the static address is still taken"
        );
    }

    #[test]
    fn refused_requests_write_nothing() {
        let f = TempDb::new("refused");
        let before = {
            let mut s = Store::open(&f.0).unwrap();
            s.create_network(net("a", Some("10.1.2.0/24"))).unwrap();
            s.connect(ep("a", "one", 1)).unwrap();
            s.state().clone()
        };
        {
            let mut s = Store::open(&f.0).unwrap();
            let bytes = file_bytes(&f.0);
            let e = s.create_network(net("b", Some("10.1.0.0/16"))).unwrap_err();
            assert_eq!(
                e.to_string(),
                r#"subnet 10.1.0.0/16 overlaps network "a" (10.1.2.0/24)"#
            );
            assert!(matches!(
                s.connect(ep("a", "one", 2)),
                Err(StoreError::State(StateError::EndpointNameTaken { .. }))
            ));
            assert!(s.disconnect("a", "nope").is_err());
            assert!(s.remove_network("a").is_err());
            assert!(s.remove_network("bridge").is_err());
            assert_eq!(s.state(), &before);
            assert!(file_bytes(&f.0) == bytes, "refused requests wrote");
            s.create_network(net("b", None)).unwrap();
            assert!(file_bytes(&f.0) != bytes, "an accepted request writes");
            s.remove_network("b").unwrap();
        }
        assert_eq!(Store::open(&f.0).unwrap().state(), &before);
    }

    #[test]
    fn corrupt_records_are_reported() {
        let f = TempDb::new("corrupt");
        drop(Store::open(&f.0).unwrap());
        {
            let d = Database::create(&f.0).unwrap();
            let txn = d.begin_write().unwrap();
            txn.open_table(NETWORKS)
                .unwrap()
                .insert("k", "{not json")
                .unwrap();
            txn.commit().unwrap();
        }
        match Store::open(&f.0) {
            Err(StoreError::Corrupt { what, key, .. }) => {
                assert_eq!((what, key.as_str()), ("network", "k"));
            }
            Err(e) => panic!("unexpected {e}"),
            Ok(_) => panic!("opened a corrupt database"),
        }
    }
}
