//! The test API server's suite, one test binary: the library through kube-rs over real TLS
//! (`apiserver`), and `cpm-test-apiserver store` as a process driven by a real kubectl
//! (`store`).

mod apiserver;
mod store;
