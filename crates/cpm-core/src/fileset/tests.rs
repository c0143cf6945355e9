//! Tests of `FileSet` construction rules.

use super::*;

#[test]
fn rejects_duplicates_and_escaping_paths() {
    let mut set = FileSet::new();
    set.file(DesiredFile::new("a/b", vec![], 0o600)).unwrap();
    assert_eq!(
        set.file(DesiredFile::new("a/b", vec![1], 0o600))
            .unwrap_err(),
        FileSetError::Duplicate { path: "a/b".into() }
    );
    assert!(matches!(
        set.file(DesiredFile::new("/abs", vec![], 0o600)),
        Err(FileSetError::Path(_))
    ));
    assert!(matches!(
        set.dir("../up", 0o755),
        Err(FileSetError::Path(_))
    ));
    assert!(matches!(set.own("x/../../y"), Err(FileSetError::Path(_))));
}

#[test]
fn orphans_are_owned_paths_not_desired() {
    let mut set = FileSet::new();
    set.file(DesiredFile::new("keep", vec![], 0o600)).unwrap();
    set.own("keep")
        .unwrap()
        .own("gone")
        .unwrap()
        .own("gone")
        .unwrap();
    assert_eq!(set.orphans().collect::<Vec<_>>(), vec![Path::new("gone")]);
}
