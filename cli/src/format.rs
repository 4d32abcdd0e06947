//! docker's `--format`: a Go text/template (gtmpl) run over each object's JSON, with docker's
//! extra functions (`json`, `join`, `split`, `lower`, `upper`, `title`), `\t`/`\n` escapes,
//! and `table ...`, which prints a header row and aligns the columns as docker's tabwriter does.

use std::collections::HashMap;

use anyhow::{anyhow, Result};
use gtmpl::{Context, Func, FuncError, Template, Value};
use serde_json::Value as Json;

/// A parsed `--format`.
pub struct Format {
    template: Template,
    table: bool,
}

impl Format {
    /// Parses docker's `--format` text: `table ` first for a table with a header row.
    pub fn parse(text: &str) -> Result<Format> {
        let (table, body) = match text.strip_prefix("table") {
            Some(rest) => (true, rest),
            None => (false, text),
        };
        let body = body
            .trim_matches(' ')
            .replace("\\t", "\t")
            .replace("\\n", "\n");
        let mut template = Template::default();
        let funcs: [(&str, Func); 6] = [
            ("json", json),
            ("join", join),
            ("split", split),
            ("lower", lower),
            ("upper", upper),
            ("title", title),
        ];
        template.add_funcs(&funcs);
        template
            .parse(body)
            .map_err(|e| anyhow!("template parsing error: {e}"))?;
        Ok(Format { template, table })
    }

    /// The template over one object.
    pub fn render(&self, item: &Json) -> Result<String> {
        self.template
            .render(&Context::from(to_value(item)))
            .map_err(|e| anyhow!("template: {e}"))
    }

    /// Every item's line; for a table, a header row first (the template over `headers`, the
    /// column name of each field) and the columns aligned.
    pub fn lines(&self, items: &[Json], headers: &Json) -> Result<String> {
        let mut rows = Vec::with_capacity(items.len() + 1);
        if self.table {
            rows.push(self.render(headers)?);
        }
        for i in items {
            rows.push(self.render(i)?);
        }
        Ok(if self.table {
            align(&rows)
        } else {
            rows.iter().map(|r| format!("{r}\n")).collect()
        })
    }
}

/// docker's tabwriter (Go's `tabwriter.NewWriter(out, 10, 1, 3, ' ', 0)`: minimum width 10,
/// padding 3, as docker 20.10 prints): every tab-separated cell but a line's last is padded to
/// its column's width.
pub fn align(rows: &[String]) -> String {
    let cells: Vec<Vec<&str>> = rows.iter().map(|r| r.split('\t').collect()).collect();
    let mut widths: Vec<usize> = Vec::new();
    for row in &cells {
        for (i, c) in row.iter().enumerate().take(row.len().saturating_sub(1)) {
            let w = (c.chars().count() + 3).max(10);
            match widths.get_mut(i) {
                Some(old) => *old = (*old).max(w),
                None => widths.push(w),
            }
        }
    }
    let mut out = String::new();
    for row in &cells {
        for (i, c) in row.iter().enumerate() {
            if i + 1 < row.len() {
                out.push_str(&format!("{c:<0$}", widths[i]));
            } else {
                out.push_str(c);
            }
        }
        out.push('\n');
    }
    out
}

/// JSON as a template value: objects whose keys are all docker field names (capitalised)
/// act as Go structs (an unknown field is an error), other objects as Go maps.
pub fn to_value(j: &Json) -> Value {
    match j {
        Json::Null => Value::Nil,
        Json::Bool(b) => Value::Bool(*b),
        Json::Number(n) => match (n.as_u64(), n.as_i64()) {
            (Some(u), _) => Value::from(u),
            (None, Some(i)) => Value::from(i),
            _ => Value::from(n.as_f64().unwrap_or_default()),
        },
        Json::String(s) => Value::String(s.clone()),
        Json::Array(a) => Value::Array(a.iter().map(to_value).collect()),
        Json::Object(o) => {
            let m: HashMap<String, Value> =
                o.iter().map(|(k, v)| (k.clone(), to_value(v))).collect();
            let struct_like = !o.is_empty()
                && o.keys()
                    .all(|k| k.starts_with(|c: char| c.is_ascii_uppercase()));
            if struct_like {
                Value::Object(m)
            } else {
                Value::Map(m)
            }
        }
    }
}

/// A template value back as JSON (keys sorted, as Go's encoder writes maps).
fn to_json(v: &Value) -> Json {
    match v {
        Value::NoValue | Value::Nil | Value::Function(_) => Json::Null,
        Value::Bool(b) => Json::Bool(*b),
        Value::String(s) => Json::String(s.clone()),
        Value::Number(n) => match (n.as_u64(), n.as_i64(), n.as_f64()) {
            (Some(u), _, _) => Json::from(u),
            (None, Some(i), _) => Json::from(i),
            (None, None, f) => f.map_or(Json::Null, Json::from),
        },
        Value::Array(a) => Json::Array(a.iter().map(to_json).collect()),
        Value::Object(m) | Value::Map(m) => {
            let sorted: std::collections::BTreeMap<&String, Json> =
                m.iter().map(|(k, v)| (k, to_json(v))).collect();
            Json::Object(sorted.into_iter().map(|(k, v)| (k.clone(), v)).collect())
        }
    }
}

fn one<'a>(name: &str, args: &'a [Value]) -> Result<&'a Value, FuncError> {
    match args {
        [a] => Ok(a),
        _ => Err(FuncError::ExactlyXArgs(name.into(), 1)),
    }
}

