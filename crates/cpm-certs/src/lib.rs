//! cpm-certs.
