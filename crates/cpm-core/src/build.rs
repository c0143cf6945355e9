//! Build information for `--version`: crate version, git revision and build profile.

/// The workspace version.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// The git revision the binary was built from (`unknown` outside a checkout).
pub const GIT_SHA: &str = env!("CPM_GIT_SHA");
/// `debug` or `release`.
pub const PROFILE: &str = env!("CPM_BUILD_PROFILE");
/// What `--version` prints after the binary name.
pub const LONG_VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (git ",
    env!("CPM_GIT_SHA"),
    ", ",
    env!("CPM_BUILD_PROFILE"),
    ")"
);
