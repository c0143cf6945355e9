//! A Lease lock (`coordination.k8s.io/v1` Lease) that lets one holder at a time do risky work
//! (feature `kube`).
//!
//! The algorithm is client-go's leader election, on one Lease object:
//!
//! - **acquire or renew** ([`LeaseLock::try_acquire_or_renew`]): read the Lease; create it if it
//!   is missing. If another holder's record is live, back off. A record is live until
//!   `leaseDurationSeconds` have passed *since this contender last saw it change*, measured on
//!   the contender's own clock, so clock skew between masters does not matter. Otherwise write
//!   our identity, `renewTime` (and `acquireTime`, `leaseTransitions + 1` on a takeover) with
//!   the resourceVersion we read: a concurrent writer makes the update fail with 409 and nobody
//!   holds twice.
//! - **holding**: after a successful write at time `t` the holder may work until
//!   `t + renew_deadline`, which is shorter than the lease duration. Contenders wait the full
//!   duration from when they saw that write, so the holder always stops before anyone else can
//!   take over.
//! - **losing**: [`LeaseGuard`] renews every `retry_period` in the background. When renewal
//!   fails until the deadline, or the Lease shows another holder, its
//!   [`CancellationToken`](tokio_util::sync::CancellationToken) is cancelled: work selects on it
//!   and stops.
//! - **release** clears the holder so another contender can take over at once.
//!
//! The clock is injectable ([`Clock`]) so tests can drive expiry without sleeping.
//!
//! ```no_run
//! # async fn demo(client: kube::Client) -> Result<(), cpm_core::lease::LeaseError> {
//! use std::time::Duration;
//! use cpm_core::lease::{LeaseConfig, LeaseLock};
//! use tokio_util::sync::CancellationToken;
//!
//! let cfg = LeaseConfig {
//!     namespace: "kube-system".into(),
//!     name: "cpm-etcd-membership".into(),
//!     identity: "master-0".into(),
//!     lease_duration: Duration::from_secs(15),
//!     renew_deadline: Duration::from_secs(10),
//!     retry_period: Duration::from_secs(2),
//! };
//! let guard = LeaseLock::new(client, cfg)?.acquire(&CancellationToken::new()).await?;
//! let work = guard.token();
//! tokio::select! {
//!     () = work.cancelled() => { /* lease lost: stop at once */ }
//!     () = async { /* risky work */ } => {}
//! }
//! guard.release().await?;
//! # Ok(()) }
//! ```

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use ::kube::Client;
use ::kube::api::{Api, PostParams};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

/// The time source of a lock.
pub trait Clock: Send + Sync + fmt::Debug {
    /// The current wall-clock time.
    fn now(&self) -> SystemTime;
}

/// The system clock.
#[derive(Debug, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// Which Lease, who we are, and the timings.
#[derive(Debug, Clone)]
pub struct LeaseConfig {
    /// The Lease's namespace.
    pub namespace: String,
    /// The Lease's name.
    pub name: String,
    /// This contender's identity (`holderIdentity`), unique per contender.
    pub identity: String,
    /// How long contenders wait for an unrenewed Lease (`leaseDurationSeconds`; whole seconds,
    /// at least 1).
    pub lease_duration: Duration,
    /// How long a holder keeps working after its last successful renewal; must be shorter than
    /// `lease_duration`.
    pub renew_deadline: Duration,
    /// Time between acquire or renew attempts; must be shorter than `renew_deadline`.
    pub retry_period: Duration,
}

impl LeaseConfig {
    fn duration_seconds(&self) -> i32 {
        i32::try_from(self.lease_duration.as_secs()).unwrap_or(i32::MAX)
    }

    /// Checks the timing invariants.
    pub fn validate(&self) -> Result<(), LeaseError> {
        let bad = |why: &str| Err(LeaseError::Config(why.to_string()));
        if self.identity.is_empty() {
            return bad("identity must not be empty");
        }
        if self.lease_duration.as_secs() < 1 || self.lease_duration.subsec_nanos() != 0 {
            return bad("lease_duration must be a whole number of seconds, at least 1");
        }
        if self.renew_deadline >= self.lease_duration {
            return bad("renew_deadline must be shorter than lease_duration");
        }
        if self.retry_period.is_zero() || self.retry_period >= self.renew_deadline {
            return bad("retry_period must be positive and shorter than renew_deadline");
        }
        Ok(())
    }
}

/// A Lease operation failed.
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    /// The config breaks a timing invariant.
    #[error("invalid lease config: {0}")]
    Config(String),
    /// An API request failed (other than a lost optimistic-concurrency race).
    #[error("lease {namespace}/{name}: {op} failed")]
    Api {
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
        /// `get`, `create` or `update`.
        op: &'static str,
        /// The cause (boxed: kube errors are large).
        #[source]
        source: Box<kube::Error>,
    },
    /// Acquisition was cancelled before the lease was won.
    #[error("lease {namespace}/{name}: acquisition cancelled")]
    Cancelled {
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
    },
}

