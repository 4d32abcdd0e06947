//! A CNI runtime in a few functions (CNI spec 1.0/1.1): executes plugin binaries with the
//! `CNI_*` variables and the network configuration on stdin, and runs a configuration list in
//! order for ADD (each plugin gets the previous one's result as `prevResult`), in order for
//! CHECK and in reverse for DEL (both with the ADD's result as `prevResult`).

use std::fmt;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use serde_json::{Map, Value};

use super::{run_unchecked, EngineError, Result};

/// A CNI operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CniCommand {
    /// Attach the container.
    Add,
    /// Verify an attachment.
    Check,
    /// Detach the container.
    Del,
    /// Ask which spec versions the plugin speaks.
    Version,
    /// Ask whether the plugin is ready for ADD (spec 1.1).
    Status,
    /// Remove resources of attachments not in `cni.dev/valid-attachments` (spec 1.1).
    Gc,
}

impl fmt::Display for CniCommand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CniCommand::Add => "ADD",
            CniCommand::Check => "CHECK",
            CniCommand::Del => "DEL",
            CniCommand::Version => "VERSION",
            CniCommand::Status => "STATUS",
            CniCommand::Gc => "GC",
        })
    }
}

/// The error object a plugin prints on failure (spec: "Error" section).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("code {code}: {msg}{}", if details.is_empty() { String::new() } else { format!(" ({details})") })]
pub struct CniError {
    /// The error code (1-99 reserved by the spec, e.g. 7 = invalid network config).
    pub code: u64,
    /// Short message.
    pub msg: String,
    /// Longer explanation.
    pub details: String,
}

impl CniError {
    /// The error a failed plugin printed, or one made from its stderr when it printed none.
    pub fn parse(stdout: &[u8], stderr: &[u8]) -> CniError {
        match serde_json::from_slice::<Value>(stdout) {
            Ok(v) if v.get("code").is_some() || v.get("msg").is_some() => CniError {
                code: v["code"].as_u64().unwrap_or(0),
                msg: v["msg"].as_str().unwrap_or_default().to_string(),
                details: v["details"].as_str().unwrap_or_default().to_string(),
            },
            _ => CniError {
                code: 0,
                msg: "plugin failed without a CNI error".into(),
                details: String::from_utf8_lossy(stderr).trim().to_string(),
            },
        }
    }
}

/// The runtime's side of one attachment: what goes into the `CNI_*` variables and the
/// capability arguments that become `runtimeConfig`.
#[derive(Clone, Debug, Default)]
pub struct CniRuntime {
    /// `CNI_CONTAINERID`.
    pub container_id: String,
    /// `CNI_NETNS`: path of the container's network namespace.
    pub netns: PathBuf,
    /// `CNI_IFNAME`: the interface to create inside it.
    pub ifname: String,
    /// `CNI_ARGS`: extra `KEY=VALUE` pairs.
    pub args: Vec<(String, String)>,
    /// Capability arguments (e.g. `portMappings`), given to plugins that declare the capability.
    pub capability_args: Map<String, Value>,
}

impl CniRuntime {
    /// The `CNI_ARGS` value: `K1=V1;K2=V2`.
    pub fn cni_args(&self) -> String {
        self.args
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(";")
    }
}

/// The configuration a plugin of a list receives (spec: "Deriving execution configuration from
/// plugin configuration"): the plugin's object plus the list's `name` and `cniVersion`, the
/// previous result as `prevResult`, and `runtimeConfig` holding the capability arguments whose
/// capability the plugin declares (the `capabilities` key itself is removed).
pub fn plugin_config(
    list: &Value,
    plugin: &Value,
    prev: Option<&Value>,
    rt: &CniRuntime,
) -> Result<Value> {
    let mut conf = plugin
        .as_object()
        .cloned()
        .ok_or_else(|| EngineError::CniData("a plugin configuration is not an object".into()))?;
    for key in ["name", "cniVersion"] {
        let v = list
            .get(key)
            .filter(|v| v.is_string())
            .ok_or_else(|| EngineError::CniData(format!("the list has no {key}")))?;
        conf.insert(key.into(), v.clone());
    }
    if let Some(caps) = conf.remove("capabilities") {
        let runtime: Map<String, Value> = rt
            .capability_args
            .iter()
            .filter(|(k, _)| caps.get(k.as_str()).and_then(Value::as_bool) == Some(true))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        if !runtime.is_empty() {
            conf.insert("runtimeConfig".into(), Value::Object(runtime));
        }
    }
    if let Some(p) = prev {
        conf.insert("prevResult".into(), p.clone());
    }
    Ok(Value::Object(conf))
}

fn plugins(list: &Value) -> Result<&Vec<Value>> {
    list.get("plugins")
        .and_then(Value::as_array)
        .filter(|p| !p.is_empty())
        .ok_or_else(|| EngineError::CniData("the list has no plugins".into()))
}