fn text(name: &str, v: &Value) -> Result<String, FuncError> {
    match v {
        Value::String(s) => Ok(s.clone()),
        _ => Err(FuncError::Generic(format!("{name} wants a string"))),
    }
}

/// `{{json .X}}`: compact JSON, HTML characters unescaped (docker's encoder settings).
fn json(args: &[Value]) -> Result<Value, FuncError> {
    Ok(Value::String(to_json(one("json", args)?).to_string()))
}

/// `{{join .List ","}}`.
fn join(args: &[Value]) -> Result<Value, FuncError> {
    match args {
        [Value::Array(items), Value::String(sep)] => Ok(Value::String(
            items
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(sep),
        )),
        _ => Err(FuncError::Generic(
            "join wants a list and a separator".into(),
        )),
    }
}

/// `{{split .X ","}}`.
fn split(args: &[Value]) -> Result<Value, FuncError> {
    match args {
        [Value::String(s), Value::String(sep)] => Ok(Value::Array(
            s.split(sep.as_str()).map(Value::from).collect(),
        )),
        _ => Err(FuncError::Generic(
            "split wants a string and a separator".into(),
        )),
    }
}

fn lower(args: &[Value]) -> Result<Value, FuncError> {
    Ok(Value::String(
        text("lower", one("lower", args)?)?.to_lowercase(),
    ))
}

fn upper(args: &[Value]) -> Result<Value, FuncError> {
    Ok(Value::String(
        text("upper", one("upper", args)?)?.to_uppercase(),
    ))
}

/// `{{title .X}}`: each word's first letter capitalised.
fn title(args: &[Value]) -> Result<Value, FuncError> {
    let s = text("title", one("title", args)?)?;
    let mut out = String::with_capacity(s.len());
    let mut start = true;
    for c in s.chars() {
        if start {
            out.extend(c.to_uppercase());
        } else {
            out.push(c);
        }
        start = !c.is_alphanumeric();
    }
    Ok(Value::String(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn run(f: &str, v: &Json) -> String {
        Format::parse(f).unwrap().render(v).unwrap()
    }

    fn net() -> Json {
        json!({"Name": "web", "Id": "abc", "Driver": "bridge",
               "IPAM": {"Driver": "default", "Options": {}, "Config": [{"Subnet": "10.1.0.0/24", "Gateway": "10.1.0.1"}, {"Subnet": "10.2.0.0/24"}]},
               "Options": {"com.docker.network.driver.mtu": "1400"}, "Labels": {}, "Internal": false})
    }

    #[test]
    fn fields_nested_fields_range_and_index() {
        let n = net();
        assert_eq!(run("{{.Name}}", &n), "web");
        assert_eq!(run("{{ .IPAM.Driver }}", &n), "default");
        assert_eq!(
            run("{{range .IPAM.Config}}{{.Subnet}} {{end}}", &n),
            "10.1.0.0/24 10.2.0.0/24 "
        );
        assert_eq!(
            run(r#"{{index .Options "com.docker.network.driver.mtu"}}"#, &n),
            "1400"
        );
        assert_eq!(run("{{.Internal}}", &n), "false");
        assert_eq!(run("{{if .Internal}}i{{else}}e{{end}}", &n), "e");
        assert_eq!(
            run("{{.Labels.nope}}", &n),
            "<no value>",
            "a map: Go's <no value>"
        );
        assert!(
            Format::parse("{{.Nope}}").unwrap().render(&n).is_err(),
            "a struct: an unknown field is an error, as in docker"
        );
        assert!(Format::parse("{{.Name").is_err());
    }

    #[test]
    fn docker_functions() {
        let n = net();
        assert_eq!(
            run("{{json .IPAM.Config}}", &n),
            r#"[{"Gateway":"10.1.0.1","Subnet":"10.1.0.0/24"},{"Subnet":"10.2.0.0/24"}]"#
        );
        assert_eq!(run("{{json .Labels}}", &n), "{}");
        assert_eq!(run("{{json .Internal}}", &n), "false");
        assert_eq!(
            run("{{upper .Name}} {{lower .Driver}} {{title .Driver}}", &n),
            "WEB bridge Bridge"
        );
        assert_eq!(run(r#"{{join (split "a,b" ",") "+"}}"#, &n), "a+b");
        assert_eq!(
            run("{{json .}}", &json!({"Name": "a<b", "ID": "1"})),
            r#"{"ID":"1","Name":"a<b"}"#,
            "sorted keys, no HTML escaping"
        );
    }

    #[test]
    fn table_has_a_header_and_dockers_columns() {
        let f = Format::parse(r"table {{.Name}}\t{{.Driver}}").unwrap();
        let items = [
            json!({"Name": "bridge", "Driver": "bridge"}),
            json!({"Name": "a-much-longer-network-name", "Driver": "sluice"}),
        ];
        let headers = json!({"Name": "NAME", "Driver": "DRIVER"});
        assert_eq!(
            f.lines(&items, &headers).unwrap(),
            "NAME                         DRIVER\n\
             bridge                       bridge\n\
             a-much-longer-network-name   sluice\n"
        );
        let short = [json!({"Name": "n", "Driver": "d"})];
        assert_eq!(
            f.lines(&short, &headers).unwrap(),
            format!("NAME{}DRIVER\nn{}d\n", " ".repeat(6), " ".repeat(9)),
            "columns are at least 10 wide"
        );
        let plain = Format::parse(r"{{.Name}}\t{{.Driver}}").unwrap();
        assert_eq!(plain.lines(&short, &headers).unwrap(), "n\td\n");
    }
}
