//! etcd as operators deploy it: TLS to its members and etcd's own user authentication,
//! configured with `sluiced --cluster-store-opt KEY=VALUE[,KEY=VALUE...]` (repeatable):
//!
//! - `kv.cacertfile=PEM`: the CA that signed the members' certificates; turns TLS on (docker's
//!   name for the same option);
//! - `kv.certfile=PEM`, `kv.keyfile=PEM`: this host's client certificate and key, for members
//!   started with `--client-cert-auth` (docker's names);
//! - `kv.username=NAME` with `kv.passwordfile=FILE` (or `kv.password=SECRET`): etcd's user
//!   authentication (`etcdctl auth enable`); the password is exchanged for a token through the
//!   gateway's `/v3/auth/authenticate`, sent in the `Authorization` header of every call and
//!   renewed when etcd says it expired.
//!
//! TLS is rustls (with the ring provider, a C and assembly build without cmake): the one TLS
//! stack the tokio ecosystem maintains in Rust, and the client needs nothing of OpenSSL's.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore};
use tokio_rustls::TlsConnector;

/// Why `--cluster-store-opt` was refused.
#[derive(Debug, thiserror::Error)]
pub enum OptionError {
    /// An option is not `KEY=VALUE` or its key is unknown.
    #[error("--cluster-store-opt {0:?}: expected kv.cacertfile, kv.certfile, kv.keyfile, kv.username, kv.password or kv.passwordfile =VALUE")]
    Unknown(String),
    /// Options that only make sense together were given apart.
    #[error("--cluster-store-opt: {0}")]
    Incomplete(&'static str),
    /// A file could not be read or holds no usable PEM.
    #[error("--cluster-store-opt {key}={}: {why}", path.display())]
    File {
        /// The option.
        key: &'static str,
        /// The file.
        path: PathBuf,
        /// What went wrong.
        why: String,
    },
}

/// The parsed `--cluster-store-opt`s.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StoreOptions {
    cacert: Option<PathBuf>,
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    username: Option<String>,
    password: Option<String>,
    password_file: Option<PathBuf>,
}

impl StoreOptions {
    /// Parses every `--cluster-store-opt` value (each one or more comma-separated
    /// `KEY=VALUE`s) and checks that they fit together.
    pub fn parse<S: AsRef<str>>(values: &[S]) -> Result<StoreOptions, OptionError> {
        let mut o = StoreOptions::default();
        for item in values.iter().flat_map(|v| v.as_ref().split(',')) {
            let item = item.trim();
            if item.is_empty() {
                continue;
            }
            let (k, v) = item
                .split_once('=')
                .ok_or_else(|| OptionError::Unknown(item.to_string()))?;
            let v = v.to_string();
            match k.trim() {
                "kv.cacertfile" => o.cacert = Some(v.into()),
                "kv.certfile" => o.cert = Some(v.into()),
                "kv.keyfile" => o.key = Some(v.into()),
                "kv.username" => o.username = Some(v),
                "kv.password" => o.password = Some(v),
                "kv.passwordfile" => o.password_file = Some(v.into()),
                _ => return Err(OptionError::Unknown(item.to_string())),
            }
        }
        if o.cert.is_some() != o.key.is_some() {
            return Err(OptionError::Incomplete(
                "kv.certfile and kv.keyfile go together",
            ));
        }
        if o.cert.is_some() && o.cacert.is_none() {
            return Err(OptionError::Incomplete(
                "a client certificate needs kv.cacertfile (the members' CA)",
            ));
        }
        let secrets = usize::from(o.password.is_some()) + usize::from(o.password_file.is_some());
        if o.username.is_some() != (secrets == 1) || secrets > 1 {
            return Err(OptionError::Incomplete(
                "kv.username needs exactly one of kv.password and kv.passwordfile",
            ));
        }
        Ok(o)
    }

