//! Fault injection: added latency, injected 5xx answers, and cut watch streams.

use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use http::Method;
use tokio::sync::watch;

/// Which requests a fault applies to. Every set criterion must hold.
#[derive(Debug, Clone, Default)]
pub struct RequestMatch {
    method: Option<Method>,
    path_contains: Option<String>,
    watch: Option<bool>,
}

impl RequestMatch {
    /// Every request.
    pub fn any() -> Self {
        Self::default()
    }

    /// Only this HTTP method.
    pub fn method(mut self, method: Method) -> Self {
        self.method = Some(method);
        self
    }

    /// Only paths containing `s` (for example `"/leases/"` or `"/configmaps"`).
    pub fn path_contains(mut self, s: impl Into<String>) -> Self {
        self.path_contains = Some(s.into());
        self
    }

    /// Only watch requests (`true`) or only non-watch requests (`false`).
    pub fn watch(mut self, watch: bool) -> Self {
        self.watch = Some(watch);
        self
    }

    pub(crate) fn matches(&self, method: &Method, path: &str, is_watch: bool) -> bool {
        self.method.as_ref().is_none_or(|m| m == method)
            && self
                .path_contains
                .as_deref()
                .is_none_or(|p| path.contains(p))
            && self.watch.is_none_or(|w| w == is_watch)
    }
}

/// How open watch streams end when cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CutMode {
    /// The response body ends cleanly (as when kube-apiserver's watch timeout fires).
    Graceful,
    /// The connection is aborted mid-stream (as when a proxy or the server dies).
    Abort,
}

#[derive(Debug)]
struct Rule {
    matcher: RequestMatch,
    remaining: Option<usize>,
    action: Action,
}

#[derive(Debug, Clone, Copy)]
enum Action {
    Latency(Duration),
    Fail(u16),
}

#[derive(Debug, Default)]
struct State {
    latency: Duration,
    rules: Vec<Rule>,
    cut_after: Option<(usize, CutMode)>,
}

/// The fault switches of one test API server.
#[derive(Debug)]
pub struct Faults {
    state: Mutex<State>,
    cut: watch::Sender<(u64, CutMode)>,
}

/// What to do with one request.
#[derive(Debug, Default)]
pub(crate) struct Verdict {
    pub(crate) delay: Duration,
    pub(crate) fail: Option<u16>,
}

impl Faults {
    pub(crate) fn new() -> Self {
        Self {
            state: Mutex::new(State::default()),
            cut: watch::channel((0, CutMode::Graceful)).0,
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Adds `latency` to every request (`Duration::ZERO` turns it off).
    pub fn set_latency(&self, latency: Duration) {
        self.state().latency = latency;
    }

    /// Adds `latency` to matching requests; `times` limits how many (None: until cleared).
    pub fn add_latency(&self, matcher: RequestMatch, latency: Duration, times: Option<usize>) {
        self.state().rules.push(Rule {
            matcher,
            remaining: times,
            action: Action::Latency(latency),
        });
    }

    /// Answers the next `n` matching requests with HTTP `code` (a 5xx) and a `Status` body.
    pub fn fail_next(&self, matcher: RequestMatch, n: usize, code: u16) {
        self.state().rules.push(Rule {
            matcher,
            remaining: Some(n),
            action: Action::Fail(code),
        });
    }

    /// Answers every matching request with HTTP `code` until [`Faults::clear`].
    pub fn fail_all(&self, matcher: RequestMatch, code: u16) {
        self.state().rules.push(Rule {
            matcher,
            remaining: None,
            action: Action::Fail(code),
        });
    }

    /// Removes every latency and failure rule and any pending watch cut.
    pub fn clear(&self) {
        let mut s = self.state();
        s.latency = Duration::ZERO;
        s.rules.clear();
        s.cut_after = None;
    }

    /// Ends every open watch stream now.
    pub fn cut_watches(&self, mode: CutMode) {
        self.cut.send_modify(|(generation, m)| {
            *generation += 1;
            *m = mode;
        });
    }

    /// Ends every open watch stream once `events` more watch events have been sent (counted
    /// over all streams).
    pub fn cut_watches_after(&self, events: usize, mode: CutMode) {
        if events == 0 {
            self.cut_watches(mode);
        } else {
            self.state().cut_after = Some((events, mode));
        }
    }

    pub(crate) fn subscribe_cuts(&self) -> watch::Receiver<(u64, CutMode)> {
        self.cut.subscribe()
    }

    /// Counts one sent watch event against a pending `cut_watches_after`.
    pub(crate) fn count_watch_event(&self) {
        let fire = {
            let mut s = self.state();
            match &mut s.cut_after {
                Some((n, mode)) => {
                    *n -= 1;
                    if *n == 0 {
                        let mode = *mode;
                        s.cut_after = None;
                        Some(mode)
                    } else {
                        None
                    }
                }
                None => None,
            }
        };
        if let Some(mode) = fire {
            self.cut_watches(mode);
        }
    }

    pub(crate) fn verdict(&self, method: &Method, path: &str, is_watch: bool) -> Verdict {
        let mut s = self.state();
        let mut v = Verdict {
            delay: s.latency,
            fail: None,
        };
        for rule in s.rules.iter_mut() {
            if rule.remaining == Some(0) || !rule.matcher.matches(method, path, is_watch) {
                continue;
            }
            match rule.action {
                Action::Latency(d) => v.delay += d,
                Action::Fail(code) => {
                    if v.fail.is_some() {
                        continue;
                    }
                    v.fail = Some(code);
                }
            }
            if let Some(n) = &mut rule.remaining {
                *n -= 1;
            }
        }
        s.rules.retain(|r| r.remaining != Some(0));
        v
    }
}
