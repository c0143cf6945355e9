//! Tests of desired().
