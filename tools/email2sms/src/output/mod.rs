//! Everything this command prints: each resource as one JSON value (what `--json` prints), and
//! tables made from those values, so the two can never disagree.
//!
//! Enumerations are written as their proto name without the type's prefix, in lower case
//! (`SECURITY_TYPE_VIA_SPF` is `via_spf`), the same words the flags take. Timestamps are RFC 3339
//! in UTC. Text that came from outside (email subjects, HELO names, TXT records) may hold
//! terminal control sequences; tables escape every control character so nothing a stranger sent
//! can move the cursor or recolour an operator's terminal.

pub mod dispatch;
pub mod ingest;
pub mod policy;

use serde_json::{Map, Value, json};

/// How results are printed.
#[derive(Debug, Clone, Copy)]
pub struct Output {
    pub json: bool,
}

/// A column of a list: its header and the dotted path of the value in each item's JSON.
pub type Column = (&'static str, &'static str);

impl Output {
    /// One resource: pretty JSON, or one `key  value` line per (flattened) field.
    pub fn one(&self, value: &Value) {
        if self.json {
            println!("{}", pretty(value));
            return;
        }
        let mut lines = Vec::new();
        flatten("", value, &mut lines);
        let rows: Vec<Vec<String>> = lines.into_iter().map(|(k, v)| vec![k, v]).collect();
        print!("{}", table(&[], &rows));
    }

    /// A page of resources: `{"<key>": [...], "next_page_token": "..."}`, or a table of `columns`
    /// with a hint for the next page.
    pub fn page(&self, key: &str, items: &[Value], columns: &[Column], next_page_token: &str) {
        if self.json {
            let mut object = Map::new();
            object.insert(key.to_owned(), Value::Array(items.to_vec()));
            object.insert("next_page_token".into(), json!(next_page_token));
            println!("{}", pretty(&Value::Object(object)));
            return;
        }
        self.table(items, columns);
        if !next_page_token.is_empty() {
            eprintln!(
                "(more: repeat with --page-token {})",
                sanitize(next_page_token)
            );
        }
    }

    /// A table of `columns` of `items`; "(none)" when there are none.
    pub fn table(&self, items: &[Value], columns: &[Column]) {
        if items.is_empty() {
            println!("(none)");
            return;
        }
        let headers: Vec<&str> = columns.iter().map(|(h, _)| *h).collect();
        let rows: Vec<Vec<String>> = items
            .iter()
            .map(|item| columns.iter().map(|(_, path)| cell(item, path)).collect())
            .collect();
        print!("{}", table(&headers, &rows));
    }

    /// A line for a person (nothing in JSON mode, where the value says it all).
    pub fn note(&self, text: &str) {
        if !self.json {
            println!("{}", sanitize(text));
        }
    }
}

fn pretty(value: &Value) -> String {
    serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string())
}

/// The value at a dotted `path` of `item`, as table text.
pub fn cell(item: &Value, path: &str) -> String {
    let mut value = item;
    for key in path.split('.') {
        match value.get(key) {
            Some(inner) => value = inner,
            None => return String::new(),
        }
    }
    scalar(value)
}

fn scalar(value: &Value) -> String {
    match value {
        Value::Null => String::new(),
        Value::String(text) => sanitize(text),
        Value::Array(items) => items.iter().map(scalar).collect::<Vec<_>>().join(","),
        Value::Object(_) => sanitize(&value.to_string()),
        other => other.to_string(),
    }
}

/// Every leaf of `value` with its dotted path (`readiness.ready`, `steps.0.name`); arrays of
/// scalars stay on one line.
fn flatten(prefix: &str, value: &Value, out: &mut Vec<(String, String)>) {
    let join = |key: &str| {
        if prefix.is_empty() {
            key.to_owned()
        } else {
            format!("{prefix}.{key}")
        }
    };
    match value {
        Value::Object(map) => {
            for (key, inner) in map {
                flatten(&join(key), inner, out);
            }
        }
        Value::Array(items) if items.iter().any(|i| i.is_object() || i.is_array()) => {
            for (index, inner) in items.iter().enumerate() {
                flatten(&join(&index.to_string()), inner, out);
            }
        }
        other => out.push((prefix.to_owned(), scalar(other))),
    }
}