fn plugin_type(conf: &Value) -> Result<&str> {
    conf.get("type")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty() && !t.contains('/'))
        .ok_or_else(|| EngineError::CniData("a plugin has no valid type".into()))
}

/// Executes CNI plugins found in `plugin_dirs`, optionally inside a network namespace: the
/// "host" side of CNI, where e.g. the bridge plugin creates its bridge, must be a namespace of
/// the test's own, never the root namespace.
#[derive(Clone, Debug)]
pub struct CniRunner {
    /// `CNI_PATH`: where plugin binaries are looked up, in order.
    pub plugin_dirs: Vec<PathBuf>,
    /// Full name of the network namespace the plugins run in (`nsenter --net=/run/netns/NAME`);
    /// None runs them in the caller's namespace.
    pub host_netns: Option<String>,
    /// How long one plugin may run.
    pub timeout: Duration,
}

impl CniRunner {
    /// A runner for plugins in `plugin_dirs`, executed inside `host_netns`.
    pub fn new(plugin_dirs: Vec<PathBuf>, host_netns: Option<String>) -> CniRunner {
        CniRunner {
            plugin_dirs,
            host_netns,
            timeout: Duration::from_secs(30),
        }
    }

    fn find(&self, plugin: &str) -> Result<PathBuf> {
        self.plugin_dirs
            .iter()
            .map(|d| d.join(plugin))
            .find(|p| p.is_file())
            .ok_or_else(|| EngineError::CniData(format!("plugin {plugin} not found in CNI_PATH")))
    }

    /// Executes one plugin with `command` on `config` (already derived, see [`plugin_config`]);
    /// its JSON result (None when it printed nothing, as DEL and CHECK do), or its CNI error.
    pub fn exec(
        &self,
        command: CniCommand,
        rt: &CniRuntime,
        config: &Value,
    ) -> Result<Option<Value>> {
        let plugin = plugin_type(config)?.to_string();
        let bin = self.find(&plugin)?;
        let mut cmd = match &self.host_netns {
            Some(ns) => {
                let mut c = Command::new("nsenter");
                c.arg(format!("--net=/run/netns/{ns}")).arg("--").arg(&bin);
                c
            }
            None => Command::new(&bin),
        };
        let path = std::env::join_paths(&self.plugin_dirs)
            .map_err(|e| EngineError::CniData(e.to_string()))?;
        cmd.env("CNI_COMMAND", command.to_string())
            .env("CNI_CONTAINERID", &rt.container_id)
            .env("CNI_NETNS", &rt.netns)
            .env("CNI_IFNAME", &rt.ifname)
            .env("CNI_ARGS", rt.cni_args())
            .env("CNI_PATH", path);
        let input = serde_json::to_vec(config).map_err(|e| EngineError::CniData(e.to_string()))?;
        let out = run_unchecked(&mut cmd, Some(&input), self.timeout)?;
        if !out.status.success() {
            return Err(EngineError::Cni {
                plugin,
                command,
                error: CniError::parse(&out.stdout, &out.stderr),
            });
        }
        if out.stdout.iter().all(u8::is_ascii_whitespace) {
            return Ok(None);
        }
        serde_json::from_slice(&out.stdout)
            .map(Some)
            .map_err(|e| EngineError::CniData(format!("{plugin} {command} printed bad JSON: {e}")))
    }

    /// ADD of a whole list: each plugin in order, fed the previous result; the final result.
    pub fn add_list(&self, list: &Value, rt: &CniRuntime) -> Result<Value> {
        let mut prev: Option<Value> = None;
        for p in plugins(list)? {
            let conf = plugin_config(list, p, prev.as_ref(), rt)?;
            let result = self.exec(CniCommand::Add, rt, &conf)?.ok_or_else(|| {
                EngineError::CniData(format!(
                    "{} ADD printed no result",
                    plugin_type(p).unwrap_or("?")
                ))
            })?;
            prev = Some(result);
        }
        prev.ok_or_else(|| EngineError::CniData("the list has no plugins".into()))
    }

    /// CHECK of a whole list, in order, each plugin given the ADD's result; skipped when the
    /// list sets `disableCheck`.
    pub fn check_list(&self, list: &Value, rt: &CniRuntime, added: &Value) -> Result<()> {
        if list.get("disableCheck").and_then(Value::as_bool) == Some(true) {
            return Ok(());
        }
        for p in plugins(list)? {
            let conf = plugin_config(list, p, Some(added), rt)?;
            self.exec(CniCommand::Check, rt, &conf)?;
        }
        Ok(())
    }

