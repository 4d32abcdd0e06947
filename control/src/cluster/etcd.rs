//! A small etcd v3 client over the JSON gRPC gateway (HTTP/1.1 `POST /v3/...` with hyper):
//! put, range, compare-and-swap transactions, leases with keep-alive and watches. No protoc,
//! no gRPC stack: what sluice needs of etcd is a handful of calls. Over plain TCP or TLS, with
//! or without etcd's user authentication ([`super::security`]).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::gateway::{self, Kv, WatchBatch};
use super::security::{self, Credentials, OptionError, StoreOptions};

/// How long one call may take before the store counts as unreachable.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a call to etcd failed.
#[derive(Debug, thiserror::Error)]
pub enum EtcdError {
    /// `--cluster-store` is not `etcd://HOST:PORT[,HOST:PORT...]`.
    #[error("bad cluster store {url:?}: {why} (expected etcd://HOST:PORT[,HOST:PORT...])")]
    BadUrl {
        /// What was given.
        url: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// No member answered.
    #[error("cannot reach the cluster store (etcd at {endpoints}): {reason}")]
    Unreachable {
        /// The members tried.
        endpoints: String,
        /// The last member's failure.
        reason: String,
    },
    /// etcd answered with an error.
    #[error("the cluster store (etcd) refused {path}: {message}")]
    Refused {
        /// The call.
        path: &'static str,
        /// The HTTP status.
        status: u16,
        /// etcd's message.
        message: String,
    },
    /// etcd's answer was not what the gateway's JSON should be.
    #[error("unexpected answer from the cluster store (etcd) to {path}: {reason}")]
    Decode {
        /// The call.
        path: &'static str,
        /// What was wrong.
        reason: String,
    },
}

/// A client of one etcd cluster: its members' client addresses, tried in turn from the one
/// that answered last, so a dead member costs one failed attempt, not one per call.
#[derive(Clone, Debug)]
pub struct Etcd {
    endpoints: Vec<String>,
    /// The member that answered last (shared by the clones: one client per daemon).
    preferred: Arc<AtomicUsize>,
    /// How connections to the members are made.
    link: Link,
    /// etcd's user authentication, when the cluster has it on.
    auth: Option<Credentials>,
}

/// Plain TCP, or TLS on top of it.
#[derive(Clone)]
enum Link {
    Plain,
    Tls(TlsConnector),
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Link::Plain => "plain",
            Link::Tls(_) => "TLS",
        })
    }
}

impl Etcd {
    /// The cluster named by `etcd://HOST:PORT[,HOST:PORT...]`.
    pub fn from_url(url: &str) -> Result<Etcd, EtcdError> {
        let bad = |why| EtcdError::BadUrl {
            url: url.to_string(),
            why,
        };
        let rest = url
            .strip_prefix("etcd://")
            .ok_or_else(|| bad("not etcd://"))?;
        let endpoints: Vec<String> = rest.split(',').map(|s| s.trim().to_string()).collect();
        for e in &endpoints {
            let (host, port) = e
                .rsplit_once(':')
                .ok_or_else(|| bad("a member has no port"))?;
            if host.is_empty() || host.contains('/') || port.parse::<u16>().is_err() {
                return Err(bad("a member is not HOST:PORT"));
            }
        }
        Ok(Etcd {
            endpoints,
            preferred: Arc::new(AtomicUsize::new(0)),
            link: Link::Plain,
            auth: None,
        })
    }

    /// This client with the `--cluster-store-opt`s: TLS, a client certificate, a user.
    pub fn with_options(mut self, options: &StoreOptions) -> Result<Etcd, OptionError> {
        if let Some(tls) = options.tls()? {
            self.link = Link::Tls(tls);
        }
        self.auth = options.credentials()?;
        Ok(self)
    }

    /// The members, for messages.
    pub fn endpoints(&self) -> String {
        self.endpoints.join(",")
    }