    /// The TLS client for the members, when `kv.cacertfile` turns TLS on.
    pub fn tls(&self) -> Result<Option<TlsConnector>, OptionError> {
        let Some(ca) = &self.cacert else {
            return Ok(None);
        };
        let mut roots = RootCertStore::empty();
        for cert in certificates("kv.cacertfile", ca)? {
            roots
                .add(cert)
                .map_err(|e| file_error("kv.cacertfile", ca, e))?;
        }
        // ring, not rustls' default aws-lc-rs (whose C build is far heavier): rustls 0.23.48
        // marks it deprecated for lacking post-quantum key exchange, which a client of etcd on
        // an operator's management network does not need.
        #[allow(deprecated)]
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| file_error("kv.cacertfile", ca, e))?
            .with_root_certificates(roots);
        let config = match (&self.cert, &self.key) {
            (Some(cert), Some(key)) => {
                let chain = certificates("kv.certfile", cert)?;
                let key_der = PrivateKeyDer::from_pem_file(key)
                    .map_err(|e| file_error("kv.keyfile", key, e))?;
                builder
                    .with_client_auth_cert(chain, key_der)
                    .map_err(|e| file_error("kv.keyfile", key, e))?
            }
            _ => builder.with_no_client_auth(),
        };
        Ok(Some(TlsConnector::from(Arc::new(config))))
    }

    /// The user etcd's authentication knows this host as, when `kv.username` is given.
    pub fn credentials(&self) -> Result<Option<Credentials>, OptionError> {
        let Some(name) = &self.username else {
            return Ok(None);
        };
        let password = match (&self.password, &self.password_file) {
            (Some(p), _) => p.clone(),
            (None, Some(path)) => std::fs::read_to_string(path)
                .map_err(|e| file_error("kv.passwordfile", path, e))?
                .trim_end_matches(['\r', '\n'])
                .to_string(),
            (None, None) => return Ok(None),
        };
        Ok(Some(Credentials {
            name: name.clone(),
            password,
            token: Arc::new(Mutex::new(None)),
        }))
    }
}

fn file_error(key: &'static str, path: &Path, why: impl std::fmt::Display) -> OptionError {
    OptionError::File {
        key,
        path: path.to_path_buf(),
        why: why.to_string(),
    }
}

/// Every certificate of the PEM file at `path` (at least one).
fn certificates(
    key: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, OptionError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| file_error(key, path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_error(key, path, e))?;
    if certs.is_empty() {
        return Err(file_error(key, path, "no certificate in the file"));
    }
    Ok(certs)
}

/// The name a member's certificate must carry: the host part of its `HOST:PORT` (an IP
/// address is checked against the certificate's IP addresses).
pub fn server_name(member: &str) -> Result<ServerName<'static>, String> {
    let host = member.rsplit_once(':').map_or(member, |(h, _)| h);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(host.to_string()).map_err(|e| format!("{host}: {e}"))
}

/// A user of etcd's authentication and the token its password was last exchanged for (shared
/// by the client's clones).
#[derive(Clone)]
pub struct Credentials {
    /// The user.
    pub name: String,
    password: String,
    token: Arc<Mutex<Option<String>>>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credentials({})", self.name)
    }
}

impl Credentials {
    /// The body of the `AuthenticateRequest`.
    pub fn request(&self) -> serde_json::Value {
        serde_json::json!({ "name": self.name, "password": self.password })
    }