/// The result of one acquire-or-renew attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// We hold the Lease; we may work until `valid_until` (our clock) unless we renew.
    Held {
        /// End of the holding period by our clock.
        valid_until: SystemTime,
        /// True when this attempt took the Lease over (rather than renewing it).
        acquired: bool,
    },
    /// Another holder's record is live.
    HeldByOther {
        /// Its identity.
        holder: String,
    },
    /// Another writer changed the Lease between our read and our write (409); try again.
    Raced,
}

/// One contender's view of one Lease.
#[derive(Debug)]
pub struct LeaseLock {
    api: Api<Lease>,
    cfg: LeaseConfig,
    clock: Arc<dyn Clock>,
    /// The record last seen and when (our clock) it was first seen in that state.
    observed: Option<(Option<LeaseSpec>, SystemTime)>,
    held_until: Option<SystemTime>,
}

fn micro(t: SystemTime) -> Option<MicroTime> {
    Timestamp::try_from(t).ok().map(MicroTime)
}

fn is_status(e: &kube::Error, code: u16) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == code)
}

impl LeaseLock {
    /// A lock on `cfg.namespace/cfg.name` for `cfg.identity`, on the system clock.
    pub fn new(client: Client, cfg: LeaseConfig) -> Result<Self, LeaseError> {
        cfg.validate()?;
        Ok(Self {
            api: Api::namespaced(client, &cfg.namespace),
            cfg,
            clock: Arc::new(SystemClock),
            observed: None,
            held_until: None,
        })
    }

    /// Replaces the clock (tests).
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The config.
    pub fn config(&self) -> &LeaseConfig {
        &self.cfg
    }

    /// Whether we may work now: the last successful write is younger than `renew_deadline`.
    pub fn holds(&self) -> bool {
        self.held_until
            .is_some_and(|until| self.clock.now() < until)
    }

    fn api_err(&self, op: &'static str) -> impl FnOnce(kube::Error) -> LeaseError + '_ {
        move |source| LeaseError::Api {
            namespace: self.cfg.namespace.clone(),
            name: self.cfg.name.clone(),
            op,
            source: Box::new(source),
        }
    }

    /// One attempt to acquire or renew (client-go's `tryAcquireOrRenew`).
    pub async fn try_acquire_or_renew(&mut self) -> Result<Step, LeaseError> {
        let now = self.clock.now();
        let valid_until = now + self.cfg.renew_deadline;
        let existing = self
            .api
            .get_opt(&self.cfg.name)
            .await
            .map_err(self.api_err("get"))?;
        let Some(mut lease) = existing else {
            let spec = LeaseSpec {
                holder_identity: Some(self.cfg.identity.clone()),
                lease_duration_seconds: Some(self.cfg.duration_seconds()),
                acquire_time: micro(now),
                renew_time: micro(now),
                lease_transitions: Some(0),
                ..LeaseSpec::default()
            };
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.cfg.name.clone()),
                    namespace: Some(self.cfg.namespace.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(spec.clone()),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => {
                    self.observed = Some((Some(spec), now));
                    self.held_until = Some(valid_until);
                    Ok(Step::Held {
                        valid_until,
                        acquired: true,
                    })
                }
                Err(e) if is_status(&e, 409) => Ok(Step::Raced),
                Err(e) => Err(self.api_err("create")(e)),
            };
        };
        let old = lease.spec.clone().unwrap_or_default();
        if self
            .observed
            .as_ref()
            .is_none_or(|(spec, _)| spec.as_ref() != Some(&old))
        {
            self.observed = Some((Some(old.clone()), now));
        }
        let observed_at = self.observed.as_ref().map_or(now, |(_, at)| *at);
        let holder = old.holder_identity.clone().unwrap_or_default();
        let ours = holder == self.cfg.identity;
        let duration = Duration::from_secs(
            u64::try_from(old.lease_duration_seconds.unwrap_or(0)).unwrap_or(0),
        );
        if !holder.is_empty() && !ours && observed_at + duration > now {
            self.held_until = None;
            return Ok(Step::HeldByOther { holder });
        }
        let mut spec = old.clone();
        spec.holder_identity = Some(self.cfg.identity.clone());
        spec.lease_duration_seconds = Some(self.cfg.duration_seconds());
        spec.renew_time = micro(now);
        if !ours {
            spec.acquire_time = micro(now);
            spec.lease_transitions = Some(old.lease_transitions.unwrap_or(0) + 1);
        }
        lease.spec = Some(spec.clone());
        match self
            .api
            .replace(&self.cfg.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => {
                self.observed = Some((Some(spec), now));
                self.held_until = Some(valid_until);
                Ok(Step::Held {
                    valid_until,
                    acquired: !ours,
                })
            }
            Err(e) if is_status(&e, 409) => Ok(Step::Raced),
            Err(e) => Err(self.api_err("update")(e)),
        }
    }

