//! Harness of the cross-binary suite.
