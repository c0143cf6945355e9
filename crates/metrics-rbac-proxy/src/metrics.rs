//! metrics-rbac-proxy's domain metrics.
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `cpm_metrics_rbac_proxy_requests_total` | counter | `route` (a configured name or `none`), `code` |
//! | `cpm_metrics_rbac_proxy_cache_lookups_total` | counter | `cache` (`authn`, `authz`), `result` (`hit`, `miss`) |
//! | `cpm_metrics_rbac_proxy_reviews_total` | counter | `kind` (`tokenreview`, `subjectaccessreview`), `result` (`ok`, `error`) |
//! | `cpm_metrics_rbac_proxy_upstream_duration_seconds` | histogram | `route` (time to response headers) |
//! | `cpm_metrics_rbac_proxy_tls_reloads_total` | counter | `result` (`applied`, `unchanged`, `rejected`) |

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// `route` and `code` labels.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct RequestLabels {
    /// Route name, or `none`.
    pub route: String,
    /// HTTP status code.
    pub code: u16,
}

/// `cache` and `result` labels.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct CacheLabels {
    /// `authn` or `authz`.
    pub cache: &'static str,
    /// `hit` or `miss`.
    pub result: &'static str,
}

/// `kind` and `result` labels.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct ReviewLabels {
    /// `tokenreview` or `subjectaccessreview`.
    pub kind: &'static str,
    /// `ok` or `error`.
    pub result: &'static str,
}

/// `route` label.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct RouteLabel {
    /// Route name.
    pub route: String,
}

/// `result` label.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct ResultLabel {
    /// The outcome.
    pub result: &'static str,
}

/// The proxy's metrics (cheap to clone: families share their storage).
#[derive(Debug, Clone)]
pub struct ProxyMetrics {
    /// Answered requests.
    pub requests: Family<RequestLabels, Counter>,
    /// Decision cache lookups.
    pub cache: Family<CacheLabels, Counter>,
    /// TokenReview and SubjectAccessReview calls.
    pub reviews: Family<ReviewLabels, Counter>,
    /// Time to the upstream's response headers.
    pub upstream_duration: Family<RouteLabel, Histogram>,
    /// Serving certificate reloads.
    pub tls_reloads: Family<ResultLabel, Counter>,
}

impl ProxyMetrics {
    /// Metrics not registered anywhere (tests).
    pub fn unregistered() -> Self {
        Self {
            requests: Family::default(),
            cache: Family::default(),
            reviews: Family::default(),
            upstream_duration: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.001, 2.0, 14))
            }),
            tls_reloads: Family::default(),
        }
    }

    /// Registers the metrics on `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self::unregistered();
        registry.register(
            "cpm_metrics_rbac_proxy_requests",
            "Answered requests by route and status code",
            m.requests.clone(),
        );
        registry.register(
            "cpm_metrics_rbac_proxy_cache_lookups",
            "Authentication and authorisation cache lookups by result",
            m.cache.clone(),
        );
        registry.register(
            "cpm_metrics_rbac_proxy_reviews",
            "TokenReview and SubjectAccessReview calls by result",
            m.reviews.clone(),
        );
        registry.register(
            "cpm_metrics_rbac_proxy_upstream_duration_seconds",
            "Time to the upstream's response headers",
            m.upstream_duration.clone(),
        );
        registry.register(
            "cpm_metrics_rbac_proxy_tls_reloads",
            "Serving certificate reloads by result",
            m.tls_reloads.clone(),
        );
        m
    }

    /// Counts a cache lookup.
    pub fn cache_lookup(&self, cache: &'static str, hit: bool) {
        let result = if hit { "hit" } else { "miss" };
        self.cache
            .get_or_create(&CacheLabels { cache, result })
            .inc();
    }

    /// Counts a review call.
    pub fn review(&self, kind: &'static str, ok: bool) {
        let result = if ok { "ok" } else { "error" };
        self.reviews
            .get_or_create(&ReviewLabels { kind, result })
            .inc();
    }

    /// Reads a cache counter (tests, benchmarks).
    pub fn cache_count(&self, cache: &'static str, result: &'static str) -> u64 {
        self.cache
            .get_or_create(&CacheLabels { cache, result })
            .get()
    }
}
