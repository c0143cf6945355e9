//! Integration tests of the node simulator (real runc, real network namespaces).
