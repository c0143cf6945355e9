//! Parsing operator files (YAML, and JSON as its subset) with errors that never echo content.
//!
//! A path given by mistake may name a private key or a kubeconfig: the error that reports it
//! goes to stderr, logs and the Kubernetes termination message. So errors here carry the
//! location (line, column, field path) and the parser's reason, never the document's text: no
//! source snippet, and every string value a deserialiser quotes as unexpected is replaced by
//! `"…"` ([`redact`]).
//!
//! ```
//! let err = cpm_core::yaml::from_str::<u32>("\"-----BEGIN PRIVATE KEY-----\"").unwrap_err();
//! assert!(!err.contains("PRIVATE"), "{err}");
//! ```

use serde::de::DeserializeOwned;

/// Deserialises `text` into `T`; the error is one line without any of the text's content.
pub fn from_str<T: DeserializeOwned>(text: &str) -> Result<T, String> {
    let mut options = serde_saphyr::options::Options::default();
    options.with_snippet = false;
    serde_saphyr::from_str_with_options(text, options).map_err(|e| redact(&e.to_string()))
}

/// `message` on one line, with every string value that serde quotes as unexpected
/// (`invalid type: string "…"`, `invalid value: string "…"`) replaced by `…`, and backquoted
/// names longer than 64 characters cut. Messages cpm writes itself about one field's value
/// (`"bad name!" is not a valid DNS name`) are kept: they quote what the operator wrote there.
pub fn redact(message: &str) -> String {
    const UNEXPECTED: &str = "string \"";
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(at) = rest.find(['`', '"']) {
        let (before, tail) = rest.split_at(at);
        out.push_str(before);
        if let Some(body) = tail.strip_prefix('`') {
            let end = body.find('`').unwrap_or(body.len());
            let name = &body[..end];
            out.push('`');
            if name.chars().count() > 64 {
                out.extend(name.chars().take(64));
                out.push('…');
            } else {
                out.push_str(name);
            }
            out.push('`');
            rest = body.get(end + 1..).unwrap_or("");
        } else if out.ends_with(&UNEXPECTED[..UNEXPECTED.len() - 1]) {
            out.push_str("\"…\"");
            rest = after_closing_quote(&tail[1..]);
        } else {
            out.push('"');
            rest = &tail[1..];
        }
    }
    out.push_str(rest);
    out.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// What follows the closing quote of a string whose opening quote was just consumed,
/// honouring backslash escapes.
fn after_closing_quote(s: &str) -> &str {
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            '"' => return &s[i + 1..],
            _ => {}
        }
    }
    ""
}

#[cfg(test)]
mod tests;
