//! The version policy, pure: given the configured minor, the minor each master runs, the
//! kubelets' minors and the highest minor the cluster ever ran, which minor the masters move to
//! next.
//!
//! - One minor at a time, never skipping one: `1.32 → 1.34` goes through `1.33`.
//! - Control plane first on upgrade (kube-apiserver may be newer than kubelets, never older),
//!   and at most three minors ahead of the oldest kubelet; kubelets first on downgrade (the
//!   masters go down only once no kubelet is newer than the minor they go down to).
//! - Downgrade at most one minor below the highest minor the cluster ever ran.
//! - Versions outside the built-in map are refused.

use cpm_core::config::KubernetesMinor;
use cpm_core::versions;

/// How far kube-apiserver may be ahead of a kubelet (Kubernetes' skew policy).
pub const KUBELET_SKEW: u32 = 3;

/// What the cluster looks like to the policy.
#[derive(Debug, Clone)]
pub struct View {
    /// `kubernetesVersion` of the configuration.
    pub target: KubernetesMinor,
    /// The minor each master runs.
    pub masters: Vec<KubernetesMinor>,
    /// The minor of each Node's kubelet.
    pub kubelets: Vec<KubernetesMinor>,
    /// The highest minor any master ever ran.
    pub highest: Option<KubernetesMinor>,
}

/// The next move.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Every master runs the target.
    Converged,
    /// Masters not at `to` move there, one at a time.
    Move {
        /// The next minor.
        to: KubernetesMinor,
    },
    /// Nothing may move yet.
    Wait(String),
}

/// The configured version cannot be reached from this cluster.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// Below the downgrade floor.
    #[error(
        "kubernetesVersion {target} is refused: this cluster has run {highest}, and a downgrade may go at most one minor below that (to {floor})"
    )]
    BelowFloor {
        /// The configured minor.
        target: KubernetesMinor,
        /// The highest minor ever run.
        highest: KubernetesMinor,
        /// The lowest allowed.
        floor: KubernetesMinor,
    },
    /// Not in the version map.
    #[error(
        "kubernetesVersion {0} is not in this build's version map (supported: {range})",
        range = versions::supported_range()
    )]
    Unsupported(KubernetesMinor),
    /// Masters more than one minor apart: a state cpm never creates.
    #[error("masters run {low} and {high}, more than one minor apart: an operator must fix this")]
    Skew {
        /// Lowest master minor.
        low: KubernetesMinor,
        /// Highest master minor.
        high: KubernetesMinor,
    },
}

fn step(m: KubernetesMinor, up: bool) -> KubernetesMinor {
    KubernetesMinor {
        major: m.major,
        minor: if up {
            m.minor + 1
        } else {
            m.minor.saturating_sub(1)
        },
    }
}

/// Decides the next move for the whole cluster.
pub fn decide(view: &View) -> Result<Decision, PolicyError> {
    if versions::lookup(view.target).is_none() {
        return Err(PolicyError::Unsupported(view.target));
    }
    let (Some(low), Some(high)) = (
        view.masters.iter().min().copied(),
        view.masters.iter().max().copied(),
    ) else {
        return Ok(Decision::Move { to: view.target });
    };
    let highest = view.highest.map_or(high, |h| h.max(high));
    let floor = step(highest, false);
    if view.target < floor {
        return Err(PolicyError::BelowFloor {
            target: view.target,
            highest,
            floor,
        });
    }
    if high.minor > low.minor + 1 {
        return Err(PolicyError::Skew { low, high });
    }
    let to = if low != high {
        // A step is under way (or was interrupted): finish it in the target's direction.
        if view.target >= high { high } else { low }
    } else if view.target == low {
        return Ok(Decision::Converged);
    } else {
        step(low, view.target > low)
    };
    if versions::lookup(to).is_none() {
        return Err(PolicyError::Unsupported(to));
    }
    let upgrading = to > low;
    if upgrading {
        if let Some(oldest) = view.kubelets.iter().min()
            && to.minor > oldest.minor + KUBELET_SKEW
        {
            return Ok(Decision::Wait(format!(
                "a kubelet runs {oldest}: the control plane may be at most {KUBELET_SKEW} minors newer, so {to} waits for kubelets to be upgraded"
            )));
        }
    } else if let Some(newest) = view.kubelets.iter().max()
        && *newest > to
    {
        return Ok(Decision::Wait(format!(
            "a kubelet runs {newest}: kubelets go down first, so the control plane waits at {high} until no kubelet is newer than {to}"
        )));
    }
    Ok(Decision::Move { to })
}

