//! Processes under test: exit code and output of a finished one, readiness of a running one.

use std::process::Output;

/// The exit code (-1 when killed by a signal).
pub fn code(out: &Output) -> i32 {
    out.status.code().unwrap_or(-1)
}

/// Standard error as text.
pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Standard output as text.
pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Polls `http://<admin>/readyz` of a process under test, every 100 ms for up to 10 s; true
/// once it answers 200.
pub async fn admin_ready(admin: &str) -> bool {
    use cpm_core::http::{Verify, get};
    let url = format!("http://{admin}/readyz");
    for _ in 0..100 {
        if let Ok(r) = get(&url, &Verify::Insecure, std::time::Duration::from_secs(1)).await
            && r.status == 200
        {
            return true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    false
}
