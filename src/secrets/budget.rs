//! The work budget of argon2: one semaphore, so at most N hashes or verifications run
//! at once on the blocking pool, whichever credential kind asks. A verification waits
//! for its turn at most `max_queue_wait`, then is refused as busy with an estimate of
//! when the queue ahead of it will have drained (the `Retry-After`), so a flood queues
//! for a bounded time instead of without end.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;

/// How long a job may wait for its turn.
#[derive(Debug, Clone, Copy)]
pub enum Wait {
    /// At most the budget's `max_queue_wait` (verifications of presented secrets).
    Bounded,
    /// Until its turn comes (hashing a new secret: an authenticated admin's request).
    Unbounded,
}

#[derive(Debug)]
pub enum BudgetError {
    /// No turn within the bounded wait; the queue should have drained after this long.
    Busy(Duration),
    /// The blocking pool failed the job (a panic in argon2, or shutdown).
    Pool(String),
}

pub struct HashBudget {
    permits: Semaphore,
    size: usize,
    max_queue_wait: Duration,
    /// Jobs waiting for a turn now.
    waiting: AtomicUsize,
    /// A moving average of one job's duration, in microseconds (starts at 50 ms, what
    /// argon2id with the default parameters takes on a slow core).
    mean_job_micros: AtomicU64,
}

impl HashBudget {
    pub fn new(size: usize, max_queue_wait: Duration) -> Self {
        Self {
            permits: Semaphore::new(size),
            size: size.max(1),
            max_queue_wait,
            waiting: AtomicUsize::new(0),
            mean_job_micros: AtomicU64::new(50_000),
        }
    }

    /// How long until the jobs waiting now (and those running) are done.
    fn drain_estimate(&self) -> Duration {
        let queued = self.waiting.load(Ordering::Relaxed) + self.size;
        let mean = self.mean_job_micros.load(Ordering::Relaxed);
        Duration::from_micros(mean.saturating_mul(queued as u64) / self.size as u64)
    }

    /// Runs `job` on the blocking pool when a turn is free.
    pub async fn run<T: Send + 'static>(
        &self,
        wait: Wait,
        job: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, BudgetError> {
        self.waiting.fetch_add(1, Ordering::Relaxed);
        let acquired = match wait {
            Wait::Bounded => tokio::time::timeout(self.max_queue_wait, self.permits.acquire())
                .await
                .ok(),
            Wait::Unbounded => Some(self.permits.acquire().await),
        };
        self.waiting.fetch_sub(1, Ordering::Relaxed);
        let permit = match acquired {
            Some(Ok(permit)) => permit,
            Some(Err(closed)) => return Err(BudgetError::Pool(closed.to_string())),
            None => return Err(BudgetError::Busy(self.drain_estimate())),
        };
        let started = Instant::now();
        let result = tokio::task::spawn_blocking(job)
            .await
            .map_err(|e| BudgetError::Pool(e.to_string()));
        drop(permit);
        let took = started.elapsed();
        crate::telemetry::metrics::argon2_seconds(took);
        let took = took.as_micros().min(u128::from(u32::MAX)) as u64;
        // mean = 7/8 mean + 1/8 took; a lost update under a race only delays the average.
        let mean = self.mean_job_micros.load(Ordering::Relaxed);
        self.mean_job_micros
            .store((mean * 7 + took) / 8, Ordering::Relaxed);
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn at_most_n_run_at_once_and_a_bounded_wait_ends_busy() {
        let budget = Arc::new(HashBudget::new(1, Duration::from_millis(20)));
        let (release, hold) = std::sync::mpsc::channel::<()>();
        let holder = {
            let budget = budget.clone();
            tokio::spawn(async move {
                budget
                    .run(Wait::Bounded, move || hold.recv().ok())
                    .await
                    .is_ok()
            })
        };
        // Let the holder take the only turn.
        while budget.permits.available_permits() > 0 {
            tokio::task::yield_now().await;
        }
        match budget.run(Wait::Bounded, || ()).await {
            Err(BudgetError::Busy(after)) => assert!(after > Duration::ZERO),
            other => panic!("expected busy, got {:?}", other.map(|_| ())),
        }
        release.send(()).unwrap();
        assert!(holder.await.unwrap());
        assert!(budget.run(Wait::Bounded, || 7).await.is_ok_and(|v| v == 7));
    }
}