    /// The members in the order to try them: the one that answered last first, then the
    /// others in turn.
    fn members(&self) -> impl Iterator<Item = (usize, &str)> + '_ {
        let n = self.endpoints.len();
        let first = self.preferred.load(Ordering::Relaxed) % n;
        (0..n).map(move |k| {
            let i = (first + k) % n;
            (i, self.endpoints[i].as_str())
        })
    }

    /// Sends `body` to `path` on the first member that answers (a member that cannot be
    /// connected to, does not answer in time or is between leaders is skipped; while members
    /// elect a leader the members are tried again, up to [`ELECTION_PASSES`] times); returns the answer's body once it
    /// has started (a stream for watches and keep-alives).
    async fn send(&self, path: &'static str, body: &Value) -> Result<Incoming, EtcdError> {
        self.send_within(path, body, CALL_TIMEOUT).await
    }

    /// [`Etcd::send`] giving each member `within` to answer; with a user, under its token
    /// (taken first, and again once when etcd says it expired).
    async fn send_within(
        &self,
        path: &'static str,
        body: &Value,
        within: Duration,
    ) -> Result<Incoming, EtcdError> {
        let Some(auth) = &self.auth else {
            return self.send_as(path, body, within, None).await;
        };
        for fresh in [false, true] {
            let token = match auth.token() {
                Some(t) if !fresh => t,
                _ => self.authenticate(auth, within).await?,
            };
            match self.send_as(path, body, within, Some(&token)).await {
                Err(EtcdError::Refused { message, .. })
                    if !fresh && security::token_expired(&message) =>
                {
                    auth.set_token(None);
                }
                r => return r,
            }
        }
        unreachable!("the second pass returns")
    }

    /// Exchanges the user's password for a token (kept for the next calls).
    async fn authenticate(
        &self,
        auth: &Credentials,
        within: Duration,
    ) -> Result<String, EtcdError> {
        const PATH: &str = "/v3/auth/authenticate";
        let incoming = self.send_as(PATH, &auth.request(), within, None).await?;
        let body = self.read_within(incoming, within).await?;
        let token = security::token_answer(&body)
            .map_err(|reason| EtcdError::Decode { path: PATH, reason })?;
        auth.set_token(Some(token.clone()));
        Ok(token)
    }

    /// [`Etcd::send_within`] with `token` in the `Authorization` header.
    async fn send_as(
        &self,
        path: &'static str,
        body: &Value,
        within: Duration,
        token: Option<&str>,
    ) -> Result<Incoming, EtcdError> {
        let body = Bytes::from(body.to_string());
        let mut reason = String::from("no member");
        for pass in 0..ELECTION_PASSES {
            if pass > 0 {
                tokio::time::sleep(ELECTION_PAUSE).await;
            }
            let mut electing = false;
            for (i, member) in self.members() {
                let call = tokio::time::timeout(
                    within,
                    post(&self.link, member, (path, token), body.clone()),
                );
                match call.await {
                    Ok(Ok((200, incoming))) => {
                        self.preferred.store(i, Ordering::Relaxed);
                        return Ok(incoming);
                    }
                    Ok(Ok((status, incoming))) => {
                        let text = read_all(incoming).await.unwrap_or_default();
                        let message = security::explain(gateway::error_message(&text));
                        if !electing_leader(&message) {
                            return Err(EtcdError::Refused {
                                path,
                                status,
                                message,
                            });
                        }
                        electing = true;
                        reason = format!("{member}: {message}");
                    }
                    Ok(Err(e)) => reason = format!("{member}: {e}"),
                    Err(_) => reason = format!("{member}: no answer in {within:?}"),
                }
            }
            if !electing {
                break;
            }
        }
        Err(EtcdError::Unreachable {
            endpoints: self.endpoints(),
            reason,
        })
    }

    /// A whole answer of a unary call.
    async fn call(&self, path: &'static str, body: &Value) -> Result<Vec<u8>, EtcdError> {
        self.call_within(path, body, CALL_TIMEOUT).await
    }

    /// [`Etcd::call`] giving each member `within` to answer.
    async fn call_within(
        &self,
        path: &'static str,
        body: &Value,
        within: Duration,
    ) -> Result<Vec<u8>, EtcdError> {
        let incoming = self.send_within(path, body, within).await?;
        self.read_within(incoming, within).await
    }

    /// The whole of an answer that must end within `within`.
    async fn read_within(
        &self,
        incoming: Incoming,
        within: Duration,
    ) -> Result<Vec<u8>, EtcdError> {
        tokio::time::timeout(within, read_all(incoming))
            .await
            .map_err(|_| "the answer did not end".to_string())
            .and_then(|r| r)
            .map_err(|reason| EtcdError::Unreachable {
                endpoints: self.endpoints(),
                reason,
            })
    }

    /// `key = value`, under `lease` when not 0.
    pub async fn put(&self, key: &str, value: &[u8], lease: i64) -> Result<(), EtcdError> {
        self.call("/v3/kv/put", &gateway::put(key, value, lease))
            .await
            .map(drop)
    }

    /// Every key under `prefix`, and the revision the answer is from.
    pub async fn range(&self, prefix: &str) -> Result<(Vec<Kv>, i64), EtcdError> {
        const PATH: &str = "/v3/kv/range";
        let body = self.call(PATH, &gateway::range(prefix)).await?;
        gateway::range_answer(&body).map_err(|reason| EtcdError::Decode { path: PATH, reason })
    }

    /// Puts all `items` under `lease` if none of their keys exists yet (compare-and-swap);
    /// false when one does, and then nothing is written.
    pub async fn create_all(
        &self,
        items: &[(String, Vec<u8>)],
        lease: i64,
    ) -> Result<bool, EtcdError> {
        const PATH: &str = "/v3/kv/txn";
        let body = self.call(PATH, &gateway::create_all(items, lease)).await?;
        gateway::txn_answer(&body).map_err(|reason| EtcdError::Decode { path: PATH, reason })
    }

    /// Deletes all `keys` in one transaction.
    pub async fn delete_all(&self, keys: &[String]) -> Result<(), EtcdError> {
        self.call("/v3/kv/txn", &gateway::delete_all(keys))
            .await
            .map(drop)
    }

    /// A new lease of `ttl` seconds; its id.
    pub async fn grant(&self, ttl: i64) -> Result<i64, EtcdError> {
        const PATH: &str = "/v3/lease/grant";
        let body = self.call(PATH, &gateway::lease_grant(ttl)).await?;
        gateway::grant_answer(&body)
            .map(|(id, _)| id)
            .map_err(|reason| EtcdError::Decode { path: PATH, reason })
    }

    /// Renews lease `id`, giving each member `within` to answer (well under the time the
    /// lease has left, so that a member that hangs does not cost the lease); its TTL, 0 when
    /// it has already expired.
    pub async fn keep_alive(&self, id: i64, within: Duration) -> Result<i64, EtcdError> {
        const PATH: &str = "/v3/lease/keepalive";
        let body = self
            .call_within(PATH, &gateway::keep_alive(id), within)
            .await?;
        gateway::keep_alive_answer(&body).map_err(|reason| EtcdError::Decode { path: PATH, reason })
    }

    /// Watches every key under `prefix` from `revision` on; a watch that brings neither an
    /// event nor a progress notification for `stall` counts as broken (a member that hangs or
    /// a connection that died without a reset).
    pub async fn watch(
        &self,
        prefix: &str,
        revision: i64,
        stall: Duration,
    ) -> Result<Watch, EtcdError> {
        let body = self
            .send("/v3/watch", &gateway::watch(prefix, revision))
            .await?;
        Ok(Watch {
            body,
            buf: Vec::new(),
            endpoints: self.endpoints(),
            stall,
        })
    }
}