    /// The token in hand, if any.
    pub fn token(&self) -> Option<String> {
        self.token.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Keeps `token` (a fresh one) for the next calls; `None` drops one etcd no longer takes.
    pub fn set_token(&self, token: Option<String>) {
        *self.token.lock().unwrap_or_else(|p| p.into_inner()) = token;
    }
}

/// True for etcd's answers that mean "the token is no longer good": authenticate again.
pub fn token_expired(message: &str) -> bool {
    message.contains("invalid auth token") || message.contains("revision of auth store is old")
}

/// etcd's `message` with what to do about it, when it is one an operator cannot act on as it
/// stands: with authentication on, etcd's JSON gateway refuses every request over a client
/// certificate that has a CommonName (CVE-2018-16886: it would stand for a user).
pub fn explain(message: String) -> String {
    if message.contains("CommonName of client sending a request against gateway") {
        format!(
            "{message} (etcd refuses client certificates with a CN through its JSON gateway while \
             authentication is on: give this host a certificate without a CN, e.g. \
             -subj /O=sluice/OU=HOST, and log in with kv.username)"
        )
    } else {
        message
    }
}

/// The token of an `AuthenticateResponse`.
pub fn token_answer(body: &[u8]) -> Result<String, String> {
    #[derive(serde::Deserialize)]
    struct Answer {
        #[serde(default)]
        token: String,
    }
    let a: Answer = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    if a.token.is_empty() {
        return Err("no token in the answer".into());
    }
    Ok(a.token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_parse_dockers_names_and_must_fit_together() {
        let o = StoreOptions::parse(&[
            "kv.cacertfile=/ca.pem,kv.certfile=/c.pem",
            "kv.keyfile=/k.pem",
        ])
        .unwrap();
        assert_eq!(o.cacert.as_deref(), Some(Path::new("/ca.pem")));
        assert_eq!(o.key.as_deref(), Some(Path::new("/k.pem")));
        assert_eq!(
            StoreOptions::parse::<&str>(&[]).unwrap(),
            StoreOptions::default()
        );
        for bad in [
            "kv.cacert=/x",
            "kv.cacertfile",
            "kv.certfile=/c.pem",
            "kv.certfile=/c.pem,kv.keyfile=/k.pem",
            "kv.username=root",
            "kv.password=x",
            "kv.username=root,kv.password=x,kv.passwordfile=/p",
        ] {
            assert!(StoreOptions::parse(&[bad]).is_err(), "{bad}");
        }
        let o = StoreOptions::parse(&["kv.username=root,kv.password=pw"]).unwrap();
        let c = o.credentials().unwrap().unwrap();
        assert_eq!(
            c.request(),
            serde_json::json!({"name": "root", "password": "pw"})
        );
        assert!(!format!("{c:?}").contains("pw"), "no password in logs");
        assert!(o.tls().unwrap().is_none(), "no CA: plain TCP");
    }

    #[test]
    fn missing_or_empty_pem_files_are_named() {
        let dir = std::env::temp_dir().join(format!("sluice-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        for path in [dir.join("absent.pem"), empty] {
            let o = StoreOptions::parse(&[format!("kv.cacertfile={}", path.display())]).unwrap();
            let Err(err) = o.tls() else {
                panic!("{} is no CA", path.display())
            };
            let err = err.to_string();
            assert!(
                err.contains("kv.cacertfile") && err.contains(&*path.to_string_lossy()),
                "{err}"
            );
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn members_name_their_certificates() {
        assert_eq!(
            server_name("10.0.0.1:2379").unwrap(),
            ServerName::IpAddress(std::net::Ipv4Addr::new(10, 0, 0, 1).into())
        );
        assert_eq!(
            server_name("etcd-1.example:2379").unwrap().to_str(),
            "etcd-1.example"
        );
        assert!(matches!(
            server_name("[::1]:2379").unwrap(),
            ServerName::IpAddress(_)
        ));
    }

    #[test]
    fn tokens_come_from_the_answer_and_expire_by_message() {
        assert_eq!(
            token_answer(br#"{"header":{},"token":"abc.12"}"#).unwrap(),
            "abc.12"
        );
        assert!(token_answer(br#"{"header":{}}"#).is_err());
        assert!(token_expired("etcdserver: invalid auth token"));
        assert!(!token_expired("etcdserver: permission denied"));
        let cn = "CommonName of client sending a request against gateway will be ignored and not used as expected";
        assert!(explain(cn.into()).contains("without a CN"));
        assert_eq!(explain("etcdserver: x".into()), "etcdserver: x");
    }
}
