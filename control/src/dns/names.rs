//! What each sandbox's embedded resolver knows: the names of the endpoints that share a
//! user-defined network with it (docker's service discovery), and the decision for one query
//! (answer it here, forward it, or drop it). Pure data, rebuilt from the state after every
//! connect and disconnect and swapped into the server whole.

use std::collections::HashMap;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use crate::model::{Driver, Placement, Sandbox};
use crate::state::{State, PREDEFINED};

use super::wire::{self, Answer, Rcode, CLASS_IN, TYPE_A, TYPE_AAAA, TYPE_ANY, TYPE_PTR};

/// TTL of the resolver's own answers (docker's embedded server uses 600 s).
pub const LOCAL_TTL: u32 = 600;

/// Names and reverse names: of one network (shared by every sandbox on it), or a sandbox's own
/// `--link` aliases.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Names {
    /// Lowercase name → addresses, without duplicates.
    names: HashMap<String, Vec<Ipv4Addr>>,
    /// Lowercase name → v6 addresses (endpoints on dual-stack networks), for AAAA queries.
    names6: HashMap<String, Vec<Ipv6Addr>>,
    /// Address → `endpoint.network`, for PTR queries.
    reverse: HashMap<Ipv4Addr, String>,
}

impl Names {
    fn add(&mut self, name: &str, ip: Ipv4Addr) {
        let key = normalize(name);
        if key.is_empty() {
            return;
        }
        push_new(self.names.entry(key).or_default(), ip);
    }

    fn add6(&mut self, name: &str, ip: Ipv6Addr) {
        let key = normalize(name);
        if !key.is_empty() {
            push_new(self.names6.entry(key).or_default(), ip);
        }
    }

    /// An endpoint of network `net` (on this host or another): `name`, `name.net` and its
    /// `aliases` at its addresses, and `name.net` as the reverse name of its v4 address unless
    /// an endpoint added earlier has it.
    fn add_endpoint(
        &mut self,
        (name, net): (&str, &str),
        aliases: &[String],
        (ip, ip6): (Option<Ipv4Addr>, Option<Ipv6Addr>),
    ) {
        let full = format!("{name}.{net}");
        let all = [name, full.as_str()]
            .into_iter()
            .chain(aliases.iter().map(String::as_str));
        for n in all {
            if let Some(ip) = ip {
                self.add(n, ip);
            }
            if let Some(ip6) = ip6 {
                self.add6(n, ip6);
            }
        }
        if let Some(ip) = ip {
            self.reverse.entry(ip).or_insert(full);
        }
    }
}

/// Appends `ip` unless `ips` has it.
fn push_new<T: PartialEq>(ips: &mut Vec<T>, ip: T) {
    if !ips.contains(&ip) {
        ips.push(ip);
    }
}

/// The names one sandbox resolves locally: its own link aliases, then those of its networks
/// (each network's table is built once and shared, so a rebuild costs O(endpoints), not
/// O(endpoints x sandboxes)).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct SandboxNames {
    links: Names,
    networks: Vec<Arc<Names>>,
    /// The sandbox's own upstream resolvers (`--dns`), replacing the host's.
    upstreams: Option<Vec<SocketAddr>>,
}

/// A name's lookup form: lowercase, no trailing dot.
pub fn normalize(name: &str) -> String {
    name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase()
}

/// The embedded resolvers' view of the world: for every sandbox attached to at least one
/// user-defined network, the names it can resolve. Sandboxes only on the default `bridge`
/// network have no entry (they use the host's resolvers and `--link` hosts entries).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NameTable {
    sandboxes: HashMap<Sandbox, SandboxNames>,
}

/// What to do with one datagram received by a sandbox's resolver.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// The reply is in the output buffer: send it back.
    Reply,
    /// Not a local name: relay the query to the upstream resolvers.
    Forward,
    /// Not a query (a reply, or too short to answer): ignore it.
    Drop,
}

