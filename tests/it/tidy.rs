//! Repository rules that no compiler checks.

use std::path::{Path, PathBuf};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() && !p.ends_with("target") {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

fn all_rust_files() -> Vec<PathBuf> {
    let mut files = Vec::new();
    for dir in ["crates", "xtask", "tests"] {
        rust_files(&workspace().join(dir), &mut files);
    }
    assert!(files.len() > 20, "the walk found the sources");
    files
}

#[test]
fn every_rust_file_starts_with_a_doc_line() {
    let missing: Vec<_> = all_rust_files()
        .into_iter()
        .filter(|p| {
            !std::fs::read_to_string(p)
                .unwrap_or_default()
                .starts_with("//!")
        })
        .collect();
    assert!(
        missing.is_empty(),
        "files without a leading //! line: {missing:?}"
    );
}

#[test]
fn binaries_keep_main_thin_and_never_depend_on_each_other() {
    let crates = workspace().join("crates");
    let mut bins = Vec::new();
    for e in std::fs::read_dir(&crates).unwrap().flatten() {
        if e.path().join("src/main.rs").exists() {
            bins.push(e.file_name().to_string_lossy().into_owned());
        }
    }
    assert!(bins.contains(&"cpm-certs".to_string()));
    for bin in &bins {
        let main = std::fs::read_to_string(crates.join(bin).join("src/main.rs")).unwrap();
        assert!(
            main.lines().count() <= 40,
            "{bin}/src/main.rs is over 40 lines"
        );
        let manifest = std::fs::read_to_string(crates.join(bin).join("Cargo.toml")).unwrap();
        let deps = manifest
            .split("[dependencies]")
            .nth(1)
            .unwrap_or("")
            .split("\n[")
            .next()
            .unwrap_or("");
        for other in bins.iter().filter(|b| *b != bin) {
            assert!(
                !deps
                    .lines()
                    .any(|l| l.starts_with(&format!("{other} "))
                        || l.starts_with(&format!("{other}."))),
                "{bin} depends on {other}"
            );
        }
    }
}

#[test]
fn std_fs_write_is_banned() {
    let clippy = std::fs::read_to_string(workspace().join("clippy.toml")).unwrap();
    assert!(clippy.contains("std::fs::write"));
    let offenders: Vec<_> = all_rust_files()
        .into_iter()
        .filter(|p| {
            std::fs::read_to_string(p)
                .unwrap_or_default()
                .contains(&["fs::", "write("].concat())
        })
        .collect();
    assert!(
        offenders.is_empty(),
        "use cpm_core::apply::write_atomic: {offenders:?}"
    );
}
