//! The API socket (`--api-socket`): one JSON request per connection, answered with
//! slirp4netns's exact reply shapes. This module parses requests and renders replies; the
//! engine owns the listeners the forwards become.
#![forbid(unsafe_code)]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde_json::{json, Value};

/// A request larger than this (slirp4netns's buffer) is refused.
pub const MAX_REQUEST: usize = 4096;

/// Transport of a host forward.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

/// A host forward: the host listens on `host_addr:host_port` and connections reach
/// `guest_addr:guest_port`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostFwd {
    /// The id the API gave it.
    pub id: u32,
    /// TCP or UDP.
    pub proto: Proto,
    /// The host address to listen on.
    pub host_addr: IpAddr,
    /// The host port.
    pub host_port: u16,
    /// The guest address.
    pub guest_addr: IpAddr,
    /// The guest port.
    pub guest_port: u16,
}

/// A parsed request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// `add_hostfwd` (the id is filled in when it is added).
    Add(HostFwd),
    /// `list_hostfwd`.
    List,
    /// `remove_hostfwd` of an id.
    Remove(i64),
}

/// An error reply `{"error":{"desc":"bad request: <what>"}}`.
pub fn error_reply(what: &str) -> String {
    json!({"error": {"desc": format!("bad request: {what}")}}).to_string()
}

/// `{"return":{"id":N}}`.
pub fn added_reply(id: u32) -> String {
    json!({"return": {"id": id}}).to_string()
}

/// `{"return":{}}`.
pub fn ok_reply() -> String {
    json!({"return": {}}).to_string()
}

/// `{"entries":[...]}`: slirp4netns 1.2 answers list_hostfwd without the `return` wrapper
/// its other replies have (checked against the real binary), so this does too.
pub fn list_reply(fwds: &[HostFwd]) -> String {
    let entries: Vec<String> = fwds
        .iter()
        .map(|f| {
            let proto = match f.proto {
                Proto::Tcp => "tcp",
                Proto::Udp => "udp",
            };
            format!(
                r#"{{"id":{},"proto":"{proto}","host_addr":"{}","host_port":{},"guest_addr":"{}","guest_port":{}}}"#,
                f.id, f.host_addr, f.host_port, f.guest_addr, f.guest_port
            )
        })
        .collect();
    format!(r#"{{"entries":[{}]}}"#, entries.join(","))
}

fn port(args: &Value, name: &str) -> Result<u16, String> {
    args.get(name)
        .and_then(Value::as_f64)
        .map(|p| p as i64)
        .filter(|p| (1..=65535).contains(p))
        .map(|p| p as u16)
        .ok_or_else(|| error_reply(&format!("add_hostfwd: bad arguments.{name}")))
}

fn addr(args: &Value, name: &str, default: Option<IpAddr>) -> Result<IpAddr, String> {
    let bad = || error_reply(&format!("add_hostfwd: bad arguments.{name}"));
    match args.get(name).and_then(Value::as_str) {
        None | Some("") => default.ok_or_else(bad),
        Some(s) => s.parse().map_err(|_| bad()),
    }
}

/// The guest addresses forwards go to when the request names none: the one of the host
/// address's family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Guests {
    /// The IPv4 guest address.
    pub v4: Ipv4Addr,
    /// The guest's IPv6 address, once known.
    pub v6: Option<Ipv6Addr>,
}

fn parse_add(args: &Value, guests: &Guests) -> Result<Request, String> {
    let proto = match args.get("proto").and_then(Value::as_str) {
        Some("tcp") => Proto::Tcp,
        Some("udp") => Proto::Udp,
        _ => return Err(error_reply("add_hostfwd: bad arguments.proto")),
    };
    let host_addr = addr(args, "host_addr", Some(Ipv4Addr::UNSPECIFIED.into()))?;
    let host_port = port(args, "host_port")?;
    let default_guest = match host_addr {
        IpAddr::V4(_) => Some(guests.v4.into()),
        IpAddr::V6(_) => guests.v6.map(IpAddr::from),
    };
    let guest_addr = addr(args, "guest_addr", default_guest)?;
    let guest_port = port(args, "guest_port")?;
    Ok(Request::Add(HostFwd {
        id: 0,
        proto,
        host_addr,
        host_port,
        guest_addr,
        guest_port,
    }))
}

/// Parses one request (the bytes read from a connection); the error is the reply to send.
pub fn parse_request(bytes: &[u8], guests: &Guests) -> Result<Request, String> {
    if bytes.len() >= MAX_REQUEST {
        return Err(error_reply("too large message"));
    }
    let v: Value = serde_json::from_slice(bytes).map_err(|_| error_reply("cannot parse JSON"))?;
    if !v.is_object() {
        return Err(error_reply("json_object() failed"));
    }
    let args = v.get("arguments").cloned().unwrap_or(Value::Null);
    match v.get("execute").and_then(Value::as_str) {
        None => Err(error_reply("no execute found")),
        Some("add_hostfwd") => parse_add(&args, guests),
        Some("list_hostfwd") => Ok(Request::List),
        Some("remove_hostfwd") => Ok(Request::Remove(
            args.get("id")
                .and_then(Value::as_f64)
                .map_or(0, |f| f as i64),
        )),
        Some(_) => Err(error_reply("unknown execute")),
    }
}

