//! `HashPool`: bounded capacity for CPU-heavy hashing (argon2) off the async runtime.
//!
//! Each job runs on `tokio::task::spawn_blocking` while holding one permit of a semaphore
//! with a fixed number of permits (by default, the number of available cores). A caller that
//! finds every permit taken waits at most a short, fixed time and then gets
//! [`IdentityError::Busy`]: under a flood of attempts callers are refused quickly instead of
//! queueing without bound (and every queued argon2 run would cost memory and CPU later). The
//! permit travels with the job, so a caller that gives up (its future dropped) still frees
//! its permit only when the hashing it started has actually finished.

use std::sync::Arc;
use std::time::Duration;

use ivrauth_core::identity::IdentityError;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// How long a job waits for a permit before `Busy`, unless set with
/// [`HashPool::with_max_wait`]: long enough to absorb a burst, short enough that a caller
/// under attack hears an answer promptly.
pub const DEFAULT_MAX_WAIT: Duration = Duration::from_millis(50);

/// Bounded hashing capacity. Cheap to clone; clones share the permits.
#[derive(Debug, Clone)]
pub struct HashPool {
    permits: Arc<Semaphore>,
    size: usize,
    max_wait: Duration,
}

impl HashPool {
    /// At most `max_concurrent` jobs at once (at least 1), each waiting at most
    /// [`DEFAULT_MAX_WAIT`] for its turn.
    pub fn new(max_concurrent: usize) -> HashPool {
        let size = max_concurrent.max(1);
        HashPool {
            permits: Arc::new(Semaphore::new(size)),
            size,
            max_wait: DEFAULT_MAX_WAIT,
        }
    }

    /// One job per available core.
    pub fn per_core() -> HashPool {
        HashPool::new(available_cores())
    }

    /// How long a job may wait for a permit before `Busy` (zero: only take a free one).
    pub fn with_max_wait(mut self, max_wait: Duration) -> HashPool {
        self.max_wait = max_wait;
        self
    }

    /// The number of jobs that may run at once.
    pub fn size(&self) -> usize {
        self.size
    }

    /// Run `f` on the blocking thread pool once a permit is free; `Busy` if none becomes free
    /// within the maximum wait. A panic inside `f` is reported as `Unavailable`.
    pub async fn run<T>(&self, f: impl FnOnce() -> T + Send + 'static) -> Result<T, IdentityError>
    where
        T: Send + 'static,
    {
        let permit = self.acquire().await?;
        tokio::task::spawn_blocking(move || {
            let out = f();
            drop(permit);
            out
        })
        .await
        .map_err(|e| IdentityError::Unavailable(format!("hashing job failed: {e}")))
    }

    async fn acquire(&self) -> Result<OwnedSemaphorePermit, IdentityError> {
        if let Ok(permit) = self.permits.clone().try_acquire_owned() {
            return Ok(permit);
        }
        if self.max_wait.is_zero() {
            return Err(IdentityError::Busy);
        }
        match tokio::time::timeout(self.max_wait, self.permits.clone().acquire_owned()).await {
            Ok(Ok(permit)) => Ok(permit),
            // Timed out, or the semaphore was closed (never, here).
            _ => Err(IdentityError::Busy),
        }
    }
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
