//! `HashPool`: bounded capacity for CPU-heavy hashing (argon2) off the async runtime.
//!
//! Each job runs on `tokio::task::spawn_blocking` while holding one permit of a semaphore
//! with a fixed number of permits (by default, the number of available cores), with one
//! argon2 working memory ([`HashMemory`]) per permit kept between jobs. A job that finds
//! every permit taken joins a bounded, first-come-first-served queue with a deadline:
//!
//! - its **deadline** is the time its caller answers anyway (the verification's timing
//!   padding still to run, given by the caller; none for other jobs) plus a **margin**
//!   ([`DEFAULT_MARGIN`], [`HashPool::with_margin`]);
//! - it is admitted only while fewer than **max waiting** jobs wait
//!   ([`HashPool::with_max_waiting`]) and while, by the measured time of a job, its answer
//!   can still come before the deadline; otherwise it is refused with
//!   [`IdentityError::Busy`] at once;
//! - once admitted, it waits for a permit until the last moment its job can still finish by
//!   the deadline, and is refused then.
//!
//! So an honest burst that the padding can absorb waits its turn, and a flood is refused
//! quickly without queueing work that could only finish late. [`HashPool::stats`] counts
//! queue depth, admissions and refusals (for metrics). The permit travels with the job, so
//! a caller that gives up (its future dropped) still frees its permit only when the hashing
//! it started has actually finished.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ivrauth_core::identity::{HashMemory, IdentityError};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

/// How long past its deadline-free answer a job may wait, unless set with
/// [`HashPool::with_margin`]: for a verification, beyond its timing padding; for any other
/// job, the whole wait. Long enough to absorb a burst's jitter, short enough that a caller
/// under attack hears an answer promptly.
pub const DEFAULT_MARGIN: Duration = Duration::from_millis(100);

/// Jobs that may wait per permit, unless set with [`HashPool::with_max_waiting`].
pub const DEFAULT_WAITING_PER_PERMIT: usize = 32;

/// Bounded hashing capacity. Cheap to clone; clones share the permits, the queue and the
/// counters (each clone keeps its own margin and queue bound, like a per-caller setting).
#[derive(Debug, Clone)]
pub struct HashPool {
    inner: Arc<Inner>,
    max_waiting: usize,
    margin: Duration,
}

#[derive(Debug)]
struct Inner {
    permits: Arc<Semaphore>,
    size: usize,
    /// A moving average of how long one job takes, in µs (0: nothing measured yet).
    job_micros: AtomicU64,
    waiting: AtomicUsize,
    peak_waiting: AtomicUsize,
    started: AtomicU64,
    queued: AtomicU64,
    refused_full: AtomicU64,
    refused_deadline: AtomicU64,
    refused_late: AtomicU64,
    /// Working memory of jobs that finished, at most one per permit.
    memory: Mutex<Vec<HashMemory>>,
}

/// A snapshot of a pool's counters (monotonic unless said otherwise).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HashPoolStats {
    /// Jobs that may run at once.
    pub size: usize,
    /// Jobs running now (not monotonic).
    pub running: usize,
    /// Jobs waiting for a permit now: the queue depth (not monotonic).
    pub waiting: usize,
    /// The deepest the queue has been.
    pub peak_waiting: usize,
    /// Jobs that got a permit (at once or after waiting).
    pub started: u64,
    /// Of those, jobs that had to wait.
    pub queued: u64,
    /// Refused at once: the queue was full.
    pub refused_full: u64,
    /// Refused at once: by the measured job time, the answer could not come by the deadline.
    pub refused_deadline: u64,
    /// Refused after waiting: no permit came while the job could still finish in time.
    pub refused_late: u64,
    /// The moving average of one job's duration.
    pub job_estimate: Duration,
}

impl HashPoolStats {
    /// Every refusal (`Busy`).
    pub fn refused(&self) -> u64 {
        self.refused_full + self.refused_deadline + self.refused_late
    }
}

