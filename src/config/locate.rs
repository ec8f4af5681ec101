//! Better config errors: the right line and name for a problem inside one
//! `[[plugins]]` item (serde reads a tagged item as a whole, so the TOML
//! parser's own location points at the first plugin), and "did you mean" for
//! a misspelt name.

use super::error::ConfigError;
use super::raw::RawPlugin;
use serde::Deserialize;

/// `; did you mean "x"?` when one candidate is close to `word`, else empty.
pub fn did_you_mean<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> String {
    let best = candidates
        .into_iter()
        .filter(|c| *c != word)
        .map(|c| (strsim::jaro_winkler(word, c), c))
        .filter(|(score, _)| *score >= 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0));
    match best {
        Some((_, c)) => format!("; did you mean {c:?}?"),
        None => String::new(),
    }
}

/// Words between backticks, in order: serde names fields and variants so.
pub fn backticked(s: &str) -> Vec<&str> {
    s.split('`').skip(1).step_by(2).collect()
}

/// serde's "unknown field `x`, expected one of `a`, `b`" (or variant) with a
/// suggestion appended.
pub fn suggest_in_message(message: &str) -> String {
    let unknown = ["unknown field", "unknown variant"]
        .iter()
        .any(|p| message.contains(p));
    let words = backticked(message);
    match (unknown, words.split_first()) {
        (true, Some((word, expected))) => {
            format!("{message}{}", did_you_mean(word, expected.iter().copied()))
        }
        _ => message.to_string(),
    }
}

/// 1-based line numbers of the `[[plugins]]` headers of `text`.
fn plugin_headers(text: &str) -> Vec<usize> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| {
            let t: String = l.chars().filter(|c| !c.is_whitespace()).collect();
            t.starts_with("[[plugins]]")
        })
        .map(|(i, _)| i + 1)
        .collect()
}

/// The line of `field = …` inside the item that starts at line `start`
/// (up to the next table header).
fn field_line(text: &str, start: usize, field: &str) -> Option<usize> {
    for (i, l) in text.lines().enumerate().skip(start) {
        let t = l.trim_start();
        if t.starts_with('[') {
            return None;
        }
        if let Some(rest) = t.strip_prefix(field) {
            if rest.trim_start().starts_with('=') {
                return Some(i + 1);
            }
        }
    }
    None
}

/// When one `[[plugins]]` item does not deserialize, its problem with its line
/// and name. `None` when the plugins are all fine (the problem is elsewhere) or
/// the text is not TOML at all.
pub fn plugin_problem(text: &str) -> Option<ConfigError> {
    let doc: toml::Table = toml::from_str(text).ok()?;
    let items = doc.get("plugins")?.as_array()?;
    let headers = plugin_headers(text);
    for (i, item) in items.iter().enumerate() {
        let Err(e) = RawPlugin::deserialize(item.clone()) else {
            continue;
        };
        let name = item
            .get("name")
            .and_then(|v| v.as_str())
            .map(|n| format!("plugins ({n})"))
            .unwrap_or_else(|| format!("plugins[{i}]"));
        let message = e.message().trim().to_string();
        let header = headers.get(i).copied();
        let field = backticked(&message).first().map(|s| s.to_string());
        let line = match (header, field) {
            (Some(h), Some(f)) if message.starts_with("unknown field") => {
                field_line(text, h, &f).or(Some(h))
            }
            (h, _) => h,
        };
        let location = match line {
            Some(l) => format!("line {l}: {name}"),
            None => name,
        };
        return Some(ConfigError {
            location,
            message: suggest_in_message(&message),
        });
    }
    None
}

/// The line of `field = "value"` at or after line `from` (0-based), 1-based.
fn value_line(text: &str, from: usize, field: &str, value: &str) -> Option<usize> {
    let quoted = format!("{value:?}");
    text.lines().enumerate().skip(from).find_map(|(i, l)| {
        let rest = l.trim_start().strip_prefix(field)?.trim_start();
        let v = rest.strip_prefix('=')?.trim();
        let v = v.split(" #").next().unwrap_or(v).trim();
        (v == quoted || v == format!("'{value}'")).then_some(i + 1)
    })
}

/// Names between parentheses in a location: `services (s) / apis (a)` → s, a.
fn names(location: &str) -> Vec<&str> {
    location
        .split('(')
        .skip(1)
        .filter_map(|p| p.split_once(')').map(|(n, _)| n))
        .collect()
}

/// The 1-based line of a `[table]` header of `text`.
fn header_line(text: &str, table: &str) -> Option<usize> {
    let header = format!("[{table}]");
    text.lines()
        .position(|l| {
            let t: String = l.chars().filter(|c| !c.is_whitespace()).collect();
            t.starts_with(&header)
        })
        .map(|i| i + 1)
}

/// The line of a problem located at a table (`auth.hmac`: the line of the
/// field its message starts with, else the header) or at a field of one
/// (`cluster.on_error`), when the text writes it.
fn table_line(text: &str, location: &str, message: &str) -> Option<usize> {
    let path = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'.')
    };
    if !path(location) {
        return None;
    }
    if let Some(h) = header_line(text, location) {
        let first = message.split([' ', ':']).next().unwrap_or_default();
        return field_line(text, h, first).or(Some(h));
    }
    let (table, field) = location.rsplit_once('.')?;
    field_line(text, header_line(text, table)?, field)
}

