//! The JSON of etcd's v3 gRPC gateway (`POST /v3/...`): request bodies and the answers' shapes.
//! Keys and values travel as base64, 64-bit integers as decimal strings, and fields at their
//! zero value are left out of answers (so every field read here has a default). Pure: the
//! transport is `etcd.rs`.

use serde::{Deserialize, Deserializer};
use serde_json::{json, Value};

use super::base64;

/// One key and its value as etcd stores them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Kv {
    /// The key (sluice's keys are UTF-8 paths).
    pub key: String,
    /// The value's bytes.
    pub value: Vec<u8>,
    /// The revision that created the key.
    pub create_revision: i64,
    /// The revision that last changed it.
    pub mod_revision: i64,
    /// The lease it lives under (0: none).
    pub lease: i64,
}

/// A change a watch reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// The key was created or changed.
    Put(Kv),
    /// The key was deleted (or its lease expired).
    Delete(String),
}

/// One answer of a watch stream.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WatchBatch {
    /// The revision the watcher has now seen every change up to: its last event's, or for a
    /// progress notification (no events) the store's; 0 for the answer confirming the watch
    /// (whose header gives the store's revision, not the watcher's).
    pub revision: i64,
    /// The watch was cancelled (compacted away or refused): the watcher must resync.
    pub canceled: bool,
    /// The oldest revision still kept, when the watch started before it (compacted away):
    /// only a full read brings the watcher up to date.
    pub compact_revision: i64,
    /// Why it was cancelled, if etcd said.
    pub reason: String,
    /// The changes, in order.
    pub events: Vec<Event>,
}

/// The end of the key range that holds every key starting with `prefix` (etcd's
/// `range_end`: the prefix with its last byte incremented).
pub fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

fn b64(s: impl AsRef<[u8]>) -> String {
    base64::encode(s.as_ref())
}

/// `PutRequest`: `key = value`, under `lease` when not 0.
pub fn put(key: &str, value: &[u8], lease: i64) -> Value {
    let mut v = json!({ "key": b64(key), "value": b64(value) });
    if lease != 0 {
        v["lease"] = json!(lease.to_string());
    }
    v
}

/// `RangeRequest` of every key under `prefix`.
pub fn range(prefix: &str) -> Value {
    json!({ "key": b64(prefix), "range_end": b64(prefix_end(prefix)) })
}

/// `TxnRequest` that puts every `(key, value)` under `lease` only if none of the keys exists
/// (each key's `create_revision` is 0): a compare-and-swap that reserves them all or none.
pub fn create_all(items: &[(String, Vec<u8>)], lease: i64) -> Value {
    let compare: Vec<Value> = items
        .iter()
        .map(|(k, _)| json!({ "key": b64(k), "target": "CREATE", "result": "EQUAL", "create_revision": "0" }))
        .collect();
    let success: Vec<Value> = items
        .iter()
        .map(|(k, v)| json!({ "request_put": put(k, v, lease) }))
        .collect();
    json!({ "compare": compare, "success": success })
}

/// `TxnRequest` that deletes every key in `keys` at once.
pub fn delete_all(keys: &[String]) -> Value {
    let success: Vec<Value> = keys
        .iter()
        .map(|k| json!({ "request_delete_range": { "key": b64(k) } }))
        .collect();
    json!({ "success": success })
}

/// `LeaseGrantRequest` for a lease of `ttl` seconds.
pub fn lease_grant(ttl: i64) -> Value {
    json!({ "TTL": ttl.to_string(), "ID": "0" })
}

/// `LeaseKeepAliveRequest` of lease `id`.
pub fn keep_alive(id: i64) -> Value {
    json!({ "ID": id.to_string() })
}

/// `WatchRequest` creating a watch of every key under `prefix` from `start_revision`, with
/// progress notifications (etcd sends them every `--experimental-watch-progress-notify-interval`
/// while nothing changes, so a silent watch can be told from a dead one).
pub fn watch(prefix: &str, start_revision: i64) -> Value {
    json!({ "create_request": {
        "key": b64(prefix),
        "range_end": b64(prefix_end(prefix)),
        "start_revision": start_revision.to_string(),
        "progress_notify": true,
    }})
}

