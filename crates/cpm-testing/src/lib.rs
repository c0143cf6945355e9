//! cpm-testing.