/// Prefix each compile error about a named item (`plugins (x)`, `services (s) /
/// apis (a)`, `keys[0] (k1)`, `usage_plans (p)`, `jwt_providers (j)`) with the
/// line where that item's name is, and each error about a table or a field of
/// one (`auth.hmac`, `cluster.on_error`) with the line that writes it, when it
/// can be found in `text`.
pub fn with_lines(text: &str, errors: Vec<ConfigError>) -> Vec<ConfigError> {
    errors
        .into_iter()
        .map(|mut e| {
            if e.location.starts_with("line ") {
                return e;
            }
            let field = if e.location.starts_with("keys[") {
                "id"
            } else if [
                "plugins (",
                "services (",
                "usage_plans (",
                "jwt_providers (",
            ]
            .iter()
            .any(|p| e.location.starts_with(p))
            {
                "name"
            } else {
                if let Some(l) = table_line(text, &e.location, &e.message) {
                    e.location = format!("line {l}: {}", e.location);
                }
                return e;
            };
            // Search from the first `[[section]]` header of the item's kind.
            let section = e
                .location
                .split(['[', ' '])
                .next()
                .unwrap_or_default()
                .to_string();
            let Some(mut from) = text.lines().position(|l| {
                let t: String = l.chars().filter(|c| !c.is_whitespace()).collect();
                t.starts_with(&format!("[[{section}]]"))
            }) else {
                return e;
            };
            let mut line = None;
            for n in names(&e.location) {
                match value_line(text, from, field, n) {
                    Some(l) => {
                        line = Some(l);
                        from = l;
                    }
                    None => break,
                }
            }
            if let Some(l) = line {
                e.location = format!("line {l}: {}", e.location);
            }
            e
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compile_errors_get_the_line_of_their_item() {
        let text = "[[keys]]\nid = \"k1\"\n[[plugins]]\nname = \"a\"\n[[plugins]]\nname = \"b\"\n\
                    [[services]]\nname = \"s\"\n[[services.apis]]\nname = \"b\"\n";
        let e = |l: &str| ConfigError {
            location: l.into(),
            message: "m".into(),
        };
        let out = with_lines(
            text,
            vec![
                e("plugins (b)"),
                e("services (s) / apis (b) / backend"),
                e("keys[0] (k1)"),
                e("server.admin"),
                e("plugins (zz)"),
            ],
        );
        let locs: Vec<&str> = out.iter().map(|e| e.location.as_str()).collect();
        assert_eq!(
            locs,
            [
                "line 6: plugins (b)",
                "line 10: services (s) / apis (b) / backend",
                "line 2: keys[0] (k1)",
                "server.admin",
                "plugins (zz)",
            ]
        );
    }

    #[test]
    fn table_errors_get_the_line_that_writes_them() {
        let text =
            "[server]\nadmin = \"x\"\n\n[auth.hmac]\nmax_skew = \"1h\"\nalgorithms = [\"md5\"]\n\
                    [cluster]\nredis = \"x\"\n";
        let e = |l: &str, m: &str| ConfigError {
            location: l.into(),
            message: m.into(),
        };
        let out = with_lines(
            text,
            vec![
                e("server.admin", "m"),
                e("auth.hmac", "algorithms \"md5\" is not one of"),
                e("auth.hmac", "must list one"),
                e("cluster", "needs exactly one of redis"),
                e("cluster.on_error", "not written: no line"),
                e("log.format", "no [log] table: no line"),
            ],
        );
        let locs: Vec<&str> = out.iter().map(|e| e.location.as_str()).collect();
        assert_eq!(
            locs,
            [
                "line 2: server.admin",
                "line 6: auth.hmac",
                "line 4: auth.hmac",
                "line 7: cluster",
                "cluster.on_error",
                "log.format",
            ]
        );
    }

    #[test]
    fn suggestions() {
        assert_eq!(
            did_you_mean("ratelimit", ["ratelimits", "cors"]),
            "; did you mean \"ratelimits\"?"
        );
        assert_eq!(did_you_mean("zzz", ["ratelimits", "cors"]), "");
        assert_eq!(
            suggest_in_message("unknown field `mod`, expected one of `name`, `mode`, `ips`"),
            "unknown field `mod`, expected one of `name`, `mode`, `ips`; did you mean \"mode\"?"
        );
    }

    #[test]
    fn a_bad_second_plugin_is_located_and_named() {
        let text = "[[plugins]]\nname = \"ok\"\ntype = \"cors\"\n\n[[plugins]]\nname = \"wall\"\ntype = \"ip_control\"\nmode = \"white\"\nipz = \"10.0.0.0/8\"\n";
        let e = plugin_problem(text).expect("a problem");
        assert_eq!(e.location, "line 9: plugins (wall)");
        assert!(e.message.contains("did you mean \"ips\""), "{}", e.message);

        let text = "[[plugins]]\nname = \"ok\"\ntype = \"cors\"\n[[plugins]]\nname = \"x1\"\ntype = \"ip_controll\"\n";
        let e = plugin_problem(text).expect("a problem");
        assert_eq!(e.location, "line 4: plugins (x1)");
        assert!(
            e.message.contains("did you mean \"ip_control\""),
            "{}",
            e.message
        );
        assert!(plugin_problem("[[plugins]]\nname = \"ok\"\ntype = \"cors\"\n").is_none());
    }
}
