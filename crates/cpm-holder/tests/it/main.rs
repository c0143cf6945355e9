//! Process-level tests of cpm-holder: install copies the binary, hold exits 0 on SIGTERM/SIGINT.

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_cpm-holder");

#[test]
fn install_copies_itself_with_mode_0755_and_the_copy_runs() {
    let dir = tempfile::tempdir().unwrap();
    let target_dir = dir.path().join("holder");
    let out = Command::new(BIN)
        .args(["install"])
        .arg(&target_dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let copy = target_dir.join("cpm-holder");
    assert_eq!(std::fs::read(&copy).unwrap(), std::fs::read(BIN).unwrap());
    let mode = std::fs::metadata(&copy).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, 0o755);
    // No temp file left beside it.
    let names: Vec<_> = std::fs::read_dir(&target_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["cpm-holder"]);
    let v = Command::new(&copy).arg("--version").output().unwrap();
    assert!(v.status.success());
    assert!(
        String::from_utf8_lossy(&v.stdout).starts_with("cpm-holder 0."),
        "{v:?}"
    );
    // Installing again over an existing copy succeeds (atomic replace).
    let again = Command::new(BIN)
        .arg("install")
        .arg(&target_dir)
        .status()
        .unwrap();
    assert!(again.success());
}

#[test]
fn install_into_an_unwritable_place_fails_with_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a-dir");
    std::fs::File::create(&file).unwrap();
    let out = Command::new(BIN)
        .arg("install")
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with("error: cannot install ") && err.contains("not-a-dir"),
        "{err}"
    );
}

fn hold_then(signal: &str) {
    let mut child = Command::new(BIN)
        .arg("hold")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stderr.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim_end(), cpm_holder::HOLDING_LINE);
    // Still holding a moment later.
    std::thread::sleep(Duration::from_millis(200));
    assert!(child.try_wait().unwrap().is_none(), "hold exited early");
    let status = cpm_testing::process::signal_and_wait(&mut child, signal, Duration::from_secs(5))
        .unwrap_or_else(|| panic!("no exit after {signal}"));
    assert_eq!(status.code(), Some(0), "{signal}: {status:?}");
}

#[test]
fn hold_exits_zero_on_sigterm() {
    hold_then("-TERM");
}

#[test]
fn hold_exits_zero_on_sigint() {
    hold_then("-INT");
}

#[test]
fn version_names_the_binary() {
    let out = Command::new(BIN).arg("--version").output().unwrap();
    assert!(out.status.success());
    let s = String::from_utf8_lossy(&out.stdout);
    assert!(
        s.starts_with(&format!("cpm-holder {}", env!("CARGO_PKG_VERSION"))),
        "{s}"
    );
}