    /// DEL of a whole list, in reverse order, each plugin given the ADD's result if known.
    pub fn del_list(&self, list: &Value, rt: &CniRuntime, added: Option<&Value>) -> Result<()> {
        for p in plugins(list)?.iter().rev() {
            let conf = plugin_config(list, p, added, rt)?;
            self.exec(CniCommand::Del, rt, &conf)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn list() -> Value {
        json!({
            "cniVersion": "1.0.0",
            "name": "net1",
            "plugins": [
                {"type": "bridge", "bridge": "br0"},
                {"type": "portmap", "capabilities": {"portMappings": true, "bandwidth": false}}
            ]
        })
    }

    fn rt() -> CniRuntime {
        let mut rt = CniRuntime {
            container_id: "c1".into(),
            netns: "/run/netns/x".into(),
            ifname: "eth0".into(),
            args: vec![
                ("IgnoreUnknown".into(), "1".into()),
                ("K".into(), "V".into()),
            ],
            ..CniRuntime::default()
        };
        rt.capability_args.insert(
            "portMappings".into(),
            json!([{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]),
        );
        rt.capability_args
            .insert("bandwidth".into(), json!({"ingressRate": 1}));
        rt
    }

    #[test]
    fn first_plugin_gets_name_and_version_only() {
        let l = list();
        let c = plugin_config(&l, &l["plugins"][0], None, &rt()).unwrap();
        assert_eq!(
            c,
            json!({"type": "bridge", "bridge": "br0", "name": "net1", "cniVersion": "1.0.0"})
        );
    }

    #[test]
    fn chained_plugin_gets_prev_result_and_declared_capabilities_only() {
        let l = list();
        let prev = json!({"cniVersion": "1.0.0", "ips": [{"address": "10.0.0.2/24"}]});
        let c = plugin_config(&l, &l["plugins"][1], Some(&prev), &rt()).unwrap();
        assert_eq!(c["prevResult"], prev);
        assert_eq!(c["runtimeConfig"]["portMappings"][0]["hostPort"], 8080);
        assert!(c["runtimeConfig"].get("bandwidth").is_none());
        assert!(c.get("capabilities").is_none());
    }

    #[test]
    fn bad_lists_are_errors() {
        let l = json!({"name": "n", "plugins": [{"type": "bridge"}]});
        assert!(plugin_config(&l, &l["plugins"][0], None, &rt()).is_err());
        assert!(plugins(&json!({"plugins": []})).is_err());
        assert!(plugin_type(&json!({"type": "../bin/sh"})).is_err());
    }

    #[test]
    fn cni_args_and_errors() {
        assert_eq!(rt().cni_args(), "IgnoreUnknown=1;K=V");
        let e = CniError::parse(
            br#"{"cniVersion":"1.0.0","code":7,"msg":"bad config","details":"no bridge"}"#,
            b"",
        );
        assert_eq!(e.code, 7);
        assert_eq!(e.to_string(), "code 7: bad config (no bridge)");
        let e = CniError::parse(b"panic", b"boom\n");
        assert_eq!((e.code, e.details.as_str()), (0, "boom"));
    }

    #[test]
    fn runner_passes_variables_and_stdin() {
        let dir = std::env::temp_dir().join(format!("sluice-cni-ut-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let script = dir.join("echoer");
        std::fs::write(
            &script,
            "#!/bin/sh\nconf=$(cat)\nprintf '{\"cmd\":\"%s\",\"args\":\"%s\",\"if\":\"%s\",\"conf\":%s}' \
             \"$CNI_COMMAND\" \"$CNI_ARGS\" \"$CNI_IFNAME\" \"$conf\"\n",
        )
        .unwrap();
        std::fs::write(
            dir.join("failer"),
            "#!/bin/sh\ncat >/dev/null\necho '{\"code\":11,\"msg\":\"try again\"}'\nexit 1\n",
        )
        .unwrap();
        for f in ["echoer", "failer"] {
            Command::new("chmod")
                .arg("+x")
                .arg(dir.join(f))
                .status()
                .unwrap();
        }
        let runner = CniRunner::new(vec![dir.clone()], None);
        let l = json!({"cniVersion": "1.0.0", "name": "n", "plugins": [{"type": "echoer"}, {"type": "echoer", "x": 1}]});
        let r = runner.add_list(&l, &rt()).unwrap();
        assert_eq!(r["cmd"], "ADD");
        assert_eq!(r["args"], "IgnoreUnknown=1;K=V");
        assert_eq!(r["conf"]["x"], 1);
        assert_eq!(r["conf"]["prevResult"]["conf"]["type"], "echoer");
        let l = json!({"cniVersion": "1.0.0", "name": "n", "plugins": [{"type": "failer"}]});
        let e = runner.del_list(&l, &rt(), None).unwrap_err();
        assert!(
            matches!(e, EngineError::Cni { command: CniCommand::Del, ref error, .. } if error.code == 11)
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
