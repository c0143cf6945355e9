//! The cross-binary suite, one test binary: repository-wide rules (tidy) now; end-to-end
//! scenarios across binaries as they arrive.

mod node;
mod proxy;
mod tidy;