/// An int64 as the gateway writes it: a decimal string (or, leniently, a number).
fn int<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Int {
        Text(String),
        Num(i64),
    }
    match Int::deserialize(d)? {
        Int::Num(n) => Ok(n),
        Int::Text(s) => s.parse().map_err(serde::de::Error::custom),
    }
}

#[derive(Deserialize, Default)]
struct Header {
    #[serde(default, deserialize_with = "int")]
    revision: i64,
}

#[derive(Deserialize)]
struct WireKv {
    #[serde(default)]
    key: String,
    #[serde(default)]
    value: String,
    #[serde(default, deserialize_with = "int")]
    create_revision: i64,
    #[serde(default, deserialize_with = "int")]
    mod_revision: i64,
    #[serde(default, deserialize_with = "int")]
    lease: i64,
}

impl WireKv {
    fn decode(self) -> Result<Kv, String> {
        let key = base64::decode(&self.key).ok_or("a key is not base64")?;
        Ok(Kv {
            key: String::from_utf8(key).map_err(|_| "a key is not UTF-8")?,
            value: base64::decode(&self.value).ok_or("a value is not base64")?,
            create_revision: self.create_revision,
            mod_revision: self.mod_revision,
            lease: self.lease,
        })
    }
}

fn parse<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, String> {
    serde_json::from_slice(body).map_err(|e| e.to_string())
}

/// A `RangeResponse`: the keys and the store's revision.
pub fn range_answer(body: &[u8]) -> Result<(Vec<Kv>, i64), String> {
    #[derive(Deserialize)]
    struct Answer {
        #[serde(default)]
        header: Header,
        #[serde(default)]
        kvs: Vec<WireKv>,
    }
    let a: Answer = parse(body)?;
    let kvs = a
        .kvs
        .into_iter()
        .map(WireKv::decode)
        .collect::<Result<_, _>>()?;
    Ok((kvs, a.header.revision))
}

/// A `TxnResponse`: whether the comparisons held (and the success branch ran).
pub fn txn_answer(body: &[u8]) -> Result<bool, String> {
    #[derive(Deserialize)]
    struct Answer {
        #[serde(default)]
        succeeded: bool,
    }
    Ok(parse::<Answer>(body)?.succeeded)
}

#[derive(Deserialize)]
struct Lease {
    #[serde(rename = "ID", default, deserialize_with = "int")]
    id: i64,
    #[serde(rename = "TTL", default, deserialize_with = "int")]
    ttl: i64,
    #[serde(default)]
    error: String,
}

/// A `LeaseGrantResponse`: the lease's id and TTL.
pub fn grant_answer(body: &[u8]) -> Result<(i64, i64), String> {
    let l: Lease = parse(body)?;
    if !l.error.is_empty() {
        return Err(l.error);
    }
    if l.id == 0 || l.ttl <= 0 {
        return Err("no lease granted".into());
    }
    Ok((l.id, l.ttl))
}

/// The first `LeaseKeepAliveResponse` of a keep-alive stream: the lease's remaining TTL, 0
/// when it has expired (etcd then leaves the TTL out).
pub fn keep_alive_answer(body: &[u8]) -> Result<i64, String> {
    #[derive(Deserialize)]
    struct Answer {
        result: Option<Lease>,
        error: Option<Value>,
    }
    let line = body
        .split(|b| *b == b'\n')
        .find(|l| !l.is_empty())
        .unwrap_or(b"{}");
    let a: Answer = parse(line)?;
    match (a.result, a.error) {
        (Some(l), _) => Ok(l.ttl.max(0)),
        (None, Some(e)) => Err(e.to_string()),
        (None, None) => Err("an empty keep-alive answer".into()),
    }
}