/// The forwards of one process, with the next id to give.
#[derive(Debug)]
pub struct Forwards {
    list: Vec<HostFwd>,
    next_id: u32,
}

impl Default for Forwards {
    fn default() -> Self {
        Forwards {
            list: Vec::new(),
            next_id: 1,
        }
    }
}

impl Forwards {
    /// Records `fwd` under the next id and returns it.
    pub fn add(&mut self, mut fwd: HostFwd) -> HostFwd {
        fwd.id = self.next_id;
        self.next_id += 1;
        self.list.push(fwd.clone());
        fwd
    }

    /// Forgets forward `id`.
    pub fn remove(&mut self, id: i64) -> Option<HostFwd> {
        let at = self.list.iter().position(|f| i64::from(f.id) == id)?;
        Some(self.list.remove(at))
    }

    /// All forwards, oldest first.
    pub fn list(&self) -> &[HostFwd] {
        &self.list
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GUEST: &Guests = &Guests {
        v4: Ipv4Addr::new(10, 0, 2, 100),
        v6: None,
    };

    fn err(req: &str) -> String {
        parse_request(req.as_bytes(), GUEST).unwrap_err()
    }

    #[test]
    fn v6_forwards_default_to_the_guest_v6_address() {
        let req = br#"{"execute": "add_hostfwd", "arguments": {"proto": "tcp", "host_addr": "::1", "host_port": 8080, "guest_port": 80}}"#;
        assert!(parse_request(req, GUEST)
            .unwrap_err()
            .contains("bad arguments.guest_addr"));
        let guest6: Ipv6Addr = "fd00::64".parse().unwrap();
        let guests = Guests {
            v6: Some(guest6),
            ..*GUEST
        };
        let Ok(Request::Add(fwd)) = parse_request(req, &guests) else {
            panic!("not an add");
        };
        assert_eq!(
            (fwd.host_addr, fwd.guest_addr),
            ("::1".parse().unwrap(), IpAddr::from(guest6))
        );
        let mut f = Forwards::default();
        f.add(fwd);
        let list: Value = serde_json::from_str(&list_reply(f.list())).unwrap();
        assert_eq!(list["entries"][0]["guest_addr"], "fd00::64");
    }

    #[test]
    fn add_list_remove() {
        let r = parse_request(
            br#"{"execute": "add_hostfwd", "arguments": {"proto": "tcp", "host_addr": "127.0.0.1", "host_port": 8080, "guest_port": 80}}"#,
            GUEST,
        )
        .unwrap();
        let Request::Add(fwd) = r else {
            panic!("{r:?}")
        };
        assert_eq!(fwd.guest_addr, GUEST.v4);
        let mut f = Forwards::default();
        let added = f.add(fwd);
        assert_eq!(added_reply(added.id), r#"{"return":{"id":1}}"#);
        assert!(
            list_reply(f.list()).starts_with(r#"{"entries":[{"id":1,"proto":"tcp","host_addr""#)
        );
        let list: Value = serde_json::from_str(&list_reply(f.list())).unwrap();
        assert_eq!(
            list,
            json!({"entries": [{"id": 1, "proto": "tcp", "host_addr": "127.0.0.1",
                "host_port": 8080, "guest_addr": "10.0.2.100", "guest_port": 80}]})
        );
        let rm = parse_request(
            br#"{"execute":"remove_hostfwd","arguments":{"id":1}}"#,
            GUEST,
        );
        assert_eq!(rm, Ok(Request::Remove(1)));
        assert!(f.remove(1).is_some() && f.remove(1).is_none());
        assert_eq!(ok_reply(), r#"{"return":{}}"#);
        assert_eq!(
            parse_request(br#"{"execute":"list_hostfwd"}"#, GUEST),
            Ok(Request::List)
        );
    }

    #[test]
    fn error_replies_match_slirp4netns() {
        assert_eq!(
            err("{nope"),
            r#"{"error":{"desc":"bad request: cannot parse JSON"}}"#
        );
        assert_eq!(
            err("[1]"),
            r#"{"error":{"desc":"bad request: json_object() failed"}}"#
        );
        assert_eq!(
            err("{}"),
            r#"{"error":{"desc":"bad request: no execute found"}}"#
        );
        assert_eq!(
            err(r#"{"execute":"x"}"#),
            r#"{"error":{"desc":"bad request: unknown execute"}}"#
        );
        let add = |args: &str| {
            err(&format!(
                r#"{{"execute":"add_hostfwd","arguments":{args}}}"#
            ))
        };
        assert!(add(r#"{"proto":"sctp"}"#).contains("bad arguments.proto"));
        assert!(add(r#"{"proto":"udp","host_addr":"x","host_port":1}"#)
            .contains("bad arguments.host_addr"));
        assert!(add(r#"{"proto":"udp","host_port":0}"#).contains("bad arguments.host_port"));
        assert!(add(r#"{"proto":"udp","host_port":1,"guest_addr":"1.2"}"#)
            .contains("bad arguments.guest_addr"));
        assert!(add(r#"{"proto":"udp","host_port":1}"#).contains("bad arguments.guest_port"));
        assert!(err(&" ".repeat(MAX_REQUEST)).contains("too large message"));
    }
}