    /// Gives the Lease up if we hold it: the holder is cleared so another contender can take it
    /// over at once. Returns whether anything was released.
    pub async fn release(&mut self) -> Result<bool, LeaseError> {
        self.held_until = None;
        let Some(mut lease) = self
            .api
            .get_opt(&self.cfg.name)
            .await
            .map_err(self.api_err("get"))?
        else {
            return Ok(false);
        };
        let mut spec = lease.spec.clone().unwrap_or_default();
        if spec.holder_identity.as_deref() != Some(self.cfg.identity.as_str()) {
            return Ok(false);
        }
        let now = self.clock.now();
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = micro(now);
        spec.acquire_time = micro(now);
        lease.spec = Some(spec);
        match self
            .api
            .replace(&self.cfg.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if is_status(&e, 409) => Ok(false),
            Err(e) => Err(self.api_err("update")(e)),
        }
    }

    /// Tries every `retry_period` until the Lease is ours (or `cancel` fires), then renews it in
    /// the background; the guard's token is cancelled when the Lease is lost.
    pub async fn acquire(mut self, cancel: &CancellationToken) -> Result<LeaseGuard, LeaseError> {
        loop {
            match self.try_acquire_or_renew().await {
                Ok(Step::Held { valid_until, .. }) => {
                    info!(lease = %self.cfg.name, identity = %self.cfg.identity, "lease acquired");
                    return Ok(LeaseGuard::start(self, valid_until));
                }
                Ok(Step::HeldByOther { holder }) => {
                    debug!(lease = %self.cfg.name, %holder, "lease held by another");
                }
                Ok(Step::Raced) => debug!(lease = %self.cfg.name, "lost a lease race"),
                Err(e) => warn!(lease = %self.cfg.name, error = %e, "lease attempt failed"),
            }
            tokio::select! {
                () = cancel.cancelled() => {
                    return Err(LeaseError::Cancelled {
                        namespace: self.cfg.namespace.clone(),
                        name: self.cfg.name.clone(),
                    });
                }
                () = tokio::time::sleep(self.cfg.retry_period) => {}
            }
        }
    }
}

/// A held Lease, renewed in the background. Its [`LeaseGuard::token`] is cancelled when the
/// Lease is lost, released, or the guard is dropped.
#[derive(Debug)]
pub struct LeaseGuard {
    lost: CancellationToken,
    stop: CancellationToken,
    task: Option<JoinHandle<LeaseLock>>,
}

impl LeaseGuard {
    fn start(lock: LeaseLock, valid_until: SystemTime) -> Self {
        let lost = CancellationToken::new();
        let stop = CancellationToken::new();
        let task = tokio::spawn(renew(lock, valid_until, lost.clone(), stop.clone()));
        Self {
            lost,
            stop,
            task: Some(task),
        }
    }

    /// Cancelled when the Lease is lost: work must select on it and stop.
    pub fn token(&self) -> CancellationToken {
        self.lost.clone()
    }

    /// Whether the Lease is still held.
    pub fn is_held(&self) -> bool {
        !self.lost.is_cancelled()
    }

    /// Resolves when the Lease is lost.
    pub async fn lost(&self) {
        self.lost.cancelled().await;
    }

    /// Stops renewing and releases the Lease (when still ours).
    pub async fn release(mut self) -> Result<(), LeaseError> {
        self.stop.cancel();
        self.lost.cancel();
        if let Some(task) = self.task.take()
            && let Ok(mut lock) = task.await
        {
            lock.release().await?;
        }
        Ok(())
    }
}

impl Drop for LeaseGuard {
    fn drop(&mut self) {
        self.lost.cancel();
        self.stop.cancel();
    }
}

fn remaining(clock: &dyn Clock, until: SystemTime) -> Duration {
    until.duration_since(clock.now()).unwrap_or(Duration::ZERO)
}

async fn renew(
    mut lock: LeaseLock,
    mut valid_until: SystemTime,
    lost: CancellationToken,
    stop: CancellationToken,
) -> LeaseLock {
    loop {
        let wait = lock
            .cfg
            .retry_period
            .min(remaining(lock.clock.as_ref(), valid_until));
        tokio::select! {
            () = stop.cancelled() => return lock,
            () = tokio::time::sleep(wait) => {}
        }
        let budget = remaining(lock.clock.as_ref(), valid_until);
        let attempt = tokio::select! {
            () = stop.cancelled() => return lock,
            r = tokio::time::timeout(budget, lock.try_acquire_or_renew()) => r,
        };
        match attempt {
            Ok(Ok(Step::Held {
                valid_until: until, ..
            })) => valid_until = until,
            Ok(Ok(Step::HeldByOther { holder })) => {
                warn!(lease = %lock.cfg.name, %holder, "lease taken over by another holder");
                lock.held_until = None;
                lost.cancel();
                return lock;
            }
            Ok(Ok(Step::Raced)) => debug!(lease = %lock.cfg.name, "lease renewal raced"),
            Ok(Err(e)) => debug!(lease = %lock.cfg.name, error = %e, "lease renewal failed"),
            Err(_) => debug!(lease = %lock.cfg.name, "lease renewal timed out"),
        }
        if lock.clock.now() >= valid_until {
            warn!(lease = %lock.cfg.name, "lease renewal deadline passed; giving the lease up");
            lock.held_until = None;
            lost.cancel();
            return lock;
        }
    }
}

#[cfg(test)]
mod tests;