/// One line of a watch stream (`{"result": WatchResponse}`).
pub fn watch_answer(line: &[u8]) -> Result<WatchBatch, String> {
    #[derive(Deserialize)]
    struct Answer {
        result: Option<Watched>,
        error: Option<Value>,
    }
    #[derive(Deserialize)]
    struct Watched {
        #[serde(default)]
        header: Header,
        #[serde(default)]
        created: bool,
        #[serde(default)]
        canceled: bool,
        #[serde(default, deserialize_with = "int")]
        compact_revision: i64,
        #[serde(default)]
        cancel_reason: String,
        #[serde(default)]
        events: Vec<WireEvent>,
    }
    #[derive(Deserialize)]
    struct WireEvent {
        #[serde(rename = "type", default)]
        kind: String,
        kv: WireKv,
    }
    let a: Answer = parse(line)?;
    let w = match (a.result, a.error) {
        (Some(w), _) => w,
        (None, Some(e)) => return Err(e.to_string()),
        (None, None) => return Err("an empty watch answer".into()),
    };
    let mut events = Vec::with_capacity(w.events.len());
    let mut revision = if w.created { 0 } else { w.header.revision };
    if !w.events.is_empty() {
        revision = w
            .events
            .iter()
            .map(|e| e.kv.mod_revision)
            .max()
            .unwrap_or(0);
    }
    for e in w.events {
        let kv = e.kv.decode()?;
        events.push(match e.kind.as_str() {
            "" | "PUT" => Event::Put(kv),
            "DELETE" => Event::Delete(kv.key),
            other => return Err(format!("unknown event type {other:?}")),
        });
    }
    Ok(WatchBatch {
        revision,
        canceled: w.canceled,
        compact_revision: w.compact_revision,
        reason: w.cancel_reason,
        events,
    })
}

