//! Processes under test: exit code and output of a finished one, readiness of a running one.

use std::process::{Child, Command, ExitStatus, Output};
use std::time::{Duration, Instant};

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
        if let Ok(r) = get(&url, &Verify::Insecure, Duration::from_secs(1)).await
            && r.status == 200
        {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

/// Sends `signal` (a `kill` option such as `-TERM`) to `child`, then waits up to `limit` for it
/// to exit. `None` when it did not; it is then killed, so no process outlives the test.
pub fn signal_and_wait(child: &mut Child, signal: &str, limit: Duration) -> Option<ExitStatus> {
    let sent = Command::new("kill")
        .args([signal, &child.id().to_string()])
        .status()
        .expect("invariant: kill runs");
    assert!(sent.success(), "kill {signal} {} failed", child.id());
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait().expect("invariant: try_wait") {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

/// Runs `cmd` with its stdout on a pipe whose reader is already closed (as `cmd | head` once
/// `head` has exited), and returns its exit status and stderr (stdout is empty).
pub fn output_into_closed_pipe(cmd: &mut Command) -> Output {
    let (reader, writer) = std::io::pipe().expect("invariant: a pipe can be made");
    drop(reader);
    cmd.stdout(writer)
        .stderr(std::process::Stdio::piped())
        .output()
        .expect("invariant: the binary runs")
}

/// A process under test that is killed and reaped when dropped, so none outlives a failed test.
#[derive(Debug)]
pub struct Daemon(pub Child);

impl Daemon {
    /// Spawns `cmd`.
    pub fn spawn(cmd: &mut Command) -> Self {
        Self(
            cmd.spawn()
                .expect("invariant: the binary under test starts"),
        )
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A flag given to a command that does not honour it: the arguments, the environment, and how
/// the error names the flag (`--once`, or `--once (set by CPM_ONCE)`).
pub type Refused = (
    &'static [&'static str],
    &'static [(&'static str, &'static str)],
    &'static str,
);

/// Runs `bin` with `base` plus each case's arguments and environment and asserts exit 2 with
/// `<flag> is not honoured by `<command>``; the process must stop before doing anything.
pub fn assert_refused(bin: &str, base: &[&str], command: &str, cases: &[Refused]) {
    for (args, env, flag) in cases {
        let out = Command::new(bin)
            .args(base)
            .args(*args)
            .envs(env.iter().copied())
            .stdin(std::process::Stdio::null())
            .output()
            .expect("invariant: the binary under test runs");
        let err = stderr(&out);
        assert_eq!(code(&out), 2, "{args:?} {env:?}: {err}");
        assert!(
            err.contains(&format!("{flag} is not honoured by `{command}`")),
            "{args:?} {env:?}: {err}"
        );
    }
}
