//! Tests of log formats and level filtering.

use std::sync::{Arc, Mutex};

use super::*;

#[derive(Clone, Default)]
struct Buffer(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Buffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Logs one info and one debug event through a subscriber of `format` at `level`.
fn check(format: LogFormat, level: &str) -> String {
    let buf = Buffer::default();
    let out = buf.clone();
    let sub = subscriber(format, level, None, false, move || out.clone());
    tracing::subscriber::with_default(sub, || {
        let span = tracing::info_span!("pass", agent = "t", pass = 1);
        let _g = span.enter();
        tracing::info!(path = "etc/x", "applied");
        tracing::debug!("detail");
    });
    String::from_utf8(buf.0.lock().unwrap().clone()).unwrap()
}

#[test]
fn json_lines_carry_fields_and_span() {
    let text = check(LogFormat::Json, "info");
    let lines: Vec<_> = text.lines().collect();
    assert_eq!(lines.len(), 1, "debug is filtered at info: {text}");
    let v: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
    assert_eq!(v["message"], "applied");
    assert_eq!(v["path"], "etc/x");
    assert_eq!(v["level"], "INFO");
    assert_eq!(v["span"]["agent"], "t");
}

#[test]
fn text_format_and_debug_level() {
    let text = check(LogFormat::Text, "debug");
    assert!(
        text.contains("INFO") && text.contains("applied") && text.contains("path=\"etc/x\""),
        "{text}"
    );
    assert!(text.contains("detail"), "{text}");
    assert!(
        !text.contains('\u{1b}'),
        "no ANSI escapes when not a terminal"
    );
}

#[test]
fn a_bad_level_falls_back_to_info() {
    let text = check(LogFormat::Text, "no-such-level[");
    assert!(
        text.contains("applied") && !text.contains("detail"),
        "{text}"
    );
}
