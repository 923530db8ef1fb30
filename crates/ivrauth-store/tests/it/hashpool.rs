#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The hashing pool's queue, on paused time: a job that finds every permit taken waits
//! while its answer can still come within its caller's padding plus the margin, and is
//! refused at once when the queue is full or the deadline cannot be met. No sleeps: the
//! held job blocks on a channel, and time moves only when a test moves it.

use std::time::Duration;

use ivrauth_core::identity::IdentityError;
use ivrauth_store::hashpool::HashPoolStats;
use ivrauth_store::HashPool;
use tokio::task::JoinHandle;
use tokio::time::Instant;

const MS: Duration = Duration::from_millis(1);

/// Take `pool`'s only permit with a job that runs until the returned sender is used.
async fn hold(pool: &HashPool) -> (std::sync::mpsc::Sender<()>, JoinHandle<()>) {
    let (release, held) = std::sync::mpsc::channel::<()>();
    let (started_tx, started) = tokio::sync::oneshot::channel::<()>();
    let pool = pool.clone();
    let holder = tokio::spawn(async move {
        pool.run(move || {
            started_tx.send(()).unwrap();
            held.recv().unwrap();
        })
        .await
        .unwrap();
    });
    started.await.unwrap();
    (release, holder)
}

/// A job with `padding` left, spawned; returns once it waits in the queue.
async fn waiter(
    pool: &HashPool,
    padding: Duration,
) -> JoinHandle<Result<&'static str, IdentityError>> {
    let before = pool.stats().waiting;
    let task = {
        let pool = pool.clone();
        tokio::spawn(async move { pool.hash(padding, |_| "done").await })
    };
    while pool.stats().waiting == before {
        tokio::task::yield_now().await;
    }
    task
}

#[tokio::test(start_paused = true)]
async fn a_waiter_whose_answer_can_come_in_time_is_admitted() {
    let pool = HashPool::new(1)
        .with_margin(Duration::ZERO)
        .with_job_estimate(10 * MS);
    let (release, holder) = hold(&pool).await;
    let t0 = Instant::now();
    let waiting = waiter(&pool, 300 * MS).await;
    assert_eq!(pool.stats().waiting, 1);
    release.send(()).unwrap();
    holder.await.unwrap();
    assert_eq!(waiting.await.unwrap(), Ok("done"));
    let stats = pool.stats();
    assert_eq!(
        (
            stats.started,
            stats.queued,
            stats.refused(),
            stats.peak_waiting
        ),
        (2, 1, 0, 1),
        "{stats:?}"
    );
    assert_eq!(stats.waiting, 0);
    // Nothing slept: the waiter ran as soon as the permit came back.
    assert_eq!(Instant::now(), t0);
}

#[tokio::test(start_paused = true)]
async fn a_full_queue_refuses_at_once() {
    let pool = HashPool::new(1)
        .with_max_waiting(1)
        .with_job_estimate(10 * MS);
    let (release, holder) = hold(&pool).await;
    let first = waiter(&pool, 300 * MS).await;
    let t0 = Instant::now();
    assert_eq!(
        pool.hash(300 * MS, |_| "second").await,
        Err(IdentityError::Busy)
    );
    assert_eq!(Instant::now(), t0, "refused without waiting");
    assert_eq!(
        pool.stats(),
        HashPoolStats {
            size: 1,
            running: 1,
            waiting: 1,
            peak_waiting: 1,
            started: 1,
            queued: 0,
            refused_full: 1,
            refused_deadline: 0,
            refused_late: 0,
            job_estimate: pool.stats().job_estimate,
        }
    );
    release.send(()).unwrap();
    holder.await.unwrap();
    assert_eq!(first.await.unwrap(), Ok("done"));
}

#[tokio::test(start_paused = true)]
async fn a_deadline_that_cannot_be_met_refuses_at_once() {
    let pool = HashPool::new(1)
        .with_margin(Duration::ZERO)
        .with_job_estimate(100 * MS);
    let (release, holder) = hold(&pool).await;
    let t0 = Instant::now();
    // 50 ms of padding left, and a job takes 100 ms: it cannot finish in time.
    assert_eq!(
        pool.hash(50 * MS, |_| "late").await,
        Err(IdentityError::Busy)
    );
    assert_eq!(Instant::now(), t0, "refused without waiting");
    let stats = pool.stats();
    assert_eq!((stats.refused_deadline, stats.waiting), (1, 0), "{stats:?}");
    // With the same queue, a caller with 300 ms left is admitted.
    let admitted = waiter(&pool, 300 * MS).await;
    release.send(()).unwrap();
    holder.await.unwrap();
    assert_eq!(admitted.await.unwrap(), Ok("done"));
    assert_eq!(pool.stats().refused(), 1);
}

#[tokio::test(start_paused = true)]
async fn an_admitted_waiter_gives_up_when_it_could_no_longer_finish() {
    let pool = HashPool::new(1)
        .with_margin(20 * MS)
        .with_job_estimate(10 * MS);
    let (release, holder) = hold(&pool).await;
    // Deadline 100 + 20 ms; the last start that finishes by then is at 110 ms.
    let waiting = waiter(&pool, 100 * MS).await;
    tokio::time::advance(109 * MS).await;
    assert!(!waiting.is_finished());
    assert_eq!(pool.stats().waiting, 1);
    tokio::time::advance(2 * MS).await;
    assert_eq!(waiting.await.unwrap(), Err(IdentityError::Busy));
    let stats = pool.stats();
    assert_eq!((stats.refused_late, stats.waiting), (1, 0), "{stats:?}");
    release.send(()).unwrap();
    holder.await.unwrap();
    // The permit is free again: the next job runs at once.
    assert_eq!(pool.hash(Duration::ZERO, |_| "free").await, Ok("free"));
}