/// Left-aligned columns two spaces apart; widths in characters.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let columns = headers
        .len()
        .max(rows.iter().map(Vec::len).max().unwrap_or(0));
    let mut widths = vec![0usize; columns];
    let all = std::iter::once(headers.iter().map(|h| (*h).to_owned()).collect::<Vec<_>>())
        .filter(|h| !h.is_empty())
        .chain(rows.iter().cloned())
        .collect::<Vec<_>>();
    for row in &all {
        for (index, text) in row.iter().enumerate() {
            widths[index] = widths[index].max(text.chars().count());
        }
    }
    let mut out = String::new();
    for row in &all {
        let mut line = String::new();
        for (index, text) in row.iter().enumerate() {
            if index + 1 == row.len() {
                line.push_str(text);
            } else {
                line.push_str(text);
                let pad = widths[index] - text.chars().count() + 2;
                line.extend(std::iter::repeat_n(' ', pad));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// `text` with every control character escaped (`\n`, `\u{1b}`), for a terminal.
pub fn sanitize(text: &str) -> String {
    if !text.chars().any(char::is_control) {
        return text.to_owned();
    }
    text.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// A protobuf timestamp as RFC 3339 (UTC), or null when unset.
pub fn time(value: &Option<prost_types::Timestamp>) -> Value {
    value
        .as_ref()
        .and_then(|t| chrono::DateTime::from_timestamp(t.seconds, u32::try_from(t.nanos).ok()?))
        .map(|t| json!(t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)))
        .unwrap_or(Value::Null)
}

/// A protobuf duration in milliseconds (fractional), or null when unset.
pub fn millis(value: &Option<prost_types::Duration>) -> Value {
    value
        .as_ref()
        .map(|d| json!(d.seconds as f64 * 1000.0 + f64::from(d.nanos) / 1_000_000.0))
        .unwrap_or(Value::Null)
}

/// A proto enum name without its type's prefix, in lower case: `("SECURITY_TYPE_VIA_SPF",
/// "SECURITY_TYPE_")` is `via_spf`.
pub fn short_name(name: &str, prefix: &str) -> String {
    name.strip_prefix(prefix)
        .unwrap_or(name)
        .to_ascii_lowercase()
}

/// The short name of enum value `$value` of prost enum `$ty` (the number when this build does not
/// know it).
#[macro_export]
macro_rules! enum_text {
    ($ty:ty, $value:expr, $prefix:literal) => {
        match <$ty>::try_from($value) {
            Ok(known) => $crate::output::short_name(known.as_str_name(), $prefix),
            Err(_) => ($value).to_string(),
        }
    };
}

/// A clap value parser for prost enum `$ty` taking the short names `$names` (what the proto calls
/// `$prefix` + the upper-cased name).
#[macro_export]
macro_rules! enum_arg {
    ($fn:ident, $ty:ty, $prefix:literal, $names:literal) => {
        pub fn $fn(text: &str) -> Result<i32, String> {
            let full = format!("{}{}", $prefix, text.to_ascii_uppercase().replace('-', "_"));
            match <$ty>::from_str_name(&full) {
                Some(value) if value as i32 != 0 => Ok(value as i32),
                _ => Err(format!("expected one of: {}", $names)),
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(sanitize("plain"), "plain");
        assert_eq!(sanitize("a\u{1b}[31mred\nb"), "a\\u{1b}[31mred\\nb");
    }

    #[test]
    fn tables_align_columns() {
        let rows = vec![
            vec!["a".to_owned(), "long value".to_owned()],
            vec!["longer".to_owned(), "x".to_owned()],
        ];
        assert_eq!(
            table(&["K", "V"], &rows),
            "K       V\na       long value\nlonger  x\n"
        );
    }

    #[test]
    fn cells_follow_dotted_paths_and_flatten_nests() {
        let value = json!({"a": {"b": true, "c": ["x", "y"]}, "s": [{"n": 1}]});
        assert_eq!(cell(&value, "a.b"), "true");
        assert_eq!(cell(&value, "a.c"), "x,y");
        assert_eq!(cell(&value, "a.missing"), "");
        let mut lines = Vec::new();
        flatten("", &value, &mut lines);
        assert_eq!(
            lines,
            vec![
                ("a.b".to_owned(), "true".to_owned()),
                ("a.c".to_owned(), "x,y".to_owned()),
                ("s.0.n".to_owned(), "1".to_owned())
            ]
        );
    }

    #[test]
    fn timestamps_are_rfc3339_utc() {
        let t = Some(prost_types::Timestamp {
            seconds: 1_700_000_000,
            nanos: 0,
        });
        assert_eq!(time(&t), json!("2023-11-14T22:13:20Z"));
        assert_eq!(time(&None), Value::Null);
    }
}