/// `d.c.b.a.in-addr.arpa` → a.b.c.d.
fn reverse_ip(name: &str) -> Option<Ipv4Addr> {
    let rest = name.strip_suffix(".in-addr.arpa")?;
    let mut o = [0u8; 4];
    let mut parts = rest.split('.');
    for slot in o.iter_mut().rev() {
        *slot = parts.next()?.parse().ok()?;
    }
    parts.next().is_none().then_some(Ipv4Addr::from(o))
}

/// Adds the endpoints of other hosts in `remote` to their networks' tables (by name,
/// `name.network` and aliases; a local endpoint keeps the reverse name of an address).
fn add_remote(state: &State, remote: &RemoteNames, per_network: &mut HashMap<&str, Names>) {
    for n in state.networks() {
        let (Some(t), Some(peers)) = (per_network.get_mut(n.id.as_str()), remote.get(&n.spec.name))
        else {
            continue;
        };
        for p in peers {
            t.add_endpoint((&p.name, &n.spec.name), &p.aliases, (Some(p.ip), p.ip6));
        }
    }
}

/// `--link target[:alias]` → (target, alias); the alias defaults to the target's name.
pub fn parse_link(link: &str) -> (&str, &str) {
    match link.split_once(':') {
        Some((t, a)) if !a.is_empty() => (t, a),
        Some((t, _)) => (t, t),
        None => (link, link),
    }
}

/// True for networks whose endpoints get the embedded resolver: user-defined networks with
/// addressing (docker's rule: not the default `bridge`, and `host`/`none` have no endpoints).
pub fn is_user_network(name: &str, driver: Driver) -> bool {
    crate::driver::of(driver).has_ipam() && !PREDEFINED.contains(&name)
}

/// An endpoint on another host (overlay networks of a cluster) as its network's resolvers
/// know it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemoteName {
    /// Its name.
    pub name: String,
    /// Its network-scoped aliases.
    pub aliases: Vec<String>,
    /// Its address.
    pub ip: Ipv4Addr,
    /// Its v6 address, on a dual-stack network.
    pub ip6: Option<Ipv6Addr>,
}

/// The names of endpoints on other hosts, per network name.
pub type RemoteNames = HashMap<String, Vec<RemoteName>>;

impl NameTable {
    /// The table for `state` alone (see [`NameTable::with_remote`]).
    pub fn from_state(state: &State) -> NameTable {
        NameTable::with_remote(state, &RemoteNames::new())
    }

    /// The table for `state`: each sandbox on a user-defined network (whose interface sluice
    /// placed: engines that place it themselves, like docker, run their own resolver)
    /// resolves, on every such network it is attached to, the endpoints' names, their aliases
    /// and `name.network`, plus its own `--link` aliases; PTR queries give `name.network`.
    /// The endpoints of other hosts in `remote` count as endpoints of their network.
    pub fn with_remote(state: &State, remote: &RemoteNames) -> NameTable {
        let mut per_network: HashMap<&str, Names> = state
            .networks()
            .filter(|n| is_user_network(&n.spec.name, n.spec.driver))
            .map(|n| (n.id.as_str(), Names::default()))
            .collect();
        for peer in state.endpoints() {
            let Some(t) = per_network.get_mut(peer.network_id.as_str()) else {
                continue;
            };
            let net_name = state
                .network(&peer.network_id)
                .map(|n| n.spec.name.as_str())
                .unwrap_or_default();
            t.add_endpoint(
                (&peer.spec.name, net_name),
                &peer.spec.aliases,
                (peer.ip, peer.ip6),
            );
        }
        add_remote(state, remote, &mut per_network);
        let per_network: HashMap<&str, Arc<Names>> = per_network
            .into_iter()
            .map(|(id, t)| (id, Arc::new(t)))
            .collect();
        let mut sandboxes: HashMap<Sandbox, SandboxNames> = HashMap::new();
        for e in state
            .endpoints()
            .filter(|e| e.spec.placement == Placement::Sandbox)
        {
            let Some(net) = per_network.get(e.network_id.as_str()) else {
                continue;
            };
            let t = sandboxes.entry(e.spec.sandbox.clone()).or_default();
            t.networks.push(Arc::clone(net));
            for link in &e.spec.links {
                let (target, alias) = parse_link(link);
                if let Some(p) = state
                    .endpoints_of(&e.network_id)
                    .find(|p| p.spec.name == target)
                {
                    if let Some(ip) = p.ip {
                        t.links.add(alias, ip);
                    }
                }
            }
        }
        NameTable { sandboxes }
    }