/// Counts a job as waiting while it lives.
struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl HashPool {
    /// At most `max_concurrent` jobs at once (at least 1), at most
    /// [`DEFAULT_WAITING_PER_PERMIT`] per permit waiting, with [`DEFAULT_MARGIN`].
    pub fn new(max_concurrent: usize) -> HashPool {
        let size = max_concurrent.max(1);
        HashPool {
            inner: Arc::new(Inner {
                permits: Arc::new(Semaphore::new(size)),
                size,
                job_micros: AtomicU64::new(0),
                waiting: AtomicUsize::new(0),
                peak_waiting: AtomicUsize::new(0),
                started: AtomicU64::new(0),
                queued: AtomicU64::new(0),
                refused_full: AtomicU64::new(0),
                refused_deadline: AtomicU64::new(0),
                refused_late: AtomicU64::new(0),
                memory: Mutex::new(Vec::new()),
            }),
            max_waiting: size.saturating_mul(DEFAULT_WAITING_PER_PERMIT),
            margin: DEFAULT_MARGIN,
        }
    }

    /// One job per available core.
    pub fn per_core() -> HashPool {
        HashPool::new(available_cores())
    }

    /// How long a job may wait beyond the time its caller answers anyway (zero, with no
    /// padding: only a free permit will do).
    pub fn with_margin(mut self, margin: Duration) -> HashPool {
        self.margin = margin;
        self
    }

    /// Jobs that may wait at once, this one included (zero: only a free permit will do).
    pub fn with_max_waiting(mut self, max_waiting: usize) -> HashPool {
        self.max_waiting = max_waiting;
        self
    }

    /// Start the job-time estimate at `job` (it is measured and averaged from then on). A
    /// directory seeds it with the time of its first hash.
    pub fn with_job_estimate(self, job: Duration) -> HashPool {
        self.observe(job);
        self
    }

    /// The number of jobs that may run at once.
    pub fn size(&self) -> usize {
        self.inner.size
    }

    /// The margin past a caller's padding.
    pub fn margin(&self) -> Duration {
        self.margin
    }

    /// The most jobs that may wait at once.
    pub fn max_waiting(&self) -> usize {
        self.max_waiting
    }

    /// The counters now.
    pub fn stats(&self) -> HashPoolStats {
        let i = &self.inner;
        HashPoolStats {
            size: i.size,
            running: i.size.saturating_sub(i.permits.available_permits()),
            waiting: i.waiting.load(Ordering::Acquire),
            peak_waiting: i.peak_waiting.load(Ordering::Relaxed),
            started: i.started.load(Ordering::Relaxed),
            queued: i.queued.load(Ordering::Relaxed),
            refused_full: i.refused_full.load(Ordering::Relaxed),
            refused_deadline: i.refused_deadline.load(Ordering::Relaxed),
            refused_late: i.refused_late.load(Ordering::Relaxed),
            job_estimate: self.job_estimate(),
        }
    }

    /// Record one job's duration in the moving average (weight 1/8).
    pub fn observe(&self, job: Duration) {
        let us = u64::try_from(job.as_micros()).unwrap_or(u64::MAX).max(1);
        // A lost update under contention only skips one sample.
        let old = self.inner.job_micros.load(Ordering::Relaxed);
        let new = if old == 0 { us } else { old - old / 8 + us / 8 };
        self.inner.job_micros.store(new, Ordering::Relaxed);
    }

    fn job_estimate(&self) -> Duration {
        Duration::from_micros(self.inner.job_micros.load(Ordering::Relaxed))
    }

    /// Run `f` on the blocking thread pool once a permit is free, waiting at most the
    /// margin (a job whose caller has no padding). A panic inside `f` is `Unavailable`.
    pub async fn run<T>(&self, f: impl FnOnce() -> T + Send + 'static) -> Result<T, IdentityError>
    where
        T: Send + 'static,
    {
        self.hash(Duration::ZERO, move |_| f()).await
    }

    /// Run `f` with this permit's argon2 working memory, for a caller that answers no
    /// sooner than `padding` from now anyway: it may wait for a permit while its answer can
    /// still come within `padding` plus the margin; `Busy` otherwise (see the module doc).
    pub async fn hash<T>(
        &self,
        padding: Duration,
        f: impl FnOnce(&mut HashMemory) -> T + Send + 'static,
    ) -> Result<T, IdentityError>
    where
        T: Send + 'static,
    {
        let permit = self.acquire(padding).await?;
        let pool = self.clone();
        tokio::task::spawn_blocking(move || {
            let mut memory = pool.take_memory();
            let began = std::time::Instant::now();
            let out = f(&mut memory);
            pool.observe(began.elapsed());
            pool.give_back(memory);
            drop(permit);
            out
        })
        .await
        .map_err(|e| IdentityError::Unavailable(format!("hashing job failed: {e}")))
    }

    fn take_memory(&self) -> HashMemory {
        self.inner
            .memory
            .lock()
            .map(|mut m| m.pop())
            .ok()
            .flatten()
            .unwrap_or_default()
    }

    fn give_back(&self, memory: HashMemory) {
        if let Ok(mut kept) = self.inner.memory.lock() {
            if kept.len() < self.inner.size {
                kept.push(memory);
            }
        }
    }

    async fn acquire(&self, padding: Duration) -> Result<OwnedSemaphorePermit, IdentityError> {
        let i = &self.inner;
        if let Ok(permit) = i.permits.clone().try_acquire_owned() {
            i.started.fetch_add(1, Ordering::Relaxed);
            return Ok(permit);
        }
        let now = Instant::now();
        let deadline = now + padding.saturating_add(self.margin);
        let job = self.job_estimate();
        let ahead = i.waiting.fetch_add(1, Ordering::AcqRel);
        let waiting = Waiting(&i.waiting);
        match admit(ahead, i.size, self.max_waiting, job, now, deadline) {
            Admission::Full => {
                i.refused_full.fetch_add(1, Ordering::Relaxed);
                Err(IdentityError::Busy)
            }
            Admission::TooLate => {
                i.refused_deadline.fetch_add(1, Ordering::Relaxed);
                Err(IdentityError::Busy)
            }
            Admission::WaitUntil(latest_start) => {
                i.peak_waiting.fetch_max(ahead + 1, Ordering::Relaxed);
                match tokio::time::timeout_at(latest_start, i.permits.clone().acquire_owned()).await
                {
                    Ok(Ok(permit)) => {
                        drop(waiting);
                        i.started.fetch_add(1, Ordering::Relaxed);
                        i.queued.fetch_add(1, Ordering::Relaxed);
                        Ok(permit)
                    }
                    // Timed out, or the semaphore was closed (never, here).
                    _ => {
                        i.refused_late.fetch_add(1, Ordering::Relaxed);
                        Err(IdentityError::Busy)
                    }
                }
            }
        }
    }
}

/// What a job that found every permit taken may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Wait for a permit until this moment (the last start that can finish by the
    /// deadline).
    WaitUntil(Instant),
    /// Refused: the queue is full.
    Full,
    /// Refused: with `ahead` jobs before it, it would finish after its deadline.
    TooLate,
}

