//! Where in the file a problem is: syntax and type errors located by line and key, and inline
//! secrets refused before anything else is read.

use std::ops::Range;

use toml::Spanned;
use toml::de::{DeTable, DeValue};

use super::ConfigError;

pub(super) const SECRET_HINT: &str = "secrets are never written inline: put the password in an environment \
     variable and name that variable with password_env (e.g. upstream.password_env = \"REDIS_ACL_PASS\")";

/// Finds the first key anywhere that looks like an inline secret, as a dotted path.
pub(super) fn find_inline_secret(doc: &DeTable<'_>) -> Option<String> {
    let mut found = None;
    walk(doc, &mut String::new(), &mut |path, _, _| {
        let name = path.rsplit('.').next().unwrap_or(path).to_ascii_lowercase();
        let secret =
            ["password", "passwd", "secret"].iter().any(|s| name.contains(s)) || name == "pass" || name == "token";
        if secret && !name.ends_with("_env") && found.is_none() {
            found = Some(path.to_owned());
        }
    });
    found
}

/// Calls `visit(path, key span, value span)` for every key and array item, parents first.
fn walk(table: &DeTable<'_>, path: &mut String, visit: &mut dyn FnMut(&str, Span, Span)) {
    for (key, value) in table.iter() {
        let mark = path.len();
        if !path.is_empty() {
            path.push('.');
        }
        path.push_str(key.get_ref());
        visit(path, key.span(), value.span());
        walk_value(value, path, visit);
        path.truncate(mark);
    }
}

fn walk_value(value: &Spanned<DeValue<'_>>, path: &mut String, visit: &mut dyn FnMut(&str, Span, Span)) {
    match value.get_ref() {
        DeValue::Table(table) => walk(table, path, visit),
        DeValue::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                let mark = path.len();
                path.push_str(&format!("[{i}]"));
                visit(path, item.span(), item.span());
                walk_value(item, path, visit);
                path.truncate(mark);
            }
        }
        _ => {}
    }
}

type Span = Range<usize>;

pub(super) fn syntax_error(text: &str, error: &toml::de::Error) -> ConfigError {
    let span = error.span().unwrap_or(0..0);
    let before = text.get(..span.start).unwrap_or(text);
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let mut message = error.message().to_owned();
    // Quote what the parser stopped at (e.g. the repeated name of a "duplicate key").
    if let Some(snippet) = text.get(span.clone()).filter(|s| !s.is_empty() && !s.contains('\n')) {
        message.push_str(&format!(": `{snippet}`"));
    }
    let (line, column) = (line_of(text, span.start), before[line_start..].chars().count() + 1);
    ConfigError::Syntax { file: None, line, column, message }
}

/// Turns a serde error into [`ConfigError::Invalid`], naming the deepest key covering its span.
pub(super) fn deserialize_error(text: &str, doc: &DeTable<'_>, error: &toml::de::Error) -> ConfigError {
    let span = error.span();
    let mut key = String::new();
    if let Some(offset) = span.as_ref().map(|s| s.start) {
        let covers = |s: Span| s.contains(&offset) || (s.is_empty() && s.start == offset);
        // Parents come first, so the last covering entry is the deepest.
        walk(doc, &mut String::new(), &mut |path, key_span, value_span| {
            if covers(key_span) || covers(value_span) {
                path.clone_into(&mut key);
            }
        });
    }
    let mut message = error.message().replacen("unknown field", "unknown key", 1);
    // A missing field's span is its table, so the field is appended to the table's path.
    if let Some(field) = message.strip_prefix("missing field `").and_then(|m| m.strip_suffix('`')) {
        key = if key.is_empty() { field.to_owned() } else { format!("{key}.{field}") };
        message = "required key is missing".to_owned();
    }
    let line = span.map(|s| line_of(text, s.start));
    ConfigError::Invalid { file: None, line, key, message }
}

pub(super) fn line_of(text: &str, offset: usize) -> usize {
    let before = &text.as_bytes()[..offset.min(text.len())];
    before.iter().filter(|&&b| b == b'\n').count() + 1
}

/// Finds the span of a dotted key like `upstream.seeds[1]`, or of its deepest present ancestor.
pub(super) fn locate(doc: &DeTable<'_>, target: &str) -> Option<Span> {
    let mut best: Option<(usize, Span)> = None;
    walk(doc, &mut String::new(), &mut |path, key_span, _| {
        let rest = target.strip_prefix(path);
        let ancestor = rest.is_some_and(|r| r.is_empty() || r.starts_with(['.', '[']));
        if ancestor && best.as_ref().is_none_or(|(len, _)| path.len() > *len) {
            best = Some((path.len(), key_span));
        }
    });
    best.map(|(_, span)| span)
}