    /// Sets the upstream resolvers of one sandbox (its `--dns` servers); nothing for a sandbox
    /// without an entry.
    pub fn set_upstreams(&mut self, sandbox: &Sandbox, servers: Vec<SocketAddr>) {
        if let Some(t) = self.sandboxes.get_mut(sandbox) {
            t.upstreams = Some(servers);
        }
    }

    /// The sandbox's own upstream resolvers, if it has some.
    pub fn upstreams(&self, sandbox: &Sandbox) -> Option<&[SocketAddr]> {
        self.sandboxes.get(sandbox)?.upstreams.as_deref()
    }

    /// The sandboxes that need an embedded resolver.
    pub fn sandboxes(&self) -> impl Iterator<Item = &Sandbox> {
        self.sandboxes.keys()
    }

    /// True when `sandbox` uses the embedded resolver (its resolv.conf names 127.0.0.11).
    pub fn serves(&self, sandbox: &Sandbox) -> bool {
        self.sandboxes.contains_key(sandbox)
    }

    /// The addresses `name` resolves to in `sandbox` (empty: not a local name).
    pub fn lookup(&self, sandbox: &Sandbox, name: &str) -> Vec<Ipv4Addr> {
        let Some(t) = self.sandboxes.get(sandbox) else {
            return Vec::new();
        };
        let key = normalize(name);
        let mut out: Vec<Ipv4Addr> = Vec::new();
        for names in std::iter::once(&t.links).chain(t.networks.iter().map(|n| &**n)) {
            for ip in names.names.get(&key).into_iter().flatten() {
                push_new(&mut out, *ip);
            }
        }
        out
    }

    /// The v6 addresses `name` resolves to in `sandbox` (its networks' dual-stack endpoints).
    pub fn lookup6(&self, sandbox: &Sandbox, name: &str) -> Vec<Ipv6Addr> {
        let Some(t) = self.sandboxes.get(sandbox) else {
            return Vec::new();
        };
        let key = normalize(name);
        let mut out: Vec<Ipv6Addr> = Vec::new();
        for names in &t.networks {
            for ip in names.names6.get(&key).into_iter().flatten() {
                push_new(&mut out, *ip);
            }
        }
        out
    }

    /// The name of an address for a PTR query from `sandbox`.
    pub fn reverse(&self, sandbox: &Sandbox, ip: Ipv4Addr) -> Option<&str> {
        self.sandboxes
            .get(sandbox)?
            .networks
            .iter()
            .find_map(|n| n.reverse.get(&ip))
            .map(String::as_str)
    }