/// The queue's rule. `ahead` jobs already wait for one of `size` permits (all taken), each
/// job takes about `job`; a job arriving `now` with answer `deadline` may wait if fewer
/// than `max_waiting` jobs wait and if it can start by `deadline - job` (expected start:
/// when `ahead + 1` jobs have finished at the pool's rate of `size` per `job`).
pub fn admit(
    ahead: usize,
    size: usize,
    max_waiting: usize,
    job: Duration,
    now: Instant,
    deadline: Instant,
) -> Admission {
    if ahead >= max_waiting {
        return Admission::Full;
    }
    let Some(latest_start) = deadline.checked_sub(job) else {
        return Admission::TooLate;
    };
    let turns = u32::try_from(ahead.saturating_add(1)).unwrap_or(u32::MAX);
    let per_permit = u32::try_from(size.max(1)).unwrap_or(u32::MAX);
    let expected_start = now + job.saturating_mul(turns) / per_permit;
    if expected_start > latest_start {
        return Admission::TooLate;
    }
    Admission::WaitUntil(latest_start)
}

impl Default for HashPool {
    fn default() -> Self {
        HashPool::per_core()
    }
}

/// The number of cores this process may use (1 if unknown).
pub fn available_cores() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[tokio::test(start_paused = true)]
    async fn the_admission_rule() {
        let now = Instant::now();
        let job = 10 * MS;
        let by = |ms: u64| now + Duration::from_millis(ms);
        // Room in the queue, and time: wait until the last start that still finishes.
        assert_eq!(
            admit(0, 2, 4, job, now, by(300)),
            Admission::WaitUntil(by(290))
        );
        // Three ahead on two permits: expected start 20 ms, latest 290 ms.
        assert_eq!(
            admit(3, 2, 4, job, now, by(300)),
            Admission::WaitUntil(by(290))
        );
        assert_eq!(admit(4, 2, 4, job, now, by(300)), Admission::Full);
        assert_eq!(admit(0, 2, 0, job, now, by(300)), Admission::Full);
        // 59 ahead on two permits: expected start 300 ms > 290 ms.
        assert_eq!(admit(59, 2, 100, job, now, by(300)), Admission::TooLate);
        assert_eq!(
            admit(57, 2, 100, job, now, by(300)),
            Admission::WaitUntil(by(290))
        );
        // No padding and a margin shorter than a job: too late even with nobody ahead.
        assert_eq!(admit(0, 2, 4, job, now, by(5)), Admission::TooLate);
        // Nothing measured yet: admitted until the deadline itself.
        assert_eq!(
            admit(3, 1, 4, Duration::ZERO, now, by(50)),
            Admission::WaitUntil(by(50))
        );
    }
}
