//! The cross-binary suite, one test binary.