    /// Decides what to do with `packet`, a datagram received by `sandbox`'s resolver; for
    /// [`Action::Reply`] the reply (at most `max_len` bytes) is in `out`. Local names get their
    /// A and AAAA records (other types: an empty NOERROR, as for a name without such records); PTR
    /// queries for local addresses get the endpoint's name; everything else is forwarded.
    pub fn respond(
        &self,
        sandbox: &Sandbox,
        packet: &[u8],
        max_len: usize,
        out: &mut Vec<u8>,
    ) -> Action {
        let m = match wire::parse(packet) {
            Ok(m) => m,
            Err(_) => {
                return match wire::format_error(packet, out) {
                    Some(()) => Action::Reply,
                    None => Action::Drop,
                };
            }
        };
        if m.header.is_response() {
            return Action::Drop;
        }
        if m.header.opcode() != 0 {
            wire::reply(&m, Rcode::NotImp, &[], 0, max_len, out);
            return Action::Reply;
        }
        let Some(q) = &m.question else {
            wire::reply(&m, Rcode::FormErr, &[], 0, max_len, out);
            return Action::Reply;
        };
        if q.qclass != CLASS_IN {
            return Action::Forward;
        }
        let ips = self.lookup(sandbox, &q.name);
        let ips6 = self.lookup6(sandbox, &q.name);
        if !ips.is_empty() || !ips6.is_empty() {
            let v4 = q.qtype == TYPE_A || q.qtype == TYPE_ANY;
            let v6 = q.qtype == TYPE_AAAA || q.qtype == TYPE_ANY;
            let answers: Vec<Answer> = (ips.iter().filter(|_| v4).map(|ip| Answer::A(*ip)))
                .chain(ips6.iter().filter(|_| v6).map(|ip| Answer::Aaaa(*ip)))
                .collect();
            wire::reply(&m, Rcode::NoError, &answers, LOCAL_TTL, max_len, out);
            return Action::Reply;
        }
        if q.qtype == TYPE_PTR {
            if let Some(name) = reverse_ip(&q.name).and_then(|ip| self.reverse(sandbox, ip)) {
                wire::reply(
                    &m,
                    Rcode::NoError,
                    &[Answer::Ptr(name)],
                    LOCAL_TTL,
                    max_len,
                    out,
                );
                return Action::Reply;
            }
        }
        Action::Forward
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dns::wire::{build_query, parse, UDP_REPLY_MAX};
    use crate::model::Stamp;
    use crate::state::tests::{ep, net, stamps};

    fn state() -> (State, impl FnMut() -> Stamp) {
        let mut st = stamps();
        let mut s = State::with_defaults(&mut st);
        s.create_network(net("front", Some("10.1.0.0/24")), st())
            .unwrap();
        s.create_network(net("back", Some("10.2.0.0/24")), st())
            .unwrap();
        (s, st)
    }

    fn ask(t: &NameTable, sb: &Sandbox, name: &str, qtype: u16) -> (Action, Vec<u8>) {
        let mut q = Vec::new();
        build_query(7, name, qtype, &mut q).unwrap();
        let mut out = Vec::new();
        let a = t.respond(sb, &q, UDP_REPLY_MAX, &mut out);
        (a, out)
    }

    fn a_records(out: &[u8]) -> Vec<Ipv4Addr> {
        parse(out)
            .unwrap()
            .answers()
            .unwrap()
            .iter()
            .filter_map(|r| r.a())
            .collect()
    }

    #[test]
    fn names_are_scoped_to_shared_networks() {
        let (mut s, mut st) = state();
        let mut web = ep("front", "web", 1);
        web.aliases = vec!["WWW".into()];
        s.connect(web, st()).unwrap();
        s.connect(ep("front", "api", 2), st()).unwrap();
        s.connect(ep("back", "api", 2), st()).unwrap();
        s.connect(ep("back", "db", 3), st()).unwrap();
        s.connect(ep("bridge", "legacy", 4), st()).unwrap();
        s.connect(ep("bridge", "web2", 1), st()).unwrap();
        let t = NameTable::from_state(&s);
        let (web, api, db, legacy) = (
            Sandbox::Pid(1),
            Sandbox::Pid(2),
            Sandbox::Pid(3),
            Sandbox::Pid(4),
        );
        let web_ip = Ipv4Addr::new(10, 1, 0, 2);
        assert_eq!(t.lookup(&web, "web"), [web_ip]);
        assert_eq!(t.lookup(&web, "www."), [web_ip]);
        assert_eq!(t.lookup(&api, "WwW"), [web_ip]);
        assert_eq!(t.lookup(&web, "web.front"), [web_ip]);
        assert_eq!(t.lookup(&web, "api"), [Ipv4Addr::new(10, 1, 0, 3)]);
        assert_eq!(
            t.lookup(&api, "api"),
            [Ipv4Addr::new(10, 1, 0, 3), Ipv4Addr::new(10, 2, 0, 2)]
        );
        assert!(
            t.lookup(&web, "db").is_empty(),
            "db shares no network with web"
        );
        assert_eq!(t.lookup(&db, "api"), [Ipv4Addr::new(10, 2, 0, 2)]);
        assert!(
            t.lookup(&web, "legacy").is_empty(),
            "the default bridge has no DNS"
        );
        assert!(t.lookup(&web, "web2").is_empty());
        let mut sbs: Vec<_> = t.sandboxes().cloned().collect();
        sbs.sort_by_key(|s| s.to_string());
        assert_eq!(sbs, [web.clone(), api.clone(), db]);
        assert!(t.serves(&web) && !t.serves(&legacy));
        assert_eq!(t.reverse(&api, Ipv4Addr::new(10, 2, 0, 3)), Some("db.back"));
    }

    #[test]
    fn other_hosts_endpoints_resolve_on_their_network() {
        let (mut s, mut st) = state();
        s.connect(ep("front", "web", 1), st()).unwrap();
        s.connect(ep("back", "db", 2), st()).unwrap();
        let far = Ipv4Addr::new(10, 1, 0, 77);
        let far6: Ipv6Addr = "fd00:1::77".parse().unwrap();
        let peer = |name: &str, aliases: &[&str], ip6| RemoteName {
            name: name.into(),
            aliases: aliases.iter().map(|a| a.to_string()).collect(),
            ip: far,
            ip6,
        };
        let remote = RemoteNames::from([
            (
                "front".to_string(),
                vec![peer("far", &["api", "Cache"], Some(far6))],
            ),
            ("gone".to_string(), vec![peer("ghost", &[], None)]),
        ]);
        let t = NameTable::with_remote(&s, &remote);
        let (web, db) = (Sandbox::Pid(1), Sandbox::Pid(2));
        assert_eq!(t.lookup(&web, "far"), [far]);
        assert_eq!(t.lookup(&web, "far.front"), [far]);
        assert_eq!(t.lookup(&web, "api"), [far], "a remote alias");
        assert_eq!(t.lookup(&web, "cache"), [far]);
        assert_eq!(t.lookup6(&web, "api"), [far6], "AAAA of a remote endpoint");
        assert_eq!(t.lookup6(&web, "far.front"), [far6]);
        assert_eq!(t.reverse(&web, far), Some("far.front"));
        assert!(t.lookup(&db, "far").is_empty(), "db is not on front");
        assert!(t.lookup(&web, "ghost").is_empty());
        assert!(NameTable::from_state(&s).lookup(&web, "far").is_empty());
    }

    #[test]
    fn links_on_user_networks_are_aliases() {
        let (mut s, mut st) = state();
        s.connect(ep("front", "db", 1), st()).unwrap();
        let mut app = ep("front", "app", 2);
        app.links = vec!["db:database".into(), "nothere:x".into()];
        s.connect(app, st()).unwrap();
        let t = NameTable::from_state(&s);
        assert_eq!(
            t.lookup(&Sandbox::Pid(2), "database"),
            [Ipv4Addr::new(10, 1, 0, 2)]
        );
        assert!(
            t.lookup(&Sandbox::Pid(1), "database").is_empty(),
            "links are per container"
        );
        assert!(t.lookup(&Sandbox::Pid(2), "x").is_empty());
        assert_eq!(parse_link("a"), ("a", "a"));
        assert_eq!(parse_link("a:"), ("a", "a"));
        assert_eq!(parse_link("a:b"), ("a", "b"));
    }

    #[test]
    fn dual_stack_names_and_aliases_get_aaaa_records() {
        let mut st = stamps();
        let mut s = State::with_defaults(&mut st);
        let dual = crate::model::NetworkSpec {
            enable_ipv6: true,
            subnet6: Some("fd00:9::/64".parse().unwrap()),
            ..net("d", Some("10.9.0.0/24"))
        };
        s.create_network(dual, st()).unwrap();
        let mut web = ep("d", "web", 1);
        web.aliases = vec!["www".into()];
        s.connect(web, st()).unwrap();
        s.connect(ep("d", "db", 2), st()).unwrap();
        let t = NameTable::from_state(&s);
        let sb = Sandbox::Pid(2);
        let web6: Ipv6Addr = "fd00:9::2".parse().unwrap();
        for name in ["web", "WWW", "web.d"] {
            let (a, out) = ask(&t, &sb, name, TYPE_AAAA);
            assert_eq!(a, Action::Reply);
            let m = parse(&out).unwrap();
            let v6: Vec<Ipv6Addr> = m
                .answers()
                .unwrap()
                .iter()
                .filter_map(|r| r.aaaa())
                .collect();
            assert_eq!(v6, [web6], "{name}");
        }
        let (_, out) = ask(&t, &sb, "web", TYPE_A);
        assert_eq!(a_records(&out), [Ipv4Addr::new(10, 9, 0, 2)]);
        let (_, out) = ask(&t, &sb, "web", TYPE_ANY);
        assert_eq!(parse(&out).unwrap().answers().unwrap().len(), 2);
    }

    #[test]
    fn queries_are_answered_or_forwarded() {
        let (mut s, mut st) = state();
        s.connect(ep("front", "web", 1), st()).unwrap();
        let mut t = NameTable::from_state(&s);
        let sb = Sandbox::Pid(1);
        let (a, out) = ask(&t, &sb, "web", TYPE_A);
        assert_eq!(a, Action::Reply);
        assert_eq!(a_records(&out), [Ipv4Addr::new(10, 1, 0, 2)]);
        let (a, out) = ask(&t, &sb, "web", TYPE_AAAA);
        assert_eq!(a, Action::Reply);
        let m = parse(&out).unwrap();
        assert_eq!((m.header.rcode(), m.header.ancount), (0, 0));
        let (a, out) = ask(&t, &sb, "2.0.1.10.in-addr.arpa", TYPE_PTR);
        assert_eq!(a, Action::Reply);
        let r = parse(&out).unwrap().answers().unwrap();
        assert_eq!(wire::read_name(&r[0].data, 0).unwrap().0, "web.front");
        assert_eq!(
            ask(&t, &sb, "9.0.1.10.in-addr.arpa", TYPE_PTR).0,
            Action::Forward
        );
        assert_eq!(ask(&t, &sb, "example.com", TYPE_A).0, Action::Forward);
        assert_eq!(ask(&t, &Sandbox::Pid(9), "web", TYPE_A).0, Action::Forward);
        assert_eq!(t.upstreams(&sb), None);
        let up: SocketAddr = "192.0.2.53:53".parse().unwrap();
        t.set_upstreams(&sb, vec![up]);
        t.set_upstreams(&Sandbox::Pid(9), vec![up]);
        assert_eq!(t.upstreams(&sb), Some(&[up][..]));
        assert_eq!(t.upstreams(&Sandbox::Pid(9)), None);
    }

    #[test]
    fn bad_datagrams_get_formerr_or_nothing() {
        let t = NameTable::default();
        let sb = Sandbox::Pid(1);
        let mut out = Vec::new();
        assert_eq!(t.respond(&sb, &[1, 2, 3], 512, &mut out), Action::Drop);
        let mut q = Vec::new();
        build_query(9, "web", TYPE_A, &mut q).unwrap();
        q.truncate(q.len() - 2);
        assert_eq!(t.respond(&sb, &q, 512, &mut out), Action::Reply);
        assert_eq!(parse(&out).unwrap().header.rcode(), Rcode::FormErr as u8);
        q[2] |= 0x80;
        assert_eq!(
            t.respond(&sb, &q, 512, &mut out),
            Action::Drop,
            "replies are not answered"
        );
        build_query(9, "web", TYPE_A, &mut q).unwrap();
        q[2] |= 0x10; // opcode 2 (STATUS)
        assert_eq!(t.respond(&sb, &q, 512, &mut out), Action::Reply);
        assert_eq!(parse(&out).unwrap().header.rcode(), Rcode::NotImp as u8);
    }

    #[test]
    fn reverse_names_parse() {
        assert_eq!(
            reverse_ip("4.3.2.1.in-addr.arpa"),
            Some(Ipv4Addr::new(1, 2, 3, 4))
        );
        assert_eq!(reverse_ip("3.2.1.in-addr.arpa"), None);
        assert_eq!(reverse_ip("5.4.3.2.1.in-addr.arpa"), None);
        assert_eq!(reverse_ip("4.3.2.1"), None);
    }
}