/// The minor of an image tag such as `v1.33.5` (or `1.33`).
pub fn minor_of_tag(tag: &str) -> Option<KubernetesMinor> {
    let t = tag.trim_start_matches('v');
    let mut parts = t.split(['.', '-', '+']);
    let major = parts.next()?;
    let minor = parts.next()?;
    format!("{major}.{minor}").parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(s: &str) -> KubernetesMinor {
        s.parse().unwrap()
    }

    fn view(target: &str, masters: &[&str], kubelets: &[&str], highest: Option<&str>) -> View {
        View {
            target: m(target),
            masters: masters.iter().map(|s| m(s)).collect(),
            kubelets: kubelets.iter().map(|s| m(s)).collect(),
            highest: highest.map(m),
        }
    }

    #[test]
    fn upgrade_goes_one_minor_at_a_time() {
        assert_eq!(
            decide(&view("1.34", &["1.32", "1.32", "1.32"], &["1.32"], None)),
            Ok(Decision::Move { to: m("1.33") })
        );
        assert_eq!(
            decide(&view("1.34", &["1.33", "1.32", "1.32"], &["1.32"], None)),
            Ok(Decision::Move { to: m("1.33") }),
            "finish the step under way before the next"
        );
        assert_eq!(
            decide(&view("1.34", &["1.33", "1.33"], &["1.32"], None)),
            Ok(Decision::Move { to: m("1.34") })
        );
        assert_eq!(
            decide(&view("1.33", &["1.33", "1.33"], &["1.32"], None)),
            Ok(Decision::Converged)
        );
    }

    #[test]
    fn downgrade_waits_for_kubelets_and_stops_at_the_floor() {
        assert!(matches!(
            decide(&view("1.32", &["1.33", "1.33"], &["1.33", "1.32"], Some("1.33"))),
            Ok(Decision::Wait(w)) if w.contains("kubelets go down first")
        ));
        assert_eq!(
            decide(&view("1.32", &["1.33", "1.33"], &["1.32"], Some("1.33"))),
            Ok(Decision::Move { to: m("1.32") })
        );
        assert_eq!(
            decide(&view("1.32", &["1.33", "1.32"], &["1.32"], Some("1.33"))),
            Ok(Decision::Move { to: m("1.32") }),
            "a downgrade under way finishes"
        );
        let err = decide(&view("1.31", &["1.33"], &["1.31"], Some("1.33"))).unwrap_err();
        assert_eq!(
            err.to_string(),
            "kubernetesVersion 1.31 is refused: this cluster has run 1.33, and a downgrade may go at most one minor below that (to 1.32)"
        );
        // The floor comes from the highest ever run, not from what runs now.
        assert!(matches!(
            decide(&view("1.31", &["1.32"], &["1.31"], Some("1.33"))),
            Err(PolicyError::BelowFloor { .. })
        ));
    }

    #[test]
    fn kubelet_skew_holds_the_control_plane_back() {
        assert!(matches!(
            decide(&view("1.34", &["1.33"], &["1.30"], None)),
            Ok(Decision::Wait(w)) if w.contains("at most 3 minors newer")
        ));
    }

    #[test]
    fn unsupported_and_broken_states_are_refused() {
        assert_eq!(
            decide(&view("1.40", &["1.33"], &[], None)),
            Err(PolicyError::Unsupported(m("1.40")))
        );
        assert!(matches!(
            decide(&view("1.33", &["1.31", "1.33"], &[], None)),
            Err(PolicyError::Skew { .. })
        ));
        assert_eq!(
            decide(&view("1.33", &[], &[], None)),
            Ok(Decision::Move { to: m("1.33") })
        );
    }

    #[test]
    fn tags_parse_to_minors() {
        assert_eq!(minor_of_tag("v1.33.5"), Some(m("1.33")));
        assert_eq!(minor_of_tag("1.32"), Some(m("1.32")));
        assert_eq!(minor_of_tag("v1.34.0-rc.1"), Some(m("1.34")));
        assert_eq!(minor_of_tag("latest"), None);
    }
}