/// The message of a gateway error answer (`{"error": ..., "message": ..., "code": N}`), or
/// the body itself.
pub fn error_message(body: &[u8]) -> String {
    #[derive(Deserialize)]
    struct Answer {
        #[serde(default)]
        message: String,
        #[serde(default)]
        error: String,
    }
    match serde_json::from_slice::<Answer>(body) {
        Ok(a) if !a.message.is_empty() => a.message,
        Ok(a) if !a.error.is_empty() => a.error,
        _ => String::from_utf8_lossy(body).trim().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_end_after_their_last_key() {
        assert_eq!(prefix_end("/sluice/v1/"), b"/sluice/v10".to_vec());
        assert_eq!(prefix_end("a"), b"b".to_vec());
        assert_eq!(prefix_end(""), vec![0]);
    }

    #[test]
    fn requests_carry_base64_and_string_integers() {
        assert_eq!(
            put("/k", b"v", 7),
            json!({"key": "L2s=", "value": "dg==", "lease": "7"})
        );
        assert_eq!(put("/k", b"", 0), json!({"key": "L2s=", "value": ""}));
        assert_eq!(range("a"), json!({"key": "YQ==", "range_end": "Yg=="}));
        let t = create_all(
            &[("/a".into(), b"1".to_vec()), ("/b".into(), b"2".to_vec())],
            9,
        );
        assert_eq!(
            t["compare"][1],
            json!({"key": "L2I=", "target": "CREATE", "result": "EQUAL", "create_revision": "0"})
        );
        assert_eq!(
            t["success"][0]["request_put"],
            json!({"key": "L2E=", "value": "MQ==", "lease": "9"})
        );
        assert_eq!(
            delete_all(&["/a".into()]),
            json!({"success": [{"request_delete_range": {"key": "L2E="}}]})
        );
        assert_eq!(lease_grant(5), json!({"TTL": "5", "ID": "0"}));
        assert_eq!(keep_alive(42), json!({"ID": "42"}));
        assert_eq!(
            watch("a", 12),
            json!({"create_request": {"key": "YQ==", "range_end": "Yg==", "start_revision": "12", "progress_notify": true}})
        );
    }

    #[test]
    fn range_answers_decode_and_empty_ones_default() {
        let body = br#"{"header":{"cluster_id":"1","revision":"8"},"kvs":[{"key":"L2E=","create_revision":"3","mod_revision":"5","version":"2","value":"eA==","lease":"694d"}],"count":"1"}"#;
        assert!(range_answer(body).is_err(), "a lease must be decimal");
        let body = br#"{"header":{"revision":"8"},"kvs":[{"key":"L2E=","create_revision":"3","mod_revision":"5","value":"eA==","lease":"77"}],"count":"1"}"#;
        let (kvs, rev) = range_answer(body).unwrap();
        assert_eq!(rev, 8);
        assert_eq!(
            kvs,
            vec![Kv {
                key: "/a".into(),
                value: b"x".to_vec(),
                create_revision: 3,
                mod_revision: 5,
                lease: 77
            }]
        );
        assert_eq!(
            range_answer(br#"{"header":{"revision":"2"}}"#).unwrap(),
            (vec![], 2)
        );
    }

    #[test]
    fn txn_grant_and_keep_alive_answers() {
        assert!(txn_answer(br#"{"header":{},"succeeded":true,"responses":[]}"#).unwrap());
        assert!(!txn_answer(br#"{"header":{},"responses":[]}"#).unwrap());
        assert_eq!(
            grant_answer(br#"{"header":{},"ID":"7587","TTL":"5"}"#).unwrap(),
            (7587, 5)
        );
        assert!(grant_answer(br#"{"header":{},"ID":"0","TTL":"0","error":"too many"}"#).is_err());
        assert_eq!(
            keep_alive_answer(b"{\"result\":{\"header\":{},\"ID\":\"7\",\"TTL\":\"5\"}}\n")
                .unwrap(),
            5
        );
        assert_eq!(
            keep_alive_answer(br#"{"result":{"header":{},"ID":"7"}}"#).unwrap(),
            0
        );
        assert!(keep_alive_answer(br#"{"error":{"grpc_code":14}}"#).is_err());
    }

    #[test]
    fn watch_answers_carry_puts_and_deletes() {
        // The confirmation's header is the store's revision, not what the watcher has seen.
        let created = watch_answer(br#"{"result":{"header":{"revision":"4"},"created":true}}"#);
        assert_eq!(created.unwrap(), WatchBatch::default());
        let progress = watch_answer(br#"{"result":{"header":{"revision":"9"}}}"#).unwrap();
        assert_eq!((progress.revision, progress.events.len()), (9, 0));
        // A watch catching up: its events are older than the store's header revision.
        let line = br#"{"result":{"header":{"revision":"8"},"events":[{"kv":{"key":"L2E=","create_revision":"5","mod_revision":"5","value":"eQ=="}},{"type":"DELETE","kv":{"key":"L2I=","mod_revision":"6"}}]}}"#;
        let b = watch_answer(line).unwrap();
        assert_eq!(b.revision, 6);
        assert_eq!(
            b.events,
            vec![
                Event::Put(Kv {
                    key: "/a".into(),
                    value: b"y".to_vec(),
                    create_revision: 5,
                    mod_revision: 5,
                    lease: 0
                }),
                Event::Delete("/b".into())
            ]
        );
        let gone = watch_answer(
            br#"{"result":{"header":{},"canceled":true,"compact_revision":"9","cancel_reason":"compacted"}}"#,
        )
        .unwrap();
        assert!(gone.canceled && gone.reason == "compacted" && gone.compact_revision == 9);
        assert!(watch_answer(br#"{"error":{"message":"x"}}"#).is_err());
    }

    #[test]
    fn error_answers_give_their_message() {
        assert_eq!(
            error_message(br#"{"error":"etcdserver: requested lease not found","code":5,"message":"etcdserver: requested lease not found"}"#),
            "etcdserver: requested lease not found"
        );
        assert_eq!(error_message(b"Not Found\n"), "Not Found");
    }
}
