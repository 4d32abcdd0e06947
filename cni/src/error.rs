//! The CNI error object (spec: "Error"): what a plugin prints on stdout, with exit code 1, when
//! an operation fails. Codes 1-99 are the spec's; 100 and up are sluice's own.

use serde::{Deserialize, Serialize};

/// Incompatible CNI version.
pub const INCOMPATIBLE_VERSION: u32 = 1;
/// Unsupported field in the network configuration.
pub const UNSUPPORTED_FIELD: u32 = 2;
/// Container unknown or does not exist.
pub const UNKNOWN_CONTAINER: u32 = 3;
/// Invalid or missing necessary environment variables.
pub const INVALID_ENV: u32 = 4;
/// I/O failure.
pub const IO_FAILURE: u32 = 5;
/// Failed to decode content (stdin is not JSON of the expected shape).
pub const DECODE_FAILURE: u32 = 6;
/// Invalid network configuration.
pub const INVALID_CONFIG: u32 = 7;
/// Try again later: a transient condition (sluiced unreachable during ADD or CHECK).
pub const TRY_AGAIN_LATER: u32 = 11;
/// STATUS: the plugin cannot serve ADD now (sluiced unreachable).
pub const NOT_AVAILABLE: u32 = 50;
/// sluice's own: sluiced refused the request; its one-line reason is in `details`.
pub const DAEMON_REFUSED: u32 = 100;
/// sluice's own: CHECK found the attachment different from what ADD returned.
pub const CHECK_MISMATCH: u32 = 101;

/// A CNI error, printed as `{"cniVersion","code","msg","details"}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("CNI error {code}: {msg}{}", if details.is_empty() { String::new() } else { format!(" ({details})") })]
pub struct CniError {
    /// The version of the configuration, or the plugin's latest when the config is unreadable.
    #[serde(rename = "cniVersion")]
    pub cni_version: String,
    /// One of the codes above.
    pub code: u32,
    /// A short message.
    pub msg: String,
    /// The longer explanation (the daemon's or the parser's words).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub details: String,
}

impl CniError {
    /// An error with `code`, `msg` and `details`; the version is filled in later
    /// ([`CniError::with_version`]) once the configuration's version is known.
    pub fn new(code: u32, msg: impl Into<String>, details: impl Into<String>) -> CniError {
        CniError {
            cni_version: super::LATEST_VERSION.to_string(),
            code,
            msg: msg.into(),
            details: details.into(),
        }
    }

    /// The same error reported in the configuration's version.
    pub fn with_version(mut self, version: &str) -> CniError {
        self.cni_version = version.to_string();
        self
    }

    /// The JSON printed on stdout.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| {
            format!(
                r#"{{"cniVersion":"{}","code":{},"msg":"error"}}"#,
                super::LATEST_VERSION,
                self.code
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prints_the_spec_shape() {
        let e = CniError::new(INVALID_CONFIG, "bad subnet", "10.0.0.0/33").with_version("1.0.0");
        let v: serde_json::Value = serde_json::from_str(&e.to_json()).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"cniVersion": "1.0.0", "code": 7, "msg": "bad subnet", "details": "10.0.0.0/33"})
        );
        let e = CniError::new(NOT_AVAILABLE, "down", "");
        assert!(e.to_json().find("details").is_none());
        assert_eq!(e.to_string(), "CNI error 50: down");
    }
}