/// How many times the members are tried while they elect a leader (an election takes about a
/// second; [`ELECTION_PAUSE`] apart, these cover a few).
const ELECTION_PASSES: u32 = 12;

/// The pause between two passes over the members during an election.
const ELECTION_PAUSE: Duration = Duration::from_millis(250);

/// True for etcd's answers that mean "no leader now, nothing was applied": the request can be
/// sent again once a leader is elected.
fn electing_leader(message: &str) -> bool {
    message.contains("leader changed") || message.contains("no leader")
}

/// One POST of `path` (under a user's `token`) over a new connection to `member`, through
/// `link`: the status and the body as it arrives.
async fn post(
    link: &Link,
    member: &str,
    (path, token): (&str, Option<&str>),
    body: Bytes,
) -> Result<(u16, Incoming), String> {
    let tcp = TcpStream::connect(member)
        .await
        .map_err(|e| e.to_string())?;
    match link {
        Link::Plain => request(TokioIo::new(tcp), member, (path, token), body).await,
        Link::Tls(tls) => {
            let name = security::server_name(member)?;
            let stream = tls
                .connect(name, tcp)
                .await
                .map_err(|e| format!("TLS: {e}"))?;
            request(TokioIo::new(stream), member, (path, token), body).await
        }
    }
}

/// [`post`] over an established connection `io`.
async fn request<T>(
    io: T,
    member: &str,
    (path, token): (&str, Option<&str>),
    body: Bytes,
) -> Result<(u16, Incoming), String>
where
    T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut tx, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!("etcd connection: {e}");
        }
    });
    let mut req = Request::builder()
        .method(Method::POST)
        .uri(path)
        .header(hyper::header::HOST, member)
        .header(hyper::header::CONTENT_TYPE, "application/json");
    if let Some(token) = token {
        req = req.header(hyper::header::AUTHORIZATION, token);
    }
    let req = req.body(Full::new(body)).map_err(|e| e.to_string())?;
    let resp = tx.send_request(req).await.map_err(|e| e.to_string())?;
    Ok((resp.status().as_u16(), resp.into_body()))
}

async fn read_all(body: Incoming) -> Result<Vec<u8>, String> {
    body.collect()
        .await
        .map(|b| b.to_bytes().to_vec())
        .map_err(|e| e.to_string())
}

/// A watch stream: answers as etcd sends them, one JSON object a line.
pub struct Watch {
    body: Incoming,
    buf: Vec<u8>,
    endpoints: String,
    stall: Duration,
}

impl Watch {
    /// The next answer; an error when the stream ends or breaks (the watcher resyncs).
    pub async fn next(&mut self) -> Result<WatchBatch, EtcdError> {
        loop {
            if let Some(end) = self.buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=end).collect();
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                return gateway::watch_answer(&line).map_err(|reason| EtcdError::Decode {
                    path: "/v3/watch",
                    reason,
                });
            }
            let gone = |reason: String| EtcdError::Unreachable {
                endpoints: self.endpoints.clone(),
                reason,
            };
            let Ok(frame) = tokio::time::timeout(self.stall, self.body.frame()).await else {
                return Err(gone(format!(
                    "the watch stalled (no event or progress in {:?})",
                    self.stall
                )));
            };
            match frame {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        self.buf.extend_from_slice(&data);
                    }
                }
                Some(Err(e)) => return Err(gone(format!("the watch broke: {e}"))),
                None => return Err(gone("the watch ended".into())),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_members() {
        let e = Etcd::from_url("etcd://10.0.0.1:2379,10.0.0.2:2379,10.0.0.3:2379").unwrap();
        assert_eq!(e.endpoints(), "10.0.0.1:2379,10.0.0.2:2379,10.0.0.3:2379");
        let order = |e: &Etcd| e.members().map(|(i, _)| i).collect::<Vec<_>>();
        assert_eq!(order(&e), [0, 1, 2]);
        e.clone().preferred.store(2, Ordering::Relaxed);
        assert_eq!(
            order(&e),
            [2, 0, 1],
            "the member that answered last goes first"
        );
        for bad in [
            "http://10.0.0.1:2379",
            "etcd://10.0.0.1",
            "etcd://:2379",
            "etcd://h:99999",
            "etcd://h:1/x",
            "etcd://",
        ] {
            assert!(Etcd::from_url(bad).is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn an_absent_store_is_unreachable_by_name() {
        // Port 9 on loopback: nothing listens (discard is not run here).
        let e = Etcd::from_url("etcd://127.0.0.1:9").unwrap();
        let err = e.put("/k", b"v", 0).await.unwrap_err();
        assert!(matches!(err, EtcdError::Unreachable { .. }), "{err}");
        assert!(err.to_string().contains("etcd at 127.0.0.1:9"), "{err}");
    }

    /// A one-shot HTTP server on loopback that answers every request with `answer`.
    async fn answering(answer: &'static str) -> String {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                let _ = s.write_all(answer.as_bytes()).await;
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_secs(30)).await;
                    drop(s);
                });
            }
        });
        addr
    }

    #[tokio::test]
    async fn a_dead_member_is_skipped_and_the_live_one_preferred() {
        let live = answering(
            "HTTP/1.1 200 OK\r\ncontent-length: 28\r\n\r\n{\"header\":{\"revision\":\"5\"}}\n",
        )
        .await;
        let e = Etcd::from_url(&format!("etcd://127.0.0.1:9,{live}")).unwrap();
        assert_eq!(e.range("/x").await.unwrap(), (vec![], 5));
        assert_eq!(e.members().next().unwrap().1, live);
    }

    #[tokio::test]
    async fn a_member_between_leaders_is_skipped() {
        const BODY: &str = r#"{"error":"etcdserver: leader changed","code":14,"message":"etcdserver: leader changed"}"#;
        let electing = answering(Box::leak(
            format!(
                "HTTP/1.1 503 Service Unavailable\r\ncontent-length: {}\r\n\r\n{BODY}",
                BODY.len()
            )
            .into_boxed_str(),
        ))
        .await;
        let live = answering(
            "HTTP/1.1 200 OK\r\ncontent-length: 28\r\n\r\n{\"header\":{\"revision\":\"7\"}}\n",
        )
        .await;
        let e = Etcd::from_url(&format!("etcd://{electing},{live}")).unwrap();
        assert_eq!(e.range("/x").await.unwrap(), (vec![], 7));
        // Alone, it is tried again for the election's time, then named.
        let e = Etcd::from_url(&format!("etcd://{electing}")).unwrap();
        let err = e.range("/x").await.unwrap_err();
        assert!(matches!(err, EtcdError::Unreachable { .. }), "{err}");
        assert!(err.to_string().contains("leader changed"), "{err}");
    }

    #[tokio::test]
    async fn a_silent_watch_stalls() {
        let quiet = answering("HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n").await;
        let e = Etcd::from_url(&format!("etcd://{quiet}")).unwrap();
        let mut w = e.watch("/x", 1, Duration::from_millis(200)).await.unwrap();
        let err = w.next().await.expect_err("no answer is an error");
        assert!(err.to_string().contains("stalled"), "{err}");
    }
}
